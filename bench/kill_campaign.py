"""Kill -9 campaign: does `bridge run` lose or double mail when it is SIGKILLed at random?

`.venv/bin/python -P bench/kill_campaign.py [--paths smtp,lmtp,imap]
[--backends sqlite,postgres] [--kills 5] [--clients 4] [--seconds-between 1.5:4]
[--imap-messages 300] [--imap-action move] [--pg-url postgresql://127.0.0.1:5432/test]`

For each path and each backend it runs the real daemon (`.venv/bin/bridge run
--config <tmp>/bridge.toml`, on free loopback ports) and kills it with SIGKILL
`--kills` times, restarting it after each kill, then lets it finish (SIGTERM)
and counts from the database:

- smtp: `--clients` threads send corpus messages (tests/data/smtp, each with a
  fresh Message-ID) continuously with smtplib, reconnecting whenever the
  daemon is gone; a message is acknowledged when its DATA got 250. Kills come
  every `--seconds-between` seconds (uniform in LO:HI).
- lmtp: the same over a raw LMTP socket, two envelope recipients per message;
  each per-recipient 250 after DATA acknowledges one (Message-ID, recipient)
  pair, so lmtp counts pairs, not messages.
- imap: `--imap-messages` messages are APPENDed to a real Dovecot INBOX
  (tests/dovecot.py), the daemon syncs it as an [[imap.accounts]] account
  (after_action `--imap-action`, batch_size 10), and is killed at K random
  points spread over the sync (when the stored count passes them); then it is
  restarted and left until the INBOX is fully handled. "acked" is the number
  appended.

Figures per (path, backend): sent, acked, stored (distinct bench units found in
the store, acknowledged or not), lost (acknowledged but not stored: must be 0),
doubled (a Message-ID stored as more than one message row, or more than one
delivery of it for the same envelope recipient / IMAP account: must be 0),
kills, duration. PostgreSQL runs in a database of its own
(`kill_campaign_<pid>_<path>`, created from --pg-url and dropped after); SQLite
in a temp file. Exit status 1 if anything was lost or doubled.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.dovecot and tests.smtp_support

from imapclient import IMAPClient  # noqa: E402
from sqlalchemy import bindparam, create_engine, text  # noqa: E402

from bridge.store.db import make_engine  # noqa: E402
from bridge.store.migrate import upgrade  # noqa: E402
from tests.dovecot import Dovecot, free_port  # noqa: E402
from tests.smtp_support import fresh_copy, real_message  # noqa: E402

BRIDGE = ROOT / ".venv" / "bin" / "bridge"
SENDER = "sender@enron.com"
SMTP_RCPTS = ["alice@example.com"]
LMTP_RCPTS = ["alice@example.com", "bob@example.com"]
IMAP_ENV = {"BRIDGE_KILL_CAMPAIGN_IMAP": "alice-pw"}
RUN_TAG = f"kc{os.getpid()}"


class Daemon:
    """One `bridge run` subprocess (SMTP + LMTP listeners, web for /healthz) on free ports."""

    def __init__(self, workdir: Path, url: str, extra: str = "", env: dict[str, str] | None = None):
        self.workdir = workdir
        self.smtp_port, self.lmtp_port, self.web_port = free_port(), free_port(), free_port()
        self.config = workdir / "bridge.toml"
        self.config.write_text(
            f"[database]\nurl = {json.dumps(url)}\n"
            '[smtp]\ndomains = ["example.com"]\n'
            f'[[smtp.listeners]]\nhost = "127.0.0.1"\nport = {self.smtp_port}\n'
            f'[[smtp.listeners]]\nhost = "127.0.0.1"\nport = {self.lmtp_port}\nprotocol = "lmtp"\n'
            f'[web]\nport = {self.web_port}\n[log]\nlevel = "info"\n' + extra,
            encoding="utf-8",
        )
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self, timeout: float = 30.0) -> None:
        self.runs += 1
        log = self.workdir / f"bridge-{self.runs}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(BRIDGE), "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge run exited:\n{log.read_text(errors='replace')}")
            try:
                url = f"http://127.0.0.1:{self.web_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if json.load(resp).get("status") == "ok":
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"bridge run not ready:\n{log.read_text(errors='replace')}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL if it hangs); the exit status of a graceful stop."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


@dataclass
class Result:
    path: str
    backend: str
    sent: int
    acked: int
    stored: int
    lost: int
    doubled: int
    kills: int
    duration: float
    note: str = ""


# -- databases ---------------------------------------------------------------


@contextlib.contextmanager
def database(backend: str, path: str, workdir: Path, pg_url: str) -> Iterator[str]:
    """A fresh, migrated store URL for one campaign; a PostgreSQL database is dropped after."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir}/bridge.db"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    name = f"kill_campaign_{os.getpid()}_{path}"
    admin_url = make_engine(pg_url).url  # normalised to the installed driver
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def deliveries(url: str, sources: tuple[str, ...]) -> tuple[list[tuple[str, str]], int]:
    """(Message-ID, envelope_to) per delivery from `sources` of this run's messages,
    and how many Message-IDs of this run have more than one message row."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT m.message_id, d.envelope_to FROM messages m "
                    "JOIN deliveries d ON d.message_pk = m.id "
                    "WHERE d.source IN :sources AND m.message_id LIKE :tag"
                ).bindparams(bindparam("sources", expanding=True)),
                {"sources": list(sources), "tag": f"{RUN_TAG}-%"},
            ).all()
            multi = conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT message_id FROM messages "
                    "WHERE message_id LIKE :tag GROUP BY message_id HAVING count(*) > 1) AS x"
                ),
                {"tag": f"{RUN_TAG}-%"},
            ).scalar_one()
    finally:
        engine.dispose()
    return [(str(mid), str(to or "")) for mid, to in rows], int(multi)


def stored_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(DISTINCT d.message_pk) FROM deliveries d "
                        "WHERE d.source = 'imap'"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


# -- SMTP and LMTP -----------------------------------------------------------


def lmtp_send(sock_file: BinaryIO, sock: socket.socket, data: bytes, rcpts: list[str]) -> list[str]:
    """One LMTP transaction; the recipients whose per-recipient reply after DATA was 250."""

    def reply() -> tuple[int, bytes]:
        while True:
            line = sock_file.readline()
            if not line:
                raise ConnectionError("connection closed")
            if line[3:4] != b"-":
                return int(line[:3]), line

    def say(line: bytes) -> tuple[int, bytes]:
        sock.sendall(line + b"\r\n")
        return reply()

    code, line = say(f"MAIL FROM:<{SENDER}>".encode())
    if code != 250:
        raise smtplib.SMTPException(line)
    accepted = [r for r in rcpts if say(f"RCPT TO:<{r}>".encode())[0] == 250]
    if not accepted:
        raise smtplib.SMTPException("no recipient accepted")
    code, line = say(b"DATA")
    if code != 354:
        raise smtplib.SMTPException(line)
    body = re.sub(rb"(?m)^\.", b"..", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    sock.sendall(body + b".\r\n")
    return [r for r in accepted if reply()[0] == 250]


def lmtp_connect(port: int) -> tuple[socket.socket, BinaryIO]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock_file = sock.makefile("rb")
    line = sock_file.readline()
    if not line.startswith(b"220"):
        raise ConnectionError(line)
    sock.sendall(b"LHLO bench.test\r\n")
    while True:
        line = sock_file.readline()
        if not line:
            raise ConnectionError("closed during LHLO")
        if line[3:4] != b"-":
            break
    return sock, sock_file


def smtp_campaign(
    path: str, backend: str, url: str, workdir: Path, args: argparse.Namespace
) -> Result:
    daemon = Daemon(workdir, url)
    counter = itertools.count()
    lock = threading.Lock()
    acked: set[tuple[str, str]] = set()
    sent = 0
    stop = threading.Event()
    rcpts = LMTP_RCPTS if path == "lmtp" else SMTP_RCPTS

    def client(number: int) -> None:
        nonlocal sent
        while not stop.is_set():
            try:
                if path == "lmtp":
                    sock, sock_file = lmtp_connect(daemon.lmtp_port)
                    with contextlib.closing(sock):
                        while not stop.is_set():
                            i = next(counter)
                            data, mid = fresh_copy(real_message(i), f"{RUN_TAG}-{path}-{i}")
                            with lock:
                                sent += 1
                            ok = lmtp_send(sock_file, sock, data, rcpts)
                            with lock:
                                acked.update((mid, r) for r in ok)
                else:
                    with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as smtp:
                        while not stop.is_set():
                            i = next(counter)
                            data, mid = fresh_copy(real_message(i), f"{RUN_TAG}-{path}-{i}")
                            with lock:
                                sent += 1
                            smtp.sendmail(SENDER, rcpts, data)
                            with lock:
                                acked.update((mid, r) for r in rcpts)
            except (OSError, smtplib.SMTPException, ValueError):
                time.sleep(0.05)  # the daemon died under us (or refused): reconnect

    lo, hi = args.seconds_between
    started = time.monotonic()
    daemon.start()
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(args.clients)]
    for t in threads:
        t.start()
    kills = 0
    try:
        for _ in range(args.kills):
            time.sleep(random.uniform(lo, hi))
            daemon.kill()
            kills += 1
            daemon.start()
        time.sleep(random.uniform(lo, hi))  # a last stretch of normal service
        stop.set()
        for t in threads:
            t.join(30)
        status = daemon.stop()
    finally:
        stop.set()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)
    duration = time.monotonic() - started
    rows, multi = deliveries(url, (path,))
    per_rcpt: Counter[tuple[str, str]] = Counter()
    for mid, envelope_to in rows:
        for rcpt in filter(None, envelope_to.splitlines()):
            per_rcpt[(mid, rcpt)] += 1
    lost = len(acked - set(per_rcpt))
    doubled = multi + sum(1 for n in per_rcpt.values() if n > 1)
    return Result(
        path,
        backend,
        sent * len(rcpts),
        len(acked),
        len(per_rcpt),
        lost,
        doubled,
        kills,
        duration,
        f"final stop exit {status}",
    )


# -- IMAP --------------------------------------------------------------------


def imap_campaign(backend: str, url: str, workdir: Path, args: argparse.Namespace) -> Result:
    (workdir / "dovecot").mkdir()
    server = Dovecot(workdir / "dovecot")
    server.add_user("alice", "alice-pw")
    started = time.monotonic()
    server.start()
    daemon: Daemon | None = None
    try:
        total = args.imap_messages
        appended: set[str] = set()
        with IMAPClient(server.host, server.port, ssl=False, timeout=10) as imap:
            imap.login("alice", "alice-pw")
            for i in range(total):
                data, mid = fresh_copy(real_message(i), f"{RUN_TAG}-imap-{backend}-{i}")
                imap.append("INBOX", data)
                appended.add(mid)
        action = args.imap_action
        account = (
            "[[imap.accounts]]\n"
            'name = "alice"\n'
            f'host = "{server.host}"\nport = {server.port}\ntls = "plain"\n'
            'username = "alice"\npassword_env = "BRIDGE_KILL_CAMPAIGN_IMAP"\n'
            f'after_action = "{action}"\nmove_to = "Bridged"\nbatch_size = 10\n'
            "poll_interval = 0.5\nconnect_timeout = 3.0\nread_timeout = 5.0\n"
        )
        daemon = Daemon(workdir, url, account, IMAP_ENV)
        # K kill points spread over 90 % of the sync, one at random in each slice.
        span = int(total * 0.9)
        points = [
            random.randint(k * span // args.kills + 1, (k + 1) * span // args.kills)
            for k in range(args.kills)
        ]
        kills, at_kill = 0, []
        for point in points:
            daemon.start()
            deadline = time.monotonic() + 60
            while stored_count(url) < point and time.monotonic() < deadline:
                time.sleep(0.01)
            daemon.kill()
            kills += 1
            at_kill.append(stored_count(url))  # < total: the kill landed mid-sync
        daemon.start()

        def left() -> set[str]:
            folder = "INBOX"
            criteria = ["ALL"] if action == "move" else ["UNSEEN"]
            return server.message_ids("alice", "alice-pw", folder, criteria)

        deadline = time.monotonic() + 120
        while (left() or stored_count(url) < total) and time.monotonic() < deadline:
            time.sleep(0.2)
        status = daemon.stop()
        remaining = len(left())
    finally:
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)
        server.cleanup()
    duration = time.monotonic() - started
    rows, multi = deliveries(url, ("imap",))
    per_mid = Counter(mid for mid, _ in rows)
    lost = len(appended - set(per_mid))
    doubled = multi + sum(1 for n in per_mid.values() if n > 1)
    return Result(
        "imap",
        backend,
        total,
        total,
        len(per_mid),
        lost,
        doubled,
        kills,
        duration,
        f"stored at each kill {at_kill} of {total}; left on server {remaining}; "
        f"final stop exit {status}",
    )


# -- main --------------------------------------------------------------------


def seconds_range(value: str) -> tuple[float, float]:
    lo, _, hi = value.partition(":")
    low, high = float(lo), float(hi or lo)
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError("LO:HI with 0 < LO <= HI")
    return low, high


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default="smtp,lmtp,imap")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds-between", type=seconds_range, default=(1.5, 4.0))
    parser.add_argument("--imap-messages", type=int, default=300)
    parser.add_argument("--imap-action", choices=["move", "seen"], default="move")
    parser.add_argument("--pg-url", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    backends = [b for b in args.backends.split(",") if b]
    if set(paths) - {"smtp", "lmtp", "imap"} or set(backends) - {"sqlite", "postgres"}:
        parser.error("paths: smtp,lmtp,imap; backends: sqlite,postgres")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)
    print(
        f"kill -9 campaign: kills={args.kills} clients={args.clients} "
        f"seconds-between={args.seconds_between[0]}:{args.seconds_between[1]} "
        f"imap-messages={args.imap_messages} imap-action={args.imap_action} seed={seed}",
        flush=True,
    )
    header = (
        f"{'path':<5} {'backend':<8} {'sent':>6} {'acked':>6} {'stored':>6} "
        f"{'lost':>5} {'doubled':>7} {'kills':>5} {'duration':>9}"
    )
    print(header, flush=True)
    results: list[Result] = []
    for path in paths:
        for backend in backends:
            workdir = Path(tempfile.mkdtemp(prefix=f"kill-campaign-{path}-{backend}-"))
            workdir.chmod(0o755)
            try:
                with database(backend, path, workdir, args.pg_url) as url:
                    if path == "imap":
                        result = imap_campaign(backend, url, workdir, args)
                    else:
                        result = smtp_campaign(path, backend, url, workdir, args)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            results.append(result)
            print(
                f"{result.path:<5} {result.backend:<8} {result.sent:>6} {result.acked:>6} "
                f"{result.stored:>6} {result.lost:>5} {result.doubled:>7} {result.kills:>5} "
                f"{result.duration:>8.1f}s   ({result.note})",
                flush=True,
            )
    print(
        "units: smtp and imap count messages; lmtp counts (Message-ID, recipient) pairs, "
        f"{len(LMTP_RCPTS)} recipients per message, each with its own 250. "
        "sent counts attempts (incl. those cut off by a kill); imap acked = appended."
    )
    bad = [r for r in results if r.lost or r.doubled]
    print("RESULT:", "FAIL" if bad else "OK (lost 0, doubled 0 everywhere)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
