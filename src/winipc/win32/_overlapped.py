"""Overlapped I/O for the pywin32 face: OVERLAPPED, operations in flight, their results.

Windows programs start I/O on a handle opened with FILE_FLAG_OVERLAPPED, get
ERROR_IO_PENDING (997) back, and later learn the outcome from GetOverlappedResult or by
waiting on ``OVERLAPPED.hEvent``. Here each such operation runs the blocking winipc call
in a worker thread of its own; when it ends, the worker stores the status in
``OVERLAPPED.Internal`` (an NTSTATUS, STATUS_PENDING while in flight) and the byte count
in ``InternalHigh``, marks the operation done, then signals ``hEvent`` — the order
Windows uses, so a program that saw the event can read the result without waiting.

On a handle opened without FILE_FLAG_OVERLAPPED, an OVERLAPPED is honoured the way
Windows honours it there: the call completes before returning and the structure and its
event report the result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from winipc import errors as W
from winipc.pipes import PipeConnection, PipeEnd, PipeInstance
from winipc.win32._events import EventObject, event_of
from winipc.win32._handles import Entry, handle_value
from winipc.win32._support import api_error, from_exception

STATUS_PENDING = 0x103
_NTSTATUS = {
    W.ERROR_SUCCESS: 0,
    W.ERROR_MORE_DATA: 0x8000_0005,  # STATUS_BUFFER_OVERFLOW
    W.ERROR_BROKEN_PIPE: 0xC000_014B,  # STATUS_PIPE_BROKEN
    W.ERROR_NO_DATA: 0xC000_00B1,  # STATUS_PIPE_CLOSING
    W.ERROR_PIPE_NOT_CONNECTED: 0xC000_00B0,  # STATUS_PIPE_DISCONNECTED
    W.ERROR_PIPE_LISTENING: 0xC000_00B3,  # STATUS_PIPE_LISTENING
    W.ERROR_OPERATION_ABORTED: 0xC000_0120,  # STATUS_CANCELLED
    W.ERROR_INVALID_HANDLE: 0xC000_0008,  # STATUS_INVALID_HANDLE
    W.ERROR_ACCESS_DENIED: 0xC000_0022,  # STATUS_ACCESS_DENIED
}
_STATUS_UNSUCCESSFUL = 0xC000_0001

IoResult = tuple[int, int]  # (Win32 code, bytes transferred)


class OVERLAPPED:
    """pywin32's PyOVERLAPPED (Win32: OVERLAPPED).

    Attributes:
        hEvent: an event handle (PyHANDLE or int, 0 for none) signalled when an
            operation using this structure completes; the call that starts the
            operation resets it first, as Windows does.
        Internal: the operation's status: STATUS_PENDING (0x103) while in flight, 0 on
            success, an NTSTATUS on failure.
        InternalHigh: bytes transferred, once complete.
        Offset, OffsetHigh: file position; ignored for pipes, as on Windows.
        object: any Python object you attach to the request.
        dword: an integer slot some functions use.
    """

    def __init__(self) -> None:
        self.Offset = 0
        self.OffsetHigh = 0
        self.Internal = 0
        self.InternalHigh = 0
        self.object: Any = None
        self.dword = 0
        self._hEvent: Any = 0
        self._op: Operation | None = None

    @property
    def hEvent(self) -> Any:
        return self._hEvent

    @hEvent.setter
    def hEvent(self, value: Any) -> None:
        handle_value(value)  # TypeError for anything but a handle, an int or None
        self._hEvent = 0 if value is None else value

    def __repr__(self) -> str:
        return (
            f"<PyOVERLAPPED Internal={self.Internal:#x} InternalHigh={self.InternalHigh} "
            f"hEvent={self._hEvent}>"
        )


def _event_of(ov: OVERLAPPED) -> EventObject | None:
    return event_of(ov._hEvent)


class Operation:
    """One overlapped request: the OVERLAPPED it reports through and its outcome."""

    def __init__(self, entry: Entry, ov: OVERLAPPED, funcname: str, cancellable: bool) -> None:
        self.entry = entry
        self.ov = ov
        self.funcname = funcname
        self.cancellable = cancellable
        self.done = threading.Event()
        self.code = 0
        self.nbytes = 0
        self.exc: BaseException | None = None
        self.abort_code: int | None = None

    def begin(self) -> None:
        prev = self.ov._op
        if prev is not None and not prev.done.is_set():
            raise api_error(
                W.ERROR_INVALID_PARAMETER,
                self.funcname,
                f"this OVERLAPPED is still in use by a pending {prev.funcname}; "
                "call GetOverlappedResult first",
            )
        self.ov._op = self
        self.ov.Internal = STATUS_PENDING
        self.ov.InternalHigh = 0
        event = _event_of(self.ov)
        if event is not None:
            event.reset()
        with self.entry.lock:
            self.entry.pending.add(self)

    def execute(self, fn: Callable[[], IoResult]) -> None:
        try:
            code, n = fn()
        except W.OperationAborted as exc:
            code, n, self.exc = self.abort_code or exc.winerror, 0, exc
        except OSError as exc:
            code, n, self.exc = int(from_exception(exc, self.funcname).winerror), 0, exc
        except BaseException as exc:  # a bug must not leave the request pending forever
            code, n, self.exc = W.ERROR_INVALID_PARAMETER, 0, exc
        if self.abort_code is not None and code not in (W.ERROR_SUCCESS, W.ERROR_MORE_DATA):
            code = self.abort_code  # ended by CancelIo / CloseHandle / DisconnectNamedPipe
        self.finish(code, n)

    def finish(self, code: int, n: int) -> None:
        self.code, self.nbytes = code, n
        self.ov.InternalHigh = n
        self.ov.Internal = _NTSTATUS.get(code, _STATUS_UNSUCCESSFUL)
        with self.entry.lock:
            self.entry.pending.discard(self)
        self.done.set()
        event = _event_of(self.ov)
        if event is not None:
            try:
                event.set()
            except OSError:  # the event's handle was closed meanwhile: nobody waits on it
                pass

    def raise_error(self, funcname: str) -> None:
        err = api_error(self.code, funcname, str(self.exc) if self.exc else None)
        raise err from self.exc


def submit(
    entry: Entry,
    ov: OVERLAPPED,
    fn: Callable[[], IoResult],
    funcname: str,
    *,
    cancellable: bool = True,
    ok: tuple[int, ...] = (W.ERROR_SUCCESS,),
) -> IoResult:
    """Start ``fn`` as an operation reporting through ``ov``.

    Returns:
        ``(ERROR_IO_PENDING, 0)`` on an overlapped handle (``fn`` runs in a worker);
        otherwise ``fn``'s own result once it has run, when its code is in ``ok``.

    Raises:
        pywintypes.error: the OVERLAPPED is busy (87), or, on a synchronous handle,
            the operation failed with a code not in ``ok``.
    """
    if not isinstance(ov, OVERLAPPED):
        raise TypeError("The object is not a PyOVERLAPPED object")
    op = Operation(entry, ov, funcname, cancellable)
    op.begin()
    if entry.overlapped:
        worker = threading.Thread(
            target=op.execute, args=(fn,), name=f"winipc-{funcname}", daemon=True
        )
        worker.start()
        return W.ERROR_IO_PENDING, 0
    op.execute(fn)
    if op.code not in ok:
        op.raise_error(funcname)
    return op.code, op.nbytes


def overlapped_result(entry: Entry, ov: Any, wait: bool) -> int:
    """GetOverlappedResult: the byte count of the operation ``ov`` reports on.

    Raises:
        pywintypes.error: 996 (ERROR_IO_INCOMPLETE) still in flight and ``wait`` false;
            the operation's own code (234, 109, 995, ...) when it failed.
    """
    if not isinstance(ov, OVERLAPPED):
        raise TypeError("The object is not a PyOVERLAPPED object")
    op = ov._op
    if op is None:  # never used here: report what the structure says, as Windows would
        if ov.Internal == STATUS_PENDING:
            raise api_error(W.ERROR_IO_INCOMPLETE, "GetOverlappedResult")
        return int(ov.InternalHigh)
    if not op.done.is_set():
        if not wait:
            raise api_error(W.ERROR_IO_INCOMPLETE, "GetOverlappedResult")
        op.done.wait()
    if op.code:
        op.raise_error("GetOverlappedResult")
    return op.nbytes


# ---------------------------------------------------------------------- pipe I/O
def pipe_of(entry: Entry, funcname: str) -> PipeConnection:
    """The named-pipe connection (either end) behind a handle; 6 for anything else."""
    if not isinstance(entry.obj, PipeConnection):
        raise api_error(W.ERROR_INVALID_HANDLE, funcname, "not a named-pipe handle")
    return entry.obj


def instance_of(entry: Entry, funcname: str) -> PipeInstance:
    """The server instance behind a handle; 1 (ERROR_INVALID_FUNCTION) for a client end."""
    if isinstance(entry.obj, PipeInstance):
        return entry.obj
    if isinstance(entry.obj, PipeConnection):
        raise api_error(1, funcname, "Incorrect function.")
    raise api_error(W.ERROR_INVALID_HANDLE, funcname, "not a named-pipe server handle")


def read_now(entry: Entry, size: int, funcname: str) -> tuple[int, bytes]:
    """One ReadFile: ``(0, data)`` or ``(234, part)`` on a message longer than ``size``."""
    obj = entry.obj
    if isinstance(obj, PipeConnection):
        try:
            return W.ERROR_SUCCESS, obj.read(size)
        except W.MoreData as exc:
            return W.ERROR_MORE_DATA, exc.data
    if isinstance(obj, PipeEnd):
        return W.ERROR_SUCCESS, obj.read(size)
    raise api_error(W.ERROR_INVALID_HANDLE, funcname, "not a pipe handle")


def write_now(entry: Entry, data: bytes, funcname: str) -> int:
    """One WriteFile: all of ``data`` (one message on a message pipe)."""
    obj = entry.obj
    if isinstance(obj, (PipeConnection, PipeEnd)):
        return obj.write(data)
    raise api_error(W.ERROR_INVALID_HANDLE, funcname, "not a pipe handle")


def _read_target(buffer_or_size: Any, with_ov: bool) -> tuple[memoryview | None, Any, int]:
    """(view to fill, object to return with an OVERLAPPED, size) from pywin32's argument."""
    if isinstance(buffer_or_size, int) and not isinstance(buffer_or_size, bool):
        if buffer_or_size < 0:
            raise ValueError(f"buffer size must be >= 0, not {buffer_or_size}")
        if not with_ov:
            return None, None, buffer_or_size
        buf = memoryview(bytearray(buffer_or_size))
        return buf, buf, buffer_or_size
    try:
        view = memoryview(buffer_or_size).cast("B")
    except TypeError:
        view = None
    if view is None or view.readonly:
        raise TypeError("Second param must be an integer or writeable buffer object")
    return view, buffer_or_size if with_ov else None, view.nbytes


