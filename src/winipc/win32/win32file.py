"""pywin32's ``win32file`` for pipes and mailslots (importable as ``win32file`` after install()).

CreateFile opens the client end of a named pipe or a mailslot writer; ReadFile,
WriteFile, FlushFileBuffers, CloseHandle, GetOverlappedResult and CancelIo work on every
pipe handle (named, either end, and anonymous). CreateMailslot, GetMailslotInfo and
SetMailslotInfo are the mailslot server's (over :mod:`winipc.mailslots`); ReadFile reads
it, WriteFile writes through a CreateFile handle. Regular files and devices are not
opened here yet (ERROR_NOT_SUPPORTED, 50). See docs/win32.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from winipc import errors as W
from winipc.mailslots import Mailslot, MailslotWriter, open_mailslot
from winipc.pipes import PipeConnection, PipeEnd, connect
from winipc.win32 import _overlapped as O
from winipc.win32._handles import Entry, PyHANDLE, close_value, handle_value, lookup, register
from winipc.win32._support import DWORD_MAX, api, api_error, as_bytes, dword, error, ms_to_seconds
from winipc.win32.pywintypes import security_of
from winipc.win32.win32con import (
    CREATE_ALWAYS,
    CREATE_NEW,
    FILE_ALL_ACCESS,
    FILE_APPEND_DATA,
    FILE_ATTRIBUTE_NORMAL,
    FILE_FLAG_OVERLAPPED,
    FILE_FLAG_WRITE_THROUGH,
    FILE_GENERIC_READ,
    FILE_GENERIC_WRITE,
    FILE_READ_DATA,
    FILE_SHARE_DELETE,
    FILE_SHARE_READ,
    FILE_SHARE_WRITE,
    FILE_TYPE_PIPE,
    FILE_TYPE_UNKNOWN,
    FILE_WRITE_DATA,
    GENERIC_ALL,
    GENERIC_EXECUTE,
    GENERIC_READ,
    GENERIC_WRITE,
    OPEN_ALWAYS,
    OPEN_EXISTING,
    SECURITY_ANONYMOUS,
    SECURITY_IDENTIFICATION,
    SECURITY_IMPERSONATION,
    SECURITY_SQOS_PRESENT,
    TRUNCATE_EXISTING,
)
from winipc.win32.win32con import MAILSLOT_NO_MESSAGE as _NO_MESSAGE
from winipc.win32.win32con import MAILSLOT_WAIT_FOREVER as _WAIT_FOREVER

_PIPE_PATH = re.compile(r"^[\\/]{2}[^\\/]+[\\/]pipe[\\/].", re.IGNORECASE)
_MAILSLOT_PATH = re.compile(r"^\\\\[^\\/]+\\mailslot\\.", re.IGNORECASE)
# handle kinds in the table (_handles.Entry.kind)
_SLOT_SERVER = "mailslot-server"
_SLOT_WRITER = "mailslot-writer"
_SLOT_QUERY = "mailslot-query"  # a CreateFile handle to a mailslot without write access
_READ_RIGHTS = (GENERIC_READ | GENERIC_ALL | FILE_READ_DATA) & 0xFFFF_FFFF
_WRITE_RIGHTS = (GENERIC_WRITE | GENERIC_ALL | FILE_WRITE_DATA | FILE_APPEND_DATA) & 0xFFFF_FFFF


@api("CreateFile")
def CreateFile(
    fileName: str,
    desiredAccess: int,
    shareMode: int,
    attributes: Any,
    creationDisposition: int,
    flagsAndAttributes: int,
    hTemplateFile: Any = None,
) -> PyHANDLE:
    """Open the client end of a named pipe or a mailslot (Win32: CreateFile).

    A pipe handle starts in byte-read mode, as on Windows; switch with
    SetNamedPipeHandleState. A mailslot handle writes (WriteFile) to the mailslot's
    server: ``\\\\.\\mailslot\\name`` on this machine, ``\\\\host\\mailslot\\name``
    on one host, ``\\\\*\\mailslot\\name`` or ``\\\\DOMAIN\\mailslot\\name`` to every
    host (see :func:`winipc.mailslots.open_mailslot`); remote names open without
    contacting anyone, as on Windows.

    Args:
        fileName: ``\\\\.\\pipe\\name`` or a mailslot name as above.
        desiredAccess: GENERIC_READ and/or GENERIC_WRITE (or FILE_GENERIC_*,
            FILE_READ_DATA, FILE_WRITE_DATA, GENERIC_ALL); must fit the pipe's direction.
        shareMode: FILE_SHARE_* (no meaning for pipes; accepted).
        attributes: None or a SECURITY_ATTRIBUTES (only bInheritHandle matters here).
        creationDisposition: 1..5; pipes take OPEN_EXISTING.
        flagsAndAttributes: FILE_FLAG_OVERLAPPED makes the handle overlapped; other
            flags and SECURITY_SQOS_PRESENT | SECURITY_* are accepted and ignored.
        hTemplateFile: ignored for pipes.

    Returns:
        The client's PyHANDLE.

    Raises:
        pywintypes.error: 2 no such pipe or local mailslot; 231 ERROR_PIPE_BUSY every
            instance is taken (see WaitNamedPipe); 5 the pipe's (or mailslot's) security
            or the pipe's direction refuses the access; 87 a bad disposition, or neither
            read nor write access to a pipe; 50 neither a pipe nor a mailslot name.
    """
    if not isinstance(fileName, str):
        raise TypeError(f"fileName must be a str, not {type(fileName).__name__}")
    access = dword(desiredAccess, "desiredAccess")
    dword(shareMode, "shareMode")
    disposition = dword(creationDisposition, "creationDisposition")
    flags = dword(flagsAndAttributes, "flagsAndAttributes")
    security_of(attributes)
    if not CREATE_NEW <= disposition <= TRUNCATE_EXISTING:
        raise api_error(W.ERROR_INVALID_PARAMETER, "CreateFile", "bad creationDisposition")
    read, write = bool(access & _READ_RIGHTS), bool(access & _WRITE_RIGHTS)
    if _MAILSLOT_PATH.match(fileName):
        # Windows (Vista on) opens a mailslot without write access too; such a handle
        # can neither write nor read (5), as there.
        writer = open_mailslot(fileName)
        return register(
            writer,
            _SLOT_WRITER if write else _SLOT_QUERY,
            overlapped=bool(flags & FILE_FLAG_OVERLAPPED),
        )
    if not _PIPE_PATH.match(fileName):
        raise api_error(
            W.ERROR_NOT_SUPPORTED,
            "CreateFile",
            "winipc.win32.CreateFile opens named pipes (\\\\.\\pipe\\name) and mailslots "
            "(\\\\.\\mailslot\\name) only, for now",
        )
    if not (read or write):
        raise api_error(
            W.ERROR_INVALID_PARAMETER,
            "CreateFile",
            "open a pipe with GENERIC_READ and/or GENERIC_WRITE",
        )
    conn = connect(fileName, read=read, write=write)
    return register(conn, "pipe-client", overlapped=bool(flags & FILE_FLAG_OVERLAPPED))


def AllocateReadBuffer(bufSize: int) -> memoryview:
    """A writable buffer for overlapped ReadFile / TransactNamedPipe (pywin32's helper).

    Returns:
        A memoryview of ``bufSize`` zero bytes; slice it (``buf[:n]``) once the operation
        has completed.
    """
    if isinstance(bufSize, bool) or not isinstance(bufSize, int) or bufSize < 0:
        raise ValueError(f"bufSize must be an int >= 0, not {bufSize!r}")
    return memoryview(bytearray(bufSize))


@api("ReadFile")
def ReadFile(hFile: Any, buffer: Any, overlapped: Any = None) -> tuple[int, Any]:
    """Read from a pipe (Win32: ReadFile).

    Args:
        hFile: a pipe handle.
        buffer: the most bytes to read, or a writable buffer to fill.
        overlapped: an OVERLAPPED, for overlapped operation.

    Returns:
        ``(hr, data)``: hr 0, or ERROR_MORE_DATA (234) in message-read mode when the
        message is longer than the buffer: data is its first part, the next read returns
        the rest. Without an OVERLAPPED, data is bytes of the length read. With one on an
        overlapped handle: ``(997, buffer)``, the buffer (the one given, or a new one of
        the requested size) filled on completion; GetOverlappedResult gives the count.

    On a mailslot (a CreateMailslot handle) a read returns one whole message, waiting
    up to the mailslot's read time-out; an OVERLAPPED is honoured as on a handle opened
    without FILE_FLAG_OVERLAPPED (the read completes before ReadFile returns).

    Raises:
        pywintypes.error: 109 the other end closed and everything was read; 233 the
            server disconnected this client; 232 PIPE_NOWAIT and nothing waiting;
            536 a server instance with no client; 5 a write-only end (a mailslot
            writer too); 6 a closed handle. Mailslots: 121 ERROR_SEM_TIMEOUT no message
            within the read time-out; 122 ERROR_INSUFFICIENT_BUFFER the next message is
            longer than the buffer (it stays queued; GetMailslotInfo gives its size).
    """
    entry = lookup(hFile, "ReadFile")
    obj = entry.obj
    if isinstance(obj, Mailslot):
        slot = obj
        return O.read_like(
            entry, buffer, overlapped, "ReadFile", lambda n: (W.ERROR_SUCCESS, slot.read(n))
        )
    if isinstance(obj, MailslotWriter):
        raise api_error(
            W.ERROR_ACCESS_DENIED, "ReadFile", "a mailslot handle from CreateFile only writes"
        )
    return O.read_like(
        entry, buffer, overlapped, "ReadFile", lambda n: O.read_now(entry, n, "ReadFile")
    )


@api("WriteFile")
def WriteFile(hFile: Any, data: Any, overlapped: Any = None) -> tuple[int, int]:
    """Write to a pipe (Win32: WriteFile): all of ``data``, one message on a message pipe.

    Returns:
        ``(0, bytes_written)``; with an OVERLAPPED on an overlapped handle
        ``(ERROR_IO_PENDING, 0)``, the count coming from GetOverlappedResult.

    On a mailslot handle from CreateFile, ``data`` is one message (it may be empty).

    Raises:
        pywintypes.error: 232 the other end has closed; 233 the server disconnected
            this client; 5 a read-only end, a mailslot's server handle, or a mailslot
            handle opened without write access; 6 a closed handle. Mailslots: 87 the
            message is longer than the mailslot takes (nothing is sent); 2 a local
            mailslot whose server closed since.
    """
    entry = lookup(hFile, "WriteFile")
    payload = as_bytes(data, "data")
    write = _writer_for(entry, payload)
    if overlapped is None:
        return W.ERROR_SUCCESS, write()
    return O.submit(
        entry,
        overlapped,
        lambda: (W.ERROR_SUCCESS, write()),
        "WriteFile",
        cancellable=False,
    )


def _writer_for(entry: Entry, payload: bytes) -> Callable[[], int]:
    """The one write WriteFile does on ``entry``'s object."""
    obj = entry.obj
    if isinstance(obj, Mailslot):
        raise api_error(W.ERROR_ACCESS_DENIED, "WriteFile", "a mailslot's server handle only reads")
    if isinstance(obj, MailslotWriter):
        if entry.kind != _SLOT_WRITER:
            raise api_error(W.ERROR_ACCESS_DENIED, "WriteFile", "opened without write access")
        writer = obj
        return lambda: writer.write(payload)
    return lambda: O.write_now(entry, payload, "WriteFile")


@api("FlushFileBuffers")
def FlushFileBuffers(hFile: Any) -> None:
    """Wait until the other end has read everything written (Win32: FlushFileBuffers).

    Raises:
        pywintypes.error: 232 / 109 the other end closed before reading it all.
    """
    obj = lookup(hFile, "FlushFileBuffers").obj
    if isinstance(obj, (PipeConnection, PipeEnd)):
        obj.flush()
    else:
        raise api_error(W.ERROR_INVALID_HANDLE, "FlushFileBuffers")


def CloseHandle(handle: Any) -> None:
    """Close a handle (Win32: CloseHandle); operations in flight end with 995.

    A PyHANDLE that is already closed is left alone, as in pywin32.

    Raises:
        pywintypes.error: (6) an int that names no open handle.
    """
    if isinstance(handle, PyHANDLE):
        handle.Close()
    else:
        close_value(handle_value(handle))


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


@api("CancelIo")
def CancelIo(handle: Any) -> None:
    """Cancel the overlapped operations in flight on a handle (Win32: CancelIo).

    Reads, connects and transactions end with ERROR_OPERATION_ABORTED (995), reported
    by GetOverlappedResult and signalled through their events. Unlike Windows' CancelIo
    this cancels the operations of every thread (CancelIoEx); a write blocked on a full
    pipe is not interrupted.
    """
    lookup(handle, "CancelIo").cancel_pending()


@api("GetFileType")
def GetFileType(hFile: Any) -> int:
    """FILE_TYPE_PIPE for every pipe handle (Win32: GetFileType)."""
    obj = lookup(hFile, "GetFileType").obj
    return FILE_TYPE_PIPE if isinstance(obj, (PipeConnection, PipeEnd)) else FILE_TYPE_UNKNOWN


# ---------------------------------------------------------------------- mailslots
def _signed(value: int) -> int:
    """A DWORD as pywin32 returns an output DWORD: a C ``long``, so 0xFFFFFFFF is -1.

    pywin32 declares GetMailslotInfo's outputs ``DWORD *OUTPUT``; SWIG's typemap for
    them builds the result with ``PyLong_FromLong((long)value)``, and ``long`` is 32
    bits on Windows: MAILSLOT_NO_MESSAGE, MAILSLOT_WAIT_FOREVER and a maximum size of
    0xFFFFFFFF all come back as -1 (and any value >= 2**31 negative).
    """
    value &= DWORD_MAX
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value


def _milliseconds(seconds: float) -> int:
    """A read time-out in seconds as the DWORD of milliseconds Windows keeps."""
    return min(round(seconds * 1000), DWORD_MAX - 1)


def _mailslot_of(h: Any, funcname: str) -> Mailslot:
    """The mailslot server behind a handle.

    Raises:
        pywintypes.error: 87 a mailslot handle from CreateFile (as Windows before 8;
            later versions answer from the server's state, which a writer here does
            not see); 6 any other handle.
    """
    obj = lookup(h, funcname).obj
    if isinstance(obj, Mailslot):
        return obj
    if isinstance(obj, MailslotWriter):
        raise api_error(W.ERROR_INVALID_PARAMETER, funcname, "not the mailslot's server handle")
    raise api_error(W.ERROR_INVALID_HANDLE, funcname, "not a mailslot handle")


@api("CreateMailslot")
def CreateMailslot(
    Name: str, MaxMessageSize: int, ReadTimeout: int, SecurityAttributes: Any = None
) -> PyHANDLE:
    """Create a mailslot on this machine (Win32: CreateMailslot); its handle reads it.

    Args:
        Name: ``\\\\.\\mailslot\\[path\\]name`` (case-insensitive).
        MaxMessageSize: the largest message writers may send, in bytes; 0 = any size
            (up to 256 MiB on this machine). A DWORD: -1 is 0xFFFFFFFF.
        ReadTimeout: milliseconds a read waits for a message: 0 returns at once,
            MAILSLOT_WAIT_FOREVER (-1 / 0xFFFFFFFF) waits forever.
        SecurityAttributes: None (owner only) or a SECURITY_ATTRIBUTES whose
            ``winipc_security`` says who may write.

    Returns:
        The mailslot's PyHANDLE: ReadFile, GetMailslotInfo, SetMailslotInfo, CloseHandle.

    Raises:
        pywintypes.error: 183 ERROR_ALREADY_EXISTS a mailslot of that name exists;
            123 ERROR_INVALID_NAME not a ``\\\\.\\mailslot\\`` name (also a remote one);
            5 the name is squatted.
        TypeError: Name is not a str.
    """
    if not isinstance(Name, str):
        raise TypeError(f"Name must be a str, not {type(Name).__name__}")
    if not Name.startswith("\\\\"):
        raise api_error(
            W.ERROR_INVALID_NAME, "CreateMailslot", "a mailslot name is \\\\.\\mailslot\\name"
        )
    max_size = dword(MaxMessageSize, "MaxMessageSize")
    timeout = ms_to_seconds(ReadTimeout, "ReadTimeout")
    security, _inherit = security_of(SecurityAttributes)
    # Windows' CreateMailslot handle is asynchronous; here an OVERLAPPED read completes
    # before ReadFile returns (a pending read could not be cancelled by CloseHandle).
    return register(Mailslot(Name, max_size, timeout, security=security), _SLOT_SERVER)


@api("GetMailslotInfo")
def GetMailslotInfo(hMailslot: Any) -> tuple[int, int, int, int]:
    """A mailslot's state (Win32: GetMailslotInfo).

    Returns:
        ``(maxMessageSize, nextSize, messageCount, readTimeout)``: nextSize is the
        length of the next message, or MAILSLOT_NO_MESSAGE (-1) when none waits;
        readTimeout is in milliseconds, MAILSLOT_WAIT_FOREVER (-1) for forever. The
        values are DWORDs returned signed, as pywin32 returns them (see :func:`_signed`):
        a mailslot created with MaxMessageSize -1 (0xFFFFFFFF) reports -1.

    Raises:
        pywintypes.error: 87 a mailslot handle from CreateFile; 6 not a mailslot handle.
    """
    info = _mailslot_of(hMailslot, "GetMailslotInfo").info()
    return (
        _signed(info.max_message_size),
        _NO_MESSAGE if info.next_size is None else _signed(info.next_size),
        _signed(info.message_count),
        _WAIT_FOREVER if info.read_timeout is None else _signed(_milliseconds(info.read_timeout)),
    )


@api("SetMailslotInfo")
def SetMailslotInfo(hMailslot: Any, ReadTimeout: int) -> None:
    """Change a mailslot's read time-out (Win32: SetMailslotInfo).

    Args:
        hMailslot: the CreateMailslot handle.
        ReadTimeout: milliseconds; 0 returns at once, MAILSLOT_WAIT_FOREVER (-1) waits
            forever. Reads already waiting keep the time-out they started with.

    Raises:
        pywintypes.error: 87 a mailslot handle from CreateFile; 6 not a mailslot handle.
    """
    _mailslot_of(hMailslot, "SetMailslotInfo").set_read_timeout(
        ms_to_seconds(ReadTimeout, "ReadTimeout")
    )


__all__ = [
    "CREATE_ALWAYS",
    "CREATE_NEW",
    "FILE_ALL_ACCESS",
    "FILE_ATTRIBUTE_NORMAL",
    "FILE_FLAG_OVERLAPPED",
    "FILE_FLAG_WRITE_THROUGH",
    "FILE_GENERIC_READ",
    "FILE_GENERIC_WRITE",
    "FILE_SHARE_DELETE",
    "FILE_SHARE_READ",
    "FILE_SHARE_WRITE",
    "FILE_TYPE_PIPE",
    "FILE_TYPE_UNKNOWN",
    "GENERIC_EXECUTE",
    "GENERIC_READ",
    "GENERIC_WRITE",
    "OPEN_ALWAYS",
    "OPEN_EXISTING",
    "SECURITY_ANONYMOUS",
    "SECURITY_IDENTIFICATION",
    "SECURITY_IMPERSONATION",
    "SECURITY_SQOS_PRESENT",
    "TRUNCATE_EXISTING",
    "AllocateReadBuffer",
    "CancelIo",
    "CloseHandle",
    "CreateFile",
    "CreateMailslot",
    "FlushFileBuffers",
    "GetFileType",
    "GetMailslotInfo",
    "GetOverlappedResult",
    "ReadFile",
    "SetMailslotInfo",
    "WriteFile",
    "error",
]
