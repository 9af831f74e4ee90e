"""Length-prefixed frames on byte streams.

A frame is a 4-byte big-endian length followed by that many bytes of payload. The reader is given the most
it will accept: a longer frame is refused from its header alone, before any of its body is read, so a peer
cannot make the reader buffer more than it allows. Read timeouts are the caller's (``trio.fail_after``).

The functions work on any object with ``async read(n)`` and ``async write(data)``: py-libp2p's
``INetStream`` (whose ``read(n)`` may return fewer than ``n`` bytes), trio streams wrapped alike, test pipes.
"""

from __future__ import annotations

from typing import Protocol

from proxima.sdk.errors import SdkError

__all__ = [
    "HEADER_BYTES",
    "MAX_FRAME_LIMIT",
    "ByteStream",
    "FrameIncompleteError",
    "FrameTooLargeError",
    "WireError",
    "read_frame",
    "write_frame",
]

HEADER_BYTES = 4
"""Size of the length prefix."""

MAX_FRAME_LIMIT = 2**32 - 1
"""The largest payload a 4-byte length can describe."""


class ByteStream(Protocol):
    """What the frame functions need from a stream (py-libp2p's ``INetStream`` has both members)."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


class WireError(SdkError):
    """A frame could not be read or written."""


class FrameTooLargeError(WireError, ValueError):
    """A frame is longer than the reader accepts (or than a 4-byte length can describe).

    Args:
        length: The frame's length in bytes.
        limit: The most that is accepted.
    """

    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit} bytes")


class FrameIncompleteError(WireError, EOFError):
    """The stream ended before a whole frame arrived.

    Args:
        expected: Bytes the frame (header or body) needed.
        received: Bytes that arrived before the end of the stream.
        part: ``"header"`` or ``"body"``.
    """

    def __init__(self, expected: int, received: int, part: str) -> None:
        self.expected = expected
        self.received = received
        self.part = part
        super().__init__(f"stream ended after {received} of {expected} bytes of the frame {part}")


async def _read_exactly(stream: ByteStream, count: int, part: str) -> bytes:
    chunks: list[bytes] = []
    received = 0
    while received < count:
        try:
            chunk = await stream.read(count - received)
        except EOFError as err:  # py-libp2p's StreamEOF is an EOFError
            raise FrameIncompleteError(count, received, part) from err
        if not chunk:
            raise FrameIncompleteError(count, received, part)
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


async def read_frame(stream: ByteStream, max_bytes: int) -> bytes:
    """Read one frame's payload.

    Args:
        stream: The stream to read from.
        max_bytes: The longest payload accepted.

    Returns:
        The payload (possibly empty).

    Raises:
        FrameTooLargeError: If the header announces more than ``max_bytes``; nothing of the body is read.
        FrameIncompleteError: If the stream ends before the header or the body is complete.
    """
    header = await _read_exactly(stream, HEADER_BYTES, "header")
    length = int.from_bytes(header, "big")
    if length > max_bytes:
        raise FrameTooLargeError(length, max_bytes)
    if length == 0:
        return b""
    return await _read_exactly(stream, length, "body")


async def write_frame(stream: ByteStream, payload: bytes) -> None:
    """Write one frame: the 4-byte big-endian length, then ``payload``.

    Raises:
        FrameTooLargeError: If ``payload`` is longer than a 4-byte length can describe.
    """
    if len(payload) > MAX_FRAME_LIMIT:
        raise FrameTooLargeError(len(payload), MAX_FRAME_LIMIT)
    await stream.write(len(payload).to_bytes(HEADER_BYTES, "big") + payload)