def read_like(
    entry: Entry,
    buffer_or_size: Any,
    ov: Any,
    funcname: str,
    produce: Callable[[int], tuple[int, bytes]],
) -> tuple[int, Any]:
    """The shared shape of ReadFile and TransactNamedPipe.

    Without an OVERLAPPED: ``(hr, bytes)`` of the length read (the buffer, if one was
    given, is filled too). With one: ``(hr, buffer)``, the buffer being the one given or
    a new one of the requested size, filled when the operation completes.
    """
    view, ret, size = _read_target(buffer_or_size, ov is not None)
    if ov is None:
        code, data = produce(size)
        if view is not None:
            view[: len(data)] = data
        return code, data
    assert view is not None
    target = view

    def run() -> IoResult:
        code, data = produce(size)
        target[: len(data)] = data
        return code, len(data)

    code, _n = submit(entry, ov, run, funcname, ok=(W.ERROR_SUCCESS, W.ERROR_MORE_DATA))
    return code, ret


def transact_now(conn: PipeConnection, data: bytes, size: int) -> tuple[int, bytes]:
    """One TransactNamedPipe: ``(0, reply)`` or ``(234, part)``."""
    try:
        return W.ERROR_SUCCESS, conn.transact(data, size)
    except W.MoreData as exc:
        return W.ERROR_MORE_DATA, exc.data


