"""pywin32's ``win32gui``, the window-message part, over :mod:`winipc.messages`.

After :func:`winipc.win32.install` this module is importable as ``win32gui``. Windows
are message endpoints (never drawn): a pywin32 script that registers a class, creates a
window (top-level or message-only, parent ``HWND_MESSAGE``), pumps messages and talks to
other processes' windows with ``FindWindow`` / ``SendMessage`` / ``PostMessage`` runs
unchanged. docs/win32.md lists every difference from pywin32.

Shapes kept from pywin32:

- window procedures are ``fn(hwnd, msg, wparam, lparam) -> int`` or a dict
  ``{msg: fn}`` (messages missing from the dict go to :func:`DefWindowProc`); ``None``
  as a result is 0; an exception in a procedure is printed and the result is 0.
- ``GetMessage`` / ``PeekMessage`` return ``(rc, msg)``; a message is pywin32's PyMSG
  tuple ``(hwnd, message, wparam, lparam, time, (x, y))`` (``time`` in milliseconds
  since boot, as GetTickCount; the point is always ``(0, 0)``).
- ``SendMessageTimeout`` returns ``(1, result)`` and raises ``pywintypes.error`` (1460
  ERROR_TIMEOUT; 1400 for a dead window); ``SendMessage`` never raises for a failed
  send: it returns 0 and ``win32api.GetLastError()`` tells why, as in pywin32.
- timeouts are milliseconds.

WM_COPYDATA: ``SendMessage(hwnd, WM_COPYDATA, sender_hwnd, data)`` with ``data`` a
bytes-like object (``dwData`` 0) or a ``(dwData, data)`` tuple; the receiving procedure
gets ``lparam`` = a :class:`winipc.messages.CopyData` (``.dwdata``, ``.data``: a read-only
memoryview valid during the call, ``.sender_hwnd``, ``.sender_pid``). pywin32's
``struct.pack``-ed COPYDATASTRUCT addresses cannot cross processes here.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Any

from winipc import errors as W
from winipc import messages as M
from winipc.win32._handles import PyHANDLE
from winipc.win32._support import api, api_error, dword, error, set_last_error
from winipc.win32.win32con import (
    HWND_MESSAGE,
    PM_NOREMOVE,
    PM_REMOVE,
    WM_CLOSE,
    WM_COPYDATA,
    WM_GETTEXTLENGTH,
    WM_NCCREATE,
    WM_QUIT,
    WM_SETTEXT,
    WS_CHILD,
)

UNICODE = True

ERROR_CANNOT_FIND_WND_CLASS = 1407
ERROR_MESSAGE_SYNC_ONLY = 1159
_NO_MESSAGE = "No error message is available"

#: a PyMSG tuple: (hwnd, message, wparam, lparam, time_ms, (x, y))
MSG = tuple[int, int, int, Any, int, tuple[int, int]]
_EMPTY_MSG: MSG = (0, 0, 0, 0, 0, (0, 0))

#: classes the system has on Windows; created on first use, with DefWindowProc behind them
_SYSTEM_CLASSES = ("STATIC", "BUTTON", "EDIT", "LISTBOX", "COMBOBOX", "SCROLLBAR", "Message")

_lock = threading.RLock()
_classes: dict[int, WNDCLASS] = {}  # atom -> the WNDCLASS registered with it
_atoms: dict[str, int] = {}  # class name (casefolded) -> atom
_windows: dict[int, M.Window] = {}  # windows created through this module
_hook_installed = False
_tls = threading.local()


def _error0(funcname: str) -> error:
    """The error pywin32 raises when the API failed without setting a last error."""
    set_last_error(0)
    return error(0, funcname, _NO_MESSAGE)


# ---------------------------------------------------------------------------- arguments


def _hwnd(value: Any, what: str = "hwnd") -> int:
    """A window handle argument: an int, a PyHANDLE or None (0)."""
    if value is None:
        return 0
    if isinstance(value, PyHANDLE):
        return value.handle
    if isinstance(value, M.Window):
        return value.hwnd
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "__index__"):
            value = value.__index__()
        else:
            raise TypeError(f"{what} must be an int window handle, not {type(value).__name__}")
    if not -(2**63) <= value < 2**64:
        raise OverflowError(f"{what}={value!r} does not fit a HWND")
    return int(value)


def _uint(value: Any, what: str) -> int:
    """A UINT argument (message ids, flags); pywin32's signed spelling is accepted."""
    return dword(value, what)


