"""SIGKILL producers and consumers of a local queue at random points, then check the books.

Used by tests/test_msmq_local.py (200 kills) and benchmarks/msmq_kill_stress.py (1,000).

A zygote process imports winipc once and forks workers on request, so a kill cycle costs
a fork, not an interpreter start. Workers:

* producer ``P<tag>``: sends ``<tag>:<i>`` to the transactional queue ``kq`` with
  SINGLE_MESSAGE (recoverable), or in batches with ``send_many`` inside a transaction,
  and after each send returns appends the ids to its acknowledgement file;
* consumer ``C<tag>``: in a transaction, receives from ``kq`` and sends the body to
  ``kr`` (both queues in one transaction: the multi-queue commit with its txlog).

The parent kills a random worker every few milliseconds and starts another. At the end
(and after every kill) it checks: ``integrity_check`` clean on both queues; every
acknowledged send is in ``kq`` or ``kr``; no body is there twice (no duplicated committed
receive, no duplicated send).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
KQ = r".\private$\kq"
KR = r".\private$\kr"

ZYGOTE = r"""
import os, signal, sys
from winipc import errors as W
from winipc import msmq
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
acks = sys.argv[1]

def producer(tag):
    fd = os.open(os.path.join(acks, "P" + tag), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    q = msmq.open(r".\private$\kq", "send")
    i = 0
    batch = tag.endswith(("3", "7"))
    while True:
        if batch:
            bodies = [f"{tag}:{i + k}".encode() for k in range(8)]
            with msmq.transaction() as tx:
                q.send_many(bodies, transaction=tx)
            os.write(fd, b"".join(b + b"\n" for b in bodies))
            i += 8
        else:
            q.send(f"{tag}:{i}".encode(), transaction=msmq.SINGLE_MESSAGE)
            os.write(fd, f"{tag}:{i}\n".encode())
            i += 1

def consumer(tag):
    q = msmq.open(r".\private$\kq", "receive")
    r = msmq.open(r".\private$\kr", "send")
    while True:
        with msmq.transaction() as tx:
            try:
                m = q.receive(timeout=2, transaction=tx)
            except W.IoTimeout:
                continue
            r.send(m.body, transaction=tx)

print("zygote ready", flush=True)
for line in sys.stdin:
    kind, tag = line.split()
    pid = os.fork()
    if pid == 0:
        try:
            (producer if kind == "P" else consumer)(tag)
        except BaseException:
            import traceback
            with open(os.path.join(acks, "E" + tag), "w") as f:
                traceback.print_exc(file=f)
        finally:
            os._exit(1)
    print(pid, flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def run_kill_cycles(kills: int, workdir: Path, *, seed: int | None = None,
                    env: dict[str, str] | None = None) -> dict[str, int]:
    """Run ``kills`` kill cycles; raises AssertionError on a lost or duplicated message."""
    from winipc import errors as W
    from winipc import msmq

    rnd = random.Random(seed)
    acks = workdir / "acks"
    acks.mkdir()
    msmq.create_queue(KQ, transactional=True)
    msmq.create_queue(KR, transactional=True)
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = SRC + os.pathsep + full_env.get("PYTHONPATH", "")
    zygote = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ZYGOTE), str(acks)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=full_env,
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    workers: dict[int, str] = {}
    counter = 0

    def spawn(kind: str) -> None:
        nonlocal counter
        counter += 1
        assert zygote.stdin is not None and zygote.stdout is not None
        zygote.stdin.write(f"{kind} {counter}\n")
        zygote.stdin.flush()
        pid = int(zygote.stdout.readline())
        workers[pid] = kind

    def kill(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended by itself: its error file says why (checked below)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert not _alive(pid), f"worker {pid} survived SIGKILL"
        del workers[pid]

    problems: list[str] = []
    try:
        assert zygote.stdout.readline().startswith("zygote ready")
        for kind in "PPCC":
            spawn(kind)
        for n in range(kills):
            time.sleep(rnd.uniform(0.002, 0.03))
            pid = rnd.choice(sorted(workers))
            kind = workers[pid]
            kill(pid)
            spawn(kind)
            if n % 10 == 0 or n == kills - 1:
                for path in (KQ, KR):
                    found = msmq.integrity_check(path)
                    if found:
                        problems.append(f"after kill {n}: {path}: {found}")
        for pid in sorted(workers):
            kill(pid)
    finally:
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        zygote.stdin.close()
        zygote.wait(10)
        zygote.stdout.close()
    errors = {f.name: f.read_text() for f in acks.iterdir() if f.name.startswith("E")}
    assert not errors, f"workers failed: {errors}"
    assert not problems, problems
    # the books: every acknowledged send is somewhere, nothing is there twice
    acked = set()
    for f in acks.iterdir():
        if not f.name.startswith("P"):
            continue
        acked.update(line for line in f.read_text().splitlines() if line)
    seen: Counter[str] = Counter()
    for path in (KQ, KR):
        with msmq.open(path, "receive") as q:  # opening resolves transactions of dead owners
            while True:
                try:
                    m = q.receive(timeout=0)
                except W.IoTimeout:
                    break
                seen[m.body.decode()] += 1
    for path in (KQ, KR):
        found = msmq.integrity_check(path)
        assert not found, f"{path}: {found}"
        msmq.delete_queue(path)
    # a worker killed while making its liveness token leaves it under its hidden name;
    # the store sweeps those only after 60 s (a live maker holds it unlocked briefly)
    txdir = Path(os.environ["WINIPC_ROOT"]) / "msmq" / ".tx"
    for p in txdir.glob(".new-*"):
        p.unlink()
    lost = acked - set(seen)
    dup = {k: v for k, v in seen.items() if v > 1}
    assert not lost, f"{len(lost)} acknowledged sends lost, e.g. {sorted(lost)[:5]}"
    assert not dup, f"{len(dup)} messages duplicated, e.g. {sorted(dup.items())[:5]}"
    return {"kills": kills, "acknowledged": len(acked), "stored": sum(seen.values())}
