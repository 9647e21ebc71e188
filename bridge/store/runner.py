"""The one async↔sync bridge: store functions run in threads, writes on a single writer.

Like datasette's `execute_fn` / `execute_write_fn`: reads go to a small pool,
every write goes through one thread, so SQLite sees one writer and the event
loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bridge.store.db import writer

T = TypeVar("T")


class StoreRunner:
    def __init__(self, engine: Engine, read_threads: int = 4) -> None:
        self.engine = engine
        self._write_engine = writer(engine)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(
            max_workers=read_threads, thread_name_prefix="store-reader"
        )

    async def read(self, fn: Callable[[Session], T]) -> T:
        """Run `fn(session)` in a reader thread."""

        def call() -> T:
            with Session(self.engine) as session:
                return fn(session)

        return await asyncio.get_running_loop().run_in_executor(self._readers, call)

    async def write(self, fn: Callable[[Session], T]) -> T:
        """Run `fn(session)` on the writer thread, inside one committed transaction."""

        def call() -> T:
            with Session(self._write_engine) as session, session.begin():
                return fn(session)

        return await asyncio.get_running_loop().run_in_executor(self._writer, call)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()
