"""Django settings for mypy's django-stubs plugin: the apps, no database server."""

SECRET_KEY = "typecheck-only"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "procrastinate.contrib.django",
    "sisy_pg",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "typecheck"}}
