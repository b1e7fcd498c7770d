"""Handles that cross processes (inheritance, duplication over a pipe) and other users."""

from __future__ import annotations

import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import winipc
from test_sync_helpers import Worker, leftovers, until, waiters
from winipc import SecurityAttributes, pipes
from winipc import errors as W
from winipc.sync import Event, Mutex, Semaphore
from xuser import USER
from xuser import python_for as _python_for
from xuser import second_user as _second_user

from conftest import child_env

CHILD = r"""
import sys
import winipc
from winipc import errors as W
ev = winipc.inherited_handle(int(sys.argv[1]))
sem = winipc.inherited_handle(int(sys.argv[2]))
m = winipc.inherited_handle(int(sys.argv[3]))
print(type(ev).__name__, type(sem).__name__, type(m).__name__, ev.name, flush=True)
assert sem.acquire(5)
assert m.acquire(5)      # and ends owning it: abandoned
ev.set()
"""


def test_unnamed_objects_are_inherited_by_a_spawned_child() -> None:
    """The child finds each handle by the parent's int(handle), as on Windows."""
    ev, sem, m = Event(), Semaphore(None, 1, 1), Mutex()
    r, w = pipes.create_pipe()
    try:
        proc = winipc.spawn(
            [sys.executable, "-c", CHILD, str(int(ev)), str(int(sem)), str(int(m))],
            inherit=[ev, sem, m],
            stdout=w,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        w.close()
        try:
            assert proc.wait(20) == 0, proc.popen.stderr.read().decode() if proc.popen.stderr else ""
            assert r.read(100, timeout=20).split() == [b"Event", b"Semaphore", b"Mutex", b"None"]
            assert ev.wait(0) is True  # set by the child through its inherited handle
        finally:
            proc.kill()
            proc.popen.wait()
            proc.close()
            if proc.popen.stderr:
                proc.popen.stderr.close()
        assert sem.count == 0  # the child took the count
        with pytest.raises(W.AbandonedMutex):
            m.acquire(5)  # the child ended owning it
        m.release()
    finally:
        r.close()
        w.close()
        for o in (ev, sem, m):
            o.close()
    assert leftovers() == []


def test_unnamed_event_duplicated_over_a_pipe_outlives_the_senders_handle() -> None:
    ev = Event(manual_reset=True)
    with Worker() as w:
        w.call("pipe_server", id="p", args=[r"\\.\pipe\dup-sync"])
        w.send("call", id="p", method="connect", args=[20])
        conn = pipes.connect(r"\\.\pipe\dup-sync")
        Worker.result(w.recv())
        conn.send_handle(ev)
        assert w.call("recv_handle", id="p", into="e") == "Event"
        w.send("call", id="e", method="wait", args=[20])
        until(lambda: waiters(ev) >= 1, what="the worker to wait on its copy")
        ev.set()
        assert Worker.result(w.recv()) is True  # one object, two processes
        ev.close()  # ours closed: the worker's copy keeps the object alive
        assert len(_kernel_objects()) == 1
        assert w.call("call", id="e", method="is_set") is True
        w.call("call", id="e", method="reset")
        assert w.call("call", id="e", method="wait", args=[0]) is False
        w.call("close", id="e")
        assert _kernel_objects() == []  # the last handle closed: gone
        conn.close()


def _kernel_objects() -> list[str]:
    return [o for o in leftovers() if not o.startswith("pipe:")]


def test_duplicated_semaphore_and_mutex_keep_their_semantics() -> None:
    sem, m = Semaphore(None, 0, 2), Mutex()
    with Worker() as w:
        w.call("pipe_server", id="p", args=[r"\\.\pipe\dup-sm"])
        w.send("call", id="p", method="connect", args=[20])
        conn = pipes.connect(r"\\.\pipe\dup-sm")
        Worker.result(w.recv())
        conn.send_handle(sem)
        conn.send_handle(m)
        assert w.call("recv_handle", id="p", into="s") == "Semaphore"
        assert w.call("recv_handle", id="p", into="m") == "Mutex"
        assert w.call("call", id="s", method="release", args=[2]) == 0
        with pytest.raises(W.TooManyPosts):
            w.call("call", id="s", method="release")
        assert sem.count == 2
        assert w.call("call", id="m", method="acquire", args=[0]) is True
        assert m.acquire(0) is False
        conn.close()
        w.call("close", id="p")
        w.kill()  # dies owning it
    with pytest.raises(W.AbandonedMutex):
        m.acquire(5)
    m.release()
    sem.close()
    m.close()


# ============================================================================ other users


def _as_user(user: pwd.struct_passwd, code: str, root: Path, src: Path) -> subprocess.Popen[str]:
    env = {"WINIPC_ROOT": str(root), "PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    return subprocess.Popen(
        [_python_for(user), "-c", code], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd="/",
    )


def _run_as(user: pwd.struct_passwd, code: str, root: Path, src: Path) -> str:
    proc = _as_user(user, code, root, src)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


INTRUDER = r"""
from winipc import errors as W
from winipc.sync import Event, Mutex, Semaphore, WaitableTimer
for cls, name, make in [
    (Event, r"Global\xs-event", lambda n: Event(n)),
    (Mutex, r"Global\xs-mutex", lambda n: Mutex(n)),
    (Semaphore, r"Global\xs-sem", lambda n: Semaphore(n, 0, 1)),
    (WaitableTimer, r"Global\xs-timer", lambda n: WaitableTimer(n)),
]:
    for how, fn in (("open", lambda: cls.open(name)), ("create", lambda: make(name))):
        try:
            fn().close()
            print(cls.__name__, how, "allowed")
        except W.AccessDenied as e:
            print(cls.__name__, how, "denied", e.winerror)
        except Exception as e:
            print(cls.__name__, how, "error", type(e).__name__)
# Local\ is per user: the same name is another object
e = Event(r"Local\xs-local")
print("local", "exists" if e.already_exists else "new")
e.close()
"""


def test_second_user_refused_on_owner_only_objects(shared_root: tuple[Path, Path]) -> None:
    user = _second_user()
    root, src = shared_root
    mine = [
        Event(r"Global\xs-event"),
        Mutex(r"Global\xs-mutex"),
        Semaphore(r"Global\xs-sem", 0, 1),
        winipc.sync.WaitableTimer(r"Global\xs-timer"),
        Event(r"Local\xs-local"),
    ]
    try:
        out = _run_as(user, INTRUDER, root, src).split("\n")
    finally:
        for o in mine:
            o.close()
    for cls in ("Event", "Mutex", "Semaphore", "WaitableTimer"):
        for how in ("open", "create"):
            assert f"{cls} {how} denied 5" in out, out
    assert "local new" in out, out


ALLOWED = r"""
import sys
from winipc.sync import Event
e = Event.open(r"Global\xs-shared")
e.set()
e.close()
print("set", flush=True)
"""


def test_second_user_allowed_by_name_can_open_and_set(shared_root: tuple[Path, Path]) -> None:
    user = _second_user()
    root, src = shared_root
    ev = Event(r"Global\xs-shared", security=SecurityAttributes(allow=[(f"user:{USER}", "rw")]))
    try:
        assert _run_as(user, ALLOWED, root, src).strip() == "set"
        assert ev.wait(5) is True
    finally:
        ev.close()


SQUATTER = r"""
import sys
from winipc.sync import Event
e = Event(r"Global\xs-squat", manual_reset=True, initial_state=True)
print("squatting", flush=True)
sys.stdin.readline()
e.close()
"""


def test_foreign_object_at_a_name_is_refused_not_adopted(shared_root: tuple[Path, Path]) -> None:
    """Another user's live event (owner-only) holds the name: we may neither create nor open it."""
    user = _second_user()
    root, src = shared_root
    proc = _as_user(user, SQUATTER, root, src)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "squatting"
        adopted = []
        for how, fn in (
            ("create", lambda: Event(r"Global\xs-squat")),
            ("open", lambda: Event.open(r"Global\xs-squat")),
            ("create as mutex", lambda: Mutex(r"Global\xs-squat")),
        ):
            try:
                obj = fn()
            except W.AccessDenied as exc:
                assert exc.winerror == 5
                continue
            except W.InvalidHandle:
                assert "mutex" in how  # another type at the name: Windows says 6 too
                continue
            adopted.append(f"{how}: got {obj!r} (set={getattr(obj, 'is_set', lambda: '?')()})")
            obj.close()
        assert not adopted, f"another user's owner-only object was adopted: {adopted}"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(20)
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()


def test_foreign_squatter_directory_at_a_name_is_refused(shared_root: tuple[Path, Path]) -> None:
    """Another user plants an owner-only look-alike of an event; creating must not adopt it."""
    user = _second_user()
    root, src = shared_root
    from winipc._core.names import parse

    path = root / parse(r"Global\xs-planted", family="kernel").storage_id
    plant = r"""
import json, os, sys, fcntl, struct
d = sys.argv[1]
os.mkdir(d, 0o755)
open(os.path.join(d, "record"), "w").write(json.dumps({"v": 1, "type": "event", "name": "x",
    "owner": os.getuid(), "creator_pid": os.getpid(), "created": 0, "attrs": {},
    "security": {"allow": [], "deny": []}}))
h = os.open(os.path.join(d, "holders"), os.O_RDWR | os.O_CREAT, 0o600)
st = os.open(os.path.join(d, "state"), os.O_RDWR | os.O_CREAT, 0o600)
os.write(st, bytes(4096))
fcntl.fcntl(h, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 1, 1, 0))
print("planted", flush=True)
sys.stdin.readline()
"""
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [_python_for(user), "-c", plant, str(path)], user=user.pw_uid, group=user.pw_gid,
        extra_groups=[], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "planted"
        with pytest.raises(W.AccessDenied):
            Event(r"Global\xs-planted").close()
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()
        shutil.rmtree(path, ignore_errors=True)
