"""Errors raised by winipc: one tree, each error with its Win32 code.

Every error is a :class:`WinIPCError`, which is an :class:`OSError`; each also subclasses
the builtin a Python programmer would catch, and carries ``.winerror`` (the Win32 code,
as ``GetLastError()`` would give it) and ``.funcname`` (the Win32 function it stands for,
when known)::

    WinIPCError (OSError)                         .winerror, .funcname, .strerror
    ├── FileNotFound (FileNotFoundError)          2    ERROR_FILE_NOT_FOUND
    ├── BadNetPath (FileNotFoundError)            53   ERROR_BAD_NETPATH
    ├── AccessDenied (PermissionError)            5    ERROR_ACCESS_DENIED
    ├── AlreadyExists (FileExistsError)           183  ERROR_ALREADY_EXISTS
    ├── InvalidHandle (ValueError)                6    ERROR_INVALID_HANDLE
    ├── InvalidParameter (ValueError)             87   ERROR_INVALID_PARAMETER
    ├── InvalidName (ValueError)                  123  ERROR_INVALID_NAME
    ├── InvalidData (ValueError)                  13   ERROR_INVALID_DATA   (malformed wire data)
    ├── NotSupported (NotImplementedError)        50   ERROR_NOT_SUPPORTED
    ├── BrokenPipe (BrokenPipeError)              109  ERROR_BROKEN_PIPE
    │   ├── PipeClosing (BrokenPipeError)         232  ERROR_NO_DATA        (write to a closing pipe)
    │   └── PipeNotConnected (BrokenPipeError)    233  ERROR_PIPE_NOT_CONNECTED
    ├── PipeBusy (BlockingIOError)                231  ERROR_PIPE_BUSY
    ├── PipeLocal (OSError)                       229  ERROR_PIPE_LOCAL     (a remote-only query on a local pipe)
    ├── NoData (BlockingIOError)                  232  ERROR_NO_DATA        (non-blocking read, empty pipe)
    ├── PipeListening (BlockingIOError)           536  ERROR_PIPE_LISTENING (non-blocking connect, no client)
    ├── MoreData (BufferError)                    234  ERROR_MORE_DATA      (.data holds the part read)
    ├── InsufficientBuffer (BufferError)          122  ERROR_INSUFFICIENT_BUFFER (mailslot read too small)
    ├── Timeout (TimeoutError)                    1460 ERROR_TIMEOUT
    │   ├── SemTimeout (TimeoutError)             121  ERROR_SEM_TIMEOUT
    │   └── WaitTimeout (TimeoutError)            258  WAIT_TIMEOUT
    ├── OperationAborted (InterruptedError)       995  ERROR_OPERATION_ABORTED (CancelIo)
    ├── IoIncomplete (BlockingIOError)            996  ERROR_IO_INCOMPLETE
    ├── IoPending (BlockingIOError)               997  ERROR_IO_PENDING
    ├── NotOwner (PermissionError)                288  ERROR_NOT_OWNER
    ├── TooManyPosts (ValueError)                 298  ERROR_TOO_MANY_POSTS
    ├── MappedAlignment (ValueError)              1132 ERROR_MAPPED_ALIGNMENT
    ├── InvalidWindowHandle (ValueError)          1400 ERROR_INVALID_WINDOW_HANDLE
    ├── ClassAlreadyExists (FileExistsError)      1410 ERROR_CLASS_ALREADY_EXISTS
    ├── ClassDoesNotExist (LookupError)           1411 ERROR_CLASS_DOES_NOT_EXIST (1407 ERROR_CANNOT_FIND_WND_CLASS from create_window)
    ├── ClassHasWindows                           1412 ERROR_CLASS_HAS_WINDOWS
    ├── ClipboardNotOpen (PermissionError)        1418 ERROR_CLIPBOARD_NOT_OPEN
    ├── AbandonedMutex                            735  ERROR_ABANDONED_WAIT_0 (ownership granted)
    ├── CorruptQueueError (ValueError)            1392 ERROR_FILE_CORRUPT   (a queue file failed its checks)
    └── MsmqError                                 MSMQ's HRESULTs (negative, as MQERROR is signed)
        ├── QueueNotFound (FileNotFoundError)     MQ_ERROR_QUEUE_NOT_FOUND
        ├── QueueDeleted (FileNotFoundError)      MQ_ERROR_QUEUE_DELETED
        ├── QueueExists (FileExistsError)         MQ_ERROR_QUEUE_EXISTS
        ├── QueueAccessDenied (PermissionError)   MQ_ERROR_ACCESS_DENIED
        ├── SharingViolation (PermissionError)    MQ_ERROR_SHARING_VIOLATION
        ├── IoTimeout (TimeoutError)              MQ_ERROR_IO_TIMEOUT
        ├── OperationCancelled (InterruptedError) MQ_ERROR_OPERATION_CANCELLED
        ├── IllegalQueuePathname (ValueError)     MQ_ERROR_ILLEGAL_QUEUE_PATHNAME
        ├── IllegalFormatName (ValueError)        MQ_ERROR_ILLEGAL_FORMATNAME
        ├── IllegalPropertyValue (ValueError)     MQ_ERROR_ILLEGAL_PROPERTY_VALUE (also LABEL_TOO_LONG)
        ├── TransactionUsage (ValueError)         MQ_ERROR_TRANSACTION_USAGE
        ├── TransactionSequence (ValueError)      MQ_ERROR_TRANSACTION_SEQUENCE
        ├── IllegalCursorAction (ValueError)      MQ_ERROR_ILLEGAL_CURSOR_ACTION
        ├── MessageNotFound (LookupError)         MQ_ERROR_MESSAGE_NOT_FOUND
        ├── MessageAlreadyReceived (LookupError)  MQ_ERROR_MESSAGE_ALREADY_RECEIVED
        ├── InsufficientResources (OSError)       MQ_ERROR_INSUFFICIENT_RESOURCES (quota exceeded)
        ├── MessageStorageFailed (OSError)        MQ_ERROR_MESSAGE_STORAGE_FAILED
        └── QueueNotAvailable (ConnectionError)   MQ_ERROR_QUEUE_NOT_AVAILABLE (remote server unreachable)
    RpcError                                      RPC status codes (RPC_S_*, RPC_X_*: Win32 codes)
        ├── InvalidStringBinding (ValueError)     1700 RPC_S_INVALID_STRING_BINDING
        ├── ProtseqNotSupported (NotImplementedError) 1703 RPC_S_PROTSEQ_NOT_SUPPORTED
        ├── InvalidEndpointFormat (ValueError)    1706 RPC_S_INVALID_ENDPOINT_FORMAT
        ├── UnknownInterface (LookupError)        1717 RPC_S_UNKNOWN_IF     (no such interface or version)
        ├── ServerUnavailable (ConnectionError)   1722 RPC_S_SERVER_UNAVAILABLE
        ├── ServerTooBusy (ConnectionError)       1723 RPC_S_SERVER_TOO_BUSY
        ├── CallFailed (ConnectionError)          1726 RPC_S_CALL_FAILED    (may have run)
        │   └── CallFailedDne (ConnectionError)   1727 RPC_S_CALL_FAILED_DNE (did not run)
        ├── ProtocolError (ValueError)            1728 RPC_S_PROTOCOL_ERROR (malformed or oversized frame)
        ├── ProcnumOutOfRange (LookupError)       1745 RPC_S_PROCNUM_OUT_OF_RANGE (unknown method)
        ├── EndpointNotRegistered (LookupError)   1753 EPT_S_NOT_REGISTERED (endpoint mapper)
        ├── BadStubData (TypeError, ValueError)   1783 RPC_X_BAD_STUB_DATA  (arguments or result do not fit the interface)
        ├── CallCancelled (InterruptedError)      1818 RPC_S_CALL_CANCELLED
        │   └── CallTimeout (TimeoutError)        1818 RPC_S_CALL_CANCELLED (cancelled by its timeout)
        ├── UnsupportedAuthnLevel (PermissionError) 1821 RPC_S_UNSUPPORTED_AUTHN_LEVEL
        ├── SecurityPackageError (PermissionError) 1825 RPC_S_SEC_PKG_ERROR (a frame failed its integrity check)
        ├── ContextMismatch (ValueError)          6    RPC_X_SS_CONTEXT_MISMATCH (unknown or closed context handle)
        └── ServerFault                           the server raised; ``.remote_type`` names its exception

A server method that raises a ``WinIPCError`` reaches the client as the same class; RPC's
access check failure is ``AccessDenied`` (5, RPC_S_ACCESS_DENIED).

``from_winerror(code, message)`` builds the right class for a code. The codes themselves
are the ``ERROR_*`` constants of this module (and of ``winipc.win32.winerror``).
"""

