"""The per-task policies and the decision they make (pure: no database).

``policies.decide`` is given one claimed instant of a task and returns the
records the planner writes (a 'queued' run, or a row saying why an instant is
not run) and the task's next plan. The planner claims the task again while
that plan's ``next_run`` is due, so a catch-up is a walk of decisions (see
``walk``). Times are UTC ("MM-DD hh:mm[:ss]" is in 2026) unless a zone is named.
The last section compares the options with the database's (its constraint and
``sisy_policy_v1``).
"""

import dataclasses
import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from django.utils.dateparse import parse_datetime

from sisy_pg import conf, policies, schedule
from sisy_pg.policies import Due, OtherRun, Policy
from sisy_pg.schedule import Plan, PlanInput
from tests.helpers import INVALID_OPTIONS, VALID_OPTIONS

UTC = dt.timezone.utc
LEAD = dt.timedelta(milliseconds=200)  # the planner claims this far ahead (SISY_LEAD_TIME)
TASK_ID = 7
MICROSECOND = dt.timedelta(microseconds=1)
SECOND = dt.timedelta(seconds=1)
EVERY_SECOND = "* * * * * *"


def at(*args, tz=UTC):
    return dt.datetime(*args, tzinfo=tz)


def utc(text):
    if text.count("-") == 1:
        text = f"2026-{text}"
    return parse_datetime(text).replace(tzinfo=UTC)


def policy(grace=60, **options):
    """A task's Policy, grace in seconds."""
    return Policy(grace=dt.timedelta(seconds=grace), **options)


def task_of(task):
    return PlanInput(task, "UTC") if isinstance(task, str) else task


def due(task, instant, claimed_at, *, waiting=None, running=None, **options):
    """The claimed instant of a task (a PlanInput, or a schedule in UTC)."""
    return Due(
        TASK_ID,
        plan_input=task_of(task),
        policy=policy(**options),
        instant=instant,
        claimed_at=claimed_at,
        waiting=waiting,
        running=running,
    )


def decide(the_due, all_limit=100):
    return policies.decide(the_due, lead=LEAD, all_limit=all_limit)


def summary(decision):
    """What the run history shows: (status, instant, details) of each record."""
    return [(r.status, r.instant, r.details) for r in decision.records]


def catch_up(claimed_at):
    return {"catch_up": True, "due_at": claimed_at.isoformat()}


def missed(through, policy_name):
    return {"reason": "missed", "through": through.isoformat(), "policy": policy_name}


def walk(task, the_policy, instant, claimed_at, all_limit=100):
    """The decisions of a planner catching up at ``claimed_at``.

    Each plan's next_run is claimed next while it is due (by claimed_at plus
    the lead), with fire_count kept as the store keeps it.
    """
    task, decisions = task_of(task), []
    while True:
        decision = policies.decide(
            Due(TASK_ID, task, the_policy, instant, claimed_at), lead=LEAD, all_limit=all_limit
        )
        decisions.append(decision)
        if decision.fired:
            task = dataclasses.replace(task, fire_count=task.fire_count + 1)
        following = decision.plan.next_run
        if following is None or following > claimed_at + LEAD:
            return decisions
        assert following > instant, "a walk must move forward"
        assert len(decisions) < 1000
        instant = following


def fires(decisions):
    return [d.fired.instant for d in decisions if d.fired]


# --- On time ---------------------------------------------------------------


@pytest.mark.parametrize(
    "claimed_at",
    [
        pytest.param(utc("05-05 10:00"), id="at the instant"),
        pytest.param(utc("05-05 09:59:59.85"), id="ahead by the lead"),
        pytest.param(utc("05-05 10:00:59"), id="59 s late, within the grace"),
        pytest.param(utc("05-05 10:01"), id="late by exactly the grace"),
    ],
)
def test_on_time_fire_is_one_queued_run_then_the_next_instant(claimed_at):
    decision = decide(due("*/5 * * * *", utc("05-05 10:00"), claimed_at))
    assert summary(decision) == [("queued", utc("05-05 10:00"), {})]
    assert decision.records[0].error == ""
    assert decision.fired is decision.records[0]
    assert decision.plan == Plan(next_run=utc("05-05 10:05"))


def test_on_time_fire_is_counted_so_the_last_iteration_finishes_the_task():
    once = PlanInput("* * * * *", "UTC", iterations=1)
    decision = decide(due(once, utc("05-05 10:00"), utc("05-05 10:00")))
    assert decision.fired is not None
    assert decision.plan == Plan(next_run=None, finished=True)

    two = PlanInput("* * * * *", "UTC", iterations=2)
    decision = decide(due(two, utc("05-05 10:00"), utc("05-05 10:00")))
    assert decision.plan == Plan(next_run=utc("05-05 10:01"))


def test_late_by_one_microsecond_more_than_the_grace_is_missed():
    decision = decide(due("* * * * *", utc("05-05 10:00"), utc("05-05 10:01") + MICROSECOND))
    assert [r.status for r in decision.records] == ["missed", "queued"]


