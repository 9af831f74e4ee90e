"""Structured log lines carry the call site's fields and the fields bound around it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from proxima.sdk.logs import _Formatter, bound_fields, log_context

Captured = tuple[logging.Logger, io.StringIO]


@pytest.fixture
def captured() -> Iterator[Captured]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(as_json=True))
    logger = logging.getLogger("proxima.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_bound_fields_appear_on_every_line_inside_the_block(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    with log_context(job_id="0xab"):
        logger.info("inside", extra={"provider": "p"})
        with log_context(attempt=2):
            logger.info("nested")
    logger.info("outside")
    inside, nested, outside = _lines(stream)
    assert (inside["job_id"], inside["provider"]) == ("0xab", "p")
    assert (nested["job_id"], nested["attempt"]) == ("0xab", 2)
    assert "job_id" not in outside
    assert bound_fields() == {}


def test_a_call_site_may_pass_a_bound_field_and_its_value_wins(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    with log_context(job_id="0xab"):
        logger.info("explicit", extra={"job_id": "0xcd"})  # no clash with the bound field
    assert _lines(stream)[0]["job_id"] == "0xcd"


def test_tasks_keep_their_own_fields(captured: Captured) -> None:
    logger, stream = captured

    async def job(job_id: str) -> None:
        with log_context(job_id=job_id):
            await asyncio.sleep(0)
            logger.info("step")

    async def main() -> None:
        await asyncio.gather(job("0x01"), job("0x02"))

    asyncio.run(main())
    assert sorted(str(line["job_id"]) for line in _lines(stream)) == ["0x01", "0x02"]
