"""Window classes and windows: RegisterClass, CreateWindowEx, DestroyWindow, FindWindow(Ex),
EnumWindows, IsWindow.

A window is a namespace object ``Global\\wnd.<hwnd as 8 hex digits>`` of type ``window``,
held by its process (so it vanishes when the process dies, also when killed). Its record
says ``{class, title, message_only, tid, hwnd}`` (the title at creation); its directory
holds the listening socket ``wnd.sock``, the current title in ``title`` (replaced
atomically by set_title) and the hung ``stamp`` (see ``_queue``). Windows are listed by
reading the namespace: those whose record a user cannot read are invisible to that user.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends import posix_messages as _os
from winipc._core import names, namespace
from winipc._core.security import SecurityAttributes
from winipc._wire import messages as wire
from winipc.messages._queue import (
    SOCKET_NAME,
    STAMP_FILE,
    TITLE_FILE,
    TYPE,
    MessageQueue,
    current,
    lookup,
    window_name,
)
from winipc.messages._types import (
    HWND_MAX,
    HWND_MESSAGE,
    HWND_MIN,
    WM_CLOSE,
    WM_CREATE,
    WM_DESTROY,
    WindowInfo,
    WindowProc,
    check_result,
    hwnd_value,
    is_window_number,
)

log = logging.getLogger("winipc.messages")

#: the longest title (characters)
MAX_TITLE = 32767
_TITLE_READ = MAX_TITLE * 4 + 1
_HWND_TRIES = 64


# --------------------------------------------------------------------------- classes


@dataclass
class _Class:
    name: str
    atom: int
    wndproc: WindowProc | None


_classes: dict[str, _Class] = {}
_classes_lock = threading.Lock()


def _check_class_name(name: Any, what: str = "class_name") -> str:
    if not isinstance(name, str) or not name or len(name) > 255 or "\0" in name:
        raise W.InvalidParameter(f"{what} must be 1..255 characters without NUL, not {name!r}")
    return name


def register_class(name: str, wndproc: WindowProc | None = None) -> int:
    """Register a window class for this process (Win32: RegisterClass / RegisterClassEx).

    Args:
        name: the class name, 1..255 characters, case-insensitive.
        wndproc: the class's window procedure ``(hwnd, msg, wparam, lparam) -> int | None``;
            None uses :func:`def_window_proc`.

    Returns:
        The class atom (0xC000..0xFFFF, from the machine's atom table, as Windows'
        class atoms come from the user atom table).

    Raises:
        ClassAlreadyExists: (1410) this process registered the name already.
        InvalidParameter: a bad name or a wndproc that is not callable.
    """
    _check_class_name(name, "name")
    if wndproc is not None and not callable(wndproc):
        raise W.InvalidParameter(f"wndproc must be callable or None, not {wndproc!r}")
    from winipc._core import atoms

    key = names.fold(name)
    with _classes_lock:
        if key in _classes:
            raise W.ClassAlreadyExists(f"window class {name!r} is registered already in this process")
        atom = atoms.add(name)
        _classes[key] = _Class(name, atom, wndproc)
    return atom


def unregister_class(name: str) -> None:
    """Remove a window class of this process (Win32: UnregisterClass).

    Raises:
        ClassDoesNotExist: (1411) no class of that name.
        ClassHasWindows: (1412) windows of the class still exist.
    """
    _check_class_name(name, "name")
    key = names.fold(name)
    with _classes_lock:
        if key not in _classes:
            raise W.ClassDoesNotExist(f"window class {name!r} is not registered in this process")
        if any(names.fold(w.class_name) == key for w in list(_registry.values())):
            raise W.ClassHasWindows(f"window class {name!r} still has windows")
        del _classes[key]


def registered_classes() -> list[str]:
    """The names of this process's window classes."""
    with _classes_lock:
        return [c.name for c in _classes.values()]


# --------------------------------------------------------------------------- windows

_registry: dict[int, Window] = {}
_registry_lock = threading.Lock()
_hooks: list[Callable[[int], None]] = []


def add_destroy_hook(fn: Callable[[int], None]) -> None:
    """Call ``fn(hwnd)`` at the start of every destroy of a window of this process.

    It runs on the destroying thread (the owner) before WM_DESTROY; the clipboard uses it
    to render its formats and give up ownership. Exceptions are logged and ignored.
    """
    if not callable(fn):
        raise W.InvalidParameter(f"the destroy hook must be callable, not {fn!r}")
    _hooks.append(fn)


def def_window_proc(hwnd: int, msg: int, wparam: int, lparam: Any) -> int:
    """The default window procedure (Win32: DefWindowProc).

    WM_CLOSE destroys the window (DestroyWindow); every other message returns 0.
    """
    if msg == WM_CLOSE:
        win = _registry.get(hwnd_value(hwnd))
        if win is not None:
            win.destroy()
    return 0


