"""Threading: which member of a thread each message replies to.

Order of evidence (DESIGN.md "Threading", after JWZ and public-inbox
SearchThread.pm): References / In-Reply-To, then the Outlook Thread-Index,
then the guarded subject + quote fallback of `thread_fallback`. Every
function here is a deterministic function of the SET of members (ties go to
the earlier date, then the smaller id), so arrival order never changes a
thread. Nothing recurses: a 2,000-deep chain is walked with loops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.core.linking.thread_fallback import reply_link

__all__ = [
    "ThreadMember",
    "build_tree",
    "fallback_key",
    "header_parent",
    "reply_link",
    "thread_index_keys",
    "thread_order",
]

_CONVERSATION_LEN = 22  # Thread-Index: 6 bytes of time + a 16-byte GUID
_CHILD_BLOCK_LEN = 5  # each reply appends 5 bytes
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)

# Kinds of parent link, strongest first: when a loop must be cut, the
# weakest link in it goes.
_HEADER, _INDEX, _FALLBACK = 3, 2, 1


@dataclass(frozen=True, slots=True)
class ThreadMember:
    """What threading needs to know about one stored message."""

    message_id: str
    aliases: tuple[str, ...]
    references: tuple[str, ...]
    in_reply_to: tuple[str, ...]
    thread_index: bytes | None
    date: datetime | None
    subject_norm: str
    is_reply: bool
    sender: str
    participants: frozenset[str]
    new_text: str
    quoted_text: str
    sent_local: datetime | None = None


def _sort_key(member: ThreadMember) -> tuple[datetime, str]:
    # Undated messages sort last; the id breaks every remaining tie.
    return (member.date or _FAR_FUTURE, member.message_id)


def _own_ids(member: ThreadMember) -> set[str]:
    return {member.message_id, *member.aliases}


def _named_ids(member: ThreadMember) -> list[str]:
    """References then In-Reply-To ids, without repeats or the message's own ids."""
    own = _own_ids(member)
    named: list[str] = []
    for ident in (*member.references, *member.in_reply_to):
        if ident and ident not in own and ident not in named:
            named.append(ident)
    return named


def header_parent(member: ThreadMember) -> str | None:
    """The id the headers name as parent: last valid References id, else In-Reply-To."""
    own = _own_ids(member)
    for ident in reversed(member.references):
        if ident and ident not in own:
            return ident
    for ident in member.in_reply_to:
        if ident and ident not in own:
            return ident
    return None


def thread_index_keys(thread_index: bytes) -> tuple[bytes, bytes | None]:
    """(conversation key, the parent's Thread-Index or None for a root).

    Raises ValueError when the value is not 22 bytes plus whole 5-byte blocks.
    """
    size = len(thread_index)
    if size < _CONVERSATION_LEN or (size - _CONVERSATION_LEN) % _CHILD_BLOCK_LEN:
        raise ValueError(f"not a Thread-Index: {size} bytes")
    parent = thread_index[:-_CHILD_BLOCK_LEN] if size > _CONVERSATION_LEN else None
    return thread_index[:_CONVERSATION_LEN], parent


def fallback_key(member: ThreadMember) -> str:
    """The normalised subject the fallback groups candidates by ('' if unusable)."""
    subject = " ".join(member.subject_norm.split())
    return subject if any(ch.isalnum() for ch in subject) else ""


class _Index:
    """Members by id (aliases included) and by Thread-Index."""

    def __init__(self, members: Sequence[ThreadMember]) -> None:
        self.ordered = sorted(members, key=_sort_key)
        self.by_id: dict[str, ThreadMember] = {}
        for member in self.ordered:
            self.by_id.setdefault(member.message_id, member)
        self.members = [m for m in self.ordered if self.by_id[m.message_id] is m]
        self.resolve: dict[str, str] = {m.message_id: m.message_id for m in self.members}
        for member in self.members:  # an alias never overrides a real id
            for alias in sorted(member.aliases):
                self.resolve.setdefault(alias, member.message_id)
        self.by_index: dict[bytes, str] = {}
        for member in self.members:
            if member.thread_index is not None:
                self.by_index.setdefault(member.thread_index, member.message_id)


def _depths(parents: Mapping[str, str | None]) -> dict[str, int]:
    """Depth of every node of an acyclic parent map, without recursion."""
    depth: dict[str, int] = {}
    for start in parents:
        path: list[str] = []
        node: str | None = start
        while node is not None and node not in depth:
            path.append(node)
            node = parents.get(node)
        base = -1 if node is None else depth[node]
        for offset, item in enumerate(reversed(path), start=1):
            depth[item] = base + offset
    return depth


