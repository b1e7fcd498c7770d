"""Constants, records and argument checks of winipc.messages."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from winipc import errors as W
from winipc._wire import messages as wire

HWND_BROADCAST = 0xFFFF
HWND_MESSAGE = -3
HWND_TOP = 0

WM_NULL = 0x0000
WM_CREATE = 0x0001
WM_DESTROY = 0x0002
WM_SETTEXT = 0x000C
WM_GETTEXT = 0x000D
WM_CLOSE = 0x0010
WM_QUIT = 0x0012
WM_COPYDATA = 0x004A
WM_TIMER = 0x0113
WM_RENDERFORMAT = 0x0305
WM_RENDERALLFORMATS = 0x0306
WM_DESTROYCLIPBOARD = 0x0307
WM_CLIPBOARDUPDATE = 0x031D
WM_USER = 0x0400
WM_APP = 0x8000

SMTO_NORMAL = 0x0000
SMTO_BLOCK = 0x0001
SMTO_ABORTIFHUNG = 0x0002
SMTO_NOTIMEOUTIFNOTHUNG = 0x0008
SMTO_ERRORONEXIT = 0x0020
_SMTO_ALL = SMTO_BLOCK | SMTO_ABORTIFHUNG | SMTO_NOTIMEOUTIFNOTHUNG | SMTO_ERRORONEXIT

PM_NOREMOVE = 0x0000
PM_REMOVE = 0x0001

#: the smallest and largest HWND of a window (even numbers only)
HWND_MIN = 0x10000
HWND_MAX = 0x7FFFFFFE
#: the largest WM_COPYDATA payload (bytes)
MAX_COPYDATA = wire.MAX_DATA
#: the largest bytes lparam of a posted message (bytes); sent messages take MAX_COPYDATA
MAX_POSTED_BYTES = wire.INLINE_MAX
#: posted messages a thread's queue holds before it drops new ones (Windows: 10000)
POSTED_LIMIT = 10000

WindowProc = Callable[[int, int, int, Any], "int | None"]
"""``(hwnd, msg, wparam, lparam) -> LRESULT`` (None means 0), as pywin32's wndproc."""

UINT_MAX = wire.U32
WPARAM_MAX = wire.U64
LPARAM_MIN = wire.I64_MIN
LPARAM_MAX = wire.I64_MAX


def hung_timeout() -> float:
    """The package's HUNG_TIMEOUT (seconds), read at every use so tests can lower it."""
    pkg = sys.modules.get("winipc.messages")
    value = getattr(pkg, "HUNG_TIMEOUT", 5.0)
    return float(value)


@dataclass(frozen=True)
class Message:
    """A retrieved message (Win32: MSG).

    Attributes:
        hwnd: the window it is for; 0 for a thread message (WM_QUIT).
        message: the message number (UINT).
        wparam: WPARAM.
        lparam: LPARAM: an int, or bytes for a pointer parameter.
        time: seconds since the epoch when it was posted (``time.time()``).
        sender_pid: the posting process's id (from the kernel).
        sender_uid: the posting process's user id (from the kernel).
    """

    hwnd: int
    message: int
    wparam: int
    lparam: int | bytes
    time: float
    sender_pid: int
    sender_uid: int


@dataclass(frozen=True)
class WindowInfo:
    """What the namespace tells about a window (any process's)."""

    hwnd: int
    class_name: str
    title: str
    pid: int
    tid: int
    uid: int
    message_only: bool


