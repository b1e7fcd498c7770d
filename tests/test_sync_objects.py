"""Events, semaphores and their names: Windows semantics, checked across real processes."""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any

import pytest

from test_sync_helpers import Worker, leftovers, until, waiters, workers
from winipc import errors as W
from winipc.sync import (
    EVENT_MODIFY_STATE,
    SEMAPHORE_MODIFY_STATE,
    SYNCHRONIZE,
    TIMER_MODIFY_STATE,
    Event,
    Mutex,
    Semaphore,
    WaitableTimer,
)


def _released(ws: list[Worker]) -> list[int]:
    """Workers whose blocked call has answered (answer not read yet)."""
    return [i for i, w in enumerate(ws) if w.outstanding and not w.pending()]


def _start_waits(ws: list[Worker], cls: str, name: str, obj: Any, method: str = "wait") -> None:
    for w in ws:
        w.call("open", cls=cls, id="o", args=[name])
        w.send("call", id="o", method=method, args=[20])
    until(lambda: waiters(obj) >= len(ws), what=f"{len(ws)} waiters to block")


# ============================================================================ events


def test_manual_reset_releases_every_waiter_and_stays_set() -> None:
    ev = Event(r"Local\man", manual_reset=True)
    with workers(3) as ws:
        _start_waits(ws, "Event", r"Local\man", ev)
        assert _released(ws) == []
        ev.set()
        for w in ws:
            assert Worker.result(w.recv()) is True
        assert ev.is_set()
        assert ev.wait(0) and ev.wait(0)  # still set: waits take nothing
        assert ws[0].call("call", id="o", method="wait", args=[0]) is True
        ev.reset()
        assert not ev.is_set()
        assert ws[1].call("call", id="o", method="wait", args=[0]) is False
    ev.close()


def test_auto_reset_releases_exactly_one_waiter_per_set() -> None:
    """5 waiter processes, 3 sets: exactly 3 released, one per set; the event ends reset."""
    with Event(r"Local\auto") as ev, workers(5) as ws:
        _start_waits(ws, "Event", r"Local\auto", ev)
        for k in range(1, 4):
            ev.set()
            until(lambda: len(_released(ws)) >= 1, what=f"a waiter released by set #{k}")
            time.sleep(0.1)  # time for a wrongly released second waiter to show up
            out = _released(ws)
            assert len(out) == 1, f"set #{k} released {len(out)} waiters"
            assert Worker.result(ws[out[0]].recv()) is True
            assert not ev.is_set()  # the released waiter took the signal
        time.sleep(0.2)
        assert _released(ws) == []
        assert sum(w.outstanding for w in ws) == 2  # the other two still wait
        for _ in range(2):  # let them go, one per set
            ev.set()
            until(lambda: len(_released(ws)) >= 1, what="a waiter released")
            (i,) = _released(ws)
            assert Worker.result(ws[i].recv()) is True
        assert not ev.is_set()


def test_auto_reset_set_with_no_waiter_stays_signaled_until_one_takes_it() -> None:
    ev = Event(r"Local\auto1")
    ev.set()
    ev.set()  # setting a signaled event changes nothing: still one signal
    time.sleep(0.05)
    assert ev.is_set() and ev.is_set()  # is_set does not consume
    with Worker() as w:
        w.call("open", cls="Event", id="e", args=[r"Local\auto1"])
        assert w.call("call", id="e", method="wait", args=[0]) is True
        assert not ev.is_set()
        assert ev.wait(0) is False
        assert w.call("call", id="e", method="wait", args=[0]) is False
    ev.close()


def test_pulse_manual_releases_current_waiters_and_leaves_it_reset() -> None:
    ev = Event(r"Local\pm", manual_reset=True)
    with workers(3) as ws:
        _start_waits(ws, "Event", r"Local\pm", ev)
        ev.pulse()
        for w in ws:
            assert Worker.result(w.recv()) is True
        assert not ev.is_set()
        assert ws[0].call("call", id="o", method="wait", args=[0]) is False  # a later wait misses it
    ev.set()
    ev.pulse()  # no waiter: a set event ends non-signaled
    assert not ev.is_set()
    ev.pulse()  # no waiter, not set: nothing happens
    assert not ev.is_set() and ev.wait(0) is False
    ev.close()


