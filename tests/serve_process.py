"""Run ``flask --app wsgi serve`` as a real process on free ports, for door and browser tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServeProcess:
    data_dir: Path
    database_url: str
    only: tuple[str, ...] = ()
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    hl7_port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    env_extra: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PLACA_DATA_DIR": str(self.data_dir),
            "PLACA_DATABASE_URL": self.database_url,
            "PLACA_HTTP_PORT": str(self.http_port),
            "PLACA_DICOM_HOST": "127.0.0.1",
            "PLACA_DICOM_PORT": str(self.dicom_port),
            "PLACA_HL7_HOST": "127.0.0.1",
            "PLACA_HL7_PORT": str(self.hl7_port),
            **self.env_extra,
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def flask(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            cwd=ROOT, env=self.env, input=stdin, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def output(self) -> str:
        return (self.data_dir / "serve.log").read_text()

    def start(self) -> None:
        only = [arg for name in self.only for arg in ("--only", name)]
        # A file, not a pipe: nobody reads a pipe while serve runs, and a full one blocks it.
        with open(self.data_dir / "serve.log", "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "serve", *only],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as response:
                    return json.load(response)
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise AssertionError("serve did not become ready in time")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float, str]:
        """Send ``sig``; return the exit code, the seconds it took and the output."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -1, timeout, self.output()
        return self.process.returncode, time.monotonic() - started, self.output()
