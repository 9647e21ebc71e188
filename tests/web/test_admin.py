"""Admin pages on a store filled through the real pipeline: quarantine, rules, IMAP, outbox."""

from __future__ import annotations

import dataclasses
import tomllib
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import parse_config
from bridge.core.mail.parse import ParseLimits
from bridge.core.message import Provenance, RawMessage
from bridge.outbound import outbox
from bridge.pipeline import prepare, store_batch
from bridge.store.bookkeeping.imap_state import Checkpoint, save_checkpoint
from bridge.store.tables import Message, Quarantined
from tests.conftest import DATA
from tests.web import auth_helpers
from tests.web.auth_helpers import ADMIN, STAFF, START, MakeSite, Site, base_config

make_site = auth_helpers.make_site  # the fixture

PAGES = [
    "/admin",
    "/admin/quarantine",
    "/admin/quarantine/1",
    "/admin/rules",
    "/admin/imap",
    "/admin/outbox",
]
RULES = """
[[spaces]]
slug = "ops"
name = "Operations"
members = ["partner@outside.org"]

[[rules]]
name = "skip-out-of-office"
skip = true
[rules.match]
subject = "Out of the Office"

[[rules]]
name = "gas"
space = "ops"
[rules.match]
subject = "SoCal"

[[rules]]
name = "never-matches"
space = "ops"
[rules.match]
subject = "zzz-nothing-zzz"
"""


def fill(engine: Engine) -> None:
    """Three real messages through the pipeline under rules, one quarantined for its size."""
    config = parse_config(tomllib.loads(RULES), "test")
    now = datetime(2025, 3, 1, tzinfo=UTC)
    with Session(engine) as s, s.begin():
        items = []
        for name in ("enron-out-of-the-office.eml", "enron-socal-gas.eml"):
            raw = RawMessage(
                (DATA / "rules" / name).read_bytes(), Provenance("file", name, "", name)
            )
            items.append(prepare(raw, rules=config.ruleset))
        xss = (DATA / "xss" / "01-script-tag.eml").read_bytes()
        raw = RawMessage(xss, Provenance("smtp", "127.0.0.1:2525", "", "queue-1"))
        items.append(prepare(raw, limits=ParseLimits(max_bytes=200), rules=config.ruleset))
        store_batch(s, items, now)
        save_checkpoint(s, Checkpoint("sales", "INBOX", 1700000000, 42), now)


async def admin_site(engine: Engine, make_site: MakeSite) -> Site:
    fill(engine)
    config = parse_config(tomllib.loads(RULES), "test")
    site = await make_site(engine, dataclasses.replace(base_config(), rules=config.rules))
    return site


@pytest.mark.parametrize("who", [None, STAFF])
async def test_admin_pages_are_missing_for_everyone_else(
    sqlite_engine: Engine, make_site: MakeSite, who: str | None
) -> None:
    site = await admin_site(sqlite_engine, make_site)
    if who:
        await site.sign_in(who)
    for path in PAGES:
        # Byte for byte the page of a path that does not exist (the language form names it).
        missing = await site.client.get(path + "-missing")
        expected = (await missing.text()).replace(path + "-missing", path)
        response = await site.client.get(path, allow_redirects=False)
        assert response.status == missing.status == 404, path
        assert await response.text() == expected, path
    token = await site.token("/settings" if who else "/login")
    retry = await site.client.post("/admin/quarantine/1/retry", data={"csrf_token": token})
    assert retry.status == 404
    with Session(sqlite_engine) as s:
        assert s.execute(select(Quarantined.released_at)).scalar_one() is None


async def test_overview_counts(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await admin_site(sqlite_engine, make_site)
    await site.sign_in(ADMIN)
    page = await (await site.client.get("/admin")).text()
    assert '<th scope="row">Messages</th><td>1</td>' in page
    assert "In quarantine</a></th><td>1</td>" in page
    assert "Skipped by rules</a></th><td>1</td>" in page
    assert "Open sessions</th><td>1</td>" in page
    # The header links admins to it.
    assert 'href="/admin"' in page


async def test_quarantine_list_detail_and_retry(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await admin_site(sqlite_engine, make_site)
    await site.sign_in(ADMIN)
    listing = await (await site.client.get("/admin/quarantine")).text()
    with Session(sqlite_engine) as s:
        row = s.execute(select(Quarantined)).scalar_one()
    assert f'href="/admin/quarantine/{row.id}"' in listing
    assert row.reason in listing and "smtp 127.0.0.1:2525" in listing
    size = len((DATA / "xss" / "01-script-tag.eml").read_bytes())
    assert f"{size} Bytes" in listing

    detail = await site.client.get(f"/admin/quarantine/{row.id}")
    html = await detail.text()
    assert row.reason in html and "queue-1" in html
    # The raw bytes are shown as text: the script in them is escaped, never markup.
    assert "&lt;script&gt;window.__pwned(&#39;script-1&#39;)&lt;/script&gt;" in html
    assert "<script>window.__pwned" not in html
    assert (await site.client.get("/admin/quarantine/999")).status == 404

    response = await site.client.post(
        f"/admin/quarantine/{row.id}/retry",
        data={"csrf_token": auth_helpers.form_token(html)},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"].startswith(f"/admin/quarantine?retried={row.id}")
    with Session(sqlite_engine) as s:
        assert s.get(Quarantined, row.id).released_at is not None  # type: ignore[union-attr]
        subjects = set(s.execute(select(Message.subject)).scalars())
    assert "script tags" in subjects
    after = await (await site.client.get(response.headers["Location"])).text()
    assert "went through the pipeline again" in after and "Nothing is in quarantine." in after


async def test_rule_hits_and_skips(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await admin_site(sqlite_engine, make_site)
    await site.sign_in(ADMIN)
    page = await (await site.client.get("/admin/rules")).text()
    assert "<tr><td>skip-out-of-office</td><td>1</td><td>1</td>" in page
    assert "<tr><td>gas</td><td>1</td><td>0</td>" in page
    assert "<tr><td>never-matches</td><td>0</td><td>0</td><td></td></tr>" in page


async def test_imap_checkpoints_and_live_status(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await admin_site(sqlite_engine, make_site)
    site.status["imap:sales"] = {"state": "idle", "connected": True, "lag_seconds": 0.4}
    site.status["smtp"] = {"state": "listening"}
    await site.sign_in(ADMIN)
    page = await (await site.client.get("/admin/imap")).text()
    assert "<td>sales</td><td>INBOX</td><td>1700000000</td><td>42</td>" in page
    assert "imap:sales" in page and "state: idle" in page and "lag_seconds: 0.4" in page
    assert page.index("imap:sales") < page.index("<td>smtp</td>")


async def test_outbox_failures_with_their_reason(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await admin_site(sqlite_engine, make_site)
    now = START
    with Session(sqlite_engine) as s, s.begin():
        data = b"From: b@example.com\r\nX-Bridge-Origin: example.com\r\nSubject: x\r\n\r\nhi\r\n"
        outbox.enqueue(s, data, recipients=["gone@example.com"], now=now)
        outbox.enqueue(s, data, recipients=["later@example.com"], now=now)
        (item, _) = outbox.claim(s, now)
        outbox.mark_failed(s, item, "550 5.1.1 <gone@example.com>: user unknown")
    await site.sign_in(ADMIN)
    page = await (await site.client.get("/admin/outbox")).text()
    assert "gone@example.com" in page
    assert "550 5.1.1 &lt;gone@example.com&gt;: user unknown" in page
    assert "Waiting: 1" in page and "Failed: 1" in page
