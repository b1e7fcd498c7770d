"""wait_any / wait_all over mixes of objects, across processes, blocking and asyncio."""

from __future__ import annotations

import asyncio
import json
import random
import select
import sys
import time
from contextlib import closing

import pytest

import winipc
from test_sync_helpers import Worker, in_thread, until, waiters
from winipc import errors as W
from winipc import pipes
from winipc.sync import Event, Mutex, Semaphore, wait_all, wait_any, wait_any_async

from conftest import run_py, wait_line


def _sleeper() -> winipc.Process:
    return winipc.spawn([sys.executable, "-c", "import time; time.sleep(60)"])


def _readable(conn: pipes.PipeConnection) -> bool:
    """Data waits in the socket or the fast path's ring (looked at without reading)."""
    if conn.fast_path:
        return bool(conn._ring.readable())
    return bool(select.select([conn.fileno()], [], [], 0)[0])


def _end(proc: winipc.Process) -> None:
    proc.kill()
    proc.popen.wait()
    proc.close()


# ============================================================================ wait_any


def test_wait_any_mix_across_processes_takes_only_the_smallest_signaled() -> None:
    """event, semaphore, pipe connection, spawned process: signaled by others, taken in order."""
    ev = Event(r"Local\mix-e")
    sem = Semaphore(r"Local\mix-s", 0, 5)
    proc = _sleeper()
    with Worker() as w:
        w.call("open", cls="Event", id="e", args=[r"Local\mix-e"])
        w.call("open", cls="Semaphore", id="s", args=[r"Local\mix-s"])
        w.call("pipe_server", id="p", args=[r"\\.\pipe\mix"])
        w.send("call", id="p", method="connect", args=[20])
        conn = pipes.connect(r"\\.\pipe\mix")
        Worker.result(w.recv())
        objs = [ev, sem, conn, proc]
        try:
            t0 = time.monotonic()
            assert wait_any(objs, 0.1) is None
            assert time.monotonic() - t0 >= 0.1
            assert (ev.is_set(), sem.count, _readable(conn)) == (False, 0, False)

            # signaled from elsewhere while we are blocked: the semaphore wakes us
            res = in_thread(wait_any, objs, 20)
            until(lambda: waiters(sem) >= 1, what="the wait to block")
            assert w.call("call", id="s", method="release") == 0
            assert res.join() == 1
            assert sem.count == 0 and not ev.is_set()

            # everything signaled at once: one at a time, smallest index first
            w.call("call", id="e", method="set")
            assert w.call("call", id="s", method="release", args=[1]) == 0
            w.call("write", id="p", data="hello")
            proc.kill()
            proc.popen.wait()
            until(lambda: _readable(conn), what="the data to arrive")
            assert wait_any(objs, 5) == 0
            assert not ev.is_set()  # the auto-reset event was taken...
            assert sem.count == 1  # ...and nothing else
            assert _readable(conn)
            assert wait_any(objs, 5) == 1
            assert sem.count == 0
            assert wait_any(objs, 5) == 2  # readable: waiting does not read
            assert wait_any(objs, 5) == 2
            assert conn.read(5, timeout=5) == b"hello"
            assert wait_any(objs, 5) == 3  # the process has ended, and stays so
            assert wait_any(objs, 0) == 3
        finally:
            conn.close()
            _end(proc)
    ev.close()
    sem.close()


def test_wait_any_sees_pipe_data_that_peek_or_a_short_read_already_buffered() -> None:
    """A connection with data waiting is signaled, wherever the data waits."""
    with Worker() as w, closing(Semaphore(None, 0, 1)) as sem:
        w.call("pipe_server", id="p", args=[r"\\.\pipe\peeked"])
        w.send("call", id="p", method="connect", args=[20])
        conn = pipes.connect(r"\\.\pipe\peeked")
        try:
            Worker.result(w.recv())
            w.call("write", id="p", data="hello")
            until(lambda: _readable(conn), what="the data to arrive")
            assert conn.peek(5).data == b"hello"  # PeekNamedPipe: nothing removed
            assert wait_any([sem, conn], 1) == 1, "data looked at by peek() is not seen as waiting"
            assert conn.read(2, timeout=5) == b"he"
            assert wait_any([sem, conn], 1) == 1, "the rest of a short read is not seen as waiting"
            assert conn.read(3, timeout=5) == b"llo"
            assert wait_any([sem, conn], 0.05) is None
        finally:
            conn.close()


