"""Helpers shared by the winipc.sync tests (this module holds no tests).

* :class:`Worker`: a real Python process that holds synchronization objects of its own
  and runs commands on them (JSON lines over stdin/stdout), so every cross-process test
  drives the other side step by step and gets each result (or error, rebuilt as the
  same ``winipc.errors`` class) back.
* :func:`in_thread`: a thread that records its result and closes its wait doorbell
  before it ends (see ``test_thread_that_waited_leaves_no_unclosed_socket``).
* :func:`waiters`: how many waiters an object has registered (to know a blocked
  waiter is really blocked before the test changes the object).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from winipc import errors as W
from winipc._core import namespace

from conftest import SRC

WORKER = r"""
import json, os, sys, time
import winipc
from winipc import errors as W, pipes, sync

objs = {}


def reply(**kw):
    kw["t"] = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
    os.write(1, (json.dumps(kw) + "\n").encode())


def run(cmd):
    op = cmd["op"]
    oid = cmd.get("id")
    args, kw = cmd.get("args", []), cmd.get("kw", {})
    if op == "new":
        o = objs[oid] = getattr(sync, cmd["cls"])(*args, **kw)
        return {"already_exists": o.already_exists}
    if op == "open":
        objs[oid] = getattr(sync, cmd["cls"]).open(*args, **kw)
        return None
    if op == "inherit":
        objs[oid] = winipc.inherited_handle(cmd["value"])
        return type(objs[oid]).__name__
    if op == "pipe_server":
        objs[oid] = pipes.PipeInstance(*args, **kw)
        return None
    if op == "recv_handle":
        h = objs[oid].recv_handle(timeout=20)
        objs[cmd["into"]] = h
        return type(h).__name__
    if op == "write":
        return objs[oid].write(cmd["data"].encode())
    if op == "call":
        return getattr(objs[oid], cmd["method"])(*args, **kw)
    if op == "attr":
        return getattr(objs[oid], cmd["attr"])
    if op == "wait_any":
        return sync.wait_any([objs[i] for i in cmd["ids"]], cmd.get("timeout"))
    if op == "wait_all":
        return sync.wait_all([objs[i] for i in cmd["ids"]], cmd.get("timeout"))
    if op == "close":
        objs.pop(oid).close()
        return None
    if op == "exit":
        os._exit(cmd.get("code", 0))
    raise ValueError(f"unknown op {op!r}")


reply(ok=os.getpid())
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    cmd = json.loads(line)
    try:
        res = run(cmd)
    except W.WinIPCError as exc:
        reply(err=type(exc).__name__, winerror=exc.winerror, msg=exc.strerror,
              index=getattr(exc, "index", None))
    else:
        reply(ok=res)
for o in objs.values():
    o.close()
"""


class Worker:
    """A helper process that runs sync operations on command.

    ``w.call("new", cls="Event", id="e", args=["Local\\x"])`` creates an object in the
    worker; ``w.call("call", id="e", method="set")`` calls a method. Errors come back as
    the same ``winipc.errors`` class (``.winerror`` kept). ``send`` + ``recv`` split a
    call that blocks in the worker; ``recv`` returns the raw reply (with ``t``, the
    worker's ``time.monotonic()`` when it answered).
    """

    def __init__(self, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()) -> None:
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = SRC + os.pathsep + full_env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            bufsize=0,
            pass_fds=pass_fds,
        )
        self._buf = b""
        self.outstanding = 0  # commands sent and not answered yet
        self.pid = int(self.recv(30.0)["ok"])

    def send(self, op: str, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **cmd}) + "\n").encode())
        self.outstanding += 1

    def recv(self, timeout: float = 20.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"worker {self.proc.pid} gave no answer within {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"worker {self.proc.pid} ended; stderr:\n{err}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        self.outstanding = max(0, self.outstanding - 1)
        return reply

    def pending(self) -> bool:
        """True when a command was sent and its answer has not arrived (still blocked)."""
        assert self.proc.stdout is not None
        if not self.outstanding:
            return False
        return b"\n" not in self._buf and not select.select([self.proc.stdout], [], [], 0)[0]

    @staticmethod
    def result(reply: dict[str, Any]) -> Any:
        """The reply's value, or its error raised as the matching winipc.errors class."""
        if "err" in reply:
            cls = getattr(W, reply["err"], W.WinIPCError)
            if cls is W.AbandonedMutex:
                raise W.AbandonedMutex(reply["msg"], index=reply["index"] or 0)
            raise cls(reply["msg"], winerror=reply["winerror"])
        return reply["ok"]

    def call(self, op: str, within: float = 20.0, **cmd: Any) -> Any:
        """Run a command (answered within ``within`` s); its value, or its error raised here."""
        return self.result(self.ask(op, within, **cmd))

    def ask(self, op: str, within: float = 20.0, **cmd: Any) -> dict[str, Any]:
        """Run a command; the raw reply (``ok`` or ``err``/``winerror``)."""
        self.send(op, **cmd)
        return self.recv(within)

    def close(self) -> None:
        if self.outstanding and self.proc.poll() is None:
            self.proc.kill()  # still blocked in a command: no clean end to wait for
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(10)
        except (subprocess.TimeoutExpired, OSError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for f in (self.proc.stdout, self.proc.stderr):
                if f:
                    f.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def workers(n: int) -> Iterator[list[Worker]]:
    """``n`` workers started side by side (their interpreters start in parallel)."""
    started: list[Worker] = []
    try:
        threads = [threading.Thread(target=lambda: started.append(Worker())) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(started) == n, "a worker did not start"
        yield started
    finally:
        for w in started:
            w.close()


def close_doorbell() -> None:
    """Close the calling thread's wait doorbell (winipc leaves it to the GC, with a ResourceWarning)."""
    try:
        from winipc.sync import _wait

        bell = getattr(_wait._local, "bell", None)
        if bell is not None:
            bell.close()
            del _wait._local.bell
    except Exception:
        pass


class ThreadResult:
    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.value: Any = None
        self.error: BaseException | None = None
        self.when: float | None = None
        self.done = threading.Event()

    def join(self, timeout: float = 20.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "thread still blocked"
        if self.error is not None:
            raise self.error
        return self.value


def in_thread(fn: Callable[..., Any], *args: Any, **kw: Any) -> ThreadResult:
    """Run ``fn`` in a new thread; its result or exception and end time are recorded."""
    holder: list[ThreadResult] = []

    def body() -> None:
        res = holder[0]
        try:
            res.value = fn(*args, **kw)
        except BaseException as exc:
            res.error = exc
        finally:
            res.when = time.monotonic()
            close_doorbell()
            res.done.set()

    t = threading.Thread(target=body, daemon=True)
    holder.append(ThreadResult(t))
    t.start()
    return holder[0]


def waiters(obj: Any) -> int:
    """Waiter slots in use on ``obj`` (a waiter blocked on it has registered)."""
    with obj._sf.locked() as st:
        return int(st.h.nwait)


def until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (sleeping, not spinning hot) until ``cond()`` holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def leftovers() -> list[str]:
    """Names of every object in the namespace (live or dead)."""
    return [f"{o.type}:{o.name}" for o in namespace.list_objects()]


def load_stress_module() -> Any:
    """benchmarks/mutex_kill_stress.py, imported from the checkout."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "mutex_kill_stress.py"
    spec = importlib.util.spec_from_file_location("mutex_kill_stress", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mutex_kill_stress"] = mod
    spec.loader.exec_module(mod)
    return mod
