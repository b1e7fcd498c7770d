"""The clipboard: open/close/empty, data, formats, owner, listeners, delayed rendering."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from winipc import errors as W
from winipc._core import atoms
from winipc._core import names as _names
from winipc._core.security import Access, SecurityAttributes
from winipc.clipboard import _desktop
from winipc.clipboard import _formats as F
from winipc.clipboard._store import State, Store

WM_RENDERFORMAT = 0x0305
WM_RENDERALLFORMATS = 0x0306
WM_DESTROYCLIPBOARD = 0x0307
WM_CLIPBOARDUPDATE = 0x031D

#: seconds a reader waits for the owner to render a delayed format (WM_RENDERFORMAT)
RENDER_TIMEOUT = 30.0
#: seconds empty() waits for the previous owner's WM_DESTROYCLIPBOARD handler
DESTROY_TIMEOUT = 2.0


def _messages() -> Any:
    """winipc.messages, imported on first use (windows are optional for the clipboard)."""
    from winipc import messages

    return messages


def _hwnd_of(window: object, arg: str = "owner") -> int | None:
    if window is None:
        return None
    hwnd = getattr(window, "hwnd", window)
    if isinstance(hwnd, bool) or not isinstance(hwnd, int):
        raise W.InvalidParameter(f"{arg} must be a Window, an int hwnd or None, not {type(window).__name__}")
    if hwnd == 0:
        return None
    if not 0 < hwnd <= 0xFFFFFFFF:
        raise W.InvalidParameter(f"{arg}={hwnd} is not a window handle (1..0xFFFFFFFF)")
    return hwnd


def _window_alive(hwnd: int) -> bool:
    try:
        return bool(_messages().is_window(hwnd))
    except ImportError:
        return False


class Clipboard:
    """A clipboard: the user's default one, or a named one shared by its ``security``.

    Args:
        name: ``None`` for the calling user's clipboard (a Windows session's clipboard);
            else a kernel-object style name (``"x"``, ``"Global\\\\x"``) of a named
            clipboard kept in the machine-wide root.
        security: for a named clipboard its creator gives, who else may use it
            (owner only by default). Reading needs READ, changing needs WRITE.

    Raises:
        InvalidName: a malformed name.
        AccessDenied: a named clipboard of another user that does not let us in.
        NotSupported: sharing needs POSIX ACLs the file system lacks.

    Like every winipc object this is a handle: :meth:`release` (or ``with``) lets go of
    it (closing the clipboard if this handle has it open). :meth:`close` is
    CloseClipboard.
    """

    def __init__(self, name: str | None = None, *, security: SecurityAttributes | None = None) -> None:
        parsed = None if name is None else _names.parse(name, family="kernel")
        self._store = Store(parsed, security)
        self._mutex = threading.RLock()
        self._open_tid: int | None = None
        self._open_hwnd: int | None = None
        self._changed = False
        self._push = False
        self._released = False
        _instances.add(self)

    # ----------------------------------------------------------------- handle

    @property
    def name(self) -> str | None:
        """The named clipboard's display name, or None for the default clipboard."""
        return None if self._store.name is None else self._store.name.display

    @property
    def closed(self) -> bool:
        """True after :meth:`release`."""
        return self._released

    def release(self) -> None:
        """Let go of this handle (closes the clipboard first when this handle has it open)."""
        with self._mutex:
            if self._released:
                return
            if self._store.is_open_here:
                with contextlib.suppress(W.WinIPCError):
                    self.close()
            self._released = True
            self._store.close()

    def __enter__(self) -> Clipboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _live(self) -> Store:
        if self._released:
            raise W.InvalidHandle("the clipboard handle is released")
        return self._store

    @contextlib.contextmanager
    def _locked(self) -> Iterator[State]:
        store = self._live()
        with store.lock:
            yield store.load()

    def _require_open(self, func: str) -> Store:
        store = self._live()
        if not store.is_open_here:
            raise W.ClipboardNotOpen(f"{func}: the clipboard is not open (call open() first)")
        if self._open_tid != threading.get_ident():
            raise W.ClipboardNotOpen(f"{func}: the clipboard is open by another thread")
        return store

    # ----------------------------------------------------------------- open / close

    def open(self, owner: int | Any | None = None) -> None:
        """Open the clipboard for the calling thread (OpenClipboard).

        Args:
            owner: the window (``Window`` or hwnd) to associate with the open clipboard,
                or None. :meth:`empty` makes it the clipboard owner.

        Raises:
            AccessDenied: another handle (another process, thread or window) has the
                clipboard open; raised at once, never waits.
            InvalidWindowHandle: ``owner`` is not a live window.
        """
        hwnd = _hwnd_of(owner)
        with self._mutex:
            store = self._live()
            if store.is_open_here:
                if self._open_tid == threading.get_ident():
                    self._open_hwnd = hwnd
                    return
                raise W.AccessDenied("OpenClipboard: the clipboard is open by another thread")
            store.require(Access.READ)
            if hwnd is not None and not _window_alive(hwnd):
                raise W.InvalidWindowHandle(f"OpenClipboard: owner {hwnd:#x} is not a window")
            if not store.try_open():
                raise W.AccessDenied(f"OpenClipboard: {store.display} is open by another window or process")
            try:
                self._open_tid = threading.get_ident()
                self._open_hwnd = hwnd
                self._changed = self._push = False
                with store.lock:
                    st = store.load()
                    st.open_hwnd, st.open_pid = hwnd, os.getpid()
                    st.rendering = None
                    store.save(st)
                if store.name is None:
                    self._pull_desktop()
            except BaseException:
                self._open_tid = self._open_hwnd = None
                store.release_open()
                raise

    def close(self) -> None:
        """Close the clipboard (CloseClipboard).

        After a change, WM_CLIPBOARDUPDATE is posted once to each listener (dead ones are
        dropped) and the default clipboard's text and image go to the desktop bridge.

        Raises:
            ClipboardNotOpen: this handle does not have the clipboard open.
        """
        with self._mutex:
            store = self._require_open("CloseClipboard")
            listeners: list[int] = []
            try:
                with store.lock:
                    st = store.load()
                    st.open_hwnd = st.open_pid = None
                    st.rendering = None
                    listeners = list(st.listeners)
                    store.save(st)
                if self._push and store.name is None:
                    self._push_desktop()
            finally:
                changed = self._changed
                self._changed = self._push = False
                self._open_tid = self._open_hwnd = None
                store.release_open()
            if changed and listeners:
                self._notify(listeners)

    def _notify(self, listeners: list[int]) -> None:
        try:
            msgs = _messages()
        except ImportError:
            return
        dead = []
        for hwnd in listeners:
            try:
                msgs.post_message(hwnd, WM_CLIPBOARDUPDATE, 0, 0)
            except W.InvalidWindowHandle:
                dead.append(hwnd)
            except W.WinIPCError:
                pass
        if dead:
            with self._locked() as st:
                st.listeners = [h for h in st.listeners if h not in dead]
                self._store.save(st)

    @contextlib.contextmanager
    def opened(self, owner: int | Any | None = None) -> Iterator[Clipboard]:
        """``with clipboard.opened(owner): ...`` — open, then close even on error."""
        self.open(owner)
        try:
            yield self
        finally:
            if self._store.is_open_here:
                self.close()

    # ----------------------------------------------------------------- changing

    def empty(self) -> None:
        """Empty the clipboard and make the opener's window its owner (EmptyClipboard).

        The owner becomes the window given to :meth:`open` (None when it was opened
        without a window); the previous owner, when another window, gets
        WM_DESTROYCLIPBOARD (errors and time-outs ignored). The sequence number rises.

        Raises:
            ClipboardNotOpen: this handle does not have the clipboard open.
            AccessDenied: a named clipboard we may not write.
        """
        with self._mutex:
            store = self._require_open("EmptyClipboard")
            store.require(Access.WRITE)
            with store.lock:
                st = store.load()
                previous = st.owner
                st.formats = []
                st.owner = self._open_hwnd
                st.owner_pid = os.getpid() if self._open_hwnd is not None else None
                st.seq += 1
                store.save(st)
            self._changed = self._push = True
            if self._open_hwnd is not None:
                _watch_destroy()
            if previous is not None and previous != self._open_hwnd:
                _send_quietly(previous, WM_DESTROYCLIPBOARD, DESTROY_TIMEOUT)

    def set_data(self, fmt: int, data: bytes | bytearray | memoryview | str | None) -> None:
        """Place data in a format (SetClipboardData).

        Args:
            fmt: the clipboard format (1..0xFFFF).
            data: bytes; a str for CF_UNICODETEXT (stored UTF-16LE + NUL), CF_TEXT (cp1252
                + NUL, unmappable characters become ``?``) or CF_OEMTEXT (cp437 + NUL);
                None for delayed rendering (the clipboard owner must be the window this
                handle opened the clipboard with).

        While a reader waits on WM_RENDERFORMAT, the owner's window procedure calls this
        without opening the clipboard (as on Windows) to render the requested format.

        Raises:
            ClipboardNotOpen: not open by this handle and not rendering for a reader.
            InvalidParameter: a bad format, a str for a non-text format, data over the
                size limit, or delayed rendering without an owner window.
        """
        fmt = F.check_format(fmt)
        if isinstance(data, str):
            if fmt not in F.TEXT_FORMATS:
                raise W.InvalidParameter(f"data: a str is only accepted for the text formats, not format {fmt}")
            blob: bytes | None = F.encode_text(fmt, data)
        elif data is None:
            blob = None
        elif isinstance(data, (bytes, bytearray, memoryview)):
            blob = bytes(data)
        else:
            raise W.InvalidParameter(f"data must be bytes, str or None, not {type(data).__name__}")
        store = self._live()
        mine = store.is_open_here and self._open_tid == threading.get_ident()
        # rendering for a waiting reader takes no instance mutex: the reader may be another
        # thread of this process holding it while it waits for us
        if not mine and blob is not None and self._render(store, fmt, blob):
            return
        with self._mutex:
            store = self._require_open("SetClipboardData")
            store.require(Access.WRITE)
            with store.lock:
                st = store.load()
                if blob is None:
                    if st.owner is None or st.owner != self._open_hwnd:
                        raise W.InvalidParameter(
                            "data=None (delayed rendering) needs the clipboard owner to be the "
                            "window it was opened with: open(owner=window), empty(), then set_data"
                        )
                    fname = None
                else:
                    fname = store.write_data(blob)
                i = st.find(fmt)
                if i >= 0:
                    st.formats[i] = (fmt, fname)
                else:
                    st.formats.append((fmt, fname))
                st.seq += 1
                store.save(st)
            self._changed = self._push = True

    def _render(self, store: Store, fmt: int, blob: bytes) -> bool:
        """The owner rendering a delayed format for a waiting reader: True when done."""
        with store.lock:
            st = store.load()
            i = st.find(fmt)
            if (
                st.rendering is None
                or st.owner is None
                or st.owner_pid != os.getpid()
                or i < 0
                or st.formats[i][1] is not None
            ):
                return False
            st.formats[i] = (fmt, store.write_data(blob))
            store.save(st)
            return True

    def set_text(self, text: str) -> None:
        """Put ``text`` on the clipboard as CF_UNICODETEXT.

        When this handle has the clipboard open, the text is added (as pywin32's
        SetClipboardText); else the clipboard is opened, emptied, set and closed.
        """
        if not isinstance(text, str):
            raise W.InvalidParameter(f"text must be a str, not {type(text).__name__}")
        with self._mutex:
            if self._store.is_open_here:
                self.set_data(F.CF_UNICODETEXT, text)
                return
            with self.opened():
                self.empty()
                self.set_data(F.CF_UNICODETEXT, text)

    # ----------------------------------------------------------------- reading

    def get_data(self, fmt: int) -> bytes | None:
        """The bytes of a format (GetClipboardData), synthesized when Windows would.

        A delayed format is rendered by its owner first (WM_RENDERFORMAT, waiting up to
        ``RENDER_TIMEOUT`` seconds). Returns None when the format is absent, or its owner
        is hung, dead or did not render it.

        Raises:
            ClipboardNotOpen: this handle does not have the clipboard open.
        """
        fmt = F.check_format(fmt)
        with self._mutex:
            self._require_open("GetClipboardData")
            with self._locked() as st:
                real = [f for f, _n in st.formats]
            if fmt in real:
                return self._real(fmt)
            for src in F.synthesis_sources(fmt):
                if src in real:
                    data = self._real(src)
                    if data is None:
                        return None
                    try:
                        return F.convert(fmt, src, data)
                    except W.InvalidData:
                        return None
            return None

    def _real(self, fmt: int) -> bytes | None:
        store = self._store
        with store.lock:
            st = store.load()
            i = st.find(fmt)
            if i < 0:
                return None
            fname, owner = st.formats[i][1], st.owner
            if fname is not None:
                return store.read_data(fname)
            if owner is None:
                return None
            st.rendering = (fmt, os.getpid())
            store.save(st)
        try:
            _messages().send_message_timeout(owner, WM_RENDERFORMAT, fmt, 0, 2, RENDER_TIMEOUT)
        except W.InvalidWindowHandle:
            self._drop_delayed(owner)
        except (W.WinIPCError, ImportError):
            pass
        with store.lock:
            st = store.load()
            st.rendering = None
            store.save(st)
            i = st.find(fmt)
            if i < 0 or st.formats[i][1] is None:
                return None
            return store.read_data(str(st.formats[i][1]))

    def _drop_delayed(self, owner: int) -> None:
        with self._locked() as st:
            if st.owner == owner:
                _forget_owner(st)
                self._store.save(st)

    def get_text(self) -> str | None:
        """The clipboard's text (CF_UNICODETEXT, synthesized from CF_TEXT/CF_OEMTEXT), or None.

        Opens and closes the clipboard around the read when this handle has not opened it.
        """
        with self._mutex:
            if not self._store.is_open_here:
                with self.opened():
                    return self.get_text()
            data = self.get_data(F.CF_UNICODETEXT)
            return None if data is None else F.decode_text(F.CF_UNICODETEXT, data)

    def _current(self) -> State:
        """The state with a dead owner's delayed formats forgotten."""
        with self._locked() as st:
            if st.owner is not None and any(n is None for _f, n in st.formats) and not _window_alive(st.owner):
                _forget_owner(st)
                self._store.save(st)
            return st

    def enum_formats(self) -> list[int]:
        """Formats on the clipboard: the real ones in the order set, then synthesized ones.

        Win32: EnumClipboardFormats (which also needs the clipboard open).

        Raises:
            ClipboardNotOpen: this handle does not have the clipboard open.
        """
        with self._mutex:
            self._require_open("EnumClipboardFormats")
            real = [f for f, _n in self._current().formats]
            return real + F.synthesized_formats(real)

    def count_formats(self) -> int:
        """How many formats :meth:`enum_formats` lists (CountClipboardFormats); no open needed."""
        with self._mutex:
            real = [f for f, _n in self._current().formats]
            return len(real) + len(F.synthesized_formats(real))

    def is_format_available(self, fmt: int) -> bool:
        """True when ``fmt`` is there, real or synthesized (IsClipboardFormatAvailable)."""
        fmt = F.check_format(fmt)
        with self._mutex:
            real = [f for f, _n in self._current().formats]
            return fmt in real or fmt in F.synthesized_formats(real)

    def sequence_number(self) -> int:
        """The clipboard's sequence number (GetClipboardSequenceNumber): rises on every change."""
        with self._mutex, self._locked() as st:
            return st.seq & 0xFFFFFFFF

    def get_owner(self) -> int | None:
        """The hwnd of the clipboard owner (GetClipboardOwner), None when it has none."""
        with self._mutex:
            owner = self._current().owner
            if owner is not None and not _window_alive(owner):
                return None
            return owner

    def get_open_window(self) -> int | None:
        """The hwnd the clipboard is open with (GetOpenClipboardWindow), else None."""
        with self._mutex:
            store = self._live()
            with store.lock:
                st = store.load()
                return st.open_hwnd if store.open_held() else None

    # ----------------------------------------------------------------- listeners

    def add_format_listener(self, hwnd: int | Any) -> None:
        """Post WM_CLIPBOARDUPDATE to ``hwnd`` after every change (AddClipboardFormatListener).

        Raises:
            InvalidWindowHandle: ``hwnd`` is not a live window.
        """
        h = _hwnd_of(hwnd, "hwnd")
        if h is None:
            raise W.InvalidWindowHandle("hwnd: a window is required")
        if not _window_alive(h):
            raise W.InvalidWindowHandle(f"AddClipboardFormatListener: {h:#x} is not a window")
        with self._mutex, self._locked() as st:
            if h not in st.listeners:
                st.listeners.append(h)
                self._store.save(st)

    def remove_format_listener(self, hwnd: int | Any) -> None:
        """Stop notifying ``hwnd`` (RemoveClipboardFormatListener).

        Raises:
            InvalidParameter: ``hwnd`` is not a listener.
        """
        h = _hwnd_of(hwnd, "hwnd")
        with self._mutex, self._locked() as st:
            if h not in st.listeners:
                raise W.InvalidParameter(f"hwnd={h!r} is not a clipboard format listener")
            st.listeners.remove(h)
            self._store.save(st)

    # ----------------------------------------------------------------- owner destruction

    def _owner_destroyed(self, hwnd: int) -> None:
        """Our window ``hwnd`` is being destroyed: render its delayed formats, give up ownership."""
        if self._released:
            return
        with self._locked() as st:
            if st.owner != hwnd:
                return
            delayed = any(n is None for _f, n in st.formats)
        if delayed:
            with contextlib.suppress(Exception):
                _messages().send_message(hwnd, WM_RENDERALLFORMATS, 0, 0)
        with self._locked() as st:
            if st.owner == hwnd:
                _forget_owner(st)
                self._store.save(st)

    # ----------------------------------------------------------------- desktop bridge

    def _pull_desktop(self) -> None:
        items = _desktop.pull(self._content())
        if not items:
            return
        store = self._store
        with store.lock:
            st = store.load()
            previous = st.owner
            names = [(fmt, store.write_data(data)) for fmt, data in items]
            st.formats = [(fmt, n) for fmt, n in names]
            st.owner = st.owner_pid = None
            st.seq += 1
            store.save(st)
        self._changed = True
        if previous is not None:
            _send_quietly(previous, WM_DESTROYCLIPBOARD, DESTROY_TIMEOUT)

    def _push_desktop(self) -> None:
        _desktop.push(self._content())

    def _content(self) -> dict[int, bytes]:
        """The rendered formats: format -> bytes (delayed ones are left out)."""
        store = self._store
        with store.lock:
            st = store.load()
            have: dict[int, bytes] = {}
            for fmt, fname in st.formats:
                if fname is not None:
                    data = store.read_data(fname)
                    if data is not None:
                        have[fmt] = data
        return have


