"""`bridge run`: the composition root. Builds the store, the listeners and the web app.

One asyncio process: the SMTP listener and the web server share the loop;
the store is reached through `StoreRunner` (one writer thread).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from datetime import UTC, datetime

from aiohttp import web
from aiosmtpd.controller import Controller
from sqlalchemy import text

from bridge import pipeline
from bridge.config import Config
from bridge.core.message import RawMessage
from bridge.ingest.smtp import BridgeHandler
from bridge.store.blobs import Compressor, current_dictionary
from bridge.store.db import make_engine
from bridge.store.migrate import is_current, upgrade
from bridge.store.runner import StoreRunner

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, config: Config, db_url: str | None = None) -> None:
        self.config = config
        # FULL: a commit is on disk before SMTP answers 250.
        engine = make_engine(db_url or config.database.url, synchronous="FULL")
        if not is_current(engine):
            upgrade(engine)
        self.store = StoreRunner(engine)
        with engine.connect() as conn:
            self.compressor = Compressor(current_dictionary(conn))

    async def deliver(self, raw: RawMessage) -> pipeline.Outcome:
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(None, pipeline.prepare, raw, self.compressor)
        now = datetime.now(UTC)
        outcomes = await self.store.write(lambda s: pipeline.store_batch(s, [prepared], now))
        return outcomes[0]

    def web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.store.read(lambda s: s.execute(text("SELECT 1")).scalar())
        except Exception as exc:
            return web.json_response({"status": "error", "database": str(exc)}, status=503)
        return web.json_response({"status": "ok", "database": "ok"})

    async def run(self, stop: asyncio.Event) -> None:
        smtp = self.config.smtp
        handler = BridgeHandler(self.deliver, smtp.domains, f"smtp://{smtp.host}:{smtp.port}")
        controller = Controller(
            handler,
            hostname=smtp.host,
            port=smtp.port,
            data_size_limit=self.config.limits.max_message_bytes,
        )
        controller.start()
        runner = web.AppRunner(self.web_app())
        await runner.setup()
        site = web.TCPSite(runner, self.config.web.host, self.config.web.port)
        await site.start()
        log.warning(
            "bridge running: SMTP on %s:%d, web on http://%s:%d/",
            smtp.host,
            smtp.port,
            self.config.web.host,
            self.config.web.port,
        )
        try:
            await stop.wait()
        finally:
            controller.stop()
            await runner.cleanup()
            self.store.close()


def run_daemon(args: argparse.Namespace, config: Config) -> int:
    daemon = Daemon(config, args.db)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await daemon.run(stop)

    asyncio.run(main())
    return 0