def _wparam(value: Any) -> int:
    """A WPARAM: None is 0, negative values wrap as C's cast does."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int):
        if hasattr(value, "__index__"):
            value = value.__index__()
        else:
            raise TypeError(
                f"wparam must be an int, not {type(value).__name__} "
                "(pointer parameters are carried as lparam bytes here)"
            )
    if not -(2**63) <= value < 2**64:
        raise OverflowError(f"wparam={value!r} does not fit a WPARAM")
    return int(value) & 0xFFFF_FFFF_FFFF_FFFF


def _lparam(value: Any) -> Any:
    """An LPARAM: None is 0; an int (unsigned spellings wrap to signed); a str becomes
    the bytes of a NUL-terminated UTF-16 string (what Windows would point to); any other
    bytes-like object is carried as bytes."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise OverflowError(f"lparam={value!r} does not fit an LPARAM")
        return value - 2**64 if value >= 2**63 else value
    if isinstance(value, str):
        return value.encode("utf-16-le", errors="surrogatepass") + b"\0\0"
    if isinstance(value, bytes):
        return value
    try:
        return memoryview(value).tobytes()
    except TypeError:
        pass
    if hasattr(value, "__index__"):
        return _lparam(value.__index__())
    raise TypeError(f"lparam must be an int, str or a buffer, not {type(value).__name__}")


def _copydata(lparam: Any) -> tuple[int, bytes]:
    """(dwData, payload) from a WM_COPYDATA lparam: bytes-like or (dwData, bytes-like)."""
    if isinstance(lparam, tuple):
        if len(lparam) != 2:
            raise TypeError("a WM_COPYDATA lparam tuple is (dwData, data)")
        dwdata, data = lparam
        if isinstance(dwdata, bool) or not isinstance(dwdata, int):
            raise TypeError(f"dwData must be an int, not {type(dwdata).__name__}")
        if not 0 <= dwdata < 2**64:
            raise OverflowError(f"dwData={dwdata!r} does not fit a ULONG_PTR")
    else:
        dwdata, data = 0, lparam
    if isinstance(data, str) or data is None or isinstance(data, int):
        raise TypeError(
            "WM_COPYDATA's lparam must be bytes-like or a (dwData, bytes) tuple; "
            "COPYDATASTRUCT addresses cannot cross processes here (see docs/win32.md)"
        )
    return dwdata, memoryview(data).tobytes()


def _class_name(cls: Any, funcname: str) -> str | None:
    """A class argument (name, atom from RegisterClass, or None) as a class name."""
    if cls is None:
        return None
    if isinstance(cls, str):
        if cls == "":
            raise api_error(W.ERROR_INVALID_NAME, funcname)
        return cls
    if isinstance(cls, bool) or not isinstance(cls, int):
        raise TypeError(f"className must be a str, an atom or None, not {type(cls).__name__}")
    with _lock:
        wc = _classes.get(cls)
    if wc is None:
        raise api_error(ERROR_CANNOT_FIND_WND_CLASS, funcname)
    return str(wc.lpszClassName)


def _title(value: Any, what: str = "windowTitle") -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{what} must be a str or None, not {type(value).__name__}")


# ---------------------------------------------------------------------------- WNDCLASS


class WNDCLASS:
    """pywin32's PyWNDCLASS: describe a window class, then pass it to :func:`RegisterClass`.

    Attributes:
        lpszClassName: the class name (str), required.
        lpfnWndProc: the window procedure ``fn(hwnd, msg, wparam, lparam) -> int``, or a
            dict ``{msg: fn}``; None means :func:`DefWindowProc` for everything.
        style, cbWndExtra, hInstance, hIcon, hCursor, hbrBackground, lpszMenuName:
            accepted and kept (nothing is drawn here).
    """

    def __init__(self) -> None:
        self.style = 0
        self.cbWndExtra = 0
        self.hInstance = 0
        self.hIcon = 0
        self.hCursor = 0
        self.hbrBackground = 0
        self.lpszMenuName: str | None = None
        self._class_name: str | None = None
        self._wndproc: Any = None

    @property
    def lpszClassName(self) -> str | None:
        """The class name."""
        return self._class_name

    @lpszClassName.setter
    def lpszClassName(self, value: Any) -> None:
        if not isinstance(value, str):
            raise TypeError("Object must be a Unicode")
        self._class_name = value

    @property
    def lpfnWndProc(self) -> Any:
        """The window procedure: a callable or a dict of callables keyed by message."""
        return self._wndproc

    @lpfnWndProc.setter
    def lpfnWndProc(self, value: Any) -> None:
        if not callable(value) and not isinstance(value, dict):
            raise TypeError("lpfnWndProc must be callable, or a dictionary")
        self._wndproc = value

    def SetDialogProc(self) -> None:
        """Accepted for compatibility; dialogs do not exist here."""

    def __repr__(self) -> str:
        return f"<PyWNDCLASS lpszClassName={self._class_name!r}>"


