"""Byte formats with no I/O: bytes in, events out; events in, bytes out (fuzzable alone)."""
