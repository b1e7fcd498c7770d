"""What every module of the pywin32-shaped face shares: the error type and unit helpers.

``pywintypes.error`` is defined here (and re-exported by :mod:`winipc.win32.pywintypes`)
so that the private helpers can raise it without importing the public modules.
:func:`api` is the one place where winipc errors become ``pywintypes.error``: each public
function is wrapped with the Win32 name it stands for, and any
:class:`~winipc.errors.WinIPCError` (or stray :class:`OSError`) raised inside surfaces as
``error(winerror, funcname, strerror)``, the original chained as ``__cause__``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from winipc import errors as W
from winipc._backends.errors import winerror_for

P = ParamSpec("P")
R = TypeVar("R")

#: the largest DWORD; pywin32 spells it -1 (INFINITE, NMPWAIT_WAIT_FOREVER)
DWORD_MAX = 0xFFFF_FFFF


class error(Exception):
    """pywin32's ``pywintypes.error``: a failed Win32 call.

    ``args == (winerror, funcname, strerror)``, as pywin32 builds it.

    Attributes:
        winerror: the Win32 error code (``GetLastError()``).
        funcname: the Win32 function that failed, e.g. ``"CreateFile"``.
        strerror: Windows' text for the code (FormatMessage).
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.winerror: Any = args[0] if len(args) > 0 else None
        self.funcname: Any = args[1] if len(args) > 1 else None
        self.strerror: Any = args[2] if len(args) > 2 else None


class com_error(Exception):
    """pywin32's ``pywintypes.com_error`` (raised by nothing here yet; for ``except``)."""


error.__module__ = com_error.__module__ = "winipc.win32.pywintypes"

_last = threading.local()


def set_last_error(code: int) -> None:
    """Record ``code`` as this thread's last error (win32api.GetLastError)."""
    _last.code = code


def get_last_error() -> int:
    """This thread's last error code (0 when none was recorded)."""
    return int(getattr(_last, "code", 0))


#: Windows' text for codes the face uses beyond those of winipc.errors
EXTRA_MESSAGES: dict[int, str] = {
    1: "Incorrect function.",
    3: "The system cannot find the path specified.",
    31: "A device attached to the system is not functioning.",
    32: "The process cannot access the file because it is being used by another process.",
    120: "This function is not supported on this system.",
    1159: "The message can be used only with synchronous operations.",
    1168: "Element not found.",
    1223: "The operation was canceled by the user.",
}


def message(code: int, fallback: str | None = None) -> str:
    """Windows' FormatMessage text for ``code``."""
    return W.MESSAGES.get(code) or EXTRA_MESSAGES.get(code) or fallback or W.error_name(code)


def api_error(code: int, funcname: str, detail: str | None = None) -> error:
    """Build the ``pywintypes.error`` for ``code`` (and make it the thread's last error).

    ``detail`` is used as the text only when Windows has no text of its own for the code.
    """
    set_last_error(code)
    return error(code, funcname, message(code, detail))


def from_exception(exc: BaseException, funcname: str) -> error:
    """The ``pywintypes.error`` standing for a winipc or OS error."""
    if isinstance(exc, error):
        return exc
    if isinstance(exc, W.WinIPCError):
        return api_error(exc.winerror, funcname, exc.strerror)
    if isinstance(exc, OSError):
        return api_error(winerror_for(exc), funcname, exc.strerror or str(exc))
    return api_error(W.ERROR_INVALID_PARAMETER, funcname, str(exc))


def api(funcname: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a public function: its winipc and OS errors become ``pywintypes.error``.

    Args:
        funcname: the Win32 function name the errors carry.
    """

    def deco(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except error as exc:
                set_last_error(int(exc.winerror or 0))
                raise
            except OSError as exc:  # WinIPCError is an OSError
                raise from_exception(exc, funcname) from exc

        return wrapper

    return deco


def dword(value: Any, what: str) -> int:
    """A DWORD argument, accepting pywin32's signed spelling (``-1`` is ``0xFFFFFFFF``).

    Raises:
        TypeError: not an int (as pywin32 does for a wrong type).
        OverflowError: outside the signed or unsigned 32-bit range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "__index__"):
            value = value.__index__()
        else:
            raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if not -0x8000_0000 <= value <= DWORD_MAX:
        raise OverflowError(f"{what}={value!r} does not fit a DWORD")
    return int(value) & DWORD_MAX


def ms_to_seconds(value: Any, what: str) -> float | None:
    """Milliseconds (a DWORD) to winipc seconds; INFINITE (-1 / 0xFFFFFFFF) is None."""
    ms = dword(value, what)
    return None if ms == DWORD_MAX else ms / 1000.0


def as_bytes(data: Any, what: str) -> bytes:
    """Bytes from any bytes-like object (pywin32 takes the buffer protocol)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        raise TypeError(f"{what} must be bytes or a buffer, not str")
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise TypeError(f"{what} must be bytes or a buffer, not {type(data).__name__}") from None