PyWNDCLASS = WNDCLASS


def _result(value: Any) -> int:
    """A procedure's return value as an LRESULT (None and False are 0)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "__index__"):
        return int(value.__index__())
    raise TypeError(f"WNDPROC return value cannot be converted to LRESULT: {value!r}")


def _adapt(wndproc: Any) -> M.WindowProc:
    """winipc's window procedure for a pywin32 one (callable, dict or None)."""

    def proc(hwnd: int, msg: int, wparam: int, lparam: Any) -> int:
        fn = wndproc.get(msg) if isinstance(wndproc, dict) else wndproc
        if fn is None:
            return DefWindowProc(hwnd, msg, wparam, lparam)
        try:
            return _result(fn(hwnd, msg, wparam, lparam))
        except Exception:
            # pywin32 reports a failing Python WNDPROC and answers 0
            print("Python WNDPROC handler failed", file=sys.stderr)
            traceback.print_exc()
            return 0

    return proc


# ---------------------------------------------------------------------------- classes


@api("RegisterClass")
def RegisterClass(wndClass: Any) -> int:
    """Register a window class for this process (Win32: RegisterClass).

    Returns:
        The class atom; pass it or the name to ``CreateWindowEx`` / ``UnregisterClass``.

    Raises:
        TypeError: not a WNDCLASS.
        pywintypes.error: 1410 (ERROR_CLASS_ALREADY_EXISTS) the name is registered in
            this process; 87 no class name.
    """
    if not isinstance(wndClass, WNDCLASS):
        raise TypeError("The object must be a WNDCLASS object")
    name = wndClass.lpszClassName
    if not name:
        raise api_error(W.ERROR_INVALID_PARAMETER, "RegisterClass", "lpszClassName is required")
    atom = M.register_class(name, _adapt(wndClass.lpfnWndProc))
    with _lock:
        _classes[atom] = wndClass
        _atoms[name.casefold()] = atom
    return int(atom)


@api("UnregisterClass")
def UnregisterClass(atom: Any, hinst: Any = None) -> None:
    """Unregister a window class (Win32: UnregisterClass).

    Args:
        atom: the atom RegisterClass returned, or the class name.
        hinst: accepted (one module per process here).

    Raises:
        pywintypes.error: 1411 (ERROR_CLASS_DOES_NOT_EXIST) unknown class; 1412
            (ERROR_CLASS_HAS_WINDOWS) windows of the class still exist.
    """
    if isinstance(atom, str):
        name = atom
    elif isinstance(atom, int) and not isinstance(atom, bool):
        with _lock:
            wc = _classes.get(atom)
        if wc is None or wc.lpszClassName is None:
            raise api_error(W.ERROR_CLASS_DOES_NOT_EXIST, "UnregisterClass")
        name = wc.lpszClassName
    else:
        raise TypeError(f"atom must be an int or a str, not {type(atom).__name__}")
    M.unregister_class(name)
    with _lock:
        found = _atoms.pop(name.casefold(), None)
        if found is not None:
            _classes.pop(found, None)


def _ensure_class(name: str) -> None:
    """Register a system class (STATIC, BUTTON, ...) on first use, as Windows has them."""
    for sys_name in _SYSTEM_CLASSES:
        if name.casefold() == sys_name.casefold():
            with _lock:
                if name.casefold() in _atoms:
                    return
                wc = WNDCLASS()
                wc.lpszClassName = sys_name
                try:
                    atom = M.register_class(sys_name, _adapt(None))
                except W.WinIPCError as exc:
                    if exc.winerror != W.ERROR_CLASS_ALREADY_EXISTS:
                        raise
                    return
                _classes[atom] = wc
                _atoms[sys_name.casefold()] = atom
            return


