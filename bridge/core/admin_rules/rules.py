"""Admin mailbox rules: which space a copy goes to, its tags, privacy, or not bridged at all.

Pure: rules come from config (`bridge.core.admin_rules.rule_config` builds them, with
their regexes compiled once), a message and its provenance go in, a
`RuleDecision` comes out.

A rule is a named list of matchers and some actions. Every matcher of a rule
must match (AND); the values inside one matcher are alternatives (OR). A rule
without matchers matches every message: a catch-all at the end.

Rules run in order, and each rule that matches is counted in `hits`:

- `space`: the first matching rule that names a space decides it; later
  rules cannot move the message (put specific rules first, like a firewall);
- `tags`: every matching rule adds its tags (in order, without repeats);
- `private`: any matching rule can make the message private; none can undo it;
- `skip`: the message is not bridged (its bytes are kept and counted);
  evaluation ends there, and space, tags and privacy are dropped;
- `stop`: evaluation ends after this rule.

Before the admin rules, the bridge's own mail is skipped under the rule name
`builtin:own-mail` (`bridge.core.admin_rules.loops`), and `decide` quarantines mail loops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.core.admin_rules.loops import (
    MAX_RECEIVED,
    OWN_MAIL_RULE,
    Identity,
    loop_check,
    own_mail,
    received_count,
)
from bridge.core.admin_rules.matchers import Facts, Matcher, Patterns
from bridge.core.message import ParsedMessage, Provenance, RuleDecision

__all__ = ["Facts", "Identity", "Rule", "RuleSet", "Space", "decide", "evaluate", "trace"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One admin rule: a name, a description, matchers (all must match) and actions."""

    name: str
    description: str = ""
    matchers: tuple[Matcher, ...] = ()
    space: str | None = None
    tags: tuple[str, ...] = ()
    private: bool = False
    skip: bool = False
    stop: bool = False

    def match(self, facts: Facts) -> bool:
        return all(m.match(facts) is not None for m in self.matchers)

    def actions(self) -> str:
        """The actions for people: `space=sales tags=a,b private stop`."""
        words = []
        if self.skip:
            words.append("skip")
        if self.space:
            words.append(f"space={self.space}")
        if self.tags:
            words.append("tags=" + ",".join(self.tags))
        if self.private:
            words.append("private")
        if self.stop:
            words.append("stop")
        return " ".join(words) or "(count only)"


@dataclass(frozen=True, slots=True)
class Space:
    """A space declared in config: who belongs, and who may read it.

    `members` holds addresses and `@domain` entries (a domain covers its
    subdomains); `visibility` is "members" (members only) or "staff" (every
    signed-in member of staff); `address` is the list address people write
    to to start a discussion in it.
    """

    slug: str
    name: str
    members: Patterns = field(default_factory=Patterns)
    visibility: str = "members"
    digest: str = ""  # the members' default digest frequency; "": [digest].default_frequency
    # The company's own list or group address for the space: "New discussion"
    # in the space writes to it (Bridge never expands a list itself). "": none.
    address: str = ""

    def is_member(self, address: str) -> bool:
        return self.members.matches(address.strip().lower())


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything `decide` needs: the admin rules and the bridge's identity."""

    rules: tuple[Rule, ...] = ()
    identity: Identity = field(default_factory=Identity)
    max_received: int = MAX_RECEIVED


class _Decision:
    """The decision being built while rules run, in the order described above."""

    __slots__ = ("hits", "private", "skip", "space", "tags")

    def __init__(self) -> None:
        self.space: str | None = None
        self.tags: dict[str, None] = {}
        self.private = False
        self.skip: str | None = None
        self.hits: list[str] = []

    def apply(self, rule: Rule) -> bool:
        """Record that `rule` matched; True when evaluation must end."""
        self.hits.append(rule.name)
        if rule.skip:
            self.skip = rule.name
            return True
        if self.space is None and rule.space:
            self.space = rule.space
        self.tags.update(dict.fromkeys(rule.tags))
        self.private = self.private or rule.private
        return rule.stop

    def result(self) -> RuleDecision:
        if self.skip is not None:
            return RuleDecision(skip=self.skip, hits=tuple(self.hits))
        return RuleDecision(self.space, tuple(self.tags), self.private, None, tuple(self.hits))


def evaluate(
    rules: tuple[Rule, ...], parsed: ParsedMessage, provenance: Provenance
) -> RuleDecision:
    """Run the admin rules in order over one copy of a message."""
    if not rules:
        return RuleDecision()
    facts = Facts.of(parsed, provenance)
    decision = _Decision()
    for rule in rules:
        if rule.match(facts) and decision.apply(rule):
            break
    return decision.result()


def decide(
    ruleset: RuleSet, parsed: ParsedMessage, provenance: Provenance
) -> tuple[RuleDecision, tuple[str, str] | None]:
    """What the pipeline calls after parsing: the decision, and a quarantine (reason, detail).

    Own mail is skipped (`builtin:own-mail`), a mail loop is quarantined
    ("mail-loop"), everything else goes through the admin rules.
    """
    if own_mail(parsed, ruleset.identity) is not None:
        return RuleDecision(skip=OWN_MAIL_RULE, hits=(OWN_MAIL_RULE,)), None
    reason = loop_check(parsed, ruleset.max_received)
    if reason is not None:
        detail = f"{received_count(parsed)} Received headers (more than {ruleset.max_received})"
        return RuleDecision(), (reason, detail)
    return evaluate(ruleset.rules, parsed, provenance), None


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """How one rule fared on one message, for `bridge rules test`."""

    rule: Rule
    matched: bool
    reasons: tuple[str, ...]  # one line per matcher: what it saw and whether it matched
    reached: bool  # False when an earlier skip or stop ended evaluation


@dataclass(frozen=True, slots=True)
class Trace:
    own_mail: str | None
    loop: str | None
    rules: tuple[RuleTrace, ...]
    decision: RuleDecision


def trace(ruleset: RuleSet, parsed: ParsedMessage, provenance: Provenance) -> Trace:
    """`decide`, explained: every rule with whether and why it matched."""
    facts = Facts.of(parsed, provenance)
    own = own_mail(parsed, ruleset.identity)
    loop = loop_check(parsed, ruleset.max_received)
    decision = _Decision()
    ended = own is not None or loop is not None
    if own is not None:
        decision.hits.append(OWN_MAIL_RULE)
        decision.skip = OWN_MAIL_RULE
    traces = []
    for rule in ruleset.rules:
        reasons = tuple(m.explain(facts) for m in rule.matchers) or ("no matchers: every message",)
        matched = rule.match(facts)
        traces.append(RuleTrace(rule, matched, reasons, not ended))
        if matched and not ended:
            ended = decision.apply(rule)
    result = RuleDecision() if loop is not None and own is None else decision.result()
    return Trace(own, loop, tuple(traces), result)
