"""pywin32-shaped face of winipc: run pywin32 pipe scripts unchanged on Linux and macOS.

The modules here have pywin32's names, functions, argument order, return values and
error codes, over :mod:`winipc.pipes` and the other winipc packages::

    from winipc.win32 import win32pipe, win32file, pywintypes, winerror

or, so that an existing script's own ``import win32pipe`` finds them::

    import winipc.win32
    winipc.win32.install()
    import win32pipe, win32file, pywintypes, winerror   # winipc's, if pywin32 is absent

Covered: ``pywintypes`` (error, HANDLE, SECURITY_ATTRIBUTES, OVERLAPPED), ``win32pipe``,
``win32file`` (pipes), ``win32event`` (events, mutexes, semaphores, waitable timers, named
or not, over :mod:`winipc.sync`, and the waits), ``win32api`` (CloseHandle,
GetLastError, OpenProcess and a few helpers), ``win32gui`` (windows and messages, over
:mod:`winipc.messages`), ``win32clipboard`` (over :mod:`winipc.clipboard`), ``winerror``
and ``win32con``. Overlapped I/O works as
on Windows (ERROR_IO_PENDING, GetOverlappedResult, events, CancelIo). docs/win32.md has
the mapping and every difference from pywin32.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from winipc.win32 import (
    pywintypes,
    win32api,
    win32clipboard,
    win32con,
    win32event,
    win32file,
    win32gui,
    win32pipe,
    winerror,
)

#: pywin32's module name -> winipc's module
MODULES: dict[str, ModuleType] = {
    "pywintypes": pywintypes,
    "winerror": winerror,
    "win32con": win32con,
    "win32api": win32api,
    "win32event": win32event,
    "win32file": win32file,
    "win32pipe": win32pipe,
    "win32gui": win32gui,
    "win32clipboard": win32clipboard,
}


def pywin32_available() -> bool:
    """True when the real pywin32 can be imported (any of its modules named above)."""
    for name, ours in MODULES.items():
        loaded = sys.modules.get(name)
        if loaded is not None:
            if loaded is not ours:
                return True
            continue
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def install() -> bool:
    """Register these modules in ``sys.modules`` under pywin32's names.

    Does nothing when the real pywin32 is importable: a machine that has it keeps it.

    Returns:
        True when winipc's modules are (now) the ones ``import win32pipe`` and friends
        give; False when pywin32 is there and was left alone.
    """
    if all(sys.modules.get(name) is mod for name, mod in MODULES.items()):
        return True
    if pywin32_available():
        return False
    for name, mod in MODULES.items():
        sys.modules[name] = mod
    return True


def uninstall() -> None:
    """Remove the names :func:`install` registered (those still pointing here)."""
    for name, mod in MODULES.items():
        if sys.modules.get(name) is mod:
            del sys.modules[name]


__all__ = [
    "MODULES",
    "install",
    "pywin32_available",
    "pywintypes",
    "uninstall",
    "win32api",
    "win32clipboard",
    "win32con",
    "win32event",
    "win32file",
    "win32gui",
    "win32pipe",
    "winerror",
]
