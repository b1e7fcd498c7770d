"""pywin32's ``win32clipboard`` over :mod:`winipc.clipboard` (``win32clipboard`` after install()).

The calling user's clipboard, shared by every process of that user (a Windows session's
clipboard), with Windows' semantics: ``OpenClipboard`` while another window or process
has it open fails at once with 5 (ERROR_ACCESS_DENIED); reading and writing need it
open (1418, ERROR_CLIPBOARD_NOT_OPEN); CF_TEXT / CF_OEMTEXT / CF_UNICODETEXT and the
bitmap formats are synthesized from one another; ``SetClipboardData(fmt, None)`` is
delayed rendering (the owner window's procedure gets WM_RENDERFORMAT and calls
``SetClipboardData`` from there).

Conversions kept from pywin32:

- ``SetClipboardData(fmt, data)``: a ``str`` is stored as UTF-16 with a NUL character
  (whatever the format, as pywin32 does: use CF_UNICODETEXT for text), ``bytes`` with one
  NUL byte added, other buffers (bytearray, memoryview) as they are. Returns a handle.
- ``GetClipboardData(fmt=CF_UNICODETEXT)``: CF_UNICODETEXT gives a ``str``, CF_TEXT and
  CF_OEMTEXT ``bytes`` without the terminator, CF_HDROP a tuple of file names, any other
  format the ``bytes`` stored. A format that is not there raises ``TypeError``.
- handles: the ints ``SetClipboardData`` / ``GetClipboardDataHandle`` return stand for
  the data block; ``GetGlobalMemory(h)`` reads it back and ``SetClipboardData(fmt, h)``
  places it again (the 64 most recent handles stay valid).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from winipc import clipboard as C
from winipc import errors as W
from winipc.win32._handles import PyHANDLE
from winipc.win32._support import api, api_error, error, set_last_error
from winipc.win32.win32con import (
    CF_BITMAP,
    CF_DIB,
    CF_DIBV5,
    CF_DIF,
    CF_DSPBITMAP,
    CF_DSPENHMETAFILE,
    CF_DSPMETAFILEPICT,
    CF_DSPTEXT,
    CF_ENHMETAFILE,
    CF_HDROP,
    CF_LOCALE,
    CF_MAX,
    CF_METAFILEPICT,
    CF_OEMTEXT,
    CF_OWNERDISPLAY,
    CF_PALETTE,
    CF_PENDATA,
    CF_RIFF,
    CF_SYLK,
    CF_TEXT,
    CF_TIFF,
    CF_UNICODETEXT,
    CF_WAVE,
)

UNICODE = True

#: the ANSI code page CF_TEXT is kept in (as winipc.clipboard converts it)
ANSI_CODEPAGE = "cp1252"
_NO_MESSAGE = "No error message is available"
_KEEP_HANDLES = 64

_lock = threading.Lock()
_blocks: OrderedDict[int, bytes] = OrderedDict()  # stand-in HGLOBAL -> its bytes
_next_handle = 0x1000


def _error0(funcname: str) -> error:
    """The error pywin32 raises when the API failed without setting a last error."""
    set_last_error(0)
    return error(0, funcname, _NO_MESSAGE)


def _block(data: bytes) -> int:
    """A stand-in global-memory handle for ``data``."""
    global _next_handle
    with _lock:
        h = _next_handle
        _next_handle += 8
        _blocks[h] = data
        while len(_blocks) > _KEEP_HANDLES:
            _blocks.popitem(last=False)
    return h


def _lookup_block(h: int, funcname: str) -> bytes:
    with _lock:
        data = _blocks.get(h)
    if data is None:
        raise api_error(W.ERROR_INVALID_HANDLE, funcname)
    return data


def _format(value: Any, what: str = "format") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value


def _hwnd(value: Any, what: str = "hWnd") -> int | None:
    """A window argument: int, PyHANDLE or None; 0 is None (no window)."""
    if value is None:
        return None
    if isinstance(value, PyHANDLE):
        value = value.handle
    elif hasattr(value, "hwnd") and not isinstance(value, int):
        value = value.hwnd
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int window handle or None, not {type(value).__name__}")
    return value or None


# ---------------------------------------------------------------------------- open / close


@api("OpenClipboard")
def OpenClipboard(hWnd: Any = None) -> None:
    """Open the clipboard for this thread (Win32: OpenClipboard).

    Args:
        hWnd: the window to associate (it becomes the owner on EmptyClipboard), or None.

    Raises:
        pywintypes.error: 5 another window or process has it open (at once, no wait);
            1400 ``hWnd`` is not a window.
    """
    C.open(_hwnd(hWnd))


@api("CloseClipboard")
def CloseClipboard() -> None:
    """Close the clipboard; listeners get WM_CLIPBOARDUPDATE after a change (CloseClipboard).

    Raises:
        pywintypes.error: 1418 (ERROR_CLIPBOARD_NOT_OPEN) this thread has not opened it.
    """
    C.close()


@api("EmptyClipboard")
def EmptyClipboard() -> None:
    """Empty the clipboard; the opening window becomes its owner (Win32: EmptyClipboard).

    Raises:
        pywintypes.error: 1418 not open.
    """
    C.empty()


# ---------------------------------------------------------------------------- writing


def _data_of(hMem: Any, funcname: str) -> bytes | None:
    """The bytes SetClipboardData stores for ``hMem`` (None: delayed rendering)."""
    if hMem is None:
        return None
    if isinstance(hMem, PyHANDLE):
        hMem = hMem.handle
    if isinstance(hMem, bool):
        hMem = int(hMem)
    if isinstance(hMem, int):
        return None if hMem == 0 else _lookup_block(hMem, funcname)
    if isinstance(hMem, str):
        return hMem.encode("utf-16-le", errors="surrogatepass") + b"\0\0"
    if isinstance(hMem, bytes):
        return hMem + b"\0"
    try:
        return memoryview(hMem).tobytes()
    except TypeError:
        raise TypeError(
            f"hMem must be a str, a buffer, a handle or None, not {type(hMem).__name__}"
        ) from None


@api("SetClipboardData")
def SetClipboardData(format: Any, hMem: Any) -> int:
    """Place data on the clipboard in a format (Win32: SetClipboardData).

    Args:
        format: a CF_* constant or a registered format.
        hMem: ``str`` (stored as UTF-16 + NUL), ``bytes`` (stored with a NUL added, as
            pywin32), another buffer (as is), a handle from this module, or None / 0 for
            delayed rendering (the clipboard must be open with its owner window).

    Returns:
        A handle standing for the data (0 for delayed rendering).

    Raises:
        pywintypes.error: 1418 not open (and not rendering for a reader); 87 bad format
            or delayed rendering without an owner window; 6 an unknown handle.
    """
    fmt = _format(format)
    data = _data_of(hMem, "SetClipboardData")
    C.set_data(fmt, data)
    return 0 if data is None else _block(data)


@api("SetClipboardText")
def SetClipboardText(text: Any, format: Any = CF_TEXT) -> int:
    """Place text on the clipboard (pywin32's helper over SetClipboardData).

    Args:
        text: str or bytes.
        format: CF_TEXT (the default: ``str`` is encoded in the ANSI code page, cp1252,
            unmappable characters becoming ``?``) or CF_UNICODETEXT (``bytes`` are UTF-8).

    Returns:
        A handle standing for the data.

    Raises:
        ValueError: another format.
        pywintypes.error: 1418 not open.
    """
    fmt = _format(format)
    if fmt == CF_TEXT:
        if isinstance(text, str):
            raw = text.encode(ANSI_CODEPAGE, errors="replace")
        elif isinstance(text, (bytes, bytearray, memoryview)):
            raw = bytes(text)
        else:
            raise TypeError(f"text must be a str or bytes, not {type(text).__name__}")
        data = raw + b"\0"
    elif fmt == CF_UNICODETEXT:
        if isinstance(text, (bytes, bytearray, memoryview)):
            text = bytes(text).decode("utf-8", errors="replace")
        if not isinstance(text, str):
            raise TypeError(f"text must be a str or bytes, not {type(text).__name__}")
        data = text.encode("utf-16-le", errors="surrogatepass") + b"\0\0"
    else:
        raise ValueError(
            f"Format arg must be one of CF_TEXT ({CF_TEXT}) or CF_UNICODETEXT "
            f"({CF_UNICODETEXT}) - got {fmt}"
        )
    C.set_data(fmt, data)
    return _block(data)


# ---------------------------------------------------------------------------- reading


def _unicode(data: bytes) -> str:
    n = len(data) - len(data) % 2
    for i in range(0, n, 2):
        if data[i] == 0 and data[i + 1] == 0:
            n = i
            break
    return data[:n].decode("utf-16-le", errors="surrogatepass")


def _raw(fmt: int, funcname: str, unavailable: str) -> bytes:
    if not C.is_format_available(fmt):
        raise TypeError(unavailable)
    data = C.get_data(fmt)
    if data is None:  # its owner did not render it, or died
        raise _error0(funcname)
    return data


@api("GetClipboardData")
def GetClipboardData(format: Any = CF_UNICODETEXT) -> Any:
    """The clipboard's data in a format (Win32: GetClipboardData); the clipboard must be open.

    Args:
        format: CF_UNICODETEXT by default (pywin32 on Python 3).

    Returns:
        CF_UNICODETEXT: a str (up to the first NUL); CF_TEXT / CF_OEMTEXT: bytes (up to
        the first NUL); CF_HDROP: a tuple of file names; any other format: the bytes
        stored (CF_BITMAP: the bitmap as a packed DIB, where pywin32 gives an HBITMAP).
        A delayed format is rendered by its owner first.

    Raises:
        TypeError: the format is not on the clipboard (pywin32's message).
        pywintypes.error: 1418 not open; 0 the owner did not render a delayed format.
    """
    fmt = _format(format)
    data = _raw(fmt, "GetClipboardData", "Specified clipboard format is not available")
    if fmt == CF_UNICODETEXT:
        return _unicode(data)
    if fmt in (CF_TEXT, CF_OEMTEXT):
        end = data.find(b"\0")
        return data if end < 0 else data[:end]
    if fmt == CF_HDROP:
        return tuple(C.decode_hdrop(data))
    return data


@api("GetClipboardDataHandle")
def GetClipboardDataHandle(format: Any = CF_TEXT) -> int:
    """A handle standing for the data of a format (read it with :func:`GetGlobalMemory`).

    Raises:
        TypeError: the format is not on the clipboard.
        pywintypes.error: 1418 not open.
    """
    fmt = _format(format)
    data = _raw(fmt, "GetClipboardData", f"The clipboard format {fmt} is not available")
    return _block(data)


@api("GetGlobalMemory")
def GetGlobalMemory(hglobal: Any) -> bytes:
    """The bytes behind a handle from this module (pywin32: GetGlobalMemory).

    Raises:
        pywintypes.error: 6 not a handle this module gave (or one of the old ones).
    """
    if isinstance(hglobal, PyHANDLE):
        hglobal = hglobal.handle
    if isinstance(hglobal, bool) or not isinstance(hglobal, int):
        raise TypeError(f"hglobal must be a handle, not {type(hglobal).__name__}")
    return _lookup_block(hglobal, "GlobalSize")


@api("EnumClipboardFormats")
def EnumClipboardFormats(format: Any = 0) -> int:
    """The format after ``format`` on the clipboard (Win32: EnumClipboardFormats).

    ``format`` 0 starts; 0 comes back after the last one. Real formats come in the order
    they were placed, then the synthesized ones.

    Raises:
        pywintypes.error: 1418 the clipboard is not open.
    """
    fmt = _format(format)
    formats = C.enum_formats()
    if fmt == 0:
        return formats[0] if formats else 0
    try:
        i = formats.index(fmt)
    except ValueError:
        return 0
    return formats[i + 1] if i + 1 < len(formats) else 0


@api("CountClipboardFormats")
def CountClipboardFormats() -> int:
    """How many formats are on the clipboard, synthesized ones included.

    Raises:
        pywintypes.error: winerror 0 when the clipboard is empty, as pywin32 (which
            treats the API's 0 as a failure).
    """
    n = C.count_formats()
    if n == 0:
        raise _error0("CountClipboardFormats")
    return int(n)


@api("IsClipboardFormatAvailable")
def IsClipboardFormatAvailable(format: Any) -> int:
    """1 when the format is on the clipboard, real or synthesized, else 0 (no open needed)."""
    return 1 if C.is_format_available(_format(format)) else 0


@api("GetPriorityClipboardFormat")
def GetPriorityClipboardFormat(formats: Iterable[Any]) -> int:
    """The first of ``formats`` on the clipboard; 0 when it is empty, -1 when none is there."""
    wanted = [_format(f, "formats[]") for f in formats]
    if C.count_formats() == 0:
        return 0
    for fmt in wanted:
        if C.is_format_available(fmt):
            return fmt
    return -1


@api("RegisterClipboardFormat")
def RegisterClipboardFormat(name: Any) -> int:
    """The machine-wide id (0xC000..0xFFFF) of a named format (RegisterClipboardFormat).

    The same string (case-insensitive) gives the same id in every process, and the same
    id as ``win32gui.RegisterWindowMessage``.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    return int(C.register_format(name))


@api("GetClipboardFormatName")
def GetClipboardFormatName(format: Any) -> str:
    """The name of a registered format (Win32: GetClipboardFormatName).

    Raises:
        pywintypes.error: 87 a predefined format (CF_*) or an id nobody registered.
    """
    return str(C.get_format_name(_format(format)))


@api("GetClipboardSequenceNumber")
def GetClipboardSequenceNumber() -> int:
    """The clipboard's sequence number: rises on every change (GetClipboardSequenceNumber)."""
    return int(C.sequence_number())


@api("GetClipboardOwner")
def GetClipboardOwner() -> int:
    """The HWND of the clipboard's owner (Win32: GetClipboardOwner).

    Raises:
        pywintypes.error: winerror 0 when there is no owner (emptied without a window, or
            never), as pywin32.
    """
    owner = C.get_owner()
    if not owner:
        raise _error0("GetClipboardOwner")
    return int(owner)


@api("GetOpenClipboardWindow")
def GetOpenClipboardWindow() -> int:
    """The HWND of the window that has the clipboard open (GetOpenClipboardWindow).

    Raises:
        pywintypes.error: winerror 0 when it is not open or open without a window.
    """
    hwnd = C.get_open_window()
    if not hwnd:
        raise _error0("GetOpenClipboardWindow")
    return int(hwnd)


@api("AddClipboardFormatListener")
def AddClipboardFormatListener(hWnd: Any) -> None:
    """Post WM_CLIPBOARDUPDATE to ``hWnd`` on every clipboard change.

    Win32: AddClipboardFormatListener (pywin32 has no wrapper; scripts call it through
    ctypes). Raises 1400 when ``hWnd`` is not a window.
    """
    hwnd = _hwnd(hWnd)
    if hwnd is None:
        raise api_error(W.ERROR_INVALID_WINDOW_HANDLE, "AddClipboardFormatListener")
    C.add_format_listener(hwnd)


@api("RemoveClipboardFormatListener")
def RemoveClipboardFormatListener(hWnd: Any) -> None:
    """Stop the WM_CLIPBOARDUPDATE messages (Win32: RemoveClipboardFormatListener).

    Raises 87 when ``hWnd`` is not a listener.
    """
    hwnd = _hwnd(hWnd)
    if hwnd is None:
        raise api_error(W.ERROR_INVALID_PARAMETER, "RemoveClipboardFormatListener")
    C.remove_format_listener(hwnd)


__all__ = [
    "CF_BITMAP",
    "CF_DIB",
    "CF_DIBV5",
    "CF_DIF",
    "CF_DSPBITMAP",
    "CF_DSPENHMETAFILE",
    "CF_DSPMETAFILEPICT",
    "CF_DSPTEXT",
    "CF_ENHMETAFILE",
    "CF_HDROP",
    "CF_LOCALE",
    "CF_MAX",
    "CF_METAFILEPICT",
    "CF_OEMTEXT",
    "CF_OWNERDISPLAY",
    "CF_PALETTE",
    "CF_PENDATA",
    "CF_RIFF",
    "CF_SYLK",
    "CF_TEXT",
    "CF_TIFF",
    "CF_UNICODETEXT",
    "CF_WAVE",
    "UNICODE",
    "AddClipboardFormatListener",
    "CloseClipboard",
    "CountClipboardFormats",
    "EmptyClipboard",
    "EnumClipboardFormats",
    "GetClipboardData",
    "GetClipboardDataHandle",
    "GetClipboardFormatName",
    "GetClipboardOwner",
    "GetClipboardSequenceNumber",
    "GetGlobalMemory",
    "GetOpenClipboardWindow",
    "GetPriorityClipboardFormat",
    "IsClipboardFormatAvailable",
    "OpenClipboard",
    "RegisterClipboardFormat",
    "RemoveClipboardFormatListener",
    "SetClipboardData",
    "SetClipboardText",
    "error",
]
