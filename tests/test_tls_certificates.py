"""STARTTLS with certificates as a company has them: a private CA, an intermediate, a chain.

A root CA signs an intermediate, which signs the server certificate for
`localhost` and 127.0.0.1; the daemon is given the chain file (certificate
then intermediate, as Let's Encrypt's fullchain.pem) and its key. Clients
trust the root only, and check the host name: Python's ssl, and OpenSSL's
own `s_client`. Outbound, Bridge checks the relay's chain against
`[outbound] ca_file` and never sends to a relay it cannot verify. A
certificate renewed in place is served after SIGHUP, without a restart.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine

from bridge.config import OutboundConfig, parse_config
from bridge.daemon import Daemon
from bridge.outbound.mailer import Mailer
from bridge.store.runner import StoreRunner
from tests.outbound.test_outbox import outgoing, put, rows
from tests.smtp_support import Relay, free_port, fresh_copy, real_message


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    """A private CA: root, intermediate, and what a server is given."""

    folder: Path
    root: Path
    chain: Path  # server certificate, then the intermediate
    key: Path

    def issue(self, organisation: str) -> None:
        """A new server certificate and key, written over `chain` and `key` (a renewal)."""
        d = self.folder
        openssl("genrsa", "-out", "server.key", "2048", cwd=d)
        subj = f"/O={organisation}/CN=localhost"
        openssl("req", "-new", "-key", "server.key", "-subj", subj, "-out", "server.csr", cwd=d)
        (d / "server.ext").write_text(
            "basicConstraints = CA:FALSE\n"
            "keyUsage = digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n",
            encoding="ascii",
        )
        openssl(
            *("x509", "-req", "-in", "server.csr", "-CA", "inter.pem", "-CAkey", "inter.key"),
            *("-CAcreateserial", "-days", "30", "-sha256", "-extfile", "server.ext"),
            *("-out", "server.pem"),
            cwd=d,
        )
        chain = (d / "server.pem").read_bytes() + (d / "inter.pem").read_bytes()
        self.chain.write_bytes(chain)
        self.key.write_bytes((d / "server.key").read_bytes())


def make_pki(folder: Path, name: str) -> Pki:
    folder.mkdir()
    (folder / "ca.ext").write_text(
        "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n",
        encoding="ascii",
    )
    openssl("genrsa", "-out", "root.key", "2048", cwd=folder)
    openssl(
        *("req", "-x509", "-new", "-key", "root.key", "-days", "30", "-sha256"),
        *("-subj", f"/O={name}/CN={name} Root CA", "-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "root.pem"),
        cwd=folder,
    )
    openssl("genrsa", "-out", "inter.key", "2048", cwd=folder)
    openssl(
        *("req", "-new", "-key", "inter.key", "-subj", f"/O={name}/CN={name} Issuing CA"),
        *("-out", "inter.csr"),
        cwd=folder,
    )
    openssl(
        *("x509", "-req", "-in", "inter.csr", "-CA", "root.pem", "-CAkey", "root.key"),
        *("-CAcreateserial", "-days", "30", "-sha256", "-extfile", "ca.ext", "-out", "inter.pem"),
        cwd=folder,
    )
    pki = Pki(folder, folder / "root.pem", folder / "fullchain.pem", folder / "privkey.pem")
    pki.issue(f"{name} first")
    return pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", "Corp")


def organisation(peer: dict[str, Any]) -> str:
    subject = dict(pair[0] for pair in peer["subject"])
    return str(subject["organizationName"])


def send_verified(port: int, root: Path, data: bytes) -> str:
    """Send over STARTTLS to `localhost`, trusting only `root`; the server's organisation."""
    context = ssl.create_default_context(cafile=str(root))
    with smtplib.SMTP("localhost", port, timeout=10) as client:
        client.starttls(context=context)
        peer = client.sock.getpeercert()  # type: ignore[union-attr]
        client.sendmail("sender@enron.com", ["alice@example.com"], data)
    return organisation(peer)


def s_client(port: int, root: Path) -> subprocess.CompletedProcess[str]:
    """OpenSSL's own client: STARTTLS, full chain and host name verification."""
    return subprocess.run(
        [
            *("openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}"),
            *("-CAfile", str(root), "-verify_return_error", "-verify_hostname", "localhost"),
            "-showcerts",
        ],
        input="QUIT\r\n",
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
async def daemon(tmp_path: Path, pki: Pki) -> AsyncIterator[Daemon]:
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/bridge.db"\n'
        f'[smtp]\ndomains = ["example.com"]\nlisteners = [{{ port = 0 }}]\n'
        f'tls_cert = "{pki.chain}"\ntls_key = "{pki.key}"\nrequire_tls = true\n'
        "[web]\nport = 0\n",
        encoding="utf-8",
    )
    from bridge.config import load_config

    running = Daemon(load_config(str(config)))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def smtp_port(daemon: Daemon) -> int:
    return next(b.port for b in daemon.smtp_bound if b.protocol == "smtp")


