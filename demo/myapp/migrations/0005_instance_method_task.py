# The second example of Sisy's documentation ("Instance methods in data
# migrations"), with the one change its own prose asks for: historical models
# have no methods, so the callable is given as the dotted path METHOD_NAME,
# not as newFoo.InstanceMethod.
from django.db import migrations

from sisy.models import task_with_callable, taskinfo_with_label

TASK_NAME = "A suitably unique label for the task"
METHOD_NAME = "myapp.models.ModelFoo.InstanceMethod"


# Function to run the forward migration
def add_repeating(apps, schema_editor):
    # Look up our model by asking Django for it
    # This is only a stand-in class, not the real thing
    ModelFoo = apps.get_model("myapp.ModelFoo")
    # Create a new instance of our class
    newFoo = ModelFoo()
    # We must save the object to set its PK.
    # Note: there are no custom methods at this point;
    # including overridden save() methods!
    newFoo.save()
    task = task_with_callable(
        METHOD_NAME,
        label=TASK_NAME,
        schedule="* * * * *",
        pk_override=newFoo.pk,
    )
    task.save()


# Function to run the reverse migration
def remove_repeating(apps, schema_editor):
    # Get the temporary version of sisy.Task
    Task = apps.get_model("sisy.Task")
    # Get the temporary version of our model class
    ModelFoo = apps.get_model("myapp.ModelFoo")
    # Look up our task by label
    task = Task.objects.get(label=TASK_NAME)
    # Disable it so it can't have a race condition while
    # we're removing it (unless it's already running, which
    # is another problem entirely)
    task.enabled = False
    task.save()
    # Look up our callable object's task info with a special function
    # and pull the object's PK out of it
    oldFooPK = taskinfo_with_label(TASK_NAME)["model_pk"]
    # Retrieve the object and delete it
    # This is not mandatory, but probably a good idea.
    oldFoo = ModelFoo.objects.get(pk=oldFooPK)
    oldFoo.delete()
    # Now we can delete the task object.
    task.delete()


class Migration(migrations.Migration):
    # You must adapt the dependencies to fit your own project's
    # existing migrations. This example is from the demo project.
    dependencies = [
        ("myapp", "0004-setup-staticmethod-task"),
        ("sisy", "0001_initial"),
    ]
    operations = [migrations.RunPython(add_repeating, reverse_code=remove_repeating)]
