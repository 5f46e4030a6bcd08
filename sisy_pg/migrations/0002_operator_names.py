"""The operators' names for psql, and a description of every sisy function and view.

Applies sql/migrations/0002_operator_names.sql: functions and comments only,
no change to the models' state (see the upgrade rule,
docs/concepts.md#the-upgrade-rule).
"""

from django.db import migrations

from sisy_pg.migration_utils import RunSisySQL


class Migration(migrations.Migration):
    dependencies = [("sisy", "0001_initial")]

    operations = [RunSisySQL("0002_operator_names")]