from __future__ import annotations

from typing import Any, ClassVar

ERROR_SUCCESS = 0
ERROR_FILE_NOT_FOUND = 2
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_INVALID_DATA = 13
ERROR_NOT_SUPPORTED = 50
ERROR_BAD_NETPATH = 53
ERROR_INVALID_PARAMETER = 87
ERROR_BROKEN_PIPE = 109
ERROR_SEM_TIMEOUT = 121
ERROR_INSUFFICIENT_BUFFER = 122
ERROR_INVALID_NAME = 123
ERROR_ALREADY_EXISTS = 183
ERROR_BAD_PIPE = 230
ERROR_PIPE_LOCAL = 229
ERROR_PIPE_BUSY = 231
ERROR_NO_DATA = 232
ERROR_PIPE_NOT_CONNECTED = 233
ERROR_MORE_DATA = 234
WAIT_TIMEOUT = 258
ERROR_NOT_OWNER = 288
ERROR_TOO_MANY_POSTS = 298
ERROR_PIPE_CONNECTED = 535
ERROR_ABANDONED_WAIT_0 = 735
ERROR_PIPE_LISTENING = 536
ERROR_OPERATION_ABORTED = 995
ERROR_IO_INCOMPLETE = 996
ERROR_IO_PENDING = 997
ERROR_MAPPED_ALIGNMENT = 1132
ERROR_INVALID_WINDOW_HANDLE = 1400
ERROR_CANNOT_FIND_WND_CLASS = 1407
ERROR_CLASS_ALREADY_EXISTS = 1410
ERROR_CLASS_DOES_NOT_EXIST = 1411
ERROR_CLASS_HAS_WINDOWS = 1412
ERROR_CLIPBOARD_NOT_OPEN = 1418
ERROR_NOT_ENOUGH_QUOTA = 1816
ERROR_FILE_CORRUPT = 1392
ERROR_TIMEOUT = 1460
RPC_S_INVALID_STRING_BINDING = 1700
RPC_S_PROTSEQ_NOT_SUPPORTED = 1703
RPC_S_INVALID_ENDPOINT_FORMAT = 1706
RPC_S_UNKNOWN_IF = 1717
RPC_S_SERVER_UNAVAILABLE = 1722
RPC_S_SERVER_TOO_BUSY = 1723
RPC_S_CALL_FAILED = 1726
RPC_S_CALL_FAILED_DNE = 1727
RPC_S_PROTOCOL_ERROR = 1728
RPC_S_PROCNUM_OUT_OF_RANGE = 1745
EPT_S_NOT_REGISTERED = 1753
RPC_X_BAD_STUB_DATA = 1783
RPC_S_CALL_CANCELLED = 1818
RPC_S_UNSUPPORTED_AUTHN_LEVEL = 1821
RPC_S_SEC_PKG_ERROR = 1825
RPC_X_SS_CONTEXT_MISMATCH = ERROR_INVALID_HANDLE
RPC_S_ACCESS_DENIED = ERROR_ACCESS_DENIED