def _thread_alive(ident: int) -> bool:
    return any(t.ident == ident for t in threading.enumerate())


class Window:
    """A window: a message endpoint owned by the thread that created it.

    Made by :func:`create_window`. Top-level windows are found by find_window and
    enum_windows and get broadcasts; message-only windows (parent HWND_MESSAGE) are found
    only by ``find_window_ex(HWND_MESSAGE, ...)`` and get no broadcasts.

    Attributes:
        hwnd: the handle, unique on the machine (even, 0x10000..0x7FFFFFFE).
        class_name: the class name as registered.
        message_only: True for a message-only window.
        pid: the owning process's id.
        tid: the owning thread's native id.
        uid: the owning user's id.
    """

    def __init__(self, hwnd: int, class_name: str, title: str, message_only: bool, proc: WindowProc,
                 ref: namespace.NamedRef, listener: socket.socket, stamp_fd: int,
                 security: SecurityAttributes, queue: MessageQueue) -> None:
        self.hwnd = hwnd
        self.class_name = class_name
        self.message_only = message_only
        self.pid = os.getpid()
        self.tid = queue.tid
        self.uid = ref.record.owner
        self._title = title
        self._proc = proc
        self._ref = ref
        self._listener = listener
        self._stamp_fd = stamp_fd
        self._security = security
        self._queue = queue
        self._ident = threading.get_ident()
        self._alive = True
        self._destroying = False

    # ------------------------------------------------------------------ properties
    @property
    def title(self) -> str:
        """The window's text (Win32: GetWindowText)."""
        return self._title

    def set_title(self, title: str) -> None:
        """Change the window's text (Win32: SetWindowText); find_window sees it at once.

        Raises:
            InvalidParameter: not a str, or longer than MAX_TITLE characters.
            InvalidWindowHandle: the window is destroyed.
        """
        data = _encode_title(title)
        self._check_alive()
        _os.replace_file(self._ref.path, TITLE_FILE, data, self._security.file_mode())
        self._title = title

    @property
    def wndproc(self) -> WindowProc:
        """The window procedure (settable: Win32 SetWindowLongPtr(GWLP_WNDPROC))."""
        return self._proc

    @wndproc.setter
    def wndproc(self, proc: WindowProc) -> None:
        if not callable(proc):
            raise W.InvalidParameter(f"wndproc must be callable, not {proc!r}")
        self._proc = proc

    @property
    def closed(self) -> bool:
        """True once the window is destroyed."""
        return not self._alive

    @property
    def path(self) -> str:
        """The window's directory in the namespace."""
        return self._ref.path

    def _check_alive(self) -> None:
        if not self._alive:
            raise W.InvalidWindowHandle(f"window {self.hwnd:#x} is destroyed")

    def _call(self, msg: int, wparam: int, lparam: Any) -> int:
        """Run the window procedure directly (a message from the owning thread)."""
        return check_result(self._proc(self.hwnd, msg, wparam, lparam), self.hwnd, msg)

    # ------------------------------------------------------------------ destroy
    def destroy(self) -> None:
        """Destroy the window (Win32: DestroyWindow).

        The destroy hooks run, then the window procedure gets WM_DESTROY, then the window
        leaves the namespace: pending and future senders get ERROR_INVALID_WINDOW_HANDLE
        (1400), posted messages for it are discarded. Destroying twice is harmless.

        Raises:
            AccessDenied: (5) called from another thread than the owner while the owner
                thread is alive (Windows refuses too).
        """
        self._destroy(force=False)

    close = destroy

    def _destroy(self, force: bool) -> None:
        if not self._alive or self._destroying:
            return
        if not force and threading.get_ident() != self._ident and _thread_alive(self._ident):
            raise W.AccessDenied(
                f"window {self.hwnd:#x} belongs to thread {self.tid}; only its thread can destroy it"
            )
        self._destroying = True
        try:
            for hook in list(_hooks):
                try:
                    hook(self.hwnd)
                except Exception:
                    log.exception("window %#x: a destroy hook raised", self.hwnd)
            self._proc(self.hwnd, WM_DESTROY, 0, 0)
        finally:
            self._teardown()

    def _teardown(self) -> None:
        self._alive = False
        with _registry_lock:
            _registry.pop(self.hwnd, None)
        self._queue.remove_window(self)
        B.unlink(os.path.join(self._ref.path, SOCKET_NAME))
        self._listener.close()
        B.close_fd(self._stamp_fd)
        self._ref.release()

    # ------------------------------------------------------------------ protocol
    def __int__(self) -> int:
        return self.hwnd

    def __enter__(self) -> Window:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def __repr__(self) -> str:
        kind = "message-only " if self.message_only else ""
        state = "" if self._alive else " destroyed"
        return f"<{kind}Window {self.hwnd:#x} class={self.class_name!r} title={self._title!r}{state}>"


