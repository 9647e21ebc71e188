"""The sender: claims due outbox rows and hands them to the relay with aiosmtplib.

One connection per batch. What the relay says decides each row:
accepted -> sent; 4xx, a dropped connection or a timeout -> retried later
with the same bytes (so the same Message-ID); 5xx -> failed, with the
relay's words as the reason. When the relay cannot be reached at all, or
refuses our login, every claimed row is retried: that is the relay's
fault or ours, never the message's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import aiosmtplib
from sqlalchemy.orm import Session

from bridge.config import OutboundConfig, read_secret
from bridge.errors import ConfigError
from bridge.outbound import outbox
from bridge.outbound.outbox import OutboxItem
from bridge.store.runner import StoreRunner

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SendCounts:
    sent: int = 0
    retried: int = 0
    failed: int = 0


def relay_password(config: OutboundConfig) -> str | None:
    """The relay password, read at each connection so a new one needs no restart."""
    if not config.username:
        return None
    return read_secret(config.password_env, config.password_file)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}".strip()
    return f"{type(exc).__name__}: {exc}".strip()


class Mailer:
    """Sends the outbox through `[outbound]`; `send_due` is one pass."""

    name = "mailer"

    def __init__(self, store: StoreRunner, config: OutboundConfig, envelope_from: str) -> None:
        self.store = store
        self.config = config
        self.envelope_from = config.from_address or envelope_from

    def _client(self) -> aiosmtplib.SMTP:
        cfg = self.config
        return aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.server_port,
            username=cfg.username or None,
            password=relay_password(cfg),
            use_tls=cfg.tls == "tls",
            # starttls: required, never silently skipped; none: never tried.
            start_tls=cfg.tls == "starttls",
            cert_bundle=cfg.ca_file or None,
            timeout=cfg.connect_timeout,
        )

    async def send_due(self, now: datetime) -> SendCounts:
        """Send what is due at `now`; how many were sent, retried and failed."""
        counts = SendCounts()
        if not self.config.host:
            return counts
        limit = self.config.batch_size
        items = await self.store.write(lambda s: outbox.claim(s, now, limit))
        if not items:
            return counts
        client: aiosmtplib.SMTP | None = None
        # A slow relay must not outlive the lease: another sender would take
        # the rest and send them twice. Past half of it, give the rest back.
        deadline = time.monotonic() + outbox.LEASE.total_seconds() / 2
        try:
            for index, item in enumerate(items):
                if time.monotonic() > deadline:
                    await self._release(items[index:])
                    break
                if client is None or not client.is_connected:
                    try:
                        client = self._client()
                        await client.connect()
                    except (aiosmtplib.SMTPException, OSError, ConfigError) as exc:
                        # Unreachable, refused, bad login: retry this and the rest.
                        log.warning("outbound relay %s: %s", self.config.host, _reason(exc))
                        await self._retry_all(items[index:], counts, _reason(exc), now)
                        client = None
                        break
                await self._send_one(client, item, counts, now)
        finally:
            if client is not None and client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
        return counts

    async def _release(self, items: list[OutboxItem]) -> None:
        def write(session: Session) -> None:
            for item in items:
                outbox.release(session, item)

        await self.store.write(write)

    async def _send_one(
        self, client: aiosmtplib.SMTP, item: OutboxItem, counts: SendCounts, now: datetime
    ) -> None:
        try:
            errors, _ = await client.sendmail(
                self.envelope_from, list(item.recipients), item.data, timeout=self.config.timeout
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            reason = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            permanent = all(code >= 500 for code in codes)
            await self._mark(item, counts, reason, now, permanent)
            await _reset(client)
        except aiosmtplib.SMTPResponseException as exc:
            await self._mark(item, counts, _reason(exc), now, exc.code >= 500)
            await _reset(client)
        except (aiosmtplib.SMTPException, OSError) as exc:  # dropped, timed out
            await self._mark(item, counts, _reason(exc), now, permanent=False)
            client.close()
        else:
            if errors:  # accepted for some: sent; the rest are noted, not retried
                refused = "; ".join(f"{rcpt}: {r.code} {r.message}" for rcpt, r in errors.items())
                log.warning("outbox %s %s: refused %s", item.id, item.message_id, refused)
            await self.store.write(lambda s: outbox.mark_sent(s, item, now))
            counts.sent += 1

    async def _mark(
        self, item: OutboxItem, counts: SendCounts, reason: str, now: datetime, permanent: bool
    ) -> None:
        if permanent:
            log.error("outbox %s %s failed: %s", item.id, item.message_id, reason)
            await self.store.write(lambda s: outbox.mark_failed(s, item, reason))
            counts.failed += 1
            return
        status = await self.store.write(lambda s: outbox.mark_retry(s, item, reason, now))
        if status == outbox.FAILED:
            counts.failed += 1
        else:
            counts.retried += 1

    async def _retry_all(
        self, items: list[OutboxItem], counts: SendCounts, reason: str, now: datetime
    ) -> None:
        def write(session: Session) -> list[str]:
            return [outbox.mark_retry(session, item, reason, now) for item in items]

        for status in await self.store.write(write):
            if status == outbox.FAILED:
                counts.failed += 1
            else:
                counts.retried += 1


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after a refusal so the next message starts a clean transaction."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()
