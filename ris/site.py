"""The site's conventions that services need: numbering, UID root, clock and slot size.

Services never read ``current_app``; each door builds a :class:`Site` from its
application's settings and passes it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flask import Flask


@dataclass(frozen=True)
class Site:
    mrn_issuer: str = "PLACA"
    mrn_pattern: str = "PL{seq:07d}"
    accession_pattern: str = "{year}{seq:06d}"
    uid_root: str = ""
    slot_minutes: int = 5
    zone: ZoneInfo = ZoneInfo("UTC")


def site_of(app: Flask) -> Site:
    config = app.config
    return Site(
        mrn_issuer=config["MRN_ISSUER"],
        mrn_pattern=config["MRN_PATTERN"],
        accession_pattern=config["ACCESSION_PATTERN"],
        uid_root=config["UID_ROOT"],
        slot_minutes=config["SLOT_MINUTES"],
        zone=ZoneInfo(config["TIMEZONE"]),
    )