def _encode_title(title: Any) -> bytes:
    if not isinstance(title, str):
        raise W.InvalidParameter(f"title must be a str, not {title!r}")
    if len(title) > MAX_TITLE:
        raise W.InvalidParameter(f"title is {len(title)} characters; the maximum is {MAX_TITLE}")
    return title.encode("utf-8", "surrogatepass")


def create_window(
    class_name: str,
    title: str = "",
    *,
    parent: int | None = None,
    wndproc: WindowProc | None = None,
    security: SecurityAttributes | None = None,
) -> Window:
    """Create a window owned by the calling thread (Win32: CreateWindowEx).

    Args:
        class_name: a class registered in this process with :func:`register_class`.
        title: the window text, at most MAX_TITLE characters.
        parent: None (or 0) for a top-level window; HWND_MESSAGE for a message-only one.
        wndproc: overrides the class's window procedure for this window.
        security: who may find it and send to it (the CONNECT right); owner only by
            default.

    Returns:
        The :class:`Window`; its procedure got WM_CREATE before this returns.

    Raises:
        ClassDoesNotExist: (1407 ERROR_CANNOT_FIND_WND_CLASS) no such class here.
        NotSupported: ``parent`` is another window (child windows are not supported).
        InvalidParameter: a bad title or wndproc.
        InvalidWindowHandle: the procedure returned -1 for WM_CREATE (creation refused).
    """
    _check_class_name(class_name)
    with _classes_lock:
        cls = _classes.get(names.fold(class_name))
    if cls is None:
        raise W.ClassDoesNotExist(f"window class {class_name!r} is not registered in this process",
                                  winerror=W.ERROR_CANNOT_FIND_WND_CLASS)
    tdata = _encode_title(title)
    if parent is None or (isinstance(parent, int) and not isinstance(parent, bool) and parent == 0):
        message_only = False
    elif hwnd_value(parent, "parent") == HWND_MESSAGE:
        message_only = True
    else:
        raise W.NotSupported(f"parent {parent!r}: child windows are not supported; use None or HWND_MESSAGE")
    if wndproc is not None and not callable(wndproc):
        raise W.InvalidParameter(f"wndproc must be callable or None, not {wndproc!r}")
    proc: WindowProc = wndproc or cls.wndproc or def_window_proc
    sec = security if security is not None else SecurityAttributes()
    if not isinstance(sec, SecurityAttributes):
        raise W.InvalidParameter(f"security must be SecurityAttributes or None, not {security!r}")
    queue = current()
    made: list[socket.socket] = []
    stamps: list[int] = []

    def populate(tmp: str) -> None:
        made.append(_os.listen(tmp, SOCKET_NAME, sec.file_mode(socket_file=True)))
        B.close_fd(B.write_new_file(tmp, TITLE_FILE, tdata, sec.file_mode()))
        stamps.append(B.write_new_file(tmp, STAMP_FILE, b"", sec.file_mode()))

    for _ in range(_HWND_TRIES):
        hwnd = HWND_MIN + 2 * secrets.randbelow((HWND_MAX - HWND_MIN) // 2 + 1)
        made.clear()
        stamps.clear()
        attrs = {"class": cls.name, "title": title, "message_only": message_only, "tid": queue.tid,
                 "hwnd": hwnd, "wire": wire.VERSION}
        try:
            ref, created = namespace.create(window_name(hwnd), TYPE, attrs, sec, populate=populate)
        except BaseException:
            for s in made:
                s.close()
            _os.close_fds(stamps)
            raise
        if not created:  # the hwnd is taken: draw another
            for s in made:
                s.close()
            _os.close_fds(stamps)
            ref.release()
            continue
        win = Window(hwnd, cls.name, title, message_only, proc, ref, made[-1], stamps[-1], sec, queue)
        with _registry_lock:
            _registry[hwnd] = win
        queue.add_window(win)
        try:
            refused = win._call(WM_CREATE, 0, 0) == -1
        except BaseException:
            win._destroy(force=True)
            raise
        if refused:
            win._destroy(force=True)
            raise W.InvalidWindowHandle(f"the window procedure refused WM_CREATE (returned -1) for class {cls.name!r}")
        return win
    raise W.AccessDenied(f"no free window handle after {_HWND_TRIES} tries")


def own_window(hwnd: int) -> Window | None:
    """A live window of this process with this handle, if any."""
    return _registry.get(hwnd)


def live_windows() -> list[Window]:
    with _registry_lock:
        return list(_registry.values())


@atexit.register
def _destroy_all() -> None:
    """At interpreter exit the process's live windows are destroyed (so hooks run)."""
    for win in live_windows():
        try:
            win._destroy(force=True)
        except Exception:
            pass


# --------------------------------------------------------------------------- finding


def _read_title(path: str, fallback: str) -> str:
    raw = _os.read_small(os.path.join(path, TITLE_FILE), _TITLE_READ)
    if raw is None:
        return fallback
    return raw.decode("utf-8", "replace")


def _info(hwnd: int, path: str, rec: namespace.ObjectRecord) -> WindowInfo:
    a = rec.attrs
    return WindowInfo(
        hwnd,
        str(a.get("class", "")),
        _read_title(path, str(a.get("title", ""))),
        rec.creator_pid,
        int(a.get("tid", 0)),
        rec.owner,
        bool(a.get("message_only", False)),
    )


def window_info(hwnd: int | Window) -> WindowInfo:
    """What the namespace says about a window of any process.

    Raises:
        InvalidWindowHandle: (1400) no live window has this handle.
        AccessDenied: (5) the window is another user's and closed to us.
    """
    h = hwnd_value(hwnd)
    win = _registry.get(h)
    if win is not None:
        return WindowInfo(h, win.class_name, win.title, win.pid, win.tid, win.uid, win.message_only)
    path, rec = lookup(h)
    return _info(h, path, rec)


def is_window(hwnd: int | Window) -> bool:
    """True for a live window we can see (Win32: IsWindow)."""
    h = hwnd_value(hwnd)
    if h in _registry:
        return True
    if not is_window_number(h):
        return False
    try:
        lookup(h)
    except W.WinIPCError:
        return False
    return True


def _all_windows() -> list[WindowInfo]:
    """Every live window this user can read, newest first (Windows' Z order: last created on top)."""
    found: list[tuple[float, WindowInfo]] = []
    for obj in namespace.list_objects():
        if obj.type != TYPE or obj.scope != "global":
            continue
        try:
            oname = names.parse(obj.name)
            hwnd = int(oname.name.split(".", 1)[1], 16)
        except (W.WinIPCError, ValueError, IndexError):
            continue
        if not obj.alive:
            with contextlib.suppress(W.WinIPCError):
                lookup(hwnd)  # sweeps our own dead leftovers
            continue
        try:
            path, rec = lookup(hwnd)
        except W.WinIPCError:
            continue
        found.append((rec.created, _info(hwnd, path, rec)))
    found.sort(key=lambda p: (-p[0], p[1].hwnd))
    return [info for _created, info in found]


def _matches(info: WindowInfo, class_name: str | None, title: str | None) -> bool:
    if class_name is not None and names.fold(info.class_name) != names.fold(class_name):
        return False
    return title is None or names.fold(info.title) == names.fold(title)


def _check_opt_str(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise W.InvalidParameter(f"{what} must be a str or None, not {value!r}")
    return value


def enum_windows() -> list[int]:
    """The handles of the top-level windows this user can see, newest first (Win32: EnumWindows)."""
    return [i.hwnd for i in _all_windows() if not i.message_only]


def find_window(class_name: str | None, title: str | None = None) -> int | None:
    """The first top-level window with this class and title (Win32: FindWindow).

    Args:
        class_name: the class name, case-insensitive; None matches any.
        title: the window text, case-insensitive; None matches any.

    Returns:
        The hwnd, or None when no visible top-level window matches. Message-only
        windows are never found here.
    """
    _check_opt_str(class_name, "class_name")
    _check_opt_str(title, "title")
    for info in _all_windows():
        if not info.message_only and _matches(info, class_name, title):
            return info.hwnd
    return None


def find_window_ex(parent: int | None, child_after: int | None, class_name: str | None,
                   title: str | None = None) -> int | None:
    """Find a window under ``parent`` (Win32: FindWindowEx).

    Args:
        parent: None (or 0) searches top-level windows, HWND_MESSAGE message-only ones;
            another window has no children here (None is returned).
        child_after: start after this window in the order (None = from the first).
        class_name, title: as :func:`find_window`.

    Raises:
        InvalidWindowHandle: ``parent`` is not HWND_MESSAGE, None, 0 or a live window.
    """
    _check_opt_str(class_name, "class_name")
    _check_opt_str(title, "title")
    if parent is None or parent == 0:
        want_message_only = False
    elif hwnd_value(parent, "parent") == HWND_MESSAGE:
        want_message_only = True
    else:
        if not is_window(hwnd_value(parent, "parent")):
            raise W.InvalidWindowHandle(f"parent {parent!r} is not a window")
        return None
    after = None if child_after is None or child_after == 0 else hwnd_value(child_after, "child_after")
    started = after is None
    for info in _all_windows():
        if info.message_only != want_message_only:
            continue
        if not started:
            started = info.hwnd == after
            continue
        if _matches(info, class_name, title):
            return info.hwnd
    return None
