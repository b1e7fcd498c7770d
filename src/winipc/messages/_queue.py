"""Thread message queues, the window lookup, and the sending side of messages.

Every thread that owns windows (or calls the message loop, or sends) has one
:class:`MessageQueue`: a poller holding the listening sockets of its windows and the
connections senders made to them. There is no background thread: the queue takes in
what waits in those sockets only when its thread is in get_message, peek_message, the
loops built on them, a wait on the queue, or its own send_message. That is what makes a
window that does not pump hung, as on Windows. Sent messages are processed (their
window procedure runs and the reply goes back) before a posted message is returned.

A sender keeps one connection per (sending thread, target window). A SEND waits for the
REPLY with its number; while it waits, the sending thread keeps processing messages SENT
to its own windows (not posted ones), so two threads sending to each other do not
deadlock.

Hung detection: each window's directory has a ``stamp`` file whose modification time
says when the owning thread last retrieved messages (refreshed at most once a second),
or 0 while the thread is blocked waiting for messages (a thread waiting for input is not
hung). A sender with SMTO_ABORTIFHUNG fails at once when that time is more than
``winipc.messages.HUNG_TIMEOUT`` seconds old, evaluated with the sender's own value.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends import posix_messages as _os
from winipc._core import names, namespace
from winipc._core.security import Access
from winipc._wire import messages as wire
from winipc.messages._types import (
    POSTED_LIMIT,
    SMTO_ABORTIFHUNG,
    SMTO_BLOCK,
    SMTO_NOTIMEOUTIFNOTHUNG,
    WM_COPYDATA,
    WM_QUIT,
    CopyData,
    Message,
    check_result,
    hung_timeout,
    in_filter,
    is_window_number,
)

if TYPE_CHECKING:
    from winipc.messages._window import Window

log = logging.getLogger("winipc.messages")

TYPE = "window"
SOCKET_NAME = "wnd.sock"
TITLE_FILE = "title"
STAMP_FILE = "stamp"
#: the stamp's modification time while the owning thread waits for messages
WAITING = 0.0
_STAMP_EVERY = 1.0  # seconds between refreshes of a running thread's stamp
_READS_PER_ROUND = 64  # packets taken from one connection before looking at the others
_PENDING_PER_CONN = 64  # sent messages one connection may have waiting
_REPLY_WAIT = 1.0  # seconds a reply may wait for room before the connection is dropped
_THREAD_ONLY = -1
_PRUNE_AT = 64  # cached connections of a thread before dead ones are looked for  # get_message's hwnd filter for thread messages only


def window_name(hwnd: int) -> names.ObjectName:
    """The namespace name of a window: ``Global\\wnd.<hwnd as 8 hex digits>``."""
    return names.parse(f"Global\\wnd.{hwnd:08x}")


def _sweep(oname: names.ObjectName) -> None:
    """Remove a dead window's leftover (killed owner) when it is ours; open a live one and let go."""
    with contextlib.suppress(W.WinIPCError):
        namespace.open_existing(oname).release()


def lookup(hwnd: int) -> tuple[str, namespace.ObjectRecord]:
    """(directory, record) of a live window.

    Raises:
        InvalidWindowHandle: no live window has this handle (a dead one's leftover is removed).
        AccessDenied: the window exists but its record is closed to us.
    """
    if not is_window_number(hwnd):
        raise W.InvalidWindowHandle(f"{hwnd:#x} is not a window handle")
    oname = window_name(hwnd)
    try:
        path, rec = namespace.lookup(oname)
    except W.FileNotFound:
        _sweep(oname)
        raise W.InvalidWindowHandle(f"window {hwnd:#x} does not exist (destroyed, or its process ended)") from None
    if rec.type != TYPE or rec.attrs.get("hwnd") != hwnd:
        raise W.InvalidWindowHandle(f"{hwnd:#x} is not a window handle")
    return path, rec


def is_hung(path: str) -> bool:
    """True when the window's thread has not retrieved messages for HUNG_TIMEOUT seconds."""
    stamp = _os.mtime(os.path.join(path, STAMP_FILE))
    if stamp is None or stamp <= 1.0:
        return False  # gone, or waiting for messages
    return time.time() - stamp > hung_timeout()


