"""Native accelerators, each optional: winipc works (more slowly) without them.

``ring`` is :mod:`winipc._native._ring`, the shared-memory ring a local named-pipe
connection uses to move payloads while control and liveness stay on its socket (the way
Windows ALPC moves big messages through shared sections; docs/fastpath.md). It is None
where the extension could not be built (macOS, no compiler) or when the environment sets
``WINIPC_NO_NATIVE=1``; ``AVAILABLE`` says which. Test ``AVAILABLE`` (or ``ring is not
None``) before use: for the type checker ``ring`` is the module.
"""

from __future__ import annotations

import os

try:
    if os.environ.get("WINIPC_NO_NATIVE", "") not in ("", "0"):
        raise ImportError("native accelerators disabled by WINIPC_NO_NATIVE")
    from winipc._native import _ring as ring
except ImportError:  # not built on this platform, or switched off
    ring = None  # type: ignore[assignment]

AVAILABLE: bool = ring is not None

__all__ = ["AVAILABLE", "ring"]
