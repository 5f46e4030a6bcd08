"""A task on a seconds schedule (sixth field), so the demo shows fires at once."""

from django.db import migrations

from sisy.models import task_with_callable

TASK_NAME = "Heartbeat every 2 seconds"


def add_task(apps, schema_editor):
    task_with_callable(
        "myapp.utilities.heartbeat", label=TASK_NAME, schedule="* * * * * */2"
    ).save()


def remove_task(apps, schema_editor):
    apps.get_model("sisy.Task").objects.filter(label=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("myapp", "0002_daily_maintenance"), ("sisy", "0001_initial")]
    operations = [migrations.RunPython(add_task, reverse_code=remove_task)]
