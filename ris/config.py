"""Settings: defaults, then ``PLACA_*`` environment variables, then a test mapping.

This is the only module that reads ``os.environ``. Every value is parsed and checked here,
so a bad setting stops Placa at start with a message that names it, instead of failing
later inside a door.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PREFIX = "PLACA_"
AE_TITLE_PATTERN = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash


class ConfigError(ValueError):
    """A setting is missing or has a value Placa cannot use."""


def _as_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ConfigError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise ConfigError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _as_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{text!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def _as_text(text: str) -> str:
    value = str(text).strip()
    if not value:
        raise ConfigError("must not be empty")
    return value


def _as_origins(text: str) -> tuple[str, ...]:
    """Comma-separated web origins (``https://viewer.example.org``), or ``*`` for any."""
    origins = tuple(part.strip().rstrip("/") for part in str(text).split(",") if part.strip())
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
            raise ConfigError(f"{origin!r} is not an origin (scheme://host[:port])")
    return origins


def _as_ae_title(text: str) -> str:
    value = str(text).strip()
    if not AE_TITLE_PATTERN.match(value):
        raise ConfigError(f"{text!r} is not a DICOM AE title (1-16 characters, no backslash)")
    return value


def _as_log_level(text: str) -> str:
    value = str(text).strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"{text!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return value


def _as_timezone(text: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    value = str(text).strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{text!r} is not an IANA time zone (e.g. Europe/Madrid)") from None
    return value


def _as_pattern(text: str) -> str:
    value = str(text).strip()
    try:
        sample = value.format(seq=1, year=2026)
    except (KeyError, ValueError, IndexError) as exc:
        raise ConfigError(f"{text!r} is not a pattern with {{seq}} and {{year}}: {exc}") from None
    if "{seq" not in value or not 1 <= len(sample) <= 16:
        raise ConfigError(f"{text!r} must contain {{seq}} and give 1-16 characters")
    return value


UID_ROOT_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _as_uid_root(text: str) -> str:
    value = str(text).strip().rstrip(".")
    if value and (not UID_ROOT_PATTERN.match(value) or len(value) > 40):
        raise ConfigError(f"{text!r} is not a DICOM UID root (digits and dots, at most 40)")
    return value


def _as_locale(text: str) -> str:
    value = str(text).strip()
    if value not in LANGUAGES:
        raise ConfigError(f"{text!r} is not one of {', '.join(LANGUAGES)}")
    return value


# Exam statuses whose step a modality may see on its worklist; cancelled, completed,
# no-show (and every later status) never (the ladder is ris.status).
WORKLIST_STATUSES = ("scheduled", "arrived", "in_progress")


def _as_worklist_statuses(text: str) -> tuple[str, ...]:
    values = tuple(dict.fromkeys(v.strip().lower() for v in str(text).split(",") if v.strip()))
    wrong = [value for value in values if value not in WORKLIST_STATUSES]
    if not values or wrong:
        raise ConfigError(
            f"{text!r} must be a comma-separated list of {', '.join(WORKLIST_STATUSES)}"
        )
    return values


def _as_duplicates(text: str) -> str:
    value = str(text).strip().lower()
    if value not in ("keep", "replace"):
        raise ConfigError(f"{text!r} must be keep or replace")
    return value


LANGUAGES = ("en", "es", "fr")
PORT = _as_int(0, 65535)


@dataclass(frozen=True)
class Setting:
    """One documented setting: its key in ``app.config``, default and parser."""

    key: str
    default: Any
    parse: Callable[[str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("DATA_DIR", "./instance", _as_text, "SQLite database, archive files, secret key"),
    Setting("DATABASE_URL", None, _as_text, "SQLAlchemy URL; default SQLite in DATA_DIR"),
    Setting("SECRET_KEY", None, _as_text, "session signing key; default kept in DATA_DIR"),
    Setting("HTTP_HOST", "127.0.0.1", _as_text, "web door address"),
    Setting("HTTP_PORT", 8080, PORT, "web door port"),
    Setting("HTTP_THREADS", 8, _as_int(1, 256), "web door worker threads"),
    Setting("TRUSTED_PROXY", "", str.strip, "address of a reverse proxy whose X-Forwarded-* count"),
    Setting("AE_TITLE", "PLACA", _as_ae_title, "DICOM door AE title"),
    Setting("DICOM_HOST", "0.0.0.0", _as_text, "DICOM door address"),
    Setting("DICOM_PORT", 11112, PORT, "DICOM door port"),
    Setting("DICOM_MAX_PDU", 1048576, _as_int(0, 2**32 - 1), "largest PDU received"),
    Setting("DICOM_PROCESSES", 2, _as_int(1, 64), "processes serving DICOM associations"),
    Setting("AE_WHITELIST", False, _as_bool, "accept only registered calling AEs"),
    Setting("COMMITMENT_NEW_ASSOCIATION", False, _as_bool, "commitment reports: new association"),
    Setting("ARCHIVE_DUPLICATES", "keep", _as_duplicates, "a re-sent instance: keep or replace"),
    Setting("HL7_HOST", "0.0.0.0", _as_text, "HL7 MLLP door address"),
    Setting("HL7_PORT", 2575, PORT, "HL7 MLLP door port"),
    Setting("HL7_APPLICATION", "PLACA", _as_text, "MSH-3 of messages Placa sends"),
    Setting("HL7_FACILITY", "PLACA", _as_text, "MSH-4 of messages Placa sends"),
    Setting("HL7_MAX_MESSAGE_BYTES", 10 * 1024 * 1024, _as_int(1024, 2**31), "largest message"),
    Setting("HL7_MAX_CONNECTIONS", 50, _as_int(1, 10000), "concurrent MLLP connections"),
    Setting("HL7_IDLE_TIMEOUT", 300, _as_int(1, 86400), "seconds before an idle link closes"),
    Setting("SCHEDULER", True, _as_bool, "run the scheduler door"),
    Setting("SESSION_IDLE_MINUTES", 30, _as_int(1, 24 * 60), "sign-out after inactivity"),
    Setting("SESSION_MAX_HOURS", 12, _as_int(1, 24 * 7), "absolute session lifetime"),
    Setting("SECURE_COOKIES", False, _as_bool, "send cookies over HTTPS only"),
    Setting("LOGIN_MAX_FAILURES", 5, _as_int(1, 1000), "failed sign-ins per account"),
    Setting("LOGIN_MAX_FAILURES_PER_ADDRESS", 20, _as_int(1, 10000), "per client address"),
    Setting("LOGIN_LOCK_MINUTES", 15, _as_int(1, 24 * 60), "throttling window"),
    Setting("CORS_ORIGINS", (), _as_origins, "web origins allowed to call DICOMweb (viewers)"),
    Setting("TIMEZONE", "UTC", _as_timezone, "time zone dates are shown in"),
    Setting("MRN_ISSUER", "PLACA", _as_text, "issuer of the MRNs Placa generates"),
    Setting("MRN_PATTERN", "PL{seq:07d}", _as_pattern, "pattern of generated MRNs"),
    Setting("ACCESSION_PATTERN", "{year}{seq:06d}", _as_pattern, "pattern of accession numbers"),
    Setting("UID_ROOT", "", _as_uid_root, "organisation UID root for Study Instance UIDs"),
    Setting("SLOT_MINUTES", 5, _as_int(1, 60), "granularity of bookable start times"),
    Setting(
        "MWL_STATUSES",
        ("scheduled", "arrived"),
        _as_worklist_statuses,
        "exam statuses the Modality Worklist serves",
    ),
    Setting("MWL_MAX_ANSWERS", 500, _as_int(1, 100000), "most worklist items one C-FIND returns"),
    Setting("MWL_STATION_ROUTING", False, _as_bool, "a room's device sees only its room's steps"),
    Setting("QR_MAX_ANSWERS", 10000, _as_int(1, 1000000), "most answers one archive query returns"),
    Setting("DEFAULT_LOCALE", "en", _as_locale, "language when neither user nor browser says"),
    Setting("LOG_LEVEL", "INFO", _as_log_level, "logging level"),
)
KNOWN_KEYS = {setting.key for setting in SETTINGS}


def load(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict:
    """Build the validated configuration from defaults, environment and overrides."""
    environ = os.environ if environ is None else environ
    _warn_unknown(environ)
    config: dict[str, Any] = {}
    for setting in SETTINGS:
        config[setting.key] = _value_of(setting, environ, overrides or {})
    extra = {k: v for k, v in (overrides or {}).items() if k not in KNOWN_KEYS}
    config.update(extra)
    return _finalize(config)


def _value_of(setting: Setting, environ: Mapping[str, str], overrides: Mapping) -> Any:
    name = PREFIX + setting.key
    if setting.key in overrides:
        raw, source = overrides[setting.key], setting.key
    elif name in environ:
        raw, source = environ[name], name
    else:
        return setting.default
    if raw is None:
        return None
    if not isinstance(raw, str):
        raw = str(int(raw)) if isinstance(raw, bool) else str(raw)
    try:
        return setting.parse(raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _warn_unknown(environ: Mapping[str, str]) -> None:
    for name in environ:
        if name.startswith(PREFIX) and name[len(PREFIX) :] not in KNOWN_KEYS:
            if name not in {"PLACA_REQUIRE_ALL", "PLACA_TEST_DATABASE_URL"}:
                logger.warning("Ignoring unknown setting %s", name)


def _finalize(config: dict[str, Any]) -> dict[str, Any]:
    data_dir = Path(config["DATA_DIR"]).expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"PLACA_DATA_DIR: cannot create {data_dir}: {exc.strerror}") from None
    config["DATA_DIR"] = str(data_dir)
    if not config["DATABASE_URL"]:
        config["DATABASE_URL"] = f"sqlite:///{data_dir / 'placa.db'}"
    _check_database_url(config["DATABASE_URL"])
    if not config["SECRET_KEY"]:
        config["SECRET_KEY"] = _stored_secret_key(data_dir)
    return config


def _check_database_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise ConfigError(f"PLACA_DATABASE_URL: {url!r} is not a database URL") from None
    if backend not in {"sqlite", "postgresql"}:
        raise ConfigError(f"PLACA_DATABASE_URL: {backend!r} is not supported (SQLite, PostgreSQL)")


def _stored_secret_key(data_dir: Path) -> str:
    """Read the generated key, or create it once, readable by the owner only."""
    path = data_dir / "secret-key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def describe() -> list[tuple[str, str, str]]:
    """The settings table the README shows: name, default, meaning."""
    return [(PREFIX + s.key, str(s.default), s.help) for s in SETTINGS]
