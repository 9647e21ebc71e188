"""A message body while it is received: in memory while small, in a temporary file once large.

Sixteen 30 MB messages held in memory by the SMTP sessions receiving them
took 1.7 GB. Past `threshold` bytes a `Spool` moves what it holds to an
unnamed temporary file (created already unlinked, so nothing is left behind
even by `kill -9`) and appends the rest there. The bytes are read back once,
in the thread that prepares the message, and the file is closed when the
session is done with the message, whatever happened.

The spool is a buffer, not the durable copy: the 250 is still given only
once the store has committed the raw bytes.

`tempfile.SpooledTemporaryFile` does nearly this, but it names its temporary
file, exposes whether it rolled over only through a private attribute, and
grows a `BytesIO` (a second copy on rollover); this is 60 lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
from typing import IO

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # received lines are gathered into writes of this size


class Spool:
    """Bytes appended in order; in memory up to `threshold`, then in a temporary file."""

    def __init__(self, threshold: int, directory: str | None = None) -> None:
        self.threshold = threshold
        self.directory = directory or None
        self.size = 0
        self.closed = False
        self._buffer = bytearray()
        self._file: IO[bytes] | None = None
        # `read` runs in a prepare thread while the session may close the spool
        # (the client hung up): the two take turns.
        self._lock = threading.Lock()

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self._buffer += data
        if self._file is None and len(self._buffer) > self.threshold:
            if self.directory:
                os.makedirs(self.directory, exist_ok=True)
            # Closed by `close`, which the session always calls: it outlives this call.
            self._file = tempfile.TemporaryFile(prefix="bridge-spill-", dir=self.directory)  # noqa: SIM115
        if self._file is not None and len(self._buffer) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        assert self._file is not None
        self._file.write(self._buffer)
        self._buffer.clear()

    def discard(self) -> None:
        """Forget what was written (a refused message), file included."""
        self.size = 0
        self._buffer.clear()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def read(self) -> bytes:
        """All the bytes written, as one `bytes` (the only full copy made); safe from any thread."""
        with self._lock:
            if self.closed:
                raise ValueError("the spool was closed: the session ended")
            if self._file is None:
                return bytes(self._buffer)
            self._flush()
            self._file.seek(0)
            return self._file.read()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._buffer = bytearray()
            if self._file is not None:
                self._file.close()
                self._file = None


# aiosmtpd's words for a DATA it refuses once the lone dot has arrived (RFC 5321
# 4.2.5: the reply waits for the end of the data); `GuardedSMTP.push` renames them.
TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH = "552 Error: Too much mail data"
NO_ROOM = "452 4.3.1 Insufficient system storage, try again later"  # the spool could not be written


async def receive(reader: asyncio.StreamReader, spool: Spool, limit: int | None) -> str | None:
    """Read DATA up to the lone dot into `spool`, dot-unstuffed (RFC 5321 4.5.2).

    Returns None, or the refusal to answer once the client is done: a line
    longer than the reader's limit, more than `limit` bytes in all, or a
    spool file that cannot be written (disk full, `spill_dir` unusable: the
    client retries later). Nothing is kept of a refused message, and the
    rest of it is still read, so the session stays in step.
    """
    refusal: str | None = None
    received = 0
    partial = False  # inside a line too long for the reader, read in pieces
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            line = await reader.read(exc.consumed)
            if refusal is None:
                refusal = TOO_LONG
                spool.discard()
        if not partial and line == b".\r\n":
            return refusal
        partial = not line.endswith(b"\r\n")
        received += len(line)
        if refusal is None and limit and received > limit:
            refusal = TOO_MUCH
            spool.discard()
        if refusal is None:
            try:
                spool.write(line[1:] if line.startswith(b".") else line)
            except OSError as exc:
                log.error("spooling a message failed: %s: %s", type(exc).__name__, exc)
                refusal = NO_ROOM
                spool.discard()
