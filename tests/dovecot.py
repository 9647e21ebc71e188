"""A real Dovecot for the tests and benchmarks: throwaway config, loopback port, maildir in tmp.

`Dovecot(root).start()` runs its own master process (`dovecot -F -c CONFIG`),
never the system service: plaintext auth from a passwd-file, maildir storage
under `root`, on a free 127.0.0.1 port. `stop()`, `restart()` (same port)
and `doveadm(...)` (same config) are what the tests need to break things.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = bridge-test-{port}
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:{root}/mail/%u
mail_uid = {uid}
mail_gid = {gid}
imap_idle_notify_interval = 2 mins
shutdown_clients = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Archive {{
    auto = create
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Every process descended from `pid` (from /proc: no psutil needed for this)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found += kids
        todo += kids
    return found


def available() -> bool:
    return shutil.which("dovecot") is not None and shutil.which("doveadm") is not None


class Dovecot:
    """One Dovecot instance; users are added with `add_user` before or after `start`."""

    def __init__(self, root: Path | None = None, *, tls: bool = False) -> None:
        # Dovecot's unprivileged processes must reach this directory, so it is
        # not under pytest's 0700 tmp_path when we run as root.
        self.root = Path(root or tempfile.mkdtemp(prefix="bridge-dovecot-"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            login_user, internal_user = "dovenull", "dovecot"
            mail_user = pwd.getpwnam("dovecot")
        else:
            mail_user = pwd.getpwuid(os.geteuid())
            login_user = internal_user = mail_user.pw_name
        self.uid, self.gid = mail_user.pw_uid, mail_user.pw_gid
        for sub in ("run", "state", "mail", "home"):
            (self.root / sub).mkdir(exist_ok=True)
        for sub in ("mail", "home"):
            os.chown(self.root / sub, self.uid, self.gid)
        (self.root / "passwd").write_text("")
        # With tls: STARTTLS on `port`, implicit TLS on `tls_port`, and a
        # throwaway certificate for 127.0.0.1 that clients trust via `cert`.
        self.tls_port = free_port() if tls else 0
        self.cert = self.root / "cert.pem"
        ssl = "ssl = no"
        if tls:
            key = self.root / "key.pem"
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout",
                    str(key),
                    "-out",
                    str(self.cert),
                ],
                check=True,
                capture_output=True,
            )
            key.chmod(0o644)
            ssl = f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{key}"
        self.config = self.root / "dovecot.conf"
        self.config.write_text(
            CONFIG.format(
                root=self.root,
                port=self.port,
                tls_port=self.tls_port,
                ssl=ssl,
                login_user=login_user,
                internal_user=internal_user,
                uid=self.uid,
                gid=self.gid,
            )
        )

    def add_user(self, name: str, password: str) -> None:
        with (self.root / "passwd").open("a") as passwd:
            passwd.write(f"{name}:{{PLAIN}}{password}::::::\n")

    def start(self, timeout: float = 20.0) -> Dovecot:
        self.process = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"dovecot exited: {err}{self.log()}")
            if self._greets():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer on port {self.port}: {self.log()}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                return sock.recv(64).startswith(b"* OK")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the whole instance, client sessions included, like systemd's control group."""
        if self.process is None:
            return
        children = _children(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in children:  # imap sessions outlive their master: end them too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._greets():
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def doveadm(self, *args: str) -> str:
        done = subprocess.run(
            ["doveadm", "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def message_ids(
        self, user: str, password: str, folder: str, criteria: str | list[str] = "ALL"
    ) -> set[str]:
        """The Message-IDs (without <>) of `folder`'s messages matching `criteria`."""
        from imapclient import IMAPClient

        with IMAPClient(self.host, self.port, ssl=False, timeout=10) as imap:
            imap.login(user, password)
            if not imap.folder_exists(folder):
                return set()
            imap.select_folder(folder, readonly=True)
            uids = imap.search(criteria)
            found = imap.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
        ids = set()
        for data in found.values():
            # A message another session expunged between SEARCH and FETCH
            # comes back without its header (Dovecot answers NIL): it is gone.
            raw = data.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]")
            if not raw:
                continue
            header = raw.decode().strip()
            ids.add(header.split("<", 1)[1].rstrip(">"))
        return ids

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A started Dovecot with users `alice` / `alice-pw` and `bob` / `bob-pw`."""
    server = Dovecot()
    server.add_user("alice", "alice-pw")
    server.add_user("bob", "bob-pw")
    with server:
        yield server