# ---------------------------------------------------------------------------- windows


def _forget(hwnd: int) -> None:
    with _lock:
        _windows.pop(hwnd, None)


def _install_hook() -> None:
    global _hook_installed
    with _lock:
        if not _hook_installed:
            M.add_destroy_hook(_forget)
            _hook_installed = True


@api("CreateWindowEx")
def CreateWindowEx(
    dwExStyle: Any,
    className: Any,
    windowTitle: Any,
    style: Any,
    x: Any,
    y: Any,
    width: Any,
    height: Any,
    parent: Any,
    menu: Any,
    hinstance: Any,
    reserved: Any = None,
) -> int:
    """Create a window owned by the calling thread (Win32: CreateWindowEx).

    Args:
        dwExStyle, style, x, y, width, height, menu, hinstance: accepted and ignored
            (nothing is drawn), except ``WS_CHILD`` in ``style`` (child windows are not
            supported: 50).
        className: a class name or the atom from RegisterClass (STATIC, BUTTON and the
            other system class names work too, with DefWindowProc behind them).
        windowTitle: the title FindWindow matches (None is "").
        parent: 0/None for a top-level window; ``HWND_MESSAGE`` (-3) for a message-only
            window; another window makes an owned top-level window.
        reserved: must be None.

    Returns:
        The new window's HWND. Its procedure receives WM_CREATE before this returns
        (a procedure returning -1 from WM_CREATE makes the creation fail with 1400).

    Raises:
        pywintypes.error: 1407 (ERROR_CANNOT_FIND_WND_CLASS) unknown class; 1400 the
            parent is not a window.
    """
    if reserved is not None:
        raise TypeError("This param must be None")
    name = _class_name(className, "CreateWindowEx")
    if name is None:
        raise api_error(ERROR_CANNOT_FIND_WND_CLASS, "CreateWindowEx")
    title = _title(windowTitle) or ""
    _uint(style, "style")
    _uint(dwExStyle, "dwExStyle")
    parent_hwnd = _hwnd(parent, "parent")
    kind: int | None = None
    if parent_hwnd == HWND_MESSAGE:
        kind = M.HWND_MESSAGE
    elif parent_hwnd != 0:
        if dword(style, "style") & WS_CHILD:
            raise api_error(W.ERROR_NOT_SUPPORTED, "CreateWindowEx", "child windows are not supported")
        if not M.is_window(parent_hwnd):
            raise api_error(W.ERROR_INVALID_WINDOW_HANDLE, "CreateWindowEx")
    _ensure_class(name)
    _install_hook()
    try:
        window = M.create_window(name, title, parent=kind)  # sends WM_CREATE
    except W.ClassDoesNotExist as exc:
        raise api_error(ERROR_CANNOT_FIND_WND_CLASS, "CreateWindowEx") from exc
    hwnd = window.hwnd
    with _lock:
        _windows[hwnd] = window
    return int(hwnd)


def CreateWindow(
    className: Any,
    windowTitle: Any,
    style: Any,
    x: Any,
    y: Any,
    width: Any,
    height: Any,
    parent: Any,
    menu: Any,
    hinstance: Any,
    reserved: Any = None,
) -> int:
    """``CreateWindowEx`` with no extended style (Win32: CreateWindow)."""
    return CreateWindowEx(
        0, className, windowTitle, style, x, y, width, height, parent, menu, hinstance, reserved
    )


@api("DestroyWindow")
def DestroyWindow(hwnd: Any) -> None:
    """Destroy a window of the calling thread (Win32: DestroyWindow).

    Its procedure gets WM_DESTROY; afterwards senders get 1400.

    Raises:
        pywintypes.error: 1400 not a window; 5 (ERROR_ACCESS_DENIED) a window of
            another thread or process, as on Windows.
    """
    h = _hwnd(hwnd)
    with _lock:
        window = _windows.get(h)
    if window is None or window.closed:
        if h and M.is_window(h):
            raise api_error(W.ERROR_ACCESS_DENIED, "DestroyWindow")
        raise api_error(W.ERROR_INVALID_WINDOW_HANDLE, "DestroyWindow")
    if window.tid != threading.get_native_id():
        raise api_error(W.ERROR_ACCESS_DENIED, "DestroyWindow")
    _forget(h)
    window.destroy()