# --- Missed beyond the grace, after an outage --------------------------------
#
# Each row: the schedule, the grace (s), the instant due, when the planner
# claims it, the last instant before the latest, the latest instant up to the
# claim plus the lead, whether that latest is itself within the grace, the
# instant after it, and for missed='all' (limit 100) how many instants run and
# the first of them.
OUTAGES = [
    pytest.param(
        "* * * * * *",
        0,
        utc("05-05 10:00:00"),
        utc("05-05 10:05:00.5"),
        utc("05-05 10:04:59"),
        utc("05-05 10:05:00"),
        False,
        utc("05-05 10:05:01"),
        100,
        utc("05-05 10:03:21"),
        id="every second, 5 min, grace 0: even the latest is late",
    ),
    pytest.param(
        "* * * * * *",
        60,
        utc("05-05 10:00:00"),
        utc("05-05 10:04:59.9"),
        utc("05-05 10:04:59"),
        utc("05-05 10:05:00"),  # claimed ahead by the lead
        True,
        utc("05-05 10:05:01"),
        100,
        utc("05-05 10:03:21"),
        id="every second, 5 min: the latest is on time",
    ),
    pytest.param(
        "* * * * *",
        10,
        utc("05-05 10:00"),
        utc("05-05 11:00:30"),
        utc("05-05 10:59"),
        utc("05-05 11:00"),
        False,
        utc("05-05 11:01"),
        61,
        utc("05-05 10:00"),
        id="every minute, 1 h, grace 10: the latest is late",
    ),
    pytest.param(
        "* * * * *",
        60,
        utc("05-05 10:00"),
        utc("05-05 11:00:30"),
        utc("05-05 10:59"),
        utc("05-05 11:00"),
        True,
        utc("05-05 11:01"),
        61,
        utc("05-05 10:00"),
        id="every minute, 1 h: the latest is on time",
    ),
    pytest.param(
        "30 2 * * *",
        60,
        utc("05-05 02:30"),
        utc("05-07 12:00"),
        utc("05-06 02:30"),
        utc("05-07 02:30"),
        False,
        utc("05-08 02:30"),
        3,
        utc("05-05 02:30"),
        id="daily, 2.5 days: the latest is late",
    ),
    pytest.param(
        "30 2 * * *",
        60,
        utc("05-05 02:30"),
        utc("05-07 02:30:30"),
        utc("05-06 02:30"),
        utc("05-07 02:30"),
        True,
        utc("05-08 02:30"),
        3,
        utc("05-05 02:30"),
        id="daily, 2 days: the latest is on time",
    ),
]
OUTAGE_ARGS = (
    "expression",
    "grace",
    "instant",
    "claimed_at",
    "before_latest",
    "latest",
    "latest_on_time",
    "following",
    "all_count",
    "all_first",
)


@pytest.mark.parametrize(OUTAGE_ARGS, OUTAGES)
def test_outage_coalesce_runs_only_the_latest(
    expression,
    grace,
    instant,
    claimed_at,
    before_latest,
    latest,
    latest_on_time,
    following,
    all_count,
    all_first,
):
    decision = decide(due(expression, instant, claimed_at, grace=grace, missed="coalesce"))
    fired_details = {} if latest_on_time else catch_up(claimed_at)
    assert summary(decision) == [
        ("missed", instant, missed(before_latest, "coalesce")),
        ("queued", latest, fired_details),
    ]
    assert decision.plan == Plan(next_run=following)


@pytest.mark.parametrize(OUTAGE_ARGS, OUTAGES)
def test_outage_skip_runs_the_latest_only_if_it_is_on_time(
    expression,
    grace,
    instant,
    claimed_at,
    before_latest,
    latest,
    latest_on_time,
    following,
    all_count,
    all_first,
):
    once = PlanInput(expression, "UTC", iterations=1)
    decision = decide(due(once, instant, claimed_at, grace=grace, missed="skip"))
    if latest_on_time:
        assert summary(decision) == [
            ("missed", instant, missed(before_latest, "skip")),
            ("queued", latest, {}),
        ]
        assert decision.plan == Plan(next_run=None, finished=True)  # the fire was counted
    else:
        assert summary(decision) == [("missed", instant, missed(latest, "skip"))]
        assert decision.fired is None
        assert decision.plan == Plan(next_run=following)  # no fire counted: not finished


@pytest.mark.parametrize(OUTAGE_ARGS, OUTAGES)
def test_outage_all_runs_every_instant_one_per_claim(
    expression,
    grace,
    instant,
    claimed_at,
    before_latest,
    latest,
    latest_on_time,
    following,
    all_count,
    all_first,
):
    the_policy = policy(grace=grace, missed="all")
    decisions = walk(expression, the_policy, instant, claimed_at, all_limit=100)

    first = decisions[0]
    if all_first == instant:  # 100 instants or fewer: the instant due runs first
        assert summary(first) == [("queued", instant, catch_up(claimed_at))]
    else:  # the oldest are missed
        previous = schedule.last_before(expression, "UTC", all_first, instant)
        assert summary(first) == [
            ("missed", instant, missed(previous, "all")),
            ("queued", all_first, catch_up(claimed_at)),
        ]
    assert all(len(d.records) == 1 for d in decisions[1:])

    fired = fires(decisions)
    assert len(fired) == len(decisions) == all_count
    assert (fired[0], fired[-1]) == (all_first, latest)
    assert all(
        schedule.next_after(expression, "UTC", a) == b for a, b in itertools.pairwise(fired)
    ), "one run per instant, in order"
    for decision in decisions:  # catch-up details on the late ones only
        late = decision.fired.instant < claimed_at - the_policy.grace
        assert decision.fired.details == (catch_up(claimed_at) if late else {})
    assert decisions[-1].plan == Plan(next_run=following)


def test_all_beyond_the_limit_runs_the_latest_limit_in_order():
    claimed_at = utc("05-05 10:10:30")  # 10:00 to 10:10 are due: 11 instants
    decisions = walk("* * * * *", policy(missed="all"), utc("05-05 10:00"), claimed_at, 3)
    assert [summary(d) for d in decisions] == [
        [
            ("missed", utc("05-05 10:00"), missed(utc("05-05 10:07"), "all")),
            ("queued", utc("05-05 10:08"), catch_up(claimed_at)),
        ],
        [("queued", utc("05-05 10:09"), catch_up(claimed_at))],
        [("queued", utc("05-05 10:10"), {})],  # within the grace: a plain fire
    ]
    assert [d.plan.next_run for d in decisions] == [
        utc("05-05 10:09"),
        utc("05-05 10:10"),
        utc("05-05 10:11"),
    ]


