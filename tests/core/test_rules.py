"""Admin rules on real messages: every matcher, every action, the order, and config errors."""

from __future__ import annotations

import pickle
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.admin_rules.rule_config import catastrophic, parse_rules, parse_spaces
from bridge.core.admin_rules.rules import Rule, RuleSet, Space, decide, evaluate, trace
from bridge.core.mail.parse import parse_message
from bridge.core.message import ParsedMessage, Provenance, RuleDecision
from bridge.errors import ConfigError

DATA = Path(__file__).parent.parent / "data" / "rules"
FILE = Provenance("file", "tests/data/rules")


def msg(name: str) -> ParsedMessage:
    return parse_message((DATA / name).read_bytes())


SOCAL = "enron-socal-gas.eml"  # bill.rapp@enron.com to 10 enron addresses
OOO = "enron-out-of-the-office.eml"  # To, Cc, Bcc at enron.com
AUTOREPLY = "enron-ooo-autoreply.eml"  # "Out of Office AutoReply: Termination"
FEDORA = "fedora-devel-list.eml"  # List-Id devel.lists.fedoraproject.org, from libero.it
BOUNCE = "mailman-bounce.eml"  # DSN through a Mailman list (flag bounce)

SPACES_TOML = """
[[spaces]]
slug = "gas"
name = "Gas regulation"
members = ["@enron.com"]
[[spaces]]
slug = "fedora"
visibility = "staff"
[[spaces]]
slug = "office"
members = ["kenneth.lay@enron.com"]
"""


def load(text: str) -> tuple[Rule, ...]:
    data = tomllib.loads(SPACES_TOML + text)
    spaces = parse_spaces(data["spaces"], "bridge.toml")
    return parse_rules(data.get("rules", []), spaces, "bridge.toml")


def one(match: str, name: str = SOCAL, provenance: Provenance = FILE) -> bool:
    """Whether a single rule with `match` (TOML lines) matches message `name`."""
    rules = load(f'[[rules]]\nname = "r"\ntags = ["hit"]\n[rules.match]\n{match}\n')
    return evaluate(rules, msg(name), provenance).hits == ("r",)


# -- matchers ------------------------------------------------------------------


def test_from_matches_whole_address_and_domain() -> None:
    assert one('from = "bill.rapp@enron.com"')
    assert one('from = "BILL.RAPP@Enron.com"')  # addresses compare lower-cased
    assert one('from = ["nobody@x.org", "@enron.com"]')  # a list: any of them
    assert not one('from = "lindy.donoho@enron.com"')  # a recipient, not the sender
    assert not one('from = "@ron.com"')  # a domain is whole labels


def test_domain_pattern_covers_subdomains() -> None:
    assert one('from = "@fedoraproject.org"', FEDORA) is False  # sender is libero.it
    assert one('to = "@fedoraproject.org"', FEDORA)  # devel@lists.fedoraproject.org
    assert one('to = "@lists.fedoraproject.org"', FEDORA)
    assert not one('to = "@enron.org"', SOCAL)


def test_to_and_cc_look_at_their_own_header() -> None:
    assert one('to = "kimberly.watson@enron.com"')
    assert not one('cc = "kimberly.watson@enron.com"')
    assert one('cc = "cara.semperger@enron.com"', OOO)
    assert not one('to = "cara.semperger@enron.com"', OOO)


def test_envelope_recipient_comes_from_the_provenance() -> None:
    smtp = Provenance("smtp", "127.0.0.1:2525", envelope_to=("Gas-Team@Enron.com",))
    assert one('envelope_to = "gas-team@enron.com"', SOCAL, smtp)
    assert not one('envelope_to = "gas-team@enron.com"', SOCAL, FILE)
    assert not one('envelope_to = "bill.rapp@enron.com"', SOCAL, smtp)  # not the From


def test_domain_is_sender_or_any_recipient() -> None:
    assert one('domain = "libero.it"', FEDORA)  # the sender's
    assert one('domain = "fedoraproject.org"', FEDORA)  # a recipient's, as a parent domain
    assert one('domain = "@libero.it"', FEDORA)  # "@" is accepted too
    smtp = Provenance("smtp", "mx", envelope_to=("archive@example.com",))
    assert one('domain = "example.com"', FEDORA, smtp)  # an envelope recipient's
    assert not one('domain = "example.com"', FEDORA)


