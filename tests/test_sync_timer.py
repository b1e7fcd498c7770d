"""WaitableTimer: relative and absolute due times, periods, the two kinds, cancel; no early wait."""

from __future__ import annotations

import datetime as dt
import time
from contextlib import closing

import pytest

from test_sync_helpers import Worker, until, waiters
from winipc import errors as W
from winipc.sync import Event, Mutex, Semaphore, WaitableTimer, wait_all, wait_any

# Due times are wall-clock (CLOCK_REALTIME) and the tests measure with time.monotonic():
# the two clocks may drift apart by NTP slewing (<= 0.05 %), never by more than this.
CLOCKS = 0.002


def test_relative_due_time_never_early_and_not_before() -> None:
    with WaitableTimer(r"Local\rel") as t:
        t0 = time.monotonic()
        t.set(0.2)
        assert t.wait(0) is False
        assert t.wait(5) is True
        assert time.monotonic() - t0 >= 0.2 - CLOCKS


@pytest.mark.parametrize("aware", [False, True])
def test_absolute_due_time(aware: bool) -> None:
    with WaitableTimer() as t:
        t0 = time.monotonic()
        now = dt.datetime.now(dt.timezone.utc) if aware else dt.datetime.now()
        t.set(now + dt.timedelta(seconds=0.25))
        assert t.wait(0) is False
        assert t.wait(5) is True
        assert time.monotonic() - t0 >= 0.25 - CLOCKS
        t.set(now - dt.timedelta(hours=1))  # in the past: signaled at once
        assert t.wait(0) is True


def test_synchronization_timer_releases_one_waiter_then_resets() -> None:
    with WaitableTimer(r"Local\synct") as t, Worker() as w1, Worker() as w2:
        for w in (w1, w2):
            w.call("open", cls="WaitableTimer", id="t", args=[r"Local\synct"])
            w.send("call", id="t", method="wait", args=[20])
        until(lambda: waiters(t) >= 2, what="both workers to wait")
        t.set(0.05)
        until(lambda: not (w1.pending() and w2.pending()), what="one waiter released")
        time.sleep(0.2)
        still = [w for w in (w1, w2) if w.pending()]
        assert len(still) == 1, "a synchronization timer released both waiters"
        assert t.wait(0) is False  # reset by the release
        t.set(0.0)
        assert Worker.result(still[0].recv()) is True
        done = w2 if still[0] is w1 else w1
        assert Worker.result(done.recv()) is True


def test_manual_reset_timer_releases_all_and_stays_signaled_until_set_again() -> None:
    with WaitableTimer(r"Local\mant", manual_reset=True) as t, Worker() as w1, Worker() as w2:
        for w in (w1, w2):
            w.call("open", cls="WaitableTimer", id="t", args=[r"Local\mant"])
            w.send("call", id="t", method="wait", args=[20])
        until(lambda: waiters(t) >= 2, what="both workers to wait")
        t.set(0.05)
        assert Worker.result(w1.recv()) is True
        assert Worker.result(w2.recv()) is True
        assert t.wait(0) and t.wait(0)
        t.set(10.0)  # setting it again makes it non-signaled
        assert t.wait(0) is False
        t.cancel()


def test_periodic_timer_signals_every_period_never_early() -> None:
    with WaitableTimer() as t:
        t0 = time.monotonic()
        t.set(0.1, period=0.1)
        times = []
        for _ in range(4):
            assert t.wait(5) is True
            times.append(time.monotonic() - t0)
        for k, at in enumerate(times):
            assert at >= 0.1 + 0.1 * k - CLOCKS, (k, times)
        t.cancel()
        time.sleep(0.15)
        # a synchronization timer: the signal that may have come before cancel is one at most
        t.wait(0)
        assert t.wait(0.25) is False  # cancelled: no more periods