def test_all_with_exactly_the_limit_missed_misses_none():
    claimed_at = utc("05-05 10:02:30")  # 10:00, 10:01, 10:02
    decision = decide(due("* * * * *", utc("05-05 10:00"), claimed_at, missed="all"), 3)
    assert summary(decision) == [("queued", utc("05-05 10:00"), catch_up(claimed_at))]
    decision = decide(due("* * * * *", utc("05-05 10:00"), claimed_at, missed="all"), 2)
    assert summary(decision) == [
        ("missed", utc("05-05 10:00"), missed(utc("05-05 10:00"), "all")),
        ("queued", utc("05-05 10:01"), catch_up(claimed_at)),
    ]


def test_a_catch_up_is_counted_as_a_fire():
    once = PlanInput("30 2 * * *", "UTC", iterations=1)
    for missed_policy in ("coalesce", "all"):
        decision = decide(due(once, utc("05-05 02:30"), utc("05-07 12:00"), missed=missed_policy))
        assert decision.fired.details["catch_up"] is True
        assert decision.plan == Plan(next_run=None, finished=True), missed_policy


@pytest.mark.parametrize(
    ("missed_policy", "claimed_at", "all_limit", "error"),
    [
        pytest.param(
            "coalesce",
            utc("05-05 11:00:30"),
            100,
            "missed: 2026-05-05T10:00:00+00:00 to 2026-05-05T10:59:00+00:00 could not start "
            "within the grace of 10 s (workers stopped or busy); policy coalesce: "
            "only the latest, 2026-05-05T11:00:00+00:00, runs",
            id="coalesce",
        ),
        pytest.param(
            "skip",
            utc("05-05 11:00:30"),
            100,
            "missed: 2026-05-05T10:00:00+00:00 to 2026-05-05T11:00:00+00:00 could not start "
            "within the grace of 10 s (workers stopped or busy); policy skip: none is run",
            id="skip, the latest is late",
        ),
        pytest.param(
            "skip",
            utc("05-05 11:00:05"),
            100,
            "missed: 2026-05-05T10:00:00+00:00 to 2026-05-05T10:59:00+00:00 could not start "
            "within the grace of 10 s (workers stopped or busy); policy skip: "
            "only the latest, 2026-05-05T11:00:00+00:00, runs",
            id="skip, the latest is on time",
        ),
        pytest.param(
            "all",
            utc("05-05 11:00:30"),
            3,
            "missed: 2026-05-05T10:00:00+00:00 to 2026-05-05T10:57:00+00:00 could not start "
            "within the grace of 10 s (workers stopped or busy); policy all: catching up "
            "from 2026-05-05T10:58:00+00:00 (the latest SISY_MISSED_ALL_LIMIT at most)",
            id="all",
        ),
    ],
)
def test_missed_error_says_the_span_the_grace_and_what_the_policy_does(
    missed_policy, claimed_at, all_limit, error
):
    the_due = due("* * * * *", utc("05-05 10:00"), claimed_at, grace=10, missed=missed_policy)
    record = decide(the_due, all_limit).records[0]
    assert record.status == "missed"
    assert record.error == error


def test_grace_is_shown_as_given():
    the_due = due("* * * * *", utc("05-05 10:00"), utc("05-05 10:01:00.7"), grace=0.5)
    assert "within the grace of 0.5 s " in decide(the_due).records[0].error


def test_one_instant_missed_coalesce_the_next_on_time_runs():
    decision = decide(due("* * * * *", utc("05-05 10:00"), utc("05-05 10:01:30")))
    assert summary(decision) == [
        ("missed", utc("05-05 10:00"), missed(utc("05-05 10:00"), "coalesce")),
        ("queued", utc("05-05 10:01"), {}),
    ]
    assert decision.records[0].error.startswith(
        "missed: 2026-05-05T10:00:00+00:00 could not start within the grace of 60 s "
    )
    assert decision.plan == Plan(next_run=utc("05-05 10:02"))


def test_one_instant_missed_skip_none_runs():
    decision = decide(due("30 2 * * *", utc("05-05 02:30"), utc("05-05 04:00"), missed="skip"))
    assert summary(decision) == [("missed", utc("05-05 02:30"), missed(utc("05-05 02:30"), "skip"))]
    assert decision.records[0].error == (
        "missed: 2026-05-05T02:30:00+00:00 could not start within the grace of 60 s "
        "(workers stopped or busy); policy skip: none is run"
    )
    assert decision.plan == Plan(next_run=utc("05-06 02:30"))


@pytest.mark.parametrize("missed_policy", ["coalesce", "all"])
def test_one_instant_late_runs_as_the_catch_up_and_nothing_is_missed(missed_policy):
    claimed_at = utc("05-05 04:00")
    decision = decide(due("30 2 * * *", utc("05-05 02:30"), claimed_at, missed=missed_policy))
    assert summary(decision) == [("queued", utc("05-05 02:30"), catch_up(claimed_at))]
    assert decision.plan == Plan(next_run=utc("05-06 02:30"))


# --- A stall within the grace: no catch-up burst -----------------------------
#
# A locked row, a restored database or an overloaded planner leaves a task's
# next_run several instants old but within its grace. Only the latest instant
# due runs (missed='all' excepted); the older ones are one 'missed' record.