async def test_a_chain_from_a_private_ca_verifies_for_python_and_openssl(
    daemon: Daemon, pki: Pki
) -> None:
    data, _ = fresh_copy(real_message(0), "tls-chain")
    assert await asyncio.to_thread(send_verified, smtp_port(daemon), pki.root, data) == "Corp first"
    checked = await asyncio.to_thread(s_client, smtp_port(daemon), pki.root)
    assert checked.returncode == 0, checked.stderr
    assert "Verify return code: 0 (ok)" in checked.stdout
    # The server sent its certificate and the intermediate; the client had the root only.
    assert "1 s:O = Corp, CN = Corp Issuing CA" in checked.stdout


async def test_a_client_trusting_another_ca_is_refused_the_handshake(
    daemon: Daemon, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path / "other", "Stranger")
    data, _ = fresh_copy(real_message(0), "tls-stranger")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(send_verified, smtp_port(daemon), stranger.root, data)
    checked = await asyncio.to_thread(s_client, smtp_port(daemon), stranger.root)
    assert checked.returncode != 0


async def test_a_certificate_renewed_in_place_is_served_after_sighup(
    daemon: Daemon, pki: Pki, tmp_path: Path
) -> None:
    port = smtp_port(daemon)
    first, _ = fresh_copy(real_message(0), "before-renewal")
    assert await asyncio.to_thread(send_verified, port, pki.root, first) == "Corp first"
    pki.issue("Corp renewed")  # certbot and friends write the same paths
    assert await daemon.reload(str(tmp_path / "bridge.toml")) is True
    second, _ = fresh_copy(real_message(1), "after-renewal")
    assert await asyncio.to_thread(send_verified, port, pki.root, second) == "Corp renewed"


async def test_a_broken_renewal_keeps_the_working_certificate(
    daemon: Daemon, pki: Pki, tmp_path: Path
) -> None:
    port = smtp_port(daemon)
    pki.key.write_text("not a key\n", encoding="ascii")  # half-written by a renewal job
    assert await daemon.reload(str(tmp_path / "bridge.toml")) is True
    data, _ = fresh_copy(real_message(0), "broken-renewal")
    assert await asyncio.to_thread(send_verified, port, pki.root, data) == "Corp first"


# -- outbound: the relay's certificate -------------------------------------------------


@pytest.fixture
def tls_relay(pki: Pki) -> Iterator[tuple[Relay, int]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.chain, pki.key)
    handler = Relay()
    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def relay_config(port: int, host: str, ca_file: Path) -> OutboundConfig:
    return OutboundConfig(
        host=host,
        port=port,
        tls="starttls",
        ca_file=str(ca_file),
        timeout=10,
        connect_timeout=10,
    )


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_mail_goes_to_a_relay_whose_chain_verifies(
    engine: Engine, pki: Pki, tls_relay: tuple[Relay, int], host: str
) -> None:
    relay, port = tls_relay
    data, message_id = outgoing(f"tls-out-{host}")
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    put(engine, data, now=now)
    store = StoreRunner(engine)
    try:
        mailer = Mailer(store, relay_config(port, host, pki.root), "b@x.example")
        counts = await mailer.send_due(now)
    finally:
        store.close()
    assert counts.sent == 1
    assert [message_id.encode() in r for r in relay.received] == [True]


async def test_a_relay_that_cannot_be_verified_gets_nothing(
    engine: Engine, pki: Pki, tls_relay: tuple[Relay, int], tmp_path: Path
) -> None:
    relay, port = tls_relay
    stranger = make_pki(tmp_path / "other", "Stranger")
    data, _ = outgoing("tls-out-unverified")
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    [pk] = put(engine, data, now=now)
    store = StoreRunner(engine)
    try:
        mailer = Mailer(store, relay_config(port, "localhost", stranger.root), "b@x.example")
        counts = await mailer.send_due(now)
    finally:
        store.close()
    assert counts.sent == 0 and counts.retried == 1
    assert relay.attempts == []
    status, attempts, reason = rows(engine)[pk]
    assert (status, attempts) == ("pending", 1)
    assert "certificate verify failed" in reason


def test_the_config_names_an_unreadable_ca_file(tmp_path: Path) -> None:
    from bridge.errors import ConfigError

    data = {
        "outbound": {
            "host": "relay.example.com",
            "ca_file": str(tmp_path / "missing.pem"),
        }
    }
    with pytest.raises(ConfigError, match="ca_file"):
        parse_config(data, "bridge.toml")