def test_wait_any_mutex_owned_elsewhere_is_not_taken_by_a_wait_that_returns_another() -> None:
    m = Mutex(r"Local\wam")
    with closing(Semaphore(None, 0, 1)) as s, Worker() as w:
        w.call("open", cls="Mutex", id="m", args=[r"Local\wam"])
        assert w.call("call", id="m", method="acquire", args=[0])
        s.release()
        assert wait_any([m, s], 1) == 1
        w.call("call", id="m", method="release")
        assert wait_any([m, s], 1) == 0  # now ours
        assert w.call("call", id="m", method="acquire", args=[0]) is False
        m.release()
    m.close()


def test_wait_any_satisfied_by_a_later_object_leaves_no_registration_behind() -> None:
    """A wait that returns leaves no trace in the objects it did not take."""
    ev = Event()  # auto-reset, not set
    sem = Semaphore(None, 1, 1)
    assert wait_any([ev, sem], 0) == 1
    assert waiters(ev) == 0, "the returned wait is still registered on the event"
    ev.pulse()  # nobody waits: a pulse releases nobody and keeps nothing
    assert ev.wait(0) is False, "a pulse was kept for a thread that was not waiting"
    ev.close()
    sem.close()


def test_wait_any_reports_an_abandoned_mutex_at_its_index() -> None:
    m = Mutex(r"Local\wab")
    with closing(Semaphore(None, 0, 1)) as s, Worker() as w:
        w.call("open", cls="Mutex", id="m", args=[r"Local\wab"])
        assert w.call("call", id="m", method="acquire", args=[0])
        w.kill()
        with pytest.raises(W.AbandonedMutex) as ei:
            wait_any([s, m], 5)
        assert ei.value.index == 1 and ei.value.mutex is m
        m.release()  # owned
        assert wait_any([s, m], 0) == 1  # and clean from now on
        m.release()
    m.close()


def test_wait_any_argument_checks() -> None:
    ev, sem = Event(), Semaphore(None, 1, 1)
    with pytest.raises(W.InvalidParameter) as ei:
        wait_any([])
    assert ei.value.winerror == 87
    many = [Event() for _ in range(65)]
    try:
        with pytest.raises(W.InvalidParameter) as ei:
            wait_any(many, 0)
        assert "64" in str(ei.value)
        with pytest.raises(W.InvalidParameter):
            wait_all(many, 0)
        many[63].set()
        assert wait_any(many[:64], 0) == 63  # 64 is allowed
    finally:
        for e in many:
            e.close()
    with pytest.raises(W.InvalidParameter):
        wait_any([ev], -1)
    with pytest.raises(W.InvalidHandle):
        wait_any([ev, object()], 0)
    closed = Event()
    closed.close()
    with pytest.raises(W.InvalidHandle) as bad:
        wait_any([sem, closed], 0)
    assert bad.value.winerror == 6
    assert sem.count == 1  # a refused wait takes nothing
    r, wr = pipes.create_pipe()
    r.close()
    with pytest.raises(W.InvalidHandle):
        wait_any([ev, r], 0)
    wr.close()
    ev.close()
    sem.close()


# ============================================================================ wait_all


def test_wait_all_takes_nothing_until_everything_can_be_taken() -> None:
    a = Semaphore(r"Local\wa-a", 1, 5)
    b = Event(r"Local\wa-b", manual_reset=True)
    t0 = time.monotonic()
    assert wait_all([a, b], 0.15) is False
    assert time.monotonic() - t0 >= 0.15
    assert a.count == 1
    with Worker() as w:
        w.call("open", cls="Semaphore", id="a", args=[r"Local\wa-a"])
        w.call("open", cls="Event", id="b", args=[r"Local\wa-b"])
        w.send("wait_all", ids=["a", "b"], timeout=20)
        until(lambda: waiters(b) >= 1, what="the worker's wait_all to block")
        assert a.acquire(0) is True  # the blocked wait_all holds nothing
        a.release()
        assert a.count == 1
        b.set()
        assert Worker.result(w.recv()) is True
        assert a.count == 0 and b.is_set()  # took the count; the manual event stays set
    a.close()
    b.close()