def overtaken_error(first, through, policy_name, fire):
    return (
        f"missed: {first.isoformat()} to {through.isoformat()} could not start before a "
        "later instant was due (workers stopped or busy, or the task's row locked); "
        f"policy {policy_name}: only the latest, {fire.isoformat()}, runs"
    )


@pytest.mark.parametrize("missed_policy", ["coalesce", "skip"])
def test_stall_within_the_grace_runs_only_the_latest_instant(missed_policy):
    claimed_at = utc("05-05 10:00:12.3")  # a row locked for 12 s
    decision = decide(due(EVERY_SECOND, utc("05-05 10:00"), claimed_at, missed=missed_policy))
    assert summary(decision) == [
        ("missed", utc("05-05 10:00"), missed(utc("05-05 10:00:11"), missed_policy)),
        ("queued", utc("05-05 10:00:12"), {}),  # on time: a plain fire
    ]
    assert decision.records[0].error == overtaken_error(
        utc("05-05 10:00"), utc("05-05 10:00:11"), missed_policy, utc("05-05 10:00:12")
    )
    assert decision.plan == Plan(next_run=utc("05-05 10:00:13"))


@pytest.mark.parametrize("missed_policy", ["coalesce", "skip"])
@pytest.mark.parametrize("stall", [1.3, 2, 7.5, 39.9, 59, 61, 3600])
@pytest.mark.parametrize("grace", [60, 5])
def test_stall_of_any_length_is_at_most_one_run_and_every_instant_recorded(
    missed_policy, stall, grace
):
    """The planner's walk after a stall: one decision, every instant accounted for."""
    instant = utc("05-05 10:00")
    claimed_at = instant + dt.timedelta(seconds=stall)
    decisions = walk(EVERY_SECOND, policy(grace=grace, missed=missed_policy), instant, claimed_at)
    assert len(fires(decisions)) <= 1
    assert len(decisions) == 1  # no burst: the next claim is the schedule's next instant
    [decision] = decisions
    [gap] = [r for r in decision.records if r.status == "missed"]
    through = parse_datetime(gap.details["through"])
    fired = decision.fired.instant if decision.fired else None
    following = decision.plan.next_run
    latest = schedule.last_before(EVERY_SECOND, "UTC", claimed_at + LEAD + MICROSECOND, instant)
    assert following == latest + SECOND
    accounted = {fired} if fired else set()
    current = instant
    while current < following:
        assert current in accounted or gap.instant <= current <= through, current
        current += SECOND
    # The latest runs unless it is past its grace under skip; a catch-up past its grace.
    late = latest < claimed_at - dt.timedelta(seconds=grace)
    if missed_policy == "skip" and late:
        assert fired is None
    else:
        assert fired == latest
        assert decision.fired.details == (catch_up(claimed_at) if late else {})


def test_stall_within_the_grace_all_runs_every_instant_one_per_claim():
    claimed_at = utc("05-05 10:00:12.3")
    decisions = walk(EVERY_SECOND, policy(missed="all"), utc("05-05 10:00"), claimed_at)
    assert fires(decisions) == [utc("05-05 10:00") + n * SECOND for n in range(13)]
    assert all(len(d.records) == 1 for d in decisions)


def test_stall_within_the_grace_with_a_run_waiting_is_missed_then_coalesced():
    claimed_at = utc("05-05 10:00:12.3")
    waiting_run = OtherRun(41, utc("05-05 09:59:59"))
    the_due = due(EVERY_SECOND, utc("05-05 10:00"), claimed_at, waiting=waiting_run)
    decision = decide(the_due)
    assert summary(decision) == [
        ("missed", utc("05-05 10:00"), missed(utc("05-05 10:00:11"), "coalesce")),
        ("skipped", utc("05-05 10:00:12"), {"reason": "coalesced", "into_run": 41}),
    ]


def test_stall_within_the_grace_stops_at_end_running():
    task = PlanInput(EVERY_SECOND, "UTC", end_running=utc("05-05 10:00:05.5"))
    decision = decide(due(task, utc("05-05 10:00"), utc("05-05 10:00:12.3")))
    assert summary(decision) == [
        ("missed", utc("05-05 10:00"), missed(utc("05-05 10:00:04"), "coalesce")),
        ("queued", utc("05-05 10:00:05"), {}),
    ]
    assert decision.plan == Plan(next_run=None, finished=True)


@pytest.mark.parametrize(
    "claimed_at",
    [
        pytest.param(utc("05-05 10:00:00.5"), id="late, the next instant not due yet"),
        pytest.param(utc("05-05 10:00:00.79"), id="late, the next instant just beyond the lead"),
    ],
)
def test_late_but_not_overtaken_fires_its_instant(claimed_at):
    decision = decide(due(EVERY_SECOND, utc("05-05 10:00"), claimed_at))
    assert summary(decision) == [("queued", utc("05-05 10:00"), {})]
    assert decision.plan == Plan(next_run=utc("05-05 10:00:01"))


def test_late_by_less_than_the_lead_and_overtaken_runs_the_latest():
    decision = decide(due(EVERY_SECOND, utc("05-05 10:00"), utc("05-05 10:00:00.9")))
    assert summary(decision) == [
        ("missed", utc("05-05 10:00"), missed(utc("05-05 10:00"), "coalesce")),
        ("queued", utc("05-05 10:00:01"), {}),
    ]


