"""The one place where OS errors become winipc errors.

Every backend call that can fail catches ``OSError`` and raises ``translate(exc, op, what)``.
The Win32 code an errno stands for depends on the operation (``EAGAIN`` on a connect is
``ERROR_PIPE_BUSY``; on a read it is ``ERROR_NO_DATA``), so the table is keyed by both.
"""

from __future__ import annotations

import errno as E

from winipc import errors as W

#: (operation, errno) -> Win32 code; operation None is the default for every operation.
_TABLE: dict[tuple[str | None, int], int] = {
    (None, E.ENOENT): W.ERROR_FILE_NOT_FOUND,
    (None, E.ENOTDIR): W.ERROR_FILE_NOT_FOUND,
    (None, E.EACCES): W.ERROR_ACCESS_DENIED,
    (None, E.EPERM): W.ERROR_ACCESS_DENIED,
    (None, E.EROFS): W.ERROR_ACCESS_DENIED,
    (None, E.EEXIST): W.ERROR_ALREADY_EXISTS,
    (None, E.EBADF): W.ERROR_INVALID_HANDLE,
    (None, E.EINVAL): W.ERROR_INVALID_PARAMETER,
    (None, E.ENAMETOOLONG): W.ERROR_INVALID_NAME,
    (None, E.EPIPE): W.ERROR_BROKEN_PIPE,
    (None, E.ECONNRESET): W.ERROR_BROKEN_PIPE,
    (None, E.ENOTCONN): W.ERROR_PIPE_NOT_CONNECTED,
    (None, E.ETIMEDOUT): W.ERROR_SEM_TIMEOUT,
    (None, E.EAGAIN): W.ERROR_NO_DATA,
    (None, E.EMSGSIZE): W.ERROR_INVALID_PARAMETER,
    (None, E.ECANCELED): W.ERROR_OPERATION_ABORTED,
    (None, E.EOPNOTSUPP): W.ERROR_NOT_SUPPORTED,
    # connecting to a pipe instance: nobody listening / queue full means busy
    ("connect", E.ECONNREFUSED): W.ERROR_PIPE_BUSY,
    ("connect", E.EAGAIN): W.ERROR_PIPE_BUSY,
    # writing: the reader went away -> "the pipe is being closed"
    ("write", E.EPIPE): W.ERROR_NO_DATA,
    ("write", E.ECONNRESET): W.ERROR_NO_DATA,
    ("write", E.EAGAIN): W.ERROR_NO_DATA,
    ("read", E.ECONNRESET): W.ERROR_BROKEN_PIPE,
    ("accept", E.EAGAIN): W.ERROR_PIPE_LISTENING,
    ("connect_remote", E.ECONNREFUSED): W.ERROR_BAD_NETPATH,
    ("connect_remote", E.EHOSTUNREACH): W.ERROR_BAD_NETPATH,
}


def winerror_for(exc: OSError, op: str | None = None) -> int:
    """The Win32 code for an OS error raised by operation ``op``."""
    if isinstance(exc, W.WinIPCError):
        return exc.winerror
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return W.ERROR_SEM_TIMEOUT
    code = exc.errno if exc.errno is not None else 0
    return _TABLE.get((op, code)) or _TABLE.get((None, code)) or W.ERROR_INVALID_PARAMETER


def translate(
    exc: OSError, op: str | None = None, what: str = "", funcname: str | None = None
) -> W.WinIPCError:
    """Turn ``exc`` (raised by ``op`` on ``what``) into the matching winipc error.

    A winipc error passes through unchanged.
    """
    if isinstance(exc, W.WinIPCError):
        return exc
    code = winerror_for(exc, op)
    detail = exc.strerror or str(exc) or type(exc).__name__
    text = f"{W.MESSAGES.get(code, W.error_name(code))} ({what + ': ' if what else ''}{detail})"
    err = W.from_winerror(code, text, funcname)
    err.errno = exc.errno
    err.__cause__ = exc
    return err
