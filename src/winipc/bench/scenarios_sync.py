"""Synchronization scenarios: event set-to-wake latency and mutex hand-off rate.

Both run between the runner and the worker, two unrelated processes, pinned like every
other scenario (same core, then two cores).

**Set-to-wake** (metric ``wake``): the worker waits on event *go*; the runner stamps the
clock and sets *go*; the worker stamps the clock as it wakes, then sets event *ack*,
which the runner waits for before the next round. A figure is one wake stamp minus its
set stamp (``time.monotonic_ns``, one clock for all processes); every wake must fall
between its set and the next one. winipc uses two auto-reset named events; the peer,
``multiprocessing.Event`` (manual reset), is cleared by the side that waited on it.

**Hand-off** (metric ``handoff``): both processes loop on one lock. A turn counter in a
shared page, read and written only under the lock, says whose turn it is (runner on even
values, worker on odd); a process that takes the lock out of turn gives it back and
yields the CPU. Each real turn is a hand-off from the other process; each side stamps
its turns, checks the counter moved by exactly 2 since its last turn and that nobody
else was inside. The rate is hand-offs per second over the batch; the stamps must
strictly alternate. winipc uses a named ``winipc.sync.Mutex``; the peer uses
``multiprocessing.Lock``.

The multiprocessing objects reach the runner the way ``multiprocessing`` hands them to
a child it spawns: pickled while "spawning" (the POSIX semaphores keep their names),
reopened by name on the other side.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import time
from collections.abc import Callable
from multiprocessing import context as mp_context
from multiprocessing import get_context
from multiprocessing.reduction import ForkingPickler
from multiprocessing.synchronize import Event as MpEvent
from multiprocessing.synchronize import Lock as MpLock
from typing import Any

from winipc.bench.registry import (
    LATENCY,
    RATE,
    Buffer,
    Endpoint,
    Metric,
    Scenario,
    Setup,
    register,
)
from winipc.bench.workload import BenchError, VerificationError, no_gc
from winipc.sync import Event, Mutex

#: seconds a side waits for the other before the run fails (never reached when healthy)
PATIENCE = 10.0

_TURN = struct.Struct("<QQ")  # turn counter, pid of the process inside (0: nobody)
_PAGE = 4096


# --------------------------------------------------------------------------- plumbing
class _Objects:
    """One side's end of a synchronization scenario: the objects, no byte transport."""

    def __init__(
        self, *objects: Any, address: str, close: Callable[[], None] | None = None
    ) -> None:
        self.objects = objects
        self.address = address  # the worker's Listening is its end too
        self._close = close

    def send(self, data: Buffer) -> None:
        raise BenchError("a synchronization scenario moves no bytes")

    def recv(self, size: int) -> Buffer:
        raise BenchError("a synchronization scenario moves no bytes")

    def close(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            close()

    def accept(self, timeout: float | None) -> Endpoint:
        return self


class _Spawning:
    """Stands for the Popen of a child being spawned while objects are pickled for it."""


def _share(obj: Any) -> str:
    """``obj`` (multiprocessing locks, events) pickled as for a spawned child, as hex."""
    set_spawning: Any = mp_context.set_spawning_popen
    set_spawning(_Spawning())
    try:
        return bytes(ForkingPickler.dumps(obj)).hex()
    finally:
        set_spawning(None)


def _unshare(text: str) -> Any:
    # The multiprocessing peer's own hand-off: the runner pickled these objects for the
    # worker it spawned itself and passes them on the worker's stdin; nothing else reaches it.
    return pickle.loads(bytes.fromhex(text))  # trusted-peer-opt-in


def _turn_page(path: str, create: bool) -> tuple[mmap.mmap, Callable[[], None]]:
    """The shared page holding the turn counter (a file in the run's private workdir)."""
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        if create:
            os.ftruncate(fd, _PAGE)
        page = mmap.mmap(fd, _PAGE)
    finally:
        os.close(fd)

    def close() -> None:
        page.close()
        if create:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    return page, close


def _late(what: str) -> BenchError:
    return BenchError(f"{what}: the other process did not answer within {PATIENCE:g} s")


# --------------------------------------------------------------------------- the loops
def _signal_loop(
    count: int,
    runner: bool,
    set_go: Callable[[], None],
    wait_go: Callable[[float], bool],
    set_ack: Callable[[], None],
    wait_ack: Callable[[float], bool],
) -> list[int]:
    """Both sides of the set-to-wake exchange (see the module docstring)."""
    clock = time.monotonic_ns
    stamps = [0] * count
    with no_gc():
        if runner:
            if not wait_ack(PATIENCE):  # the worker is ready
                raise _late("set-to-wake, start")
            for i in range(count):
                stamps[i] = clock()
                set_go()
                if not wait_ack(PATIENCE):
                    raise _late(f"set-to-wake, round {i}")
        else:
            set_ack()
            for i in range(count):
                if not wait_go(PATIENCE):
                    raise _late(f"set-to-wake, round {i}")
                stamps[i] = clock()
                set_ack()
    return stamps


def _turn_loop(
    count: int,
    runner: bool,
    acquire: Callable[[float], bool],
    release: Callable[[], None],
    page: mmap.mmap,
) -> list[int]:
    """One side of the hand-off exchange (see the module docstring).

    The runner takes one more turn at the end, without stamping or counting it, to see
    the worker's last increment (so a batch ends with both sides done).
    """
    clock, yield_cpu = time.monotonic_ns, os.sched_yield
    parity = 0 if runner else 1
    me = os.getpid()
    stamps = [0] * count
    turns = count + 1 if runner else count
    expect: int | None = None
    i = 0
    deadline = time.monotonic() + PATIENCE
    with no_gc():
        while i < turns:
            if not acquire(PATIENCE):
                raise _late(f"hand-off, turn {i}")
            try:
                n, inside = _TURN.unpack_from(page, 0)
                if inside:
                    raise VerificationError(f"hand-off: process {inside} is inside too")
                mine = n % 2 == parity
                if mine:
                    if expect is not None and n != expect:
                        raise VerificationError(
                            f"hand-off: the counter is {n} at this side's turn {i}, expected {expect}"
                        )
                    expect = n + 2
                    if i < count:
                        _TURN.pack_into(page, 0, n, me)
                        stamps[i] = clock()
                        _TURN.pack_into(page, 0, n + 1, 0)
            finally:
                release()
            if mine:
                i += 1
                deadline = time.monotonic() + PATIENCE
            else:
                if time.monotonic() > deadline:
                    raise _late(f"hand-off, turn {i}")
                yield_cpu()
    return stamps


# --------------------------------------------------------------------------- winipc
class WinipcEventScenario(Scenario):
    """Set-to-wake latency of a winipc named event (auto reset) between two processes."""

    name = "winipc-event"
    group = "sync"
    mechanism = "winipc named event (auto reset), SetEvent -> wake"
    kinds = frozenset({LATENCY})
    description = (
        "two auto-reset Events in Local\\, go and ack: the runner sets go, the worker "
        "wakes in wait() and sets ack; set-to-wake from monotonic stamps on both sides"
    )

    def serve(self, setup: Setup) -> _Objects:
        base = f"Local\\winipc-bench-{setup.tag}-{self.name}"
        go = Event(base + "-go")
        ack = Event(base + "-ack")

        def close() -> None:
            go.close()
            ack.close()

        return _Objects(go, ack, address=base, close=close)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        go = Event.open(address + "-go")
        try:
            ack = Event.open(address + "-ack")
        except BaseException:
            go.close()
            raise

        def close() -> None:
            go.close()
            ack.close()

        return _Objects(go, ack, address=address, close=close)

    def exchange(self, ep: Endpoint, metric: Metric, count: int, runner: bool) -> list[int]:
        assert isinstance(ep, _Objects)
        go, ack = ep.objects[0], ep.objects[1]
        return _signal_loop(count, runner, go.set, go.wait, ack.set, ack.wait)


class WinipcMutexScenario(Scenario):
    """Hand-off rate of a winipc named mutex between two processes taking strict turns."""

    name = "winipc-mutex"
    group = "sync"
    mechanism = "winipc named mutex, strict turns"
    kinds = frozenset({RATE})
    description = (
        "one Mutex in Local\\ and a turn counter in a shared page: each process "
        "acquire()s, takes its turn (or yields), release()s; hand-offs per second"
    )

    def serve(self, setup: Setup) -> _Objects:
        name = f"Local\\winipc-bench-{setup.tag}-{self.name}"
        path = os.path.join(setup.workdir, f"{setup.tag}-{self.name}.turn")
        mutex = Mutex(name)
        try:
            page, unmap = _turn_page(path, create=True)
        except BaseException:
            mutex.close()
            raise

        def close() -> None:
            unmap()
            mutex.close()

        return _Objects(mutex, page, address=f"{name}|{path}", close=close)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        name, _, path = address.partition("|")
        mutex = Mutex.open(name)
        try:
            page, unmap = _turn_page(path, create=False)
        except BaseException:
            mutex.close()
            raise

        def close() -> None:
            unmap()
            mutex.close()

        return _Objects(mutex, page, address=address, close=close)

    def exchange(self, ep: Endpoint, metric: Metric, count: int, runner: bool) -> list[int]:
        assert isinstance(ep, _Objects)
        mutex, page = ep.objects[0], ep.objects[1]
        return _turn_loop(count, runner, mutex.acquire, mutex.release, page)


# --------------------------------------------------------------------------- peers
class MpEventScenario(Scenario):
    """Peer: set-to-wake latency of ``multiprocessing.Event`` between two processes."""

    name = "mp-event"
    group = "sync"
    mechanism = "multiprocessing.Event, set() -> wake"
    peer = True
    kinds = frozenset({LATENCY})
    description = (
        "two multiprocessing.Event (spawn context), go and ack, shared as with a spawned "
        "child; wait() then clear() on the waiting side"
    )

    def serve(self, setup: Setup) -> _Objects:
        ctx = get_context("spawn")
        go, ack = ctx.Event(), ctx.Event()
        return _Objects(go, ack, address=_share((go, ack)))

    def connect(self, address: str, setup: Setup) -> Endpoint:
        go, ack = _unshare(address)
        return _Objects(go, ack, address=address)

    def exchange(self, ep: Endpoint, metric: Metric, count: int, runner: bool) -> list[int]:
        assert isinstance(ep, _Objects)
        go: MpEvent = ep.objects[0]
        ack: MpEvent = ep.objects[1]

        def wait_go(timeout: float) -> bool:
            if not go.wait(timeout):
                return False
            go.clear()
            return True

        def wait_ack(timeout: float) -> bool:
            if not ack.wait(timeout):
                return False
            ack.clear()
            return True

        return _signal_loop(count, runner, go.set, wait_go, ack.set, wait_ack)


class MpLockScenario(Scenario):
    """Peer: hand-off rate of ``multiprocessing.Lock`` between two processes."""

    name = "mp-lock"
    group = "sync"
    mechanism = "multiprocessing.Lock, strict turns"
    peer = True
    kinds = frozenset({RATE})
    description = (
        "one multiprocessing.Lock (spawn context), shared as with a spawned child, and the "
        "same turn counter and loop as winipc-mutex"
    )

    def serve(self, setup: Setup) -> _Objects:
        lock = get_context("spawn").Lock()
        path = os.path.join(setup.workdir, f"{setup.tag}-{self.name}.turn")
        page, unmap = _turn_page(path, create=True)
        return _Objects(lock, page, address=f"{_share(lock)}|{path}", close=unmap)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        shared, _, path = address.partition("|")
        lock = _unshare(shared)
        page, unmap = _turn_page(path, create=False)
        return _Objects(lock, page, address=address, close=unmap)

    def exchange(self, ep: Endpoint, metric: Metric, count: int, runner: bool) -> list[int]:
        assert isinstance(ep, _Objects)
        lock: MpLock = ep.objects[0]
        page = ep.objects[1]

        def acquire(timeout: float) -> bool:
            return bool(lock.acquire(True, timeout))

        return _turn_loop(count, runner, acquire, lock.release, page)


WINIPC_EVENT = register(WinipcEventScenario())
WINIPC_MUTEX = register(WinipcMutexScenario())
MP_EVENT = register(MpEventScenario())
MP_LOCK = register(MpLockScenario())