def check_transact(conn: PipeConnection, funcname: str) -> None:
    """Windows refuses TransactNamedPipe unless the handle is in message-read mode (230)."""
    if not (conn.message_type and conn.read_message_mode):
        raise api_error(
            W.ERROR_BAD_PIPE,
            funcname,
            "TransactNamedPipe needs a message pipe in message-read mode",
        )


def connect_instance(entry: Entry, ov: Any) -> int:
    """ConnectNamedPipe: 0, ERROR_PIPE_CONNECTED (535) or ERROR_IO_PENDING (997)."""
    inst = instance_of(entry, "ConnectNamedPipe")
    if ov is None:
        return W.ERROR_PIPE_CONNECTED if inst.connect() else W.ERROR_SUCCESS
    if not isinstance(ov, OVERLAPPED):
        raise TypeError("The object is not a PyOVERLAPPED object")
    if not entry.overlapped:
        if inst.connect():
            return W.ERROR_PIPE_CONNECTED
        return submit(entry, ov, lambda: (0, 0), "ConnectNamedPipe")[0]
    try:
        inst.connect(timeout=0)
    except W.SemTimeout:
        pass
    else:  # the client came first; like Windows, the OVERLAPPED and its event stay as they are
        return W.ERROR_PIPE_CONNECTED

    def run() -> IoResult:
        inst.connect()
        return W.ERROR_SUCCESS, 0

    return submit(entry, ov, run, "ConnectNamedPipe")[0]
