"""pywin32's ``win32event`` over :mod:`winipc.sync` (``win32event`` after install()).

Events, mutexes, semaphores and waitable timers, named (shared between processes, in
``Local\\`` unless named ``Global\\``) or unnamed, and the waits on them. Creating an
object whose name exists opens it and makes ``win32api.GetLastError()`` return
ERROR_ALREADY_EXISTS (183); a successful create of a new object sets it to 0.

The wait functions also wait on process handles (``win32api.OpenProcess``: signaled when
the process ends) and pipe handles (client ends and anonymous pipes: signaled while
there is something to read or the other end closed). Time-outs are milliseconds;
INFINITE (-1 or 0xFFFFFFFF) waits forever.

There are no window message queues yet: MsgWaitForMultipleObjects(Ex) waits on the
handles only and never returns ``WAIT_OBJECT_0 + len(handles)`` (input in the queue).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Sequence
from typing import Any

from winipc import errors as W
from winipc.sync import Event, Mutex, Semaphore, SyncObject, WaitableTimer
from winipc.win32._events import KINDS, sync_object, wait, waitable
from winipc.win32._handles import PyHANDLE, handle_value, lookup, register
from winipc.win32._support import (
    api,
    api_error,
    dword,
    error,
    ms_to_seconds,
    set_last_error,
)
from winipc.win32.pywintypes import security_of
from winipc.win32.win32con import (
    CREATE_EVENT_INITIAL_SET,
    CREATE_EVENT_MANUAL_RESET,
    CREATE_MUTEX_INITIAL_OWNER,
    CREATE_WAITABLE_TIMER_HIGH_RESOLUTION,
    CREATE_WAITABLE_TIMER_MANUAL_RESET,
    EVENT_ALL_ACCESS,
    EVENT_MODIFY_STATE,
    INFINITE,
    MAXIMUM_WAIT_OBJECTS,
    MUTEX_ALL_ACCESS,
    MUTEX_MODIFY_STATE,
    MWMO_ALERTABLE,
    MWMO_INPUTAVAILABLE,
    MWMO_WAITALL,
    QS_ALLEVENTS,
    QS_ALLINPUT,
    QS_ALLPOSTMESSAGE,
    QS_HOTKEY,
    QS_INPUT,
    QS_KEY,
    QS_MOUSE,
    QS_MOUSEBUTTON,
    QS_MOUSEMOVE,
    QS_PAINT,
    QS_POSTMESSAGE,
    QS_RAWINPUT,
    QS_SENDMESSAGE,
    QS_TIMER,
    SEMAPHORE_ALL_ACCESS,
    SEMAPHORE_MODIFY_STATE,
    SYNCHRONIZE,
    TIMER_ALL_ACCESS,
    TIMER_MODIFY_STATE,
    TIMER_QUERY_STATE,
    WAIT_ABANDONED,
    WAIT_ABANDONED_0,
    WAIT_FAILED,
    WAIT_IO_COMPLETION,
    WAIT_OBJECT_0,
    WAIT_TIMEOUT,
)

UNICODE = 1

#: 100-ns intervals between 1601-01-01 (FILETIME's epoch) and 1970-01-01
_EPOCH_DIFF = 116_444_736_000_000_000
_UTC = _dt.timezone.utc


def _name(name: Any, what: str) -> str | None:
    """An object name; None or "" makes an unnamed object, as on Windows."""
    if name is None or isinstance(name, str):
        return name or None
    raise TypeError(f"{what} must be a str or None, not {type(name).__name__}")


def _created(obj: SyncObject) -> PyHANDLE:
    """Register a new or opened object; GetLastError() becomes 183 or 0, as on Windows."""
    handle = register(obj, KINDS[type(obj)])
    set_last_error(W.ERROR_ALREADY_EXISTS if obj.already_exists else W.ERROR_SUCCESS)
    return handle


def _open(cls: type[SyncObject], access: Any, name: Any) -> PyHANDLE:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    obj = cls.open(name, dword(access, "desiredAccess"))
    return register(obj, KINDS[cls])


# ---------------------------------------------------------------------------- events
@api("CreateEvent")
def CreateEvent(
    EventAttributes: Any, bManualReset: Any, bInitialState: Any, Name: Any
) -> PyHANDLE:
    """Create an event, or open the one of that name (Win32: CreateEvent).

    Args:
        EventAttributes: None or a SECURITY_ATTRIBUTES (``winipc_security`` says who may
            open a named event; owner only by default).
        bManualReset: stays signaled until ResetEvent; else a satisfied wait resets it.
        bInitialState: starts signaled (ignored when the event exists).
        Name: ``Local\\x``, ``Global\\x``, a plain name, or None for an unnamed event.

    Returns:
        The handle; ``win32api.GetLastError()`` is 183 when the name existed, else 0.

    Raises:
        pywintypes.error: 6 another kind of object has the name; 5 its security
            refuses us; 123 a bad name.
    """
    security, _inherit = security_of(EventAttributes)
    event = Event(
        _name(Name, "Name"),
        manual_reset=bool(bManualReset),
        initial_state=bool(bInitialState),
        security=security,
    )
    return _created(event)


@api("OpenEvent")
def OpenEvent(desiredAccess: Any, bInheritHandle: Any, name: Any) -> PyHANDLE:
    """Open an existing named event (Win32: OpenEvent).

    Args:
        desiredAccess: EVENT_ALL_ACCESS, or SYNCHRONIZE | EVENT_MODIFY_STATE, ...: what the
            handle may do (a wait needs SYNCHRONIZE, SetEvent EVENT_MODIFY_STATE).
        bInheritHandle: accepted; children get objects by name or ``winipc.spawn``.
        name: the event's name.

    Raises:
        pywintypes.error: 2 no object has the name; 6 it is not an event; 5 refused.
    """
    return _open(Event, desiredAccess, name)


@api("SetEvent")
def SetEvent(hEvent: Any) -> None:
    """Signal an event (Win32: SetEvent). Raises 6 for a handle that is not an event."""
    sync_object(hEvent, Event, "SetEvent").set()


@api("ResetEvent")
def ResetEvent(hEvent: Any) -> None:
    """Make an event non-signaled (Win32: ResetEvent)."""
    sync_object(hEvent, Event, "ResetEvent").reset()


@api("PulseEvent")
def PulseEvent(hEvent: Any) -> None:
    """Release the threads waiting now (all, or one for auto-reset), then reset (PulseEvent)."""
    sync_object(hEvent, Event, "PulseEvent").pulse()


# ---------------------------------------------------------------------------- mutexes
@api("CreateMutex")
def CreateMutex(MutexAttributes: Any, InitialOwner: Any, Name: Any) -> PyHANDLE:
    """Create a mutex, or open the one of that name (Win32: CreateMutex).

    Args:
        MutexAttributes: None or a SECURITY_ATTRIBUTES.
        InitialOwner: the calling thread owns the new mutex (ignored when it exists).
        Name: the name, or None for an unnamed mutex.

    Returns:
        The handle; ``win32api.GetLastError()`` is 183 when the name existed, else 0.
    """
    security, _inherit = security_of(MutexAttributes)
    mutex = Mutex(_name(Name, "Name"), initial_owner=bool(InitialOwner), security=security)
    return _created(mutex)


@api("OpenMutex")
def OpenMutex(desiredAccess: Any, bInheritHandle: Any, name: Any) -> PyHANDLE:
    """Open an existing named mutex (Win32: OpenMutex); see :func:`OpenEvent`."""
    return _open(Mutex, desiredAccess, name)


@api("ReleaseMutex")
def ReleaseMutex(hMutex: Any) -> None:
    """Give back one level of ownership (Win32: ReleaseMutex).

    Raises:
        pywintypes.error: 288 (ERROR_NOT_OWNER) the calling thread does not own it.
    """
    sync_object(hMutex, Mutex, "ReleaseMutex").release()


# ---------------------------------------------------------------------------- semaphores
@api("CreateSemaphore")
def CreateSemaphore(
    SemaphoreAttributes: Any, InitialCount: Any, MaximumCount: Any, SemaphoreName: Any
) -> PyHANDLE:
    """Create a semaphore, or open the one of that name (Win32: CreateSemaphore).

    Raises:
        pywintypes.error: 87 a maximum < 1 or an initial count outside 0..maximum.
    """
    security, _inherit = security_of(SemaphoreAttributes)
    initial, maximum = _long(InitialCount, "InitialCount"), _long(MaximumCount, "MaximumCount")
    sem = Semaphore(_name(SemaphoreName, "SemaphoreName"), initial, maximum, security=security)
    return _created(sem)


@api("OpenSemaphore")
def OpenSemaphore(desiredAccess: Any, bInheritHandle: Any, name: Any) -> PyHANDLE:
    """Open an existing named semaphore (Win32: OpenSemaphore); see :func:`OpenEvent`."""
    return _open(Semaphore, desiredAccess, name)


@api("ReleaseSemaphore")
def ReleaseSemaphore(hSemaphore: Any, lReleaseCount: Any) -> int:
    """Add ``lReleaseCount`` to the count (Win32: ReleaseSemaphore).

    Returns:
        The count before the release.

    Raises:
        pywintypes.error: 298 (ERROR_TOO_MANY_POSTS) past the maximum (the count is
            unchanged); 87 a count < 1.
    """
    sem = sync_object(hSemaphore, Semaphore, "ReleaseSemaphore")
    count = _long(lReleaseCount, "lReleaseCount")
    if count < 1:
        raise api_error(W.ERROR_INVALID_PARAMETER, "ReleaseSemaphore", "count must be >= 1")
    return int(sem.release(count))


def _long(value: Any, what: str) -> int:
    """A LONG argument (pywin32 raises TypeError / OverflowError as here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if not hasattr(value, "__index__"):
            raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
        value = value.__index__()
    if not -0x8000_0000 <= value <= 0x7FFF_FFFF:
        raise OverflowError(f"{what}={value!r} does not fit a LONG")
    return int(value)


# ---------------------------------------------------------------------------- timers
@api("CreateWaitableTimer")
def CreateWaitableTimer(TimerAttributes: Any, ManualReset: Any, TimerName: Any) -> PyHANDLE:
    """Create a waitable timer, or open the one of that name (Win32: CreateWaitableTimer).

    Args:
        TimerAttributes: None or a SECURITY_ATTRIBUTES.
        ManualReset: a notification timer (stays signaled until set again) rather than
            a synchronization timer (a satisfied wait resets it).
        TimerName: the name, or None.
    """
    security, _inherit = security_of(TimerAttributes)
    timer = WaitableTimer(_name(TimerName, "TimerName"), manual_reset=bool(ManualReset), security=security)
    return _created(timer)


@api("CreateWaitableTimerEx")
def CreateWaitableTimerEx(
    TimerAttributes: Any, TimerName: Any, Flags: Any, DesiredAccess: Any
) -> PyHANDLE:
    """Create or open a waitable timer with flags and an access mask (CreateWaitableTimerEx).

    Args:
        Flags: CREATE_WAITABLE_TIMER_MANUAL_RESET, CREATE_WAITABLE_TIMER_HIGH_RESOLUTION
            (every timer here has the resolution of the OS's poll, about 1 ms).
        DesiredAccess: the rights of the returned handle (TIMER_ALL_ACCESS, ...).

    Raises:
        pywintypes.error: 87 unknown flags.
    """
    flags = dword(Flags, "Flags")
    access = dword(DesiredAccess, "DesiredAccess")
    known = CREATE_WAITABLE_TIMER_MANUAL_RESET | CREATE_WAITABLE_TIMER_HIGH_RESOLUTION
    if flags & ~known:
        raise api_error(W.ERROR_INVALID_PARAMETER, "CreateWaitableTimerEx", "unknown flags")
    security, _inherit = security_of(TimerAttributes)
    timer = WaitableTimer(
        _name(TimerName, "TimerName"),
        manual_reset=bool(flags & CREATE_WAITABLE_TIMER_MANUAL_RESET),
        security=security,
    )
    timer.access = access
    return _created(timer)


@api("OpenWaitableTimer")
def OpenWaitableTimer(desiredAccess: Any, bInheritHandle: Any, timerName: Any) -> PyHANDLE:
    """Open an existing named waitable timer (Win32: OpenWaitableTimer)."""
    return _open(WaitableTimer, desiredAccess, timerName)


def _due(dueTime: Any) -> float | _dt.datetime:
    """dueTime in 100-ns units (negative: relative; else an absolute UTC FILETIME) or a datetime."""
    if isinstance(dueTime, _dt.datetime):
        return dueTime
    if isinstance(dueTime, bool) or not isinstance(dueTime, int):
        raise TypeError(f"dueTime must be an int (100-ns units) or a datetime, not {type(dueTime).__name__}")
    if not -(1 << 63) <= dueTime < (1 << 63):
        raise OverflowError(f"dueTime={dueTime!r} does not fit a LARGE_INTEGER")
    if dueTime < 0:
        return -dueTime / 1e7
    unix_us = (dueTime - _EPOCH_DIFF) // 10
    try:
        return _dt.datetime(1970, 1, 1, tzinfo=_UTC) + _dt.timedelta(microseconds=unix_us)
    except OverflowError:
        if unix_us < 0:
            return 0.0  # before year 1: long past, the timer signals now
        raise


@api("SetWaitableTimer")
def SetWaitableTimer(
    handle: Any, dueTime: Any, period: Any, func: Any, param: Any, resume_state: Any
) -> None:
    """Arm a waitable timer (Win32: SetWaitableTimer).

    Args:
        handle: the timer.
        dueTime: in 100-ns units: negative is relative to now (``-10_000_000`` = in one
            second); zero or positive is an absolute time, a UTC FILETIME (100 ns since
            1601-01-01). A ``datetime`` (pywin32's PyTime) is an absolute time too.
        period: milliseconds between signals after the first; 0 signals once.
        func, param: a completion routine and its argument: must be None.
        resume_state: accepted (there is no power management to wake from).

    Raises:
        TypeError: ``func`` or ``param`` is not None (as pywin32).
        pywintypes.error: 87 a negative period; 6 not a timer handle.
    """
    if func is not None or param is not None:
        raise TypeError("This param must be None")
    timer = sync_object(handle, WaitableTimer, "SetWaitableTimer")
    ms = _long(period, "period")
    if ms < 0:
        raise api_error(W.ERROR_INVALID_PARAMETER, "SetWaitableTimer", "period must be >= 0")
    timer.set(_due(dueTime), ms / 1000.0)


@api("CancelWaitableTimer")
def CancelWaitableTimer(handle: Any) -> None:
    """Disarm a timer; its signaled state stays as it is (Win32: CancelWaitableTimer)."""
    sync_object(handle, WaitableTimer, "CancelWaitableTimer").cancel()


# ---------------------------------------------------------------------------- waits
def _handles(handleList: Any, funcname: str, limit: int) -> list[Any]:
    if isinstance(handleList, (str, bytes)) or not isinstance(handleList, Sequence):
        try:
            handleList = list(handleList)
        except TypeError:
            raise TypeError("Handles must be a list of integers") from None
    handles = list(handleList)
    if len(handles) > limit:
        raise api_error(W.ERROR_INVALID_PARAMETER, funcname, f"at most {limit} handles")
    return handles


def _wait_on(
    handles: list[Any], all_: bool, milliseconds: Any, funcname: str, in_list: bool = True
) -> int:
    timeout = ms_to_seconds(milliseconds, "milliseconds")
    if not handles:
        raise api_error(W.ERROR_INVALID_PARAMETER, funcname, "no handles")
    objs = [waitable(h, funcname, in_list) for h in handles]
    if all_ and len({handle_value(h) for h in handles}) != len(handles):
        raise api_error(W.ERROR_INVALID_PARAMETER, funcname, "the same handle twice")
    if all_ and len({id(o) for o in objs}) != len(objs):
        raise api_error(W.ERROR_INVALID_PARAMETER, funcname, "the same object twice")
    return wait(objs, all_, timeout)


@api("WaitForSingleObject")
def WaitForSingleObject(hHandle: Any, milliseconds: Any) -> int:
    """Wait for one object (Win32: WaitForSingleObject).

    A satisfied wait takes what it waits for: a mutex's ownership, one semaphore count,
    an auto-reset event's or synchronization timer's signal.

    Returns:
        WAIT_OBJECT_0 (0); WAIT_ABANDONED (0x80): a mutex whose owner ended without
        releasing it, now owned by this thread; WAIT_TIMEOUT (258) once ``milliseconds``
        have passed (never earlier; 0 only looks).

    Raises:
        pywintypes.error: 6 a closed handle or one that cannot be waited on; 5 a handle
            opened without SYNCHRONIZE.
    """
    return _wait_on([hHandle], False, milliseconds, "WaitForSingleObject", in_list=False)


@api("WaitForSingleObjectEx")
def WaitForSingleObjectEx(hHandle: Any, milliseconds: Any, bAlertable: Any) -> int:
    """WaitForSingleObject; ``bAlertable`` is accepted (no APCs exist, so never 0xC0)."""
    return _wait_on([hHandle], False, milliseconds, "WaitForSingleObjectEx", in_list=False)


@api("WaitForMultipleObjects")
def WaitForMultipleObjects(handleList: Any, bWaitAll: Any, milliseconds: Any) -> int:
    """Wait for one or all of up to 64 objects (Win32: WaitForMultipleObjects).

    Returns:
        Wait-any: WAIT_OBJECT_0 + the smallest signaled index (only that object is
        taken). Wait-all: WAIT_OBJECT_0 once every object is signaled, all taken at
        once (nothing is taken before). WAIT_ABANDONED_0 + index when that object is a
        mutex whose owner died (it is owned now). WAIT_TIMEOUT (258).

    Raises:
        pywintypes.error: 87 no handles, more than 64, or a handle twice in wait-all;
            6 a closed handle or one that cannot be waited on.
    """
    handles = _handles(handleList, "WaitForMultipleObjects", MAXIMUM_WAIT_OBJECTS)
    return _wait_on(handles, bool(bWaitAll), milliseconds, "WaitForMultipleObjects")


@api("WaitForMultipleObjectsEx")
def WaitForMultipleObjectsEx(
    handleList: Any, bWaitAll: Any, milliseconds: Any, bAlertable: Any
) -> int:
    """WaitForMultipleObjects; ``bAlertable`` is accepted (no APCs, so never 0xC0)."""
    handles = _handles(handleList, "WaitForMultipleObjectsEx", MAXIMUM_WAIT_OBJECTS)
    return _wait_on(handles, bool(bWaitAll), milliseconds, "WaitForMultipleObjectsEx")


def _msg_wait(handleList: Any, all_: bool, milliseconds: Any, funcname: str) -> int:
    handles = _handles(handleList, funcname, MAXIMUM_WAIT_OBJECTS - 1)
    timeout = ms_to_seconds(milliseconds, "milliseconds")
    objs = [waitable(h, funcname, True) for h in handles]
    if all_ and len({handle_value(h) for h in handles}) != len(handles):
        raise api_error(W.ERROR_INVALID_PARAMETER, funcname, "the same handle twice")
    if all_ or not objs:
        # Wait-all also needs input in the queue, and there is no queue yet: the wait
        # can only time out. Nothing is taken meanwhile, as Windows takes nothing.
        if timeout is None:
            while True:
                time.sleep(3600.0)
        time.sleep(timeout)
        return WAIT_TIMEOUT
    return wait(objs, False, timeout)


@api("MsgWaitForMultipleObjects")
def MsgWaitForMultipleObjects(
    handleList: Any, bWaitAll: Any, milliseconds: Any, wakeMask: Any
) -> int:
    """Wait for objects or window messages (Win32: MsgWaitForMultipleObjects).

    At most 63 handles. Returns as WaitForMultipleObjects does; ``WAIT_OBJECT_0 +
    len(handles)`` would mean input in the message queue, which never happens yet (no
    window message queues exist until the messages issue). So with ``bWaitAll`` true
    (all objects *and* input) or no handles, the call can only time out, as Windows'
    would with an empty queue.
    """
    dword(wakeMask, "wakeMask")
    return _msg_wait(handleList, bool(bWaitAll), milliseconds, "MsgWaitForMultipleObjects")


@api("MsgWaitForMultipleObjectsEx")
def MsgWaitForMultipleObjectsEx(
    handleList: Any, milliseconds: Any, wakeMask: Any, waitFlags: Any
) -> int:
    """MsgWaitForMultipleObjects with flags: MWMO_WAITALL is ``bWaitAll``; MWMO_ALERTABLE
    and MWMO_INPUTAVAILABLE are accepted (no APCs, no queue yet)."""
    dword(wakeMask, "wakeMask")
    flags = dword(waitFlags, "waitFlags")
    return _msg_wait(
        handleList, bool(flags & MWMO_WAITALL), milliseconds, "MsgWaitForMultipleObjectsEx"
    )


@api("SignalObjectAndWait")
def SignalObjectAndWait(
    hObjectToSignal: Any, hObjectToWaitOn: Any, milliseconds: Any, bAlertable: Any
) -> int:
    """Signal one object, then wait for another (Win32: SignalObjectAndWait).

    The object to signal is an event (SetEvent), a semaphore (ReleaseSemaphore by 1) or
    a mutex (ReleaseMutex). Returns the wait's code, like WaitForSingleObject (pywin32
    declares the call as returning a BOOL and raises on WAIT_OBJECT_0; here the code is
    returned). Signal and wait are two steps here, not one atomic operation.

    Raises:
        pywintypes.error: 6 the first handle is not an event, semaphore or mutex; 288 /
            298 as ReleaseMutex / ReleaseSemaphore.
    """
    funcname = "SignalObjectAndWait"
    target = waitable(hObjectToWaitOn, funcname)
    obj = lookup(hObjectToSignal, funcname).obj
    if isinstance(obj, Event):
        obj.set()
    elif isinstance(obj, Semaphore):
        obj.release(1)
    elif isinstance(obj, Mutex):
        obj.release()
    else:
        raise api_error(W.ERROR_INVALID_HANDLE, funcname, "not an event, semaphore or mutex")
    return wait([target], False, ms_to_seconds(milliseconds, "milliseconds"))


__all__ = [
    "CREATE_EVENT_INITIAL_SET",
    "CREATE_EVENT_MANUAL_RESET",
    "CREATE_MUTEX_INITIAL_OWNER",
    "CREATE_WAITABLE_TIMER_HIGH_RESOLUTION",
    "CREATE_WAITABLE_TIMER_MANUAL_RESET",
    "EVENT_ALL_ACCESS",
    "EVENT_MODIFY_STATE",
    "INFINITE",
    "MAXIMUM_WAIT_OBJECTS",
    "MUTEX_ALL_ACCESS",
    "MUTEX_MODIFY_STATE",
    "MWMO_ALERTABLE",
    "MWMO_INPUTAVAILABLE",
    "MWMO_WAITALL",
    "QS_ALLEVENTS",
    "QS_ALLINPUT",
    "QS_ALLPOSTMESSAGE",
    "QS_HOTKEY",
    "QS_INPUT",
    "QS_KEY",
    "QS_MOUSE",
    "QS_MOUSEBUTTON",
    "QS_MOUSEMOVE",
    "QS_PAINT",
    "QS_POSTMESSAGE",
    "QS_RAWINPUT",
    "QS_SENDMESSAGE",
    "QS_TIMER",
    "SEMAPHORE_ALL_ACCESS",
    "SEMAPHORE_MODIFY_STATE",
    "SYNCHRONIZE",
    "TIMER_ALL_ACCESS",
    "TIMER_MODIFY_STATE",
    "TIMER_QUERY_STATE",
    "UNICODE",
    "WAIT_ABANDONED",
    "WAIT_ABANDONED_0",
    "WAIT_FAILED",
    "WAIT_IO_COMPLETION",
    "WAIT_OBJECT_0",
    "WAIT_TIMEOUT",
    "CancelWaitableTimer",
    "CreateEvent",
    "CreateMutex",
    "CreateSemaphore",
    "CreateWaitableTimer",
    "CreateWaitableTimerEx",
    "MsgWaitForMultipleObjects",
    "MsgWaitForMultipleObjectsEx",
    "OpenEvent",
    "OpenMutex",
    "OpenSemaphore",
    "OpenWaitableTimer",
    "PulseEvent",
    "ReleaseMutex",
    "ReleaseSemaphore",
    "ResetEvent",
    "SetEvent",
    "SetWaitableTimer",
    "SignalObjectAndWait",
    "WaitForMultipleObjects",
    "WaitForMultipleObjectsEx",
    "WaitForSingleObject",
    "WaitForSingleObjectEx",
    "error",
]
