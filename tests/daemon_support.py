"""A real `bridge run` subprocess on free ports, for the daemon and attack tests."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.smtp_support import free_port


class Bridge:
    """One `bridge run` process on free ports, with its config and its log.

    `extra` is TOML appended to the config (spaces, rules, [bridge], ...); it
    must not repeat the tables written here ([database], [smtp], [web], [log]).
    """

    def __init__(self, tmp_path: Path, domains: str = '["example.com"]', extra: str = "") -> None:
        self.tmp_path = tmp_path
        self.smtp_port = free_port()
        self.web_port = free_port()
        self.config = tmp_path / "bridge.toml"
        self.db = tmp_path / "bridge.db"
        self.extra = extra
        self.write_config(domains)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def write_config(self, domains: str) -> None:
        self.config.write_text(
            f'[database]\nurl = "sqlite:///{self.db}"\n'
            f"[smtp]\ndomains = {domains}\n"
            f'[[smtp.listeners]]\nhost = "127.0.0.1"\nport = {self.smtp_port}\n'
            f'[web]\nport = {self.web_port}\n[log]\nlevel = "info"\n' + self.extra,
            encoding="utf-8",
        )

    def start(self, env: dict[str, str] | None = None) -> None:
        self.runs += 1
        self.log = self.tmp_path / f"bridge-{self.runs}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp_path,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if self.health()["status"] == "ok":
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"bridge run did not get ready:\n{self.log.read_text()}")

    def health(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as resp:
            return dict(json.load(resp))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def send(
        self,
        data: bytes,
        rcpt: str | list[str] = "alice@example.com",
        sender: str = "sender@enron.com",
    ) -> None:
        """One SMTP transaction over the loopback socket: `data` to every envelope recipient."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as client:
            client.sendmail(sender, [rcpt] if isinstance(rcpt, str) else rcpt, data)
