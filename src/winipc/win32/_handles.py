"""The process's handle table: PyHANDLE values and the winipc objects behind them.

A Win32 handle is an opaque number; here each one is a key in this table, mapped to an
:class:`Entry` that holds the winipc object (a pipe instance, a client connection, an
anonymous pipe end, a synchronization object, a process), whether it was opened for
overlapped I/O, and the overlapped operations in flight on it. Numbers are multiples of 4 from 0x100, like
Windows', and are never file descriptors. Every function of the face accepts a
:class:`PyHANDLE` or a plain int, as pywin32 does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from winipc import errors as W
from winipc.pipes import PipeConnection
from winipc.win32._support import api_error, from_exception

_lock = threading.Lock()
_table: dict[int, Entry] = {}
_next_value = 0x100

#: how long closing or cancelling waits for operations that can be interrupted (seconds)
CANCEL_WAIT = 5.0


class Entry:
    """One open handle: the object, its kind, and its overlapped operations.

    Attributes:
        obj: the winipc object (``PipeInstance``, ``PipeConnection``, ``PipeEnd``, a
            ``winipc.sync`` ``Event`` / ``Mutex`` / ``Semaphore`` / ``WaitableTimer``,
            or a ``winipc.sync.ProcessHandle``).
        kind: ``"pipe-server"``, ``"pipe-client"``, ``"anon-read"``, ``"anon-write"``,
            ``"event"``, ``"mutex"``, ``"semaphore"``, ``"timer"`` or ``"process"``.
        overlapped: opened with FILE_FLAG_OVERLAPPED.
        pending: the operations in flight (``_overlapped.Operation``).
    """

    def __init__(self, value: int, obj: Any, kind: str, overlapped: bool) -> None:
        self.value = value
        self.obj = obj
        self.kind = kind
        self.overlapped = overlapped
        self.pending: set[Any] = set()
        self.lock = threading.Lock()
        self.closed = False

    def pending_ops(self) -> list[Any]:
        with self.lock:
            return [op for op in self.pending if not op.done.is_set()]

    def cancel_pending(self, abort_code: int = W.ERROR_OPERATION_ABORTED) -> None:
        """Make every operation in flight fail with ``abort_code`` (Win32: CancelIoEx).

        Reads, connects and transactions blocked on the pipe are interrupted through the
        connection's cancel pipe; the call waits (at most :data:`CANCEL_WAIT`) until they
        have ended, then drains stray cancel marks so the next operation is not aborted.
        A write blocked on a full pipe cannot be interrupted and stays pending.
        """
        ops = self.pending_ops()
        if not ops:
            return
        for op in ops:
            op.abort_code = abort_code
        conn = self.obj
        if not isinstance(conn, PipeConnection):
            return
        waiting = [op for op in ops if op.cancellable]
        deadline = time.monotonic() + CANCEL_WAIT
        while time.monotonic() < deadline:
            waiting = [op for op in waiting if not op.done.is_set()]
            if not waiting or conn.closed:
                break
            conn.cancel_io()
            waiting[0].done.wait(0.05)

    def close(self) -> None:
        """Cancel what is in flight, unblock blocked writes, close the object."""
        if self.closed:
            return
        self.closed = True
        obj = self.obj
        self.cancel_pending()
        if self.pending_ops() and isinstance(obj, PipeConnection) and not obj.closed:
            # wakes a sendall blocked on a full pipe; it then fails as aborted
            with contextlib.suppress(OSError):
                obj.socket.shutdown(socket.SHUT_RDWR)
        obj.close()


def register(obj: Any, kind: str, *, overlapped: bool = False) -> PyHANDLE:
    """Put ``obj`` in the table and return the owning PyHANDLE for it."""
    global _next_value
    with _lock:
        value = _next_value
        _next_value += 4
        _table[value] = Entry(value, obj, kind, overlapped)
    return PyHANDLE(value)


def handle_value(h: Any) -> int:
    """The number of a PyHANDLE or int (None is the null handle, 0).

    Raises:
        TypeError: neither a PyHANDLE nor an int (pywin32's message).
    """
    if h is None:
        return 0
    if isinstance(h, PyHANDLE):
        return h.handle
    if isinstance(h, int) and not isinstance(h, bool):
        return h
    raise TypeError(f"The object is not a PyHANDLE object (got {type(h).__name__})")


def lookup(h: Any, funcname: str) -> Entry:
    """The open entry of a handle.

    Raises:
        pywintypes.error: (6 ERROR_INVALID_HANDLE) closed, detached-and-closed, or never
            opened.
    """
    value = handle_value(h)
    with _lock:
        entry = _table.get(value)
    if entry is None or entry.closed:
        raise api_error(W.ERROR_INVALID_HANDLE, funcname)
    return entry


def close_value(value: int, funcname: str = "CloseHandle") -> None:
    """Close the handle numbered ``value`` (Win32: CloseHandle).

    Raises:
        pywintypes.error: (6) no open handle has that number.
    """
    with _lock:
        entry = _table.pop(value, None)
    if entry is None:
        raise api_error(W.ERROR_INVALID_HANDLE, funcname)
    try:
        entry.close()
    except OSError as exc:
        raise from_exception(exc, funcname) from exc


def open_count() -> int:
    """How many handles are open in this process (for tests and leak checks)."""
    with _lock:
        return len(_table)


class PyHANDLE:
    """pywin32's PyHANDLE: a handle that closes itself when dropped.

    ``int(h)`` and ``h.handle`` are the handle's number; after :meth:`Close` or
    :meth:`Detach` they are 0, and passing the object to a function fails with
    ERROR_INVALID_HANDLE (6), as in pywin32. ``pywintypes.HANDLE(n)`` makes another
    PyHANDLE for the number ``n`` which, as in pywin32, closes it when dropped.
    """

    __slots__ = ("__weakref__", "_value")

    def __init__(self, value: int = 0) -> None:
        self._value = handle_value(value)

    @property
    def handle(self) -> int:
        """The handle's number (0 once closed or detached)."""
        return self._value

    def Close(self) -> None:
        """Close the handle (Win32: CloseHandle); closing a closed PyHANDLE does nothing.

        Raises:
            pywintypes.error: (6) the number was already closed through another object.
        """
        value, self._value = self._value, 0
        if value:
            close_value(value)

    close = Close

    def Detach(self) -> int:
        """Give up ownership: return the number and leave the handle open.

        The handle then lives until ``win32api.CloseHandle(number)``.
        """
        value, self._value = self._value, 0
        return value

    def __int__(self) -> int:
        return self._value

    def __bool__(self) -> bool:
        return self._value != 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PyHANDLE):
            return self._value == other._value
        if isinstance(other, int) and not isinstance(other, bool):
            return self._value == other
        return NotImplemented

    def __hash__(self) -> int:
        return id(self) >> 4  # by identity, as pywin32 (the number changes on Close)

    def __str__(self) -> str:
        return f"<PyHANDLE:{self._value}>"

    __repr__ = __str__

    @property
    def object(self) -> Any:
        """winipc's extension: the winipc object behind the handle.

        Raises:
            pywintypes.error: (6) the handle is closed.
        """
        return lookup(self, "PyHANDLE.object").obj

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.Close()