class _Incoming:
    """A sender's connection to one of our windows, as the window's thread sees it."""

    __slots__ = ("busy", "doomed", "fd", "pending", "pid", "sock", "uid", "window")

    def __init__(self, sock: socket.socket, pid: int, uid: int, window: Window) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.pid = pid
        self.uid = uid
        self.window = window
        self.pending = 0
        self.busy = 0  # sent messages of this connection being processed right now
        self.doomed = False  # the window is gone: close once the current replies are out


class _Sent:
    """A sent message waiting for the window's thread."""

    __slots__ = ("conn", "fd", "frame")

    def __init__(self, conn: _Incoming, frame: wire.MessageFrame, fd: int | None) -> None:
        self.conn = conn
        self.frame = frame
        self.fd = fd


class _Client:
    """This thread's connection to another thread's window."""

    __slots__ = ("hwnd", "path", "replies", "sock", "state", "waiting")

    def __init__(self, sock: socket.socket, hwnd: int, path: str) -> None:
        self.sock = sock
        self.hwnd = hwnd
        self.path = path
        self.replies: dict[int, tuple[int, int]] = {}
        self.waiting: set[int] = set()
        self.state = "ok"  # "dead" at end of connection, "refused" after REFUSED


class MessageQueue:
    """A thread's message queue (Win32: the thread's input queue).

    Obtained with :func:`winipc.messages.message_queue`. It can be passed to
    :func:`winipc.sync.wait_any` with kernel objects (MsgWaitForMultipleObjects): it is
    signalled while a sent or posted message (or WM_QUIT) waits for its thread. Waiting
    does not retrieve anything; call get_message/peek_message after.

    Attributes:
        tid: the owning thread's native id.
        dropped: posted messages dropped because POSTED_LIMIT were waiting already.
    """

    def __init__(self) -> None:
        self._ident = threading.get_ident()
        self.tid = threading.get_native_id()
        self._lock = threading.RLock()
        self._poller = _os.Poller()
        self._listeners: dict[int, Window] = {}
        self._conns: dict[int, _Incoming] = {}
        self._windows: dict[int, Window] = {}
        self._sent: collections.deque[_Sent] = collections.deque()
        self._posted: collections.deque[Message] = collections.deque()
        self._quit: int | None = None
        self._clients: dict[int, _Client] = {}
        self._seq = 0
        self._waiting = False
        self._stamped = 0.0
        self._closed = False
        self.dropped = 0

    # ------------------------------------------------------------------ waitable
    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        """The poller's descriptor: readable when something arrived for the thread."""
        return self._poller.fileno()

    _wait_exact = True

    def _wait_fd(self) -> int:
        return self._poller.fileno()

    def _wait_ready(self) -> bool:
        """For wait_any: True while a sent or posted message or WM_QUIT waits."""
        if self._closed:
            return False
        self._intake()
        with self._lock:
            ready = bool(self._sent or self._posted or self._quit is not None)
        if not ready and threading.get_ident() == self._ident:
            self._mark_waiting()
        return ready

    def __repr__(self) -> str:
        return f"<MessageQueue of thread {self.tid}: {len(self._windows)} windows>"

    # ------------------------------------------------------------------ windows
    def own_window(self, hwnd: int) -> Window | None:
        return self._windows.get(hwnd)

    def windows(self) -> list[Window]:
        return list(self._windows.values())

    def add_window(self, win: Window) -> None:
        with self._lock:
            self._windows[win.hwnd] = win
            self._listeners[win._listener.fileno()] = win
            self._poller.register(win._listener.fileno())

    def remove_window(self, win: Window) -> None:
        """Forget a window: its listener, its senders' connections (they see the end:
        ERROR_INVALID_WINDOW_HANDLE), its sent and posted messages."""
        with self._lock:
            self._windows.pop(win.hwnd, None)
            fd = win._listener.fileno()
            if fd >= 0:
                self._listeners.pop(fd, None)
                self._poller.unregister(fd)
            for conn in [c for c in self._conns.values() if c.window is win]:
                if conn.busy:  # destroyed by the message being processed: its reply goes out first
                    conn.doomed = True
                    self._poller.unregister(conn.fd)
                else:
                    self._drop_conn(conn)
            keep = collections.deque(m for m in self._posted if m.hwnd != win.hwnd)
            self._posted = keep

    def post_own(self, msg: Message) -> None:
        """Queue a message posted by this thread to one of its own windows."""
        with self._lock:
            if len(self._posted) >= POSTED_LIMIT:
                raise W.from_winerror(
                    W.ERROR_NOT_ENOUGH_QUOTA, f"the queue of thread {self.tid} holds {POSTED_LIMIT} posted messages"
                )
            self._posted.append(msg)

    def post_quit(self, code: int) -> None:
        with self._lock:
            self._quit = code

    # ------------------------------------------------------------------ hung stamp
    def _mark_running(self) -> None:
        now = time.time()
        if self._waiting or now - self._stamped >= _STAMP_EVERY:
            for w in list(self._windows.values()):
                _os.set_mtime(w._stamp_fd, now)
            self._stamped = now
            self._waiting = False

    def _mark_waiting(self) -> None:
        if not self._waiting:
            for w in list(self._windows.values()):
                _os.set_mtime(w._stamp_fd, WAITING)
            self._waiting = True

    # ------------------------------------------------------------------ intake
    def _intake(self) -> None:
        """Take in what waits in the sockets: new connections, sent and posted messages."""
        with self._lock:
            if self._closed:
                return
            for _ in range(4):
                ready = self._poller.ready()
                if not ready:
                    return
                for fd in ready:
                    win = self._listeners.get(fd)
                    if win is not None:
                        self._accept(win)
                        continue
                    conn = self._conns.get(fd)
                    if conn is not None:
                        self._read(conn)

    def _accept(self, win: Window) -> None:
        for _ in range(_READS_PER_ROUND):
            sock = _os.accept(win._listener)
            if sock is None:
                return
            try:
                cred = B.peer_credentials(sock)
            except W.WinIPCError:
                sock.close()
                continue
            if not win._security.check(win.uid, cred.uid, cred.gid, Access.CONNECT):
                # refused before a byte of payload is read
                with contextlib.suppress(W.WinIPCError):
                    _os.send_packet(sock, wire.encode_refused(W.ERROR_ACCESS_DENIED))
                _os.discard_input(sock)  # unread, unparsed: closing over it would reset the peer
                sock.close()
                log.info("window %#x: refused a connection from uid %d pid %d", win.hwnd, cred.uid, cred.pid)
                continue
            conn = _Incoming(sock, cred.pid, cred.uid, win)
            self._conns[conn.fd] = conn
            self._poller.register(conn.fd)
            self._read(conn)

    def _drop_conn(self, conn: _Incoming) -> None:
        if self._conns.pop(conn.fd, None) is None:
            return
        self._poller.unregister(conn.fd)
        conn.sock.close()
        mine = [s for s in self._sent if s.conn is conn]
        if mine:
            self._sent = collections.deque(s for s in self._sent if s.conn is not conn)
            _os.close_fds([s.fd for s in mine if s.fd is not None])

    def _read(self, conn: _Incoming) -> None:
        for _ in range(_READS_PER_ROUND):
            got = _os.recv_packet(conn.sock, wire.PACKET_MAX)
            if got is None:
                return
            data, fds, truncated = got
            if not data and not fds:
                self._drop_conn(conn)  # the sender closed its end
                return
            try:
                if truncated:
                    raise W.InvalidData(f"packet over {wire.PACKET_MAX} bytes or with more than one descriptor")
                frame = wire.decode(data, len(fds))
                if not isinstance(frame, wire.MessageFrame):
                    raise W.InvalidData("a sender sent a reply frame")
                if frame.hwnd != conn.window.hwnd:
                    raise W.InvalidData(f"frame for hwnd {frame.hwnd:#x} on the connection of {conn.window.hwnd:#x}")
                if frame.kind == wire.KIND_SEND and conn.pending >= _PENDING_PER_CONN:
                    raise W.InvalidData(f"more than {_PENDING_PER_CONN} sent messages waiting on one connection")
            except W.InvalidData as exc:
                log.warning("window %#x: pid %d broke the protocol (%s); dropped its connection",
                            conn.window.hwnd, conn.pid, exc)
                _os.close_fds(fds)
                self._drop_conn(conn)
                return
            if frame.kind == wire.KIND_POST:
                lparam: int | bytes = frame.payload if frame.ptype == wire.PARAM_BYTES else frame.lparam
                if len(self._posted) >= POSTED_LIMIT:
                    self.dropped += 1
                    log.warning("window %#x: %d posted messages wait; dropped one from pid %d",
                                conn.window.hwnd, POSTED_LIMIT, conn.pid)
                    continue
                self._posted.append(Message(frame.hwnd, frame.msg, frame.wparam, lparam, frame.time,
                                            conn.pid, conn.uid))
            else:
                conn.pending += 1
                self._sent.append(_Sent(conn, frame, fds[0] if fds else None))

    # ------------------------------------------------------------------ processing sent messages
    def _process_sent(self) -> int:
        """Run the window procedure for every sent message waiting, replying to each.

        Returns:
            How many were processed.
        """
        self._intake()
        done = 0
        while True:
            with self._lock:
                if not self._sent:
                    if done:
                        self._intake()
                    if not self._sent:
                        return done
                item = self._sent.popleft()
            self._dispatch_sent(item)
            done += 1

    def _dispatch_sent(self, item: _Sent) -> None:
        f = item.frame
        conn = item.conn
        status, result = 0, 0
        replied = False
        conn.busy += 1
        try:
            win = self._windows.get(f.hwnd)
            if win is None or not win._alive:
                status = W.ERROR_INVALID_WINDOW_HANDLE
            else:
                try:
                    result = self._deliver(win, item)
                except W.WinIPCError as exc:
                    log.warning("window %#x: message %#x from pid %d failed: %s", f.hwnd, f.msg, conn.pid, exc)
                    status = exc.winerror or W.ERROR_INVALID_PARAMETER
            self._reply(conn, f.seq, status, result)
            replied = True
        finally:
            if item.fd is not None:
                B.close_fd(item.fd)
            conn.pending -= 1
            conn.busy -= 1
            if not replied:  # KeyboardInterrupt or SystemExit in the procedure: do not leave the sender hanging
                self._reply(conn, f.seq, 0, 0)
            if conn.doomed and not conn.busy:
                with self._lock:
                    self._drop_conn(conn)

    def _deliver(self, win: Window, item: _Sent) -> int:
        f = item.frame
        conn = item.conn
        if f.ptype == wire.PARAM_INT:
            return self._call(win, f.msg, f.wparam, f.lparam)
        if f.ptype == wire.PARAM_BYTES:
            if item.fd is not None:
                _os.check_sealed(item.fd, f.length)
                data = _os.read_all(item.fd, f.length)
            else:
                data = f.payload
            return self._call(win, f.msg, f.wparam, data)
        mm = None
        if item.fd is not None:
            _os.check_sealed(item.fd, f.length)
            mm = _os.map_readonly(item.fd, f.length)
            view = memoryview(mm)
        else:
            view = memoryview(f.payload)
        cd = CopyData(f.dwdata, view, f.wparam, conn.pid, conn.uid)
        try:
            return self._call(win, WM_COPYDATA, f.wparam, cd)
        finally:
            release_view(view, mm)

    def _call(self, win: Window, msg: int, wparam: int, lparam: Any) -> int:
        """The window procedure for a message from another thread: its exceptions are
        logged, not raised into the loop (the sender gets 0), as Windows swallows them."""
        try:
            value = win._proc(win.hwnd, msg, wparam, lparam)
        except Exception:
            log.exception("window %#x: the window procedure raised for message %#x", win.hwnd, msg)
            return 0
        return check_result(value, win.hwnd, msg)

    def _reply(self, conn: _Incoming, seq: int, status: int, result: int) -> None:
        if conn.fd not in self._conns:
            return  # the sender went away
        data = wire.encode_reply(seq, status, result)
        try:
            if _os.send_packet(conn.sock, data):
                return
            _os.wait_io([], conn.sock.fileno(), _REPLY_WAIT)
            if _os.send_packet(conn.sock, data):
                return
            log.warning("window %#x: pid %d does not read its replies; dropped its connection",
                        conn.window.hwnd, conn.pid)
        except W.WinIPCError:
            pass
        with self._lock:
            self._drop_conn(conn)

    # ------------------------------------------------------------------ retrieving
    def peek(self, hwnd: int | None, lo: int, hi: int, remove: bool) -> Message | None:
        """Process sent messages, then the first posted message matching the filter."""
        self._mark_running()
        self._process_sent()
        with self._lock:
            for i, m in enumerate(self._posted):
                if (hwnd is None or m.hwnd == hwnd or (hwnd == _THREAD_ONLY and m.hwnd == 0)) and in_filter(
                    m.message, lo, hi
                ):
                    if remove:
                        del self._posted[i]
                    return m
            if self._quit is not None and hwnd in (None, _THREAD_ONLY) and in_filter(WM_QUIT, lo, hi):
                code = self._quit
                if remove:
                    self._quit = None
                return Message(0, WM_QUIT, code, 0, time.time(), os.getpid(), B.uid())
        return None

    def get(self, hwnd: int | None, lo: int, hi: int, timeout: float | None) -> Message:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            m = self.peek(hwnd, lo, hi, True)
            if m is not None:
                return m
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise W.WaitTimeout(f"no message for thread {self.tid} within {timeout} s")
            self._mark_waiting()
            _os.wait_readable([self._poller.fileno()], left)

    # ------------------------------------------------------------------ sending
    def _client(self, hwnd: int) -> _Client:
        c = self._clients.get(hwnd)
        if c is not None:
            if c.state == "ok":
                return c
            self._drop_client(c)
        if len(self._clients) >= _PRUNE_AT:
            self._prune_clients()
        path, rec = lookup(hwnd)
        if not rec.security_attributes.check(rec.owner, B.uid(), B.gid(), Access.CONNECT):
            raise W.AccessDenied(f"window {hwnd:#x} of uid {rec.owner} does not let uid {B.uid()} connect")
        try:
            sock = _os.connect(os.path.join(path, SOCKET_NAME))
        except W.FileNotFound:
            raise W.InvalidWindowHandle(f"window {hwnd:#x} was destroyed") from None
        except W.BrokenPipe:
            raise W.InvalidWindowHandle(f"window {hwnd:#x} was destroyed") from None
        c = _Client(sock, hwnd, path)
        self._clients[hwnd] = c
        return c

    def _prune_clients(self) -> None:
        """Close cached connections whose window is gone (they are read without blocking)."""
        for c in list(self._clients.values()):
            if not c.waiting:
                self._read_replies(c)
                if c.state != "ok":
                    self._drop_client(c)

    def _drop_client(self, c: _Client) -> None:
        if self._clients.get(c.hwnd) is c:
            del self._clients[c.hwnd]
        c.sock.close()
        if c.state == "ok":
            c.state = "dead"

    def _read_replies(self, c: _Client) -> None:
        while c.state == "ok":
            got = _os.recv_packet(c.sock, wire.PACKET_MAX)
            if got is None:
                return
            data, fds, _truncated = got
            if fds:
                _os.close_fds(fds)
            if not data:
                c.state = "dead"
                return
            try:
                frame = wire.decode(data, len(fds))
            except W.InvalidData as exc:
                log.warning("window %#x sent a malformed frame (%s); dropped the connection", c.hwnd, exc)
                c.state = "dead"
                return
            if isinstance(frame, wire.ReplyFrame):
                if frame.seq in c.waiting:  # a reply to a call that timed out is dropped
                    c.replies[frame.seq] = (frame.status, frame.result)
            elif isinstance(frame, wire.RefusedFrame):
                c.state = "refused"
            else:
                log.warning("window %#x sent a message frame on a reply channel; dropped the connection", c.hwnd)
                c.state = "dead"

    def post(self, hwnd: int, frame: wire.MessageFrame) -> None:
        """Post through the window's socket (another thread's window)."""
        data = wire.encode_message(frame)
        for _attempt in range(2):
            c = self._client(hwnd)
            try:
                ok = _os.send_packet(c.sock, data)
            except W.BrokenPipe:
                self._read_replies(c)  # a REFUSED may be waiting
                self._drop_client(c)  # else a cached connection to a window destroyed since
                if c.state == "refused":
                    raise W.AccessDenied(f"window {hwnd:#x} refused our connection (its security)") from None
                continue
            if not ok:
                raise W.from_winerror(
                    W.ERROR_NOT_ENOUGH_QUOTA,
                    f"window {hwnd:#x}: its thread is not taking messages and the connection is full",
                )
            return
        raise W.InvalidWindowHandle(f"window {hwnd:#x} was destroyed")

    def send(self, hwnd: int, frame: wire.MessageFrame, fd: int | None, timeout: float | None, flags: int) -> int:
        """Send to another thread's window and wait for the reply (seconds, None = forever)."""
        block = bool(flags & SMTO_BLOCK)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            c = self._client(hwnd)
        except W.PipeBusy:
            raise W.Timeout(f"window {hwnd:#x}: its thread is not accepting connections") from None
        if flags & SMTO_ABORTIFHUNG and is_hung(c.path):
            raise W.Timeout(f"window {hwnd:#x}: its thread is hung (no messages retrieved for {hung_timeout()} s)")
        self._seq = self._seq % wire.U32 + 1
        seq = self._seq
        data = wire.encode_message(dataclasses.replace(frame, seq=seq))
        waited = False
        try:
            retried = False
            while True:  # write (the socket may be full while the window's thread does not read)
                try:
                    if _os.send_packet(c.sock, data, fd):
                        break
                except W.BrokenPipe:
                    self._read_replies(c)  # a REFUSED may be waiting
                    self._drop_client(c)
                    if c.state == "refused":
                        raise W.AccessDenied(f"window {hwnd:#x} refused our connection (its security)") from None
                    if retried:
                        raise W.InvalidWindowHandle(f"window {hwnd:#x} was destroyed") from None
                    retried = True
                    c = self._client(hwnd)
                    continue
                left = self._left(deadline, flags, c, hwnd)
                if not block:
                    self._process_sent()
                    self._mark_waiting()
                    waited = True
                _os.wait_io([] if block else [self._poller.fileno()], c.sock.fileno(), left)
            c.waiting.add(seq)
            try:
                while True:
                    self._read_replies(c)
                    reply = c.replies.pop(seq, None)
                    if reply is not None:
                        status, result = reply
                        if status:
                            raise W.from_winerror(status, f"window {hwnd:#x}: message {frame.msg:#x} failed")
                        return result
                    if c.state == "refused":
                        self._drop_client(c)
                        raise W.AccessDenied(f"window {hwnd:#x} refused our connection (its security)")
                    if c.state == "dead":
                        self._drop_client(c)
                        raise W.InvalidWindowHandle(f"window {hwnd:#x} was destroyed during the call")
                    if not block and self._process_sent():
                        continue  # replies may have come meanwhile
                    left = self._left(deadline, flags, c, hwnd)
                    fds = [c.sock.fileno()]
                    if not block:
                        fds.append(self._poller.fileno())
                        self._mark_waiting()
                        waited = True
                    _os.wait_readable(fds, left)
            finally:
                c.waiting.discard(seq)
                c.replies.pop(seq, None)
        finally:
            if waited:
                self._mark_running()

    def _left(self, deadline: float | None, flags: int, c: _Client, hwnd: int) -> float | None:
        """Seconds left; raises Timeout when none are (SMTO_NOTIMEOUTIFNOTHUNG extends)."""
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left > 0:
            return left
        if flags & SMTO_NOTIMEOUTIFNOTHUNG and not is_hung(c.path):
            return 0.25  # not hung: keep waiting, and look again
        raise W.Timeout(f"window {hwnd:#x} did not answer within the time-out")

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """Release the queue's descriptors (its windows must be gone)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in list(self._conns.values()):
                self._drop_conn(conn)
            for c in list(self._clients.values()):
                self._drop_client(c)
            self._poller.close()


    def __del__(self) -> None:
        # the thread ended (its thread-local queue is collected): close its connections quietly
        try:
            for c in list(self._clients.values()):
                c.sock.close()
            for conn in list(self._conns.values()):
                conn.sock.close()
            self._poller.close()
        except Exception:
            pass


def release_view(view: memoryview, mm: Any) -> None:
    """End a WM_COPYDATA view: the memory stays mapped only while the caller kept a slice."""
    with contextlib.suppress(BufferError):
        view.release()
    if mm is not None:
        with contextlib.suppress(BufferError):
            mm.close()


_tls = threading.local()


def current() -> MessageQueue:
    """The calling thread's queue (made on first use)."""
    q: MessageQueue | None = getattr(_tls, "queue", None)
    if q is None or q.closed:
        q = _tls.queue = MessageQueue()
    return q


def current_if_any() -> MessageQueue | None:
    q: MessageQueue | None = getattr(_tls, "queue", None)
    return q