def test_claimed_ahead_by_a_lead_longer_than_the_interval_is_never_overtaken():
    """SISY_LEAD_TIME may exceed a schedule's interval: an instant still to come is not stale."""
    claimed_at = utc("05-05 09:59:59.5")
    the_due = due(EVERY_SECOND, utc("05-05 10:00"), claimed_at)
    decision = policies.decide(the_due, lead=dt.timedelta(seconds=3), all_limit=100)
    assert summary(decision) == [("queued", utc("05-05 10:00"), {})]
    assert decision.plan == Plan(next_run=utc("05-05 10:00:01"))


@pytest.mark.parametrize("late_by", [0.1, 0.9, 30])
def test_run_now_off_the_schedule_within_its_grace_is_fired_even_when_overtaken(late_by):
    """next_run set by a writer (run now) is a run asked for: it runs, then the schedule."""
    run_now = utc("05-05 10:00:00.25")
    the_due = due(EVERY_SECOND, run_now, run_now + dt.timedelta(seconds=late_by))
    decision = decide(the_due)
    assert summary(decision) == [("queued", run_now, {})]
    assert decision.plan == Plan(next_run=utc("05-05 10:00:01"))


def test_run_now_off_the_schedule_past_its_grace_is_recorded_missed():
    """No schedule instant between it and the latest: the range is the instant alone."""
    run_now = utc("05-05 10:00:30.25")
    claimed_at = utc("05-05 10:01:00.5")
    decision = decide(due("* * * * *", run_now, claimed_at, grace=10))
    assert summary(decision) == [
        ("missed", run_now, missed(run_now, "coalesce")),
        ("queued", utc("05-05 10:01"), {}),
    ]


# --- end_running -------------------------------------------------------------

ENDING = PlanInput("* * * * *", "UTC", end_running=utc("05-05 10:05:30"))


def test_end_running_coalesce_catches_up_its_last_instant_then_finishes():
    claimed_at = utc("05-05 12:00")
    decision = decide(due(ENDING, utc("05-05 10:00"), claimed_at))
    assert summary(decision) == [
        ("missed", utc("05-05 10:00"), missed(utc("05-05 10:04"), "coalesce")),
        ("queued", utc("05-05 10:05"), catch_up(claimed_at)),
    ]
    assert decision.plan == Plan(next_run=None, finished=True)


def test_end_running_skip_misses_through_its_last_instant_then_finishes():
    decision = decide(due(ENDING, utc("05-05 10:00"), utc("05-05 12:00"), missed="skip"))
    assert summary(decision) == [("missed", utc("05-05 10:00"), missed(utc("05-05 10:05"), "skip"))]
    assert decision.plan == Plan(next_run=None, finished=True)


def test_end_running_all_runs_up_to_its_last_instant_then_finishes():
    decisions = walk(ENDING, policy(missed="all"), utc("05-05 10:00"), utc("05-05 10:30"))
    assert fires(decisions) == [utc(f"05-05 10:0{m}") for m in range(6)]
    assert all(r.status == "queued" for d in decisions for r in d.records)
    assert decisions[-1].plan == Plan(next_run=None, finished=True)


def test_end_running_all_beyond_the_limit_stays_within_end_running():
    claimed_at = utc("05-05 12:00")  # 10:00 to 10:05 are the task's last instants
    decisions = walk(ENDING, policy(missed="all"), utc("05-05 10:00"), claimed_at, all_limit=3)
    assert summary(decisions[0]) == [
        ("missed", utc("05-05 10:00"), missed(utc("05-05 10:02"), "all")),
        ("queued", utc("05-05 10:03"), catch_up(claimed_at)),
    ]
    assert fires(decisions) == [utc("05-05 10:03"), utc("05-05 10:04"), utc("05-05 10:05")]
    assert decisions[-1].plan == Plan(next_run=None, finished=True)


# --- Making way for a run waiting or running -----------------------------------

WAITING = OtherRun(41, utc("05-05 09:59"))
RUNNING = OtherRun(40, utc("05-05 09:58"))
COALESCED = (
    "skipped",
    {"reason": "coalesced", "into_run": 41},
    "coalesced: run 41 (for 2026-05-05T09:59:00+00:00) is still waiting to start",
)
QUEUED = ("queued", {}, "")


def waiting(count):
    return dataclasses.replace(WAITING, count=count)


