"""Tables of data in HTML-only mail: found, so the viewer can show them as tables."""

from __future__ import annotations

from bridge.core.body.html import has_data_table
from bridge.core.mail.parse import parse_message
from tests.conftest import DATA

PAYMENT = DATA / "viewer" / "mail" / "payment-table.eml"


def test_a_real_html_only_message_with_a_data_table() -> None:
    message = parse_message(PAYMENT.read_bytes())
    assert message.html is not None and "html-only" in message.flags
    # The text made from it lost the rows and columns: one cell a line.
    assert "Booked Date\nForeign Currency Payment Amount\nRate Booked" in message.text
    assert has_data_table(message.html)
    assert has_data_table(message.html, message.text)


def test_layout_and_prose_tables_are_not_data() -> None:
    layout = (
        "<table><tr><td><table><tr><td>Menu</td><td>Home</td></tr>"
        "<tr><td>News</td></tr></table></td><td>Side</td></tr>"
        "<tr><td>a</td><td>b</td></tr></table>"
    )
    assert not has_data_table(layout)
    prose = "<table><tr><td>{0}</td><td>{0}</td></tr><tr><td>{0}</td><td>{0}</td></tr></table>"
    assert not has_data_table(prose.format("A long paragraph of prose. " * 10))
    one_row = "<table><tr><td>Name</td><td>Value</td></tr></table>"
    assert not has_data_table(one_row)
    assert not has_data_table("<p>No table at all</p>")


def test_a_table_the_text_left_out_does_not_count() -> None:
    table = (
        "<p>See below.</p><blockquote><table><tr><th>Hub</th><th>Price</th></tr>"
        "<tr><td>Waha</td><td>2.4150</td></tr><tr><td>Henry</td><td>2.6050</td></tr>"
        "</table></blockquote>"
    )
    assert has_data_table(table)
    assert has_data_table(table, "See below.\n\nHub Price\nWaha 2.4150\nHenry 2.6050")
    assert not has_data_table(table, "See below.")


def test_unclosed_and_odd_markup() -> None:
    assert has_data_table("<table><tr><td>a<td>b<tr><td>c<td>d")
    assert not has_data_table("<td>a</td><td>b</td></tr><tr><td>c</td><td>d</td>")
    assert not has_data_table("</table></table><table>" * 1000)