# MSMQ's HRESULTs (mq.h), as signed 32-bit values like pywin32 and windows-sys give them.
MQ_ERROR = -0x3FF1FFFF  # 0xC00E0001
MQ_ERROR_QUEUE_NOT_FOUND = -0x3FF1FFFD  # 0xC00E0003
MQ_ERROR_QUEUE_EXISTS = -0x3FF1FFFB  # 0xC00E0005
MQ_ERROR_INVALID_PARAMETER = -0x3FF1FFFA  # 0xC00E0006
MQ_ERROR_INVALID_HANDLE = -0x3FF1FFF9  # 0xC00E0007
MQ_ERROR_OPERATION_CANCELLED = -0x3FF1FFF8  # 0xC00E0008
MQ_ERROR_SHARING_VIOLATION = -0x3FF1FFF7  # 0xC00E0009
MQ_ERROR_ILLEGAL_QUEUE_PATHNAME = -0x3FF1FFEC  # 0xC00E0014
MQ_ERROR_ILLEGAL_PROPERTY_VALUE = -0x3FF1FFE8  # 0xC00E0018
MQ_ERROR_IO_TIMEOUT = -0x3FF1FFE5  # 0xC00E001B
MQ_ERROR_ILLEGAL_CURSOR_ACTION = -0x3FF1FFE4  # 0xC00E001C
MQ_ERROR_MESSAGE_ALREADY_RECEIVED = -0x3FF1FFE3  # 0xC00E001D
MQ_ERROR_ILLEGAL_FORMATNAME = -0x3FF1FFE2  # 0xC00E001E
MQ_ERROR_UNSUPPORTED_FORMATNAME_OPERATION = -0x3FF1FFE0  # 0xC00E0020
MQ_ERROR_ACCESS_DENIED = -0x3FF1FFDB  # 0xC00E0025
MQ_ERROR_INSUFFICIENT_RESOURCES = -0x3FF1FFD9  # 0xC00E0027
MQ_ERROR_MESSAGE_STORAGE_FAILED = -0x3FF1FFD6  # 0xC00E002A
MQ_ERROR_QUEUE_NOT_AVAILABLE = -0x3FF1FFB5  # 0xC00E004B
MQ_ERROR_TRANSACTION_USAGE = -0x3FF1FFB0  # 0xC00E0050
MQ_ERROR_TRANSACTION_SEQUENCE = -0x3FF1FFAF  # 0xC00E0051
MQ_ERROR_QUEUE_DELETED = -0x3FF1FFA6  # 0xC00E005A
MQ_ERROR_LABEL_TOO_LONG = -0x3FF1FFA3  # 0xC00E005D
MQ_ERROR_MESSAGE_NOT_FOUND = -0x3FF1FF78  # 0xC00E0088

