"""Micro-benchmark of the shared-memory ring (winipc._native._ring) against its peers.

Run: ``.venv/bin/python benchmarks/ring_micro.py [--quick] [--json out.json]``

Everything is measured in one run on this machine, so compare ratios within a run, never
across runs or machines (the machine may be shared). Each process is pinned with
``os.sched_setaffinity``: "same core" puts both on the first allowed CPU, "cross core" the
two processes on two CPUs. The other side is this file in ``--child`` mode, started with
the memfd and one end of a socketpair as ``pass_fds``.

* round trip of 64 bytes (median, p99): the ring with ``spin_ns`` 0 and 50 000, next to a
  raw AF_UNIX SOCK_STREAM socketpair;
* one-way throughput of 64 KiB and 1 MiB messages through rings of 1, 2, 4 and 8 MiB, read
  with ``recv`` (a new bytes object), ``recv_into`` (a preallocated buffer) and ``recv_view``
  (zero copy: it does not touch the payload), next to a socketpair and a single-core memcpy
  (a bytearray slice copy of 128 MiB); each figure is the best of three runs;
* 64-byte messages per second, one by one and with ``send_many``/``recv_many``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from winipc._native import ring

KiB, MiB = 1024, 1024 * 1024


# ------------------------------------------------------------------ the child side
def child(argv: list[str]) -> None:
    mode, cpu, fd, sockfd = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    rest = [int(x) for x in argv[4:]]
    os.sched_setaffinity(0, {cpu})
    sock = socket.socket(fileno=sockfd)
    if mode == "echo-sock":
        buf = bytearray(64)
        while True:
            got = 0
            while got < 64:
                n = sock.recv_into(memoryview(buf)[got:])
                if not n:
                    return
                got += n
            sock.sendall(buf)
    assert ring is not None
    if mode == "writer-sock":
        size, count = rest
        data = os.urandom(size)
        sock.send(b"r")  # ready: the parent's clock must not include our start-up
        sock.recv(1)  # go
        for _ in range(count):
            sock.sendall(data)
        sock.recv(1)  # the reader is done
        return
    ep = ring.Endpoint(fd, 1, sockfd)
    os.close(fd)
    if mode == "echo-ring":
        ep.spin_ns = rest[0]
        try:
            while True:
                ep.send(ep.recv())
        except BrokenPipeError:
            return
    if mode == "writer-ring":
        size, count, batch = rest
        data = os.urandom(size)
        sock.send(b"r")
        sock.recv(1)
        if batch > 1:
            items = [data] * batch
            sent = 0
            while sent < count:
                sent += ep.send_many(items[: count - sent])
        else:
            for _ in range(count):
                ep.send(data)
        try:
            ep.recv()  # until the reader closes
        except BrokenPipeError:
            pass
        return
    raise SystemExit(f"unknown child mode {mode}")


class Child:
    def __init__(self, mode: str, cpu: int, fd: int, *args: int) -> None:
        self.sock, theirs = socket.socketpair()
        fds = [theirs.fileno()] + ([fd] if fd >= 0 else [])
        cmd = [sys.executable, __file__, "--child", mode, str(cpu), str(fd), str(theirs.fileno())]
        self.proc = subprocess.Popen(cmd + [str(a) for a in args], pass_fds=fds)
        theirs.close()

    def go(self) -> None:
        """Wait until the child is ready, then start it: call just before the clock starts."""
        assert self.sock.recv(1) == b"r"
        self.sock.send(b"g")

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------ measurements
#: the CPUs this run may use, read once: each measurement then pins this process to one
ALLOWED = sorted(os.sched_getaffinity(0))


def cpus() -> tuple[int, int]:
    return ALLOWED[0], ALLOWED[1] if len(ALLOWED) > 1 else ALLOWED[0]


def summarize(samples: list[int]) -> dict[str, float]:
    samples.sort()
    return {
        "median_us": statistics.median(samples) / 1000,
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
    }


def rtt_ring(spin_ns: int, same_core: bool, n: int) -> dict[str, float]:
    assert ring is not None
    mine, theirs = cpus()
    if same_core:
        theirs = mine
    os.sched_setaffinity(0, {mine})
    fd = ring.create(1 * MiB)
    c = Child("echo-ring", theirs, fd, spin_ns)
    ep = ring.Endpoint(fd, 0, c.sock.fileno())
    os.close(fd)
    ep.spin_ns = spin_ns
    msg = b"x" * 64
    out: list[int] = []
    clock = time.perf_counter_ns
    for i in range(n + n // 10):
        t0 = clock()
        ep.send(msg)
        ep.recv()
        if i >= n // 10:  # the first tenth warms up
            out.append(clock() - t0)
    ep.close()
    c.close()
    return summarize(out)


def rtt_socket(same_core: bool, n: int) -> dict[str, float]:
    mine, theirs = cpus()
    if same_core:
        theirs = mine
    os.sched_setaffinity(0, {mine})
    c = Child("echo-sock", theirs, -1)
    s = c.sock
    msg = b"x" * 64
    buf = bytearray(64)
    out: list[int] = []
    clock = time.perf_counter_ns
    for i in range(n + n // 10):
        t0 = clock()
        s.sendall(msg)
        got = 0
        while got < 64:
            got += s.recv_into(memoryview(buf)[got:])
        if i >= n // 10:
            out.append(clock() - t0)
    c.close()
    return summarize(out)


def best(runs: int, f: Any, *args: Any) -> float:
    """The best of a few runs: on a shared machine the others only add noise."""
    return max(f(*args) for _ in range(runs))


def throughput_ring(capacity: int, size: int, total: int, how: str) -> float:
    """GB/s of one-way messages, the reader on one core and the writer on another."""
    assert ring is not None
    mine, theirs = cpus()
    os.sched_setaffinity(0, {mine})
    count = max(8, total // size)
    fd = ring.create(capacity)
    c = Child("writer-ring", theirs, fd, size, count, 1)
    ep = ring.Endpoint(fd, 0, c.sock.fileno())
    os.close(fd)
    buf = bytearray(size)
    c.go()
    t0 = time.perf_counter()
    if how == "recv":
        for _ in range(count):
            ep.recv()
    elif how == "recv_into":
        for _ in range(count):
            ep.recv_into(buf)
    else:
        for _ in range(count):
            with ep.recv_view():
                pass
    dt = time.perf_counter() - t0
    ep.close()
    c.close()
    return count * size / dt / 1e9


def throughput_socket(size: int, total: int) -> float:
    mine, theirs = cpus()
    os.sched_setaffinity(0, {mine})
    count = max(8, total // size)
    c = Child("writer-sock", theirs, -1, size, count)
    buf = bytearray(1 * MiB)
    left = count * size
    c.go()
    t0 = time.perf_counter()
    while left:
        left -= c.sock.recv_into(buf, min(left, len(buf)))
    dt = time.perf_counter() - t0
    c.sock.send(b"d")
    c.close()
    return count * size / dt / 1e9


def memcpy_gbs(size: int = 128 * MiB) -> float:
    os.sched_setaffinity(0, {cpus()[0]})
    src = bytearray(os.urandom(1 * MiB)) * (size // MiB)
    dst = bytearray(size)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        dst[:] = src
        best = min(best, time.perf_counter() - t0)
    return size / best / 1e9


def small_messages(batch: int, count: int) -> float:
    """64-byte messages per second, one way, cross core."""
    assert ring is not None
    mine, theirs = cpus()
    os.sched_setaffinity(0, {mine})
    fd = ring.create(4 * MiB)
    c = Child("writer-ring", theirs, fd, 64, count, batch)
    ep = ring.Endpoint(fd, 0, c.sock.fileno())
    os.close(fd)
    got = 0
    c.go()
    t0 = time.perf_counter()
    if batch > 1:
        while got < count:
            got += len(ep.recv_many(4096))
    else:
        for _ in range(count):
            ep.recv()
    dt = time.perf_counter() - t0
    ep.close()
    c.close()
    return count / dt


# ------------------------------------------------------------------ the report
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    if ring is None:
        raise SystemExit("winipc._native.ring is not built here")
    q = args.quick
    n_rtt = 2000 if q else 20000
    total = 128 * MiB if q else 1024 * MiB
    res: dict[str, Any] = {"cpus": ALLOWED, "rtt": {}, "throughput": {}}
    if len(res["cpus"]) < 2:
        print("note: one CPU allowed: 'cross core' runs on the same core")

    print("64 B round trip (us)            median      p99")
    for where, same in (("same core", True), ("cross core", False)):
        rows = [("socketpair", rtt_socket(same, n_rtt))]
        for spin in (0, 50_000):
            # spinning on the core the peer needs only delays it: fewer samples
            n = n_rtt // 4 if (same and spin) else n_rtt
            rows.append((f"ring spin_ns={spin}", rtt_ring(spin, same, n)))
        for name, r in rows:
            res["rtt"][f"{where} {name}"] = r
            print(f"  {where:10} {name:20} {r['median_us']:7.1f} {r['p99_us']:8.1f}")

    mc = memcpy_gbs()
    res["memcpy_gbs"] = mc
    print(f"\nmemcpy, one core (bytearray slice copy, 128 MiB): {mc:.2f} GB/s")
    print("\none-way throughput (GB/s, cross core)")
    for size in (64 * KiB, 1 * MiB):
        sock = best(3, throughput_socket, size, total)
        res["throughput"][f"socketpair {size // KiB} KiB"] = sock
        print(f"  {size // KiB:5} KiB messages   socketpair {sock:6.2f}")
        for cap in (1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB):
            cells = []
            for how in ("recv", "recv_into", "recv_view"):
                g = best(3, throughput_ring, cap, size, total, how)
                res["throughput"][f"ring {cap // MiB} MiB {size // KiB} KiB {how}"] = g
                cells.append(f"{how} {g:6.2f}")
            print(f"  {size // KiB:5} KiB, ring {cap // MiB} MiB   " + "   ".join(cells))

    n_small = 200_000 if q else 2_000_000
    one = best(3, small_messages, 1, n_small // 4)
    many = best(3, small_messages, 256, n_small)
    res["small_msgs_per_s"] = {"send/recv": one, "send_many/recv_many": many}
    print("\n64 B messages per second, one way, cross core")
    print(f"  send / recv            {one / 1e6:6.2f} M/s")
    print(f"  send_many / recv_many  {many / 1e6:6.2f} M/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
