"""The floor of a durable SQLite queue in Python, beside persist-queue, on this machine.

Run: ``.venv/bin/python benchmarks/queue_floor.py [--count N] [--json out.json]``

The queue targets of ``winipc bench`` are ratios to persist-queue measured in the same run
(docs/bench.md). This tool asks what any SQLite queue written in Python could reach here,
so that a target can be told apart from what the machine allows. Its "floor queue" does
the least such a queue can do and still keep every message durable before its send
returns:

* one table ``msg(seq INTEGER PRIMARY KEY, body BLOB)``: no properties, checksums, priority
  index, ids, transactions, quotas or wake-ups;
* a producer takes a flock, runs ``BEGIN IMMEDIATE``, one ``INSERT`` per message and
  ``COMMIT`` (WAL, ``synchronous=NORMAL``), releases the flock, then makes the commit
  durable by group commit: under a second flock, ``fdatasync`` of the WAL unless a sync
  that started after its commit already finished (what winipc's ``GroupSync`` does);
* the consumer polls with a read (``sched_yield`` between empty polls, the cheapest wait
  there is) and deletes each message it reads in a write transaction of its own, as a
  receive does.

Scenarios (1 KiB bodies, the consumer on the first CPU; the producers on the same CPU
(same-core) or the second (cross-core), as ``winipc bench`` places its queue scenarios):
one producer sending one message per commit, four producers at once, and one producer
with 64 messages per commit (``send_many``). persist-queue's figure comes from
``winipc bench --only persist-queue --json``, run before and after the floor runs; its
mean is the reference. Each floor figure is the best of ``--passes`` runs.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

BODY = 1024
SCENARIOS = [("1 producer", 1, 1), ("4 producers", 4, 1), ("send_many of 64", 1, 64)]


def _connect(db: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _producer(folder: str, cpu: int, count: int, batch: int, go: Any) -> None:
    os.sched_setaffinity(0, {cpu})
    db = os.path.join(folder, "q.db")
    conn = _connect(db)
    lock = os.open(os.path.join(folder, "lock"), os.O_RDWR)
    sync = os.open(os.path.join(folder, "sync"), os.O_RDWR)
    body = os.urandom(BODY)
    wal = -1
    go.wait()
    for _ in range(count // batch):
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(batch):
            conn.execute("INSERT INTO msg(body) VALUES (?)", (body,))
        conn.execute("COMMIT")
        fcntl.flock(lock, fcntl.LOCK_UN)
        committed = time.monotonic_ns()
        if wal < 0:
            wal = os.open(db + "-wal", os.O_RDONLY)
        fcntl.flock(sync, fcntl.LOCK_EX)
        if struct.unpack("<q", os.pread(sync, 8, 0))[0] <= committed:
            start = time.monotonic_ns()
            os.fdatasync(wal)
            os.pwrite(sync, struct.pack("<q", start), 0)
        fcntl.flock(sync, fcntl.LOCK_UN)
    conn.close()


def floor_rate(producers: int, batch: int, placement: str, count: int) -> float:
    """Messages per second from the first send to the last receive (``count`` messages)."""
    folder = tempfile.mkdtemp(prefix="queue-floor.", dir="/var/tmp")
    cpus = sorted(os.sched_getaffinity(0))
    try:
        db = os.path.join(folder, "q.db")
        conn = _connect(db)
        conn.execute("CREATE TABLE msg(seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        open(os.path.join(folder, "lock"), "wb").close()
        with open(os.path.join(folder, "sync"), "wb") as f:
            f.write(bytes(8))
        consumer_cpu = cpus[0]
        producer_cpu = cpus[0] if placement == "same-core" else cpus[1]
        os.sched_setaffinity(0, {consumer_cpu})
        go = mp.Event()
        each = count // producers // batch * batch
        procs = [mp.Process(target=_producer, args=(folder, producer_cpu, each, batch, go))
                 for _ in range(producers)]
        for p in procs:
            p.start()
        lock = os.open(os.path.join(folder, "lock"), os.O_RDWR)
        time.sleep(0.3)
        total, got = each * producers, 0
        start = time.perf_counter()
        go.set()
        while got < total:
            row = conn.execute("SELECT seq, body FROM msg ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                os.sched_yield()
                continue
            fcntl.flock(lock, fcntl.LOCK_EX)
            conn.execute("BEGIN IMMEDIATE")
            gone = conn.execute("DELETE FROM msg WHERE seq = ?", (row[0],)).rowcount
            conn.execute("COMMIT")
            fcntl.flock(lock, fcntl.LOCK_UN)
            if len(row[1]) != BODY:
                raise SystemExit("floor queue: a damaged body")
            got += gone
        elapsed = time.perf_counter() - start
        for p in procs:
            p.join()
        os.close(lock)
        conn.close()
        return total / elapsed
    finally:
        os.sched_setaffinity(0, cpus)
        shutil.rmtree(folder, ignore_errors=True)


def persist_queue_rates() -> dict[str, float]:
    """persist-queue's messages per second per placement, from ``winipc bench``."""
    out = subprocess.run([sys.executable, "-m", "winipc.bench", "--only", "persist-queue", "--json"],
                         capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    return {r["placement"]: r["figures"]["rate"]["value"] for r in doc["results"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=6400, help="messages per run (default 6400)")
    ap.add_argument("--passes", type=int, default=2, help="runs per figure, the best kept (default 2)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs")
    placements = ("same-core", "cross-core")
    before = persist_queue_rates()
    floors = {(name, pl): max(floor_rate(n, b, pl, args.count) for _ in range(args.passes))
              for name, n, b in SCENARIOS for pl in placements}
    after = persist_queue_rates()
    pq = {pl: (before[pl] + after[pl]) / 2 for pl in placements}
    print("persist-queue (winipc bench, before / after):",
          ", ".join(f"{pl} {before[pl]:,.0f} / {after[pl]:,.0f}" for pl in placements))
    print(f"{'floor queue':18s} {'placement':11s} {'msg/s':>8s} {'x persist-queue':>16s}")
    for (name, pl), rate in floors.items():
        print(f"{name:18s} {pl:11s} {rate:8,.0f} {rate / pq[pl]:15.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"persist_queue": {"before": before, "after": after},
                       "floor": [{"scenario": n, "placement": pl, "rate": r} for (n, pl), r in floors.items()]},
                      f, indent=1)


if __name__ == "__main__":
    main()