#: Windows' FormatMessage text for each code winipc uses.
MESSAGES: dict[int, str] = {
    ERROR_SUCCESS: "The operation completed successfully.",
    ERROR_FILE_NOT_FOUND: "The system cannot find the file specified.",
    ERROR_ACCESS_DENIED: "Access is denied.",
    ERROR_INVALID_HANDLE: "The handle is invalid.",
    ERROR_INVALID_DATA: "The data is invalid.",
    ERROR_NOT_SUPPORTED: "The request is not supported.",
    ERROR_BAD_NETPATH: "The network path was not found.",
    ERROR_INVALID_PARAMETER: "The parameter is incorrect.",
    ERROR_BROKEN_PIPE: "The pipe has been ended.",
    ERROR_SEM_TIMEOUT: "The semaphore timeout period has expired.",
    ERROR_INSUFFICIENT_BUFFER: "The data area passed to a system call is too small.",
    ERROR_INVALID_NAME: "The filename, directory name, or volume label syntax is incorrect.",
    ERROR_ALREADY_EXISTS: "Cannot create a file when that file already exists.",
    ERROR_BAD_PIPE: "The pipe state is invalid.",
    ERROR_PIPE_LOCAL: "The pipe is local.",
    ERROR_PIPE_BUSY: "All pipe instances are busy.",
    ERROR_NO_DATA: "The pipe is being closed.",
    ERROR_PIPE_NOT_CONNECTED: "No process is on the other end of the pipe.",
    ERROR_MORE_DATA: "More data is available.",
    WAIT_TIMEOUT: "The wait operation timed out.",
    ERROR_NOT_OWNER: "Attempt to release mutex not owned by caller.",
    ERROR_TOO_MANY_POSTS: "Too many posts were made to a semaphore.",
    ERROR_PIPE_CONNECTED: "There is a process on other end of the pipe.",
    ERROR_ABANDONED_WAIT_0: "The wait operation returned because a mutex was abandoned: its "
    "owner ended without releasing it.",
    ERROR_PIPE_LISTENING: "Waiting for a process to open the other end of the pipe.",
    ERROR_OPERATION_ABORTED: "The I/O operation has been aborted because of either a thread "
    "exit or an application request.",
    ERROR_IO_INCOMPLETE: "Overlapped I/O event is not in a signaled state.",
    ERROR_IO_PENDING: "Overlapped I/O operation is in progress.",
    ERROR_MAPPED_ALIGNMENT: "The base address or the file offset specified does not have the "
    "proper alignment.",
    ERROR_INVALID_WINDOW_HANDLE: "Invalid window handle.",
    ERROR_CANNOT_FIND_WND_CLASS: "Cannot find window class.",
    ERROR_CLASS_ALREADY_EXISTS: "Class already exists.",
    ERROR_CLASS_DOES_NOT_EXIST: "Class does not exist.",
    ERROR_CLASS_HAS_WINDOWS: "Class still has open windows.",
    ERROR_CLIPBOARD_NOT_OPEN: "Thread does not have a clipboard open.",
    ERROR_NOT_ENOUGH_QUOTA: "Not enough quota is available to process this command.",
    ERROR_TIMEOUT: "This operation returned because the timeout period expired.",
    ERROR_FILE_CORRUPT: "The file or directory is corrupted and unreadable.",
    RPC_S_INVALID_STRING_BINDING: "The string binding is invalid.",
    RPC_S_PROTSEQ_NOT_SUPPORTED: "The RPC protocol sequence is not supported.",
    RPC_S_INVALID_ENDPOINT_FORMAT: "The endpoint format is invalid.",
    RPC_S_UNKNOWN_IF: "The interface is unknown.",
    RPC_S_SERVER_UNAVAILABLE: "The RPC server is unavailable.",
    RPC_S_SERVER_TOO_BUSY: "The RPC server is too busy to complete this operation.",
    RPC_S_CALL_FAILED: "The remote procedure call failed.",
    RPC_S_CALL_FAILED_DNE: "The remote procedure call failed and did not execute.",
    RPC_S_PROTOCOL_ERROR: "A remote procedure call (RPC) protocol error occurred.",
    RPC_S_PROCNUM_OUT_OF_RANGE: "The procedure number is out of range.",
    EPT_S_NOT_REGISTERED: "There are no more endpoints available from the endpoint mapper.",
    RPC_X_BAD_STUB_DATA: "The stub received bad data.",
    RPC_S_CALL_CANCELLED: "The remote procedure call was cancelled.",
    RPC_S_UNSUPPORTED_AUTHN_LEVEL: "The requested authentication level is not supported.",
    RPC_S_SEC_PKG_ERROR: "A security package specific error occurred.",
    MQ_ERROR: "Generic Error.",
    MQ_ERROR_QUEUE_NOT_FOUND: "The queue is not registered in the directory service.",
    MQ_ERROR_QUEUE_EXISTS: "A queue with the same pathname is already registered.",
    MQ_ERROR_INVALID_PARAMETER: "An invalid parameter passed to a function.",
    MQ_ERROR_INVALID_HANDLE: "An invalid handle passed to a function.",
    MQ_ERROR_OPERATION_CANCELLED: "The operation was cancelled before it could be completed.",
    MQ_ERROR_SHARING_VIOLATION: "Sharing violation. The queue is already opened for exclusive receive.",
    MQ_ERROR_ILLEGAL_QUEUE_PATHNAME: "Illegal queue path name.",
    MQ_ERROR_ILLEGAL_PROPERTY_VALUE: "Illegal property value.",
    MQ_ERROR_IO_TIMEOUT: "The MQReceiveMessage timeout has expired.",
    MQ_ERROR_ILLEGAL_CURSOR_ACTION: "MQ_ACTION_PEEK_NEXT specified to MQReceiveMessage can not be "
    "used with the current cursor position.",
    MQ_ERROR_MESSAGE_ALREADY_RECEIVED: "A message that is currently pointed at by the cursor has "
    "been removed from the queue.",
    MQ_ERROR_ILLEGAL_FORMATNAME: "The given format name is invalid.",
    MQ_ERROR_UNSUPPORTED_FORMATNAME_OPERATION: "The requested operation for the specified format "
    "name is not supported.",
    MQ_ERROR_ACCESS_DENIED: "Access is denied.",
    MQ_ERROR_INSUFFICIENT_RESOURCES: "Insufficient resources to perform operation.",
    MQ_ERROR_MESSAGE_STORAGE_FAILED: "Could not store a recoverable or journal message. Message "
    "was not sent.",
    MQ_ERROR_QUEUE_NOT_AVAILABLE: "Error while reading from a queue residing on a remote computer.",
    MQ_ERROR_TRANSACTION_USAGE: "Wrong transaction usage.",
    MQ_ERROR_TRANSACTION_SEQUENCE: "Wrong transaction operations sequence.",
    MQ_ERROR_QUEUE_DELETED: "The queue was deleted. Messages can not be received anymore using "
    "this queue handle.",
    MQ_ERROR_LABEL_TOO_LONG: "The passed label is too long.",
    MQ_ERROR_MESSAGE_NOT_FOUND: "The message was not found.",
}

