from django.apps import AppConfig


class SeedsConfig(AppConfig):
    name = "tests.later_release.aaa_seeds"
    label = "aaa_seeds"
    default_auto_field = "django.db.models.BigAutoField"
