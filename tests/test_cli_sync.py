"""``winipc event|mutex|sem``: every command as a real process, against real holders.

Holders (``event create``, ``sem create``, ``mutex hold``) are started as processes and
stopped as a user would (SIGTERM or Ctrl-C); whatever a failed test leaves running is
killed by the ``procs`` fixture, and conftest checks that no object is left behind.
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time

from click.testing import CliRunner

from winipc import sync
from winipc.cli import cli

from conftest import child_env


def winipc_cmd(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "winipc", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start(procs: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "winipc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child_env(),
    )
    procs.append(p)
    return p


def holder(procs: list[subprocess.Popen[str]], *args: str) -> tuple[subprocess.Popen[str], str]:
    """``winipc ARGS`` as a process, once it says it is holding the object."""
    p = start(procs, *args)
    assert p.stderr is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stderr], [], [], max(0.0, deadline - time.monotonic()))
        line = p.stderr.readline() if ready else ""
        if line.startswith("holding "):
            return p, line.strip()
        if not line:
            break
    p.kill()
    _, err = p.communicate()
    raise AssertionError(f"holder did not start: {err}")


def stop(p: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    """Stop a holder as a user would; it must exit cleanly."""
    p.send_signal(sig)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    return out, err


def waiters(obj: sync.SyncObject) -> int:
    with obj._sf.locked() as st:
        return int(st.h.nwait)


def until(cond: object, timeout: float = 10.0) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# ---------------------------------------------------------------------------- events


def test_event_create_holds_until_sigterm(procs: list[subprocess.Popen[str]]) -> None:
    p, line = holder(procs, "event", "create", "CliEvent", "--manual")
    assert line.startswith("holding Local\\CliEvent: created manual-reset event, non-signaled")
    assert "Ctrl-C or SIGTERM" in line
    ls = winipc_cmd("ls", "--type", "event", "--json")
    assert "Local\\\\CliEvent" in ls.stdout
    res = winipc_cmd("event", "wait", "CliEvent", "--timeout", "0.1")
    assert res.returncode == 1
    assert res.stderr.strip() == "timeout: Local\\CliEvent is still not signaled after 0.1 s"
    assert winipc_cmd("event", "wait", "cliEVENT", "--timeout", "0").returncode == 1  # case
    assert winipc_cmd("event", "set", "CliEvent").stdout.strip() == "set Local\\CliEvent"
    for _ in range(2):  # manual reset: stays set
        res = winipc_cmd("event", "wait", "CliEvent", "--timeout", "0")
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "Local\\CliEvent signaled"
    assert winipc_cmd("event", "reset", "CliEvent").returncode == 0
    assert winipc_cmd("event", "wait", "CliEvent", "--timeout", "0").returncode == 1
    stop(p)
    gone = winipc_cmd("event", "set", "CliEvent")
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: [WinError 2 ERROR_FILE_NOT_FOUND] ")


def test_event_wait_is_woken_by_set_from_another_process(procs: list[subprocess.Popen[str]]) -> None:
    ev = sync.Event("Local\\CliWake")  # auto reset, held by the test
    try:
        waiter = start(procs, "event", "wait", "CliWake", "--timeout", "20")
        until(lambda: waiters(ev) > 0)
        assert winipc_cmd("event", "set", "Local\\CliWake").returncode == 0
        out, err = waiter.communicate(timeout=15)
        assert waiter.returncode == 0, err
        assert out.strip() == "Local\\CliWake signaled"
        assert not ev.is_set()  # the wait took the auto-reset signal
    finally:
        ev.close()


def test_event_pulse_releases_the_current_waiters(procs: list[subprocess.Popen[str]]) -> None:
    p, line = holder(procs, "event", "create", "CliPulse", "--manual", "--initial")
    assert "signaled" in line and "non-signaled" not in line
    assert winipc_cmd("event", "reset", "CliPulse").returncode == 0
    ev = sync.Event.open("Local\\CliPulse")
    try:
        waiters_ = [start(procs, "event", "wait", "CliPulse", "--timeout", "20") for _ in range(2)]
        until(lambda: waiters(ev) == 2)
        assert winipc_cmd("event", "pulse", "CliPulse").stdout.strip() == "pulsed Local\\CliPulse"
        for w in waiters_:
            _, err = w.communicate(timeout=15)
            assert w.returncode == 0, err
        assert not ev.is_set()
    finally:
        ev.close()
    _, err = stop(p, signal.SIGINT)  # Ctrl-C
    assert "stopping" in err


def test_event_create_opens_an_existing_event_and_type_clash(procs: list[subprocess.Popen[str]]) -> None:
    ev = sync.Event("Local\\CliOpen", initial_state=True)
    try:
        p, line = holder(procs, "event", "create", "CliOpen")
        assert line == "holding Local\\CliOpen: opened the existing event; Ctrl-C or SIGTERM to close it"
        assert ev.is_set()  # left as it was
        stop(p)
        clash = winipc_cmd("mutex", "wait", "CliOpen", "--timeout", "0")
        assert clash.returncode == 1
        assert clash.stderr.startswith("error: [WinError 6 ERROR_INVALID_HANDLE] ")
    finally:
        ev.close()


# ---------------------------------------------------------------------------- mutexes


def test_mutex_hold_and_wait(procs: list[subprocess.Popen[str]]) -> None:
    p, line = holder(procs, "mutex", "hold", "CliMutex", "--seconds", "30")
    assert line.startswith("holding Local\\CliMutex: owned by this process")
    busy = winipc_cmd("mutex", "wait", "CliMutex", "--timeout", "0.1")
    assert busy.returncode == 1
    assert busy.stderr.strip() == "timeout: Local\\CliMutex is still owned by another thread after 0.1 s"
    keep = sync.Mutex.open("Local\\CliMutex")
    try:
        waiter = start(procs, "mutex", "wait", "CliMutex", "--timeout", "20")
        until(lambda: waiters(keep) > 0)
        out, _ = stop(p)  # SIGTERM: released before the holder exits
        assert out.strip() == "released Local\\CliMutex"
        out, err = waiter.communicate(timeout=15)
        assert waiter.returncode == 0, err
        assert out.strip() == "Local\\CliMutex free"
    finally:
        keep.close()

    p, _ = holder(procs, "mutex", "hold", "CliMutex2", "--seconds", "0.2")
    out, err = p.communicate(timeout=15)
    assert p.returncode == 0, err
    assert out.strip() == "released Local\\CliMutex2"


def test_mutex_abandoned_by_a_killed_holder(procs: list[subprocess.Popen[str]]) -> None:
    p, _ = holder(procs, "mutex", "hold", "CliAbandon")
    keep = sync.Mutex.open("Local\\CliAbandon")  # keeps the object alive after the kill
    try:
        p.kill()
        p.communicate()
        res = winipc_cmd("mutex", "wait", "CliAbandon", "--timeout", "10")
        assert res.returncode == 0, res.stderr
        assert "WAIT_ABANDONED" in res.stderr
        assert res.stdout.strip() == "Local\\CliAbandon free"
        res = winipc_cmd("mutex", "wait", "CliAbandon", "--timeout", "0")
        assert res.returncode == 0 and "WAIT_ABANDONED" not in res.stderr
    finally:
        keep.close()


# ---------------------------------------------------------------------------- semaphores


def test_semaphore_create_release_wait(procs: list[subprocess.Popen[str]]) -> None:
    p, line = holder(procs, "sem", "create", "CliSem", "--initial", "1", "--max", "3")
    assert line.startswith("holding Local\\CliSem: created with count 1, maximum 3")
    assert winipc_cmd("sem", "release", "CliSem").stdout.strip() == "1"
    assert winipc_cmd("sem", "release", "CliSem", "1").stdout.strip() == "2"
    over = winipc_cmd("sem", "release", "CliSem", "2")
    assert over.returncode == 1
    assert over.stderr.startswith("error: [WinError 298 ERROR_TOO_MANY_POSTS] ")
    for _ in range(3):
        res = winipc_cmd("sem", "wait", "CliSem", "--timeout", "0")
        assert res.returncode == 0, res.stderr
    empty = winipc_cmd("sem", "wait", "CliSem", "--timeout", "0")
    assert empty.returncode == 1
    assert empty.stderr.strip() == "timeout: Local\\CliSem still has a count of 0 after 0 s"

    again, line = holder(procs, "sem", "create", "CliSem", "--initial", "2", "--max", "9")
    assert "opened the existing semaphore (count 0, maximum 3)" in line
    stop(again)
    stop(p)
    assert winipc_cmd("sem", "wait", "CliSem", "--timeout", "0").returncode == 1


def test_usage_errors_and_help() -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["sem", "create", "X", "--initial", "3", "--max", "2"])
    assert bad.exit_code == 2
    assert "--initial" in bad.output
    assert runner.invoke(cli, ["sem", "release", "X", "0"]).exit_code == 2
    assert runner.invoke(cli, ["event", "wait", "X", "--timeout", "-1"]).exit_code == 2
    top = runner.invoke(cli, ["--help"])
    for group in ("event", "mutex", "sem"):
        assert f"  {group} " in top.output
    helped = runner.invoke(cli, ["event", "create", "--help"])
    assert "Ctrl-C or SIGTERM" in helped.output and "vanish" in helped.output
    missing = runner.invoke(cli, ["sem", "release", "CliNoSuch"])
    assert missing.exit_code == 1
    assert "error: [WinError 2 ERROR_FILE_NOT_FOUND]" in missing.output