def test_domain_includes_bcc() -> None:
    parsed = msg(OOO)
    assert "holden.salisbury@enron.com" in {a.address for a in parsed.bcc}
    rules = load('[[rules]]\nname = "r"\n[rules.match]\ndomain = "enron.com"\n')
    assert evaluate(rules, parsed, FILE).hits == ("r",)


def test_list_id() -> None:
    assert one('list_id = "devel.lists.fedoraproject.org"', FEDORA)
    assert one('list_id = "<DEVEL.lists.fedoraproject.org>"', FEDORA)  # as in the header
    assert one('list_id = ["x.example.org", "scr.socal-raves.org"]', BOUNCE)
    assert not one('list_id = "lists.fedoraproject.org"', FEDORA)  # whole id only
    assert not one('list_id = "devel.lists.fedoraproject.org"', SOCAL)  # no List-Id


def test_subject_regex_is_searched_case_insensitive() -> None:
    assert one('subject = "cpuc"')
    assert one('subject = "^SoCal Gas"')
    assert not one('subject = "^Gas"')  # anchored
    assert not one('subject = "(?-i:cpuc)"')  # opting out of ignore-case
    assert one('subject = "^out of office autoreply:"', AUTOREPLY)


def test_header_regex_and_presence() -> None:
    assert one('header = "X-Folder"\nregex = "donoho, lindy"')
    assert not one('header = "X-Folder"\nregex = "watson"')
    assert one('header = "x-mailman-version"', BOUNCE)  # present, any value
    assert not one('header = "X-Mailman-Version"', SOCAL)
    # Every value of a repeated header is searched: the fourth Received of the list mail.
    assert one('header = "Received"\nregex = "bastion01\\\\.phx2"', FEDORA)


def test_account_names_the_source() -> None:
    imap = Provenance("imap", "sales/INBOX", "INBOX", "sales/INBOX/7/42")
    assert one('account = "sales"', SOCAL, imap)
    assert one('account = "sales/inbox"', SOCAL, imap)
    assert one('account = "imap"', SOCAL, imap)
    assert not one('account = "support"', SOCAL, imap)
    assert one('account = "smtp"', SOCAL, Provenance("smtp", "127.0.0.1:2525"))
    assert one('account = "file"', SOCAL, FILE)


def test_flag_matches_parser_flags() -> None:
    assert one('flag = "bounce"', BOUNCE)
    assert one('flag = ["auto-reply", "bounce"]', "aol-mailbox-full-dsn.eml")
    assert not one('flag = "bounce"', SOCAL)


def test_all_matchers_of_a_rule_must_match() -> None:
    assert one('from = "@enron.com"\nsubject = "cpuc"')
    assert not one('from = "@enron.com"\nsubject = "fedora"')
    assert not one('from = "@libero.it"\nsubject = "cpuc"')


def test_a_rule_without_matchers_matches_everything() -> None:
    rules = load('[[rules]]\nname = "default"\nspace = "office"\n')
    for name in (SOCAL, FEDORA, BOUNCE):
        assert evaluate(rules, msg(name), FILE) == RuleDecision("office", hits=("default",))


# -- actions and order ---------------------------------------------------------

ORDERED = """
[[rules]]
name = "enron-gas"
space = "gas"
tags = ["gas", "regulatory"]
[rules.match]
subject = "gas"
[[rules]]
name = "enron-any"
space = "office"
tags = ["enron", "gas"]
[rules.match]
domain = "enron.com"
[[rules]]
name = "fedora"
space = "fedora"
private = true
stop = true
[rules.match]
list_id = "devel.lists.fedoraproject.org"
[[rules]]
name = "tag-all"
tags = ["all"]
"""


def test_first_space_wins_and_tags_add_up_in_order() -> None:
    decision = evaluate(load(ORDERED), msg(SOCAL), FILE)
    assert decision == RuleDecision(
        space="gas",
        tags=("gas", "regulatory", "enron", "all"),
        private=False,
        skip=None,
        hits=("enron-gas", "enron-any", "tag-all"),
    )


