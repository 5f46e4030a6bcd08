"""tests.settings, with the liveness bounds short enough for end-to-end tests to see them act."""

from tests.settings import *  # noqa: F403

SISY_SHUTDOWN_TIMEOUT = 3.0
SISY_STUCK_EXIT_AFTER = 4.0
