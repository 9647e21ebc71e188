"""Bridge: company email turned into searchable, threaded discussions."""

__version__ = "0.1.0"
