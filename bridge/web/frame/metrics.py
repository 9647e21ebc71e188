"""Prometheus metrics of one daemon, in a registry of its own (no process globals)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """The daemon's counters; sources (SMTP, IMAP) update them, `/metrics` shows them."""

    def __init__(self) -> None:
        # Called before each scrape, to copy gauges from where they live (IMAP status).
        self.before_scrape: list[Callable[[], None]] = []
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "bridge_messages",
            "Messages handled, by source (smtp, lmtp, imap) and outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.quarantined = Counter(
            "bridge_quarantined",
            "Messages put in quarantine, by source",
            ["source"],
            registry=self.registry,
        )
        self.smtp_sessions = Counter(
            "bridge_smtp_sessions",
            "SMTP and LMTP connections, by protocol and result (accepted, refused)",
            ["protocol", "result"],
            registry=self.registry,
        )
        self.smtp_active = Gauge(
            "bridge_smtp_sessions_active",
            "SMTP and LMTP sessions open now",
            registry=self.registry,
        )
        self.imap_lag = Gauge(
            "bridge_imap_lag_seconds",
            "Seconds since an IMAP account was last known to be in sync",
            ["account"],
            registry=self.registry,
        )
        self.imap_up = Gauge(
            "bridge_imap_up",
            "1 when an IMAP account is connected and not in error",
            ["account"],
            registry=self.registry,
        )
        self.imap_pending = Gauge(
            "bridge_imap_lag_messages",
            "Messages on an IMAP server not yet stored",
            ["account"],
            registry=self.registry,
        )

    def count(self, source: str, outcome: str) -> None:
        """One message from `source` ended as `outcome` (a `pipeline.Outcome` value)."""
        self.messages.labels(source=source, outcome=outcome).inc()
        if outcome == "quarantined":
            self.quarantined.labels(source=source).inc()

    def session(self, protocol: str, result: str) -> None:
        self.smtp_sessions.labels(protocol=protocol, result=result).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        for refresh in self.before_scrape:
            refresh()
        return generate_latest(self.registry)
