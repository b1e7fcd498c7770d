"""The other process of a bench run: ``python -m winipc.bench.worker``.

The runner starts it with :mod:`subprocess` (never fork, so it is a fresh interpreter
like any real peer) and talks to it with JSON lines, outside every timed section:

1. stdin, first line, the job: ``{"scenario", "module", "sys_path", "cpu", "setup",
   "fault", "accept_timeout"}``. The worker pins itself to ``cpu``, imports ``module``
   (where the scenario is registered), and calls the scenario's ``serve``.
2. stdout: ``{"ready": true, "address": ..., "pid": ...}``; then it accepts the runner.
3. stdin, one command per line, each answered with one stdout line:
   ``{"op": "echo", "size", "count"}`` -> ``{"ok": true}``;
   ``{"op": "sink", "size", "total", "period", "crc32"}`` -> ``{"ok": true, "crc32", "bytes",
   "units"}`` (``crc32`` null: the runner checks the reported one itself, after the
   round); ``{"op": "msgs", "size", "count", "crc32"}`` -> ``{"ok": true, "crc32",
   "bytes", "units"}``; ``{"op": "exchange", "metric", "count"}`` -> ``{"ok": true, "stamps"}``
   (the worker's side of :meth:`~winipc.bench.registry.Scenario.exchange`);
   ``{"op": "quit"}`` (or end of input) ends the worker.

Any failure is answered with ``{"ok": false, "error": "..."}`` and exit status 1.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

from winipc.bench import registry
from winipc.bench.registry import Endpoint, Listening, Setup
from winipc.bench.workload import (
    Corrupting,
    RoundBuffer,
    SinkResult,
    VerificationError,
    echo,
    sink,
    take_messages,
)


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _read() -> dict[str, Any] | None:
    line = sys.stdin.readline()
    if not line:
        return None
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError(f"worker: expected a JSON object, got {line!r}")
    return obj


def _check(got: SinkResult, want: Any, what: str) -> None:
    if want is not None and got.crc32 != int(want):
        raise VerificationError(
            f"{what}: checksum mismatch at the receiver (crc32 sent {int(want):08x}, "
            f"received {got.crc32:08x}, {got.nbytes} bytes in {got.units} units)"
        )


def _serve(job: dict[str, Any]) -> None:
    for entry in reversed(job.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    importlib.import_module(str(job.get("module", "winipc.bench.scenarios")))
    scenario = registry.get(str(job["scenario"]))
    cpu = job.get("cpu")
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})
    setup = Setup(**job["setup"])
    listening: Listening = scenario.serve(setup)
    ep: Endpoint | None = None
    try:
        _say({"ready": True, "address": listening.address, "pid": os.getpid()})
        ep = listening.accept(float(job.get("accept_timeout", 30.0)))
        echo_ep: Endpoint = Corrupting(ep) if job.get("fault") == "rtt" else ep
        buffer = RoundBuffer()  # where ends with recv_into receive, reused every round
        while (cmd := _read()) is not None:
            op = cmd.get("op")
            if op == "quit":
                break
            if op == "echo":
                echo(echo_ep, int(cmd["size"]), int(cmd["count"]))
                _say({"ok": True})
            elif op == "sink":
                period = cmd.get("period")
                got = sink(
                    ep,
                    int(cmd["size"]),
                    int(cmd["total"]),
                    None if period is None else int(period),
                    buffer,
                )
                _check(got, cmd.get("crc32"), "throughput")
                _say({"ok": True, "crc32": got.crc32, "bytes": got.nbytes, "units": got.units})
            elif op == "msgs":
                got = take_messages(ep, int(cmd["size"]), int(cmd["count"]), buffer)
                _check(got, cmd.get("crc32"), "messages")
                _say({"ok": True, "crc32": got.crc32, "bytes": got.nbytes, "units": got.units})
            elif op == "exchange":
                metric = registry.metric(str(cmd["metric"]))
                stamps = scenario.exchange(ep, metric, int(cmd["count"]), False)
                _say({"ok": True, "stamps": stamps})
            else:
                raise ValueError(f"worker: unknown op {op!r}")
    finally:
        if ep is not None:
            ep.close()
        listening.close()


def main() -> int:
    """Run one worker session (see the module docstring); return the exit status."""
    try:
        job = _read()
        if job is None:
            return 0
        _serve(job)
    except VerificationError as exc:
        _say({"ok": False, "error": str(exc), "verification": True})
        return 1
    except Exception as exc:  # reported to the runner, which raises it there
        _say({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
