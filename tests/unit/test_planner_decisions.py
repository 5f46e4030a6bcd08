"""What the planner makes of the tasks it claims or plans, and what it logs: without a database.

``fire_due`` and ``plan_pending`` lock rows and store the outcome in one
transaction each; in between, their decisions are pure: one task that cannot
be planned is an error stored in its row, never a failed batch.
"""

import datetime as dt
import logging

import pytest

from sisy_pg import policies, schedule
from sisy_pg.planner import _decide_all, _log_decision, _plan_all, _records_and_plans
from sisy_pg.policies import Due, OtherRun, Policy, Record
from sisy_pg.schedule import PlanInput
from sisy_pg.vocabulary import Reason, RunStatus

UTC = dt.timezone.utc
LEAD = dt.timedelta(milliseconds=200)
ALL_LIMIT = 3
HOURLY = "0 * * * *"
TEN = dt.datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)


HOURLY_UTC = PlanInput(HOURLY, "UTC")


def due(task_id, *, claimed_at=TEN, plan_input=HOURLY_UTC, **options):
    return Due(task_id, plan_input, Policy(**options), TEN, claimed_at)


ON_TIME = due(1)
# Five hours late, every instant to run: more than ALL_LIMIT of them.
CATCHING_UP = due(2, claimed_at=TEN + 5 * HOUR, missed="all")
# Late by less than the lead, and the next second due within it: that one runs.
OVERTAKEN_WITHIN_THE_LEAD = due(
    6, claimed_at=TEN + dt.timedelta(milliseconds=900), plan_input=PlanInput("* * * * * *", "UTC")
)
UNKNOWN_ZONE = due(3, plan_input=PlanInput(HOURLY, "Mars/Olympus"))
NAIVE_CLAIM = due(4, claimed_at=TEN.replace(tzinfo=None))  # a bug, not a bad row


def test_each_task_claimed_is_decided_by_its_policies_with_the_planner_s_lead_and_limit():
    claimed = [ON_TIME, CATCHING_UP, OVERTAKEN_WITHIN_THE_LEAD]
    decisions = _decide_all(claimed, lead=LEAD, all_limit=ALL_LIMIT)
    assert decisions == [policies.decide(d, lead=LEAD, all_limit=ALL_LIMIT) for d in claimed]
    # The lead reached the policy: the second after TEN is due within it, and runs.
    assert decisions[2].fired.instant == TEN + dt.timedelta(seconds=1)
    # The limit reached the policy: the catch-up starts at the ALL_LIMIT-th latest instant.
    missed, fired = decisions[1].records
    assert fired.instant == TEN + (5 - ALL_LIMIT + 1) * HOUR and missed.status == "missed"


def test_a_task_that_cannot_be_decided_is_an_error_and_the_others_are_decided(caplog):
    with caplog.at_level(logging.ERROR, "sisy_pg.planner"):
        first, zone, naive, last = _decide_all(
            [ON_TIME, UNKNOWN_ZONE, NAIVE_CLAIM, due(5)], lead=LEAD, all_limit=ALL_LIMIT
        )
    assert isinstance(first, policies.Decision) and isinstance(last, policies.Decision)
    # A schedule's own error is stored as it is; any other exception by its repr.
    with pytest.raises(schedule.ScheduleError) as raised:
        policies.decide(UNKNOWN_ZONE, lead=LEAD, all_limit=ALL_LIMIT)
    assert isinstance(zone, schedule.ScheduleError) and str(zone) == str(raised.value)
    assert isinstance(naive, schedule.ScheduleError) and str(naive).startswith("TypeError(")
    logged = [(r.task_id, r.action, r.levelname) for r in caplog.records]
    assert logged == [(3, "task_unplannable", "ERROR"), (4, "task_unplannable", "ERROR")]


def test_records_keep_their_order_and_task_and_an_unplannable_task_records_nothing():
    claimed = [CATCHING_UP, UNKNOWN_ZONE, ON_TIME]
    decisions = _decide_all(claimed, lead=LEAD, all_limit=ALL_LIMIT)
    records, plans = _records_and_plans(claimed, decisions)
    assert records == [
        *((2, record) for record in decisions[0].records),
        *((1, record) for record in decisions[2].records),
    ]
    assert [task_id for task_id, _ in records] == [2, 2, 1]
    assert plans == {2: decisions[0].plan, 3: decisions[1], 1: decisions[2].plan}


def test_tasks_to_plan_are_planned_each_from_the_database_s_now_given_with_it(caplog):
    in_a_day = TEN + dt.timedelta(days=1)
    with caplog.at_level(logging.ERROR, "sisy_pg.planner"):
        plans = _plan_all(
            [
                (1, HOURLY_UTC, TEN + dt.timedelta(minutes=1)),
                (2, PlanInput(HOURLY, "Mars/Olympus"), TEN),
                (3, HOURLY_UTC, in_a_day),
                (4, HOURLY_UTC, TEN.replace(tzinfo=None)),
            ]
        )
    assert plans[1] == schedule.Plan(TEN + HOUR)
    assert plans[3] == schedule.Plan(in_a_day)
    assert isinstance(plans[2], schedule.ScheduleError)
    assert isinstance(plans[4], schedule.ScheduleError) and str(plans[4]).startswith("ValueError(")
    assert [r.task_id for r in caplog.records] == [2, 4]


# --- the log line of each decision (docs/operations.md, "Log lines") -------------------------

MISSED = policies._missed(due(1, claimed_at=TEN + HOUR * 2), TEN + HOUR, None, True)
WAITING = OtherRun(run_id=40, instant=TEN - HOUR, count=1)
RUNNING = OtherRun(run_id=41, instant=TEN - HOUR)


def decided(task_due):
    (record,) = policies.decide(task_due, lead=LEAD, all_limit=ALL_LIMIT).records
    return record


@pytest.mark.parametrize(
    ("record", "level", "action"),
    [
        pytest.param(decided(ON_TIME), logging.INFO, "task_fired", id="fired"),
        pytest.param(MISSED, logging.WARNING, "task_missed", id="missed: news"),
        pytest.param(
            decided(Due(1, HOURLY_UTC, Policy(), TEN, TEN, waiting=WAITING)),
            logging.INFO,
            "task_coalesced",
            id="coalesced: the policy working",
        ),
        pytest.param(
            decided(Due(1, HOURLY_UTC, Policy(overlap="skip"), TEN, TEN, running=RUNNING)),
            logging.INFO,
            "task_overlap",
            id="overlap: the policy working",
        ),
        pytest.param(
            Record(TEN, RunStatus.SKIPPED, "backlog: ...", {"reason": Reason.BACKLOG}),
            logging.INFO,
            "task_backlog",
            id="backlog",
        ),
    ],
)
def test_each_decision_is_one_line_at_its_level_with_its_action(caplog, record, level, action):
    with caplog.at_level(logging.DEBUG, "sisy_pg.planner"):
        _log_decision(9, record)
    (line,) = caplog.records
    assert (line.levelno, line.action) == (level, action)
    assert (line.task_id, line.scheduled_for) == (9, record.instant.isoformat())
    if record.status != RunStatus.QUEUED:
        assert record.error in line.getMessage()
