"""The pure access rule: staff, spaces a viewer reads, threads and messages they see.

Addresses are those of the Enron "Heads up" and SoCal threads in tests/data/enron.
"""

from __future__ import annotations

import tomllib

from hypothesis import given
from hypothesis import strategies as st

from bridge.config import parse_config
from bridge.core.access import is_staff, may_see_message, may_see_thread, viewer_for

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


def test_the_thread_rule() -> None:
    kam = viewer_for("kam.keiser@enron.com", SPACES, STAFF)
    partner = viewer_for("ann@partner.example", SPACES, STAFF)
    outsider = viewer_for("nobody@example.net", SPACES, STAFF)
    assert may_see_thread(kam, HEADS_UP, None, private=False)  # a party
    assert may_see_thread(kam, HEADS_UP, None, private=True)  # a party to a private thread
    assert may_see_thread(kam, set(), "trading", private=False)  # staff-open space
    assert not may_see_thread(kam, set(), "gas", private=False)  # not a member
    assert may_see_thread(partner, set(), "gas", private=False)  # a member
    assert not may_see_thread(partner, set(), "gas", private=True)  # private: parties only
    assert not may_see_thread(partner, HEADS_UP, "trading", private=False)
    for space in (None, "gas", "trading", "board"):
        assert not may_see_thread(outsider, HEADS_UP, space, private=False)


def test_the_message_rule_keeps_other_spaces_and_private_mail_out() -> None:
    kam = viewer_for("kam.keiser@enron.com", SPACES, STAFF)
    # A thread kam sees as a party: a message merged in from "gas" stays hidden.
    assert not may_see_message(kam, set(), "gas", False, None, False)
    assert may_see_message(kam, set(), "gas", False, "gas", False)  # the thread's own space
    assert may_see_message(kam, set(), "trading", False, None, False)  # a space he reads
    assert may_see_message(kam, set(), None, False, None, False)
    assert not may_see_message(kam, set(), None, False, None, True)  # private thread
    assert not may_see_message(kam, set(), "trading", True, "trading", False)
    assert may_see_message(kam, HEADS_UP, "gas", True, "gas", True)  # he was party to it


addresses = st.emails().map(str.lower)


@given(addresses, st.sets(addresses, max_size=4), st.sampled_from([None, "gas", "trading"]))
def test_a_party_always_sees_and_a_stranger_never_sees_a_private_thread(
    address: str, others: set[str], space: str | None
) -> None:
    who = viewer_for(address, SPACES, STAFF)
    assert may_see_thread(who, others | {address}, space, private=True)
    assert not may_see_thread(who, others - {address}, space, private=True)
