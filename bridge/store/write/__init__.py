"""The batch writer: what a batch needs to know, its rows, and thread bookkeeping."""