def _forget_owner(st: State) -> None:
    st.formats = [(f, n) for f, n in st.formats if n is not None]
    st.owner = st.owner_pid = None


def _send_quietly(hwnd: int, msg: int, timeout: float) -> None:
    try:
        _messages().send_message_timeout(hwnd, msg, 0, 0, 2, timeout)
    except (W.WinIPCError, ImportError):
        pass


_instances: weakref.WeakSet[Clipboard] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hook_added = False


def _on_destroy(hwnd: int) -> None:
    for cb in list(_instances):
        with contextlib.suppress(Exception):
            cb._owner_destroyed(hwnd)


def _watch_destroy() -> None:
    """Register the destroy hook once, when a window of ours first owns a clipboard."""
    global _hook_added
    with _hook_lock:
        if _hook_added:
            return
        try:
            _messages().add_destroy_hook(_on_destroy)
        except ImportError:
            return
        _hook_added = True


def register_format(name: str) -> int:
    """The id (0xC000..0xFFFF) of a named format, the same in every process (RegisterClipboardFormat).

    Shares the atom table of ``register_window_message``: the same string (compared
    case-insensitively) gives the same id. Raises InvalidParameter for "" or > 255 chars.
    """
    return atoms.add(name)


_PREDEFINED_NAMES = {
    F.CF_TEXT: "CF_TEXT", F.CF_BITMAP: "CF_BITMAP", F.CF_METAFILEPICT: "CF_METAFILEPICT",
    F.CF_SYLK: "CF_SYLK", F.CF_DIF: "CF_DIF", F.CF_TIFF: "CF_TIFF", F.CF_OEMTEXT: "CF_OEMTEXT",
    F.CF_DIB: "CF_DIB", F.CF_PALETTE: "CF_PALETTE", F.CF_PENDATA: "CF_PENDATA",
    F.CF_RIFF: "CF_RIFF", F.CF_WAVE: "CF_WAVE", F.CF_UNICODETEXT: "CF_UNICODETEXT",
    F.CF_ENHMETAFILE: "CF_ENHMETAFILE", F.CF_HDROP: "CF_HDROP", F.CF_LOCALE: "CF_LOCALE",
    F.CF_DIBV5: "CF_DIBV5",
}


def get_format_name(fmt: int) -> str:
    """The name of a registered format (GetClipboardFormatName).

    Raises:
        InvalidParameter: ``fmt`` is a predefined format (CF_TEXT, ...) or not a registered
            one: GetClipboardFormatName fails for those on Windows too.
    """
    fmt = F.check_format(fmt)
    if fmt < F.REGISTERED_FIRST:
        what = _PREDEFINED_NAMES.get(fmt, f"format {fmt}")
        raise W.InvalidParameter(f"fmt={fmt} ({what}) is a predefined format, which has no registered name")
    return atoms.name_of(fmt)


def _after_fork() -> None:
    global _hook_added
    _hook_added = False


os.register_at_fork(after_in_child=_after_fork)
