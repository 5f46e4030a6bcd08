"""Prometheus metrics of the whole cluster, read from the database in one statement.

The database keeps the counts (``sisy_metrics_v1``, sql/schema.sql's "Metrics"
section): every worker's runs count, whichever process is scraped, and a scrape
costs what changed since the last one, not the size of the history. This
module only words the rows as Prometheus metric families, through
``prometheus_client``: the view ``sisy_pg.views.metrics`` (``/sisy/metrics``)
and ``manage.py sisy metrics`` serve them; :class:`SisyCollector` adds them to
a registry of your own.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.db import connections
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sisy_pg import procrastinate_seam
from sisy_pg.vocabulary import TaskState

#: Every family, as (name, type, help): what ``describe()`` announces.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    (
        "sisy_runs",
        "counter",
        (
            "Runs that reached a final status, by status and reason (the run's details.reason, "
            "empty when none), whichever worker recorded them."
        ),
    ),
    (
        "sisy_run_lag_seconds",
        "histogram",
        (
            "How late runs started: their first attempt's start minus their instant, on the "
            "database's clock."
        ),
    ),
    (
        "sisy_run_duration_seconds",
        "histogram",
        "How long runs' callables ran (the last attempt), of runs that ran to an end.",
    ),
    ("sisy_tasks", "gauge", "Tasks by state (broken, finished, paused, running, failing, ...)."),
    (
        "sisy_workers",
        "gauge",
        (
            "Live procrastinate workers, by whether a sisy planner runs in them (unknown: no sisy "
            "report)."
        ),
    ),
    (
        "sisy_runs_waiting",
        "gauge",
        (
            "Runs queued: claimed and waiting to start, retries waiting for their instant, runs "
            "buffered behind a running one."
        ),
    ),
    ("sisy_runs_running", "gauge", "Runs running now."),
    (
        "sisy_oldest_overdue_seconds",
        "gauge",
        (
            "Seconds since the oldest instant due and not started (a task's next run not claimed, "
            "or a queued run past its instant); 0 when none."
        ),
    ),
)
HELP = {name: text for name, _, text in FAMILIES}


@dataclasses.dataclass(frozen=True)
class Sample:
    """A row of ``sisy_metrics_v1``: a sample's name without ``sisy_``, labels, bucket bound."""

    metric: str
    labels: dict[str, str]
    le: float | None
    value: float


def read(using: str | None = None) -> list[Sample]:
    """Every sample, from one statement (which folds what finished since the last scrape).

    A worker is live when its heartbeat or its sisy report is younger than
    procrastinate's ``stalled_worker_timeout``.
    """
    alias = using or procrastinate_seam.database_alias()
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT metric, labels, le, value FROM sisy_metrics_v1(make_interval(secs => %s))",
            [procrastinate_seam.stalled_worker_timeout()],
        )
        return [
            Sample(
                metric,
                json.loads(labels) if isinstance(labels, str) else labels,
                le,
                value,
            )
            for metric, labels, le, value in cursor.fetchall()
        ]


def families(samples: Iterable[Sample]) -> list[Metric]:
    """The metric families of ``samples``; every task state and both planning values shown."""
    by_metric: dict[str, list[Sample]] = {}
    for sample in samples:
        by_metric.setdefault(sample.metric, []).append(sample)

    runs = CounterMetricFamily("sisy_runs", HELP["sisy_runs"], labels=("status", "reason"))
    for s in sorted(by_metric.get("runs_total", []), key=lambda s: sorted(s.labels.items())):
        runs.add_metric((s.labels["status"], s.labels["reason"]), s.value)
    out: list[Metric] = [runs]

    for name in ("lag", "duration"):
        buckets = sorted(
            (s.le, s.value)
            for s in by_metric.get(f"run_{name}_seconds_bucket", [])
            if s.le is not None
        )
        total = sum(s.value for s in by_metric.get(f"run_{name}_seconds_sum", []))
        if not buckets or not math.isinf(buckets[-1][0]):
            buckets.append((math.inf, buckets[-1][1] if buckets else 0.0))
        out.append(
            HistogramMetricFamily(
                f"sisy_run_{name}_seconds",
                HELP[f"sisy_run_{name}_seconds"],
                buckets=[(_bound(le), count) for le, count in buckets],
                sum_value=total,
            )
        )

    out.append(
        _gauge("sisy_tasks", "state", by_metric.get("tasks", []), [s.value for s in TaskState])
    )
    out.append(_gauge("sisy_workers", "planning", by_metric.get("workers", []), ["true", "false"]))
    for name in ("runs_waiting", "runs_running", "oldest_overdue_seconds"):
        out.append(
            GaugeMetricFamily(
                f"sisy_{name}",
                HELP[f"sisy_{name}"],
                value=sum(s.value for s in by_metric.get(name, [])),
            )
        )
    return out


def _bound(le: float) -> str:
    """A bucket's ``le`` label, as Prometheus' Go clients write it (``+Inf``, ``0.25``, ``1.0``)."""
    return "+Inf" if math.isinf(le) else repr(float(le))


def _gauge(name: str, label: str, samples: Sequence[Sample], always: Sequence[str]) -> Metric:
    """A gauge by one label: the values in ``always`` shown at 0 when no row says otherwise."""
    values = dict.fromkeys(always, 0.0)
    for s in samples:
        values[s.labels[label]] = values.get(s.labels[label], 0.0) + s.value
    family = GaugeMetricFamily(name, HELP[name], labels=(label,))
    for key, value in values.items():
        family.add_metric((key,), value)
    return family


class SisyCollector(Collector):
    """sisy-pg's metrics for a ``prometheus_client`` registry of your own.

    Each collection runs one statement on the database of procrastinate's
    alias (or ``using``). ``describe()`` names the families without a query,
    so registering it on the default registry touches no database.
    """

    def __init__(self, using: str | None = None) -> None:
        self.using = using

    def collect(self) -> Iterator[Metric]:
        yield from families(read(self.using))

    def describe(self) -> Iterator[Metric]:
        for name, kind, text in FAMILIES:
            yield Metric(name, text, kind)


def exposition(accept: str = "", using: str | None = None) -> tuple[bytes, str]:
    """The text a scrape gets, and its content type (OpenMetrics when ``accept`` asks for it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SisyCollector(using))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def as_json(metrics: Iterable[Metric]) -> dict[str, Any]:
    """The families as one JSON document: by name, their type, help and samples."""
    return {
        family.name: {
            "type": family.type,
            "help": family.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
            ],
        }
        for family in metrics
    }
