"""asyncio twin of a connected pipe end: :class:`AsyncPipeConnection`.

The wire is the one :class:`~winipc.pipes.PipeConnection` speaks (either end may be the
synchronous class): raw bytes on byte-type pipes, ``winipc._wire.framing`` frames on
message-type pipes, and the server's DisconnectNamedPipe mark (one out-of-band byte)
that a client turns into ERROR_PIPE_NOT_CONNECTED.

Cancellation is safe at every ``await``:

* Reads hold no data in a coroutine across an ``await``. The socket is read without
  blocking (``MSG_DONTWAIT``) and what arrives goes at once into the connection's buffer
  (a :class:`~winipc._wire.framing.FrameDecoder` on message pipes). A cancelled or
  timed-out ``recv`` leaves a partial message buffered for the next call; a message is
  handed out whole or not at all.
* A write the socket cannot take at once goes on in a background task that the caller
  awaits through :func:`asyncio.shield`, so cancelling the caller never cuts a message
  on the wire (what is left is copied, freeing the caller's buffer). Writes keep their
  order.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends.errors import translate
from winipc._core.names import pipe_name
from winipc._core.timeouts import seconds
from winipc._wire import framing
from winipc.pipes._connection import _HAS_OOB, _OOB_MARK, ConnectedEnd, PeekResult
from winipc.pipes._named import MAX_MESSAGE_DEFAULT, connect

_CHUNK = 256 * 1024  # bytes asked of one recv call
_BYTE_RECV = 65536  # most bytes recv() returns on a byte-type pipe (as the sync class)
_PEEK_LIMIT = 4 * 1024 * 1024  # bytes peek() buffers at most
_SMALL = 4096  # messages up to this size are sent as one buffer with their header
_DONTWAIT = socket.MSG_DONTWAIT
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_POLLPRI = getattr(select, "POLLPRI", 0)

_Waiters = dict["asyncio.Future[bool]", "tuple[asyncio.AbstractEventLoop, int, bool]"]



async def _wait_fd(
    fd: int,
    *,
    writer: bool = False,
    deadline: float | None = None,
    waiters: _Waiters | None = None,
    fut: asyncio.Future[bool] | None = None,
) -> bool:
    """Wait until ``fd`` is readable (writable with ``writer``): True; or until
    ``deadline`` (``loop.time()``; None: no limit): False. ``waiters`` records the wait so a
    close can end it; whoever holds ``fut`` may complete it to wake the waiter early."""
    loop = asyncio.get_running_loop()
    waiting: asyncio.Future[bool] = loop.create_future() if fut is None else fut

    def settle(value: bool) -> None:
        if not waiting.done():
            waiting.set_result(value)

    (loop.add_writer if writer else loop.add_reader)(fd, settle, True)
    timer = None if deadline is None else loop.call_at(deadline, settle, False)
    if waiters is not None:
        waiters[waiting] = (loop, fd, writer)
    try:
        return await waiting
    finally:
        if timer is not None:
            timer.cancel()
        if waiters is None or waiters.pop(waiting, None) is not None:
            (loop.remove_writer if writer else loop.remove_reader)(fd)


async def _flush_socket(
    sock: socket.socket, name: str, deadline: float | None, gone: Callable[[bool], None]
) -> None:
    """Wait until the peer has read all that ``sock`` sent (TIOCOUTQ reaches 0).

    Raises:
        PipeClosing (or what ``gone(True)`` raises): the peer closed first.
        SemTimeout: ``deadline`` (``loop.time()``) passed first.
    """
    loop = asyncio.get_running_loop()
    delay = 0.0002
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    while True:
        left = B.unread_bytes(sock, name)
        if left == 0:
            return
        if any(ev & (select.POLLHUP | select.POLLERR) for _fd, ev in poller.poll(0)):
            gone(True)
            raise W.PipeClosing(f"{name}: the other end closed before reading everything")
        if deadline is not None and loop.time() >= deadline:
            raise W.SemTimeout(f"{name}: {left} bytes still unread at the time-out")
        pause = delay if deadline is None else min(delay, max(0.0, deadline - loop.time()))
        await asyncio.sleep(pause)
        delay = min(delay * 2, 0.01)


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # a later write, drain() or flush() reports the pipe's state


class AsyncPipeConnection(ConnectedEnd):
    """A connected pipe end for asyncio, twin of :class:`~winipc.pipes.PipeConnection`.

    Get one from :meth:`connect` (client end) or as the argument of an
    :class:`~winipc.pipes.AsyncPipeServer` handler (server end); use it from one loop.
    Errors are the sync class's: :class:`~winipc.errors.BrokenPipe` (109) once the peer
    closed and all it sent was read (a message it left unfinished is dropped, never
    delivered), :class:`~winipc.errors.PipeClosing` (232) writing to a closed peer,
    :class:`~winipc.errors.PipeNotConnected` (233) after the server disconnected this
    client, :class:`~winipc.errors.MoreData` (234) in message-read mode, and
    :class:`~winipc.errors.OperationAborted` (995) for calls pending when :meth:`close`
    runs.

    Args:
        sock: a connected AF_UNIX stream socket (blocking or not: every call uses
            ``MSG_DONTWAIT``).
        name: the pipe's display name.
        message_type: the pipe is message-type (framed).
        read_message: start in message-read mode (needs ``message_type``).
        can_read / can_write: the access of this end.
        is_client: this is the client end (it watches for the disconnect mark).
        max_message_size: largest message (bytes) accepted; a longer one is InvalidData.
        owns_socket: close ``sock`` on close (False when a server instance keeps it).

    Raises:
        InvalidParameter: ``read_message`` on a byte-type pipe, or a bad size.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        name: str,
        message_type: bool,
        read_message: bool = False,
        can_read: bool = True,
        can_write: bool = True,
        is_client: bool,
        max_message_size: int = MAX_MESSAGE_DEFAULT,
        owns_socket: bool = True,
    ) -> None:
        self._closed = True
        if read_message and not message_type:
            raise W.InvalidParameter("message-read mode needs a message-type pipe")
        if not isinstance(max_message_size, int) or not 0 <= max_message_size <= 0x7FFF_FFFF:
            raise W.InvalidParameter(
                f"max_message_size must be 0..2**31-1, not {max_message_size!r}"
            )
        self._sock, self._owns = sock, owns_socket
        self.name = name
        self.message_type = message_type
        self.read_message_mode = read_message
        self.can_read, self.can_write = can_read, can_write
        self.is_client = is_client
        self.max_message_size = max_message_size
        self._scratch = bytearray(_CHUNK)
        self._bytes = bytearray()  # byte-type pipes: received, not yet read
        self._decoder = framing.FrameDecoder(max_message_size)
        self._messages: deque[framing.Event] = deque()  # whole frames, not yet read
        self._part: bytes | None = None  # a message being read in parts by read(size)
        self._part_pos = 0
        self._eof = self._disconnected = False
        self._bad: W.WinIPCError | None = None
        self._rlock: asyncio.Lock | None = None
        self._waiters: _Waiters = {}
        self._read_waiter: asyncio.Future[bool] | None = None
        self._send_tail: asyncio.Task[None] | None = None
        self._watch_mark = is_client and _HAS_OOB
        self._poller = select.poll()
        if self._watch_mark:
            self._poller.register(sock, select.POLLIN | _POLLPRI)
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("client" if self.is_client else "server")
        kind = "message" if self.message_type else "byte"
        return f"<AsyncPipeConnection {self.name!r} {kind} {state}>"

    @classmethod
    async def connect(
        cls,
        name: str,
        *,
        read: bool = True,
        write: bool = True,
        read_message: bool = False,
        expect_server_uid: int | None = None,
        max_message_size: int = MAX_MESSAGE_DEFAULT,
        timeout: float | None = 0.0,
    ) -> AsyncPipeConnection:
        """Open the client end of a named pipe (Win32: CreateFile, WaitNamedPipe).

        Lookup and checks are :func:`winipc.pipes.connect`'s, which never blocks.

        Args:
            name: ``\\\\.\\pipe\\name`` or a bare name.
            read / write: the access wanted; must fit the pipe's direction.
            read_message: start in message-read mode (message-type pipes only).
            expect_server_uid: refuse a server not running as this user id.
            max_message_size: largest message (bytes) accepted from the server.
            timeout: seconds to keep trying while every instance is busy; 0 fails at
                once, None waits as long as it takes.

        Raises:
            FileNotFound: (2) no such pipe.
            PipeBusy: (231) every instance stayed busy for ``timeout`` seconds.
            AccessDenied: (5) the pipe's security or direction refuses us, or the server
                is not ``expect_server_uid``.
            InvalidParameter: ``read_message`` on a byte-type pipe, or a bad argument.
            NotSupported: a pipe on another machine (``\\\\server\\pipe\\name``).
        """
        if not pipe_name(name).is_local:
            raise W.NotSupported(f"{name}: AsyncPipeConnection reaches pipes on this machine only; open a remote "
                                 "pipe with winipc.pipes.connect (in a thread)")
        limit = seconds(timeout, "timeout")
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        delay = 0.0005
        while True:
            try:
                sync = connect(
                    name, read=read, write=write, expect_server_uid=expect_server_uid, fast_path=False
                )
                break
            except W.PipeBusy:
                now = loop.time()
                if deadline is not None and now >= deadline:
                    raise
                await asyncio.sleep(delay if deadline is None else min(delay, deadline - now))
                delay = min(delay * 2, 0.02)
        with sync:  # the sync handle closes its descriptor; we keep a duplicate
            sock = sync.socket.dup()
        try:
            return cls(
                sock,
                name=sync.name,
                message_type=sync.message_type,
                read_message=read_message,
                can_read=read,
                can_write=write,
                is_client=True,
                max_message_size=max_message_size,
            )
        except BaseException:
            sock.close()
            raise

    # ------------------------------------------------------------------ handle
    def _fileno(self) -> int:
        return self._sock.fileno()

    def _close(self) -> None:
        # Pending reads and writes end with OperationAborted; writes queued behind them
        # then find the handle closed.
        for fut, (loop, fd, writer) in list(self._waiters.items()):
            del self._waiters[fut]
            if loop.is_closed():
                continue
            (loop.remove_writer if writer else loop.remove_reader)(fd)
            if not fut.done():
                fut.set_exception(W.OperationAborted(f"{self.name}: the handle was closed"))
        self._messages.clear()
        self._bytes.clear()
        self._part = None
        if self._owns:
            self._sock.close()

    async def aclose(self) -> None:
        """Wait until queued writes are sent (or failed), then close. (:meth:`close` cuts
        a message still being sent: the peer gets BrokenPipe, never a short message.)"""
        tail = self._send_tail
        if not self._closed and tail is not None and not tail.done():
            await asyncio.wait([tail])
        self.close()

    async def __aenter__(self) -> AsyncPipeConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ receive plumbing
    def _not_connected(self) -> W.PipeNotConnected:
        return W.PipeNotConnected(f"{self.name}: the server disconnected this client")

    def _disconnect_pending(self) -> bool:
        """Take the DisconnectNamedPipe mark if it came; unread data goes, as on Windows."""
        if self._disconnected or not self._watch_mark:
            return self._disconnected
        try:
            if self._sock.recv(1, socket.MSG_OOB | _DONTWAIT) != _OOB_MARK:
                return False
        except OSError:
            return False
        self._disconnected = True
        self._bytes.clear()
        self._messages.clear()
        self._part = None
        self._decoder = framing.FrameDecoder(self.max_message_size)
        return True

    def _raise_gone(self, writing: bool = False) -> None:
        if self._disconnect_pending():
            raise self._not_connected()
        if writing:
            raise W.PipeClosing(f"{self.name}: the other end has closed the pipe")
        cut = " in the middle of a message" if self._decoder.in_frame else ""
        raise W.BrokenPipe(f"{self.name}: the other end has closed the pipe{cut}")

    def _recv_nowait(self) -> bool:
        """One recv into the buffers; False if the socket had nothing. Raises BrokenPipe
        or PipeNotConnected at the end, InvalidData for a bad frame (and from then on)."""
        if self._disconnected:
            raise self._not_connected()
        if self._bad is not None:
            raise self._bad
        if self._eof:
            self._raise_gone()
        if self._watch_mark:
            # A plain read that starts at the out-of-band mark drops it (Linux), so a
            # client reads only after poll saw something in front of any mark; a mark that
            # comes later stops the read before it.
            events = self._poller.poll(0)
            if not events:
                return False
            if events[0][1] & _POLLPRI and self._disconnect_pending():
                raise self._not_connected()
        try:
            n = self._sock.recv_into(self._scratch, _CHUNK, _DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            if self._disconnect_pending():
                raise self._not_connected() from None
            self._eof = True
            raise translate(exc, "read", self.name) from None
        if n == 0:
            self._eof = True
            self._raise_gone()
        if not self.message_type:
            self._bytes += memoryview(self._scratch)[:n]
            return True
        try:
            self._decoder.feed(memoryview(self._scratch)[:n])
            while (event := self._decoder.next_event()) is not None:
                self._messages.append(event)
        except W.InvalidData as exc:
            self._bad = W.InvalidData(f"{self.name}: {exc.strerror}")
            raise self._bad from None
        return True

    async def _fill(self, deadline: float | None) -> None:
        """Receive once, or wait until there may be data (the caller loops); SemTimeout
        (121) when nothing came by ``deadline``."""
        if self._recv_nowait():
            return
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._read_waiter = fut  # peek() wakes us when it has buffered data
        try:
            fd = self._sock.fileno()
            ready = await _wait_fd(fd, deadline=deadline, waiters=self._waiters, fut=fut)
        finally:
            self._read_waiter = None
        if not ready:
            raise W.SemTimeout(f"{self.name}: no data arrived within the time-out")

    def _deadline(self, timeout: float | None) -> float | None:
        limit = seconds(timeout, "timeout")
        return None if limit is None else asyncio.get_running_loop().time() + limit

    def _reading(self) -> asyncio.Lock:
        self._check_open()
        if not self.can_read:
            raise W.AccessDenied(f"{self.name}: this end was not opened for reading")
        if self._rlock is None:
            self._rlock = asyncio.Lock()
        return self._rlock

    async def _next_message(self, deadline: float | None) -> bytes:
        while not self._messages:
            await self._fill(deadline)
        event = self._messages.popleft()
        if isinstance(event, framing.Control):
            raise W.InvalidData(
                f"{self.name}: the peer sent a handle, which AsyncPipeConnection cannot "
                "receive (use PipeConnection.recv_handle)"
            )
        return event.data

    def _take(self, size: int) -> bytes:
        data = bytes(self._bytes[:size])
        del self._bytes[:size]
        return data

    # ------------------------------------------------------------------ receive
    async def read(self, size: int, timeout: float | None = None) -> bytes:
        """Read up to ``size`` bytes (Win32: ReadFile).

        Byte-type pipe: what is there, at least one byte. Message-type pipe: the next
        message, or its next part when longer than ``size`` (message-read mode raises
        MoreData for each part but the last; byte-read mode returns the parts).

        Args:
            size: most bytes to return, >= 0.
            timeout: seconds to wait for data; None waits as long as it takes.

        Raises:
            MoreData: (234) message-read mode, the message is longer than ``size``:
                ``.data`` holds this part, the next read returns what follows.
            SemTimeout: (121) nothing arrived within ``timeout`` (nothing is lost).
            BrokenPipe / PipeNotConnected: the other end closed or disconnected.
            InvalidData: the peer announced a message over ``max_message_size``.
        """
        lock = self._reading()
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise W.InvalidParameter(f"size must be an int >= 0, not {size!r}")
        deadline = self._deadline(timeout)
        async with lock:
            if not self.message_type:
                while size and not self._bytes:
                    await self._fill(deadline)
                return self._take(size)
            if self._part is None:
                self._part, self._part_pos = await self._next_message(deadline), 0
            part, pos = self._part, self._part_pos
            data = part if pos == 0 and size >= len(part) else part[pos : pos + size]
            pos += len(data)
            if pos == len(part):
                self._part = None
                return data
            self._part_pos = pos
            if self.read_message_mode:
                raise W.MoreData(data, f"{self.name}: {len(part) - pos} more bytes in the message")
            return data

    async def recv(self, timeout: float | None = None) -> bytes:
        """Receive one whole message (message-type) or up to 64 KiB (byte-type).

        After a :meth:`read` that took part of a message, returns the rest of it.
        Raises as :meth:`read`, never MoreData.
        """
        if not self.message_type:
            return await self.read(_BYTE_RECV, timeout)
        lock = self._reading()
        deadline = self._deadline(timeout)
        async with lock:
            if self._part is not None:
                data, self._part = self._part[self._part_pos :], None
                return data
            return await self._next_message(deadline)

    async def read_exact(self, size: int, timeout: float | None = None) -> bytes:
        """Read exactly ``size`` bytes of a byte-type pipe (kept buffered if cancelled).

        Raises:
            InvalidParameter: a message-type pipe (use :meth:`recv`), or a bad size.
            BrokenPipe: the pipe ended before ``size`` bytes.
            SemTimeout: ``timeout`` seconds passed first.
        """
        lock = self._reading()
        if self.message_type:
            raise W.InvalidParameter("read_exact is for byte-type pipes; use recv()")
        if not isinstance(size, int) or size < 0:
            raise W.InvalidParameter(f"size must be an int >= 0, not {size!r}")
        deadline = self._deadline(timeout)
        async with lock:
            while len(self._bytes) < size:
                await self._fill(deadline)
            return self._take(size)

    def __aiter__(self) -> AsyncIterator[bytes]:
        """``async for msg in conn``: messages (or chunks) until the peer closes or
        disconnects (the BrokenPipe family ends the loop quietly)."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            try:
                data = await self.recv()
            except W.BrokenPipe:
                return
            yield data

    def peek(self, size: int = 0) -> PeekResult:
        """Look at received data without removing it (Win32: PeekNamedPipe); never waits.

        On a message pipe only whole messages count (this end hands messages out whole).

        Args:
            size: most bytes of the next message (or of the stream) to return.

        Raises:
            BrokenPipe / PipeNotConnected: the other end is gone and nothing is left.
        """
        self._reading()
        pulled = False
        try:
            while self._buffered() < _PEEK_LIMIT and self._recv_nowait():
                pulled = True
        except W.BrokenPipe:
            if self._disconnected or not self._buffered():
                raise
        finally:
            poke = self._read_waiter
            if pulled and poke is not None and not poke.done():
                poke.set_result(True)
        if not self.message_type:
            return PeekResult(bytes(self._bytes[:size]), len(self._bytes), 0)
        sizes = [len(e.data) for e in self._messages if isinstance(e, framing.Message)]
        first = next((e.data for e in self._messages if isinstance(e, framing.Message)), None)
        if self._part is not None:
            first = self._part[self._part_pos :]
            sizes.insert(0, len(first))
        if first is None:
            return PeekResult(b"", 0, 0)
        return PeekResult(first[:size], sum(sizes), max(0, len(first) - size))

    def _buffered(self) -> int:
        if not self.message_type:
            return len(self._bytes)
        queued = sum(len(e.data) if isinstance(e, framing.Message) else 1 for e in self._messages)
        return self._decoder.buffered + queued

    # ------------------------------------------------------------------ send
    def _send_some(self, views: list[memoryview]) -> None:
        """Send what the socket takes now, dropping the sent bytes from ``views``."""
        try:
            sent = self._sock.sendmsg(views, (), _DONTWAIT | _NOSIGNAL)
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError):
            self._raise_gone(writing=True)
            raise  # not reached: _raise_gone raises
        except OSError as exc:
            raise translate(exc, "write", self.name) from None
        while views and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if views and sent:
            views[0] = views[0][sent:]

    async def _send_rest(self, prev: asyncio.Task[None] | None, views: list[memoryview]) -> None:
        if prev is not None:
            await asyncio.wait([prev])
        while views:
            self._check_open()
            self._send_some(views)
            if views:
                await _wait_fd(self._sock.fileno(), writer=True, waiters=self._waiters)

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` (Win32: WriteFile): all of it, as one message on a message pipe.

        Cancelling the call does not cut the message: the rest is copied and sent in
        the background, and later writes follow it.

        Returns:
            The number of bytes written (``len(data)``).

        Raises:
            InvalidParameter: a message longer than 2**31 - 1 bytes.
            PipeClosing: (232) the other end has closed.
            PipeNotConnected: (233) the server disconnected this client.
            AccessDenied: this end was not opened for writing.
        """
        self._check_open()
        if not self.can_write:
            raise W.AccessDenied(f"{self.name}: this end was not opened for writing")
        if self._disconnected:
            raise self._not_connected()
        view = memoryview(data).cast("B")
        n = view.nbytes
        if self.message_type:
            if n > framing.MAX_MESSAGE:
                raise W.InvalidParameter(f"message is {n} bytes; the limit is 2**31 - 1")
            head = framing.message_header(n)
            parts = [memoryview(head + view)] if n <= _SMALL else [memoryview(head), view]
        elif n:
            parts = [view]
        else:
            return 0
        tail = self._send_tail
        if tail is None or tail.done():
            self._send_some(parts)  # the usual case: the socket takes it all, no task
            if not parts:
                return n
            tail = None
        task = asyncio.get_running_loop().create_task(self._send_rest(tail, parts))
        task.add_done_callback(_retrieve)
        self._send_tail = task
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():  # copy the rest: the caller's buffer is free again
                parts[:] = [memoryview(bytes(v)) for v in parts]
            raise
        return n

    send = write

    async def drain(self) -> None:
        """Wait until earlier writes (cancelled ones too) are handed to the socket.

        Raises:
            PipeClosing / PipeNotConnected / OperationAborted: a queued write failed.
        """
        tail = self._send_tail
        if tail is not None:
            await asyncio.shield(tail)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the other end has read everything written (FlushFileBuffers).

        Args:
            timeout: seconds; None waits as long as it takes.

        Raises:
            PipeClosing / PipeNotConnected: the other end went away before reading all.
            SemTimeout: not read within ``timeout``.
        """
        self._check_open()
        deadline = self._deadline(timeout)
        tail = self._send_tail
        if tail is not None and not tail.done():
            left = None if deadline is None else deadline - asyncio.get_running_loop().time()
            await asyncio.wait([tail], timeout=None if left is None else max(0.0, left))
            if not tail.done():
                raise W.SemTimeout(f"{self.name}: queued writes not sent within {timeout} s")
        if tail is not None and not tail.cancelled() and tail.exception() is not None:
            await asyncio.shield(tail)  # raises the write's error
        await _flush_socket(self._sock, self.name, deadline, self._raise_gone)

    async def transact(self, data: bytes, size: int = 65536, timeout: float | None = None) -> bytes:
        """Write one message and read the reply (Win32: TransactNamedPipe).

        Raises:
            WinIPCError: (230 ERROR_BAD_PIPE) not a message pipe in message-read mode.
            MoreData: the reply is longer than ``size`` (``.data`` holds the part).
            and what :meth:`write` and :meth:`read` raise.
        """
        self._check_open()
        if not (self.message_type and self.read_message_mode):
            raise W.WinIPCError(
                f"{self.name}: TransactNamedPipe needs a message pipe in message-read mode",
                winerror=W.ERROR_BAD_PIPE,
            )
        await self.write(data)
        return await self.read(size, timeout)
