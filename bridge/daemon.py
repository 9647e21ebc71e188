"""`bridge run`: the composition root. Builds the store, the listeners, the services, the web.

One asyncio process: the SMTP/LMTP listeners, the web server and the
services (IMAP workers, the scheduler) share the loop; the store is reached
through `StoreRunner` (one writer thread) and live deliveries are stored
by group commit. Signals: SIGTERM/SIGINT stop gracefully (421 to new
connections, messages in DATA finish, services flush, exit 0 within 10 s),
SIGHUP reloads the config (a bad one is logged and the old one kept).
systemd hears READY, RELOADING, STOPPING and WATCHDOG.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy.engine import make_url

from bridge import pipeline
from bridge.config import Config, ListenerConfig, SmtpConfig, load_config
from bridge.core.message import LoadRaw, RawMessage
from bridge.errors import ConfigError, StartupError
from bridge.group_commit import GroupCommit
from bridge.ingest.digest_replies import DigestReplies
from bridge.ingest.imap import ImapStatus, SessionStore, run_imap
from bridge.ingest.smtp import BridgeHandler, ConnectionGuard, session_factory, tls_context
from bridge.outbound.keys import signing_key
from bridge.outbound.mailer import Mailer
from bridge.outbound.scheduler import Scheduler
from bridge.sdnotify import Notifier
from bridge.signing import Signer
from bridge.store.blobs import Compressor, current_dictionary
from bridge.store.db import make_engine
from bridge.store.migrate import is_current, upgrade
from bridge.store.runner import StoreRunner
from bridge.web.app import make_app
from bridge.web.frame.metrics import Metrics

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 10.0  # systemd's and the budget; draining gets most of it
DRAIN_SECONDS = 6.0


class Service(Protocol):
    """A long-running part of the daemon beside the listeners (IMAP workers, scheduler).

    `stop` must flush its checkpoints; `reload` gets the new config after SIGHUP.
    """

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def reload(self, config: Config) -> None: ...


@dataclass(frozen=True, slots=True)
class Bound:
    """A listener as it ended up: the real port when the config said 0."""

    host: str
    port: int
    protocol: str


class Daemon:
    def __init__(
        self, config: Config, db_url: str | None = None, *, notifier: Notifier | None = None
    ) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        # What each source reports for /healthz: "imap:<account>" -> {"state": ..., ...}.
        self.status: dict[str, dict[str, Any]] = {}
        self.metrics = Metrics()
        self.services: list[Service] = []  # filled below, once the store exists
        self.reload_hooks: list[Callable[[Config], object]] = []
        # FULL: a commit is on disk before SMTP answers 250.
        engine = make_engine(
            db_url or config.database.url,
            synchronous="FULL",
            busy_timeout=config.database.busy_timeout,
        )
        if not is_current(engine):
            upgrade(engine)
        self.store = StoreRunner(engine)
        with engine.connect() as conn:
            self.compressor = Compressor(current_dictionary(conn))
        self.guard = ConnectionGuard(lambda: self.config.smtp)
        self.guard.on_change = self.metrics.session
        self.metrics.smtp_active.set_function(lambda: len(self.guard.sessions))
        self.committer: GroupCommit | None = None
        self.replies: DigestReplies | None = None  # mail to digest reply addresses
        self.smtp_bound: list[Bound] = []
        self.web_bound: Bound | None = None
        self._servers: list[asyncio.Server] = []
        self._tls: ssl.SSLContext | None = None
        self._web: web.AppRunner | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopped = False
        self.imap_status = ImapStatus()
        self._imap_stop = asyncio.Event()
        self._imap: asyncio.Task[None] | None = None
        self.metrics.before_scrape.append(self._imap_metrics)
        mailer = None
        if config.outbound.host:  # no relay configured: nothing is ever sent
            mailer = Mailer(self.store, config.outbound, config.bridge.address)
        self.scheduler = Scheduler(self.store, mailer, config.outbound.poll_interval, config)
        self.services.append(self.scheduler)

    # -- delivery ---------------------------------------------------------------

    async def deliver(self, raw: RawMessage | LoadRaw) -> pipeline.Outcome:
        """Store one live message; returns once it is durable."""
        assert self.committer is not None, "start() first"
        return await self.committer.submit(raw)

    def _stored(self, item: pipeline.Prepared, outcome: pipeline.Outcome) -> None:
        self.metrics.count(item.raw.provenance.source, outcome.value)

    def health_status(self) -> Mapping[str, Mapping[str, Any]]:
        smtp = {
            "state": "closing" if self.guard.closing else "listening",
            "listeners": [f"{b.protocol}://{b.host}:{b.port}" for b in self.smtp_bound],
            "sessions": len(self.guard.sessions),
        }
        imap = {
            f"imap:{name}": {**state, "ok": state["state"] != "error"}
            for name, state in self.imap_status.snapshot().items()
        }
        scheduler = {"jobs": self.scheduler.jobs(), "runs": self.scheduler.runs}
        failing = self.committer.failing if self.committer is not None else None
        store: dict[str, Any] = {"ok": failing is None, "writes": "ok"}
        if failing is not None:
            since, error = failing
            # Deliveries are being answered 451: the process cannot do its job.
            store.update(writes="failing", since=since.isoformat(), error=error, fatal=True)
        return {"smtp": smtp, "store": store, "scheduler": scheduler, **imap, **self.status}

    def _imap_metrics(self) -> None:
        for name, state in self.imap_status.snapshot().items():
            up = state["connected"] and state["state"] != "error"
            self.metrics.imap_up.labels(account=name).set(int(up))
            self.metrics.imap_pending.labels(account=name).set(state["lag_messages"])
            if state["lag_seconds"] is not None:
                self.metrics.imap_lag.labels(account=name).set(state["lag_seconds"])

    # -- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        smtp = self.config.smtp
        self.committer = GroupCommit(
            self.store,
            self.compressor,
            max_batch=smtp.batch_size,
            max_wait=smtp.batch_wait,
            on_stored=self._stored,
            rules=lambda: self.config.ruleset,
            limits=lambda: self.config.limits.parse_limits(),
        )
        self.committer.start()
        self._tls = _tls_context(smtp.tls_cert, smtp.tls_key) if smtp.tls_cert else None
        key = await self.store.write(lambda s: signing_key(s, self.config, datetime.now(UTC)))
        signer = Signer(key)
        self.replies = DigestReplies(self.store, lambda: self.config, signer)
        for index, listener in enumerate(smtp.listeners):
            await self._listen(listener, self._tls, f"smtp.listeners[{index}]")
        self._start_imap()
        for service in self.services:
            await service.start()
        app = make_app(
            self.store,
            self.metrics,
            self.health_status,
            config=lambda: self.config,
            signer=signer,
            send_now=self.scheduler.send_now,
        )
        self._web = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._web.setup()
        site = web.TCPSite(self._web, self.config.web.host, self.config.web.port)
        try:
            await site.start()
        except OSError as exc:
            host, port = self.config.web.host, self.config.web.port
            raise StartupError.listener("web", host, port, "web.host, web.port", exc) from exc
        port = self._web.addresses[0][1] if self._web.addresses else self.config.web.port
        self.web_bound = Bound(self.config.web.host, port, "http")
        log.info(
            "bridge running: %s, web on http://%s:%d/; config %s, database %s",
            ", ".join(f"{b.protocol} on {b.host}:{b.port}" for b in self.smtp_bound),
            self.web_bound.host,
            self.web_bound.port,
            self.config.source
            if self.config.source != "(defaults)"
            else "(none: the built-in defaults; give --config FILE or set BRIDGE_CONFIG)",
            self.store.engine.url.render_as_string(hide_password=True),
        )
        if not self.config.outbound.host:
            log.warning(
                "no [outbound] relay: sign-in links and digests wait in the outbox; "
                "`bridge login-link ADDRESS` prints a sign-in link"
            )

    async def _listen(self, listener: ListenerConfig, context: Any, key: str) -> None:
        location = f"{listener.protocol}://{listener.host}:{listener.port}"
        handler = BridgeHandler(
            self.deliver,
            self._smtp_settings,
            location,
            listener.protocol,
            self._spill_dir(),
            replies=self.replies,
        )
        factory = session_factory(handler, self.guard, self._smtp_settings, context)
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(factory, listener.host, listener.port)
        except OSError as exc:
            kind = listener.protocol.upper()
            raise StartupError.listener(kind, listener.host, listener.port, key, exc) from exc
        self._servers.append(server)
        port = server.sockets[0].getsockname()[1]
        self.smtp_bound.append(Bound(listener.host, port, listener.protocol))

    def _spill_dir(self) -> str:
        """Where large messages spill by default: beside the SQLite database (not a
        RAM-backed /tmp), else the system temporary directory."""
        url = make_url(self.config.database.url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return os.path.dirname(os.path.abspath(url.database))
        return ""

    def _smtp_settings(self) -> SmtpConfig:
        return self.config.smtp

    async def stop(self) -> None:
        """Graceful stop: 421 to newcomers, DATA in flight finishes, everything flushed."""
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        await self.guard.drain(loop.time() + DRAIN_SECONDS)
        for server in self._servers:
            server.close()
        await self._stop_imap()
        for service in reversed(self.services):
            try:
                await asyncio.wait_for(service.stop(), timeout=2.0)
            except Exception:
                log.exception("stopping %s failed", service.name)
        if self.committer is not None:
            await self.committer.close()
        if self._web is not None:
            await self._web.cleanup()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)
        self.store.close()

    def _start_imap(self) -> None:
        """One worker per configured IMAP account, storing through the group committer."""
        if not self.config.imap.accounts:
            return
        committer = self.committer
        assert committer is not None

        def prepare(raws: Any) -> list[pipeline.Prepared]:
            return [committer.prepare(raw) for raw in raws]

        loop = asyncio.get_running_loop()
        imap_store = SessionStore.from_runner(
            self.store, loop, prepare=prepare, on_stored=self._stored
        )
        self._imap_stop = asyncio.Event()
        self._imap = loop.create_task(
            run_imap(self.config.imap, imap_store, self.imap_status, self._imap_stop),
            name="imap",
        )

    async def _stop_imap(self) -> None:
        self._imap_stop.set()
        if self._imap is not None:
            # Workers commit their batch and checkpoint, or are cut after a grace period.
            try:
                await asyncio.wait_for(asyncio.shield(self._imap), timeout=SHUTDOWN_SECONDS / 2)
            except Exception:
                log.exception("stopping the IMAP workers failed")
            self._imap = None

    async def reload(self, path: str | None) -> bool:
        """SIGHUP: load the config again; on any error keep running with the old one."""
        self.notifier.reloading()
        try:
            new = load_config(path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready()
            return False
        old, self.config = self.config, new
        for what, before, after in (
            ("smtp.listeners", old.smtp.listeners, new.smtp.listeners),
            ("database", old.database, new.database),
            ("web", old.web, new.web),
            ("smtp TLS on or off", bool(old.smtp.tls_cert), bool(new.smtp.tls_cert)),
        ):
            if before != after:
                log.warning("%s changed: takes effect at the next restart", what)
        self._reload_certificate(new.smtp.tls_cert, new.smtp.tls_key)
        apply_log_level(new)
        if old.imap != new.imap:
            # Accounts added, removed or changed: the workers restart with the new
            # list; each resumes from its committed checkpoint.
            log.info("IMAP accounts changed: restarting the IMAP workers")
            await self._stop_imap()
            self.imap_status = ImapStatus()
            self._start_imap()
        for service in self.services:
            try:
                await service.reload(new)
            except Exception:
                log.exception("reloading %s failed", service.name)
        for hook in self.reload_hooks:
            try:
                hook(new)
            except Exception:
                log.exception("a reload hook failed")
        log.info("config reloaded from %s", new.source)
        self.notifier.ready()
        return True

    def _reload_certificate(self, cert: str, key: str) -> None:
        """Serve the certificate now in `cert` to new STARTTLS sessions (a renewal in place).

        Loaded into the running context, so listeners need no restart. The
        files are copied once and the copies loaded twice, into a scratch
        context first: a chain or key that does not load (a renewal
        half-written) leaves the working certificate in place, never a
        certificate without its key.
        """
        if self._tls is None or not cert:
            return
        try:
            with tempfile.TemporaryDirectory(prefix="bridge-tls-") as scratch:
                chain, secret = Path(scratch, "chain.pem"), Path(scratch, "key.pem")
                chain.write_bytes(Path(cert).read_bytes())
                secret.write_bytes(Path(key).read_bytes())
                tls_context(str(chain), str(secret))
                self._tls.load_cert_chain(chain, secret)
        except (OSError, ssl.SSLError) as exc:
            log.error("smtp.tls_cert %s not reloaded, the current one stays: %s", cert, exc)
            return
        log.info("smtp.tls_cert %s loaded for new sessions", cert)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.start()
        except BaseException:
            # Close what did start (writer thread, listeners) so the process exits.
            await self.stop()
            raise
        self.notifier.ready(status="accepting mail")
        interval = self.notifier.watchdog_interval()
        if interval:
            self._watchdog = asyncio.get_running_loop().create_task(self._pet(interval))
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            self.notifier.stopping()
            if self._watchdog is not None:
                self._watchdog.cancel()
            await self.stop()

    async def _pet(self, interval: float) -> None:
        # Sent from the loop itself: a blocked loop misses it and systemd restarts us.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The STARTTLS context, or `StartupError` naming the file that is missing or bad."""
    for name, path in (("smtp.tls_cert", cert), ("smtp.tls_key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise StartupError(f"{name} {path}", f"cannot read: {exc.strerror}") from exc
    try:
        return tls_context(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(
            f"smtp.tls_cert {cert}, smtp.tls_key {key}",
            f"not a PEM certificate chain and its key ({exc.strerror or exc})",
        ) from exc


def apply_log_level(config: Config, debug: bool = False) -> None:
    if debug:
        return
    logging.getLogger().setLevel(config.log.level.upper())
    # aiosmtpd logs every connection at INFO: a busy listener drowns the rest.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # Alembic says which dialect it uses at every start: nothing to act on.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def run_daemon(args: argparse.Namespace, config: Config) -> int:
    apply_log_level(config, debug=args.debug)
    daemon = Daemon(config, args.db)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task[bool]] = set()

        def on_hup() -> None:
            task = loop.create_task(daemon.reload(args.config))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        await daemon.run(stop)

    asyncio.run(main())
    return 0
