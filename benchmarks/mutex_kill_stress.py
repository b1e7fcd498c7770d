"""SIGKILL a mutex holder at random points; the waiter must get ABANDONED iff it owned it.

Usage (from a checkout with the package installed)::

    python benchmarks/mutex_kill_stress.py              # 1,000 kills, prints a summary
    python benchmarks/mutex_kill_stress.py -n 200 --seed 7 --json

Each trial forks a fresh *holder* (from a zygote process that has imported winipc
already, so a trial costs a fork, not an interpreter start). The holder opens the named
mutex and loops: acquire, hold for a random 0..3 ms, release, rest for a random 0..3 ms.
It writes where it is to a shared page with single-byte stores::

    phase 1  about to call acquire()      (does not own it yet; may own it an instant later)
    phase 2  acquire() returned           (owns it)
    phase 3  about to call release()      (owns it; may have released it an instant later)
    phase 0  release() returned           (does not own it)

At a random moment the waiter (this process) kills the holder with SIGKILL and acquires
the mutex, either right after the kill (mode ``after``) or from a thread that started
waiting while the holder owned it (mode ``blocked``). Once the holder is dead its last
phase is the truth: phase 2 must give :class:`~winipc.errors.AbandonedMutex` (with
ownership), phase 0 a clean acquisition; phases 1 and 3 are the instants between the
holder's own store and its call, where either outcome is right. A waiter that acquired
cleanly *before* the kill (mode ``blocked``: the holder released in time) must find the
holder dead anywhere but in phase 2 (it cannot own what the waiter owns).

Latency is measured from just before ``kill()`` to the moment the waiter's acquire
returns or raises. The test suite (tests/test_sync_mutex.py) runs 200 trials through
:func:`run` and asserts on every one; this script runs 1,000 and prints a summary.
Exit status: 0 when every trial was right and within the bound, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import select
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from winipc import errors as W
from winipc.sync import Mutex

BOUND = 0.050  # seconds: a dead owner's mutex reaches its waiter within this
MUTEX_NAME = r"Local\winipc-kill-stress"

# The zygote: imports winipc once, then forks one holder per request (a seed on stdin)
# and answers with the holder's pid. SIGCHLD is ignored so the kernel reaps the holders.
ZYGOTE = r"""
import mmap, os, random, signal, struct, sys, time
from winipc import errors as W
from winipc.sync import Mutex

name, page_path = sys.argv[1], sys.argv[2]
fd = os.open(page_path, os.O_RDWR)
page = mmap.mmap(fd, 4096)
os.close(fd)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)


def holder(seed):
    rng = random.Random(seed)
    m = Mutex.open(name)
    n = 0
    while True:
        page[0] = 1
        try:
            m.acquire()
        except W.AbandonedMutex:
            page[1] = 1  # never expected: the waiter always releases before a new holder
        page[0] = 2
        n += 1
        struct.pack_into("<I", page, 8, n)
        time.sleep(rng.uniform(0.0, 0.003))
        page[0] = 3
        m.release()
        page[0] = 0
        time.sleep(rng.uniform(0.0, 0.003))


sys.stdout.write("ready\n")
sys.stdout.flush()
for line in sys.stdin:
    seed = int(line)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            holder(seed)
        finally:
            os._exit(3)
    sys.stdout.write(f"{pid}\n")
    sys.stdout.flush()
