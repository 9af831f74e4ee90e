"""Helpers for tests of trio code (libp2p peers): pytest has no async plugin here."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec

import trio

P = ParamSpec("P")


def trio_test(fn: Callable[P, Awaitable[None]]) -> Callable[P, None]:
    """Run an async test body under trio (with a deadline), so that pytest needs no async plugin."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        async def body() -> None:
            with trio.fail_after(30):
                await fn(*args, **kwargs)

        trio.run(body)

    return run


def key(i: int) -> bytes:
    """A deterministic secp256k1 private key (``i`` in 1..255)."""
    return bytes([i]) * 32
