"""A streaming reader of ``multipart/related`` bodies (RFC 2046 5.1, RFC 2387).

Werkzeug's decoder wants ``Content-Disposition`` on every part (form data); STOW-RS parts
carry only ``Content-Type``. The body is read a block at a time: only the part being
returned is held in memory, never the whole body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from werkzeug.datastructures import Headers

READ_SIZE = 1 << 20
MAX_HEADER_BYTES = 16 * 1024


class MalformedMultipart(ValueError):
    """The body is not the multipart/related it claims to be."""


@dataclass(frozen=True)
class Part:
    headers: Headers
    data: bytes


class MultipartReader:
    """Parts of a body read by ``read(size)`` (a WSGI input stream), one at a time."""

    def __init__(self, read: Callable[[int], bytes], boundary: bytes, max_part: int) -> None:
        self._read, self._max_part = read, max_part
        self._dash_boundary = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray()
        self._eof = False

    def __iter__(self) -> Iterator[Part]:
        self._skip_preamble()
        while True:
            headers = self._headers()
            data = self._body()
            yield Part(headers, data)
            if self._after_delimiter():
                return

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._read(READ_SIZE)
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def _skip_preamble(self) -> None:
        # The first boundary may open the body without a CRLF before it.
        while True:
            if self._buffer.startswith(self._dash_boundary):
                del self._buffer[: len(self._dash_boundary)]
                break
            at = self._buffer.find(self._delimiter)
            if at >= 0:
                del self._buffer[: at + len(self._delimiter)]
                break
            if len(self._buffer) > MAX_HEADER_BYTES:
                del self._buffer[: -len(self._delimiter)]
            if not self._fill():
                raise MalformedMultipart("no boundary in the body")
        if self._after_delimiter():
            raise MalformedMultipart("the body holds no part")

    def _after_delimiter(self) -> bool:
        """Consume what follows a boundary; True when it was the closing one."""
        while len(self._buffer) < 2 and self._fill():
            pass
        if self._buffer.startswith(b"--"):
            return True
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > MAX_HEADER_BYTES or not self._fill():
                raise MalformedMultipart("a boundary line does not end")
        if self._buffer[:end].strip(b" \t"):
            raise MalformedMultipart("text after a boundary")
        del self._buffer[: end + 2]
        return False

    def _headers(self) -> Headers:
        while True:
            if self._buffer.startswith(b"\r\n"):  # no headers at all
                del self._buffer[:2]
                return Headers()
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buffer) > MAX_HEADER_BYTES or not self._fill():
                raise MalformedMultipart("a part's headers do not end")
        text = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        headers = Headers()
        for line in text.split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise MalformedMultipart(f"bad part header {line[:40]!r}")
            headers.add(name.strip(), value.strip())
        return headers

    def _body(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        keep = len(self._delimiter)
        while True:
            at = self._buffer.find(self._delimiter)
            if at >= 0:
                chunks.append(bytes(self._buffer[:at]))
                del self._buffer[: at + keep]
                return b"".join(chunks)
            if len(self._buffer) > keep:
                cut = len(self._buffer) - keep
                size += cut
                if size > self._max_part:
                    raise MalformedMultipart("a part is larger than an instance may be")
                chunks.append(bytes(self._buffer[:cut]))
                del self._buffer[:cut]
            if not self._fill():
                raise MalformedMultipart("the body ends before its closing boundary")
