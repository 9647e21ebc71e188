"""The search language: tokens, queries, their backend syntax, and snippets."""