def test_pulse_auto_releases_one_waiter() -> None:
    ev = Event(r"Local\pa")
    with workers(2) as ws:
        _start_waits(ws, "Event", r"Local\pa", ev)
        ev.pulse()
        until(lambda: len(_released(ws)) >= 1, what="one waiter released")
        time.sleep(0.15)
        first = _released(ws)
        assert len(first) == 1, f"pulse on an auto-reset event released {first}"
        assert Worker.result(ws[first[0]].recv()) is True
        assert not ev.is_set()
        ev.pulse()
        other = ws[1 - first[0]]
        assert Worker.result(other.recv()) is True
        assert not ev.is_set()
    ev.pulse()  # nobody waits: nothing is kept for later
    assert ev.wait(0) is False
    ev.close()


def test_pulse_auto_reaches_a_live_waiter_past_a_killed_one() -> None:
    """A waiter killed while waiting must not swallow the one waiter a pulse releases."""
    with Event(r"Local\pk") as ev, Worker() as dead, Worker() as live:
        dead.call("open", cls="Event", id="e", args=[r"Local\pk"])
        dead.send("call", id="e", method="wait", args=[20])
        until(lambda: waiters(ev) >= 1, what="the first waiter to block")
        dead.kill()
        live.call("open", cls="Event", id="e", args=[r"Local\pk"])
        live.send("call", id="e", method="wait", args=[20])
        until(lambda: waiters(ev) >= 2, what="the second waiter to block")
        ev.pulse()
        try:
            reply = live.recv(timeout=3)
        except TimeoutError:
            pytest.fail("PulseEvent on an auto-reset event released nobody: a dead waiter's slot took it")
        assert Worker.result(reply) is True


def test_event_set_by_one_process_wakes_a_waiter_in_another_promptly() -> None:
    ev = Event(r"Local\wake")
    with Worker() as w:
        w.call("open", cls="Event", id="e", args=[r"Local\wake"])
        w.send("call", id="e", method="wait", args=[20])
        until(lambda: waiters(ev) >= 1, what="the waiter to block")
        time.sleep(0.05)
        assert w.pending()
        ev.set()
        reply = w.recv(10)
        assert Worker.result(reply) is True
    assert not ev.is_set()
    ev.close()


# ============================================================================ semaphores


def test_semaphore_initial_maximum_and_release_returns_previous() -> None:
    s = Semaphore(r"Local\sem", 2, 5)
    assert (s.count, s.maximum) == (2, 5)
    with Worker() as w:
        w.call("open", cls="Semaphore", id="s", args=[r"Local\sem"])
        assert w.call("call", id="s", method="acquire", args=[0]) is True
        assert s.acquire(0) is True
        assert s.acquire(0) is False and s.count == 0
        assert s.release(3) == 0
        assert w.call("call", id="s", method="release", args=[2]) == 3
        assert s.count == 5
        with pytest.raises(W.TooManyPosts) as ei:
            s.release()
        assert ei.value.winerror == 298 and isinstance(ei.value, ValueError)
        assert s.count == 5  # unchanged
        assert s.acquire(0) and s.acquire(0)
        with pytest.raises(W.TooManyPosts):
            w.call("call", id="s", method="release", args=[3])  # 3 + 3 > 5
        assert s.count == 3  # unchanged by the refused release
        assert w.call("call", id="s", method="release", args=[2]) == 3
    with s:
        assert s.count == 4
    assert s.count == 5
    s.close()
    big = Semaphore(None, 0, 2**31 - 1)  # the largest maximum Windows allows
    assert big.release(2**31 - 1) == 0
    with pytest.raises(W.TooManyPosts):
        big.release()
    big.close()


