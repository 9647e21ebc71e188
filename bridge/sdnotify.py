"""systemd's notify protocol: READY=1, STOPPING=1, WATCHDOG=1 to `$NOTIFY_SOCKET`.

Hand-written rather than a dependency: the protocol is one datagram on a
Unix socket, PyPI's `sdnotify` has had no release since 2017 and
`systemd-python` needs libsystemd headers to build. Without
`NOTIFY_SOCKET` (not started by systemd) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self.address = "\0" + address[1:] if address.startswith("@") else address

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, state: str) -> bool:
        """Send `state` ("READY=1", ...); True when it was sent."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(state.encode())
        except OSError as exc:  # systemd gone or socket wrong: the service must still run
            log.warning("sd_notify %s failed: %s", state, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    @staticmethod
    def watchdog_interval() -> float | None:
        """Half of systemd's WatchdogSec (`$WATCHDOG_USEC`) for this process, or None."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None
