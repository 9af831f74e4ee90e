"""Length-prefixed frames over trio memory streams (partial reads, limits, truncation)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from proxima.sdk.wire import (
    FrameIncompleteError,
    FrameTooLargeError,
    read_frame,
    write_frame,
)


class TrioByteStream:
    """A trio stream seen through the ``read(n)``/``write`` interface of py-libp2p streams.

    ``chunk`` caps every read, to exercise readers that must loop over short reads.
    """

    def __init__(self, stream: trio.abc.HalfCloseableStream, chunk: int | None = None) -> None:
        self.stream = stream
        self.chunk = chunk

    async def read(self, n: int | None = None) -> bytes:
        size = n if self.chunk is None else min(n or self.chunk, self.chunk)
        return await self.stream.receive_some(size)

    async def write(self, data: bytes) -> None:
        await self.stream.send_all(data)


class EofRaisingStream:
    """Raises ``EOFError`` at the end, as py-libp2p's ``StreamEOF`` does, instead of returning b""."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int | None = None) -> bytes:
        if not self.data:
            raise EOFError("stream closed")
        size = len(self.data) if n is None else n
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk

    async def write(self, data: bytes) -> None:
        raise AssertionError("not written in these tests")


def test_frames_round_trip_back_to_back_in_short_reads() -> None:
    payloads = [b"", b"x", b"hello frames", bytes(range(256)) * 4096]

    async def main() -> list[bytes]:
        left, right = trio.testing.memory_stream_pair()
        writer, reader = TrioByteStream(left), TrioByteStream(right, chunk=7)
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                for payload in payloads:
                    await write_frame(writer, payload)

            nursery.start_soon(send)
            return [await read_frame(reader, 2**21) for _ in payloads]

    assert trio.run(main) == payloads


def test_header_is_four_bytes_big_endian() -> None:
    async def main() -> bytes:
        left, right = trio.testing.memory_stream_pair()
        await write_frame(TrioByteStream(left), b"abc")
        await left.send_eof()
        received = b""
        while chunk := await right.receive_some():
            received += chunk
        return received

    assert trio.run(main) == b"\x00\x00\x00\x03abc"


def test_too_large_frame_is_refused_from_its_header_without_reading_the_body() -> None:
    async def main() -> tuple[FrameTooLargeError, bytes]:
        left, right = trio.testing.memory_stream_pair()
        await left.send_all((101).to_bytes(4, "big") + b"B" * 101)
        reader = TrioByteStream(right)
        with pytest.raises(FrameTooLargeError) as info:
            await read_frame(reader, 100)
        return info.value, await right.receive_some(1000)

    err, rest = trio.run(main)
    assert (err.length, err.limit) == (101, 100)
    assert "101 bytes exceeds the limit of 100" in str(err)
    assert rest == b"B" * 101  # the body is still in the stream: nothing of it was buffered


def test_frame_at_the_limit_is_accepted() -> None:
    async def main() -> bytes:
        left, right = trio.testing.memory_stream_pair()
        await write_frame(TrioByteStream(left), b"L" * 100)
        return await read_frame(TrioByteStream(right), 100)

    assert trio.run(main) == b"L" * 100


@pytest.mark.parametrize(
    ("sent", "part", "received"),
    [
        (b"", "header", 0),
        (b"\x00\x00", "header", 2),
        (b"\x00\x00\x00\x05ab", "body", 2),
    ],
)
def test_stream_ending_inside_a_frame_is_incomplete(sent: bytes, part: str, received: int) -> None:
    async def main() -> FrameIncompleteError:
        left, right = trio.testing.memory_stream_pair()
        await left.send_all(sent)
        await left.send_eof()
        with pytest.raises(FrameIncompleteError) as info:
            await read_frame(TrioByteStream(right, chunk=1), 1000)
        return info.value

    err = trio.run(main)
    assert (err.part, err.received) == (part, received)
    assert f"after {received} of" in str(err)


def test_eof_error_from_the_stream_is_incomplete() -> None:
    async def main() -> FrameIncompleteError:
        with pytest.raises(FrameIncompleteError) as info:
            await read_frame(EofRaisingStream(b"\x00\x00\x00\x09abc"), 1000)
        return info.value

    err = trio.run(main)
    assert (err.part, err.expected, err.received) == ("body", 9, 3)
    assert isinstance(err.__cause__, EOFError)


def test_read_timeout_is_the_callers() -> None:
    async def main() -> None:
        _left, right = trio.testing.memory_stream_pair()
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.05):
            await read_frame(TrioByteStream(right), 1000)

    trio.run(main)