def _is_ancestor(parents: Mapping[str, str | None], ancestor: str, node: str) -> bool:
    seen: set[str] = set()
    current: str | None = node
    while current is not None and current not in seen:
        if current == ancestor:
            return True
        seen.add(current)
        current = parents.get(current)
    return False


def _break_loops(
    parents: dict[str, str | None], kinds: Mapping[str, int], order: Mapping[str, int]
) -> None:
    """Cut every cycle at its weakest link (then its oldest message), in place."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in order:
        path: list[str] = []
        node: str | None = start
        while node is not None and node not in state:
            state[node] = 1
            path.append(node)
            node = parents.get(node)
        if node is not None and state[node] == 1:
            cycle = path[path.index(node) :]
            victim = min(cycle, key=lambda item: (kinds.get(item, 0), order[item]))
            parents[victim] = None
        for item in path:
            state[item] = 2


def build_tree(
    members: Sequence[ThreadMember], fallback_links: Iterable[tuple[str, str, float]] = ()
) -> dict[str, str | None]:
    """The parent (nearest member ancestor, or None for a root) of every member."""
    index = _Index(members)
    order = {m.message_id: pos for pos, m in enumerate(index.members)}
    parents: dict[str, str | None] = {}
    kinds: dict[str, int] = {}
    candidates: dict[str, list[str]] = {}
    names_any: set[str] = set()

    # 1. headers: walk References (then In-Reply-To) from last to first.
    for member in index.members:
        mid = member.message_id
        named = _named_ids(member)
        if named:
            names_any.add(mid)
        found = [index.resolve[i] for i in reversed(named) if i in index.resolve]
        found = list(dict.fromkeys(f for f in found if f != mid))
        parents[mid] = found[0] if found else None
        if found:
            kinds[mid] = _HEADER
            candidates[mid] = found
    _break_loops(parents, kinds, order)

    # Headers out of order (notmuch's parent-priority corpus): every named id
    # is an ancestor, so the nearest one is the deepest of them.
    depth = _depths(parents)
    for mid, found in candidates.items():
        deepest = max(found, key=lambda f: (depth[f], -found.index(f)))
        if deepest != parents[mid] and not _is_ancestor(parents, mid, deepest):
            parents[mid] = deepest

    # 2. Outlook Thread-Index: the nearest member whose index is a prefix.
    for member in index.members:
        mid = member.message_id
        if parents[mid] is not None or member.thread_index is None:
            continue
        try:
            _, up = thread_index_keys(member.thread_index)
        except ValueError:
            continue
        while up is not None and len(up) >= _CONVERSATION_LEN:
            owner = index.by_index.get(up)
            if owner is not None and owner != mid:
                parents[mid], kinds[mid] = owner, _INDEX
                break
            up = up[:-_CHILD_BLOCK_LEN]

    # 3. Fallback links, only for members whose headers name nothing at all.
    best: dict[str, tuple[float, float, str]] = {}
    for child_id, parent_id, score in fallback_links:
        child = index.resolve.get(child_id)
        parent = index.resolve.get(parent_id)
        if child is None or parent is None or child == parent:
            continue
        if child in names_any or parents[child] is not None:
            continue
        # best score, then the nearest earlier parent, then the smaller id
        when = (index.by_id[parent].date or _FAR_FUTURE).timestamp()
        rank = (-score, -when, parent)
        if child not in best or rank < best[child]:
            best[child] = rank
    for child, (_, _, parent) in best.items():
        parents[child], kinds[child] = parent, _FALLBACK

    _break_loops(parents, kinds, order)
    return parents


def thread_order(
    members: Sequence[ThreadMember], parents: Mapping[str, str | None]
) -> list[tuple[str, int]]:
    """(message_id, depth) in display order: depth first, siblings by date then id."""
    ordered = sorted({m.message_id: m for m in members}.values(), key=_sort_key)
    known = {m.message_id for m in ordered}
    children: dict[str | None, list[str]] = {}
    for member in ordered:  # already sorted, so each child list is too
        parent = parents.get(member.message_id)
        key = parent if parent in known and parent != member.message_id else None
        children.setdefault(key, []).append(member.message_id)

    result: list[tuple[str, int]] = []
    seen: set[str] = set()

    def walk(root: str) -> None:
        stack = [(root, 0)]
        while stack:
            node, level = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            result.append((node, level))
            kids = children.get(node, [])
            stack.extend((kid, level + 1) for kid in reversed(kids))

    for root in children.get(None, []):
        walk(root)
    for member in ordered:  # members caught in a cycle of a bad parent map
        if member.message_id not in seen:
            walk(member.message_id)
    return result
