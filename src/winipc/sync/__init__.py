"""Synchronization objects with Windows semantics: events, mutexes, semaphores, timers.

Named objects live in the kernel-object namespace (``Local\\\\x`` by default,
``Global\\\\x`` machine-wide) and work across processes; unnamed ones can be inherited
(:func:`winipc.spawn`) or duplicated over a pipe. Creating an existing name opens it
(``obj.already_exists``); another type at the name is ERROR_INVALID_HANDLE.

::

    done = Event(r"Local\\job-done", manual_reset=True)
    done.wait(5.0)                              # WaitForSingleObject
    i = wait_any([done, pipe, process], 1.0)    # WaitForMultipleObjects
    with Mutex("Local\\shared-file"):
        ...

See docs/sync.md.
"""

from winipc.sync._base import (
    EVENT_ALL_ACCESS,
    EVENT_MODIFY_STATE,
    MUTEX_ALL_ACCESS,
    MUTEX_MODIFY_STATE,
    SEMAPHORE_ALL_ACCESS,
    SEMAPHORE_MODIFY_STATE,
    SYNCHRONIZE,
    TIMER_ALL_ACCESS,
    TIMER_MODIFY_STATE,
    TIMER_QUERY_STATE,
    SyncObject,
)
from winipc.sync._objects import Event, Mutex, Semaphore, WaitableTimer
from winipc.sync._process import ProcessHandle, open_process
from winipc.sync._wait import (
    MAXIMUM_WAIT_OBJECTS,
    wait_all,
    wait_all_async,
    wait_any,
    wait_any_async,
)

#: OpenEvent / OpenMutex / OpenSemaphore / OpenWaitableTimer: ``open_event(name, access)``
open_event = Event.open
open_mutex = Mutex.open
open_semaphore = Semaphore.open
open_waitable_timer = WaitableTimer.open

__all__ = [
    "EVENT_ALL_ACCESS",
    "EVENT_MODIFY_STATE",
    "MAXIMUM_WAIT_OBJECTS",
    "MUTEX_ALL_ACCESS",
    "MUTEX_MODIFY_STATE",
    "SEMAPHORE_ALL_ACCESS",
    "SEMAPHORE_MODIFY_STATE",
    "SYNCHRONIZE",
    "TIMER_ALL_ACCESS",
    "TIMER_MODIFY_STATE",
    "TIMER_QUERY_STATE",
    "Event",
    "Mutex",
    "ProcessHandle",
    "Semaphore",
    "SyncObject",
    "WaitableTimer",
    "open_event",
    "open_mutex",
    "open_process",
    "open_semaphore",
    "open_waitable_timer",
    "wait_all",
    "wait_all_async",
    "wait_any",
    "wait_any_async",
]
