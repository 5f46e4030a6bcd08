"""Metrics' wording (sisy_pg.metrics): rows as Prometheus metric families."""

from __future__ import annotations

from sisy_pg import metrics
from sisy_pg.vocabulary import TaskState


def test_families_word_the_rows_as_prometheus_metrics():
    """Pure: buckets made whole and cumulative as given, +Inf added, every state shown."""
    rows = [
        metrics.Sample("runs_total", {"status": "failed", "reason": "broken"}, None, 2),
        metrics.Sample("runs_total", {"status": "succeeded", "reason": ""}, None, 5),
        metrics.Sample("run_lag_seconds_bucket", {}, 0.01, 4),
        metrics.Sample("run_lag_seconds_bucket", {}, 1.0, 7),
        metrics.Sample("run_lag_seconds_sum", {}, None, 1.5),
        metrics.Sample("tasks", {"state": "paused"}, None, 3),
        metrics.Sample("workers", {"planning": "unknown"}, None, 1),
        metrics.Sample("oldest_overdue_seconds", {}, None, 12.5),
    ]
    families = {f.name: f for f in metrics.families(rows)}
    assert set(families) == {name for name, _, _ in metrics.FAMILIES}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for s in families["sisy_runs"].samples
    }
    assert samples[("sisy_runs_total", (("reason", "broken"), ("status", "failed")))] == 2
    lag = {(s.name, s.labels.get("le")): s.value for s in families["sisy_run_lag_seconds"].samples}
    assert lag == {
        ("sisy_run_lag_seconds_bucket", "0.01"): 4,
        ("sisy_run_lag_seconds_bucket", "1.0"): 7,
        ("sisy_run_lag_seconds_bucket", "+Inf"): 7,
        ("sisy_run_lag_seconds_count", None): 7,
        ("sisy_run_lag_seconds_sum", None): 1.5,
    }
    duration = families["sisy_run_duration_seconds"].samples
    assert {s.name: s.value for s in duration if "le" not in s.labels} == {
        "sisy_run_duration_seconds_count": 0,
        "sisy_run_duration_seconds_sum": 0,
    }
    states = {s.labels["state"]: s.value for s in families["sisy_tasks"].samples}
    assert states == {state.value: 3 if state == "paused" else 0 for state in TaskState}
    planning = {s.labels["planning"]: s.value for s in families["sisy_workers"].samples}
    assert planning == {"true": 0, "false": 0, "unknown": 1}
    assert families["sisy_oldest_overdue_seconds"].samples[0].value == 12.5
    assert families["sisy_runs_waiting"].samples[0].value == 0
