"""Admin mailbox rules and spaces, their matchers, and mail loops."""
