"""pywin32's ``win32pipe`` over :mod:`winipc.pipes` (importable as ``win32pipe`` after install()).

Same functions, argument order, return values and error codes as pywin32; time-outs are
milliseconds and DWORD constants may be spelled signed or unsigned. Handles are
:class:`~winipc.win32.pywintypes.PyHANDLE`; errors are ``pywintypes.error`` carrying the
Win32 function's name. See docs/win32.md for the mapping and the differences.
"""

from __future__ import annotations

import os
from typing import Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._core import namespace
from winipc._core.names import pipe_name
from winipc.pipes import (
    USE_DEFAULT_WAIT,
    OpenMode,
    PipeConnection,
    PipeEnd,
    PipeInstance,
    call_named_pipe,
    create_pipe,
    wait_named_pipe,
)
from winipc.win32 import _overlapped as O
from winipc.win32._handles import PyHANDLE, lookup, register
from winipc.win32._support import api, api_error, as_bytes, dword, error, ms_to_seconds
from winipc.win32.pywintypes import security_of
from winipc.win32.win32con import (
    FILE_FLAG_FIRST_PIPE_INSTANCE,
    FILE_FLAG_OVERLAPPED,
    NMPWAIT_NOWAIT,
    NMPWAIT_USE_DEFAULT_WAIT,
    NMPWAIT_WAIT_FOREVER,
    PIPE_ACCEPT_REMOTE_CLIENTS,
    PIPE_ACCESS_DUPLEX,
    PIPE_ACCESS_INBOUND,
    PIPE_ACCESS_OUTBOUND,
    PIPE_CLIENT_END,
    PIPE_NOWAIT,
    PIPE_READMODE_BYTE,
    PIPE_READMODE_MESSAGE,
    PIPE_REJECT_REMOTE_CLIENTS,
    PIPE_SERVER_END,
    PIPE_TYPE_BYTE,
    PIPE_TYPE_MESSAGE,
    PIPE_UNLIMITED_INSTANCES,
    PIPE_WAIT,
)

_PIPE_MODE_BITS = (
    PIPE_NOWAIT | PIPE_READMODE_MESSAGE | PIPE_TYPE_MESSAGE | PIPE_REJECT_REMOTE_CLIENTS
)


def _wait_timeout(value: Any, what: str) -> Any:
    """NMPWAIT_* / milliseconds to what winipc takes (seconds, None, USE_DEFAULT_WAIT)."""
    ms = dword(value, what)
    if ms == NMPWAIT_USE_DEFAULT_WAIT:
        return USE_DEFAULT_WAIT
    return ms_to_seconds(ms, what)


@api("CreateNamedPipe")
def CreateNamedPipe(
    pipeName: str,
    openMode: int,
    pipeMode: int,
    nMaxInstances: int,
    nOutBufferSize: int,
    nInBufferSize: int,
    nDefaultTimeOut: int,
    sa: Any = None,
) -> PyHANDLE:
    """Create one instance of a named pipe (Win32: CreateNamedPipe).

    Args:
        pipeName: ``\\\\.\\pipe\\name``.
        openMode: PIPE_ACCESS_INBOUND / OUTBOUND / DUPLEX, optionally with
            FILE_FLAG_FIRST_PIPE_INSTANCE and FILE_FLAG_OVERLAPPED (other flags, such as
            FILE_FLAG_WRITE_THROUGH or WRITE_DAC, are accepted and ignored).
        pipeMode: PIPE_TYPE_BYTE / MESSAGE | PIPE_READMODE_BYTE / MESSAGE | PIPE_WAIT /
            NOWAIT | PIPE_ACCEPT / REJECT_REMOTE_CLIENTS.
        nMaxInstances: 1..255 (PIPE_UNLIMITED_INSTANCES = 255).
        nOutBufferSize / nInBufferSize: bytes (advisory).
        nDefaultTimeOut: milliseconds for WaitNamedPipe(NMPWAIT_USE_DEFAULT_WAIT); 0 is 50.
        sa: None (owner only) or a SECURITY_ATTRIBUTES.

    Returns:
        The instance's PyHANDLE (connectable at once).

    Raises:
        pywintypes.error: 87 a bad mode or count; 231 every instance exists already;
            5 FILE_FLAG_FIRST_PIPE_INSTANCE and the pipe exists, or the pipe is another
            user's or of another type; 123 a bad name.
    """
    om = dword(openMode, "openMode")
    pm = dword(pipeMode, "pipeMode")
    access = om & PIPE_ACCESS_DUPLEX
    if not access:
        raise api_error(
            W.ERROR_INVALID_PARAMETER, "CreateNamedPipe", "openMode has no PIPE_ACCESS_*"
        )
    if pm & ~_PIPE_MODE_BITS:
        raise api_error(
            W.ERROR_INVALID_PARAMETER, "CreateNamedPipe", f"unknown pipeMode bits {pm:#x}"
        )
    security, _inherit = security_of(sa)
    inst = PipeInstance(
        pipeName,
        open_mode=OpenMode(access),
        message=bool(pm & PIPE_TYPE_MESSAGE),
        read_message=bool(pm & PIPE_READMODE_MESSAGE),
        max_instances=dword(nMaxInstances, "nMaxInstances"),
        out_buffer_size=dword(nOutBufferSize, "nOutBufferSize"),
        in_buffer_size=dword(nInBufferSize, "nInBufferSize"),
        default_timeout=ms_to_seconds(nDefaultTimeOut, "nDefaultTimeOut") or 0.0,
        security=security,
        first_instance=bool(om & FILE_FLAG_FIRST_PIPE_INSTANCE),
        nowait=bool(pm & PIPE_NOWAIT),
    )
    return register(inst, "pipe-server", overlapped=bool(om & FILE_FLAG_OVERLAPPED))


