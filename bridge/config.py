"""The configuration: one typed, frozen object, loaded once from `bridge.toml`.

Unknown keys are errors, and every error names the file, the dotted key and
the bad value. `bridge.toml.example` documents every key with its default;
a test keeps the two in step.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.core.admin_rules.loops import Identity
from bridge.core.admin_rules.rule_config import parse_rules, parse_spaces
from bridge.core.admin_rules.rules import Rule, RuleSet, Space
from bridge.core.mail.parse import ParseLimits
from bridge.errors import ConfigError
from bridge.store.db import DEFAULT_DB_URL


@dataclass(frozen=True, slots=True)
class ImportConfig:
    workers: int = 2
    batch_size: int = 1000


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_bytes: int = 64 * 1024 * 1024
    max_mime_parts: int = 2000
    max_mime_depth: int = 60

    def parse_limits(self) -> ParseLimits:
        """The limits every path parses with: SMTP, LMTP, IMAP, imports, retries, rule tests."""
        return ParseLimits(self.max_message_bytes, self.max_mime_parts, self.max_mime_depth)


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "not a valid port"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def _hour(value: int) -> str | None:
    return None if 0 <= value <= 23 else "expected an hour from 0 to 23"


def _log_level(value: str) -> str | None:
    levels = ("debug", "info", "warning", "error")
    return None if value.lower() in levels else f"expected one of {', '.join(levels)}"


def _check(fn: Callable[[Any], str | None]) -> dict[str, Any]:
    """Field metadata: `fn(value)` returns the problem with a value, or None."""
    return {"check": fn}


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    host: str = "127.0.0.1"
    port: int = field(default=2525, metadata=_check(_port))
    protocol: Literal["smtp", "lmtp"] = "smtp"


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = DEFAULT_DB_URL
    busy_timeout: float = field(default=30.0, metadata=_check(_positive))


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    hostname: str = "localhost"
    domains: tuple[str, ...] = ()
    max_message_bytes: int = field(default=32 * 1024 * 1024, metadata=_check(_positive))
    tls_cert: str = ""
    tls_key: str = ""
    require_tls: bool = False
    smtputf8: bool = True
    idle_timeout: float = field(default=300.0, metadata=_check(_positive))
    session_timeout: float = field(default=1800.0, metadata=_check(_positive))
    max_connections: int = field(default=200, metadata=_check(_positive))
    max_connections_per_client: int = field(default=20, metadata=_check(_positive))
    max_recipients: int = field(default=1000, metadata=_check(_positive))
    max_data_bytes_in_flight: int = field(default=512 * 1024 * 1024, metadata=_check(_positive))
    # A message body over spill_bytes is received into a temporary file in
    # spill_dir ("": beside the SQLite database, else the system temp directory).
    spill_bytes: int = field(default=1024 * 1024, metadata=_check(_positive))
    spill_dir: str = ""
    max_junk_commands: int = field(default=100, metadata=_check(_positive))
    max_errors: int = field(default=20, metadata=_check(_positive))
    batch_size: int = field(default=64, metadata=_check(_positive))
    batch_wait: float = field(default=0.005, metadata=_check(_positive))


def _base_url(value: str) -> str | None:
    ok = not value or (value.startswith(("http://", "https://")) and " " not in value)
    return None if ok else "expected an absolute URL such as https://bridge.example.com"


def _language(value: str) -> str | None:
    return None if value in LANGUAGES else f"expected one of {', '.join(LANGUAGES)}"


def _timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "not a time zone name such as Europe/Paris"
    return None


def _network(value: tuple[str, ...]) -> str | None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not an address or network such as 10.0.0.0/8"
    return None


LANGUAGES = ("en", "fr")
FREQUENCIES = ("off", "daily", "weekly")


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The viewer: where it listens, how people sign in, who administers it."""

    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_check(_port))
    # The address people reach the viewer at, for links in mail (sign-in,
    # digests, feeds). Empty: http://{host}:{port}.
    base_url: str = field(default="", metadata=_check(_base_url))
    # The key that signs cookies and links. Empty: one made on first start
    # and kept in the database (shared by every process using it).
    secret_env: str = ""
    secret_file: str = ""
    session_days: int = field(default=30, metadata=_check(_positive))
    # Secure cookies need https; browsers treat http://localhost as secure.
    cookie_secure: bool = True
    admins: tuple[str, ...] = ()
    # Single sign-on: a reverse proxy at one of `trusted_proxies` sets
    # `sso_header` to the signed-in address. Empty header: no SSO.
    sso_header: str = ""
    trusted_proxies: tuple[str, ...] = field(default=(), metadata=_check(_network))
    default_language: str = field(default="en", metadata=_check(_language))
    default_timezone: str = field(default="UTC", metadata=_check(_timezone))
    login_per_address_per_hour: int = field(default=5, metadata=_check(_positive))
    login_per_client_per_hour: int = field(default=20, metadata=_check(_positive))
    # Megabytes of rendered pages kept per process for their readers; 0: none.
    page_cache_mb: int = field(default=64, metadata=_check(_not_negative))
    # Replies and new discussions written in the viewer: how many a person
    # may send a minute, the most text one may hold (UTF-8 bytes), and the
    # most its attached files may weigh together.
    replies_per_minute: int = field(default=5, metadata=_check(_positive))
    max_reply_bytes: int = field(default=100_000, metadata=_check(_positive))
    max_upload_bytes: int = field(default=10 * 1024 * 1024, metadata=_check(_not_negative))

    @property
    def public_url(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")


def _reply_days(value: int) -> str | None:
    return None if 0 <= value <= 3650 else "must be between 0 and 3650"


@dataclass(frozen=True, slots=True)
class DigestConfig:
    """Digests by email: when they go out and what a person gets by default."""

    # The frequency of people in no space that sets one: off, daily or weekly.
    default_frequency: Literal["off", "daily", "weekly"] = "weekly"
    # Local hour (0-23, in the person's time zone) a digest goes out at.
    send_hour: int = field(default=7, metadata=_check(_hour))
    # Day weekly digests go out on.
    weekly_day: Literal[
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"
    ] = "monday"
    # How many threads of each kind a digest lists at most.
    max_threads: int = field(default=25, metadata=_check(_positive))
    # Days a digest's "reply by email" address stays valid (0: no reply links).
    reply_days: int = field(default=30, metadata=_check(_reply_days))


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = field(default="info", metadata=_check(_log_level))


IMAP_MAX_IDLE = 29 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes


def _idle_timeout(value: int) -> str | None:
    return None if 0 < value <= IMAP_MAX_IDLE else f"must be between 1 and {IMAP_MAX_IDLE}"


def _no_inline_password(value: str) -> str | None:
    # A config file is copied, backed up and pasted into tickets: secrets stay out of it.
    return "inline passwords are refused: use password_env or password_file" if value else None


@dataclass(frozen=True, slots=True)
class ImapAccount:
    """One IMAP mailbox Bridge reads; the password comes from the environment or a file."""

    name: str = ""
    host: str = ""
    port: int = field(default=0, metadata=_check(_port))  # 0: 993 for tls, 143 otherwise
    tls: Literal["tls", "starttls", "plain"] = "tls"
    ca_file: str = ""
    username: str = ""
    password: str = field(default="", metadata=_check(_no_inline_password))
    password_env: str = ""
    password_file: str = ""
    folders: tuple[str, ...] = ("INBOX",)
    after_action: Literal["none", "seen", "move"] = "none"
    move_to: str = ""
    batch_size: int = field(default=200, metadata=_check(_positive))
    idle: bool = True
    idle_timeout: int = field(default=600, metadata=_check(_idle_timeout))
    poll_interval: float = field(default=60.0, metadata=_check(_positive))
    connect_timeout: float = field(default=30.0, metadata=_check(_positive))
    read_timeout: float = field(default=120.0, metadata=_check(_positive))
    # The people every copy read from this account was delivered to (its
    # envelope_to): a personal mailbox lists its owner, a shared one nobody.
    owners: tuple[str, ...] = ()

    @property
    def server_port(self) -> int:
        return self.port or (993 if self.tls == "tls" else 143)


@dataclass(frozen=True, slots=True)
class ImapConfig:
    backoff_max: float = field(default=300.0, metadata=_check(_positive))
    # A refused login waits login_backoff, doubling up to login_backoff_max.
    login_backoff: float = field(default=300.0, metadata=_check(_positive))
    login_backoff_max: float = field(default=3600.0, metadata=_check(_positive))
    accounts: tuple[ImapAccount, ...] = ()


def _domain(value: str) -> str | None:
    ok = not value or ("." in value and "@" not in value and " " not in value)
    return None if ok else "expected a domain name such as bridge.example.com"


def _address(value: str) -> str | None:
    ok = not value or ("@" in value and " " not in value)
    return None if ok else "expected an address such as bridge@example.com"


def owner_problem(address: str) -> str | None:
    """What is wrong with `address` as the owner of a mailbox, or None.

    Owners are recorded as the people a copy was delivered to, so they must
    be plain lower-case addresses, the way the store keeps people.
    """
    local, at, domain = address.partition("@")
    if not at or not local or not domain or any(c.isspace() for c in address):
        return "expected an address such as alice@example.com"
    if address != address.lower():
        return f"expected a lower-case address ({address.lower()!r})"
    return None


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """Who the bridge is when it sends mail: its own mail is recognised and never bridged."""

    message_id_domain: str = field(default="", metadata=_check(_domain))
    address: str = field(default="", metadata=_check(_address))
    # The company's mail domains: their people are staff, who read the
    # spaces open to all staff and may sign in. Empty: smtp.domains.
    staff_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """The relay Bridge sends its mail through (digests, sign-in links, replies)."""

    host: str = ""  # empty: mail waits in the outbox, unsent
    port: int = field(default=0, metadata=_check(_port))  # 0: 465 tls, 587 starttls, 25 none
    tls: Literal["none", "starttls", "tls"] = "starttls"
    ca_file: str = ""
    username: str = ""
    password: str = field(default="", metadata=_check(_no_inline_password))
    password_env: str = ""
    password_file: str = ""
    from_address: str = field(default="", metadata=_check(_address))
    # Whose name is on mail people write in the viewer: "bridge" sends it
    # From "Name via Bridge" <the bridge's address> with Reply-To the person
    # (safe with SPF, DKIM and DMARC); "person" sends it From the person,
    # which the relay must allow.
    send_as: Literal["bridge", "person"] = "bridge"
    connect_timeout: float = field(default=30.0, metadata=_check(_positive))
    timeout: float = field(default=120.0, metadata=_check(_positive))
    batch_size: int = field(default=50, metadata=_check(_positive))
    poll_interval: float = field(default=30.0, metadata=_check(_positive))

    @property
    def server_port(self) -> int:
        return self.port or {"tls": 465, "starttls": 587, "none": 25}[self.tls]


@dataclass(frozen=True, slots=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    imports: ImportConfig = field(default_factory=ImportConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    # [[spaces]] and [[rules]]: arrays of tables, built by bridge.core.admin_rules.rule_config.
    spaces: tuple[Space, ...] = ()
    rules: tuple[Rule, ...] = ()
    source: str = "(defaults)"

    @property
    def ruleset(self) -> RuleSet:
        """What `bridge.core.admin_rules.rules.decide` needs: the rules and the bridge's
        identity."""
        identity = Identity(self.bridge.message_id_domain, self.bridge.address)
        return RuleSet(self.rules, identity)

    @property
    def mail_sender(self) -> tuple[str, str]:
        """(the bridge's From address, its Message-ID domain), with fallbacks from the web URL."""
        host = urlsplit(self.web.public_url).hostname or "localhost"
        address = self.outbound.from_address or self.bridge.address or f"bridge@{host}"
        domain = self.bridge.message_id_domain or address.rpartition("@")[2] or host
        return address, domain

    @property
    def staff_domains(self) -> tuple[str, ...]:
        """The domains whose people are staff (bridge.staff_domains, else smtp.domains)."""
        if self.bridge.staff_domains:
            return self.bridge.staff_domains
        return tuple(d.rpartition("@")[2] for d in self.smtp.domains if d)


SECTIONS: dict[str, type] = {
    "database": DatabaseConfig,
    "import": ImportConfig,
    "limits": LimitsConfig,
    "smtp": SmtpConfig,
    "web": WebConfig,
    "log": LogConfig,
    "imap": ImapConfig,
    "bridge": BridgeConfig,
    "outbound": OutboundConfig,
    "digest": DigestConfig,
}
# Arrays of tables with their own builders (regexes compiled once, cross-checked).
LIST_SECTIONS = ("spaces", "rules")
ATTRIBUTE = {"import": "imports"}


def read_secret(env: str, file: str) -> str:
    """A password from an environment variable or a file (never inline in the config).

    Read when needed, not at load time, so a rotated password needs no restart.
    """
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"${env}", "", "environment variable not set")
        return value
    try:
        return Path(file).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read password: {exc}") from None


def load_config(path: str | None) -> Config:
    """The config in `path`, or the defaults when `path` is None."""
    if path is None:
        return Config()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except OSError as exc:  # a folder, no permission
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: str) -> Config:
    values: dict[str, Any] = {"source": path}
    hints = get_type_hints(Config)
    for key, section in data.items():
        if key in LIST_SECTIONS:
            continue
        if key not in SECTIONS:
            raise ConfigError(path, key, "unknown section")
        if isinstance(SECTIONS[key], type) and not isinstance(section, dict):
            raise ConfigError(path, key, "must be a table")
        attribute = ATTRIBUTE.get(key, key)
        values[attribute] = _convert(hints[attribute], section, key, path)
    values["spaces"] = parse_spaces(data.get("spaces", []), path)
    values["rules"] = parse_rules(data.get("rules", []), values["spaces"], path)
    config = Config(**values)
    _validate(config, path)
    _validate_imap(config.imap, path)
    _validate_outbound(config.outbound, path)
    return config


def _convert(hint: Any, value: Any, key: str, path: str) -> Any:
    """`value` from TOML as the type `hint` names; nested by the schema, not the data."""
    origin = get_origin(hint)
    if is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(path, key, f"has value {value!r}: expected a table")
        return _build(hint, value, key, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(path, key, f"has value {value!r}: expected a list")
        item = get_args(hint)[0]
        return tuple(_convert(item, v, f"{key}[{i}]", path) for i, v in enumerate(value))
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            expected = ", ".join(repr(c) for c in choices)
            raise ConfigError(path, key, f"has value {value!r}: expected one of {expected}")
        return value
    if origin in (Union, types.UnionType):  # `X | None`: TOML has no null, so a value is an X
        (inner,) = [a for a in get_args(hint) if a is not type(None)]
        return _convert(inner, value, key, path)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and (
        isinstance(value, bool) != (hint is bool) or not isinstance(value, hint)
    ):
        raise ConfigError(path, key, f"has value {value!r}: expected {hint.__name__}")
    return value


def _build(cls: Any, data: dict[str, Any], prefix: str, path: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(path, f"{prefix}.{key}", "unknown key")
        dotted = f"{prefix}.{key}"
        converted = _convert(hints[key], value, dotted, path)
        check = known[key].metadata.get("check")
        problem = check(converted) if check else None
        if problem:
            raise ConfigError(path, dotted, f"has value {value!r}: {problem}")
        kwargs[key] = converted
    return cls(**kwargs)


def _validate(config: Config, path: str) -> None:
    """Checks that span keys: the daemon refuses to start on any of these."""
    smtp = config.smtp
    if not smtp.domains and not all(_loopback(lst.host) for lst in smtp.listeners):
        # An SMTP listener reachable from the network must not accept mail for anyone.
        raise ConfigError(
            path,
            "smtp.domains",
            "must list the accepted domains or addresses when a listener is not on loopback",
        )
    if bool(smtp.tls_cert) != bool(smtp.tls_key):
        raise ConfigError(path, "smtp.tls_cert", "tls_cert and tls_key go together")
    for key in ("tls_cert", "tls_key"):
        name = getattr(smtp, key)
        if name and not Path(name).is_file():
            raise ConfigError(path, f"smtp.{key}", f"has value {name!r}: no such file")
    if smtp.require_tls and not smtp.tls_cert:
        raise ConfigError(path, "smtp.require_tls", "needs smtp.tls_cert and smtp.tls_key")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_imap(imap: ImapConfig, path: str) -> None:
    """IMAP account checks that span keys: names, credentials, TLS, after-action, owners."""
    seen: set[str] = set()
    for i, account in enumerate(imap.accounts):
        key = f"imap.accounts[{i}]"
        for required in ("name", "host", "username"):
            if not getattr(account, required):
                raise ConfigError(path, f"{key}.{required}", "is required")
        if not account.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            # The name is part of every delivery key and checkpoint: keep it plain.
            raise ConfigError(path, f"{key}.name", f"has value {account.name!r}: use a-z, 0-9, -_.")
        if account.name in seen:
            raise ConfigError(path, f"{key}.name", f"has value {account.name!r}: used twice")
        seen.add(account.name)
        if bool(account.password_env) == bool(account.password_file):
            raise ConfigError(path, f"{key}.password_env", "set one of password_env, password_file")
        if account.tls == "plain" and not _loopback(account.host):
            raise ConfigError(path, f"{key}.tls", "plain (no TLS) is only allowed on loopback")
        if not account.folders:
            raise ConfigError(path, f"{key}.folders", "must name at least one folder")
        for owner in account.owners:
            problem = owner_problem(owner)
            if problem:
                where = f"has value {owner!r} (account {account.name!r})"
                raise ConfigError(path, f"{key}.owners", f"{where}: {problem}")
        if account.after_action == "move":
            if not account.move_to:
                raise ConfigError(path, f"{key}.move_to", "is required when after_action is move")
            if account.move_to in account.folders:
                raise ConfigError(path, f"{key}.move_to", "must not be one of the folders read")


def _validate_outbound(outbound: OutboundConfig, path: str) -> None:
    """The relay's credentials come as a pair: a username and where its password is."""
    if outbound.username and bool(outbound.password_env) == bool(outbound.password_file):
        raise ConfigError(path, "outbound.password_env", "set one of password_env, password_file")
    if not outbound.username and (outbound.password_env or outbound.password_file):
        raise ConfigError(path, "outbound.username", "is required with a password")
    if outbound.ca_file and not Path(outbound.ca_file).is_file():
        raise ConfigError(path, "outbound.ca_file", f"has value {outbound.ca_file!r}: no such file")
