"""Settings come from PLACA_* variables; a bad one stops Placa with a message naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ris import config
from ris.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_contract(tmp_path: Path) -> None:
    settings = config.load({"DATA_DIR": str(tmp_path)}, environ={})
    assert (settings["HTTP_HOST"], settings["HTTP_PORT"]) == ("127.0.0.1", 8080)
    assert (settings["AE_TITLE"], settings["DICOM_PORT"], settings["HL7_PORT"]) == (
        "PLACA",
        11112,
        2575,
    )
    assert settings["SCHEDULER"] is True and settings["AE_WHITELIST"] is False
    assert settings["DATABASE_URL"] == f"sqlite:///{tmp_path / 'placa.db'}"


def test_environment_is_parsed_and_typed(tmp_path: Path) -> None:
    environ = {
        "PLACA_DATA_DIR": str(tmp_path), "PLACA_HTTP_PORT": "9090", "PLACA_SCHEDULER": "0",
        "PLACA_AE_TITLE": "1234", "PLACA_DATABASE_URL": "postgresql+psycopg://u@h/db",
    }  # fmt: skip
    settings = config.load(environ=environ)
    assert settings["HTTP_PORT"] == 9090 and settings["SCHEDULER"] is False
    assert settings["AE_TITLE"] == "1234"  # an AE title, not a number
    assert settings["DATABASE_URL"] == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PLACA_HTTP_PORT", "eighty", "not a whole number"),
        ("PLACA_DICOM_PORT", "70000", "outside"),
        ("PLACA_AE_TITLE", "A_TITLE_FAR_TOO_LONG", "not a DICOM AE title"),
        ("PLACA_AE_TITLE", "BACK\\SLASH", "not a DICOM AE title"),
        ("PLACA_SCHEDULER", "maybe", "not a boolean"),
        ("PLACA_DATABASE_URL", "mysql://x/y", "not supported"),
        ("PLACA_DATABASE_URL", "not a url", "not a database URL"),
        ("PLACA_TIMEZONE", "Mars/Olympus", "not an IANA time zone"),
        ("PLACA_HL7_APPLICATION", "  ", "must not be empty"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        config.load(environ={"PLACA_DATA_DIR": str(tmp_path), name: value})
    assert str(caught.value).startswith(name)


def test_secret_key_is_generated_once_and_private(tmp_path: Path) -> None:
    first = config.load(environ={"PLACA_DATA_DIR": str(tmp_path)})["SECRET_KEY"]
    second = config.load(environ={"PLACA_DATA_DIR": str(tmp_path)})["SECRET_KEY"]
    assert first == second and len(first) == 64
    assert (tmp_path / "secret-key").stat().st_mode & 0o777 == 0o600


def test_the_command_line_fails_at_start_with_the_setting_named(tmp_path: Path) -> None:
    env = {**os.environ, "PLACA_DATA_DIR": str(tmp_path), "PLACA_HL7_PORT": "abc"}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "routes"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "PLACA_HL7_PORT: 'abc' is not a whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, _default, _help in config.describe() if f"`{name}`" not in readme]
    assert missing == []
