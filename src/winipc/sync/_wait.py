"""wait_any / wait_all (Win32: WaitForMultipleObjects), blocking and asyncio.

A wait checks every object under its state lock and, when nothing is to be had,
registers its doorbell token in each of them in the same critical section (so no change
can slip between the check and the registration), then sleeps in ``poll`` on the
doorbell, the readiness descriptors of fd-waitables (pipes, processes), and the pidfds
of mutex owners in other processes. Nothing spins: with no timer due and no time-out
it sleeps until something rings.

``wait_all`` locks every object's state in one global order (by file identity), so
concurrent waits cannot deadlock, and takes all objects only when all can be taken.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from winipc import errors as W
from winipc._backends import posix_sync as S
from winipc.sync._base import ABANDONED, SyncObject, wake
from winipc.sync._state import State

MAXIMUM_WAIT_OBJECTS = 64
_FULL_TABLE_POLL = 0.01  # seconds: an object with 240 waiters already is polled instead

_local = threading.local()


def _doorbell() -> S.WakeSocket:
    bell: S.WakeSocket | None = getattr(_local, "bell", None)
    if bell is None:
        bell = _local.bell = S.WakeSocket()
    return bell


def _ready_fd(obj: Any) -> int:
    fn = getattr(obj, "_wait_fd", None)
    fd = fn() if fn is not None else obj.fileno()
    return int(fd)


def _fd_ready(obj: Any) -> bool:
    ready = getattr(obj, "_wait_ready", None)
    if ready is not None and getattr(obj, "_wait_exact", False):
        return bool(ready())  # its descriptor only says "look again" (a mailslot's epoll)
    if ready is not None and ready():
        return True
    return bool(S.poll([_ready_fd(obj)], 0))


def _check(objs: Sequence[Any]) -> None:
    if not 1 <= len(objs) <= MAXIMUM_WAIT_OBJECTS:
        raise W.InvalidParameter(f"wait on 1..{MAXIMUM_WAIT_OBJECTS} objects, not {len(objs)}")
    for o in objs:
        if isinstance(o, SyncObject):
            o._check_right(0x00100000, "waiting")  # SYNCHRONIZE
        elif not (hasattr(o, "fileno") or hasattr(o, "_wait_fd")):
            raise W.InvalidHandle(f"cannot wait on {type(o).__name__}: no state and no descriptor")
        elif getattr(o, "closed", False):
            raise W.InvalidHandle(f"{type(o).__name__} is closed")


def _identity(obj: Any) -> tuple[int, ...]:
    """What makes two handles the same object: the state file (sync) or the descriptor's file."""
    fd = obj._sf.fd if isinstance(obj, SyncObject) else _ready_fd(obj)
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


class _Round:
    """One check-and-register pass over the objects: its outcome and what to sleep on."""

    def __init__(self) -> None:
        self.index: int | None = None
        self.abandoned: int | None = None
        self.fds: list[int] = []
        self.pids: set[int] = set()
        self.sleep: float | None = None
        self.woke: list[tuple[SyncObject, list[int]]] = []
        self.registered: list[SyncObject] = []
        self.settled: list[SyncObject] = []  # objects whose registration the round removed

    def sleep_at_most(self, seconds: float | None) -> None:
        if seconds is not None and (self.sleep is None or seconds < self.sleep):
            self.sleep = seconds


def _register(obj: SyncObject, st: State, token: int, rnd: _Round) -> None:
    if st.register(token, os.getpid()) is None:
        rnd.sleep_at_most(_FULL_TABLE_POLL)
    rnd.registered.append(obj)
    pid = obj._owner_pid(st)
    if pid:
        rnd.pids.add(pid)
    rnd.sleep_at_most(obj._next_change(st))


def _round_any(objs: Sequence[Any], token: int) -> _Round:
    rnd = _Round()
    for i, obj in enumerate(objs):
        if not isinstance(obj, SyncObject):
            if _fd_ready(obj):
                rnd.index = i
                return rnd
            rnd.fds.append(_ready_fd(obj))
            continue
        with obj._sf.locked() as st:
            slot = st.find(token)
            code = obj._probe(st, slot)
            if code is not None:
                obj._consume(st, slot, code)
                st.unregister(token)
                rnd.settled.append(obj)
                rnd.index = i
                if code == ABANDONED:
                    rnd.abandoned = i
                    rnd.woke.append((obj, st.waiters(token)))
                return rnd
            _register(obj, st, token, rnd)
    return rnd


def _round_all(objs: Sequence[Any], token: int) -> _Round:
    rnd = _Round()
    sync = sorted(
        ((i, o) for i, o in enumerate(objs) if isinstance(o, SyncObject)),
        key=lambda p: _identity(p[1]),
    )
    states: list[tuple[int, SyncObject, State]] = []
    try:
        for i, obj in sync:
            states.append((i, obj, obj._sf.acquire_lock()))
        others_ready = all(_fd_ready(o) for o in objs if not isinstance(o, SyncObject))
        codes = {i: obj._probe(st, st.find(token)) for i, obj, st in states}
        if others_ready and all(c is not None for c in codes.values()):
            for i, obj, st in states:
                code = codes[i]
                assert code is not None
                obj._consume(st, st.find(token), code)
                st.unregister(token)
                rnd.settled.append(obj)
                if code == ABANDONED and rnd.abandoned is None:
                    rnd.abandoned = i
            rnd.index = 0
            return rnd
        for _i, obj, st in states:
            _register(obj, st, token, rnd)
        rnd.fds += [_ready_fd(o) for o in objs if not isinstance(o, SyncObject)]
        return rnd
    finally:
        for _i, obj, st in reversed(states):
            obj._sf.release_lock(st)