@pytest.mark.parametrize(
    ("options", "waiting_run", "running_run", "expected"),
    [
        pytest.param({}, WAITING, None, COALESCED, id="coalesce + waiting: coalesced"),
        pytest.param({"missed": "skip"}, WAITING, None, COALESCED, id="skip + waiting"),
        pytest.param({"missed": "all"}, waiting(1), None, QUEUED, id="all + 1 waiting"),
        pytest.param({"missed": "all"}, waiting(99), None, QUEUED, id="all + 99 waiting"),
        pytest.param(
            {"missed": "all"},
            waiting(100),
            None,
            (
                "skipped",
                {"reason": "backlog", "waiting": 100},
                (
                    "backlog: 100 runs of this task are waiting to start "
                    "(SISY_MISSED_ALL_LIMIT is 100)"
                ),
            ),
            id="all + 100 waiting: backlog",
        ),
        pytest.param(
            {"overlap": "skip"},
            None,
            RUNNING,
            (
                "skipped",
                {"reason": "overlap", "overlapped_run": 40},
                (
                    "overlap: run 40 (for 2026-05-05T09:58:00+00:00) is still running "
                    "and the task does not allow overlap"
                ),
            ),
            id="overlap skip + running",
        ),
        pytest.param(
            {"overlap": "skip"},
            WAITING,
            None,
            (
                "skipped",
                {"reason": "overlap", "overlapped_run": 41},
                (
                    "overlap: run 41 (for 2026-05-05T09:59:00+00:00) is still waiting to start "
                    "and the task does not allow overlap"
                ),
            ),
            id="overlap skip + waiting, nothing running",
        ),
        pytest.param(
            {"overlap": "skip", "missed": "all"},
            WAITING,
            RUNNING,
            (
                "skipped",
                {"reason": "overlap", "overlapped_run": 40},
                (
                    "overlap: run 40 (for 2026-05-05T09:58:00+00:00) is still running "
                    "and the task does not allow overlap"
                ),
            ),
            id="overlap skip + running + waiting: names the running one",
        ),
        pytest.param({"overlap": "skip"}, None, None, QUEUED, id="overlap skip, alone"),
        pytest.param({"overlap": "allow"}, None, RUNNING, QUEUED, id="overlap allow + running"),
        pytest.param(
            {"overlap": "buffer_one"},
            None,
            RUNNING,
            ("queued", {"buffered_behind": 40}, ""),
            id="buffer_one + running: waits behind it",
        ),
        pytest.param(
            {"overlap": "buffer_one"}, WAITING, RUNNING, COALESCED, id="buffer_one + both"
        ),
        pytest.param(
            {"overlap": "buffer_one"}, WAITING, None, COALESCED, id="buffer_one + waiting"
        ),
        pytest.param(
            {"overlap": "buffer_one", "missed": "all"},
            waiting(1),
            RUNNING,
            COALESCED,
            id="buffer_one + all + both: one waits at most",
        ),
        pytest.param({"overlap": "buffer_one"}, None, None, QUEUED, id="buffer_one, alone"),
    ],
)
def test_on_time_fire_makes_way(options, waiting_run, running_run, expected):
    the_due = due(
        "* * * * *",
        utc("05-05 10:00"),
        utc("05-05 10:00"),
        waiting=waiting_run,
        running=running_run,
        **options,
    )
    decision = decide(the_due)
    [record] = decision.records
    assert (record.instant, record.status, record.details, record.error) == (
        utc("05-05 10:00"),
        *expected,
    )
    assert decision.plan == Plan(next_run=utc("05-05 10:01"))


@pytest.mark.parametrize(
    ("options", "claimed_at", "fire"),
    [
        pytest.param({}, utc("05-05 11:00:30"), utc("05-05 11:00"), id="coalesce"),
        pytest.param({"missed": "skip"}, utc("05-05 11:00:05"), utc("05-05 11:00"), id="skip"),
    ],
)
def test_missed_fire_coalesces_into_the_waiting_run(options, claimed_at, fire):
    the_due = due("* * * * *", utc("05-05 10:00"), claimed_at, grace=10, waiting=WAITING, **options)
    decision = decide(the_due)
    status, details, error = COALESCED
    assert [r.status for r in decision.records] == ["missed", status]
    assert (decision.records[1].instant, decision.records[1].details) == (fire, details)
    assert decision.records[1].error.startswith(error)
    assert decision.plan == Plan(next_run=utc("05-05 11:01"))


def test_missed_all_with_runs_waiting_below_the_limit_queues_the_catch_up():
    claimed_at = utc("05-05 10:10:30")
    the_due = due("* * * * *", utc("05-05 10:00"), claimed_at, missed="all", waiting=waiting(5))
    decision = decide(the_due)
    assert summary(decision) == [("queued", utc("05-05 10:00"), catch_up(claimed_at))]


def test_missed_all_with_the_limit_waiting_is_a_backlog():
    claimed_at = utc("05-05 10:10:30")
    the_due = due("* * * * *", utc("05-05 10:00"), claimed_at, missed="all", waiting=waiting(3))
    decision = decide(the_due, all_limit=3)
    assert summary(decision) == [
        ("missed", utc("05-05 10:00"), missed(utc("05-05 10:07"), "all")),
        ("skipped", utc("05-05 10:08"), {"reason": "backlog", "waiting": 3}),
    ]
    assert decision.plan == Plan(next_run=utc("05-05 10:09"))


def test_buffer_one_catch_up_keeps_its_catch_up_details():
    claimed_at = utc("05-05 11:00:30")
    the_due = due(
        "* * * * *",
        utc("05-05 10:00"),
        claimed_at,
        grace=10,
        overlap="buffer_one",
        running=RUNNING,
    )
    assert decide(the_due).records[1].details == {**catch_up(claimed_at), "buffered_behind": 40}


@pytest.mark.parametrize(
    ("options", "waiting_run", "running_run"),
    [
        pytest.param({"overlap": "skip"}, None, RUNNING, id="overlap"),
        pytest.param({}, WAITING, None, id="coalesced"),
        pytest.param({"missed": "all"}, waiting(100), None, id="backlog"),
    ],
)
def test_a_skipped_fire_is_not_counted_but_the_plan_moves_on(options, waiting_run, running_run):
    once = PlanInput("* * * * *", "UTC", iterations=1)
    the_due = due(
        once,
        utc("05-05 10:00"),
        utc("05-05 10:00"),
        waiting=waiting_run,
        running=running_run,
        **options,
    )
    decision = decide(the_due)
    assert [r.status for r in decision.records] == ["skipped"]
    assert decision.fired is None
    assert decision.plan == Plan(next_run=utc("05-05 10:01"))  # not finished


# --- Daylight saving -----------------------------------------------------------
#
# Lord Howe, 2026: clocks go back on 5 April at 02:00 LHDT (+11, 4 April 15:00Z)
# to 01:30 LHST (+10:30). '*/15 * * * *' fires at 14:30Z (01:30 LHDT), 14:45Z
# (01:45 LHDT), 15:00Z (01:30 LHST), 15:15Z (01:45 LHST), 15:30Z (02:00 LHST).
# Berlin, 2026: clocks go back on 25 October at 03:00 CEST (01:00Z) to 02:00
# CET: 02:00-03:00 is 00:00-01:00Z, then 01:00-02:00Z.