def test_later_rule_gives_the_space_when_earlier_ones_miss() -> None:
    decision = evaluate(load(ORDERED), msg(OOO), FILE)
    assert decision.space == "office" and decision.hits == ("enron-any", "tag-all")


def test_stop_ends_evaluation_and_private_sticks() -> None:
    decision = evaluate(load(ORDERED), msg(FEDORA), FILE)
    assert decision == RuleDecision("fedora", (), True, None, ("fedora",))


def test_skip_ends_evaluation_and_drops_the_rest() -> None:
    rules = load(
        '[[rules]]\nname = "tag"\ntags = ["x"]\nprivate = true\n'
        '[[rules]]\nname = "no-bounces"\nskip = true\n[rules.match]\nflag = "bounce"\n'
        '[[rules]]\nname = "after"\ntags = ["y"]\n'
    )
    assert evaluate(rules, msg(BOUNCE), FILE) == RuleDecision(
        skip="no-bounces", hits=("tag", "no-bounces")
    )
    assert evaluate(rules, msg(SOCAL), FILE) == RuleDecision(
        None, ("x", "y"), True, None, ("tag", "after")
    )


def test_no_rules_means_an_empty_decision() -> None:
    assert evaluate((), msg(SOCAL), FILE) == RuleDecision()


def test_trace_agrees_with_evaluate_and_explains() -> None:
    rules = load(ORDERED)
    for name in (SOCAL, OOO, FEDORA, BOUNCE, AUTOREPLY):
        parsed = msg(name)
        result = trace(RuleSet(rules), parsed, FILE)
        assert result.decision == evaluate(rules, parsed, FILE)
    result = trace(RuleSet(rules), msg(FEDORA), FILE)
    fedora, tag_all = result.rules[2], result.rules[3]
    assert fedora.matched and fedora.reasons == ("list_id: yes (devel.lists.fedoraproject.org)",)
    assert tag_all.matched and not tag_all.reached  # stopped before it
    gas = result.rules[0]
    assert gas.reasons == ("subject: no (subject 'gradle 1.0'; regex 'gas')",)


def test_rules_pickle_for_worker_processes() -> None:
    rules = load(ORDERED)
    assert pickle.loads(pickle.dumps(rules)) == rules
    parsed = msg(SOCAL)
    assert evaluate(pickle.loads(pickle.dumps(rules)), parsed, FILE) == evaluate(
        rules, parsed, FILE
    )


def test_decide_runs_the_admin_rules() -> None:
    ruleset = RuleSet(load(ORDERED))
    decision, failure = decide(ruleset, msg(FEDORA), FILE)
    assert failure is None and decision.space == "fedora"


# -- spaces ----------------------------------------------------------------------


def test_space_members_are_addresses_and_domains() -> None:
    spaces = parse_spaces(tomllib.loads(SPACES_TOML)["spaces"], "bridge.toml")
    gas, fedora, office = spaces
    assert gas == Space("gas", "Gas regulation", gas.members, "members")
    assert gas.is_member("Bill.Rapp@enron.com") and gas.is_member("x@mail.enron.com")
    assert not gas.is_member("bill@notenron.com")
    assert fedora.name == "fedora" and fedora.visibility == "staff"
    assert office.is_member("kenneth.lay@enron.com") and not office.is_member("x@enron.com")


# -- config errors: one line, file, key and problem --------------------------------


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    return str(info.value)