"""

PHASE_NAMES = {0: "free", 1: "acquiring", 2: "owned", 3: "releasing"}


@dataclass
class Trial:
    """One kill and what the waiter got."""

    index: int
    mode: str  # "after" or "blocked"
    phase: int  # the holder's last phase (0..3, see the module docstring)
    outcome: str  # "abandoned", "clean" or "timeout"
    latency: float | None  # seconds from just before kill() to acquire's return; None: before the kill
    iterations: int  # acquire/release rounds the holder completed
    holder_saw_abandoned: bool = False

    @property
    def expected(self) -> set[str]:
        if self.latency is None:  # acquired before the kill: the holder had released it
            return set() if self.phase == 2 else {"clean"}
        return {0: {"clean"}, 2: {"abandoned"}}.get(self.phase, {"clean", "abandoned"})

    @property
    def right(self) -> bool:
        return self.outcome in self.expected and not self.holder_saw_abandoned


@dataclass
class Summary:
    trials: int
    wrong: list[dict[str, Any]] = field(default_factory=list)
    abandoned: int = 0
    clean_after_kill: int = 0
    clean_before_kill: int = 0
    by_phase: dict[str, int] = field(default_factory=dict)
    max_latency_ms: float = 0.0
    max_abandoned_latency_ms: float = 0.0
    median_abandoned_latency_ms: float = 0.0
    over_bound: int = 0
    leftovers: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.wrong and not self.over_bound and not self.leftovers


def _src_dir() -> str:
    import winipc

    return str(Path(winipc.__file__).resolve().parents[1])


class _Zygote:
    def __init__(self, name: str, page_path: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = _src_dir() + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(ZYGOTE), name, page_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self._buf = b""
        if self._line(20.0) != "ready":
            raise RuntimeError("the zygote did not start")

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise RuntimeError("the zygote did not answer")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("the zygote ended")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def fork(self, seed: int) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{seed}\n".encode())
        return int(self._line(10.0))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _wait_dead(pidfd: int, timeout: float) -> bool:
    return bool(select.select([pidfd], [], [], timeout)[0])


def _acquire(m: Mutex, timeout: float) -> tuple[str, float]:
    try:
        got = m.acquire(timeout)
        outcome = "clean" if got else "timeout"
    except W.AbandonedMutex:
        outcome = "abandoned"
    return outcome, time.monotonic()


def _trial(index: int, rng: random.Random, m: Mutex, zygote: _Zygote, page: mmap.mmap) -> Trial:
    page[0:16] = bytes(16)
    pid = zygote.fork(rng.getrandbits(32))
    pidfd = os.pidfd_open(pid)
    try:
        # let the holder run a round or two, so it is killed somewhere in its loop
        deadline = time.monotonic() + 10.0
        while struct.unpack_from("<I", page, 8)[0] < 1 and time.monotonic() < deadline:
            time.sleep(0.0005)
        mode = rng.choice(("after", "blocked"))
        if mode == "after":
            time.sleep(rng.uniform(0.0, 0.006))
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            outcome, t_done = _acquire(m, 5.0)
            release = m.release if outcome != "timeout" else None
            waiter = None
        else:
            # a waiter thread blocks while the holder owns it; the kill comes a little later
            deadline = time.monotonic() + 10.0
            while page[0] != 2 and time.monotonic() < deadline:
                time.sleep(0.0002)
            result: list[tuple[str, float]] = []
            done = threading.Event()
            may_release = threading.Event()

            def wait_then_release() -> None:
                res = _acquire(m, 5.0)
                result.append(res)
                done.set()
                may_release.wait(10.0)
                if res[0] != "timeout":
                    m.release()
                _close_doorbell()

            waiter = threading.Thread(target=wait_then_release)
            waiter.start()
            time.sleep(rng.uniform(0.0, 0.003))
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            done.wait(10.0)
            outcome, t_done = result[0] if result else ("timeout", time.monotonic())
            release = may_release.set
        if not _wait_dead(pidfd, 5.0):
            raise RuntimeError(f"holder {pid} survived SIGKILL")
        phase = page[0]
        trial = Trial(
            index=index,
            mode=mode,
            phase=phase,
            outcome=outcome,
            latency=None if t_done < t_kill else t_done - t_kill,
            iterations=struct.unpack_from("<I", page, 8)[0],
            holder_saw_abandoned=bool(page[1]),
        )
        if release is not None:
            release()
        if waiter is not None:
            waiter.join(10.0)
        return trial
    finally:
        os.close(pidfd)


def _close_doorbell() -> None:
    """Close the calling thread's wait doorbell before the thread ends.

    A thread that waited leaves a socket that is only closed by the garbage collector
    (with a ResourceWarning); closing it here keeps the stress free of that noise.
    """
    try:
        from winipc.sync import _wait

        bell = getattr(_wait._local, "bell", None)
        if bell is not None:
            bell.close()
            del _wait._local.bell
    except Exception:
        pass


def run(trials: int, seed: int | None = None, name: str = MUTEX_NAME) -> list[Trial]:
    """Run ``trials`` kills against one named mutex; returns every trial's record.

    The caller's WINIPC_ROOT decides where the mutex lives; the mutex is closed (and so
    removed) before this returns.
    """
    rng = random.Random(seed)
    fd, page_path = tempfile.mkstemp(prefix="winipc-kill-stress-")
    try:
        os.ftruncate(fd, 4096)
        page = mmap.mmap(fd, 4096)
        m = Mutex(name)
        zygote = _Zygote(name, page_path)
        try:
            return [_trial(i, rng, m, zygote, page) for i in range(trials)]
        finally:
            zygote.close()
            m.close()
            page.close()
    finally:
        os.close(fd)
        os.unlink(page_path)


def summarize(records: list[Trial], seconds: float = 0.0, leftovers: int = 0) -> Summary:
    s = Summary(trials=len(records), seconds=seconds, leftovers=leftovers)
    lat = sorted(t.latency for t in records if t.outcome == "abandoned" and t.latency is not None)
    for t in records:
        key = f"{t.mode}/{PHASE_NAMES.get(t.phase, t.phase)}/{t.outcome}"
        s.by_phase[key] = s.by_phase.get(key, 0) + 1
        if t.outcome == "abandoned":
            s.abandoned += 1
        elif t.outcome == "clean":
            if t.latency is None:
                s.clean_before_kill += 1
            else:
                s.clean_after_kill += 1
        if not t.right:
            s.wrong.append(asdict(t))
        if t.latency is not None:
            s.max_latency_ms = max(s.max_latency_ms, t.latency * 1e3)
            if t.latency > BOUND:
                s.over_bound += 1
    if lat:
        s.max_abandoned_latency_ms = lat[-1] * 1e3
        s.median_abandoned_latency_ms = lat[len(lat) // 2] * 1e3
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--trials", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)

    own_root = "WINIPC_ROOT" not in os.environ
    if own_root:  # a private namespace, so leftovers are ours to count
        os.environ["WINIPC_ROOT"] = tempfile.mkdtemp(prefix="winipc-stress-root-")
    from winipc._core import namespace

    t0 = time.monotonic()
    records = run(args.trials, args.seed)
    seconds = time.monotonic() - t0
    leftovers = len(namespace.list_objects()) if own_root else 0
    s = summarize(records, seconds, leftovers)
    if own_root:
        import shutil

        shutil.rmtree(os.environ["WINIPC_ROOT"], ignore_errors=True)
    if args.json:
        print(json.dumps({**asdict(s), "ok": s.ok}, indent=2))
    else:
        print(f"{s.trials} kills in {s.seconds:.1f} s")
        print(f"  abandoned (owner died owning it):  {s.abandoned}")
        print(f"  clean after the kill:              {s.clean_after_kill}")
        print(f"  clean before the kill (released):  {s.clean_before_kill}")
        print(f"  wrong outcomes:                    {len(s.wrong)}")
        print(
            f"  abandon latency: median {s.median_abandoned_latency_ms:.2f} ms, "
            f"max {s.max_abandoned_latency_ms:.2f} ms; max of all {s.max_latency_ms:.2f} ms "
            f"(bound {BOUND * 1e3:.0f} ms, {s.over_bound} over)"
        )
        if own_root:
            print(f"  objects left in the namespace:     {s.leftovers}")
        print("  by mode/phase/outcome:")
        for key in sorted(s.by_phase):
            print(f"    {key:32s} {s.by_phase[key]}")
        for w in s.wrong[:10]:
            print(f"  WRONG: {w}")
        print("OK" if s.ok else "FAILED")
    return 0 if s.ok else 1


if __name__ == "__main__":
    sys.exit(main())
