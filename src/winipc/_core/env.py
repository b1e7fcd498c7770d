"""Settings read from the environment at each use (never cached at import)."""

from __future__ import annotations

import os

from winipc import errors as W


def port(variable: str, default: int, zero_means: str) -> int:
    """A TCP port from ``$variable`` (``default`` when unset or empty; 0 is allowed).

    Raises:
        InvalidParameter: the value is not a port number 0..65535 (the message says what
            0 means: ``zero_means``).
    """
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise W.InvalidParameter(f"{variable}={raw!r}: a TCP port 0..65535 (0: {zero_means})")
    return int(raw)
