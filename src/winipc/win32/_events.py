"""Kernel objects behind the pywin32 face's handles, and the waits on them.

Events, mutexes, semaphores and waitable timers are :mod:`winipc.sync` objects, named
(shared between processes) or unnamed; a handle-table entry holds the object. Waits go
through :func:`winipc.sync.wait_any` / :func:`~winipc.sync.wait_all`, which also take
process handles (signaled when the process ends) and pipe handles (signaled while there
is something to read, or the other end closed). :func:`wait` turns their outcome into
Win32's WAIT_* codes.

``OVERLAPPED.hEvent`` is a handle to such an event: :func:`event_of` finds it, the
operation resets it when it starts and sets it when it completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from winipc import errors as W
from winipc.pipes import PipeConnection, PipeEnd
from winipc.sync import (
    Event,
    Mutex,
    ProcessHandle,
    Semaphore,
    SyncObject,
    WaitableTimer,
    wait_all,
    wait_any,
)
from winipc.win32._handles import handle_value, lookup
from winipc.win32._support import api_error, error

#: the name a handle to an event has kept for OVERLAPPED.hEvent (now a winipc.sync.Event)
EventObject = Event

#: handle-table kind of each synchronization object type
KINDS: dict[type[SyncObject], str] = {
    Event: "event",
    Mutex: "mutex",
    Semaphore: "semaphore",
    WaitableTimer: "timer",
}

WAIT_OBJECT_0 = 0
WAIT_ABANDONED_0 = 0x80
WAIT_TIMEOUT = 0x102


def event_of(h: Any) -> Event | None:
    """The event behind an ``OVERLAPPED.hEvent`` value; None for 0, a closed or other handle."""
    value = handle_value(h)
    if not value:
        return None
    try:
        obj = lookup(value, "SetEvent").obj
    except error:
        return None
    return obj if isinstance(obj, Event) else None


def sync_object(h: Any, cls: type[SyncObject], funcname: str) -> Any:
    """The ``cls`` object behind handle ``h``.

    Raises:
        pywintypes.error: (6 ERROR_INVALID_HANDLE) closed, or a handle to something else
            (Windows: SetEvent on a mutex handle fails with 6).
    """
    obj = lookup(h, funcname).obj
    if not isinstance(obj, cls):
        raise api_error(
            W.ERROR_INVALID_HANDLE, funcname, f"not a handle to a {cls.type_name}"
        )
    return obj


def waitable(h: Any, funcname: str, in_list: bool = False) -> Any:
    """What a wait on handle ``h`` waits on.

    Raises:
        TypeError: ``h`` is neither a PyHANDLE nor an int (pywin32's message, which
            differs for an item of a handle list).
        pywintypes.error: (6 ERROR_INVALID_HANDLE) closed, or a handle that cannot be
            waited on (a pipe server instance, which Windows signals on I/O completion).
    """
    try:
        entry = lookup(h, funcname)
    except TypeError:
        if not in_list:
            raise
        raise TypeError("Handles must be a list of integers") from None
    obj = entry.obj
    if isinstance(obj, (SyncObject, ProcessHandle, PipeEnd)):
        return obj
    if isinstance(obj, PipeConnection) and entry.kind == "pipe-client":
        return obj
    raise api_error(
        W.ERROR_INVALID_HANDLE,
        funcname,
        f"a {entry.kind} handle cannot be waited on here",
    )


def wait(objs: Sequence[Any], all_: bool, timeout: float | None) -> int:
    """Wait for one (wait-any) or all of ``objs``; return the Win32 wait code.

    Returns:
        WAIT_OBJECT_0 + index (wait-any: the smallest signaled index; wait-all: 0),
        WAIT_ABANDONED_0 + index of a mutex whose owner died (now owned by this
        thread), or WAIT_TIMEOUT.
    """
    try:
        if all_:
            return WAIT_OBJECT_0 if wait_all(objs, timeout) else WAIT_TIMEOUT
        index = wait_any(objs, timeout)
    except W.AbandonedMutex as exc:
        return WAIT_ABANDONED_0 + exc.index
    return WAIT_TIMEOUT if index is None else WAIT_OBJECT_0 + index


__all__ = ["KINDS", "EventObject", "event_of", "sync_object", "wait", "waitable"]
