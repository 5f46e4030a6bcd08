# The first data migration of Sisy's documentation ("Data migrations"), with
# a callable of the test app. It depends on ('sisy', '0001_initial') only and
# saves the real Task model, as every Sisy user's seed migration does.
from django.db import migrations

from sisy.models import task_with_callable
from tests.testapp.jobs import record

TASK_NAME = "Seeded by a data migration"


def add_repeating(apps, schema_editor):
    task = task_with_callable(
        record,
        label=TASK_NAME,
        schedule="30 0 * * *",  # every day at 30 minutes past midnight
        userdata={},  # optional
    )
    task.save()


def remove_repeating(apps, schema_editor):
    Task = apps.get_model("sisy.Task")
    task = Task.objects.get(label=TASK_NAME)
    task.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sisy", "0001_initial"),
    ]
    operations = [migrations.RunPython(add_repeating, reverse_code=remove_repeating)]