def DefWindowProc(hwnd: Any, message: Any, wparam: Any, lparam: Any) -> int:
    """The default processing of a message (Win32: DefWindowProc).

    WM_CLOSE destroys the window (when it belongs to this thread); WM_SETTEXT sets the
    title (lparam a str, or UTF-16 bytes as :func:`SendMessage` carries a str) and
    returns 1; WM_GETTEXTLENGTH returns the title's length; WM_NCCREATE returns 1;
    everything else returns 0.
    """
    h = _hwnd(hwnd)
    msg = _uint(message, "message")
    if msg == WM_CLOSE:
        with _lock:
            window = _windows.get(h)
        if window is not None and not window.closed and window.tid == threading.get_native_id():
            _forget(h)
            window.destroy()
        return 0
    if msg == WM_NCCREATE:
        return 1
    if msg == WM_SETTEXT:
        text = _text_of(lparam)
        with _lock:
            window = _windows.get(h)
        if window is None or text is None:
            return 0
        window.set_title(text)
        return 1
    if msg == WM_GETTEXTLENGTH:
        try:
            return len(M.window_info(h).title)
        except W.WinIPCError:
            return 0
    return 0


def _text_of(lparam: Any) -> str | None:
    if isinstance(lparam, str):
        return lparam
    if isinstance(lparam, (bytes, bytearray, memoryview)):
        raw = bytes(lparam)
        n = len(raw) - len(raw) % 2
        for i in range(0, n, 2):
            if raw[i] == 0 and raw[i + 1] == 0:
                n = i
                break
        return raw[:n].decode("utf-16-le", errors="replace")
    return None


def IsWindow(hWnd: Any) -> int:
    """1 when ``hWnd`` is a live window (of any process), else 0 (Win32: IsWindow)."""
    h = _hwnd(hWnd)
    return 1 if h and M.is_window(h) else 0


def GetWindowText(hwnd: Any) -> str:
    """A window's title ("" for a dead window, as pywin32) (Win32: GetWindowText)."""
    try:
        return str(M.window_info(_hwnd(hwnd)).title)
    except W.WinIPCError as exc:
        set_last_error(exc.winerror)
        return ""


@api("SetWindowText")
def SetWindowText(hwnd: Any, text: Any) -> None:
    """Set a window's title (Win32: SetWindowText).

    A window of this process is renamed directly; another process's window is sent
    WM_SETTEXT (its DefWindowProc renames it).

    Raises:
        pywintypes.error: 1400 not a window.
    """
    h = _hwnd(hwnd)
    title = _title(text, "text") or ""
    with _lock:
        window = _windows.get(h)
    if window is not None and not window.closed:
        window.set_title(title)
        return
    if not M.is_window(h):
        raise api_error(W.ERROR_INVALID_WINDOW_HANDLE, "SetWindowText")
    M.send_message(h, WM_SETTEXT, 0, _lparam(title))


@api("GetClassName")
def GetClassName(hwnd: Any) -> str:
    """A window's class name (Win32: GetClassName). Raises 1400 for a dead window."""
    return str(M.window_info(_hwnd(hwnd)).class_name)


@api("ShowWindow")
def ShowWindow(hWnd: Any, cmdShow: Any) -> int:
    """Accepted for compatibility: windows are never shown here (Win32: ShowWindow).

    Returns 0 (the window was not visible). Raises 1400 for a dead window.
    """
    if not IsWindow(hWnd):
        raise api_error(W.ERROR_INVALID_WINDOW_HANDLE, "ShowWindow")
    return 0


@api("UpdateWindow")
def UpdateWindow(hWnd: Any) -> None:
    """Accepted for compatibility: nothing to paint (Win32: UpdateWindow)."""
    if not IsWindow(hWnd):
        raise api_error(W.ERROR_INVALID_WINDOW_HANDLE, "UpdateWindow")


def GetModuleHandle(name: Any = None) -> int:
    """A stand-in module handle for ``WNDCLASS.hInstance`` (Win32: GetModuleHandle)."""
    return 0x400000


def LoadCursor(hinstance: Any, resid: Any) -> int:
    """A stand-in cursor handle for ``WNDCLASS.hCursor`` (nothing is drawn)."""
    return 0x10000 + (resid if isinstance(resid, int) else 0)


def LoadIcon(hinstance: Any, resid: Any) -> int:
    """A stand-in icon handle for ``WNDCLASS.hIcon`` (nothing is drawn)."""
    return 0x20000 + (resid if isinstance(resid, int) else 0)