_NAMES: dict[int, str] = {
    v: k
    for k, v in list(globals().items())
    if k.startswith(("ERROR_", "WAIT_", "MQ_ERROR", "RPC_S_", "RPC_X_", "EPT_S_")) and k != "ERROR_SUCCESS"
    and k not in ("RPC_X_SS_CONTEXT_MISMATCH", "RPC_S_ACCESS_DENIED")
}


def error_name(code: int) -> str:
    """The symbolic name of a Win32 code (``231`` -> ``"ERROR_PIPE_BUSY"``)."""
    return _NAMES.get(code, f"WIN32_{code}")


def hresult_hex(code: int) -> str:
    """An HRESULT as Windows prints it (``-1072824293`` -> ``"0xC00E001B"``)."""
    return f"0x{code & 0xFFFFFFFF:08X}"


class WinIPCError(OSError):
    """Base of every winipc error.

    Attributes:
        winerror: the Win32 error code (``GetLastError()``).
        funcname: the Win32 function the failing call corresponds to, or ``None``.
        strerror: the message: what failed, naming the argument or object.
    """

    winerror_default: ClassVar[int] = 0
    winerror: int
    funcname: str | None

    def __init__(
        self,
        message: str | None = None,
        *,
        winerror: int | None = None,
        funcname: str | None = None,
        errno: int | None = None,
    ) -> None:
        code = self.winerror_default if winerror is None else winerror
        text = message if message is not None else MESSAGES.get(code, error_name(code))
        super().__init__(errno, text)
        self.winerror = code
        self.funcname = funcname

    def __str__(self) -> str:
        return f"[WinError {self.winerror} {error_name(self.winerror)}] {self.strerror}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (type(self), self.strerror, self.winerror, self.funcname, self.errno),
            self.__dict__,
        )


