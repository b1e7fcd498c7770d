"""The clipboard (Win32: OpenClipboard, EmptyClipboard, SetClipboardData, GetClipboardData, ...).

The module-level functions act on the calling user's clipboard (a Windows session's
clipboard), kept in ``<per-user root>/clipboard/``; :class:`Clipboard` (``Clipboard(name,
security=...)``) gives a named one other users can share. See ``docs/clipboard.md``.

    >>> from winipc import clipboard
    >>> clipboard.set_text("hello")          # open, empty, set, close
    >>> clipboard.get_text()
    'hello'
    >>> with clipboard.opened():
    ...     clipboard.get_data(clipboard.CF_TEXT)
    b'hello\\x00'

Semantics are Windows': opening while another window or process has the clipboard open
raises AccessDenied (5) at once; reading and writing need it open (ClipboardNotOpen,
1418); CF_TEXT / CF_OEMTEXT / CF_UNICODETEXT and CF_DIB / CF_DIBV5 / CF_BITMAP are
synthesized from one another; ``set_data(fmt, None)`` is delayed rendering (the owner
window gets WM_RENDERFORMAT when a reader asks, WM_RENDERALLFORMATS when it is
destroyed); ``empty()`` by another window sends WM_DESTROYCLIPBOARD to the previous owner;
listeners get WM_CLIPBOARDUPDATE once per change.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from winipc.clipboard._clipboard import (
    DESTROY_TIMEOUT,
    RENDER_TIMEOUT,
    WM_CLIPBOARDUPDATE,
    WM_DESTROYCLIPBOARD,
    WM_RENDERALLFORMATS,
    WM_RENDERFORMAT,
    Clipboard,
    get_format_name,
    register_format,
)
from winipc.clipboard._formats import (
    CF_BITMAP,
    CF_DIB,
    CF_DIBV5,
    CF_DIF,
    CF_DSPBITMAP,
    CF_DSPENHMETAFILE,
    CF_DSPMETAFILEPICT,
    CF_DSPTEXT,
    CF_ENHMETAFILE,
    CF_GDIOBJFIRST,
    CF_GDIOBJLAST,
    CF_HDROP,
    CF_LOCALE,
    CF_METAFILEPICT,
    CF_OEMTEXT,
    CF_OWNERDISPLAY,
    CF_PALETTE,
    CF_PENDATA,
    CF_PRIVATEFIRST,
    CF_PRIVATELAST,
    CF_RIFF,
    CF_SYLK,
    CF_TEXT,
    CF_TIFF,
    CF_UNICODETEXT,
    CF_WAVE,
    HTML_FORMAT_NAME,
    decode_hdrop,
    decode_html,
    encode_hdrop,
    encode_html,
)

__all__ = [
    "CF_BITMAP", "CF_DIB", "CF_DIBV5", "CF_DIF", "CF_DSPBITMAP", "CF_DSPENHMETAFILE",
    "CF_DSPMETAFILEPICT", "CF_DSPTEXT", "CF_ENHMETAFILE", "CF_GDIOBJFIRST", "CF_GDIOBJLAST",
    "CF_HDROP", "CF_LOCALE", "CF_METAFILEPICT", "CF_OEMTEXT", "CF_OWNERDISPLAY", "CF_PALETTE",
    "CF_PENDATA", "CF_PRIVATEFIRST", "CF_PRIVATELAST", "CF_RIFF", "CF_SYLK", "CF_TEXT",
    "CF_TIFF", "CF_UNICODETEXT", "CF_WAVE", "DESTROY_TIMEOUT", "HTML_FORMAT_NAME",
    "RENDER_TIMEOUT", "WM_CLIPBOARDUPDATE", "WM_DESTROYCLIPBOARD", "WM_RENDERALLFORMATS",
    "WM_RENDERFORMAT", "Clipboard", "add_format_listener", "close", "count_formats",
    "decode_hdrop", "decode_html", "default", "empty", "encode_hdrop", "encode_html",
    "enum_formats", "get_data", "get_format_name", "get_open_window", "get_owner", "get_text",
    "is_format_available", "open", "opened", "register_format", "remove_format_listener",
    "sequence_number", "set_data", "set_text",
]

_default_lock = threading.Lock()
_default: Clipboard | None = None


def default() -> Clipboard:
    """The calling user's clipboard, one handle per process (made on first use, and again
    when ``WINIPC_ROOT`` moved the user's root since; a handle with the clipboard open
    stays until it is closed)."""
    global _default
    with _default_lock:
        stale = _default is not None and _default._store.folder != _store_folder()
        if stale and _default is not None and not _default.closed and not _default._store.is_open_here:
            _default.release()  # WINIPC_ROOT moved the user's root: the next handle is there
        if _default is None or _default.closed:
            _default = Clipboard()
        return _default


def _store_folder() -> str:
    from winipc._core import roots
    from winipc.clipboard._store import FOLDER

    return os.path.join(roots.local_root(), FOLDER)


def _reset_after_fork() -> None:
    global _default, _default_lock
    _default_lock = threading.Lock()
    _default = None  # the parent's open lock is not the child's


os.register_at_fork(after_in_child=_reset_after_fork)


def open(owner: int | Any | None = None) -> None:
    """OpenClipboard on the user's clipboard; see :meth:`Clipboard.open`."""
    default().open(owner)


