"""Who imported copies were delivered to: `bridge import --owner` and `--owners FILE`.

An archive carries no envelope, so nobody holds its mail until the import
names the owners. `--owner ADDRESS` owns every copy imported; an owners
file maps the mailbox each copy is in (`sources.discover` derives it: for
`bridge import maildir` it is `allen-p/inbox`) to addresses:

    allen-p = "phillip.allen@enron.com"          # every folder under allen-p/
    "lay-k/sent" = ["kenneth.lay@enron.com", "rosalee.fleming@enron.com"]
    announcements = []                           # nobody, on purpose

A key names a mailbox or a folder above it; the longest matching key wins.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bridge.config import owner_problem
from bridge.errors import OwnersFileError


@dataclass(frozen=True, slots=True)
class Owners:
    """The owners of imported copies: `everyone` owns them all, `by_mailbox` by mailbox.

    `mapped` is true when an owners file was given, so mailboxes it leaves
    out are worth a warning.
    """

    everyone: tuple[str, ...] = ()
    by_mailbox: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    mapped: bool = False

    def __bool__(self) -> bool:
        return bool(self.everyone or self.mapped)

    def entry(self, mailbox: str) -> tuple[str, ...] | None:
        """The owners the file gives `mailbox` (its longest matching key), or None."""
        name = mailbox.strip("/")
        while name:
            found = self.by_mailbox.get(name)
            if found is not None:
                return found
            name = name.rpartition("/")[0]
        return None

    def of(self, mailbox: str) -> tuple[str, ...]:
        """The addresses a copy in `mailbox` was delivered to, each once."""
        return tuple(dict.fromkeys((*self.everyone, *(self.entry(mailbox) or ()))))

    def unowned(self, mailboxes: Iterable[str]) -> list[str]:
        """What to warn about: the mailboxes with no owner that the file has no entry for.

        Named by their top folder (`donoho-l` for `donoho-l/inbox`), the key
        that would map them, unless the file already has keys under it.
        """
        if not self.mapped:
            return []
        out: set[str] = set()
        for mailbox in mailboxes:
            if self.entry(mailbox) is not None or self.of(mailbox):
                continue
            top = mailbox.strip("/").partition("/")[0]
            under = any(key.startswith(f"{top}/") for key in self.by_mailbox)
            out.add(mailbox if under else top)
        return sorted(out)


def load_owners(path: str) -> dict[str, tuple[str, ...]]:
    """The mailbox → owners table of an `--owners` file; raises OwnersFileError."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise OwnersFileError(path, "", f"cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OwnersFileError(path, "", f"not valid TOML: {exc}") from None
    table: dict[str, tuple[str, ...]] = {}
    for key, value in data.items():
        addresses = [value] if isinstance(value, str) else value
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            problem = f"has value {value!r}: expected an address or a list of addresses"
            raise OwnersFileError(path, key, problem)
        for address in addresses:
            wrong = owner_problem(address)
            if wrong:
                raise OwnersFileError(path, key, f"has value {address!r}: {wrong}")
        name = key.strip("/")
        if not name:
            raise OwnersFileError(path, repr(key), "is not a mailbox name")
        table[name] = tuple(dict.fromkeys(addresses))
    return table