# ---------------------------------------------------------------------------- finding


@api("FindWindow")
def FindWindow(ClassName: Any, WindowName: Any) -> int:
    """The first top-level window with that class and title (Win32: FindWindow).

    Both compare case-insensitively; None matches any. Message-only windows are not
    found (use ``FindWindowEx(HWND_MESSAGE, ...)``).

    Returns:
        The HWND, or 0 when no window matches (as pywin32 does: Windows sets no error
        for a window that is simply not there).
    """
    name = _class_name(ClassName, "FindWindow")
    found = M.find_window(name, _title(WindowName, "WindowName"))
    return int(found or 0)


@api("FindWindowEx")
def FindWindowEx(Parent: Any, ChildAfter: Any, ClassName: Any, WindowName: Any) -> int:
    """The next window after ``ChildAfter`` matching class and title (Win32: FindWindowEx).

    ``Parent`` 0/None searches top-level windows, ``HWND_MESSAGE`` message-only windows;
    a window as parent finds nothing (there are no child windows here).

    Returns:
        The HWND, or 0.
    """
    parent = _hwnd(Parent, "Parent")
    after = _hwnd(ChildAfter, "ChildAfter")
    name = _class_name(ClassName, "FindWindowEx")
    title = _title(WindowName, "WindowName")
    if parent not in (0, HWND_MESSAGE):
        if not M.is_window(parent):
            raise api_error(W.ERROR_INVALID_WINDOW_HANDLE, "FindWindowEx")
        return 0
    found = M.find_window_ex(parent or None, after or None, name, title)
    return int(found or 0)


def EnumWindows(callback: Any, extra: Any) -> None:
    """Call ``callback(hwnd, extra)`` for each top-level window (Win32: EnumWindows).

    A callback returning a false value other than None (False, 0) stops the
    enumeration, and then, as in pywin32, EnumWindows raises ``pywintypes.error`` with
    winerror 0; an exception raised by the callback propagates.
    """
    if not callable(callback):
        raise TypeError("First param must be a callable object")
    for hwnd in M.enum_windows():
        ret = callback(int(hwnd), extra)
        if ret is None:
            continue
        if isinstance(ret, int) or hasattr(ret, "__index__"):
            if not int(ret):
                raise _error0("EnumWindows")
            continue
        raise TypeError(f"EnumWindows callback must return an int, bool or None, not {type(ret).__name__}")


# ---------------------------------------------------------------------------- sending


def SendMessage(hwnd: Any, message: Any, wparam: Any = None, lparam: Any = None) -> int:
    """Send a message and wait for the procedure's result (Win32: SendMessage).

    Args:
        hwnd: the window (``HWND_BROADCAST``: every top-level window; returns 0).
        message: the message id.
        wparam: an int (None is 0).
        lparam: an int, None, a str (sent as NUL-terminated UTF-16 bytes) or a
            bytes-like object; for WM_COPYDATA bytes-like data or ``(dwData, data)``.

    Returns:
        The procedure's LRESULT. A failed send (dead window 1400, refused 5) returns 0
        and sets ``win32api.GetLastError()``, as pywin32 does.
    """
    h = _hwnd(hwnd)
    msg = _uint(message, "message")
    wp = _wparam(wparam)
    try:
        if msg == WM_COPYDATA:
            dwdata, data = _copydata(lparam)
            return int(M.send_copydata(h, dwdata, data, sender=wp))
        return int(M.send_message(h, msg, wp, _lparam(lparam)))
    except W.WinIPCError as exc:
        set_last_error(exc.winerror)
        return 0