def close() -> None:
    """CloseClipboard; see :meth:`Clipboard.close`."""
    default().close()


@contextlib.contextmanager
def opened(owner: int | Any | None = None) -> Iterator[Clipboard]:
    """``with clipboard.opened(owner): ...``; see :meth:`Clipboard.opened`."""
    with default().opened(owner) as cb:
        yield cb


def empty() -> None:
    """EmptyClipboard; see :meth:`Clipboard.empty`."""
    default().empty()


def set_data(fmt: int, data: bytes | bytearray | memoryview | str | None) -> None:
    """SetClipboardData; see :meth:`Clipboard.set_data`."""
    default().set_data(fmt, data)


def get_data(fmt: int) -> bytes | None:
    """GetClipboardData; see :meth:`Clipboard.get_data`."""
    return default().get_data(fmt)


def set_text(text: str) -> None:
    """Put text on the clipboard as CF_UNICODETEXT; see :meth:`Clipboard.set_text`."""
    default().set_text(text)


def get_text() -> str | None:
    """The clipboard's text or None; see :meth:`Clipboard.get_text`."""
    return default().get_text()


def enum_formats() -> list[int]:
    """EnumClipboardFormats as a list; see :meth:`Clipboard.enum_formats`."""
    return default().enum_formats()


def count_formats() -> int:
    """CountClipboardFormats; see :meth:`Clipboard.count_formats`."""
    return default().count_formats()


def is_format_available(fmt: int) -> bool:
    """IsClipboardFormatAvailable; see :meth:`Clipboard.is_format_available`."""
    return default().is_format_available(fmt)


def sequence_number() -> int:
    """GetClipboardSequenceNumber; see :meth:`Clipboard.sequence_number`."""
    return default().sequence_number()


def get_owner() -> int | None:
    """GetClipboardOwner; see :meth:`Clipboard.get_owner`."""
    return default().get_owner()


def get_open_window() -> int | None:
    """GetOpenClipboardWindow; see :meth:`Clipboard.get_open_window`."""
    return default().get_open_window()


def add_format_listener(hwnd: int | Any) -> None:
    """AddClipboardFormatListener; see :meth:`Clipboard.add_format_listener`."""
    default().add_format_listener(hwnd)


def remove_format_listener(hwnd: int | Any) -> None:
    """RemoveClipboardFormatListener; see :meth:`Clipboard.remove_format_listener`."""
    default().remove_format_listener(hwnd)