@api("ConnectNamedPipe")
def ConnectNamedPipe(hPipe: Any, overlapped: Any = None) -> int:
    """Wait for a client on a server instance (Win32: ConnectNamedPipe).

    Returns:
        0 when a client connected during the call; ERROR_PIPE_CONNECTED (535) when it had
        connected before (a good connection, as on Windows); ERROR_IO_PENDING (997) on
        an overlapped handle with an OVERLAPPED: completion signals ``hEvent`` and
        GetOverlappedResult reports it (CancelIo ends it with 995).

    Raises:
        pywintypes.error: 232 the last client left and the instance was not disconnected;
            536 PIPE_NOWAIT and no client; 1 a client handle; 6 a closed handle.
    """
    return O.connect_instance(lookup(hPipe, "ConnectNamedPipe"), overlapped)


@api("DisconnectNamedPipe")
def DisconnectNamedPipe(hPipe: Any) -> None:
    """Drop the client of a server instance (Win32: DisconnectNamedPipe).

    Unread data is discarded; the client's next read or write fails with 233. Overlapped
    operations in flight on the instance end with ERROR_PIPE_NOT_CONNECTED (233).
    """
    entry = lookup(hPipe, "DisconnectNamedPipe")
    inst = O.instance_of(entry, "DisconnectNamedPipe")
    entry.cancel_pending(W.ERROR_PIPE_NOT_CONNECTED)
    inst.disconnect()


@api("CallNamedPipe")
def CallNamedPipe(pipeName: str, data: Any, bufSize: int, timeOut: int) -> bytes:
    """Connect, write one message, read the reply, close (Win32: CallNamedPipe).

    Args:
        timeOut: milliseconds to wait for a free instance, or NMPWAIT_NOWAIT,
            NMPWAIT_WAIT_FOREVER, NMPWAIT_USE_DEFAULT_WAIT.

    Returns:
        The reply (at most ``bufSize`` bytes).

    Raises:
        pywintypes.error: on any failure, 234 included (a longer reply; the rest is lost,
            as on Windows); 2 no such pipe; 121 no free instance in time.
    """
    size = dword(bufSize, "bufSize")
    return call_named_pipe(
        pipeName, as_bytes(data, "data"), size, _wait_timeout(timeOut, "timeOut")
    )


@api("TransactNamedPipe")
def TransactNamedPipe(
    pipeName: Any, writeData: Any, buffer: Any, overlapped: Any = None
) -> tuple[int, Any]:
    """Write one message and read the reply on a message-read handle (TransactNamedPipe).

    Args:
        pipeName: the pipe handle (pywin32 names this argument pipeName).
        writeData: the message.
        buffer: the reply's maximum size, or a writable buffer to fill.
        overlapped: an OVERLAPPED for overlapped operation.

    Returns:
        ``(hr, data)``: hr 0, or ERROR_MORE_DATA (234) with the first part of a longer
        reply (the rest comes with ReadFile). With an OVERLAPPED on an overlapped handle:
        ``(997, buffer)``, the buffer filled on completion.

    Raises:
        pywintypes.error: 230 the handle is not in message-read mode; 109 / 232 / 233
            the other end is gone.
    """
    entry = lookup(pipeName, "TransactNamedPipe")
    conn = O.pipe_of(entry, "TransactNamedPipe")
    O.check_transact(conn, "TransactNamedPipe")
    data = as_bytes(writeData, "writeData")
    return O.read_like(
        entry, buffer, overlapped, "TransactNamedPipe", lambda n: O.transact_now(conn, data, n)
    )


