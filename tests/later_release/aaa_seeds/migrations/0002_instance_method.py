# The second data migration of Sisy's documentation ("Instance methods in data
# migrations"), with the dotted path its prose asks for (historical models have
# no methods) and a model of the test app. Depends on ('sisy', '0001_initial')
# only, among sisy's migrations.
from django.db import migrations

from sisy.models import task_with_callable, taskinfo_with_label

TASK_NAME = "Instance method seeded by a data migration"
METHOD_NAME = "tests.testapp.models.Widget.touch"


def add_repeating(apps, schema_editor):
    Widget = apps.get_model("testapp.Widget")
    new_widget = Widget()
    new_widget.save()
    task = task_with_callable(
        METHOD_NAME,
        label=TASK_NAME,
        schedule="* * * * *",
        pk_override=new_widget.pk,
    )
    task.save()


def remove_repeating(apps, schema_editor):
    Task = apps.get_model("sisy.Task")
    Widget = apps.get_model("testapp.Widget")
    task = Task.objects.get(label=TASK_NAME)
    task.enabled = False
    task.save()
    old_widget_pk = taskinfo_with_label(TASK_NAME)["model_pk"]
    Widget.objects.get(pk=old_widget_pk).delete()
    task.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("aaa_seeds", "0001_seed"),
        ("testapp", "0001_initial"),
        ("sisy", "0001_initial"),
    ]
    operations = [migrations.RunPython(add_repeating, reverse_code=remove_repeating)]