def _rebuild(
    cls: type[WinIPCError], message: str, winerror: int, funcname: str | None, errno: int | None
) -> WinIPCError:
    return cls(message, winerror=winerror, funcname=funcname, errno=errno)


class FileNotFound(WinIPCError, FileNotFoundError):
    winerror_default = ERROR_FILE_NOT_FOUND


class BadNetPath(WinIPCError, FileNotFoundError):
    winerror_default = ERROR_BAD_NETPATH


class AccessDenied(WinIPCError, PermissionError):
    winerror_default = ERROR_ACCESS_DENIED


class AlreadyExists(WinIPCError, FileExistsError):
    winerror_default = ERROR_ALREADY_EXISTS


class InvalidHandle(WinIPCError, ValueError):
    winerror_default = ERROR_INVALID_HANDLE


class InvalidParameter(WinIPCError, ValueError):
    winerror_default = ERROR_INVALID_PARAMETER


class InvalidName(WinIPCError, ValueError):
    winerror_default = ERROR_INVALID_NAME


class InvalidData(WinIPCError, ValueError):
    winerror_default = ERROR_INVALID_DATA


class NotSupported(WinIPCError, NotImplementedError):
    winerror_default = ERROR_NOT_SUPPORTED


class BrokenPipe(WinIPCError, BrokenPipeError):
    winerror_default = ERROR_BROKEN_PIPE


class PipeClosing(BrokenPipe):
    winerror_default = ERROR_NO_DATA


class PipeNotConnected(BrokenPipe):
    winerror_default = ERROR_PIPE_NOT_CONNECTED


class PipeBusy(WinIPCError, BlockingIOError):
    winerror_default = ERROR_PIPE_BUSY


class PipeLocal(WinIPCError):
    winerror_default = ERROR_PIPE_LOCAL


class NoData(WinIPCError, BlockingIOError):
    winerror_default = ERROR_NO_DATA


class PipeListening(WinIPCError, BlockingIOError):
    winerror_default = ERROR_PIPE_LISTENING


