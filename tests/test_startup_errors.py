"""`bridge run` that cannot start says why in one line and exits 2, never `internal error`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_support import Bridge


@pytest.fixture
def taken() -> Iterator[int]:
    """A port held by another listener on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def run(config: Path, *extra: str) -> tuple[int, str]:
    """`bridge run` as a subprocess that should stop at once; (exit code, its error line)."""
    environ = {k: v for k, v in os.environ.items() if k != "BRIDGE_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        cwd=config.parent,
        env=environ,
        timeout=60,
    )
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("bridge:")]
    assert len(errors) == 1, done.stderr
    return done.returncode, errors[0]


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
def test_a_mail_listener_port_in_use(protocol: str, taken: int, tmp_path: Path) -> None:
    daemon = Bridge(tmp_path)
    daemon.smtp_port = taken
    text = daemon.config.read_text(encoding="utf-8")
    listener = f'[[smtp.listeners]]\nhost = "127.0.0.1"\nport = {taken}\nprotocol = "{protocol}"\n'
    daemon.config.write_text(
        text.replace(text[text.index("[[smtp.listeners]]") : text.index("[web]")], listener),
        encoding="utf-8",
    )
    assert run(daemon.config) == (
        2,
        f"bridge: error: cannot listen for {protocol.upper()} on 127.0.0.1:{taken} "
        "(smtp.listeners[0]): address already in use (another process holds the port)",
    )


def test_the_web_port_in_use(taken: int, tmp_path: Path) -> None:
    daemon = Bridge(tmp_path)
    text = daemon.config.read_text(encoding="utf-8")
    daemon.config.write_text(
        text.replace(f"port = {daemon.web_port}\n", f"port = {taken}\n"), encoding="utf-8"
    )
    assert run(daemon.config) == (
        2,
        f"bridge: error: cannot listen for web on 127.0.0.1:{taken} (web.host, web.port): "
        "address already in use (another process holds the port)",
    )


def test_a_missing_or_bad_tls_certificate(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    daemon = Bridge(tmp_path, extra="")
    base = daemon.config.read_text(encoding="utf-8")
    tls = f'tls_cert = "{missing}"\ntls_key = "{missing}"\n'
    daemon.config.write_text(base.replace("[smtp]\n", "[smtp]\n" + tls), encoding="utf-8")
    assert run(daemon.config) == (
        2,
        f"bridge: error: {daemon.config}: smtp.tls_cert: has value '{missing}': no such file",
    )

    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n", encoding="utf-8")
    tls = f'tls_cert = "{bad}"\ntls_key = "{bad}"\n'
    daemon.config.write_text(base.replace("[smtp]\n", "[smtp]\n" + tls), encoding="utf-8")
    code, line = run(daemon.config)
    assert code == 2
    assert line.startswith(
        f"bridge: error: smtp.tls_cert {bad}, smtp.tls_key {bad}: not a PEM certificate chain"
    )


def test_a_database_path_that_cannot_be_a_database(tmp_path: Path) -> None:
    daemon = Bridge(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("", encoding="utf-8")
    url = f"sqlite:///{blocker}/bridge.db"
    assert run(daemon.config, "--db", url) == (
        2,
        f"bridge: error: {url}: cannot create the folder {blocker}: a file is in the way",
    )
    assert run(daemon.config, "--db", str(tmp_path)) == (
        2,
        f"bridge: error: sqlite:///{tmp_path}: is a folder, not a database file",
    )


def test_a_config_that_is_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    environ = {k: v for k, v in os.environ.items() if k != "BRIDGE_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(folder)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (
        2,
        f"bridge: error: {folder}: cannot read: Is a directory\n",
    )