def test_semaphore_release_n_wakes_n_waiters() -> None:
    with closing(Semaphore(r"Local\semw", 0, 10)) as s, workers(3) as ws:
        _start_waits(ws, "Semaphore", r"Local\semw", s, method="acquire")
        assert s.release(2) == 0
        until(lambda: len(_released(ws)) >= 2, what="two waiters released")
        time.sleep(0.15)
        out = _released(ws)
        assert len(out) == 2, out
        assert s.count == 0
        for i in out:
            assert Worker.result(ws[i].recv()) is True
        (last,) = [w for w in ws if w.outstanding]
        assert last.pending()
        assert s.release(1) == 0
        assert Worker.result(last.recv()) is True
        assert s.count == 0


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ((0, 0), "maximum"),
        ((0, -1), "maximum"),
        ((0, 2**31), "maximum"),
        ((-1, 5), "initial"),
        ((6, 5), "initial"),
        ((1.5, 5), "initial"),
    ],
)
def test_semaphore_bad_arguments_name_the_argument(args: tuple[Any, Any], word: str) -> None:
    with pytest.raises(W.InvalidParameter) as ei:
        Semaphore(None, *args)
    assert ei.value.winerror == 87 and isinstance(ei.value, ValueError)
    assert word in str(ei.value)
    assert leftovers() == []  # nothing half-made


@pytest.mark.parametrize("count", [0, -1, 1.0, "1"])
def test_semaphore_release_bad_count(count: Any) -> None:
    s = Semaphore(None, 1, 3)
    with pytest.raises(W.InvalidParameter) as ei:
        s.release(count)
    assert "count" in str(ei.value)
    assert s.count == 1
    s.close()


# ============================================================================ names


def test_create_on_existing_name_opens_it_and_ignores_initial_state() -> None:
    e1 = Event(r"Local\exist", manual_reset=True)
    s1 = Semaphore(r"Local\exists", 1, 3)
    m1 = Mutex(r"Local\existm")
    assert not (e1.already_exists or s1.already_exists or m1.already_exists)
    with Worker() as w:
        r = w.call("new", cls="Event", id="e", args=[r"Local\exist"], kw={"manual_reset": False, "initial_state": True})
        assert r == {"already_exists": True}
        assert not e1.is_set()  # initial_state ignored
        assert w.call("attr", id="e", attr="manual_reset") is True  # the existing kind kept
        r = w.call("new", cls="Semaphore", id="s", args=[r"Local\exists", 3, 10])
        assert r == {"already_exists": True}
        assert (s1.count, s1.maximum) == (1, 3)
        assert w.call("attr", id="s", attr="maximum") == 3
        r = w.call("new", cls="Mutex", id="m", args=[r"Local\existm"], kw={"initial_owner": True})
        assert r == {"already_exists": True}
        assert m1.acquire(0)  # the worker did not become its owner
        m1.release()
        w.call("call", id="e", method="set")
        assert e1.is_set()  # one object
    e2 = Event(r"Local\exist", initial_state=False)
    assert e2.already_exists and e2.is_set()
    for o in (e1, e2, s1, m1):
        o.close()


def test_names_are_case_insensitive_and_local_by_default() -> None:
    e = Event(r"Local\CaseName", manual_reset=True)
    same = Event.open(r"local\casename")
    plain = Event.open("CASENAME")
    same.set()
    assert plain.is_set()
    with pytest.raises(W.FileNotFound):
        Event.open(r"Global\CaseName")  # another namespace
    for o in (e, same, plain):
        o.close()


@pytest.mark.parametrize("cls", [Event, Mutex, Semaphore, WaitableTimer])
def test_open_missing_name_is_file_not_found(cls: Any) -> None:
    with pytest.raises(W.FileNotFound) as ei:
        cls.open(r"Local\nobody-here")
    assert ei.value.winerror == 2 and isinstance(ei.value, FileNotFoundError)


