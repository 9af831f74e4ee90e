"""Job events for clients (SSE and websocket streams) and the job id on every log line of a job.

:func:`follow_job` replays a job's stored events after a sequence number, then waits for new ones until
the job reaches a final status; the SSE and websocket routes both read it. :func:`job_log_context` binds a
job id to the current context (asyncio task or thread), and every log line made inside carries it as
``job_id`` (through :func:`proxima.sdk.logs.log_context`), so that one job's lines can be followed with one
filter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, Protocol

from proxima.marketplace.gateway.jobstore import JobEvent, JobRecord, JobStatus
from proxima.sdk.logs import log_context

__all__ = [
    "TERMINAL_STATUSES",
    "EventSource",
    "StreamItem",
    "current_job_id",
    "event_json",
    "follow_job",
    "job_log_context",
]

TERMINAL_STATUSES: Final = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
"""Statuses a job never leaves."""

_JOB_ID: ContextVar[str | None] = ContextVar("proxima_gateway_job_id", default=None)


def current_job_id() -> str | None:
    """The job id bound to the current context, if any."""
    return _JOB_ID.get()


@contextmanager
def job_log_context(job_id: str) -> Iterator[None]:
    """Bind ``job_id`` to every log record made inside (this task or thread, and tasks it starts).

    The id goes through :func:`proxima.sdk.logs.log_context`, so a call site that passes ``job_id`` in
    ``extra`` itself still works (its value wins).
    """
    token = _JOB_ID.set(job_id)
    try:
        with log_context(job_id=job_id):
            yield
    finally:
        _JOB_ID.reset(token)


class EventSource(Protocol):
    """What :func:`follow_job` reads (the job store)."""

    def get(self, job_id: str) -> JobRecord | None:
        """The job, or None."""

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        """Stored events with ``seq > after``, in order."""

    async def wait_event(self, job_id: str, after: int, timeout: float) -> list[JobEvent]:
        """Events with ``seq > after``, waiting up to ``timeout`` seconds for one."""


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One item of a followed job: an event, or a keep-alive (``event is None``) after a quiet period."""

    event: JobEvent | None


def event_json(event: JobEvent) -> dict[str, Any]:
    """The JSON form of an event sent to clients: ``{"seq", "at", "type", "data"}``."""
    return {"seq": event.seq, "at": event.at, "type": event.type, "data": event.data}


async def follow_job(
    store: EventSource, job_id: str, *, after: int = 0, keepalive: float = 15.0
) -> AsyncIterator[StreamItem]:
    """Replay a job's events after ``after``, then follow new ones until the job's status is final.

    Args:
        store: The job store.
        job_id: The job (it must exist).
        after: Sequence number of the last event the client has (0: from the start).
        keepalive: Yield a keep-alive after this many quiet seconds.

    Yields:
        Events in order, and keep-alives; the iteration ends once the job is final and every event was sent.
    """
    while True:
        events = store.events(job_id, after)
        if not events:
            record = store.get(job_id)
            if record is None or record.status in TERMINAL_STATUSES:
                # The final transition and its event are written in one transaction: nothing is left to send.
                if not store.events(job_id, after):
                    return
                continue
            events = await store.wait_event(job_id, after, keepalive)
            if not events:
                yield StreamItem(None)
                continue
        for event in events:
            after = max(after, event.seq)
            yield StreamItem(event)