DST = [
    pytest.param(
        "Australia/Lord_Howe",
        "*/15 * * * *",
        utc("04-04 14:45"),  # 01:45 LHDT
        utc("04-04 15:20"),  # 01:50 LHST, 35 minutes later
        utc("04-04 15:00"),  # 01:30 LHST
        utc("04-04 15:15"),  # 01:45 LHST: the same wall time as the instant due
        utc("04-04 15:30"),  # 02:00 LHST
        id="Lord Howe, */15 back 35 min later across the half-hour change",
    ),
    pytest.param(
        "Europe/Berlin",
        "* * * * *",
        utc("10-25 00:58"),  # 02:58 CEST
        utc("10-25 01:02:30"),  # 02:02:30 CET
        utc("10-25 01:01"),  # 02:01 CET
        utc("10-25 01:02"),  # 02:02 CET: earlier on the wall than the instant due
        utc("10-25 01:03"),
        id="Berlin, every minute into the repeated hour",
    ),
    pytest.param(
        "Europe/Berlin",
        "30 * * * *",
        utc("10-25 00:30"),  # 02:30 CEST
        utc("10-25 01:45"),  # 02:45 CET
        utc("10-25 00:30"),  # one instant missed
        utc("10-25 01:30"),  # 02:30 CET: the interval fires on both passes
        utc("10-25 02:30"),  # 03:30 CET
        id="Berlin, hourly at :30 on both passes of the repeated hour",
    ),
]


@pytest.mark.parametrize(
    ("zone", "expression", "instant", "claimed_at", "before_latest", "latest", "following"), DST
)
def test_dst_catch_up_picks_the_right_latest_instant(
    zone, expression, instant, claimed_at, before_latest, latest, following
):
    # The expected instants are the schedule's own.
    now = claimed_at + LEAD
    assert schedule.last_before(expression, zone, now + MICROSECOND, instant) == latest
    assert schedule.last_before(expression, zone, latest, instant) == before_latest
    assert schedule.next_after(expression, zone, latest) == following
    task = PlanInput(expression, zone)

    coalesce = decide(due(task, instant, claimed_at, grace=10))
    assert summary(coalesce) == [
        ("missed", instant, missed(before_latest, "coalesce")),
        ("queued", latest, catch_up(claimed_at)),
    ]
    assert coalesce.plan == Plan(next_run=following)

    skip = decide(due(task, instant, claimed_at, grace=10, missed="skip"))
    assert summary(skip) == [("missed", instant, missed(latest, "skip"))]
    assert skip.plan == Plan(next_run=following)

    decisions = walk(task, policy(grace=10, missed="all"), instant, claimed_at)
    fired = fires(decisions)
    assert (fired[0], fired[-1]) == (instant, latest)
    expected, current = [instant], instant
    while (current := schedule.next_after(expression, zone, current)) <= latest:
        expected.append(current)
    assert fired == expected
    assert decisions[-1].plan == Plan(next_run=following)


def test_dst_lord_howe_all_runs_both_passes():
    decisions = walk(
        PlanInput("*/15 * * * *", "Australia/Lord_Howe"),
        policy(missed="all"),
        utc("04-04 14:45"),
        utc("04-04 15:20"),
    )
    assert fires(decisions) == [utc("04-04 14:45"), utc("04-04 15:00"), utc("04-04 15:15")]
    zone = ZoneInfo("Australia/Lord_Howe")
    assert [f"{i.astimezone(zone):%H:%M %Z}" for i in fires(decisions)] == [
        "01:45 +11",
        "01:30 +1030",
        "01:45 +1030",
    ]


def test_dst_berlin_time_of_day_in_the_repeated_hour_is_one_instant():
    # 02:30 daily fires once, at 02:30 CEST (00:30Z): at 02:45 CET nothing else is due.
    task = PlanInput("30 2 * * *", "Europe/Berlin")
    claimed_at = utc("10-25 01:45")
    assert schedule.next_after("30 2 * * *", "Europe/Berlin", utc("10-25 00:30")) == utc(
        "10-26 01:30"
    )
    coalesce = decide(due(task, utc("10-25 00:30"), claimed_at))
    assert summary(coalesce) == [("queued", utc("10-25 00:30"), catch_up(claimed_at))]
    assert coalesce.plan == Plan(next_run=utc("10-26 01:30"))  # 02:30 CET on the 26th
    skip = decide(due(task, utc("10-25 00:30"), claimed_at, missed="skip"))
    assert summary(skip) == [("missed", utc("10-25 00:30"), missed(utc("10-25 00:30"), "skip"))]
    assert skip.plan == Plan(next_run=utc("10-26 01:30"))


# --- options_errors -------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), VALID_OPTIONS, ids=repr)
def test_options_valid(key, value):
    assert policies.options_errors({key: value}) == []


@pytest.mark.parametrize(("key", "value"), INVALID_OPTIONS, ids=repr)
def test_options_invalid_name_the_key_and_what_it_must_be(key, value):
    assert policies.options_errors({key: value}) == [
        f"options[{key!r}] must be {policies.OPTIONS[key]}, not {value!r}"
    ]


def test_options_every_key_is_in_the_tables():
    assert {key for key, _ in VALID_OPTIONS} == set(policies.OPTIONS)
    assert {key for key, _ in INVALID_OPTIONS} == set(policies.OPTIONS)


