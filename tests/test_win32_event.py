"""winipc.win32.win32event over winipc.sync: pywin32's shapes, codes and cross-process waits.

Cross-process parts run the other side as a real Python process, written the way a
pywin32 script is (``import win32event`` after ``winipc.win32.install()``).
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from win32util import code_of, finish, kill, until
from winipc.win32 import (
    _handles,
    pywintypes,
    win32api,
    win32con,
    win32event,
    win32file,
    win32pipe,
    winerror,
)

from conftest import run_py, wait_line

PRELUDE = """\
import sys, time
import winipc.win32
assert winipc.win32.install(), "pywin32 is installed here"
import pywintypes, win32api, win32con, win32event, win32file, win32pipe, winerror
"""

W0, WTO, WAB = win32event.WAIT_OBJECT_0, win32event.WAIT_TIMEOUT, win32event.WAIT_ABANDONED


_children: list[subprocess.Popen[str]] = []


def script(code: str) -> subprocess.Popen[str]:
    """Run ``code`` (written as for pywin32) in a new Python process (killed at test end)."""
    proc = run_py(PRELUDE + textwrap.dedent(code), stdin=subprocess.PIPE)
    _children.append(proc)
    return proc


@pytest.fixture(autouse=True)
def reap_children() -> Iterator[None]:
    """A failed test must not leave its other process (and the objects it holds) behind."""
    yield
    while _children:
        kill(_children.pop())








def waiters(h: pywintypes.PyHANDLE) -> int:
    """How many waiters are registered on the object (to know a waiter really waits)."""
    with h.object._sf.locked() as st:
        return int(st.h.nwait)




@pytest.fixture(autouse=True)
def no_handle_leaks() -> Iterator[None]:
    """Every handle a test opens in this process is closed by its end."""
    before = _handles.open_count()
    yield
    assert _handles.open_count() == before, "a PyHANDLE was left open"


# ---------------------------------------------------------------- across processes


def test_pywin32_script_waits_on_a_named_event_another_process_sets() -> None:
    ev = win32event.CreateEvent(None, 0, 0, "Local\\w32ev-job")
    assert win32api.GetLastError() == 0
    child = script(
        r"""
        h = win32event.CreateEvent(None, 0, 0, "Local\\W32EV-JOB")  # names ignore case
        print("GLE", win32api.GetLastError(), flush=True)
        print("RC", win32event.WaitForSingleObject(h, 20000), flush=True)
        print("AGAIN", win32event.WaitForSingleObject(h, 0), flush=True)
        done = win32event.OpenEvent(win32event.EVENT_MODIFY_STATE, 0, "Local\\w32ev-done")
        win32event.SetEvent(done)
        done.Close()
        h.Close()
        """
    )
    done = win32event.CreateEvent(None, 1, 0, "Local\\w32ev-done")
    try:
        assert wait_line(child, "GLE") == f"GLE {winerror.ERROR_ALREADY_EXISTS}"
        until(lambda: waiters(ev) > 0)
        assert win32event.WaitForSingleObject(done, 0) == WTO
        win32event.SetEvent(ev)
        assert wait_line(child, "RC") == "RC 0"
        assert wait_line(child, "AGAIN") == f"AGAIN {WTO}"  # auto-reset: the wait took it
        assert win32event.WaitForSingleObject(done, 10_000) == W0
        assert win32event.WaitForSingleObject(done, 0) == W0  # manual reset: stays set
        finish(child)
    finally:
        ev.Close()
        done.Close()


def test_abandoned_mutex_when_the_owner_process_is_killed() -> None:
    owner = script(
        r"""
        m = win32event.CreateMutex(None, True, "Local\\w32ev-mutex")
        print("OWNED", win32api.GetLastError(), flush=True)
        time.sleep(60)
        """
    )
    try:
        assert wait_line(owner, "OWNED") == "OWNED 0"
        m = win32event.OpenMutex(win32event.SYNCHRONIZE | win32con.MUTEX_MODIFY_STATE, 0, "Local\\w32ev-mutex")
        other = win32event.CreateEvent(None, 0, 0, None)
        try:
            assert win32event.WaitForSingleObject(m, 50) == WTO
            assert code_of(lambda: win32event.ReleaseMutex(m)) == winerror.ERROR_NOT_OWNER
            owner.send_signal(signal.SIGKILL)
            # the smallest signaled index is the abandoned mutex at index 1
            rc = win32event.WaitForMultipleObjects([other, m], False, 10_000)
            assert rc == win32event.WAIT_ABANDONED_0 + 1
            # ownership was granted: recursive acquire, then two releases
            assert win32event.WaitForSingleObject(m, 0) == W0
            win32event.ReleaseMutex(m)
            win32event.ReleaseMutex(m)
            # a released mutex is never reported abandoned again
            assert win32event.WaitForSingleObject(m, 0) == W0
            win32event.ReleaseMutex(m)
        finally:
            m.Close()
            other.Close()
    finally:
        kill(owner)


def test_single_object_wait_abandoned_and_mutex_passes_between_processes() -> None:
    m = win32event.CreateMutex(None, True, "Local\\w32ev-pass")
    child = script(
        r"""
        m = win32event.CreateMutex(None, True, "Local\\w32ev-pass")
        print("GLE", win32api.GetLastError(), flush=True)
        print("RC", win32event.WaitForSingleObject(m, 20000), flush=True)
        sys.stdin.readline()
        os_exit = __import__("os")._exit
        os_exit(0)  # ends while owning it: abandoned
        """
    )
    try:
        assert wait_line(child, "GLE") == f"GLE {winerror.ERROR_ALREADY_EXISTS}"
        until(lambda: waiters(m) > 0)
        win32event.ReleaseMutex(m)
        assert wait_line(child, "RC") == "RC 0"
        assert win32event.WaitForSingleObject(m, 0) == WTO
        finish(child)  # closes stdin: the child exits owning the mutex
        assert win32event.WaitForSingleObject(m, 10_000) == WAB
        win32event.ReleaseMutex(m)
    finally:
        m.Close()


def test_semaphore_across_processes_previous_count_and_too_many_posts() -> None:
    sem = win32event.CreateSemaphore(None, 0, 3, "Local\\w32ev-sem")
    assert win32api.GetLastError() == 0
    child = script(
        r"""
        s = win32event.CreateSemaphore(None, 3, 3, "Local\\w32ev-sem")  # counts ignored: exists
        print("GLE", win32api.GetLastError(), flush=True)
        print("PREV", win32event.ReleaseSemaphore(s, 2), flush=True)
        try:
            win32event.ReleaseSemaphore(s, 2)
        except pywintypes.error as e:
            print("ERR", e.winerror, e.funcname, flush=True)
        s.Close()
        """
    )
    try:
        assert wait_line(child, "GLE") == f"GLE {winerror.ERROR_ALREADY_EXISTS}"
        assert wait_line(child, "PREV") == "PREV 0"
        assert wait_line(child, "ERR") == f"ERR {winerror.ERROR_TOO_MANY_POSTS} ReleaseSemaphore"
        finish(child)
        assert win32event.ReleaseSemaphore(sem, 1) == 2  # unchanged by the failed release
        for _ in range(3):
            assert win32event.WaitForSingleObject(sem, 0) == W0
        assert win32event.WaitForSingleObject(sem, 0) == WTO
        assert code_of(lambda: win32event.ReleaseSemaphore(sem, 0)) == winerror.ERROR_INVALID_PARAMETER
        assert code_of(lambda: win32event.ReleaseSemaphore(sem, 4)) == winerror.ERROR_TOO_MANY_POSTS
        assert win32event.ReleaseSemaphore(sem, 3) == 0
    finally:
        sem.Close()


def test_wait_any_and_all_with_another_process() -> None:
    e1 = win32event.CreateEvent(None, 0, 0, "Local\\w32ev-a")
    e2 = win32event.CreateEvent(None, 0, 0, "Local\\w32ev-b")
    sem = win32event.CreateSemaphore(None, 0, 5, "Local\\w32ev-s")
    child = script(
        r"""
        names = ("Local\\w32ev-a", "Local\\w32ev-b")
        a, b = (win32event.OpenEvent(win32event.EVENT_ALL_ACCESS, 0, n) for n in names)
        s = win32event.OpenSemaphore(win32event.SEMAPHORE_ALL_ACCESS, 0, "Local\\w32ev-s")
        print("READY", flush=True)
        for line in sys.stdin:
            what = line.strip()
            if what == "b":
                win32event.SetEvent(b)
            elif what == "a+s":
                win32event.SetEvent(a)
                win32event.ReleaseSemaphore(s, 1)
            print("DID", what, flush=True)
        for h in (a, b, s):
            h.Close()
        """
    )
    try:
        wait_line(child, "READY")
        assert win32event.WaitForMultipleObjects([e1, e2], False, 0) == WTO
        assert child.stdin is not None
        child.stdin.write("b\n")
        child.stdin.flush()
        assert win32event.WaitForMultipleObjects([e1, e2], False, 10_000) == W0 + 1
        wait_line(child, "DID b")
        assert win32event.WaitForSingleObject(e2, 0) == WTO  # only that object was taken

        # wait-all takes nothing until everything is signaled
        win32event.SetEvent(e1)
        assert win32event.WaitForMultipleObjects([e1, sem], True, 20) == WTO
        assert win32event.WaitForSingleObject(e1, 0) == W0  # still set: it was not taken
        child.stdin.write("a+s\n")
        child.stdin.flush()
        assert win32event.WaitForMultipleObjects([e1, sem], True, 10_000) == W0
        assert wait_line(child, "DID a+s") == "DID a+s"
        assert win32event.WaitForSingleObject(e1, 0) == WTO
        assert win32event.WaitForSingleObject(sem, 0) == WTO
        finish(child)
    finally:
        for h in (e1, e2, sem):
            h.Close()


def test_overlapped_completion_sets_a_named_event_another_process_waits_on() -> None:
    ev = win32event.CreateEvent(None, True, False, "Local\\w32ev-ov")
    name = r"\\.\pipe\w32ev-ov"
    server = win32pipe.CreateNamedPipe(
        name, win32pipe.PIPE_ACCESS_DUPLEX | win32file.FILE_FLAG_OVERLAPPED, 0, 1, 0, 0, 0, None
    )
    waiter = script(
        r"""
        h = win32event.OpenEvent(win32event.SYNCHRONIZE, 0, "Local\\w32ev-ov")
        print("RC", win32event.WaitForSingleObject(h, 20000), flush=True)
        h.Close()
        """
    )
    client = None
    try:
        client = win32file.CreateFile(
            name, win32con.GENERIC_READ | win32con.GENERIC_WRITE, 0, None, win32con.OPEN_EXISTING, 0, None
        )
        win32pipe.ConnectNamedPipe(server, None)
        ov = pywintypes.OVERLAPPED()
        ov.hEvent = ev
        hr, buf = win32file.ReadFile(server, 16, ov)
        assert hr == winerror.ERROR_IO_PENDING
        until(lambda: waiters(ev) > 0)
        win32file.WriteFile(client, b"hello")
        assert wait_line(waiter, "RC") == "RC 0"
        assert win32file.GetOverlappedResult(server, ov, False) == 5
        assert bytes(buf[:5]) == b"hello"
        finish(waiter)
    finally:
        if client is not None:
            client.Close()
        server.Close()
        ev.Close()


def test_process_handles_and_pipes_are_waitable() -> None:
    child = script("sys.stdin.readline()\n")
    proc = win32api.OpenProcess(win32con.SYNCHRONIZE, 0, child.pid)
    r, w = win32pipe.CreatePipe(None, 0)
    ev = win32event.CreateEvent(None, 0, 0, None)
    try:
        assert win32event.WaitForSingleObject(proc, 0) == WTO
        assert win32event.WaitForSingleObject(r, 0) == WTO
        win32file.WriteFile(w, b"x")
        assert win32event.WaitForMultipleObjects([ev, r], False, 0) == W0 + 1
        finish(child)
        assert win32event.WaitForMultipleObjects([ev, proc], False, 10_000) == W0 + 1
        assert code_of(lambda: win32api.OpenProcess(win32con.SYNCHRONIZE, 0, child.pid)) in (
            winerror.ERROR_INVALID_PARAMETER,
        )
    finally:
        for h in (proc, r, w, ev):
            h.Close()


# ---------------------------------------------------------------- in one process


def test_get_last_error_is_per_thread_and_set_by_every_create() -> None:
    a = win32event.CreateMutex(None, False, "Local\\w32ev-gle")
    b = win32event.CreateMutex(None, False, "Local\\w32ev-gle")
    assert win32api.GetLastError() == winerror.ERROR_ALREADY_EXISTS
    seen: list[int] = []
    handles: list[pywintypes.PyHANDLE] = []

    def other() -> None:
        seen.append(win32api.GetLastError())
        handles.append(win32event.CreateWaitableTimer(None, 0, "Local\\w32ev-gle-t"))
        seen.append(win32api.GetLastError())
        handles.append(win32event.CreateWaitableTimer(None, 0, "Local\\w32ev-gle-t"))
        seen.append(win32api.GetLastError())

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    try:
        assert seen == [0, 0, winerror.ERROR_ALREADY_EXISTS]
        assert win32api.GetLastError() == winerror.ERROR_ALREADY_EXISTS  # untouched
        c = win32event.CreateSemaphore(None, 0, 1, None)
        assert win32api.GetLastError() == 0
        c.Close()
        # a failed call sets it too
        assert code_of(lambda: win32event.OpenEvent(win32event.SYNCHRONIZE, 0, "Local\\w32ev-none")) == 2
        assert win32api.GetLastError() == winerror.ERROR_FILE_NOT_FOUND
    finally:
        for h in (a, b, *handles):
            h.Close()


def test_mutex_is_owned_per_thread_and_recursive() -> None:
    m = win32event.CreateMutex(None, True, None)
    results: list[Any] = []

    def other() -> None:
        results.append(win32event.WaitForSingleObject(m, 0))
        results.append(code_of(lambda: win32event.ReleaseMutex(m)))
        results.append(win32event.WaitForSingleObject(m, 10_000))
        win32event.ReleaseMutex(m)

    try:
        assert win32event.WaitForSingleObject(m, 0) == W0  # recursive: count 2
        t = threading.Thread(target=other)
        t.start()
        until(lambda: len(results) >= 2)
        assert results == [WTO, winerror.ERROR_NOT_OWNER]
        win32event.ReleaseMutex(m)
        time.sleep(0.05)
        assert len(results) == 2  # still owned once
        win32event.ReleaseMutex(m)
        t.join(10)
        assert results[2] == W0
        assert code_of(lambda: win32event.ReleaseMutex(m)) == winerror.ERROR_NOT_OWNER
    finally:
        m.Close()


def test_open_access_and_type_errors() -> None:
    ev = win32event.CreateEvent(None, 1, 0, "Local\\w32ev-acc")
    sync_only = win32event.OpenEvent(win32event.SYNCHRONIZE, 0, "Local\\w32ev-acc")
    modify_only = win32event.OpenEvent(win32event.EVENT_MODIFY_STATE, False, "Local\\w32ev-acc")
    try:
        assert code_of(lambda: win32event.SetEvent(sync_only)) == winerror.ERROR_ACCESS_DENIED
        win32event.SetEvent(modify_only)
        assert win32event.WaitForSingleObject(sync_only, 0) == W0
        assert code_of(lambda: win32event.WaitForSingleObject(modify_only, 0)) == winerror.ERROR_ACCESS_DENIED
        # another type at the name: 6, as Windows
        assert code_of(lambda: win32event.CreateMutex(None, 0, "Local\\w32ev-acc")) == winerror.ERROR_INVALID_HANDLE
        assert code_of(lambda: win32event.OpenSemaphore(win32event.SYNCHRONIZE, 0, "Local\\w32ev-acc")) == winerror.ERROR_INVALID_HANDLE
        assert code_of(lambda: win32event.ReleaseMutex(ev)) == winerror.ERROR_INVALID_HANDLE
        assert code_of(lambda: win32event.OpenMutex(win32event.SYNCHRONIZE, 0, "Local\\w32ev-no")) == winerror.ERROR_FILE_NOT_FOUND
        assert code_of(lambda: win32event.CreateSemaphore(None, 2, 1, None)) == winerror.ERROR_INVALID_PARAMETER
        with pytest.raises(TypeError):
            win32event.WaitForSingleObject("not a handle", 0)
        with pytest.raises(TypeError, match="list of integers"):
            win32event.WaitForMultipleObjects([ev, "x"], False, 0)
        unnamed = win32event.CreateEvent(None, 0, 0, "")  # an empty name: unnamed, as Windows
        assert win32api.GetLastError() == 0
        unnamed.Close()
        with pytest.raises(TypeError):
            win32event.OpenEvent(win32event.SYNCHRONIZE, 0, None)
    finally:
        for h in (ev, sync_only, modify_only):
            h.Close()
    assert code_of(lambda: win32event.SetEvent(ev)) == winerror.ERROR_INVALID_HANDLE
    with pytest.raises(pywintypes.error) as err:
        win32event.WaitForSingleObject(0x7FFF_FFF0, 0)
    assert err.value.args[:2] == (winerror.ERROR_INVALID_HANDLE, "WaitForSingleObject")


def test_pulse_event_releases_current_waiters_only() -> None:
    ev = win32event.CreateEvent(None, 1, 0, None)
    woke: list[int] = []
    try:
        threads = [
            threading.Thread(target=lambda: woke.append(win32event.WaitForSingleObject(ev, 10_000)))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        until(lambda: waiters(ev) == 2)
        win32event.PulseEvent(ev)  # manual reset: every current waiter
        for t in threads:
            t.join(10)
        assert woke == [W0, W0]
        assert win32event.WaitForSingleObject(ev, 0) == WTO  # left non-signaled
        win32event.PulseEvent(ev)  # nobody waits: nothing happens
        assert win32event.WaitForSingleObject(ev, 0) == WTO
    finally:
        ev.Close()


def test_waitable_timer_relative_absolute_periodic_and_cancel() -> None:
    t = win32event.CreateWaitableTimer(None, 0, None)
    manual = win32event.CreateWaitableTimerEx(
        None, "Local\\w32ev-timer", win32event.CREATE_WAITABLE_TIMER_MANUAL_RESET, win32event.TIMER_ALL_ACCESS
    )
    try:
        assert win32event.WaitForSingleObject(t, 0) == WTO  # never set: inactive
        start = time.monotonic()
        win32event.SetWaitableTimer(t, -2_000_000, 0, None, None, 0)  # 200 ms from now
        assert win32event.WaitForSingleObject(t, 0) == WTO
        assert win32event.WaitForSingleObject(t, 10_000) == W0
        assert time.monotonic() - start >= 0.195
        assert win32event.WaitForSingleObject(t, 0) == WTO  # synchronization timer: reset

        # absolute: a UTC FILETIME 300 ms ahead, and a datetime
        filetime = time.time_ns() // 100 + 116_444_736_000_000_000 + 3_000_000
        start = time.monotonic()
        win32event.SetWaitableTimer(manual, filetime, 0, None, None, False)
        assert win32event.WaitForSingleObject(manual, 0) == WTO
        assert win32event.WaitForSingleObject(manual, 10_000) == W0
        assert time.monotonic() - start >= 0.2
        assert win32event.WaitForSingleObject(manual, 0) == W0  # notification timer stays set
        win32event.SetWaitableTimer(manual, 0, 0, None, None, 0)  # 1601: long past
        assert win32event.WaitForSingleObject(manual, 1000) == W0
        soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(milliseconds=100)
        win32event.SetWaitableTimer(manual, soon, 0, None, None, 0)
        assert win32event.WaitForSingleObject(manual, 0) == WTO
        assert win32event.WaitForSingleObject(manual, 10_000) == W0

        # periodic, then cancelled
        win32event.SetWaitableTimer(t, -1, 30, None, None, 0)
        for _ in range(3):
            assert win32event.WaitForSingleObject(t, 10_000) == W0
        win32event.CancelWaitableTimer(t)
        assert win32event.WaitForSingleObject(t, 100) == WTO

        with pytest.raises(TypeError):
            win32event.SetWaitableTimer(t, -1, 0, print, None, 0)
        assert code_of(lambda: win32event.SetWaitableTimer(t, -1, -5, None, None, 0)) == winerror.ERROR_INVALID_PARAMETER
        # the handle of CreateWaitableTimerEx has the access asked for
        opened = win32event.OpenWaitableTimer(win32event.SYNCHRONIZE, 0, "Local\\w32ev-timer")
        try:
            assert code_of(lambda: win32event.CancelWaitableTimer(opened)) == winerror.ERROR_ACCESS_DENIED
        finally:
            opened.Close()
    finally:
        t.Close()
        manual.Close()


def test_msg_wait_waits_on_handles_only() -> None:
    ev = win32event.CreateEvent(None, 1, 1, None)
    off = win32event.CreateEvent(None, 0, 0, None)
    try:
        assert win32event.MsgWaitForMultipleObjects([off, ev], False, 0, win32event.QS_ALLINPUT) == W0 + 1
        assert win32event.MsgWaitForMultipleObjects([off], False, 20, win32event.QS_ALLINPUT) == WTO
        # wait-all also needs input in the queue, which never comes yet: time-out, nothing taken
        win32event.SetEvent(off)
        assert win32event.MsgWaitForMultipleObjects([off, ev], True, 20, win32event.QS_ALLINPUT) == WTO
        flags = win32con.MWMO_WAITALL | win32con.MWMO_INPUTAVAILABLE
        assert win32event.MsgWaitForMultipleObjectsEx([off, ev], 20, win32event.QS_ALLINPUT, flags) == WTO
        assert win32event.MsgWaitForMultipleObjectsEx([off, ev], 0, win32event.QS_ALLINPUT, 0) == W0
        assert win32event.MsgWaitForMultipleObjects([], False, 10, win32event.QS_ALLINPUT) == WTO
        too_many = [ev] * win32event.MAXIMUM_WAIT_OBJECTS
        assert code_of(lambda: win32event.MsgWaitForMultipleObjects(too_many, False, 0, 0)) == winerror.ERROR_INVALID_PARAMETER
        assert win32event.WaitForMultipleObjects(too_many, False, 0) == W0
        assert code_of(lambda: win32event.WaitForMultipleObjects([*too_many, ev], False, 0)) == winerror.ERROR_INVALID_PARAMETER
        assert code_of(lambda: win32event.WaitForMultipleObjects([ev, ev], True, 0)) == winerror.ERROR_INVALID_PARAMETER
        assert win32event.WaitForMultipleObjectsEx([off, ev], False, 0, True) == W0 + 1
        assert win32event.WaitForSingleObjectEx(ev, win32event.INFINITE, False) == W0
        assert win32event.WaitForSingleObject(ev, 0xFFFF_FFFF) == W0
    finally:
        ev.Close()
        off.Close()


def test_signal_object_and_wait() -> None:
    a = win32event.CreateEvent(None, 0, 0, None)
    sem = win32event.CreateSemaphore(None, 0, 1, None)
    try:
        assert win32event.SignalObjectAndWait(sem, a, 0, False) == WTO
        assert win32event.SignalObjectAndWait(a, a, 0, False) == W0
        assert code_of(lambda: win32event.SignalObjectAndWait(sem, a, 0, False)) == winerror.ERROR_TOO_MANY_POSTS
    finally:
        a.Close()
        sem.Close()


def test_no_object_outlives_its_last_handle(winipc_root: Any) -> None:
    h = win32event.CreateEvent(None, 0, 0, "Local\\w32ev-life")
    h2 = win32event.OpenEvent(win32event.SYNCHRONIZE, 0, "Local\\w32ev-life")
    h.Close()
    assert win32event.WaitForSingleObject(h2, 0) == WTO
    win32api.CloseHandle(h2)
    assert code_of(lambda: win32event.OpenEvent(win32event.SYNCHRONIZE, 0, "Local\\w32ev-life")) == 2
    assert not [p for d in winipc_root.iterdir() if d.name.startswith("local-") for p in d.iterdir()]

