"""Debian's Chromium driven by Playwright, for the viewer and the HTML digest.

Playwright never downloads a browser here: it launches /usr/bin/chromium
(installed by .ci/run). The flags keep Chromium from reaching for the
network on its own, so any request a page makes is one the page asked for.
Screenshots go to test-artifacts/ (kept by CI as artifacts, ignored by git).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = os.environ.get("BRIDGE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def artifact(name: str) -> Path:
    """Where a test keeps a file worth looking at (a screenshot)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium, closed after the test."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()
