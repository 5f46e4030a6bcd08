# The first example of Sisy's documentation ("Data migrations"), unchanged.
from django.db import migrations

from myapp.utilities import daily_maintenance
from sisy.models import task_with_callable

TASK_NAME = "Daily data maintenance"


def add_repeating(apps, schema_editor):
    task = task_with_callable(
        daily_maintenance,
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
        ("myapp", "0001_initial"),
        ("sisy", "0001_initial"),
    ]
    operations = [migrations.RunPython(add_repeating, reverse_code=remove_repeating)]