def test_wait_all_with_an_abandoned_mutex_takes_all_and_says_so() -> None:
    m = Mutex(r"Local\waab")
    with closing(Semaphore(None, 1, 1)) as s, Worker() as w:
        w.call("open", cls="Mutex", id="m", args=[r"Local\waab"])
        assert w.call("call", id="m", method="acquire", args=[0])
        w.kill()
        with pytest.raises(W.AbandonedMutex) as ei:
            wait_all([s, m], 5)
        assert ei.value.index == 1
        assert s.count == 0  # everything was taken
        m.release()  # and the mutex is ours
    m.close()


def test_wait_all_refuses_the_same_object_twice() -> None:
    ev = Event(r"Local\twice", manual_reset=True)
    try:
        with pytest.raises(W.InvalidParameter):
            wait_all([ev, ev], 0)
        with Worker() as w:  # two handles to one object: the same object (in a worker: it may hang)
            w.call("open", cls="Event", id="e1", args=[r"Local\twice"])
            w.call("open", cls="Event", id="e2", args=[r"Local\twice"])
            ev.set()
            w.send("wait_all", ids=["e1", "e2"], timeout=0.5)
            try:
                reply = w.recv(timeout=5)
            except TimeoutError:
                pytest.fail("wait_all over two handles to one object hung (its state lock taken twice)")
            assert reply.get("err") == "InvalidParameter", reply
    finally:
        ev.close()


CONSUMER = r"""
import json, sys
from winipc import sync
role, a, b, stop = sys.argv[1:5]
A, B = sync.Semaphore.open(a), sync.Semaphore.open(b)
S = sync.Event.open(stop)
counts = {"all": 0, "a": 0, "b": 0}
print("ready", flush=True)
while True:
    if role == "all":
        got = sync.wait_all([A, B], 0.05)
        counts["all"] += got
    elif role == "anyA":
        i = sync.wait_any([A], 0.05)
        got = i is not None
        counts["a"] += got
    else:
        i = sync.wait_any([B, A], 0.05)
        got = i is not None
        if got:
            counts["b" if i == 0 else "a"] += 1
    if not got and S.is_set():
        break
print(json.dumps(counts), flush=True)
"""


def test_wait_all_is_atomic_under_contention() -> None:
    """3 processes wait_all([A, B]) while 2 others wait_any on A or B, A: counts balance."""
    n = 300
    names = (r"Local\wc-a", r"Local\wc-b", r"Local\wc-stop")
    a, b = Semaphore(names[0], 0, 10_000), Semaphore(names[1], 0, 10_000)
    stop = Event(names[2], manual_reset=True)
    roles = ["all", "all", "all", "anyA", "anyBA"]
    procs = [run_py(CONSUMER, role, *names) for role in roles]
    try:
        for p in procs:
            wait_line(p, "ready", timeout=30)
        order = ["a"] * n + ["b"] * n
        random.shuffle(order)
        lowest = 0
        for i, which in enumerate(order):
            (a if which == "a" else b).release()
            if i % 25 == 0:
                lowest = min(lowest, a.count, b.count)
                time.sleep(0.002)
        stop.set()
        outs = []
        for p in procs:
            line = wait_line(p, "{", timeout=30)  # a deadlock fails here
            outs.append(json.loads(line))
            assert p.wait(10) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
    assert lowest >= 0
    took_all = sum(o["all"] for o in outs)
    took_a = sum(o["a"] for o in outs)
    took_b = sum(o["b"] for o in outs)
    left_a, left_b = a.count, b.count
    assert left_a >= 0 and left_b >= 0
    assert took_all + took_a + left_a == n, (outs, left_a)
    assert took_all + took_b + left_b == n, (outs, left_b)
    assert took_all > 0, outs  # the wait_all processes were not starved out entirely
    for o in (a, b, stop):
        o.close()


# ============================================================================ asyncio


