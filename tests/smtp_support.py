"""Helpers for the SMTP and daemon tests: real messages, made distinct, and free ports."""

from __future__ import annotations

import re
import socket
from pathlib import Path

DATA = Path(__file__).parent / "data" / "smtp"
MESSAGES = sorted(DATA.glob("*.eml"))


def real_message(index: int = 0) -> bytes:
    """A corpus message with CRLF line ends, as it travels over SMTP."""
    data = MESSAGES[index % len(MESSAGES)].read_bytes()
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def fresh_copy(data: bytes, tag: str) -> tuple[bytes, str]:
    """`data` with a new Message-ID and a tagged Subject: a distinct message, not a duplicate."""
    message_id = f"{tag}@bridge-test.example"
    data, n = re.subn(
        rb"(?im)^Message-ID:.*$", f"Message-ID: <{message_id}>".encode(), data, count=1
    )
    assert n == 1
    data = re.sub(
        rb"(?im)^(Subject:.*)$", lambda m: m.group(1) + f" #{tag}".encode(), data, count=1
    )
    return data, message_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
