"""Every log line of a job carries its id, also where the call site passes the id itself."""

from __future__ import annotations

import io
import json
import logging

from proxima.marketplace.gateway.events import current_job_id, job_log_context
from proxima.sdk.logs import _Formatter


def test_job_lines_carry_the_id_and_an_explicit_job_id_does_not_clash() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(as_json=True))
    logger = logging.getLogger("proxima.test.joblog")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with job_log_context("0x01"):
            assert current_job_id() == "0x01"
            logger.info("placed")
            logging.LoggerAdapter(logger, {"job_id": "0x01", "attempt": 1}).info("attempt started")
        assert current_job_id() is None
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["msg"], line["job_id"]) for line in lines] == [
        ("placed", "0x01"),
        ("attempt started", "0x01"),
    ]