class MoreData(WinIPCError, BufferError):
    """A message-mode read filled the buffer before the message ended.

    ``data`` holds the part that was read; the rest comes with the next read.
    """

    winerror_default = ERROR_MORE_DATA

    def __init__(self, data: bytes = b"", message: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (MoreData, (self.data, self.strerror), self.__dict__)


class InsufficientBuffer(WinIPCError, BufferError):
    """A mailslot read's buffer is smaller than the next message; the message stays queued."""

    winerror_default = ERROR_INSUFFICIENT_BUFFER


class Timeout(WinIPCError, TimeoutError):
    winerror_default = ERROR_TIMEOUT


class SemTimeout(Timeout):
    winerror_default = ERROR_SEM_TIMEOUT


class WaitTimeout(Timeout):
    winerror_default = WAIT_TIMEOUT


class OperationAborted(WinIPCError, InterruptedError):
    winerror_default = ERROR_OPERATION_ABORTED


class IoIncomplete(WinIPCError, BlockingIOError):
    winerror_default = ERROR_IO_INCOMPLETE


class IoPending(WinIPCError, BlockingIOError):
    winerror_default = ERROR_IO_PENDING


class NotOwner(WinIPCError, PermissionError):
    winerror_default = ERROR_NOT_OWNER


class TooManyPosts(WinIPCError, ValueError):
    winerror_default = ERROR_TOO_MANY_POSTS


class MappedAlignment(WinIPCError, ValueError):
    winerror_default = ERROR_MAPPED_ALIGNMENT


class InvalidWindowHandle(WinIPCError, ValueError):
    winerror_default = ERROR_INVALID_WINDOW_HANDLE


class ClassAlreadyExists(WinIPCError, FileExistsError):
    winerror_default = ERROR_CLASS_ALREADY_EXISTS


class ClassDoesNotExist(WinIPCError, LookupError):
    """No window class of that name (UnregisterClass: 1411; CreateWindow gives it with 1407)."""

    winerror_default = ERROR_CLASS_DOES_NOT_EXIST


class ClassHasWindows(WinIPCError):
    """UnregisterClass while windows of the class still exist."""

    winerror_default = ERROR_CLASS_HAS_WINDOWS


class ClipboardNotOpen(WinIPCError, PermissionError):
    winerror_default = ERROR_CLIPBOARD_NOT_OPEN


class AbandonedMutex(WinIPCError):
    """A wait was satisfied by a mutex whose owner ended without releasing it.

    This is a signal, not a failure: the waiting thread now OWNS the mutex (and, for
    ``wait_all``, every other object) and must release it; the data the mutex guards
    may be inconsistent. Win32: WAIT_ABANDONED (WAIT_ABANDONED_0 + ``index``).

    Attributes:
        index: position of the abandoned mutex in the list waited on (0 for one object).
        mutex: the mutex handle.
    """

    winerror_default = ERROR_ABANDONED_WAIT_0

    def __init__(self, message: str | None = None, *, index: int = 0, mutex: Any = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.index = index
        self.mutex = mutex

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.strerror, self.winerror, self.funcname, self.errno),
                {"index": self.index, "mutex": None})


class CorruptQueueError(WinIPCError, ValueError):
    """A queue file failed its integrity checks (a record's checksum or SQLite's own).

    Raised instead of returning damaged data; ``winipc queue integrity PATH`` reports
    where. Win32: ERROR_FILE_CORRUPT.
    """

    winerror_default = ERROR_FILE_CORRUPT


class MsmqError(WinIPCError):
    """An MSMQ-style queue operation failed; ``winerror`` is MSMQ's HRESULT (``MQ_ERROR_*``)."""

    winerror_default = MQ_ERROR

    def __str__(self) -> str:
        return f"[{hresult_hex(self.winerror)} {error_name(self.winerror)}] {self.strerror}"


class QueueNotFound(MsmqError, FileNotFoundError):
    winerror_default = MQ_ERROR_QUEUE_NOT_FOUND


class QueueDeleted(MsmqError, FileNotFoundError):
    winerror_default = MQ_ERROR_QUEUE_DELETED


class QueueExists(MsmqError, FileExistsError):
    winerror_default = MQ_ERROR_QUEUE_EXISTS


class QueueAccessDenied(MsmqError, PermissionError):
    winerror_default = MQ_ERROR_ACCESS_DENIED


class SharingViolation(MsmqError, PermissionError):
    winerror_default = MQ_ERROR_SHARING_VIOLATION


class IoTimeout(MsmqError, TimeoutError):
    winerror_default = MQ_ERROR_IO_TIMEOUT


class OperationCancelled(MsmqError, InterruptedError):
    winerror_default = MQ_ERROR_OPERATION_CANCELLED


class IllegalQueuePathname(MsmqError, ValueError):
    winerror_default = MQ_ERROR_ILLEGAL_QUEUE_PATHNAME


class IllegalFormatName(MsmqError, ValueError):
    winerror_default = MQ_ERROR_ILLEGAL_FORMATNAME


class IllegalPropertyValue(MsmqError, ValueError):
    winerror_default = MQ_ERROR_ILLEGAL_PROPERTY_VALUE


class TransactionUsage(MsmqError, ValueError):
    winerror_default = MQ_ERROR_TRANSACTION_USAGE


class TransactionSequence(MsmqError, ValueError):
    winerror_default = MQ_ERROR_TRANSACTION_SEQUENCE


class IllegalCursorAction(MsmqError, ValueError):
    winerror_default = MQ_ERROR_ILLEGAL_CURSOR_ACTION


class MessageNotFound(MsmqError, LookupError):
    winerror_default = MQ_ERROR_MESSAGE_NOT_FOUND


class MessageAlreadyReceived(MsmqError, LookupError):
    winerror_default = MQ_ERROR_MESSAGE_ALREADY_RECEIVED