def test_bad_regex_names_file_key_and_problem() -> None:
    text = "".join(f'[[rules]]\nname = "r{i}"\n' for i in range(3))
    text += '[[rules]]\nname = "r3"\n[rules.match]\nsubject = "foo("\n'
    assert error(text) == (
        "bridge.toml: rules[3].match.subject: bad regex 'foo(': "
        "missing ), unterminated subpattern at position 3"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[rules]]\nname = "a"\n[rules.match]\nheader = "X-A"\nregex = "(a+)+$"\n',
            "bridge.toml: rules[0].match.regex: bad regex '(a+)+$': "
            "a repeated group holds a repeat (such as (a+)+): it can take forever",
        ),
        (
            '[[rules]]\nname = "a"\nspace = "sales"\n',
            "bridge.toml: rules[0].space: has value 'sales': no such space in [[spaces]]",
        ),
        ('[[rules]]\ndescription = "x"\n', "bridge.toml: rules[0].name: is required"),
        (
            '[[rules]]\nname = "a"\n[[rules]]\nname = "a"\n',
            "bridge.toml: rules[1].name: has value 'a': used twice",
        ),
        (
            '[[rules]]\nname = "a"\nspaces = "gas"\n',
            "bridge.toml: rules[0].spaces: unknown key",
        ),
        (
            '[[rules]]\nname = "a"\n[rules.match]\nsender = "x@y.z"\n',
            "bridge.toml: rules[0].match.sender: unknown key",
        ),
        (
            '[[rules]]\nname = "a"\n[rules.match]\nfrom = "bob"\n',
            "bridge.toml: rules[0].match.from: has value 'bob': "
            "expected an address or @domain (e.g. @example.com)",
        ),
        (
            '[[rules]]\nname = "a"\n[rules.match]\nto = []\n',
            "bridge.toml: rules[0].match.to: must not be empty",
        ),
        (
            '[[rules]]\nname = "a"\n[rules.match]\nregex = "x"\n',
            "bridge.toml: rules[0].match.regex: needs match.header (the header to search)",
        ),
        (
            '[[rules]]\nname = "a"\n[rules.match]\nflag = "spam"\n',
            "bridge.toml: rules[0].match.flag: has value 'spam': expected one of "
            "address-flagged, auto-reply, bad-date, bounce, html-only, no-date, "
            "no-message-id, own, parse-defects, reconstructed, truncated",
        ),
        (
            '[[rules]]\nname = "a"\nskip = true\nspace = "gas"\n',
            "bridge.toml: rules[0].skip: a skipped message has no space, tags or privacy",
        ),
        (
            '[[rules]]\nname = "a"\nstop = "yes"\n',
            "bridge.toml: rules[0].stop: has value 'yes': expected true or false",
        ),
        (
            '[[rules]]\nname = "a"\ntags = ["a,b"]\n',
            "bridge.toml: rules[0].tags: has value 'a,b': no commas, 100 characters at most",
        ),
        (
            '[[rules]]\nname = "Not A Slug"\n',
            "bridge.toml: rules[0].name: has value 'Not A Slug': "
            "use a-z, 0-9, '.', '_', '-' (100 at most)",
        ),
    ],
)
def test_rule_errors(text: str, expected: str) -> None:
    assert error(text) == expected


@pytest.mark.parametrize(
    ("spaces", "expected"),
    [
        ([{"name": "x"}], "b.toml: spaces[0].slug: is required"),
        ([{"slug": "a"}], "b.toml: spaces[0].members: is required when visibility is 'members'"),
        (
            [{"slug": "a", "visibility": "all"}],
            "b.toml: spaces[0].visibility: has value 'all': expected one of 'members', 'staff'",
        ),
        (
            [{"slug": "a", "visibility": "staff"}, {"slug": "a", "visibility": "staff"}],
            "b.toml: spaces[1].slug: has value 'a': used twice",
        ),
        ({"slug": "a"}, "b.toml: spaces: must be an array of tables ([[spaces]])"),
    ],
)
def test_space_errors(spaces: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spaces(spaces, "b.toml")
    assert str(info.value) == expected


@pytest.mark.parametrize(
    "pattern", ["(a+)+", "(a*)*b", r"(\w+\s?)*$", "(.*){2,}", "((ab)+c)*", "(x|y+)+"]
)
def test_catastrophic_shapes_are_refused(pattern: str) -> None:
    assert catastrophic(pattern) is not None


@pytest.mark.parametrize(
    "pattern",
    [r"^\[PATCH( v\d+)?\]", "(ab)+", "(a+)?", r"\(a+\)+", "[(a+)]+", "(re|fwd?):", "a+b*c{2,}"],
)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert catastrophic(pattern) is None


@given(st.text(max_size=60))
def test_catastrophic_never_crashes(pattern: str) -> None:
    catastrophic(pattern)
