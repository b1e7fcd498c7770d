"""One connected end of a named pipe: reads, writes, peek, transact, flush, handles.

Byte-type pipes carry raw bytes on an AF_UNIX stream socket (a plain Unix program can be
the peer). Message-type pipes frame each message (``winipc._wire.framing``). The server
signals ``DisconnectNamedPipe`` with one out-of-band byte before it closes, so a client
can tell ERROR_PIPE_NOT_CONNECTED (disconnected) from ERROR_BROKEN_PIPE (server closed):
clients therefore ``poll`` before each read, which also gives timeouts and CancelIo.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends.errors import translate
from winipc._core.handles import Handle, export_handle, import_handle
from winipc._wire import framing
from winipc.pipes import _fast

_CHUNK = 65536
_HEAD_READ = 4096  # a header read takes a small message whole, and little of a big one
_PEEK_LIMIT = 4 * 1024 * 1024
_OOB_MARK = b"D"
_HAS_OOB = B.LINUX and hasattr(socket, "MSG_OOB")
_POLLPRI = getattr(select, "POLLPRI", 0)


@dataclass(frozen=True)
class PeekResult:
    """What :meth:`PipeConnection.peek` saw (Win32: PeekNamedPipe).

    Attributes:
        data: up to the requested number of bytes (of the next message, in message-read
            mode), not removed from the pipe.
        total_available: payload bytes waiting in the pipe.
        left_this_message: bytes of the next message not included in ``data`` (0 for
            byte-type pipes).
    """

    data: bytes
    total_available: int
    left_this_message: int


class ConnectedEnd(Handle):
    """What the sync and asyncio connections share: the socket, peer, and read mode."""

    _sock: socket.socket
    name: str
    message_type: bool
    read_message_mode: bool
    #: the other end when it is on another machine (``\\\\server\\pipe\\name``), else None
    remote: Any = None
    #: the pump that carries a remote connection (winipc.pipes._remote), for flush()
    _remote_pump: Any = None

    @property
    def peer(self) -> B.PeerCredentials:
        """Process id, user id and group id of the other end (SO_PEERCRED).

        For a remote peer: the process id it reported, and -1 as user and group id (its
        identity is :attr:`remote`).
        """
        self._check_open()
        if self.remote is not None:
            return B.PeerCredentials(self.remote.pid, -1, -1)
        return B.peer_credentials(self._sock)

    @property
    def peer_pid(self) -> int:
        """Win32: GetNamedPipeClientProcessId / GetNamedPipeServerProcessId."""
        return self.peer.pid

    def set_read_mode(self, message: bool) -> None:
        """Switch between byte-read and message-read mode (SetNamedPipeHandleState).

        Raises:
            InvalidParameter: message-read mode on a byte-type pipe.
        """
        self._check_open()
        if message and not self.message_type:
            raise W.InvalidParameter("message-read mode needs a message-type pipe (PIPE_TYPE_MESSAGE)")
        self.read_message_mode = message


class PipeConnection(ConnectedEnd):
    """A connected pipe end (client handle or the I/O side of a server instance).

    Reads and writes raise typed errors: :class:`~winipc.errors.BrokenPipe` (109) once
    the peer closed and every byte it sent was read, :class:`~winipc.errors.PipeClosing`
    (232) writing to a closed peer, :class:`~winipc.errors.PipeNotConnected` (233) after
    the server disconnected this client.
    """

    kind = "pipe-connection"

    def __init__(
        self,
        sock: socket.socket,
        *,
        name: str,
        message_type: bool,
        can_read: bool = True,
        can_write: bool = True,
        is_client: bool,
        max_message_size: int = 256 * 1024 * 1024,
        ring_fd: int = -1,
    ) -> None:
        self._sock = sock
        self.name = name
        self.message_type = message_type
        self.read_message_mode = False
        self.nowait = False
        self.can_read = can_read
        self.can_write = can_write
        self.is_client = is_client
        self.max_message_size = max_message_size
        self._rbuf = bytearray()
        self._in_msg = False
        self._msg_left = 0
        self._msg_total = 0
        self._disconnected = False
        self._eof = False
        self._cancel_r, self._cancel_w = os.pipe()
        os.set_blocking(self._cancel_r, False)
        self._waiting = 0  # calls blocked in a wait that cancel_io can abort
        self._marks = 0  # cancel marks written and not yet taken
        self._pollc: tuple[int, Any] | None = None
        self._lock = threading.Lock()
        self._wlock = threading.Lock()
        self._ring: Any = None  # the fast path's ring endpoint (winipc._native.ring.Endpoint)
        self._ring_fd = -1
        self._control_pending = False  # a handle frame waits on the socket (fast path)
        self._closed = False
        if ring_fd >= 0:
            self._attach_ring(ring_fd, 1 if is_client else 0)

    # ------------------------------------------------------------------ fast path
    def _attach_ring(self, fd: int, side: int, ring: Any = None) -> None:
        """Move payloads through the shared-memory region ``fd`` from now on (we own ``fd``).

        ``ring``: the region already mapped (an endpoint of ``fd``), or None to map it.
        """
        if ring is None:
            try:
                ring = _fast.endpoint(fd, side, self._sock, self.max_message_size)
            except BaseException:
                B.close_fd(fd)
                raise
        try:
            ring.spin_ns = _fast.spin_ns(B.peer_credentials(self._sock).pid)
        except OSError:
            pass
        self._ring, self._ring_fd, self._control_pending = ring, fd, False

    def _detach_ring(self) -> None:
        ring, fd = self._ring, self._ring_fd
        self._ring, self._ring_fd = None, -1
        if ring is not None:
            ring.close()
        if fd >= 0:
            B.close_fd(fd)

    @property
    def fast_path(self) -> bool:
        """Whether payloads move through shared memory (both ends are local winipc)."""
        return self._ring is not None

    @property
    def spin_time(self) -> float:
        """Seconds a fast-path read or write may spin before it sleeps (0: never)."""
        return 0.0 if self._ring is None else self._ring.spin_ns / 1e9

    @spin_time.setter
    def spin_time(self, value: float) -> None:
        if not isinstance(value, (int, float)) or not 0 <= value <= 0.01:
            raise W.InvalidParameter(f"spin_time must be 0..0.01 seconds, not {value!r}")
        if self._ring is not None:
            self._ring.spin_ns = int(value * 1e9)

    def _ring_failed(self, exc: BaseException, writing: bool = False) -> None:
        """Raise the pipe's error for what a ring call raised."""
        if isinstance(exc, TimeoutError):
            if self.nowait:
                raise W.NoData(f"{self.name}: no data is waiting (PIPE_NOWAIT)") from None
            raise W.SemTimeout(f"{self.name}: no data in time") from None
        if isinstance(exc, BrokenPipeError):
            self._raise_gone(writing)
        if isinstance(exc, InterruptedError):
            raise W.OperationAborted(f"{self.name}: the I/O operation was cancelled") from None
        if _fast.ControlPending is not None and isinstance(exc, _fast.ControlPending):
            self._control_pending = True
            self._raise_handle_waits()
        if isinstance(exc, ValueError):
            if self._closed:
                raise W.OperationAborted(f"{self.name}: the handle was closed during the call") from None
            if "corrupt" in str(exc):
                self._eof = True
                raise W.InvalidData(f"{self.name}: {exc}") from None
            raise W.InvalidParameter(f"{self.name}: {exc}") from None
        raise exc

    def _raise_handle_waits(self) -> None:
        raise W.InvalidData(f"{self.name}: the peer sent a handle here; receive it with recv_handle()")

    def _service_socket(self) -> None:
        """The control socket woke a fast-path wait: doorbells, a disconnect, the end."""
        if self._disconnect_pending():
            raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")
        try:
            head = self._sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._eof = True
            return
        if not head:
            self._eof = True
            return
        bell = _fast.DOORBELL_FRAME
        n = 0
        while head.startswith(bell, n):
            n += len(bell)
        if n:
            try:
                self._sock.recv(n, socket.MSG_DONTWAIT)
            except OSError:
                pass
            return
        if self._control_pending:
            return
        if len(head) >= framing.HEADER_SIZE + 1 and head[framing.HEADER_SIZE] == framing.CONTROL_HANDLE:
            time.sleep(0)  # its CONTROL record is being published; look at the ring again
            return
        self._eof = True
        raise W.InvalidData(f"{self.name}: unexpected bytes on the control socket of a fast-path pipe")

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    @staticmethod
    def _left(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _ring_read(self, op: str, arg: Any, timeout: float | None) -> Any:
        """One reader call on the ring, with the socket serviced between attempts."""
        if self._control_pending:
            self._raise_handle_waits()
        if self._disconnected:
            raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")
        ring = self._ring
        if self.is_client and ring.peer_closed and self._disconnect_pending():
            raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")
        fn = getattr(ring, op)
        t = 0.0 if self.nowait else timeout
        deadline = None
        while True:
            try:
                return fn(t) if arg is None else fn(arg, t)
            except _fast.SocketEvent:
                if deadline is None and t is not None:
                    deadline = time.monotonic() + t
                self._service_socket()
                t = self._left(deadline)
            except BaseException as exc:
                self._ring_failed(exc)

    def _ring_write(self, op: str, arg: Any) -> Any:
        try:
            fn = getattr(self._ring, op)
            return fn(None) if op == "send_control" else fn(arg, None)
        except BaseException as exc:
            self._ring_failed(exc, writing=True)

    # ------------------------------------------------------------------ plumbing
    def _fileno(self) -> int:
        return self._sock.fileno()

    def _close(self) -> None:
        try:
            os.write(self._cancel_w, b"x")  # wake a wait blocked in another thread
        except OSError:
            pass
        try:
            self._detach_ring()
        except Exception:
            pass
        try:
            self._sock.close()
        finally:
            B.close_fd(self._cancel_r)
            B.close_fd(self._cancel_w)

    @property
    def socket(self) -> socket.socket:
        """The socket underneath (for selectors; do not read or write it directly)."""
        self._check_open()
        return self._sock

    def _wait_ready(self) -> bool:
        """Data already taken off the socket (by peek or a short read) is waiting too.

        On the fast path the ring is the truth: a wait asks the writer for a doorbell
        (a control frame on the socket) when the ring is empty, so that the socket's
        descriptor wakes ``wait_any`` when data arrives.
        """
        ring = self._ring
        if ring is None:
            return bool(self._rbuf)
        if self._control_pending or self._eof or self._disconnected or ring.readable():
            return True
        try:
            self._service_socket()
        except W.WinIPCError:
            return True
        if self._eof or _fast.socket_ended(self._sock):
            return True
        return bool(ring.arm_doorbell())

    @property
    def _wait_exact(self) -> bool:
        """On the fast path the socket only says "look again" (see :meth:`_wait_ready`)."""
        return self._ring is not None

    def set_nowait(self, nowait: bool) -> None:
        """PIPE_NOWAIT: reads on an empty pipe fail at once with ERROR_NO_DATA."""
        self._check_open()
        self.nowait = nowait

    def cancel_io(self) -> bool:
        """Abort the reads and waits blocked on this handle in other threads (CancelIoEx).

        Each blocked call raises :class:`~winipc.errors.OperationAborted` (995).

        Returns:
            False when nothing was pending (Windows' ERROR_NOT_FOUND); nothing is then
            left behind to abort a later call.
        """
        ring_waiting = self._ring is not None and not self._closed and bool(self._ring.cancel())
        if self._closed or not self._waiting:
            return ring_waiting
        self._marks += self._waiting
        os.write(self._cancel_w, b"x" * self._waiting)
        return True

    def _begin_wait(self) -> None:
        """Count a blocked call; a mark meant for calls that have ended is dropped first."""
        if not self._waiting and self._marks:
            self._marks = 0
            try:
                while os.read(self._cancel_r, 4096):
                    pass
            except OSError:
                pass
        self._waiting += 1

    def _drain_cancel(self) -> None:
        """Consume this waiter's cancel mark (one byte each, so every waiter wakes)."""
        try:
            os.read(self._cancel_r, 1)
            self._marks = max(0, self._marks - 1)
        except OSError:  # taken by a racing waiter, or closed by close() in another thread
            pass

    # ------------------------------------------------------------------ receive
    def _disconnect_pending(self) -> bool:
        if not self.is_client or not _HAS_OOB or self._disconnected:
            return self._disconnected
        try:
            if self._sock.recv(1, socket.MSG_OOB | socket.MSG_DONTWAIT) == _OOB_MARK:
                self._disconnected = True
                self._rbuf.clear()
        except OSError:
            pass
        return self._disconnected

    def _raise_gone(self, writing: bool = False) -> None:
        if self._disconnect_pending():
            raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")
        if writing:
            raise W.PipeClosing(f"{self.name}: the other end has closed the pipe")
        raise W.BrokenPipe(f"{self.name}: the other end has closed the pipe")

    def _wait(self, timeout: float | None) -> None:
        """Block until readable, a disconnect mark, cancel or timeout (client/timed path)."""
        sock_fd = self._sock.fileno()
        cached = self._pollc
        if cached is None or cached[0] != sock_fd:
            poller = select.poll()
            poller.register(sock_fd, select.POLLIN | _POLLPRI)
            poller.register(self._cancel_r, select.POLLIN)
            self._pollc = cached = (sock_fd, poller)
        poller = cached[1]
        if timeout is None:  # the common case: one ready socket, nothing else
            self._begin_wait()
            try:
                events = poller.poll()
            finally:
                self._waiting -= 1
            if len(events) == 1 and events[0][0] == sock_fd and events[0][1] == select.POLLIN:
                return
            self._check_events(events)
            if events:
                return
        deadline = None if timeout is None else time.monotonic() + timeout
        self._begin_wait()
        try:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                events = poller.poll(None if remaining is None else remaining * 1000)
                self._check_events(events)
                if events:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    raise W.SemTimeout(f"{self.name}: no data within {timeout} s")
        finally:
            self._waiting -= 1

    def _check_events(self, events: list[tuple[int, int]]) -> None:
        for fd, ev in events:
            if fd == self._cancel_r:
                self._drain_cancel()
                raise W.OperationAborted(f"{self.name}: the I/O operation was cancelled")
            if ev & _POLLPRI and self._disconnect_pending():
                raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")

    def _recv(self, size: int, timeout: float | None) -> bytes:
        """Receive 1..``size`` bytes; raise the pipe's error otherwise.

        It polls first: for cancel_io and the timeout, and on a client because a read
        that starts at the disconnect mark would silently drop it.
        """
        if self._disconnected:
            raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")
        if self._eof:
            self._raise_gone()
        sock = self._sock
        try:
            if self.nowait:
                if self._disconnect_pending():
                    raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")
                data = sock.recv(size, socket.MSG_DONTWAIT)
            else:
                self._wait(timeout)
                data = sock.recv(size)
        except BlockingIOError:
            if self._disconnect_pending():
                raise W.PipeNotConnected(f"{self.name}: the server disconnected this client") from None
            raise W.NoData(f"{self.name}: no data is waiting (PIPE_NOWAIT)") from None
        except W.WinIPCError:
            raise
        except OSError as exc:
            if self._disconnect_pending():
                raise W.PipeNotConnected(f"{self.name}: the server disconnected this client") from None
            raise translate(exc, "read", self.name) from None
        if not data:
            self._eof = True
            self._raise_gone()
        return data

    def _fill(self, timeout: float | None) -> None:
        """Append at least one more byte to the read buffer (a frame header, mostly)."""
        self._rbuf += self._recv(_HEAD_READ, timeout)

    def _take(self, n: int) -> bytes:
        with memoryview(self._rbuf) as view:
            data = bytes(view[:n])
        del self._rbuf[:n]
        return data

    def _read_exact(self, n: int, timeout: float | None) -> bytes:
        """Exactly ``n`` bytes: what is buffered, then straight from the socket."""
        if len(self._rbuf) >= n:
            return self._take(n)
        parts = []
        have = len(self._rbuf)
        if have:
            parts.append(bytes(self._rbuf))
            self._rbuf.clear()
        while have < n:
            chunk = self._recv(n - have, timeout)
            parts.append(chunk)
            have += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _start_message(self, timeout: float | None) -> None:
        """Read the next frame header (control frames are refused here)."""
        while len(self._rbuf) < framing.HEADER_SIZE:
            self._fill(timeout)
        try:
            control, length = framing.parse_header(
                self._rbuf[: framing.HEADER_SIZE], self.max_message_size
            )
        except W.InvalidData:
            self._eof = True
            raise
        if control:
            raise W.InvalidData(
                f"{self.name}: the peer sent a handle here; receive it with recv_handle()"
            )
        del self._rbuf[: framing.HEADER_SIZE]
        self._in_msg, self._msg_left, self._msg_total = True, length, length

    def _check_read(self) -> None:
        self._check_open()
        if not self.can_read:
            raise W.AccessDenied(f"{self.name}: this end of the pipe was not opened for reading")

    def read(self, size: int, timeout: float | None = None) -> bytes:
        """Read up to ``size`` bytes (Win32: ReadFile).

        Byte-read mode returns what is there (at least one byte), within one message on
        a message-type pipe. Message-read mode returns the next message, or its next
        part when it is longer than ``size``.

        Args:
            size: most bytes to return, >= 0.
            timeout: seconds to wait for data; None waits forever.

        Raises:
            MoreData: (234) message-read mode, the message is longer than ``size``: the
                error's ``.data`` holds this part; the next read returns the rest.
            NoData: (232) PIPE_NOWAIT and the pipe is empty.
            SemTimeout: (121) nothing arrived within ``timeout``.
            BrokenPipe / PipeNotConnected: the other end closed or disconnected.
        """
        self._check_read()
        if not isinstance(size, int) or size < 0:
            raise W.InvalidParameter(f"size must be an int >= 0, not {size!r}")
        with self._lock:
            if self._ring is not None:
                return self._fast_read(size, timeout)
            if not self.message_type:
                if not self._rbuf:
                    return self._recv(size, timeout) if size else b""
                return self._take(min(size, len(self._rbuf)))
            if not self._in_msg:
                self._start_message(timeout)
            n = min(size, self._msg_left)
            if not self.read_message_mode and n > len(self._rbuf) and self._rbuf:
                n = len(self._rbuf)  # byte-read mode: what is there, within this message
            data = self._read_exact(n, timeout) if n else b""
            self._msg_left -= n
            if self._msg_left == 0:
                self._in_msg = False
            elif self.read_message_mode:
                raise W.MoreData(data, f"{self.name}: {self._msg_left} more bytes in this message")
            return data

    def recv(self, timeout: float | None = None) -> bytes:
        """Receive one whole message (message-type pipes) or what is there (byte-type).

        On a byte-type pipe this returns between 1 and 65536 bytes. Raises as :meth:`read`.
        """
        ring = self._ring
        if (
            ring is not None  # connected on the fast path (a closed handle has no ring)
            and self.message_type
            and self.can_read
            and not self._control_pending
            and not (self.is_client and ring.peer_closed)
        ):
            with self._lock:  # the hot path: one call into the ring
                try:
                    data: bytes = ring.recv(0.0 if self.nowait else timeout)
                    return data
                except BaseException as exc:
                    if not isinstance(exc, _fast.SocketEvent):
                        self._ring_failed(exc)
                    self._service_socket()
                    data = self._ring_read("recv", None, timeout)
                    return data
        self._check_read()
        if not self.message_type:
            return self.read(_CHUNK, timeout)
        with self._lock:
            if self._ring is not None:
                data = self._ring_read("recv", None, timeout)
                return data
            if not self._in_msg:
                if not self._rbuf:
                    # fast path: one read brings a small message whole
                    chunk = self._recv(_HEAD_READ, timeout)
                    if len(chunk) >= framing.HEADER_SIZE:
                        (word,) = framing.HEADER.unpack_from(chunk)
                        if word == len(chunk) - framing.HEADER_SIZE and word <= self.max_message_size:
                            return chunk[framing.HEADER_SIZE :]
                    self._rbuf += chunk
                self._start_message(timeout)
            data = self._read_exact(self._msg_left, timeout)
            self._msg_left = 0
            self._in_msg = False
            return data

    # ------------------------------------------------------------------ zero copy, batches
    def recv_into(self, buffer: Any, timeout: float | None = None) -> int:
        """Receive into ``buffer`` (any writable buffer); return the byte count.

        A message-type pipe fills it with the next message (or the rest of the current
        one); a byte-type pipe with what is there, up to ``len(buffer)`` bytes. No
        intermediate object is made: the bytes go from the ring (or socket) to ``buffer``.

        Raises:
            MoreData: (234) a message is longer than ``buffer``: it holds the first part
                (also in the error's ``.data``); the next read continues the message.
            Others as :meth:`read`.
        """
        self._check_read()
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise W.InvalidParameter("recv_into needs a writable buffer")
        with self._lock:
            if self._ring is not None:
                n: int = self._ring_read("recv_into", view, timeout)
                left = self._ring.message_left if self.message_type else 0
            else:
                data = self._slow_part(view.nbytes, timeout)
                n = len(data)
                view[:n] = data
                left = self._msg_left if self.message_type else 0
        if left:
            raise W.MoreData(bytes(view[:n]), f"{self.name}: {left} more bytes in this message")
        return n

    def _slow_part(self, size: int, timeout: float | None) -> bytes:
        """Socket path: up to ``size`` bytes of the current message (or of the stream)."""
        if not self.message_type:
            if self._rbuf:
                return self._take(min(size, len(self._rbuf)))
            return self._recv(size, timeout) if size else b""
        if not self._in_msg:
            self._start_message(timeout)
        n = min(size, self._msg_left)
        data = self._read_exact(n, timeout) if n else b""
        self._msg_left -= n
        if self._msg_left == 0:
            self._in_msg = False
        return data

    def recv_view(self, timeout: float | None = None) -> memoryview:
        """The next message as a read-only ``memoryview``, without a copy on the fast path.

        On the fast path the view points into the shared ring, and that space is reused
        only once the view is released (``view.release()``, ``with view:``, or garbage
        collection of the view and of everything made from it, numpy arrays included):
        release views promptly, or the writer waits for room. Elsewhere the view wraps a
        private copy. On a byte-type pipe it holds what is there (one chunk).

        Raises:
            As :meth:`recv`.
        """
        self._check_read()
        if self._ring is None:
            return memoryview(self.recv(timeout)).toreadonly()
        with self._lock:
            if not self.message_type and self._ring.message_left:
                return memoryview(self._ring_read("read", 1 << 30, timeout)).toreadonly()
            return memoryview(self._ring_read("recv_view", None, timeout))

    @contextlib.contextmanager
    def send_buffer(self, size: int) -> Iterator[memoryview]:
        """Write straight into the send buffer: ``with pipe.send_buffer(n) as buf:``.

        ``buf`` is a writable memoryview of ``size`` bytes; when the block ends normally
        its contents go out as one write (one message on a message pipe); when it raises,
        nothing is sent. On the fast path ``buf`` is the ring itself (zero copy) when
        ``size`` fits one ring record; otherwise a private buffer sent at the end.
        Do not keep ``buf`` (or views of it) after the block.

        Raises:
            InvalidParameter: ``size`` is not an int in 0..2**31-1.
            Others as :meth:`write`.
        """
        if not isinstance(size, int) or not 0 <= size <= framing.MAX_MESSAGE:
            raise W.InvalidParameter(f"size must be an int in 0..{framing.MAX_MESSAGE}, not {size!r}")
        self._check_write()
        ring = self._ring
        if ring is None or size > ring.max_record:
            buf = bytearray(size)
            with memoryview(buf) as view:
                yield view
            self.write(buf)
            return
        with self._wlock:
            reservation = self._ring_write("reserve", size)
            view = memoryview(reservation)
            try:
                yield view
            except BaseException:
                view.release()
                reservation.abort()
                raise
            try:
                view.release()
            except BufferError:
                pass  # the caller kept a view of it; the bytes are final all the same
            try:
                reservation.commit(None)
            except BaseException as exc:
                self._ring_failed(exc, writing=True)

    def send_many(self, messages: Sequence[bytes | bytearray | memoryview]) -> int:
        """Write several messages at once (each one message on a message pipe).

        On the fast path they are published together with one wake of the reader; on a
        socket they go out in one system call where they fit. Returns the count written
        (all of them). Raises as :meth:`write`.
        """
        self._check_write()
        items = list(messages)
        ring = self._ring
        if ring is not None:
            with self._wlock:
                done = 0
                while done < len(items):
                    k: int = self._ring_write("send_many", items[done:] if done else items)
                    done += k
            return len(items)
        if not self.message_type:
            self._sendall([b"".join(items)])
            return len(items)
        parts: list[bytes | memoryview] = []
        for item in items:
            view = memoryview(item).cast("B")
            if view.nbytes > framing.MAX_MESSAGE:
                raise W.InvalidParameter(f"message is {view.nbytes} bytes; the limit is {framing.MAX_MESSAGE}")
            parts += [framing.HEADER.pack(view.nbytes), view]
        self._sendall([b"".join(parts)] if len(parts) <= 2048 else parts)
        return len(items)

    def recv_many(self, max_count: int = 64, timeout: float | None = None) -> list[bytes]:
        """Wait for one message, then also take every complete message already there.

        Args:
            max_count: most messages to return, >= 1.
            timeout: seconds to wait for the first; None waits forever.

        Returns:
            1..``max_count`` messages in order (a byte-type pipe: one chunk).

        Raises:
            As :meth:`recv`.
        """
        if not isinstance(max_count, int) or max_count < 1:
            raise W.InvalidParameter(f"max_count must be an int >= 1, not {max_count!r}")
        self._check_read()
        if not self.message_type:
            return [self.recv(timeout)]
        if self._ring is not None:
            with self._lock:
                out: list[bytes] = self._ring_read("recv_many", max_count, timeout)
                return out
        out = [self.recv(timeout)]
        with self._lock:
            if self._in_msg:
                return out
            try:
                self._pull_available()
            except W.WinIPCError:
                return out  # the end is reported by the next call
            while len(out) < max_count and len(self._rbuf) >= framing.HEADER_SIZE:
                control, length = framing.parse_header(self._rbuf[: framing.HEADER_SIZE], self.max_message_size)
                if control or len(self._rbuf) < framing.HEADER_SIZE + length:
                    break
                del self._rbuf[: framing.HEADER_SIZE]
                out.append(self._take(length))
        return out

    def send_array(self, array: Any) -> None:
        """Send a numpy array as one message: dtype and shape travel with the data.

        The array's bytes are written once, straight from its memory (no serialization
        and no pickle); see docs/wire/pipe-messages.md for the layout.

        Raises:
            InvalidParameter: not a message-type pipe; not an ndarray; an object dtype.
        """
        if not self.message_type:
            raise W.InvalidParameter("send_array needs a message-type pipe")
        head = _fast.array_header(array)
        data = _fast.array_data(array)
        total = len(head) + data.nbytes
        ring = self._ring
        if ring is not None and total <= ring.max_record:
            with self.send_buffer(total) as buf:
                buf[: len(head)] = head
                buf[len(head) :] = data
            return
        if ring is not None:
            self.write(b"".join((head, data)))
            return
        self._check_write()
        if total > framing.MAX_MESSAGE:
            raise W.InvalidParameter(f"the array makes a {total}-byte message; the limit is {framing.MAX_MESSAGE}")
        self._sendall([framing.HEADER.pack(total) + head, data])

    def recv_array(self, timeout: float | None = None) -> Any:
        """Receive an array sent with :meth:`send_array`: a read-only numpy array.

        On the fast path the array is a view of the shared ring (zero copy), which keeps
        that ring space until the array is garbage collected: ``.copy()`` an array you
        keep for long.

        Raises:
            InvalidData: the message is not an array message, or is inconsistent.
            As :meth:`recv` otherwise.
        """
        if not self.message_type:
            raise W.InvalidParameter("recv_array needs a message-type pipe")
        return _fast.array_from(self.recv_view(timeout))

    def read_exact(self, size: int, timeout: float | None = None) -> bytes:
        """Read exactly ``size`` bytes of a byte-type pipe (loops over :meth:`read`)."""
        self._check_read()
        if self.message_type:
            raise W.InvalidParameter("read_exact is for byte-type pipes; use recv()")
        with self._lock:
            if self._ring is not None:
                parts, have = [], 0
                while have < size:
                    part = self._ring_read("read", size - have, timeout)
                    parts.append(part)
                    have += len(part)
                return parts[0] if len(parts) == 1 else b"".join(parts)
            return self._read_exact(size, timeout)

    def _fast_read(self, size: int, timeout: float | None) -> bytes:
        if size == 0 and not self.message_type:
            return b""
        data: bytes = self._ring_read("read", size, timeout)
        if self.message_type and self.read_message_mode:
            left = self._ring.message_left
            if left:
                raise W.MoreData(data, f"{self.name}: {left} more bytes in this message")
        return data

    def peek(self, size: int = 0) -> PeekResult:
        """Look at waiting data without removing it (Win32: PeekNamedPipe); never blocks.

        Raises:
            BrokenPipe / PipeNotConnected: the other end is gone and nothing is left.
        """
        self._check_read()
        with self._lock:
            if self._ring is not None:
                return self._fast_peek(size)
            self._pull_available()
            if not self.message_type:
                data = bytes(self._rbuf[:size])
                return PeekResult(data, len(self._rbuf), 0)
            total, pos = 0, 0
            in_msg, left = self._in_msg, self._msg_left
            first_len: int | None = None
            first_data = b""
            buf = self._rbuf
            while True:
                if not in_msg:
                    if len(buf) - pos < framing.HEADER_SIZE:
                        break
                    control, length = framing.parse_header(
                        buf[pos : pos + framing.HEADER_SIZE], self.max_message_size
                    )
                    pos += framing.HEADER_SIZE
                    if control:
                        pos += length
                        continue
                    in_msg, left = True, length
                chunk = min(left, len(buf) - pos)
                if first_len is None:
                    first_len = left
                    first_data = bytes(buf[pos : pos + min(size, chunk)])
                total += chunk
                pos += chunk
                if chunk < left:
                    break
                in_msg = False
            if first_len is None and self._eof:
                self._raise_gone()
            left_msg = 0 if first_len is None else first_len - len(first_data)
            return PeekResult(first_data, total, left_msg)

    def _fast_peek(self, size: int) -> PeekResult:
        ring = self._ring
        if self._disconnect_pending():
            raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")
        try:
            data, total, left = ring.peek(size)
        except ValueError as exc:
            self._ring_failed(exc)
        if (not total and not left and not ring.readable()) and (
            self._eof or ring.peer_closed or _fast.socket_ended(self._sock)
        ):
            self._raise_gone()
        return PeekResult(data, total, left if self.message_type else 0)

    def _pull_available(self) -> None:
        if self._disconnect_pending():
            raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")
        while not self._eof and len(self._rbuf) < _PEEK_LIMIT:
            try:
                chunk = self._sock.recv(_CHUNK, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                raise translate(exc, "read", self.name) from None
            if not chunk:
                self._eof = True
                if self._disconnect_pending():
                    raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")
                if not self._rbuf:
                    self._raise_gone()
                return
            self._rbuf += chunk

    # ------------------------------------------------------------------ send
    def _check_write(self) -> None:
        self._check_open()
        if not self.can_write:
            raise W.AccessDenied(f"{self.name}: this end of the pipe was not opened for writing")
        if self._disconnected:
            raise W.PipeNotConnected(f"{self.name}: the server disconnected this client")

    def _sendall(self, parts: list[bytes | memoryview]) -> None:
        try:
            if len(parts) == 1:
                self._sock.sendall(parts[0])
                return
            views = [memoryview(p).cast("B") for p in parts]
            while views:
                sent = self._sock.sendmsg(views)
                while views and sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                if views and sent:
                    views[0] = views[0][sent:]
        except OSError as exc:
            if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                self._raise_gone(writing=True)
            raise translate(exc, "write", self.name) from None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` (Win32: WriteFile): all of it, as one message on a message pipe.

        Returns:
            The number of bytes written (``len(data)``).

        Raises:
            InvalidParameter: a message longer than 2**31 - 1 bytes.
            PipeClosing: (232) the other end has closed.
            PipeNotConnected: (233) the server disconnected this client.
        """
        ring = self._ring
        if ring is not None and self.can_write and not self._disconnected:
            with self._wlock:  # the hot path: one call into the ring
                try:
                    ring.send(data)
                except BaseException as exc:
                    self._ring_failed(exc, writing=True)
            return len(data) if type(data) is bytes else memoryview(data).nbytes
        self._check_write()
        view = memoryview(data).cast("B")
        n = view.nbytes
        if self.message_type:
            if n > framing.MAX_MESSAGE:
                raise W.InvalidParameter(f"message is {n} bytes; the limit is {framing.MAX_MESSAGE}")
            header = framing.HEADER.pack(n)
            if n <= 4096:
                self._sendall([header + view])
            else:
                self._sendall([header, view])
        elif n:
            self._sendall([view])
        return n

    send = write

    def transact(self, data: bytes, size: int = 65536, timeout: float | None = None) -> bytes:
        """Write one message and read the reply (Win32: TransactNamedPipe).

        Raises:
            BadPipe-like InvalidParameter: the handle is not in message-read mode.
            MoreData: the reply is longer than ``size`` (``.data`` holds the part).
        """
        self._check_open()
        if not (self.message_type and self.read_message_mode):
            raise W.WinIPCError(
                f"{self.name}: TransactNamedPipe needs a message pipe in message-read mode",
                winerror=W.ERROR_BAD_PIPE,
            )
        self.write(data)
        return self.read(size, timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the other end has read everything written (FlushFileBuffers).

        On a connection to another machine: until the process at the other end has read
        it (the two machines confirm it over the connection).

        Raises:
            BrokenPipe: the other end closed before reading it all.
            SemTimeout: not read within ``timeout``.
        """
        self._check_open()

        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0001
        while self._ring is not None:
            left = self._ring.unread
            if left == 0:
                return
            if self._ring.peer_closed or self._peer_gone():
                self._raise_gone(writing=True)
            if deadline is not None and time.monotonic() >= deadline:
                raise W.SemTimeout(f"{self.name}: {left} bytes still unread after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        while True:
            left = B.unread_bytes(self._sock, self.name)
            if left == 0:
                if self._remote_pump is not None:
                    self._remote_pump.flush(deadline, self.name)
                return
            if self._peer_gone():
                self._raise_gone(writing=True)
            if deadline is not None and time.monotonic() >= deadline:
                raise W.SemTimeout(f"{self.name}: {left} bytes still unread after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def _peer_gone(self) -> bool:
        p = select.poll()
        p.register(self._sock, select.POLLOUT)
        return any(ev & (select.POLLHUP | select.POLLERR) for _fd, ev in p.poll(0))

    # ------------------------------------------------------------------ handles
    def send_handle(self, handle: Handle) -> None:
        """Duplicate ``handle`` into the process at the other end (DuplicateHandle).

        The receiver gets an equivalent, independent handle from :meth:`recv_handle`.
        Closing either copy leaves the other open.
        """
        self._check_write()
        if self.remote is not None:
            raise W.NotSupported(f"{self.name}: handles cannot be duplicated into a process on another machine")
        import msgpack  # imported here: a client that never passes handles needs only stdlib

        fds, desc = export_handle(handle)
        frame = framing.control_frame(framing.CONTROL_HANDLE, msgpack.packb(desc))
        with self._wlock if self._ring is not None else self._lock:
            if self._ring is not None:  # its place in the data: a CONTROL record, then the frame
                self._ring_write("send_control", None)
            try:
                B.send_fds(self._sock, frame, fds)
            except W.BrokenPipe:
                self._raise_gone(writing=True)

    def recv_handle(self, timeout: float | None = None) -> Handle:
        """Receive a handle sent with :meth:`send_handle` (must be next in the pipe).

        Raises:
            InvalidData: the next thing in the pipe is not a handle, or is malformed.
        """
        import msgpack

        self._check_read()
        with self._lock:
            if self._rbuf or self._in_msg:
                raise W.InvalidData(f"{self.name}: data is waiting before any handle")
            if self._ring is not None:
                self._fast_handle_next(timeout)
            self._wait(timeout)
            data, fds = B.recv_fds(self._sock, framing.HEADER_SIZE, 16)
            self._control_pending = False
            if not data:
                self._eof = True
                self._raise_gone()
            buf = bytearray(data)
            try:
                while len(buf) < framing.HEADER_SIZE:
                    more = self._sock.recv(framing.HEADER_SIZE - len(buf))
                    if not more:
                        raise W.InvalidData("truncated handle frame")
                    buf += more
                control, length = framing.parse_header(buf, 64 * 1024)
                if not control or not fds:
                    raise W.InvalidData(f"{self.name}: expected a handle, got data")
                body = self._read_exact(length, timeout)
                if body[0] != framing.CONTROL_HANDLE:
                    raise W.InvalidData(f"{self.name}: unknown control frame {body[0]}")
                desc: Any = msgpack.unpackb(body[1:], raw=False, strict_map_key=True)
            except BaseException:
                for fd in fds:
                    B.close_fd(fd)
                raise
            return import_handle(fds, desc)

    def _fast_handle_next(self, timeout: float | None) -> None:
        """Fast path: take the CONTROL record that announces a handle; skip doorbells."""
        ring = self._ring
        deadline = self._deadline(timeout)
        while not self._control_pending:
            _data, total, left = ring.peek(0)
            if total or left or ring.message_left:
                raise W.InvalidData(f"{self.name}: data is waiting before any handle")
            if ring.readable():
                try:
                    view = ring.recv_view(0)
                except _fast.SocketEvent:
                    self._service_socket()
                    continue
                except BaseException as exc:
                    if _fast.ControlPending is not None and isinstance(exc, _fast.ControlPending):
                        self._control_pending = True
                        break
                    self._ring_failed(exc)
                view.release()
                raise W.InvalidData(f"{self.name}: an empty message was waiting before any handle")
            if self._eof or ring.peer_closed or _fast.socket_ended(self._sock):
                self._raise_gone()
            if not ring.arm_doorbell():
                self._wait(self._left(deadline))
                self._service_socket()
        # doorbells may precede the handle's frame on the socket
        bell = _fast.DOORBELL_FRAME
        while True:
            self._wait(self._left(deadline))
            head = self._sock.recv(len(bell), socket.MSG_PEEK)
            if head != bell:
                return
            self._sock.recv(len(bell))

    def _export(self) -> tuple[list[int], dict[str, Any]]:
        if self.remote is not None:
            raise W.NotSupported(f"{self.name}: a connection to another machine stays in the process that opened "
                                 "it (its TLS session lives there)")
        if self._ring is not None:  # the copy maps the same rings (one user at a time)
            return [self._sock.fileno(), self._ring_fd], {**self._export_meta(), "ring": True}
        return [self._sock.fileno()], self._export_meta()

    def _export_meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "message_type": self.message_type,
            "read_message_mode": self.read_message_mode,
            "can_read": self.can_read,
            "can_write": self.can_write,
            "is_client": self.is_client,
            "max_message_size": self.max_message_size,
        }

    @classmethod
    def _import(cls, fds: list[int], meta: dict[str, Any]) -> PipeConnection:
        sock = socket.socket(fileno=os.dup(fds[0]))
        os.close(fds[0])
        ring_fd = -1
        if meta.get("ring") and len(fds) == 2:
            ring_fd = os.dup(fds[1])
            os.close(fds[1])
        conn = cls(
            sock,
            name=str(meta["name"]),
            message_type=bool(meta["message_type"]),
            can_read=bool(meta["can_read"]),
            can_write=bool(meta["can_write"]),
            is_client=bool(meta["is_client"]),
            max_message_size=int(meta["max_message_size"]),
            ring_fd=ring_fd,
        )
        conn.read_message_mode = bool(meta["read_message_mode"]) and conn.message_type
        return conn
