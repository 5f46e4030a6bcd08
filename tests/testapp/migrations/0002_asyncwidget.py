from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("testapp", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="AsyncWidget",
            fields=[],
            options={"proxy": True, "indexes": [], "constraints": []},
            bases=("testapp.widget",),
        ),
    ]
