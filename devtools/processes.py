"""Child processes that never outlive the demo, the test harness or the benchmarks.

- :func:`exit_on_signals` makes SIGTERM and SIGHUP stop this process the way
  Ctrl-C does (``KeyboardInterrupt``), so that ``finally`` blocks, pytest's
  fixture teardown and ``atexit`` handlers run: the default action of both
  signals kills Python on the spot and leaves the servers and workers it
  started running.
- :func:`spawn` starts a child in its own session (Ctrl-C in a terminal reaches
  this process only, which then stops the child in order) that receives a
  signal if this process dies anyway (Linux ``PR_SET_PDEATHSIG``, e.g. after a
  SIGKILL), and that is stopped, with its whole process group, at exit.

Only a SIGKILL of this process still leaves the throwaway PostgreSQL's
directory behind (its server stops: see devtools.embedded_pg).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

_received: int | None = None
_children: list[subprocess.Popen[Any]] = []
_registered = False
_owner_pid = os.getpid()


def _raise_interrupt(signum: int, frame: object) -> None:
    global _received
    if _received is not None:
        return  # already stopping: let the cleanup finish
    _received = signum
    raise KeyboardInterrupt(signal.Signals(signum).name)


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into ``KeyboardInterrupt`` (main thread, default handlers only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _raise_interrupt)


def received_signal() -> int | None:
    """The SIGTERM or SIGHUP that is stopping this process, if any."""
    return _received


def _die_with_parent_preexec(parent: int, signum: int) -> Callable[[], None] | None:
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits.
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:  # runs in the child, after any change of user
        prctl(pr_set_pdeathsig, signum)
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), signum)

    return preexec


def spawn(
    args: Sequence[str],
    *,
    death_signal: int = signal.SIGKILL,
    stop_at_exit: bool = True,
    **kwargs: Any,
) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` in a new session, tied to this process's life (see the module doc).

    ``death_signal`` is what the child gets if this process dies without stopping
    it (SIGKILL by default: a worker told to stop gracefully while its throwaway
    database vanishes with its parent can wait forever).

    With ``stop_at_exit`` the child is stopped by an ``atexit`` handler registered
    at the first such call, so it runs before the handlers registered earlier
    (the embedded PostgreSQL's): workers stop before their database does.
    """
    global _registered
    kwargs["start_new_session"] = True
    preexec = _die_with_parent_preexec(os.getpid(), death_signal)
    if preexec is not None:
        kwargs["preexec_fn"] = preexec
    process = subprocess.Popen(args, **kwargs)
    if stop_at_exit:
        _children.append(process)
        if not _registered:
            atexit.register(_stop_children)
            _registered = True
    return process


def stop(
    process: subprocess.Popen[Any],
    timeout: float = 20,
    signum: int = signal.SIGTERM,
    whole_group: bool = True,
) -> None:
    """Stop a child started by :func:`spawn` and everything left in its process group.

    ``signum`` goes to the child's whole process group (or to the child alone
    if not ``whole_group``); after ``timeout`` seconds, SIGKILL.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Whatever the child left behind in its group (it led the group: spawn()).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ValueError):
        _children.remove(process)


def _stop_children() -> None:
    if os.getpid() != _owner_pid:
        return
    for process in reversed(_children[:]):
        stop(process, timeout=10)
