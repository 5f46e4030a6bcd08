from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"

    def ready(self) -> None:
        # The receivers of tests/e2e/test_signals.py (inert unless SISY_TEST_SIGNALS is set).
        from . import receivers  # noqa: F401