def test_periodic_manual_timer_by_another_process() -> None:
    with WaitableTimer(r"Local\pert", manual_reset=True) as t, Worker() as w:
        w.call("open", cls="WaitableTimer", id="t", args=[r"Local\pert"])
        t0 = time.monotonic()
        w.call("call", id="t", method="set", args=[0.1], kw={"period": 0.05})
        assert t.wait(5) is True
        assert time.monotonic() - t0 >= 0.1 - CLOCKS
        w.call("call", id="t", method="cancel")
        assert t.wait(0) is True  # cancel leaves a signaled timer signaled


def test_cancel_before_due_never_signals_and_leaves_the_state_alone() -> None:
    with WaitableTimer(manual_reset=True) as t:
        t.set(0.1)
        t.cancel()
        t0 = time.monotonic()
        assert t.wait(0.3) is False
        assert time.monotonic() - t0 >= 0.3
    with WaitableTimer() as s:  # a synchronization timer, signaled and not yet taken
        s.set(0.0)
        time.sleep(0.01)
        s.cancel()
        assert s.wait(0) is True  # cancel did not reset it
        assert s.wait(0) is False  # the wait did


def test_timer_bad_arguments() -> None:
    with WaitableTimer() as t:
        for due in (-1, float("nan"), "soon"):
            with pytest.raises(W.InvalidParameter) as ei:
                t.set(due)
            assert "due" in str(ei.value)
        with pytest.raises(W.InvalidParameter) as ei:
            t.set(1.0, period=-0.5)
        assert "period" in str(ei.value)
        assert t.wait(0) is False  # nothing was armed


def test_timed_waits_never_return_early() -> None:
    with Worker() as w:
        m = Mutex(r"Local\early-m")
        w.call("open", cls="Mutex", id="m", args=[r"Local\early-m"])
        assert w.call("call", id="m", method="acquire", args=[0]) is True
        ev, sem, tm = Event(), Semaphore(None, 0, 1), WaitableTimer()
        tm.set(5.0)
        checks = [
            (0.05, lambda tmo: ev.wait(tmo)),
            (0.12, lambda tmo: sem.acquire(tmo)),
            (0.07, lambda tmo: m.acquire(tmo)),
            (0.1, lambda tmo: tm.wait(tmo)),
            (0.09, lambda tmo: wait_any([ev, sem, m, tm], tmo)),
            (0.11, lambda tmo: wait_all([ev, sem], tmo)),
            (0.001, lambda tmo: ev.wait(tmo)),
        ]
        for timeout, op in checks:
            t0 = time.monotonic()
            res = op(timeout)
            took = time.monotonic() - t0
            assert res in (False, None), (timeout, res)
            assert took >= timeout, f"a {timeout} s wait returned after {took:.4f} s"
        t0 = time.monotonic()
        assert ev.wait(0) is False
        assert time.monotonic() - t0 < 1.0  # 0 tests and returns (no wait)
        w.call("call", id="m", method="release")
        for o in (m, ev, sem, tm):
            o.close()


def test_timer_in_wait_any_with_other_objects() -> None:
    with WaitableTimer() as t, closing(Semaphore(None, 0, 1)) as s:
        t0 = time.monotonic()
        t.set(0.15)
        assert wait_any([s, t], 5) == 1
        assert time.monotonic() - t0 >= 0.15 - CLOCKS
        assert t.wait(0) is False  # a synchronization timer: taken by that wait


def test_setting_a_timer_again_reaches_a_waiter_already_sleeping_on_it() -> None:
    with WaitableTimer(r"Local\reset-due") as t, Worker() as w:
        t.set(60.0)
        w.call("open", cls="WaitableTimer", id="t", args=[r"Local\reset-due"])
        w.send("call", id="t", method="wait", args=[5])
        until(lambda: waiters(t) >= 1, what="the worker to wait")
        t0 = time.monotonic()
        t.set(0.1)  # earlier than the waiter planned to wake
        reply = w.recv(10)
        assert Worker.result(reply) is True
        assert reply["t"] - t0 >= 0.1 - CLOCKS
