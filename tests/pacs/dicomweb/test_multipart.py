"""The STOW-RS multipart reader: the same parts whatever the blocks the body arrives in."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from pacs.dicomweb.multipart import MalformedMultipart, MultipartReader

BOUNDARY = b"placa-boundary-7f3a"


def body(parts: list[bytes], preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    chunks = [preamble]
    for data in parts:
        chunks += [b"--", BOUNDARY, b"\r\nContent-Type: application/dicom\r\n\r\n", data, b"\r\n"]
    chunks += [b"--", BOUNDARY, b"--\r\n", epilogue]
    return b"".join(chunks)


def reader_of(data: bytes, sizes: Callable[[], int]) -> Callable[[int], bytes]:
    """``read(size)`` that answers at most ``sizes()`` bytes at a time (short reads)."""
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        count = min(size, max(1, sizes()))
        chunk = data[position : position + count]
        position += len(chunk)
        return chunk

    return read


def parts_of(data: bytes, sizes: Callable[[], int], max_part: int = 1 << 24) -> list[bytes]:
    return [part.data for part in MultipartReader(reader_of(data, sizes), BOUNDARY, max_part)]


# Part contents that tempt a reader: a CRLF and dashes where a delimiter would be, the
# boundary without its CRLF, and an empty part.
TRICKY = [
    b"\x00DICM" + bytes(range(256)) * 40,
    b"ends with a CR LF and dashes\r\n--",
    b"--" + BOUNDARY + b" (not after a CR LF)",
    b"",
    b"\r\n-" + BOUNDARY[:-1],
]


@pytest.mark.parametrize("block", [1, 2, 7, 23, 64, 4096, 1 << 20])
def test_parts_are_the_same_whatever_the_block_size(block: int) -> None:
    data = body(TRICKY, preamble=b"ignored preamble\r\n", epilogue=b"ignored epilogue")
    assert parts_of(data, lambda: block) == TRICKY


def test_parts_are_the_same_with_random_short_reads() -> None:
    chance = random.Random(2026)
    data = body(TRICKY * 3)
    for _ in range(200):
        assert parts_of(data, lambda: chance.randint(1, 300)) == TRICKY * 3


def test_part_headers_are_read() -> None:
    data = body([b"abc"])
    [part] = MultipartReader(reader_of(data, lambda: 5), BOUNDARY, 1000)
    assert part.headers["Content-Type"] == "application/dicom"


@pytest.mark.parametrize(
    "data",
    [
        body([b"abc"])[:-8],  # the closing delimiter cut off
        b"no delimiter at all",
        body([b"abc"]).replace(b"\r\n\r\nabc", b"abc"),  # headers never end
    ],
    ids=["truncated", "no-delimiter", "unterminated-headers"],
)
def test_a_malformed_body_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedMultipart):
        parts_of(data, lambda: 11)


def test_a_part_larger_than_allowed_is_refused() -> None:
    with pytest.raises(MalformedMultipart):
        parts_of(body([b"x" * 5000]), lambda: 1000, max_part=4096)