def _unregister(objs: Sequence[Any], token: int) -> None:
    for obj in {id(o): o for o in objs}.values():
        if isinstance(obj, SyncObject) and not obj.closed:
            with obj._sf.locked() as st:
                st.unregister(token)
                tokens = obj._on_leave(st, token)
            if tokens:
                wake(obj._sf, tokens)


def _finish(objs: Sequence[Any], rnd: _Round, token: int, registered: list[Any]) -> int:
    # earlier rounds' registrations and this round's (objects before the one taken)
    held = registered + rnd.registered
    _unregister([o for o in held if all(o is not d for d in rnd.settled)], token)
    for obj, tokens in rnd.woke:  # an abandoned mutex changed hands: others re-check
        wake(obj._sf, tokens)
    assert rnd.index is not None
    if rnd.abandoned is not None:
        raise W.AbandonedMutex(
            f"the mutex at index {rnd.abandoned} was abandoned by its owner; you own it now",
            index=rnd.abandoned,
            mutex=objs[rnd.abandoned],
        )
    return rnd.index


def _plan(rnd: _Round, deadline: float | None) -> tuple[list[int], float | None]:
    pidfds = []
    for pid in rnd.pids:
        fd = S.pidfd(pid)
        if fd is not None:
            pidfds.append(fd)
        elif not S.process_exists(pid):
            rnd.sleep_at_most(0.0)  # the owner died before we could watch it: look again now
        else:
            rnd.sleep_at_most(0.05)  # no pidfd on this system: check the owner now and then
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if rnd.sleep is not None:
        left = rnd.sleep if left is None else min(left, rnd.sleep)
    return pidfds, left


def _wait(objs: Sequence[Any], all_: bool, timeout: float | None) -> int | None:
    _check(objs)
    if all_ and len({_identity(o) for o in objs}) != len(objs):
        raise W.InvalidParameter("wait_all: the same object twice (Windows refuses it too)")
    if timeout is not None and (timeout != timeout or timeout < 0):
        raise W.InvalidParameter(f"timeout must be seconds >= 0 or None, not {timeout!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    bell = _doorbell()
    registered: list[Any] = []  # objects holding our token, to take it out again
    try:
        while True:
            bell.drain()
            rnd = _round_all(objs, bell.token) if all_ else _round_any(objs, bell.token)
            if rnd.index is not None:
                return _finish(objs, rnd, bell.token, registered)
            registered += rnd.registered
            if deadline is not None and time.monotonic() >= deadline:
                _unregister(registered, bell.token)
                return None
            pidfds, left = _plan(rnd, deadline)
            try:
                S.poll([bell.fileno(), *rnd.fds, *pidfds], left)
            finally:
                for fd in pidfds:
                    S.close(fd)
    except BaseException:
        _unregister(registered, bell.token)
        raise


def wait_any(objs: Sequence[Any], timeout: float | None = None) -> int | None:
    """Wait until one of the objects is signaled (WaitForMultipleObjects, bWaitAll=False).

    Args:
        objs: 1..64 objects: events, mutexes, semaphores, timers, processes, pipes, or
            anything with ``fileno()`` (signaled = readable).
        timeout: seconds; None waits forever; 0 tests and returns at once.

    Returns:
        The smallest index of a signaled object (only that object is taken: a count, a
        mutex's ownership, an auto-reset signal), or None on time-out (WAIT_TIMEOUT).

    Raises:
        AbandonedMutex: the object at ``.index`` is a mutex whose owner died; it is
            owned by this thread now.
        InvalidParameter: no object, more than 64, or a bad timeout.
        InvalidHandle: a closed handle or something that cannot be waited on.
    """
    return _wait(objs, False, timeout)


def wait_all(objs: Sequence[Any], timeout: float | None = None) -> bool:
    """Wait until every object is signaled, then take all at once (bWaitAll=True).

    Nothing is taken until everything can be: no object changes while the wait waits.

    Returns:
        True when all were taken; False on time-out.

    Raises:
        AbandonedMutex: all were taken, and the mutex at ``.index`` was abandoned.
        InvalidParameter: duplicates, no object, more than 64, or a bad timeout.
    """
    return _wait(objs, True, timeout) is not None


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _wait_async(objs: Sequence[Any], all_: bool, timeout: float | None) -> int | None:
    _check(objs)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else time.monotonic() + timeout
    bell = S.WakeSocket()  # one per wait: tasks of one thread must not share a doorbell
    registered: list[Any] = []
    try:
        while True:
            bell.drain()
            rnd = _round_all(objs, bell.token) if all_ else _round_any(objs, bell.token)
            if rnd.index is not None:
                return _finish(objs, rnd, bell.token, registered)
            registered += rnd.registered
            if deadline is not None and time.monotonic() >= deadline:
                _unregister(registered, bell.token)
                return None
            pidfds, left = _plan(rnd, deadline)
            fut: asyncio.Future[None] = loop.create_future()
            fds = [bell.fileno(), *rnd.fds, *pidfds]
            for fd in fds:
                loop.add_reader(fd, _settle, fut)
            try:
                await asyncio.wait_for(asyncio.shield(fut), left)
            except asyncio.TimeoutError:
                pass
            finally:
                for fd in fds:
                    loop.remove_reader(fd)
                for fd in pidfds:
                    S.close(fd)
    except BaseException:
        _unregister(registered, bell.token)
        raise
    finally:
        bell.close()


async def wait_any_async(objs: Sequence[Any], timeout: float | None = None) -> int | None:
    """asyncio twin of :func:`wait_any`; cancelling the task leaves every object as it was."""
    return await _wait_async(objs, False, timeout)


async def wait_all_async(objs: Sequence[Any], timeout: float | None = None) -> bool:
    """asyncio twin of :func:`wait_all`."""
    return await _wait_async(objs, True, timeout) is not None