@api("PeekNamedPipe")
def PeekNamedPipe(hPipe: Any, size: int) -> tuple[bytes, int, int]:
    """Look at waiting data without removing it (Win32: PeekNamedPipe); never blocks.

    Returns:
        ``(data, total_available, bytes_left_this_message)``: up to ``size`` bytes (of the
        next message, in message-read mode), the bytes waiting, and the part of the
        next message not copied (0 for byte-type pipes and anonymous pipes).

    Raises:
        pywintypes.error: 109 / 233 the other end is gone and nothing is left.
    """
    entry = lookup(hPipe, "PeekNamedPipe")
    n = dword(size, "size")
    if isinstance(entry.obj, PipeEnd):
        result = entry.obj.peek(n)
    else:
        conn = O.pipe_of(entry, "PeekNamedPipe")
        if any(op.cancellable for op in entry.pending_ops()):
            return b"", 0, 0  # a read in flight takes whatever arrives, as on Windows
        result = conn.peek(n)
    return result.data, result.total_available, result.left_this_message


@api("WaitNamedPipe")
def WaitNamedPipe(pipeName: str, timeout: int = NMPWAIT_USE_DEFAULT_WAIT) -> None:
    """Wait until an instance of the pipe waits for a client (Win32: WaitNamedPipe).

    Args:
        timeout: milliseconds, NMPWAIT_WAIT_FOREVER, or NMPWAIT_USE_DEFAULT_WAIT (the
            server's nDefaultTimeOut).

    Raises:
        pywintypes.error: 2 no such pipe (at once); 121 ERROR_SEM_TIMEOUT no instance
            within the time-out (never early).
    """
    wait_named_pipe(pipeName, _wait_timeout(timeout, "timeout"))


@api("SetNamedPipeHandleState")
def SetNamedPipeHandleState(
    hPipe: Any, Mode: Any, MaxCollectionCount: Any, CollectDataTimeout: Any
) -> None:
    """Set a handle's read mode and wait mode (Win32: SetNamedPipeHandleState).

    Args:
        Mode: None (unchanged) or PIPE_READMODE_BYTE / MESSAGE | PIPE_WAIT / NOWAIT.
        MaxCollectionCount / CollectDataTimeout: for remote byte pipes on Windows;
            winipc's pipes are local, so these are accepted and ignored.

    Raises:
        pywintypes.error: 87 message-read mode on a byte-type pipe, or unknown bits.
    """
    entry = lookup(hPipe, "SetNamedPipeHandleState")
    if Mode is None:
        return
    if isinstance(Mode, bool) or not isinstance(Mode, int):
        raise TypeError(f"mode param must be None or an integer (got {type(Mode).__name__})")
    mode = dword(Mode, "Mode")
    if mode & ~(PIPE_READMODE_MESSAGE | PIPE_NOWAIT):
        raise api_error(
            W.ERROR_INVALID_PARAMETER, "SetNamedPipeHandleState", f"unknown mode bits {mode:#x}"
        )
    obj = entry.obj
    if isinstance(obj, PipeEnd):
        if mode & PIPE_READMODE_MESSAGE:
            raise api_error(W.ERROR_INVALID_PARAMETER, "SetNamedPipeHandleState", "a byte pipe")
        os.set_blocking(obj.fileno(), not mode & PIPE_NOWAIT)
        return
    conn = O.pipe_of(entry, "SetNamedPipeHandleState")
    conn.set_read_mode(bool(mode & PIPE_READMODE_MESSAGE))
    conn.set_nowait(bool(mode & PIPE_NOWAIT))


def _record(conn: PipeConnection) -> dict[str, Any]:
    try:
        return namespace.lookup(pipe_name(conn.name))[1].attrs
    except W.WinIPCError:
        return {}  # every server instance is gone; the connection lives on