class CopyData:
    """WM_COPYDATA's lparam (Win32: COPYDATASTRUCT and the sender's identity).

    Attributes:
        dwdata: COPYDATASTRUCT.dwData, 0..2**64-1.
        data: the bytes, a read-only memoryview valid only during the window procedure's
            call (copy it with ``bytes(cd.data)`` to keep it), as on Windows.
        sender_hwnd: the hwnd the sender named (wParam); not verified, as on Windows.
        sender_pid: the sending process's id, from the kernel (SO_PEERCRED).
        sender_uid: the sending process's user id, from the kernel.
    """

    __slots__ = ("data", "dwdata", "sender_hwnd", "sender_pid", "sender_uid")

    def __init__(self, dwdata: int, data: memoryview, sender_hwnd: int, sender_pid: int, sender_uid: int) -> None:
        self.dwdata = dwdata
        self.data = data
        self.sender_hwnd = sender_hwnd
        self.sender_pid = sender_pid
        self.sender_uid = sender_uid

    def __repr__(self) -> str:
        try:
            size = f"{self.data.nbytes} bytes"
        except ValueError:
            size = "released"
        return f"<CopyData dwdata={self.dwdata} {size} from hwnd {self.sender_hwnd:#x} pid {self.sender_pid}>"


# --------------------------------------------------------------------------- checks


def _int_in(value: Any, lo: int, hi: int, what: str, kind: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise W.InvalidParameter(f"{what} must be a {kind} in {lo}..{hi}, not {value!r}")
    return value


def check_msg(msg: Any) -> int:
    return _int_in(msg, 0, UINT_MAX, "msg", "UINT")


def check_wparam(wparam: Any) -> int:
    return _int_in(wparam, 0, WPARAM_MAX, "wparam", "WPARAM")


def check_lparam(lparam: Any, limit: int = MAX_COPYDATA) -> int | bytes:
    """An int in LPARAM's range, or bytes (a pointer parameter) of at most ``limit`` bytes."""
    if isinstance(lparam, (bytes, bytearray, memoryview)):
        data = bytes(lparam)
        if len(data) > limit:
            raise W.InvalidParameter(f"lparam is {len(data)} bytes; the maximum here is {limit} bytes")
        return data
    return _int_in(lparam, LPARAM_MIN, LPARAM_MAX, "lparam", "LPARAM (or bytes)")


def check_result(value: Any, hwnd: int, msg: int) -> int:
    """A window procedure's return value as an LRESULT (None is 0)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int) or not LPARAM_MIN <= value <= LPARAM_MAX:
        raise W.InvalidParameter(
            f"the window procedure of hwnd {hwnd:#x} returned {value!r} for message {msg:#x}; "
            f"the result must be an LRESULT, an int in {LPARAM_MIN}..{LPARAM_MAX} (or None)"
        )
    return value


def check_flags(flags: Any) -> int:
    if isinstance(flags, bool) or not isinstance(flags, int) or flags & ~_SMTO_ALL or flags < 0:
        raise W.InvalidParameter(f"flags must be a combination of SMTO_* values ({_SMTO_ALL:#x}), not {flags!r}")
    return flags


def hwnd_value(hwnd: Any, what: str = "hwnd") -> int:
    """An HWND given as an int or a Window (anything with ``.hwnd``)."""
    value = getattr(hwnd, "hwnd", hwnd)
    if isinstance(value, bool) or not isinstance(value, int):
        raise W.InvalidParameter(f"{what} must be an int window handle or a Window, not {hwnd!r}")
    return value


def is_window_number(hwnd: int) -> bool:
    """True when ``hwnd`` can be a window's handle (even, 0x10000..0x7FFFFFFE)."""
    return HWND_MIN <= hwnd <= HWND_MAX and hwnd % 2 == 0


def check_filter(msg_min: Any, msg_max: Any) -> tuple[int, int]:
    lo = _int_in(msg_min, 0, UINT_MAX, "msg_min", "UINT")
    hi = _int_in(msg_max, 0, UINT_MAX, "msg_max", "UINT")
    return lo, hi


def in_filter(msg: int, lo: int, hi: int) -> bool:
    """GetMessage's range filter: (0, 0) takes all; lo > hi takes everything outside hi..lo."""
    if lo == 0 and hi == 0:
        return True
    if lo <= hi:
        return lo <= msg <= hi
    return msg >= lo or msg <= hi