@api("SendMessageTimeout")
def SendMessageTimeout(
    hwnd: Any, message: Any, wparam: Any, lparam: Any, flags: Any, timeout: Any
) -> tuple[int, int]:
    """Send a message, waiting at most ``timeout`` ms (Win32: SendMessageTimeout).

    Args:
        flags: ``SMTO_NORMAL``, ``SMTO_BLOCK``, ``SMTO_ABORTIFHUNG`` (fail at once when
            the target thread is hung), ``SMTO_NOTIMEOUTIFNOTHUNG``, ``SMTO_ERRORONEXIT``.
        timeout: milliseconds.

    Returns:
        ``(1, result)``: the call's success and the procedure's LRESULT.

    Raises:
        pywintypes.error: 1460 (ERROR_TIMEOUT) timed out or the target is hung (pywin32
            documents 0 here, from old Windows versions); 1400 the window is dead or
            died during the call; 5 refused.
    """
    h = _hwnd(hwnd)
    msg = _uint(message, "message")
    wp = _wparam(wparam)
    fl = _uint(flags, "flags")
    seconds = dword(timeout, "timeout") / 1000.0
    if msg == WM_COPYDATA:
        dwdata, data = _copydata(lparam)
        return 1, int(M.send_copydata(h, dwdata, data, sender=wp, timeout=seconds))
    result = M.send_message_timeout(h, msg, wp, _lparam(lparam), fl, seconds)
    return 1, int(result)


@api("PostMessage")
def PostMessage(hwnd: Any, message: Any, wparam: Any = None, lparam: Any = None) -> None:
    """Queue a message for a window and return at once (Win32: PostMessage).

    Raises:
        pywintypes.error: 1400 dead window; 5 refused; 1159 (ERROR_MESSAGE_SYNC_ONLY)
            WM_COPYDATA, which can only be sent.
    """
    msg = _uint(message, "message")
    if msg == WM_COPYDATA:
        raise api_error(
            ERROR_MESSAGE_SYNC_ONLY,
            "PostMessage",
            "The message can be used only with synchronous operations.",
        )
    M.post_message(_hwnd(hwnd), msg, _wparam(wparam), _lparam(lparam))


def PostQuitMessage(rc: Any = 0) -> None:
    """Ask this thread's message loop to end with exit code ``rc`` (Win32: PostQuitMessage)."""
    if isinstance(rc, bool) or not isinstance(rc, int):
        raise TypeError(f"rc must be an int, not {type(rc).__name__}")
    M.post_quit_message(rc)


@api("RegisterWindowMessage")
def RegisterWindowMessage(name: Any) -> int:
    """The machine-wide message id (0xC000..0xFFFF) for a string (Win32: RegisterWindowMessage).

    The same string (case-insensitive) gives the same id in every process, and the same
    id as ``win32clipboard.RegisterClipboardFormat``.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    return int(M.register_window_message(name))


# ---------------------------------------------------------------------------- the loop


def _tick(msg_time: float) -> int:
    """A time.time() stamp as GetTickCount milliseconds (since boot, 32-bit)."""
    age = max(0.0, time.time() - msg_time)
    return int((time.monotonic() - age) * 1000) & 0xFFFF_FFFF


def _to_tuple(m: Any) -> MSG:
    """pywin32's PyMSG tuple for a winipc Message; remembered for DispatchMessage."""
    tup: MSG = (int(m.hwnd or 0), int(m.message), int(m.wparam), m.lparam, _tick(m.time), (0, 0))
    recent: dict[int, tuple[MSG, Any]] = getattr(_tls, "recent", None) or {}
    _tls.recent = recent
    recent[id(tup)] = (tup, m)
    while len(recent) > 16:
        del recent[next(iter(recent))]
    return tup


def _filter(hwnd: Any, lo: Any, hi: Any) -> tuple[int | None, int, int]:
    h = _hwnd(hwnd)
    return (h or None), _uint(lo, "min"), _uint(hi, "max")


def GetMessage(hwnd: Any, min: Any, max: Any) -> tuple[int, MSG]:
    """Wait for the next message of this thread (Win32: GetMessage).

    Messages sent to this thread's windows meanwhile are delivered to their procedures.

    Args:
        hwnd: only messages for this window (0/None: any, thread messages included).
        min, max: message id range (0, 0: all).

    Returns:
        ``(rc, msg)``: rc 1 and a PyMSG tuple; rc 0 for WM_QUIT (``msg[2]`` is the exit
        code); rc -1 when ``hwnd`` is not a window (``win32api.GetLastError()`` 1400).
    """
    h, lo, hi = _filter(hwnd, min, max)
    try:
        m = M.get_message(h, lo, hi)
    except W.WinIPCError as exc:
        set_last_error(exc.winerror)
        return -1, _EMPTY_MSG
    return (0 if m.message == WM_QUIT else 1), _to_tuple(m)