def _instance_count(conn: PipeConnection) -> int:
    if isinstance(conn, PipeInstance):
        return (B.count_holders(conn._ref.fd) or 0) + 1
    try:
        path, _rec = namespace.lookup(pipe_name(conn.name))
        probe = B.open_file_readonly(os.path.join(path, namespace.HOLDERS))
    except W.WinIPCError:
        return 0
    try:
        return B.count_holders(probe) or 0
    finally:
        B.close_fd(probe)


@api("GetNamedPipeInfo")
def GetNamedPipeInfo(hNamedPipe: Any) -> tuple[int, int, int, int]:
    """The pipe's type and sizes (Win32: GetNamedPipeInfo).

    Returns:
        ``(flags, outBufferSize, inBufferSize, maxInstances)``: flags is PIPE_SERVER_END
        or PIPE_CLIENT_END, | PIPE_TYPE_MESSAGE for a message pipe; sizes are the
        server's, in bytes. Anonymous pipes report a byte pipe with one instance (the
        read end is the server end, as Windows builds them).
    """
    entry = lookup(hNamedPipe, "GetNamedPipeInfo")
    obj = entry.obj
    if isinstance(obj, PipeEnd):
        return (PIPE_SERVER_END if obj.readable else PIPE_CLIENT_END), 0, 0, 1
    conn = O.pipe_of(entry, "GetNamedPipeInfo")
    flags = PIPE_TYPE_MESSAGE if conn.message_type else PIPE_TYPE_BYTE
    if isinstance(conn, PipeInstance):
        return (
            flags | PIPE_SERVER_END,
            conn.out_buffer_size,
            conn.in_buffer_size,
            conn.max_instances,
        )
    attrs = _record(conn)
    return (
        flags | PIPE_CLIENT_END,
        int(attrs.get("out_buffer_size", 0)),
        int(attrs.get("in_buffer_size", 0)),
        int(attrs.get("max_instances", 0)),
    )


@api("GetNamedPipeHandleState")
def GetNamedPipeHandleState(
    hPipe: Any, bGetCollectionData: int = 0, bGetUserName: int = 0
) -> tuple[int, int, Any, Any, str]:
    """A handle's state (Win32: GetNamedPipeHandleState).

    Returns:
        ``(state, curInstances, maxCollectionCount, collectDataTimeout, userName)``:
        state is PIPE_NOWAIT | PIPE_READMODE_MESSAGE as set; curInstances counts the
        pipe's live server instances; the collection values are None (not asked for);
        userName is the connected client's user name when ``bGetUserName`` is true on a
        server handle, else "".

    Raises:
        pywintypes.error: 87 ``bGetCollectionData`` (local pipes have no collection
            data, as Windows documents) or ``bGetUserName`` on a client handle; 233 user
            name asked and no client is connected.
    """
    entry = lookup(hPipe, "GetNamedPipeHandleState")
    if bGetCollectionData:
        raise api_error(
            W.ERROR_INVALID_PARAMETER,
            "GetNamedPipeHandleState",
            "local pipes have no collection data",
        )
    obj = entry.obj
    if isinstance(obj, PipeEnd):
        if bGetUserName:
            raise api_error(W.ERROR_INVALID_PARAMETER, "GetNamedPipeHandleState", "anonymous pipe")
        return (0 if os.get_blocking(obj.fileno()) else PIPE_NOWAIT), 1, None, None, ""
    conn = O.pipe_of(entry, "GetNamedPipeHandleState")
    state = (PIPE_NOWAIT if conn.nowait else 0) | (
        PIPE_READMODE_MESSAGE if conn.read_message_mode else 0
    )
    user = ""
    if bGetUserName:
        if not isinstance(conn, PipeInstance):
            raise api_error(W.ERROR_INVALID_PARAMETER, "GetNamedPipeHandleState", "a client handle")
        if conn.state != "connected":
            raise api_error(W.ERROR_PIPE_NOT_CONNECTED, "GetNamedPipeHandleState")
        user = B.user_name(conn.peer.uid)
    return state, _instance_count(conn), None, None, user


@api("CreatePipe")
def CreatePipe(sa: Any, nSize: int) -> tuple[PyHANDLE, PyHANDLE]:
    """Create an anonymous pipe (Win32: CreatePipe).

    Args:
        sa: None, or a SECURITY_ATTRIBUTES whose ``bInheritHandle`` makes both ends
            inheritable by child processes.
        nSize: suggested buffer size in bytes (0 for the default).

    Returns:
        ``(hReadPipe, hWritePipe)``.
    """
    _security, inherit = security_of(sa)
    r, w = create_pipe(dword(nSize, "nSize"), inheritable=inherit)
    return register(r, "anon-read"), register(w, "anon-write")


