"""One message's bytes and headers: parsing, header fields, per-copy headers, bounds."""
