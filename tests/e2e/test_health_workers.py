"""sisy health against a real worker: one serving other queues only is no planner."""

import pytest

from tests.e2e.helpers import Worker
from tests.helpers import wait_until
from tests.integration.helpers import sql, unhealthy

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_serving_other_queues_only_fails_health():
    """``procrastinate worker --queues other``: live, reporting, and planning nothing."""
    worker = Worker("other-only", "--queues", "other")
    try:
        wait_until(
            lambda: (
                worker.process.poll() is not None
                or sql("SELECT 1 FROM sisy_worker WHERE name LIKE '%%:other-only'")
            ),
            timeout=60,
        )
        assert worker.process.poll() is None, worker.output()
        message = unhealthy()
        assert "1 live worker(s), none plans the sisy queue (their queues: other)" in message, (
            message
        )
        assert sql("SELECT plans, queues FROM sisy_worker") == [(False, ["other"])]
    finally:
        worker.stop()
    # Stopped, it says it is gone.
    assert sql("SELECT count(*) FROM sisy_worker") == [(0,)], worker.output()
