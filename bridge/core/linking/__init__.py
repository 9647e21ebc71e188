"""How messages join up: copies of one message, and threads."""