def test_await_event_set_by_another_process() -> None:
    ev = Event(r"Local\aw")

    async def main(w: Worker) -> float:
        async def waiter() -> None:
            await ev

        task = asyncio.ensure_future(waiter())
        while waiters(ev) < 1:
            await asyncio.sleep(0.002)
        assert not task.done()
        w.call("call", id="e", method="set")
        await asyncio.wait_for(task, 10)
        return time.monotonic()

    with Worker() as w:
        w.call("open", cls="Event", id="e", args=[r"Local\aw"])
        asyncio.run(main(w))
    assert not ev.is_set()  # the auto-reset signal was taken by the await
    ev.close()


def test_wait_any_async_timeout_and_order() -> None:
    ev = Event(manual_reset=True)
    sem = Semaphore(None, 0, 2)

    async def main() -> None:
        t0 = time.monotonic()
        assert await wait_any_async([ev, sem], 0.2) is None
        assert time.monotonic() - t0 >= 0.2
        sem.release()
        ev.set()
        assert await wait_any_async([ev, sem], 5) == 0
        assert sem.count == 1 and ev.is_set()
        ev.reset()
        assert await wait_any_async([ev, sem], 5) == 1
        assert sem.count == 0

    asyncio.run(main())
    ev.close()
    sem.close()


def test_cancelled_async_wait_leaves_the_object_untouched() -> None:
    sem = Semaphore(r"Local\acan", 0, 5)

    async def main(w: Worker) -> None:
        task = asyncio.ensure_future(wait_any_async([sem], None))
        while waiters(sem) < 1:
            await asyncio.sleep(0.002)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert waiters(sem) == 0  # its registration is gone
        # a blocking waiter in another process gets the one count released
        w.send("call", id="s", method="acquire", args=[20])
        while waiters(sem) < 1:
            await asyncio.sleep(0.002)
        assert sem.release() == 0
        assert Worker.result(w.recv()) is True
        assert sem.count == 0
        # and with nobody waiting, a release after a cancel stays in the count
        task = asyncio.ensure_future(wait_any_async([sem], 10))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sem.release() == 0
        await asyncio.sleep(0.05)
        assert sem.count == 1

    with Worker() as w:
        w.call("open", cls="Semaphore", id="s", args=[r"Local\acan"])
        asyncio.run(main(w))
    sem.close()


def test_async_waits_take_one_count_each() -> None:
    sem = Semaphore(None, 0, 10)

    async def main() -> None:
        tasks = [asyncio.ensure_future(wait_any_async([sem], 10)) for _ in range(5)]
        while waiters(sem) < 5:
            await asyncio.sleep(0.002)
        sem.release(3)
        await asyncio.sleep(0.2)
        assert sum(t.done() for t in tasks) == 3
        assert sem.count == 0
        sem.release(2)
        assert await asyncio.wait_for(asyncio.gather(*tasks), 10) == [0] * 5

    asyncio.run(main())
    sem.close()


def test_async_wait_on_a_mutex_of_a_killed_process_is_abandoned() -> None:
    m = Mutex(r"Local\aab")

    async def main(w: Worker) -> None:
        task = asyncio.ensure_future(wait_any_async([m], 10))
        while waiters(m) < 1:
            await asyncio.sleep(0.002)
        w.kill()
        with pytest.raises(W.AbandonedMutex):
            await asyncio.wait_for(task, 10)
        m.release()  # this thread owns it

    with Worker() as w:
        w.call("open", cls="Mutex", id="m", args=[r"Local\aab"])
        assert w.call("call", id="m", method="acquire", args=[0])
        asyncio.run(main(w))
    m.close()


def test_await_closed_handle_is_invalid_handle() -> None:
    ev = Event()
    ev.close()

    async def main() -> None:
        with pytest.raises(W.InvalidHandle):
            await ev
        with pytest.raises(W.InvalidHandle):
            await wait_any_async([ev], 0)

    asyncio.run(main())


def test_process_handles_from_spawn_and_open_process() -> None:
    proc = _sleeper()
    try:
        ph = winipc.sync.open_process(proc.pid)
        assert ph.wait(0.05) is False
        proc.kill()
        assert ph.wait(10) is True
        assert wait_any([ph, proc], 0) == 0
        ph.close()
        with pytest.raises(W.InvalidHandle):
            ph.wait(0)
    finally:
        _end(proc)
    with pytest.raises(W.InvalidParameter):
        winipc.sync.open_process(2**22 + 12345)  # beyond pid_max: no such process
