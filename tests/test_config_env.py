"""Which config a command reads: --config, else BRIDGE_CONFIG; `make run CONFIG=...`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.daemon_support import Bridge

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "systemd" / "bridge.service"


def bridge(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "BRIDGE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**environ, **(env or {})},
        timeout=60,
    )


def test_every_command_reads_bridge_config(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "bridge.toml"
    config.parent.mkdir()
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/state/a.db"\n', encoding="utf-8")
    env = {"BRIDGE_CONFIG": str(config)}
    work = tmp_path / "work"
    work.mkdir()

    done = bridge(work, "db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "state" / "a.db").exists()
    done = bridge(work, "search", "budget", env=env)
    assert (done.returncode, done.stdout) == (0, "0 of 0 threads\n"), done.stderr
    done = bridge(work, "login-link", "alice@example.com", env=env)
    assert done.returncode == 0, done.stderr
    assert f"sqlite:///{tmp_path}/state/a.db" in done.stderr
    # Nothing fell back to the built-in ./var/bridge.db.
    assert not (work / "var").exists()

    # --config wins over the variable; a missing file named by it is an error.
    other = tmp_path / "other.toml"
    other.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/b.db"\n', encoding="utf-8")
    done = bridge(work, "--config", str(other), "db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b.db").exists()
    done = bridge(work, "search", "budget", env={"BRIDGE_CONFIG": str(tmp_path / "nope.toml")})
    assert done.returncode == 2
    assert done.stderr == f"bridge: error: {tmp_path}/nope.toml: no such file\n"


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
                if json.load(resp)["status"] == "ok":
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"bridge run did not get ready:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        raise


def test_run_reads_bridge_config_as_the_systemd_unit_sets_it(tmp_path: Path) -> None:
    unit = UNIT.read_text(encoding="utf-8")
    assert "Environment=BRIDGE_CONFIG=/etc/bridge/bridge.toml\n" in unit
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert exec_start == "ExecStart=/opt/bridge/.venv/bin/bridge run"

    daemon = Bridge(tmp_path)
    log = tmp_path / "run.log"
    environ = {k: v for k, v in os.environ.items() if k != "BRIDGE_CONFIG"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "bridge"), "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**environ, "BRIDGE_CONFIG": str(daemon.config)},
            start_new_session=True,
        )
    try:
        _wait_healthy(daemon.url, proc, log)
    finally:
        assert _stop(proc) == 0
    text = log.read_text()
    assert f"config {daemon.config}, database sqlite:///{daemon.db}" in text


def test_make_run_takes_a_config(tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "bridge").exists():
        pytest.skip("no .venv: `make setup` first")
    daemon = Bridge(tmp_path)
    log = tmp_path / "make.log"
    environ = {k: v for k, v in os.environ.items() if k != "BRIDGE_CONFIG"}
    with log.open("wb") as out:
        # -o: the set-up step is taken as done (the venv running this test).
        proc = subprocess.Popen(
            [
                "make",
                "--no-print-directory",
                "-o",
                ".venv/.installed",
                "run",
                f"CONFIG={daemon.config}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=environ,
            start_new_session=True,
        )
    try:
        _wait_healthy(daemon.url, proc, log)
    finally:
        _stop(proc)
    text = log.read_text()
    assert text.startswith(f".venv/bin/bridge run --config {daemon.config}\n"), text
    assert f"config {daemon.config}, database sqlite:///{daemon.db}" in text
