"""The one-minute soak of bench/soak, on the test server: overload and a killed worker.

1,000 every-second tasks and 4 workers (as the 10-minute soak) overload this
2-core machine on purpose: most fires are coalesced, runs start tens of seconds
late, planners may lag. What must hold whatever the load: no instant runs
twice, every instant that did not run has a row saying why, and the killed
worker's runs are closed by housekeeping (procrastinate's stalled-worker
timeout at 10 s so that this happens within the minute). About 65 s.
"""

import pytest

from bench.soak import soak

pytestmark = [pytest.mark.e2e, pytest.mark.long]


def test_a_minute_of_overload_and_a_killed_worker_runs_nothing_twice_and_records_the_rest(
    fresh_url: str,
) -> None:
    result = soak(fresh_url, tasks=1000, workers=4, seconds=60, stalled_timeout=10)
    report = result.markdown()
    print(report)
    assert result.duplicated == 0, report
    assert result.unrecorded == 0, report
    assert result.done > 0, report
    # The worker was killed while it held runs; housekeeping closed each, saying why.
    assert result.killed_runs, report
    assert result.killed_open == 0, report
    assert set(result.killed_runs) <= {"failed/worker_lost", "failed/not_started"}, report
    assert result.log_errors == 0, report
