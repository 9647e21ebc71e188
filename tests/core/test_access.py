"""The pure access rule: staff, spaces a viewer reads, and the messages they see.

Addresses are those of the Enron "Heads up" and SoCal threads in tests/data/enron.
"""

from __future__ import annotations

import tomllib

from hypothesis import given
from hypothesis import strategies as st

from bridge.config import parse_config
from bridge.core.access import MessageFacts, grants, is_staff, may_see, viewer_for

SPACES = parse_config(
    tomllib.loads(
        """
[[spaces]]
slug = "gas"
members = ["lindy.donoho@enron.com", "@partner.example"]
[[spaces]]
slug = "trading"
visibility = "staff"
[[spaces]]
slug = "board"
visibility = "staff"
members = ["auditor@kpmg.example"]
"""
    ),
    "bridge.toml",
).spaces
STAFF = ("enron.com",)
HEADS_UP = {
    "d..winfree@enron.com",
    "kam.keiser@enron.com",
    "m..love@enron.com",
    "c..giron@enron.com",
}


def test_staff_is_a_company_domain_or_one_under_it() -> None:
    assert is_staff("Kam.Keiser@ENRON.com", STAFF)
    assert is_staff("someone@ect.enron.com", STAFF)
    assert is_staff("someone@ect.enron.com", ("@Enron.com.",))
    assert not is_staff("someone@notenron.com", STAFF)
    assert not is_staff("enron.com", STAFF)
    assert not is_staff("someone@enron.com", ())


def test_viewer_reads_member_spaces_and_staff_open_spaces() -> None:
    lindy = viewer_for(" Lindy.Donoho@enron.com ", SPACES, STAFF)
    assert lindy.address == "lindy.donoho@enron.com" and lindy.is_staff
    assert lindy.spaces == {"gas", "trading", "board"}
    kam = viewer_for("kam.keiser@enron.com", SPACES, STAFF)
    assert kam.spaces == {"trading", "board"}
    partner = viewer_for("ann@partner.example", SPACES, STAFF)
    assert not partner.is_staff and partner.spaces == {"gas"}
    # A member of a staff-open space reads it though not staff.
    assert viewer_for("auditor@kpmg.example", SPACES, STAFF).spaces == {"board"}
    assert viewer_for("nobody@example.net", SPACES, STAFF).spaces == frozenset()


def facts(
    holders: set[str] = frozenset(),  # type: ignore[assignment]
    named: set[str] = frozenset(),  # type: ignore[assignment]
    space: str | None = None,
    private: bool = False,
) -> MessageFacts:
    return MessageFacts(frozenset(holders), frozenset(named), space, private)


def test_the_message_rule() -> None:
    kam = viewer_for("kam.keiser@enron.com", SPACES, STAFF)
    partner = viewer_for("ann@partner.example", SPACES, STAFF)
    outsider = viewer_for("nobody@example.net", SPACES, STAFF)
    assert grants(kam, facts(named=HEADS_UP)) == ("named",)
    assert grants(kam, facts(holders={"kam.keiser@enron.com"})) == ("delivered",)
    assert grants(kam, facts(named=HEADS_UP, private=True)) == ("named",)  # private: still his
    assert grants(kam, facts(space="trading")) == ("space",)  # a staff-open space
    assert grants(kam, facts(named=HEADS_UP, space="trading")) == ("named", "space")
    assert not may_see(kam, facts(space="gas"))  # not a member
    assert not may_see(kam, facts(space="trading", private=True))  # private: its people only
    assert not may_see(kam, facts())  # in no space, naming nobody he is
    assert may_see(partner, facts(space="gas"))  # a member
    assert not may_see(partner, facts(space="gas", private=True))
    assert not may_see(partner, facts(named=HEADS_UP, space="trading"))
    for space in (None, "gas", "trading", "board"):
        assert not may_see(outsider, facts(named=HEADS_UP, holders=HEADS_UP, space=space))


addresses = st.emails().map(str.lower)


@given(
    addresses,
    st.sets(addresses, max_size=4),
    st.sets(addresses, max_size=4),
    st.sampled_from([None, "gas", "trading"]),
)
def test_holders_and_named_people_always_see_and_nobody_else_sees_private_mail(
    address: str, holders: set[str], named: set[str], space: str | None
) -> None:
    who = viewer_for(address, SPACES, STAFF)
    assert may_see(who, facts(holders | {address}, named, space, private=True))
    assert may_see(who, facts(holders, named | {address}, space, private=True))
    assert not may_see(who, facts(holders - {address}, named - {address}, space, private=True))
