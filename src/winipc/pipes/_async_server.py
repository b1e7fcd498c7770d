"""asyncio named-pipe server: :class:`AsyncPipeServer` serves many clients at once.

The server is a pool of :class:`~winipc.pipes.PipeInstance` objects (CreateNamedPipe).
``listeners`` of them wait for a client at any time; when one takes a client, another
instance is created (up to ``max_instances``), so the number of clients served at once is
bounded by ``max_instances``. Each client's ``handler`` runs in its own task with an
:class:`~winipc.pipes.AsyncPipeConnection`. When the handler returns, the server waits
(up to ``flush_timeout``) for the client to read what it was sent (FlushFileBuffers),
disconnects it (DisconnectNamedPipe) and lets the instance listen again, or closes it
when enough instances are listening already.

Waiting for a client never blocks the loop: the instance's listening socket is watched
with ``loop.add_reader`` and the client is taken with ``PipeInstance.connect(timeout=0)``,
which also checks the client's credentials against the pipe's security.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from winipc import errors as W
from winipc._core.security import SecurityAttributes
from winipc._core.timeouts import seconds
from winipc.pipes._async import AsyncPipeConnection, _flush_socket, _wait_fd
from winipc.pipes._named import (
    MAX_MESSAGE_DEFAULT,
    UNLIMITED_INSTANCES,
    OpenMode,
    PipeInstance,
)

Handler = Callable[[AsyncPipeConnection], Awaitable[Any]]
_REGROW_DELAY = 0.1  # seconds before replacing an instance that failed


def _ignore(_writing: bool) -> None:
    pass


@dataclass(eq=False)
class _Slot:
    inst: PipeInstance
    busy: bool = False
    conn: AsyncPipeConnection | None = field(default=None, repr=False)
    handler: asyncio.Task[Any] | None = field(default=None, repr=False)


class AsyncPipeServer:
    """A named-pipe server for asyncio; one ``handler`` task per connected client.

    Example::

        async def handler(conn: AsyncPipeConnection) -> None:
            async for msg in conn:
                await conn.send(msg.upper())

        async with AsyncPipeServer(r"\\\\.\\pipe\\demo", handler, message=True) as server:
            await server.serve_forever()

    Args:
        name: ``\\\\.\\pipe\\name`` or a bare name.
        handler: ``async def handler(conn)``; the client is disconnected when it returns.
            BrokenPipe errors (the client went away) end it quietly; other exceptions
            go to the loop's exception handler and the server goes on.
        open_mode: :class:`~winipc.pipes.OpenMode` (direction, from the server's side).
        message: message-type pipe (PIPE_TYPE_MESSAGE); default byte-type.
        read_message: message-read mode for the server's ends; default: ``message``.
        max_instances: 1..255 (255 = PIPE_UNLIMITED_INSTANCES): the most clients served
            at once, by this server and any other process adding instances to the pipe.
        listeners: instances kept waiting for a client (>= 1; at most ``max_instances``).
            More absorbs bursts; a client finding none free gets PipeBusy and retries.
        out_buffer_size / in_buffer_size: bytes, advisory.
        default_timeout: seconds, for ``wait_named_pipe(name, USE_DEFAULT_WAIT)``.
        security: who may connect (owner only by default); refused clients are closed
            before a byte is read.
        first_instance: fail if the pipe exists already (FILE_FLAG_FIRST_PIPE_INSTANCE).
        max_message_size: largest message (bytes) a client may send.
        flush_timeout: seconds to wait after the handler returns for the client to read
            what it was sent before disconnecting it; None waits as long as it takes.

    Raises:
        InvalidParameter: an argument out of range (named in the message); others,
            such as AccessDenied or PipeBusy, come from :meth:`start`.
    """

    def __init__(
        self,
        name: str,
        handler: Handler,
        *,
        open_mode: OpenMode | int = OpenMode.DUPLEX,
        message: bool = False,
        read_message: bool | None = None,
        max_instances: int = UNLIMITED_INSTANCES,
        listeners: int = 4,
        out_buffer_size: int = 65536,
        in_buffer_size: int = 65536,
        default_timeout: float = 0.0,
        security: SecurityAttributes | None = None,
        first_instance: bool = False,
        max_message_size: int = MAX_MESSAGE_DEFAULT,
        flush_timeout: float | None = 5.0,
    ) -> None:
        if not callable(handler):
            raise W.InvalidParameter(f"handler must be an async function, not {handler!r}")
        if not isinstance(max_instances, int) or not 1 <= max_instances <= UNLIMITED_INSTANCES:
            raise W.InvalidParameter(
                f"max_instances must be 1..255 (255 = unlimited), not {max_instances!r}"
            )
        if not isinstance(listeners, int) or isinstance(listeners, bool) or listeners < 1:
            raise W.InvalidParameter(f"listeners must be an int >= 1, not {listeners!r}")
        self.name = name
        self._handler = handler
        self._flush_timeout = seconds(flush_timeout, "flush_timeout")
        self._first_instance = first_instance
        self._options: dict[str, Any] = {
            "open_mode": open_mode,
            "message": message,
            "read_message": read_message,
            "max_instances": max_instances,
            "out_buffer_size": out_buffer_size,
            "in_buffer_size": in_buffer_size,
            "default_timeout": default_timeout,
            "security": security,
            "max_message_size": max_message_size,
        }
        self.max_instances = max_instances
        self.listeners = min(listeners, max_instances)
        self._slots: dict[asyncio.Task[None], _Slot] = {}
        self._started = False
        self._closing = False
        self._serving: asyncio.Future[None] | None = None
        self._all_done: asyncio.Event | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closing else ("serving" if self._started else "new")
        return f"<AsyncPipeServer {self.name!r} {state} clients={self.active_clients}>"

    # ------------------------------------------------------------------ state
    @property
    def active_clients(self) -> int:
        """Clients being served now."""
        return sum(1 for s in self._slots.values() if s.busy)

    @property
    def instances(self) -> int:
        """Pipe instances this server holds (listening or serving)."""
        return len(self._slots)

    def is_serving(self) -> bool:
        """True between :meth:`start` and :meth:`close`."""
        return self._started and not self._closing

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Create the first instances and start listening (idempotent).

        Raises:
            AccessDenied: ``first_instance`` and the pipe exists, or it is another user's,
                or of another type or direction.
            PipeBusy: (231) the pipe has ``max_instances`` instances already.
            InvalidName / InvalidParameter: bad name or argument.
        """
        if self._closing:
            raise W.InvalidHandle(f"{self.name}: the server is closed")
        if self._started:
            return
        self._all_done = asyncio.Event()
        inst = PipeInstance(
            self.name, first_instance=self._first_instance, fast_path=False, **self._options
        )
        self.name = inst.name
        self._started = True
        self._spawn(inst)
        self._grow()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called (starting first if needed).

        Cancelling it closes the server (no new clients; running handlers go on).

        Raises:
            RuntimeError: already serving.
            and what :meth:`start` raises.
        """
        await self.start()
        if self._serving is not None:
            raise RuntimeError(f"{self.name}: serve_forever() is already running")
        if self._closing:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._serving = fut
        try:
            await fut
        except asyncio.CancelledError:
            self.close()
            raise
        finally:
            self._serving = None

    def close(self) -> None:
        """Stop accepting clients: listening instances close; handlers run on.

        :meth:`serve_forever` returns. Use :meth:`wait_closed` to wait for the handlers,
        or :meth:`abort_clients` to cancel them.
        """
        if self._closing:
            return
        self._closing = True
        for task, slot in list(self._slots.items()):
            if not slot.busy:
                task.cancel()
        if self._serving is not None and not self._serving.done():
            self._serving.set_result(None)
        self._check_done()

    def abort_clients(self) -> None:
        """Cancel the running handlers; their clients are disconnected at once
        (ERROR_PIPE_NOT_CONNECTED) and the instances serve the next clients.
        """
        for slot in list(self._slots.values()):
            if slot.handler is not None:
                slot.handler.cancel()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` was called and every handler has finished."""
        if not self._started:
            return
        assert self._all_done is not None
        await self._all_done.wait()

    async def __aenter__(self) -> AsyncPipeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close, cancel running handlers, and wait until every instance is closed."""
        self.close()
        self.abort_clients()
        await self.wait_closed()

    def _check_done(self) -> None:
        if self._closing and not self._slots and self._all_done is not None:
            self._all_done.set()

    # ------------------------------------------------------------------ instances
    def _spawn(self, inst: PipeInstance) -> None:
        slot = _Slot(inst)
        task = asyncio.get_running_loop().create_task(self._run(slot))
        self._slots[task] = slot
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        slot = self._slots.pop(task, None)
        if slot is not None:  # also when the task was cancelled before it ran
            if slot.handler is not None:
                slot.handler.cancel()
            if slot.conn is not None:
                slot.conn.close()
            slot.inst.close()
        failed = not task.cancelled() and task.exception() is not None
        if failed:
            self._report("pipe instance failed", task.exception())
        if not self._closing:  # keep `listeners` instances waiting
            if failed:
                asyncio.get_running_loop().call_later(_REGROW_DELAY, self._grow)
            else:
                self._grow()
        self._check_done()

    def _grow(self) -> None:
        """Create instances until ``listeners`` wait (within ``max_instances``)."""
        while not self._closing and len(self._slots) < self.max_instances:
            if sum(1 for s in self._slots.values() if not s.busy) >= self.listeners:
                return
            try:
                inst = PipeInstance(self.name, fast_path=False, **self._options)
            except W.PipeBusy:
                return  # other processes hold the remaining instances
            except W.WinIPCError as exc:
                self._report("could not create a pipe instance", exc)
                return
            self._spawn(inst)

    def _report(self, what: str, exc: BaseException | None) -> None:
        asyncio.get_running_loop().call_exception_handler(
            {"message": f"{self.name}: {what}", "exception": exc, "server": self}
        )

    async def _run(self, slot: _Slot) -> None:
        inst = slot.inst
        while True:
            await self._accept(inst)
            slot.busy = True
            self._grow()
            conn = AsyncPipeConnection(
                inst.socket,
                name=inst.name,
                message_type=inst.message_type,
                read_message=inst.read_message_mode,
                can_read=inst.can_read,
                can_write=inst.can_write,
                is_client=False,
                max_message_size=inst.max_message_size,
                owns_socket=False,
            )
            slot.conn = conn
            handler = asyncio.ensure_future(self._handler(conn))
            slot.handler = handler
            try:
                await asyncio.wait([handler])
            finally:
                if not handler.done():  # this task itself was cancelled
                    handler.cancel()
            slot.handler = None
            aborted = handler.cancelled()
            if not aborted and handler.exception() is not None:
                exc = handler.exception()
                if not isinstance(exc, W.BrokenPipe):  # BrokenPipe: the client went away
                    self._report("handler failed", exc)
            await self._finish(slot, flush=not aborted)
            idle = sum(1 for s in self._slots.values() if not s.busy)
            if self._closing or idle >= self.listeners:
                return  # _reap closes the instance
            slot.busy = False

    async def _accept(self, inst: PipeInstance) -> None:
        """Wait, without blocking the loop, until ``inst`` has a vetted client."""
        while True:
            try:
                inst.connect(timeout=0)  # listens again if needed; takes a queued client
                return
            except W.SemTimeout:
                pass
            listener = inst._listener  # the instance's listening socket (private)
            if listener is None:
                raise W.WinIPCError(f"{inst.name}: the instance is not listening")
            await _wait_fd(listener.fileno())

    async def _finish(self, slot: _Slot, flush: bool) -> None:
        """FlushFileBuffers (bounded by ``flush_timeout``), then DisconnectNamedPipe."""
        conn, slot.conn = slot.conn, None
        assert conn is not None
        limit = self._flush_timeout
        try:
            with contextlib.suppress(W.WinIPCError):
                if flush and not conn.closed:
                    await conn.flush(limit)
                elif flush:  # the handler closed its end; the instance still has the socket
                    loop = asyncio.get_running_loop()
                    deadline = None if limit is None else loop.time() + limit
                    await _flush_socket(slot.inst.socket, self.name, deadline, _ignore)
        finally:
            conn.close()
            slot.inst.disconnect()