def PeekMessage(hwnd: Any, filterMin: Any, filterMax: Any, removalOptions: Any) -> tuple[int, MSG]:
    """Look for a message without waiting (Win32: PeekMessage).

    Args:
        removalOptions: ``PM_REMOVE`` takes the message, ``PM_NOREMOVE`` leaves it.

    Returns:
        ``(1, msg)`` when there is one, ``(0, empty msg)`` when not.
    """
    h, lo, hi = _filter(hwnd, filterMin, filterMax)
    remove = _uint(removalOptions, "removalOptions")
    try:
        m = M.peek_message(h, lo, hi, PM_REMOVE if remove & PM_REMOVE else PM_NOREMOVE)
    except W.WinIPCError as exc:
        set_last_error(exc.winerror)
        return 0, _EMPTY_MSG
    if m is None:
        return 0, _EMPTY_MSG
    return 1, _to_tuple(m)


def _message_of(msg: Any) -> Any:
    """The winipc Message behind a PyMSG tuple from GetMessage / PeekMessage."""
    if not isinstance(msg, tuple) or len(msg) != 6:
        raise TypeError("MSG param must be a tuple (hwnd, message, wparam, lparam, time, (x, y))")
    recent: dict[int, tuple[MSG, Any]] = getattr(_tls, "recent", None) or {}
    found = recent.get(id(msg))
    if found is not None and found[0] is msg:
        return found[1]
    return None


def TranslateMessage(msg: Any) -> int:
    """0: there is no keyboard input to translate here (Win32: TranslateMessage)."""
    m = _message_of(msg)
    return int(bool(M.translate_message(m))) if m is not None else 0


def DispatchMessage(msg: Any) -> int:
    """Call the procedure of the message's window; returns its result (DispatchMessage).

    A tuple that did not come from GetMessage / PeekMessage is delivered as a message
    sent to its ``hwnd`` (0 for thread messages, which have no procedure).
    """
    m = _message_of(msg)
    if m is not None:
        return int(M.dispatch_message(m))
    h = _hwnd(msg[0])
    if not h:
        return 0
    try:
        return int(M.send_message(h, _uint(msg[1], "message"), _wparam(msg[2]), _lparam(msg[3])))
    except W.WinIPCError as exc:
        set_last_error(exc.winerror)
        return 0


def _exit_code(wparam: int) -> int:
    """WM_QUIT's wParam as the C int PostQuitMessage took."""
    low = int(wparam) & 0xFFFF_FFFF
    return low - 2**32 if low >= 2**31 else low


def PumpMessages() -> int:
    """Run this thread's message loop until WM_QUIT (Win32: the GetMessage loop).

    Returns:
        The exit code given to PostQuitMessage.
    """
    while True:
        rc, msg = GetMessage(0, 0, 0)
        if rc == 0:
            return _exit_code(msg[2])
        if rc == -1:
            raise api_error(W.ERROR_INVALID_WINDOW_HANDLE, "GetMessage")
        TranslateMessage(msg)
        DispatchMessage(msg)


def PumpWaitingMessages(firstMessage: Any = 0, lastMessage: Any = 0) -> int:
    """Dispatch the messages waiting now, without blocking (PeekMessage loop).

    Returns:
        0 when no WM_QUIT was seen; otherwise PostQuitMessage's exit code, or 1 when
        that code is 0 (as pywin32).
    """
    while True:
        rc, msg = PeekMessage(0, firstMessage, lastMessage, PM_REMOVE)
        if not rc:
            return 0
        if msg[1] == WM_QUIT:
            return _exit_code(msg[2]) or 1
        TranslateMessage(msg)
        DispatchMessage(msg)


__all__ = [
    "MSG",
    "UNICODE",
    "WNDCLASS",
    "CreateWindow",
    "CreateWindowEx",
    "DefWindowProc",
    "DestroyWindow",
    "DispatchMessage",
    "EnumWindows",
    "FindWindow",
    "FindWindowEx",
    "GetClassName",
    "GetMessage",
    "GetModuleHandle",
    "GetWindowText",
    "IsWindow",
    "LoadCursor",
    "LoadIcon",
    "PeekMessage",
    "PostMessage",
    "PostQuitMessage",
    "PumpMessages",
    "PumpWaitingMessages",
    "PyWNDCLASS",
    "RegisterClass",
    "RegisterWindowMessage",
    "SendMessage",
    "SendMessageTimeout",
    "SetWindowText",
    "ShowWindow",
    "TranslateMessage",
    "UnregisterClass",
    "UpdateWindow",
    "error",
]
