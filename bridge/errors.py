"""Every exception Bridge raises on purpose, in one place.

Each docstring says who raises it and when. The edges translate them: the CLI
prints one line and exits non-zero, the importer quarantines the message and
goes on.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class: an error Bridge expects and can explain in one line.

    `exit_code` is what the CLI exits with: 1, or 2 for a bad command line.
    """

    exit_code = 1


class ParseError(BridgeError):
    """Raised by `core.parse.parse_message` when bytes cannot become a message.

    `reason` is a short stable slug used to count quarantined messages
    ("empty", "not-a-message", "too-large", "too-deep", "too-many-parts",
    "header-too-long", ...); `detail` is for people.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class StageError(BridgeError):
    """Raised by `pipeline` when a stage other than parsing fails on a message.

    Carries the stage name so quarantine records say where it failed.
    """

    def __init__(self, stage: str, message_id: str | None, cause: BaseException) -> None:
        self.stage = stage
        self.reason = f"{stage}-failed"
        self.detail = f"{type(cause).__name__}: {cause}"
        super().__init__(f"<{message_id or '?'}> {stage} failed: {self.detail}")


class ConfigError(BridgeError):
    """Raised by `config.load_config` for a bad config file.

    The message names the file, the dotted key and the problem; the CLI exits 2.
    """

    exit_code = 2

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")


class NotFoundError(BridgeError):
    """Raised by store lookups (CLI `raw`, `thread`, `quarantine show`) for an unknown id."""

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"no {kind} {ident!r}")


class SchemaTooNew(BridgeError):
    """The database was written by a newer version of Bridge than the one running."""

    exit_code = 2

    def __init__(self, url: str, revision: str) -> None:
        super().__init__(
            f"{url}: the database schema is at revision {revision}, newer than this "
            "version of Bridge knows; run the newer version (or restore a backup)"
        )


class DatabaseMissing(BridgeError):
    """Raised by `store.db.make_engine(create=False)` and `cli.open_engine` when a command
    that only reads (search, thread, export, raw, login-link, ...) is given a database
    that does not exist, or holds no Bridge schema: it says so instead of creating one.

    `where` is the URL as shown to people (no password), with the file's path for SQLite.
    """

    exit_code = 2

    def __init__(self, where: str, problem: str = "no such database") -> None:
        self.where = where
        super().__init__(
            f"{where}: {problem}; `bridge run`, `bridge import` or `bridge db upgrade` "
            "creates it (or give --config, BRIDGE_CONFIG or --db for another)"
        )


class DatabaseUnusable(BridgeError):
    """Raised by `store.db.make_engine` when a SQLite database cannot be created or opened
    where the URL says (its folder cannot be made, the path is a folder, no permission).

    The CLI exits 2, as for a bad config: retrying will not help.
    """

    exit_code = 2

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        super().__init__(f"{where}: {problem}")


class StartupError(BridgeError):
    """Raised by `daemon.Daemon.start` when `bridge run` cannot start as configured: a
    listener's address is in use or not allowed, the TLS certificate or key is missing
    or unreadable. `what` names the part (`SMTP listener 127.0.0.1:2525`, `smtp.tls_cert
    /etc/...`); the CLI prints one line and exits 2, as for a bad config.
    """

    exit_code = 2

    def __init__(self, what: str, problem: str) -> None:
        self.what = what
        self.problem = problem
        super().__init__(f"{what}: {problem}")

    @classmethod
    def listener(cls, kind: str, host: str, port: int, key: str, exc: OSError) -> StartupError:
        """A listener (`kind` SMTP, LMTP or web) that could not bind `host:port`."""
        import errno
        import socket

        if isinstance(exc, socket.gaierror):
            problem = f"unknown host {host!r} ({exc.strerror})"
        elif exc.errno == errno.EADDRINUSE:
            problem = "address already in use (another process holds the port)"
        elif exc.errno == errno.EACCES:
            problem = "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            problem = "no such address on this machine"
        else:
            problem = exc.strerror or str(exc)
        return cls(f"cannot listen for {kind} on {host}:{port} ({key})", problem)


class OutputError(BridgeError):
    """Raised by the CLI commands that write a file (`export -o`, `raw -o`, `digest preview
    --html`) when it cannot be opened for writing."""

    def __init__(self, path: str, exc: OSError) -> None:
        self.path = path
        super().__init__(f"{path}: cannot write: {exc.strerror or exc}")


class StoreUnavailable(BridgeError):
    """The database stayed busy or away through every retry of a write."""

    def __init__(self, reason: str, tries: int) -> None:
        super().__init__(
            f"the database did not take the write after {tries} tries ({reason}); "
            "run the same command again to resume"
        )


class ImportSourceError(BridgeError):
    """Raised by `ingest.files` for a path that is not a mail archive it can read."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


class OwnersFileError(BridgeError):
    """Raised by `ingest.owners.load_owners` for a `bridge import --owners` file it cannot use.

    The message names the file, the key (a mailbox) and the problem; the CLI
    exits 2, as for any bad argument.
    """

    exit_code = 2

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")


class RulesArgumentError(BridgeError):
    """Raised by `rules_cli.cmd_rules` for a bad `--since` date or an unreadable message file."""


class AddressError(BridgeError):
    """Raised by `outbound.compose.compose` for an address that does not parse.

    Digest runs record `problem` as the reason a person got no mail.
    """

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        self.problem = problem
        super().__init__(f"address {address!r}: {problem}")


class DigestArgumentError(BridgeError):
    """Raised by `digest_cli.cmd_digest` for missing or bad arguments (`preview` without `--to`)."""
