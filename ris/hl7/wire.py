"""HL7 v2 text as it arrives: charsets, segments, the MSH header, escaping.

Everything here works on plain strings, without hl7apy, so that the
acknowledgement can still quote the inbound header of a message hl7apy refuses.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

DEFAULT_VERSION = "2.5.1"

CHARSETS = {  # HL7 table 0211 -> Python codec; delimiters must stay single bytes
    "ASCII": "ascii",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    **{f"8859/{n}": f"iso8859_{n}" for n in range(1, 10)},
    "8859/15": "iso8859_15",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc_kr",
}
_CHARSET_SNIFF_BYTES = 65536
_ESCAPES = str.maketrans(
    {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\r": " ", "\n": " "}
)


@dataclass(frozen=True)
class Header:
    """What the acknowledgement needs from the inbound MSH, read without hl7apy
    so that it survives messages hl7apy refuses."""

    sending_application: str = ""
    sending_facility: str = ""
    message_type: str = ""  # normalised TYPE^EVENT
    event: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    charset: str = ""


def decode(raw: bytes) -> tuple[str, str]:
    """Return the text and the codec to answer in: MSH-18, then UTF-8, then latin-1."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    for codec in (_declared_codec(raw), "utf-8"):
        if codec:
            try:
                return raw.decode(codec), codec
            except UnicodeDecodeError:
                continue
    return raw.decode("latin-1"), "latin-1"


def _declared_codec(raw: bytes) -> str | None:
    # latin-1 maps bytes one to one, enough to read the ASCII header.
    found = find_header(split_segments(raw[:_CHARSET_SNIFF_BYTES].decode("latin-1")))
    return CHARSETS.get(found[0].charset.upper()) if found else None


def split_segments(text: str) -> list[str]:
    """Split on any line ending; blank lines and leading whitespace are dropped."""
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return [line.lstrip() for line in lines if line.strip()]


def find_header(segments: list[str]) -> tuple[Header, int] | None:
    """The first MSH and its index, or None when there is none."""
    for index, segment in enumerate(segments):
        if segment.startswith("MSH"):
            return _read_header(segment), index
    return None


def _read_header(segment: str) -> Header:
    if len(segment) < 4:
        return Header()
    fields = segment.split(segment[3])  # fields[n - 1] is MSH-n, MSH-1 being the separator
    encoding = fields[1] if len(fields) > 1 else ""
    component, repetition = encoding[:1] or "^", encoding[1:2] or "~"

    def field(number: int) -> str:
        value = fields[number - 1].strip() if len(fields) >= number else ""
        return value.replace(component, "^") if component != "^" else value

    def first(number: int) -> str:
        return field(number).split(repetition)[0].split("^")[0].strip()

    kind, _, rest = field(9).partition("^")
    event = rest.partition("^")[0].strip().upper()
    kind = kind.strip().upper()
    return Header(
        sending_application=field(3),
        sending_facility=field(4),
        message_type=f"{kind}^{event}" if event else kind,
        event=event,
        control_id=field(10),
        processing_id=field(11),
        version=first(12),
        charset=first(18),
    )


def escape(text: str) -> str:
    """Escape the default delimiters; line breaks would end the segment, so they become spaces."""
    return text.translate(_ESCAPES)
