"""OS backends: the only code that calls the operating system.

The backend is chosen once, at import: ``posix`` on Linux and macOS. A Windows-native
backend (the real Win32 calls) will sit beside it under the same names.
"""

from __future__ import annotations

import sys

if sys.platform == "win32":  # pragma: no cover
    raise ImportError("winipc's Windows-native backend is not written yet")

from winipc._backends import posix as os_backend

__all__ = ["os_backend"]
