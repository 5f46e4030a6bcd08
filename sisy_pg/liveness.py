"""What keeps the planner honest about its own liveness: stalls, lost notifications, overload.

Each of these faults stops the clock without an error: a statement waiting
on a lock, a pooler that accepts LISTEN and drops every notification, more
instants due than the workers execute. The planner (planner.py) uses the
three watchers of this module so that each is said in the log, with its
cause and what to do about it:

* :class:`StallWatch`: a planner statement that has not returned after
  SISY_STALL_WARNING seconds is diagnosed from another connection (who
  blocks it, what it waits for, or that the server does not answer) and
  logged once; its return is logged too;
* :class:`NotificationProbe`: a self-addressed NOTIFY tells whether
  notifications reach the planner's LISTEN connection; when they do not, the
  planner polls;
* :class:`OverloadWatch`: the cluster's load (``sisy_load_v1``) judged on
  consecutive checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from psycopg.rows import DictRow

    from .store import Store

logger = logging.getLogger(__name__)

# --- Stalls -------------------------------------------------------------------

#: How long the diagnosis of a stall may take (connecting included) before
#: the server is deemed not to answer.
DIAGNOSIS_TIMEOUT = 3.0


@dataclasses.dataclass(frozen=True)
class Activity:
    """A backend as pg_stat_activity shows it (the query ``stall_activity``)."""

    pid: int
    blocker: bool  # False: the stalled backend itself
    application_name: str | None
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    query: str | None  # its first 80 characters
    seconds: float | None  # a blocker: in its transaction; the stalled backend: in its statement

    def describe(self) -> str:
        held = "" if self.seconds is None else f", in its transaction for {self.seconds:.1f} s"
        return (
            f"pid {self.pid} ({self.application_name or 'no application_name'}, "
            f"{self.state or 'state unknown'}{held}: {self.query or ''!r})"
        )

    def facts(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "application_name": self.application_name,
            "state": self.state,
            "query": self.query,
            "seconds": self.seconds,
        }


class StallCause(str, enum.Enum):
    """Why a statement has not returned (``extra["cause"]`` of a stall's log record)."""

    LOCK = "lock"  # other sessions hold a lock it waits for
    WAIT = "wait"  # it waits for something else (I/O, an LWLock, ...)
    RUNNING = "running"  # the server is still working on it
    CLIENT = "client"  # the server has answered: this process is slow to read it
    CONNECTION_LOST = "connection_lost"  # the server no longer has its connection
    NO_ANSWER = "no_answer"  # the server does not answer another connection either


@dataclasses.dataclass(frozen=True)
class Stall:
    cause: StallCause
    text: str  # what it waits for, worded for the log
    blockers: tuple[Activity, ...] = ()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (psycopg's run on with hints)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def diagnose(store: Store, pid: int) -> Stall:
    """Why backend ``pid`` has not answered, found from a new connection of its own."""
    try:
        conn = await asyncio.wait_for(
            store.connect(application_name="sisy-diagnosis"), DIAGNOSIS_TIMEOUT
        )
    except asyncio.TimeoutError:
        return Stall(
            StallCause.NO_ANSWER,
            f"the server does not answer: no new connection within {DIAGNOSIS_TIMEOUT:.0f} s "
            "(down, unreachable, or no connection slot free)",
        )
    except psycopg.Error as exc:
        return Stall(
            StallCause.NO_ANSWER,
            f"the server does not answer: a new connection failed ({first_line(exc)})",
        )
    try:
        async with conn:
            activity = await asyncio.wait_for(
                store.stall_activity(conn, pid=pid), DIAGNOSIS_TIMEOUT
            )
    except (asyncio.TimeoutError, psycopg.Error) as exc:
        detail = "no answer" if isinstance(exc, asyncio.TimeoutError) else first_line(exc)
        return Stall(
            StallCause.NO_ANSWER, f"the server does not answer pg_stat_activity ({detail})"
        )
    return _stall_of(pid, activity)


def _stall_of(pid: int, activity: list[Activity]) -> Stall:
    blockers = tuple(a for a in activity if a.blocker)
    if blockers:
        return Stall(
            StallCause.LOCK,
            "it waits for a lock held by " + "; ".join(b.describe() for b in blockers),
            blockers,
        )
    backend = next((a for a in activity if not a.blocker), None)
    if backend is None:
        return Stall(
            StallCause.CONNECTION_LOST,
            f"the server no longer has its connection (backend pid {pid}): the connection "
            "was lost (terminated, or cut on the way); it fails when the network notices",
        )
    if backend.state != "active":
        return Stall(
            StallCause.CLIENT,
            f"the server is done with it (state {backend.state}): this process is slow "
            "to read the answer (its event loop or CPU is busy)",
        )
    if backend.wait_event_type and backend.wait_event_type != "Client":
        return Stall(
            StallCause.WAIT,
            f"it waits for {backend.wait_event_type} {backend.wait_event} "
            f"({backend.query or ''!r})",
        )
    return Stall(
        StallCause.RUNNING,
        f"the server is still executing it, waiting for nothing ({backend.query or ''!r})",
    )


class StallWatch:
    """Logs a statement that has not returned after ``threshold`` seconds, and its return.

    One WARNING per stall, with its cause as seen from another connection
    (:func:`diagnose`), and one INFO when the statement returns. A statement
    that fails instead (a lost connection) is logged by its caller.
    """

    def __init__(self, store: Store, threshold: float | None, *, who: str = "sisy planner"):
        self.store = store
        self.threshold = threshold
        self.who = who

    @contextlib.asynccontextmanager
    async def watch(self, conn: psycopg.AsyncConnection[DictRow], step: str) -> AsyncIterator[None]:
        """Watch what is done on ``conn`` inside the block, called ``step`` in the log."""
        if not self.threshold or self.threshold <= 0:
            yield
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        pid = conn.info.backend_pid
        diagnosis: asyncio.Task[None] | None = None

        def stalled() -> None:
            nonlocal diagnosis
            diagnosis = asyncio.create_task(self._warn(pid, step, started), name="sisy-stall")

        # A timer, not a task: a statement that returns in time costs next to nothing.
        timer = loop.call_later(self.threshold, stalled)
        returned = False
        try:
            yield
            returned = True
        finally:
            timer.cancel()
            if diagnosis is not None:
                if not returned:  # failed or cancelled: its caller says why
                    diagnosis.cancel()
                # Else the diagnosis under way (bounded) logs the stall first.
                await asyncio.gather(diagnosis, return_exceptions=True)
        if diagnosis is not None:
            seconds = loop.time() - started
            logger.info(
                f"{self.who} resumed: its {step} statement returned after {seconds:.1f} s",
                extra={"action": "planner_resumed", "step": step, "stalled_seconds": seconds},
            )

    async def _warn(self, pid: int, step: str, started: float) -> None:
        stall = await diagnose(self.store, pid)
        waited = asyncio.get_running_loop().time() - started
        logger.warning(
            f"{self.who} stalled: its {step} statement has not returned after "
            f"{waited:.1f} s: {stall.text}",
            extra={
                "action": "planner_stalled",
                "step": step,
                "waited_seconds": waited,
                "cause": stall.cause.value,
                "backend_pid": pid,
                "blockers": [b.facts() for b in stall.blockers],
            },
        )


def failure_cause(exc: BaseException) -> str:
    """A planner failure worded for its log line: what broke, from the exception."""
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return f"the database is read-only, as after a failover ({first_line(exc)})"
    if isinstance(exc, psycopg.errors.AdminShutdown):
        return f"the server ended its connection ({first_line(exc)})"
    if isinstance(exc, psycopg.OperationalError):
        return f"the connection to the database failed or was lost ({first_line(exc)})"
    if isinstance(exc, ConnectionError):  # the planner's own words
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"


# --- Notifications ---------------------------------------------------------------

#: How a probe's payload starts; a listener ignores the probes (they are no change).
PROBE_PREFIX = "sisy-probe:"
#: Seconds a probe may take to come back before notifications count as lost.
PROBE_TIMEOUT = 2.0


class Notifications(str, enum.Enum):
    """Whether notifications reach a LISTEN connection, as its probes say."""

    UNKNOWN = "unknown"  # no probe has come back or timed out yet
    OK = "ok"
    LOST = "lost"


def is_probe(payload: str) -> bool:
    return payload.startswith(PROBE_PREFIX)


class NotificationProbe:
    """Self-addressed notifications, sent now and then, that must come back within a timeout.

    The owner sends :meth:`next_payload` on its query connection when
    :meth:`seconds_to_next` says so, hands every notification payload its
    LISTEN connection receives to :meth:`received`, and calls :meth:`check`
    after each sleep. Times are the owner's loop time.
    """

    def __init__(
        self,
        interval: float,
        *,
        poll_interval: float,
        listen_database: str | None = None,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.interval = interval
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.listen_database = listen_database
        self.state = Notifications.UNKNOWN
        self._token = f"{PROBE_PREFIX}{uuid.uuid4().hex}:"
        self.sent = 0  # probes sent so far
        self._sent_at: float | None = None  # of the probe still to come back
        self._next_at = float("-inf")

    def restart(self) -> None:
        """A new LISTEN connection: probe it at once."""
        self._sent_at = None
        self._next_at = float("-inf")

    def seconds_to_next(self, now: float) -> float:
        """Seconds until a probe is due, or until the one sent times out."""
        if self._sent_at is not None:
            return max(0.0, self._sent_at + self.timeout - now)
        return max(0.0, self._next_at - now)

    def next_payload(self, now: float) -> str | None:
        """The payload of the probe to send now, or None if none is due."""
        if self._sent_at is not None or now < self._next_at:
            return None
        self.sent += 1
        self._sent_at = now
        self._next_at = now + self.interval
        return f"{self._token}{self.sent}"

    def received(self, payload: str) -> bool:
        """Whether ``payload`` is a probe (any planner's): not a change to act on."""
        if not is_probe(payload):
            return False
        if payload.startswith(self._token):
            self._sent_at = None
            if self.state is Notifications.LOST:
                logger.info(
                    "notifications reach sisy's LISTEN connection again: the planner stops polling",
                    extra={"action": "notifications_restored", "connection": "planner"},
                )
            self.state = Notifications.OK
        return True

    def check(self, now: float) -> None:
        """Judge the probe sent, if its time is up."""
        if self._sent_at is None or now < self._sent_at + self.timeout:
            return
        self._sent_at = None
        if self.state is not Notifications.LOST:
            if self.listen_database:
                fix = (
                    f"SISY_LISTEN_DATABASE is {self.listen_database!r}: make it the alias of a "
                    "direct connection, not one through the pooler"
                )
            else:
                fix = "Set SISY_LISTEN_DATABASE to a direct connection's alias"
            logger.warning(
                "notifications do not reach sisy's LISTEN connection: a connection pooler "
                f"in transaction mode (PgBouncer pool_mode=transaction) drops them. {fix} "
                "(docs/operations.md#connection-poolers); meanwhile the planner polls every "
                f"{self.poll_interval:g} s (its self-addressed NOTIFY did not come back within "
                f"{self.timeout:g} s)",
                extra={
                    "action": "notifications_lost",
                    "connection": "planner",
                    "listen_database": self.listen_database,
                    "poll_interval": self.poll_interval,
                },
            )
        self.state = Notifications.LOST


# --- Overload ---------------------------------------------------------------------

#: Seconds between two load checks, and the window each looks at.
LOAD_CHECK_EVERY = 10.0
#: Overloaded: more than this share of the instants dealt with were not run
#: for want of capacity (coalesced, missed, late, fair share, backlog) ...
NOT_RUN_SHARE = 0.10
#: ... out of at least this many (fewer say nothing) ...
NOT_RUN_MIN_DUE = 10
#: ... or a task's next instant is more than this many seconds overdue.
OVERDUE_LIMIT = 5.0
#: Consecutive checks that must agree before overload is said, or its end.
CHECKS_IN_A_ROW = 2


@dataclasses.dataclass(frozen=True)
class Load:
    """A row of ``sisy_load_v1``."""

    window_seconds: float
    due: int
    executed: int
    not_run: int
    overdue_tasks: int
    max_lag_seconds: float

    @property
    def overloaded(self) -> bool:
        """The rule of :class:`OverloadWatch`, for one check."""
        starved = self.due >= NOT_RUN_MIN_DUE and self.not_run > NOT_RUN_SHARE * self.due
        behind = self.overdue_tasks > 0 and self.max_lag_seconds > OVERDUE_LIMIT
        return starved or behind

    def facts(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "due_per_second": self.due / self.window_seconds,
            "executed_per_second": self.executed / self.window_seconds,
        }

    def describe(self) -> str:
        window = self.window_seconds
        return (
            f"{self.due / window:.1f} instants due a second against {self.executed / window:.1f} "
            f"executed; {self.not_run} of the {self.due} dealt with in the last {window:g} s not "
            f"run (coalesced, missed, late, fair share, backlog); {self.overdue_tasks} task(s) "
            f"overdue, the earliest by {self.max_lag_seconds:.1f} s"
        )


class OverloadWatch:
    """Says when the cluster is overloaded, and when it no longer is.

    A check is overloaded when, of the instants dealt with in its window, more
    than :data:`NOT_RUN_SHARE` (10 %, of at least :data:`NOT_RUN_MIN_DUE`)
    were not run for want of capacity, or when a task's next instant is more
    than :data:`OVERDUE_LIMIT` (5 s) overdue. Overload is said (a WARNING)
    after :data:`CHECKS_IN_A_ROW` (2) overloaded checks in a row, so that the
    one catch-up after an outage is not mistaken for it; its end (INFO) after
    as many clean checks in a row.
    """

    def __init__(self) -> None:
        self.overloaded = False
        self._contrary = 0  # consecutive checks that disagree with self.overloaded

    def reset(self) -> None:
        """Another planner checks the load now: forget this one's checks, silently."""
        self.overloaded = False
        self._contrary = 0

    def judge(self, load: Load) -> None:
        """Take one check into account; say overload, or its end, when it is due."""
        if load.overloaded == self.overloaded:
            self._contrary = 0
            return
        self._contrary += 1
        if self._contrary < CHECKS_IN_A_ROW:
            return
        self._contrary = 0
        self.overloaded = load.overloaded
        if self.overloaded:
            logger.warning(
                f"sisy is overloaded: {load.describe()}. Add workers, raise their "
                "--concurrency, or give the tasks that must run on time a priority "
                "(their 'priority' option)",
                extra={"action": "overload", **load.facts()},
            )
        else:
            logger.info(
                f"sisy is no longer overloaded: {load.describe()}",
                extra={"action": "overload_ended", **load.facts()},
            )