class InsufficientResources(MsmqError):
    winerror_default = MQ_ERROR_INSUFFICIENT_RESOURCES


class MessageStorageFailed(MsmqError):
    winerror_default = MQ_ERROR_MESSAGE_STORAGE_FAILED


class QueueNotAvailable(MsmqError, ConnectionError):
    winerror_default = MQ_ERROR_QUEUE_NOT_AVAILABLE


class RpcError(WinIPCError):
    """An RPC call or binding failed; ``winerror`` is the RPC status (``RPC_S_*``, ``RPC_X_*``)."""

    winerror_default = RPC_S_CALL_FAILED


class InvalidStringBinding(RpcError, ValueError):
    winerror_default = RPC_S_INVALID_STRING_BINDING


class ProtseqNotSupported(RpcError, NotImplementedError):
    winerror_default = RPC_S_PROTSEQ_NOT_SUPPORTED


class InvalidEndpointFormat(RpcError, ValueError):
    winerror_default = RPC_S_INVALID_ENDPOINT_FORMAT


class UnknownInterface(RpcError, LookupError):
    winerror_default = RPC_S_UNKNOWN_IF


class ServerUnavailable(RpcError, ConnectionError):
    winerror_default = RPC_S_SERVER_UNAVAILABLE


class ServerTooBusy(RpcError, ConnectionError):
    winerror_default = RPC_S_SERVER_TOO_BUSY


class CallFailed(RpcError, ConnectionError):
    """The connection broke during a call: the call may or may not have run."""

    winerror_default = RPC_S_CALL_FAILED


class CallFailedDne(CallFailed):
    """The call failed before the server ran it (did not execute)."""

    winerror_default = RPC_S_CALL_FAILED_DNE


class ProtocolError(RpcError, ValueError):
    winerror_default = RPC_S_PROTOCOL_ERROR


class ProcnumOutOfRange(RpcError, LookupError):
    winerror_default = RPC_S_PROCNUM_OUT_OF_RANGE


class EndpointNotRegistered(RpcError, LookupError):
    winerror_default = EPT_S_NOT_REGISTERED


class BadStubData(RpcError, TypeError, ValueError):
    """Arguments or a result that do not fit the interface's annotations (names the parameter)."""

    winerror_default = RPC_X_BAD_STUB_DATA


class CallCancelled(RpcError, InterruptedError):
    winerror_default = RPC_S_CALL_CANCELLED


class CallTimeout(CallCancelled, TimeoutError):
    """The call was cancelled because its timeout (seconds) passed."""


class UnsupportedAuthnLevel(RpcError, PermissionError):
    winerror_default = RPC_S_UNSUPPORTED_AUTHN_LEVEL


class SecurityPackageError(RpcError, PermissionError):
    winerror_default = RPC_S_SEC_PKG_ERROR


class ContextMismatch(RpcError, ValueError):
    """A context handle the server does not know (closed, run down, or another connection's)."""

    winerror_default = RPC_X_SS_CONTEXT_MISMATCH


class ServerFault(RpcError):
    """The server method raised an exception that is not a winipc error.

    ``remote_type`` is its class name (``"ZeroDivisionError"``), ``winerror`` the status
    the server sent (RPC_S_CALL_FAILED unless the exception carried one).
    """

    remote_type: str = ""


_BY_CODE: dict[int, type[WinIPCError]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, WinIPCError) and _cls.winerror_default:
        _BY_CODE.setdefault(_cls.winerror_default, _cls)
_BY_CODE[ERROR_NO_DATA] = PipeClosing
_BY_CODE[MQ_ERROR_LABEL_TOO_LONG] = IllegalPropertyValue
_BY_CODE[ERROR_INVALID_HANDLE] = InvalidHandle
_BY_CODE[RPC_S_CALL_FAILED] = CallFailed
_BY_CODE[RPC_S_CALL_CANCELLED] = CallCancelled
_BY_CODE[ERROR_CANNOT_FIND_WND_CLASS] = ClassDoesNotExist


def from_winerror(code: int, message: str | None = None, funcname: str | None = None) -> WinIPCError:
    """Build the error class that stands for a Win32 code (``WinIPCError`` if none does)."""
    cls = _BY_CODE.get(code, WinIPCError)
    if cls is MoreData:
        return MoreData(b"", message, winerror=code, funcname=funcname)
    return cls(message, winerror=code, funcname=funcname)


__all__ = [name for name in list(globals()) if not name.startswith("_")]