@api("CreatePipe")
def FdCreatePipe(sa: Any, nSize: int, mode: int = 0) -> tuple[int, int]:
    """As CreatePipe, but returns file descriptors (pywin32: FdCreatePipe).

    ``mode`` (O_TEXT / O_BINARY on Windows) is ignored: descriptors are binary here.
    """
    _security, inherit = security_of(sa)
    r, w = create_pipe(dword(nSize, "nSize"), inheritable=inherit)
    fds = os.dup(r.fileno()), os.dup(w.fileno())
    r.close()
    w.close()
    for fd in fds:
        os.set_inheritable(fd, inherit)
    return fds


@api("GetNamedPipeClientProcessId")
def GetNamedPipeClientProcessId(hPipe: Any) -> int:
    """The client's process id, from either end (Win32: GetNamedPipeClientProcessId).

    Raises:
        pywintypes.error: 233 / 536 no client is connected to this server instance.
    """
    conn = O.pipe_of(lookup(hPipe, "GetNamedPipeClientProcessId"), "GetNamedPipeClientProcessId")
    return conn.client_pid if isinstance(conn, PipeInstance) else os.getpid()


@api("GetNamedPipeClientComputerName")
def GetNamedPipeClientComputerName(hPipe: Any) -> str:
    """A remote client's computer name, on the server's end (Win32: GetNamedPipeClientComputerName).

    Raises:
        pywintypes.error: 229 ERROR_PIPE_LOCAL the client is on this machine (or this is a
            client's end); 233 / 536 no client is connected.
    """
    conn = O.pipe_of(lookup(hPipe, "GetNamedPipeClientComputerName"), "GetNamedPipeClientComputerName")
    if not isinstance(conn, PipeInstance):
        raise W.PipeLocal("a client's end: the client is this machine")
    return conn.client_computer_name


@api("GetNamedPipeServerProcessId")
def GetNamedPipeServerProcessId(hPipe: Any) -> int:
    """The server's process id, from either end (Win32: GetNamedPipeServerProcessId)."""
    conn = O.pipe_of(lookup(hPipe, "GetNamedPipeServerProcessId"), "GetNamedPipeServerProcessId")
    return os.getpid() if isinstance(conn, PipeInstance) else conn.peer_pid


@api("GetOverlappedResult")
def GetOverlappedResult(hFile: Any, overlapped: Any, bWait: Any) -> int:
    """The outcome of an overlapped operation (Win32: GetOverlappedResult).

    Returns:
        The number of bytes transferred.

    Raises:
        pywintypes.error: 996 ERROR_IO_INCOMPLETE still in flight and ``bWait`` false;
            the operation's own error when it failed (234 a longer message: the buffer
            holds the first ``overlapped.InternalHigh`` bytes; 109 the other end closed;
            995 cancelled).
    """
    return O.overlapped_result(lookup(hFile, "GetOverlappedResult"), overlapped, bool(bWait))


__all__ = [
    "FILE_FLAG_FIRST_PIPE_INSTANCE",
    "NMPWAIT_NOWAIT",
    "NMPWAIT_USE_DEFAULT_WAIT",
    "NMPWAIT_WAIT_FOREVER",
    "PIPE_ACCEPT_REMOTE_CLIENTS",
    "PIPE_ACCESS_DUPLEX",
    "PIPE_ACCESS_INBOUND",
    "PIPE_ACCESS_OUTBOUND",
    "PIPE_NOWAIT",
    "PIPE_READMODE_BYTE",
    "PIPE_READMODE_MESSAGE",
    "PIPE_REJECT_REMOTE_CLIENTS",
    "PIPE_TYPE_BYTE",
    "PIPE_TYPE_MESSAGE",
    "PIPE_UNLIMITED_INSTANCES",
    "PIPE_WAIT",
    "CallNamedPipe",
    "ConnectNamedPipe",
    "CreateNamedPipe",
    "CreatePipe",
    "DisconnectNamedPipe",
    "FdCreatePipe",
    "GetNamedPipeClientComputerName",
    "GetNamedPipeClientProcessId",
    "GetNamedPipeHandleState",
    "GetNamedPipeInfo",
    "GetNamedPipeServerProcessId",
    "GetOverlappedResult",
    "PeekNamedPipe",
    "SetNamedPipeHandleState",
    "TransactNamedPipe",
    "WaitNamedPipe",
    "error",
]
