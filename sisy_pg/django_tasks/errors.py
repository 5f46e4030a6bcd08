"""Why a job of a Django task ends at once, without a retry."""

from __future__ import annotations


class JobRefused(Exception):
    """The job names nothing this worker may run as a Django task of this backend.

    A path outside SISY_ALLOWED_CALLABLES (refused before anything is
    imported), one that does not import, or names no Task, or a Task whose
    backend is not a ProcrastinateBackend or refuses it; or arguments that
    are not the backend's. Running it again would change nothing.
    """


class SuccessNotRecorded(RuntimeError):
    """The task returned, but its result could not be marked SUCCESSFUL (the database failed).

    The task ran: running it again would repeat what it did.
    """


class ReturnValueNotJSON(TypeError):
    """The task returned a value its result cannot keep: not JSON as Django normalises it.

    The task ran: running it again would repeat what it did.
    """