_MAKERS: dict[str, Any] = {
    "Event": lambda n: Event(n),
    "Mutex": lambda n: Mutex(n),
    "Semaphore": lambda n: Semaphore(n, 0, 1),
    "WaitableTimer": lambda n: WaitableTimer(n),
}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Event", "Mutex"),
        ("Mutex", "Event"),
        ("Semaphore", "WaitableTimer"),
        ("WaitableTimer", "Semaphore"),
        ("Event", "Semaphore"),
        ("Mutex", "WaitableTimer"),
    ],
)
def test_name_of_another_type_is_invalid_handle(first: str, second: str) -> None:
    name = rf"Local\typed-{first}"
    owner = _MAKERS[first](name)
    with pytest.raises(W.InvalidHandle) as ei:
        _MAKERS[second](name)
    assert ei.value.winerror == 6
    with pytest.raises(W.InvalidHandle) as ei:
        globals()[second].open(name)
    assert ei.value.winerror == 6
    with Worker() as w:  # and from another process
        with pytest.raises(W.InvalidHandle):
            w.call("new", cls=second, id="x", args=[name])
        with pytest.raises(W.InvalidHandle):
            w.call("open", cls=second, id="x", args=[name])
        w.call("open", cls=first, id="y", args=[name])  # the right type still opens
    assert len(leftovers()) == 1
    owner.close()
    assert leftovers() == []


def test_name_lives_while_a_handle_does_also_when_the_holder_is_killed() -> None:
    with Worker() as w:
        w.call("new", cls="Event", id="e", args=[r"Local\life"], kw={"initial_state": True})
        probe = Event.open(r"Local\life")
        assert probe.is_set()
        probe.close()
        w.kill()
    with pytest.raises(W.FileNotFound):
        Event.open(r"Local\life")
    fresh = Event(r"Local\life")
    assert not fresh.already_exists and not fresh.is_set()  # a new object, not the old state
    fresh.close()
    assert leftovers() == []


def test_access_rights_of_an_opened_handle() -> None:
    ev = Event(r"Local\acc", manual_reset=True)
    waiter = Event.open(r"Local\acc", access=SYNCHRONIZE)
    for op in (waiter.set, waiter.reset, waiter.pulse):
        with pytest.raises(W.AccessDenied) as ei:
            op()
        assert ei.value.winerror == 5
    setter = Event.open(r"Local\acc", access=EVENT_MODIFY_STATE)
    with pytest.raises(W.AccessDenied):
        setter.wait(0)
    with Worker() as w:
        w.call("open", cls="Event", id="e", args=[r"Local\acc"], kw={"access": SYNCHRONIZE})
        with pytest.raises(W.AccessDenied):
            w.call("call", id="e", method="set")
        w.send("call", id="e", method="wait", args=[20])
        until(lambda: waiters(ev) >= 1, what="the worker to wait")
        setter.set()
        assert Worker.result(w.recv()) is True  # a SYNCHRONIZE handle can wait
    assert waiter.wait(0) is True
    sem = Semaphore(r"Local\accs", 1, 2)
    s_sync = Semaphore.open(r"Local\accs", access=SYNCHRONIZE)
    with pytest.raises(W.AccessDenied):
        s_sync.release()
    assert s_sync.acquire(0) is True
    s_mod = Semaphore.open(r"Local\accs", access=SEMAPHORE_MODIFY_STATE)
    assert s_mod.release() == 0
    t = WaitableTimer(r"Local\acct")
    t_sync = WaitableTimer.open(r"Local\acct", access=SYNCHRONIZE)
    with pytest.raises(W.AccessDenied):
        t_sync.set(1.0)
    with pytest.raises(W.AccessDenied):
        t_sync.cancel()
    WaitableTimer.open(r"Local\acct", access=TIMER_MODIFY_STATE | SYNCHRONIZE).close()
    for o in (ev, waiter, setter, sem, s_sync, s_mod, t, t_sync):
        o.close()


def test_closed_handle_is_invalid_handle() -> None:
    for obj in (Event(), Mutex(), Semaphore(None, 1, 1), WaitableTimer()):
        obj.close()
        obj.close()  # twice is harmless
        assert obj.closed
        with pytest.raises(W.InvalidHandle) as ei:
            obj.wait(0)
        assert ei.value.winerror == 6
        with pytest.raises(W.InvalidHandle):
            int(obj)
    ev = Event()
    ev.close()
    for op in (ev.set, ev.reset, ev.pulse, ev.is_set):
        with pytest.raises(W.InvalidHandle):
            op()
    s = Semaphore(None, 0, 1)
    s.close()
    with pytest.raises(W.InvalidHandle):
        s.release()
    m = Mutex()
    m.close()
    with pytest.raises(W.InvalidHandle):
        m.release()