def test_options_empty_and_complete_are_valid():
    assert policies.options_errors({}) == []
    complete = {
        "missed": "all",
        "overlap": "buffer_one",
        "grace": 5,
        "timeout": 30,
        "retries": 3,
        "retry_delay": 1.5,
        "priority": -3,
    }
    assert policies.options_errors(complete) == []


def test_options_unknown_key_is_refused_naming_the_known_keys():
    assert policies.options_errors({"catchup": True}) == [
        (
            "options: unknown key 'catchup' (known: missed, overlap, grace, timeout, retries, "
            "retry_delay, priority, jitter, queue)"
        )
    ]


def test_options_one_message_per_bad_key():
    errors = policies.options_errors({"missed": "later", "grace": 5, "retries": -1, "colour": 1})
    assert len(errors) == 3
    assert errors[0].startswith("options['missed'] must be one of coalesce, skip, all")
    assert errors[1].startswith("options['retries'] must be a whole number from 0 to 100")
    assert errors[2].startswith("options: unknown key 'colour'")


@pytest.mark.parametrize(
    ("options", "type_name"),
    [(None, "NoneType"), ([], "list"), ("missed=skip", "str"), (3, "int")],
)
def test_options_must_be_a_dict(options, type_name):
    assert policies.options_errors(options) == [f"options must be a dict, not {type_name}"]


@pytest.mark.parametrize("key", ["grace", "timeout", "retries", "retry_delay"])
def test_options_huge_integer_is_a_message_not_a_crash(key):
    errors = policies.options_errors({key: 10**400})
    assert len(errors) == 1
    assert errors[0].startswith(f"options[{key!r}] must be")


@pytest.mark.parametrize("grace", [policies.MAX_SECONDS + 1, 1e11, 1e15])
def test_a_grace_too_long_for_dates_is_refused(grace):
    (error,) = policies.options_errors({"grace": grace})
    assert error == (
        "options['grace'] must be a number of seconds, from 0 to 315360000 (ten years), "
        f"not {grace!r}"
    )


def test_the_longest_grace_allowed_can_be_decided():
    the_policy = Policy.of({"grace": policies.MAX_SECONDS}, allow_overlap=True)
    the_due = Due(
        TASK_ID, PlanInput("* * * * *", "UTC"), the_policy, utc("05-05 10:00"), utc("05-05 10:00")
    )
    assert decide(the_due).fired is not None


# --- Policy.of --------------------------------------------------------------------


def test_policy_of_defaults():
    the_policy = Policy.of({}, allow_overlap=True)
    assert the_policy == Policy(
        missed="coalesce",
        overlap="allow",
        grace=dt.timedelta(seconds=conf.settings.GRACE),
        timeout=None,
        retries=0,
        retry_delay=10.0,
        priority=0,
    )
    assert the_policy.grace == dt.timedelta(seconds=60)


def test_policy_of_none_values_are_the_defaults():
    options = dict.fromkeys(policies.OPTIONS)
    assert Policy.of(options, allow_overlap=True) == Policy.of({}, allow_overlap=True)


@pytest.mark.parametrize(
    ("options", "allow_overlap", "overlap"),
    [
        ({}, True, "allow"),
        ({}, False, "skip"),
        ({"overlap": None}, False, "skip"),
        ({"overlap": "allow"}, False, "allow"),
        ({"overlap": "skip"}, True, "skip"),
        ({"overlap": "buffer_one"}, True, "buffer_one"),
        ({"overlap": "buffer_one"}, False, "buffer_one"),
    ],
)
def test_policy_of_overlap_option_wins_over_allow_overlap(options, allow_overlap, overlap):
    assert Policy.of(options, allow_overlap).overlap == overlap


@pytest.mark.parametrize(("grace", "seconds"), [(0, 0), (0.5, 0.5), (300, 300)])
def test_policy_of_grace_from_options(grace, seconds):
    assert Policy.of({"grace": grace}, True).grace == dt.timedelta(seconds=seconds)


def test_policy_of_grace_default_is_the_setting(settings):
    settings.SISY_GRACE = 5
    assert Policy.of({}, True).grace == dt.timedelta(seconds=5)
    assert Policy.of({"grace": 0}, True).grace == dt.timedelta(0)


def test_policy_of_every_option():
    options = {
        "missed": "all",
        "overlap": "buffer_one",
        "grace": 2,
        "timeout": 30,
        "retries": 3.0,
        "retry_delay": 2.5,
        "priority": 7.0,
    }
    assert Policy.of(options, allow_overlap=False) == Policy(
        missed="all",
        overlap="buffer_one",
        grace=dt.timedelta(seconds=2),
        timeout=30,
        retries=3,
        retry_delay=2.5,
        priority=7,
    )
    assert isinstance(Policy.of(options, False).retries, int)
    assert isinstance(Policy.of(options, False).priority, int)


# --- Policy.retry_in ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "retry_delay", "delays"),
    [
        (0, 10.0, [None]),
        (1, 10.0, [10.0, None]),
        (3, 10.0, [10.0, 20.0, 40.0, None, None]),
        (4, 0.5, [0.5, 1.0, 2.0, 4.0, None]),
    ],
)
def test_retry_in_backs_off_exponentially_then_gives_up(retries, retry_delay, delays):
    the_policy = Policy(retries=retries, retry_delay=retry_delay)
    got = [the_policy.retry_in(attempt) for attempt in range(1, len(delays) + 1)]
    assert got == delays
    assert all(isinstance(delay, float) for delay in got if delay is not None)


def test_retry_in_default_delay_is_ten_seconds():
    assert Policy.of({"retries": 2}, True).retry_in(2) == 20.0
