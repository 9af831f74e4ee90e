"""Structured logging: ``key=value`` lines (or JSON) with whatever ``extra`` a call site passed.

Fields bound with :func:`log_context` (a job id, a request id) are added to every record made inside the
block, in this task or thread and the tasks it starts; a field the call site passes in ``extra`` wins.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

__all__ = ["bound_fields", "configure_logging", "log_context"]

_CONTEXT_ATTR = "_proxima_context"
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    _CONTEXT_ATTR,
}
_NOTHING: Mapping[str, Any] = MappingProxyType({})
_BOUND: ContextVar[Mapping[str, Any]] = ContextVar("proxima_log_context", default=_NOTHING)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log record made inside the block (nested blocks add to the outer fields)."""
    token = _BOUND.set({**_BOUND.get(), **fields})
    try:
        yield
    finally:
        _BOUND.reset(token)


def bound_fields() -> Mapping[str, Any]:
    """The fields bound by the enclosing :func:`log_context` blocks."""
    return _BOUND.get()


def _install_record_factory() -> None:
    # The bound fields go into one private attribute, so they never collide with a call site's ``extra``
    # (logging refuses an ``extra`` key that the record already has).
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_proxima", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        bound = _BOUND.get()
        if bound:
            setattr(record, _CONTEXT_ATTR, bound)
        return record

    make_record._proxima = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


_install_record_factory()


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self._json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update(getattr(record, _CONTEXT_ATTR, {}))
        fields.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self._json:
            return json.dumps(fields, default=str)
        return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())


def _quote(value: Any) -> str:
    text = value.hex() if isinstance(value, bytes) else str(value)
    return json.dumps(text) if (" " in text or "=" in text or not text) else text


def configure_logging(level: str | int = "INFO", *, as_json: bool = False) -> None:
    """Send structured log lines to stderr (idempotent: replaces the handler it installed before)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_proxima", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json))
    handler._proxima = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
