"""The spaces and rules the access tests share, over Enron's maildir and lkml's RapidIO thread.

West Position is private to its parties and in "gas" (members only); SoCal is
in "gas"; Heads up is in "trading" (open to all staff); Michael Neuling's
lkml messages are private in "rio". Tests add their own [bridge], [web] or
[digest] tables in front.
"""

SPACES_AND_RULES = """
[[spaces]]
slug = "gas"
name = "Gas desk"
members = ["outside.analyst@example.org"]
[[spaces]]
slug = "trading"
name = "Trading"
visibility = "staff"
[[spaces]]
slug = "rio"
members = ["observer@example.org", "@sysgo.com"]

[[rules]]
name = "west"
space = "gas"
private = true
[rules.match]
subject = "West Position"

[[rules]]
name = "socal"
space = "gas"
[rules.match]
subject = "SoCal"

[[rules]]
name = "heads"
space = "trading"
[rules.match]
subject = "Heads up"

[[rules]]
name = "neuling"
space = "rio"
private = true
[rules.match]
from = "mikey@neuling.org"
"""
