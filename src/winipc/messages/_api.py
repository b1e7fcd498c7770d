"""The message functions: SendMessage(Timeout), PostMessage, WM_COPYDATA, the message loop."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends import posix_messages as _os
from winipc._core.timeouts import seconds
from winipc._wire import messages as wire
from winipc.messages._queue import MessageQueue, current, release_view
from winipc.messages._types import (
    HWND_BROADCAST,
    MAX_COPYDATA,
    MAX_POSTED_BYTES,
    SMTO_NORMAL,
    WM_COPYDATA,
    WM_QUIT,
    WPARAM_MAX,
    CopyData,
    Message,
    check_filter,
    check_flags,
    check_lparam,
    check_msg,
    check_wparam,
    hwnd_value,
)
from winipc.messages._window import Window, enum_windows, own_window

#: what send_message_timeout waits by default (seconds)
DEFAULT_TIMEOUT = 5.0


def register_window_message(name: str) -> int:
    """The message number for a string, the same in every process (Win32: RegisterWindowMessage).

    Returns:
        0xC000..0xFFFF; names compare case-insensitively. Shares the machine's atom table
        with clipboard formats, as on Windows.

    Raises:
        InvalidParameter: an empty name or one over 255 characters.
    """
    from winipc._core import atoms

    return atoms.add(name)


def message_queue() -> MessageQueue:
    """The calling thread's message queue, waitable with winipc.sync.wait_any
    (MsgWaitForMultipleObjects): signalled while a message waits for the thread."""
    return current()


# --------------------------------------------------------------------------- sending


def _frame(kind: int, hwnd: int, msg: int, wparam: int, lparam: int | bytes) -> tuple[wire.MessageFrame, int | None]:
    """The frame for a message, and the memfd of a big bytes lparam (the caller closes it)."""
    now = time.time()
    if isinstance(lparam, int):
        return wire.MessageFrame(kind, 0, hwnd, msg, wparam, lparam, time=now), None
    if len(lparam) <= wire.INLINE_MAX:
        return wire.MessageFrame(kind, 0, hwnd, msg, wparam, 0, wire.PARAM_BYTES, 0, len(lparam), False, now,
                                 lparam), None
    fd = _os.sealed_memory(memoryview(lparam))
    return wire.MessageFrame(kind, 0, hwnd, msg, wparam, 0, wire.PARAM_BYTES, 0, len(lparam), True, now), fd


def _send_one(hwnd: int, msg: int, wparam: int, lparam: int | bytes, timeout: float | None, flags: int) -> int:
    win = own_window(hwnd)
    q = current()
    if win is not None and win._queue is q:
        win._check_alive()
        return win._call(msg, wparam, lparam)  # the caller's own window: called directly
    frame, fd = _frame(wire.KIND_SEND, hwnd, msg, wparam, lparam)
    try:
        return q.send(hwnd, frame, fd, timeout, flags)
    finally:
        if fd is not None:
            B.close_fd(fd)


def _broadcast(call: Any) -> None:
    """Run ``call(hwnd)`` for every top-level window we can see; unreachable ones are skipped."""
    for hwnd in enum_windows():
        try:
            call(hwnd)
        except (W.InvalidWindowHandle, W.AccessDenied, W.Timeout, W.FileNotFound, W.PipeBusy):
            continue
        except W.WinIPCError as exc:
            if exc.winerror == W.ERROR_NOT_ENOUGH_QUOTA:
                continue
            raise


def send_message(hwnd: int | Window, msg: int, wparam: int = 0, lparam: int | bytes = 0) -> int:
    """Send a message and wait for the window procedure's result (Win32: SendMessage).

    The procedure runs on the window's thread, when that thread retrieves messages; for
    a window of the calling thread it is called directly. While waiting, the calling
    thread processes messages sent to its own windows.

    Args:
        hwnd: the window, or HWND_BROADCAST (every top-level window we may reach; returns 0
            once each has processed it).
        msg: UINT, 0..0xFFFFFFFF.
        wparam: WPARAM, 0..2**64-1.
        lparam: LPARAM, -2**63..2**63-1, or bytes (a pointer parameter, up to 1 GiB;
            over 64 KiB it travels in a sealed memfd).

    Returns:
        The LRESULT (signed 64-bit).

    Raises:
        InvalidWindowHandle: (1400) no such window, or it was destroyed during the call.
        AccessDenied: (5) the window's security does not give us CONNECT.
        InvalidParameter: (87) an argument out of range, or the procedure returned
            something that is not an LRESULT.
    """
    return send_message_timeout(hwnd, msg, wparam, lparam, SMTO_NORMAL, None)


def send_message_timeout(hwnd: int | Window, msg: int, wparam: int = 0, lparam: int | bytes = 0,
                         flags: int = SMTO_NORMAL, timeout: float | None = DEFAULT_TIMEOUT) -> int:
    """Send a message, waiting at most ``timeout`` seconds (Win32: SendMessageTimeout).

    Args:
        hwnd, msg, wparam, lparam: as :func:`send_message`.
        flags: SMTO_NORMAL, SMTO_BLOCK (do not process messages sent to our own windows
            while waiting), SMTO_ABORTIFHUNG (fail at once when the window's thread has
            not retrieved messages for HUNG_TIMEOUT seconds), SMTO_NOTIMEOUTIFNOTHUNG
            (the time-out only counts while the thread is hung), SMTO_ERRORONEXIT (a
            window destroyed during the call fails with 1400, which is always so here).
        timeout: seconds (None = forever); for HWND_BROADCAST, per window.

    Returns:
        The LRESULT; 0 for HWND_BROADCAST.

    Raises:
        Timeout: (1460 ERROR_TIMEOUT) no answer in time, or at once when hung with
            SMTO_ABORTIFHUNG. The message stays queued: the window still processes it.
        InvalidWindowHandle, AccessDenied, InvalidParameter: as :func:`send_message`.
    """
    h = hwnd_value(hwnd)
    m = check_msg(msg)
    wp = check_wparam(wparam)
    lp = check_lparam(lparam)
    fl = check_flags(flags)
    t = seconds(timeout, "timeout")
    if h == HWND_BROADCAST:
        _broadcast(lambda target: _send_one(target, m, wp, lp, t, fl))
        return 0
    return _send_one(h, m, wp, lp, t, fl)


def _post_one(hwnd: int, msg: int, wparam: int, lparam: int | bytes) -> None:
    q = current()
    win = own_window(hwnd)
    if win is not None and win._queue is q:
        win._check_alive()
        q.post_own(Message(hwnd, msg, wparam, lparam, time.time(), os.getpid(), B.uid()))
        return
    frame, fd = _frame(wire.KIND_POST, hwnd, msg, wparam, lparam)
    assert fd is None  # posted bytes are at most INLINE_MAX
    q.post(hwnd, frame)


def post_message(hwnd: int | Window, msg: int, wparam: int = 0, lparam: int | bytes = 0) -> None:
    """Queue a message for a window and return at once (Win32: PostMessage).

    Args:
        hwnd: the window, or HWND_BROADCAST (every top-level window we may reach).
        msg, wparam: as :func:`send_message`.
        lparam: an LPARAM int, or bytes of at most 64 KiB (MAX_POSTED_BYTES).

    Raises:
        InvalidWindowHandle: (1400) no such window.
        AccessDenied: (5) the window's security does not give us CONNECT.
        WinIPCError: (1816 ERROR_NOT_ENOUGH_QUOTA) the window's thread is not taking
            messages and our connection to it is full.
        InvalidParameter: an argument out of range.
    """
    h = hwnd_value(hwnd)
    m = check_msg(msg)
    wp = check_wparam(wparam)
    lp = check_lparam(lparam, MAX_POSTED_BYTES)
    if h == HWND_BROADCAST:
        _broadcast(lambda target: _post_one(target, m, wp, lp))
        return
    _post_one(h, m, wp, lp)


def send_copydata(hwnd: int | Window, dwdata: int, data: Any, *, sender: int | Window = 0,
                  timeout: float | None = None) -> int:
    """Send WM_COPYDATA (Win32: SendMessage(hwnd, WM_COPYDATA, sender, &COPYDATASTRUCT)).

    The receiver's procedure gets ``msg=WM_COPYDATA, wparam=sender, lparam=CopyData``
    (``.dwdata``, ``.data`` a read-only memoryview valid during the call, ``.sender_hwnd``,
    ``.sender_pid``, ``.sender_uid``). Up to 64 KiB travel in the packet; more in a memfd
    sealed against writes and resizes, passed over the socket and mapped read-only by the
    receiver (no copy through the socket).

    Args:
        hwnd: the window (HWND_BROADCAST: every top-level window we may reach; returns 0).
        dwdata: COPYDATASTRUCT.dwData, 0..2**64-1.
        data: bytes-like, at most MAX_COPYDATA (1 GiB) bytes.
        sender: the sending window's hwnd, given to the receiver as wParam.
        timeout: seconds to wait for the result; None waits forever (as SendMessage).

    Returns:
        The receiver's LRESULT.

    Raises:
        InvalidParameter: ``data`` too big or not bytes-like; ``dwdata``/``sender`` out of range.
        Timeout, InvalidWindowHandle, AccessDenied: as :func:`send_message_timeout`.
    """
    h = hwnd_value(hwnd)
    if isinstance(dwdata, bool) or not isinstance(dwdata, int) or not 0 <= dwdata <= WPARAM_MAX:
        raise W.InvalidParameter(f"dwdata must be a ULONG_PTR in 0..{WPARAM_MAX}, not {dwdata!r}")
    snd = hwnd_value(sender, "sender")
    if not 0 <= snd <= WPARAM_MAX:
        raise W.InvalidParameter(f"sender must be a window handle in 0..{WPARAM_MAX}, not {sender!r}")
    try:
        view = memoryview(data).cast("B")
    except TypeError:
        raise W.InvalidParameter(f"data must be bytes-like, not {type(data).__name__}") from None
    if view.nbytes > MAX_COPYDATA:
        raise W.InvalidParameter(f"data is {view.nbytes} bytes; WM_COPYDATA carries at most {MAX_COPYDATA} bytes")
    t = seconds(timeout, "timeout")
    fd: int | None = None
    try:
        if view.nbytes > wire.INLINE_MAX:
            fd = _os.sealed_memory(view)
            frame = wire.MessageFrame(wire.KIND_SEND, 0, 0, WM_COPYDATA, snd, 0, wire.PARAM_COPYDATA, dwdata,
                                      view.nbytes, True, time.time())
        else:
            frame = wire.MessageFrame(wire.KIND_SEND, 0, 0, WM_COPYDATA, snd, 0, wire.PARAM_COPYDATA, dwdata,
                                      view.nbytes, False, time.time(), view.tobytes())

        def one(target: int) -> int:
            q = current()
            win = own_window(target)
            if win is not None and win._queue is q:
                win._check_alive()
                ro = view.toreadonly()
                try:
                    return win._call(WM_COPYDATA, snd, CopyData(dwdata, ro, snd, os.getpid(), B.uid()))
                finally:
                    release_view(ro, None)
            return q.send(target, dataclasses.replace(frame, hwnd=target), fd, t, SMTO_NORMAL)

        if h == HWND_BROADCAST:
            _broadcast(one)
            return 0
        return one(h)
    finally:
        if fd is not None:
            B.close_fd(fd)


# --------------------------------------------------------------------------- the loop


def _filter_hwnd(hwnd: Any) -> int | None:
    if hwnd is None or hwnd == 0:
        return None
    return hwnd_value(hwnd)


def get_message(hwnd: int | Window | None = None, msg_min: int = 0, msg_max: int = 0,
                timeout: float | None = None) -> Message:
    """Wait for the next message of the calling thread (Win32: GetMessage).

    Sent messages are processed (their procedures run) while waiting; the first posted
    message matching the filter is returned, or WM_QUIT (``.wparam`` = the exit code)
    once post_quit_message was called and no matching posted message is left.

    Args:
        hwnd: None (or 0) for any window of the thread and thread messages; a window
            for its messages only (then WM_QUIT is not returned, as on Windows); -1 for
            thread messages only.
        msg_min, msg_max: the message range; (0, 0) takes all.
        timeout: seconds (None = forever; Windows has none).

    Raises:
        WaitTimeout: (258) nothing came within ``timeout``.
        InvalidParameter: a bad filter or timeout.
    """
    lo, hi = check_filter(msg_min, msg_max)
    t = seconds(timeout, "timeout")
    return current().get(_filter_hwnd(hwnd), lo, hi, t)


def peek_message(hwnd: int | Window | None = None, msg_min: int = 0, msg_max: int = 0,
                 remove: int = 1) -> Message | None:
    """Process sent messages, then return the next posted one without waiting (Win32: PeekMessage).

    Args:
        hwnd, msg_min, msg_max: as :func:`get_message`.
        remove: PM_REMOVE (1) takes the message, PM_NOREMOVE (0) leaves it queued.

    Returns:
        The message, or None when none matches.
    """
    lo, hi = check_filter(msg_min, msg_max)
    if remove not in (0, 1):
        raise W.InvalidParameter(f"remove must be PM_REMOVE (1) or PM_NOREMOVE (0), not {remove!r}")
    return current().peek(_filter_hwnd(hwnd), lo, hi, bool(remove))


def dispatch_message(msg: Message) -> int:
    """Call the window procedure of a retrieved message (Win32: DispatchMessage).

    Returns:
        The procedure's result; 0 for thread messages (hwnd 0) and for windows that are
        gone or belong to another thread (Windows returns 0 there too).
    """
    if not isinstance(msg, Message):
        raise W.InvalidParameter(f"msg must be a Message, not {msg!r}")
    if msg.hwnd == 0:
        return 0
    win = own_window(msg.hwnd)
    if win is None or win._queue is not current() or win.closed:
        return 0
    return win._call(msg.message, msg.wparam, msg.lparam)


def translate_message(msg: Message) -> bool:
    """Win32: TranslateMessage. There is no keyboard here: always False."""
    return False


def post_quit_message(exit_code: int = 0) -> None:
    """Ask the calling thread's message loop to end (Win32: PostQuitMessage).

    Args:
        exit_code: an int (C int: -2**31..2**31-1); WM_QUIT's wParam and run()'s result.
    """
    if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not -(2**31) <= exit_code < 2**31:
        raise W.InvalidParameter(f"exit_code must be an int in {-(2**31)}..{2**31 - 1}, not {exit_code!r}")
    current().post_quit(exit_code & WPARAM_MAX)


def _exit_code(wparam: int) -> int:
    low = wparam & 0xFFFFFFFF
    return low - 2**32 if low >= 2**31 else low


def run(timeout: float | None = None) -> int:
    """Pump the calling thread's messages until WM_QUIT (Win32: the GetMessage/Translate/Dispatch loop).

    Args:
        timeout: seconds for the whole loop; None = until WM_QUIT.

    Returns:
        The exit code given to post_quit_message.

    Raises:
        WaitTimeout: (258) no WM_QUIT within ``timeout``.
    """
    t = seconds(timeout, "timeout")
    deadline = None if t is None else time.monotonic() + t
    q = current()
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        m = q.get(None, 0, 0, left)
        if m.message == WM_QUIT and m.hwnd == 0:
            return _exit_code(m.wparam)
        translate_message(m)
        dispatch_message(m)


def pump_waiting_messages() -> bool:
    """Process every waiting message without blocking (pywin32: PumpWaitingMessages).

    Returns:
        True when WM_QUIT was retrieved (the loop should end), else False.
    """
    q = current()
    while True:
        m = q.peek(None, 0, 0, True)
        if m is None:
            return False
        if m.message == WM_QUIT and m.hwnd == 0:
            return True
        translate_message(m)
        dispatch_message(m)
