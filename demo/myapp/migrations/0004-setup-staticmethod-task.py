"""A staticmethod task; named as in Sisy's docs, which the next migration depends on."""

from django.db import migrations

from sisy.models import task_with_callable

TASK_NAME = "Digest every 5 seconds"


def add_task(apps, schema_editor):
    task_with_callable(
        "myapp.utilities.Reports.digest",
        label=TASK_NAME,
        schedule="* * * * * */5",
        userdata={"recipients": ["ops@example.com"]},
    ).save()


def remove_task(apps, schema_editor):
    apps.get_model("sisy.Task").objects.filter(label=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("myapp", "0003_seconds_task"), ("sisy", "0001_initial")]
    operations = [migrations.RunPython(add_task, reverse_code=remove_task)]
