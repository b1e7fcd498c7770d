"""Run the selected scenarios in two real processes, per core placement, and collect figures.

For every (scenario, placement) the runner starts one worker
(``python -m winipc.bench.worker``, see its docstring for the JSON-lines protocol),
pins itself and the worker to the placement's cores with ``os.sched_setaffinity``,
connects as the client, and measures every metric the scenario supports over that one
connection. Every payload is verified; a mismatch raises :class:`VerificationError`.
A scenario that cannot run on this machine (:meth:`Scenario.unavailable`) gets cells
with no figures and the reason, and a note.

The limit (a scenario with :attr:`Scenario.limit`, ``memcpy-limit``) takes its units
from a :class:`~winipc.bench.workload.LimitSet` larger than the last-level cache, made
once per run, instead of the random pool every other scenario sends from.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from winipc.bench.registry import (
    DEFAULT_METRICS,
    DELIVERY,
    LATENCY,
    MESSAGES,
    RATE,
    RTT,
    THROUGHPUT,
    Endpoint,
    Metric,
    Scenario,
    Setup,
)
from winipc.bench.session import WorkerSession, blame
from winipc.bench.workload import (
    Corrupting,
    LimitSet,
    LimitSizing,
    Source,
    VerificationError,
    batches,
    crc32_of,
    deliveries,
    handoffs,
    limit_sizing,
    ping,
    rtt_units,
    send_burst,
    send_round,
    wake_latencies,
)

MiB = 1024 * 1024


@dataclass(frozen=True)
class Budget:
    """How long each measurement runs.

    The run is made of ``passes`` passes over every (scenario, placement); each pass gets
    ``1/passes`` of the time and count budgets below, and the figures merge all passes.
    Interleaving this way spreads a burst of noise from other programs over every
    scenario instead of letting it land on one.

    Attributes:
        passes: passes over all scenarios.
        rtt_warmup: round trips before timing starts, per pass (verified, not timed).
        rtt_batch: round trips per command to the worker.
        rtt_min / rtt_max: round trips timed, at least / at most.
        rtt_seconds: keep timing round trips until their sum reaches this (seconds).
        round_bytes: bytes per throughput round (the receiver holds one round).
        round_units: units per throughput round, at most (small units: a round of 64 B
            units holds this many, not ``round_bytes``).
        tput_seconds: keep sending rounds until their timed sum reaches this (seconds).
        tput_min_rounds: timed rounds, at least.
        tput_max_rounds: timed rounds, at most (per pass).
        burst: messages per burst of a ``delivery`` metric (one burst per pass).
        msgs_burst: messages per burst of a ``messages`` metric.
        msgs_warmup: messages of the untimed (verified) burst per pass.
        msgs_seconds: keep sending bursts until their timed sum reaches this (seconds).
        msgs_min_bursts: timed bursts, at least.
        queue_seconds: message queues (metric group ``queue``): keep sending bursts until
            their timed sum reaches this (seconds); each burst is sized from the rate of
            the previous one to fill what is left.
        queue_warmup: messages of the untimed (verified) queue burst per pass; it is
            also the size of the first timed burst.
        queue_max_burst: messages per queue burst, at most (the producers build a
            burst's bodies before it starts).
        rpc_seconds: remote procedure calls (metric group ``rpc``): keep making batches
            of calls until their timed sum reaches this (seconds, per cell over the run);
            each batch is sized from the rate of the previous one to fill what is left.
        rpc_warmup: calls of the untimed (verified) batch per pass, also the size of the
            first timed batch (a 16th of it, at least 1, for the 1 MiB argument).
        rpc_max_batch: calls per batch, at most.
    """

    passes: int
    rtt_warmup: int
    rtt_batch: int
    rtt_min: int
    rtt_max: int
    rtt_seconds: float
    round_bytes: int
    tput_seconds: float
    tput_min_rounds: int
    tput_max_rounds: int = 10_000
    burst: int = 2000
    round_units: int = 16_384
    msgs_burst: int = 20_000
    msgs_warmup: int = 1000
    msgs_seconds: float = 0.3
    msgs_min_bursts: int = 3
    queue_seconds: float = 1.0
    queue_warmup: int = 64
    queue_max_burst: int = 20_000
    rpc_seconds: float = 0.6
    rpc_warmup: int = 200
    rpc_max_batch: int = 50_000


FULL = Budget(
    passes=3,
    rtt_warmup=1000,
    rtt_batch=2000,
    rtt_min=5000,
    rtt_max=200_000,
    rtt_seconds=0.4,
    round_bytes=32 * MiB,
    tput_seconds=0.4,
    tput_min_rounds=6,
)
QUICK = Budget(
    passes=1,
    rtt_warmup=100,
    rtt_batch=500,
    rtt_min=500,
    rtt_max=20_000,
    rtt_seconds=0.04,
    round_bytes=8 * MiB,
    tput_seconds=0.04,
    tput_min_rounds=1,
    round_units=4096,
    msgs_burst=4000,
    msgs_warmup=256,
    msgs_seconds=0.03,
    msgs_min_bursts=1,
    queue_seconds=0.1,
    queue_warmup=16,
    rpc_seconds=0.04,
    rpc_warmup=16,
)


@dataclass(frozen=True)
class Placement:
    """Where the two processes run.

    Attributes:
        name: ``"same-core"``, ``"cross-core"`` or ``"unpinned"``.
        runner_cpu: CPU the runner (client, sender) is pinned to, or None.
        worker_cpu: CPU the worker (server, receiver) is pinned to, or None.
    """

    name: str
    runner_cpu: int | None
    worker_cpu: int | None


PLACEMENTS = ("same-core", "cross-core")


def placements(which: str = "all") -> tuple[list[Placement], list[str]]:
    """The placements this machine allows, and notes on the ones it does not.

    Args:
        which: ``"all"``, or one of :data:`PLACEMENTS` alone.

    Raises:
        ValueError: ``which`` is unknown, or this machine cannot place processes so.
    """
    if which != "all" and which not in PLACEMENTS:
        raise ValueError(f"unknown placement {which!r}; use all, {', '.join(PLACEMENTS)}")
    if not hasattr(os, "sched_setaffinity"):
        if which != "all":
            raise ValueError(f"{which}: this platform cannot pin processes to cores")
        return [Placement("unpinned", None, None)], [
            "this platform cannot pin processes to cores; figures are unpinned"
        ]
    cpus = sorted(os.sched_getaffinity(0))
    out = [Placement("same-core", cpus[0], cpus[0])]
    notes: list[str] = []
    if len(cpus) >= 2:
        out.append(Placement("cross-core", cpus[0], cpus[1]))
    elif which == "cross-core":
        raise ValueError(f"cross-core: only CPU {cpus[0]} is available to this process")
    else:
        notes.append(f"cross-core skipped: only CPU {cpus[0]} is available to this process")
    if which != "all":
        out = [p for p in out if p.name == which]
    return out, notes


@dataclass
class CellResult:
    """One measured cell: a scenario on a metric in a placement.

    Attributes:
        scenario / placement / metric: what was measured (names and metric key).
        kind / size: the metric's kind and unit size in bytes.
        figures: rtt and latency: ``median``, ``p99``, ``mean``, ``min`` in µs;
            throughput: ``rate`` in MB/s (10**6 bytes per second); rate: ``rate`` in
            operations per second; messages: ``rate`` in messages per second (queues
            also ``send_rate``, messages sent per second by the producers); delivery:
            ``loss`` in %, ``rate`` (messages delivered per second) and ``send_rate``
            (messages written per second). Empty when the scenario is unavailable.
        messages: units moved while timing (a round trip moves two; a set-to-wake round
            two signals, set and acknowledgement; a hand-off one; a burst, the messages
            delivered).
        nbytes: payload bytes moved while timing.
        seconds: timed seconds.
        repeats: round trips (rtt), signals (latency), rounds (throughput, rate) or
            bursts (delivery, messages) timed.
        per_pass: the headline figure (rtt, latency: median µs; throughput: MB/s; rate,
            messages: per second; delivery: loss %) of each pass, to show the spread.
        verified: every payload, warm-up included, checked.
        checksum: CRC-32 of one round, ``"crc32:xxxxxxxx"`` (throughput).
        counts: delivery and queues: ``sent``, ``received`` and ``duplicates`` (messages).
        unavailable: why the scenario was not measured on this machine, or None.
    """

    scenario: str
    placement: str
    metric: str
    kind: str
    size: int
    figures: dict[str, float]
    messages: int
    nbytes: int
    seconds: float
    repeats: int
    per_pass: list[float] = field(default_factory=list)
    verified: bool = True
    checksum: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    unavailable: str | None = None


@dataclass
class RunResult:
    """Everything a run produced (see :mod:`winipc.bench.report` for the document)."""

    scenarios: list[Scenario]
    placements: list[Placement]
    results: list[CellResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    quick: bool = False
    passes: int = 1
    source: Source | None = None
    started: float = 0.0
    duration: float = 0.0
    limit: LimitSizing | None = None


@dataclass
class _Cell:
    """Raw measurements of one cell, accumulated over the passes."""

    scenario: str
    placement: str
    metric: Metric
    times: list[int] = field(default_factory=list)  # rtt: ns per round trip
    nbytes: int = 0  # throughput: bytes timed
    ns: int = 0  # throughput: ns timed
    rounds: int = 0
    messages: int = 0
    crc: int = 0
    per_pass: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # delivery: sent, received, ...
    send_ns: int = 0  # delivery, queues: ns the writer (producers) took
    unavailable: str | None = None

    def finish(self) -> CellResult:
        m = self.metric
        if self.unavailable is not None:
            return CellResult(
                scenario=self.scenario,
                placement=self.placement,
                metric=m.key,
                kind=m.kind,
                size=m.size,
                figures={},
                messages=0,
                nbytes=0,
                seconds=0.0,
                repeats=0,
                unavailable=self.unavailable,
            )
        if m.kind == DELIVERY:
            sent, received = self.counts["sent"], self.counts["received"]
            return CellResult(
                scenario=self.scenario,
                placement=self.placement,
                metric=m.key,
                kind=m.kind,
                size=m.size,
                figures={
                    "loss": 100.0 * (sent - received) / sent,
                    "rate": received / (self.ns / 1e9) if self.ns else 0.0,
                    "send_rate": sent / (self.send_ns / 1e9) if self.send_ns else 0.0,
                },
                messages=received,
                nbytes=received * m.size,
                seconds=self.ns / 1e9,
                repeats=self.rounds,
                per_pass=self.per_pass,
                counts=dict(self.counts),
            )
        if m.kind == MESSAGES:
            figures = {"rate": self.messages / (self.ns / 1e9)}
            if self.send_ns:  # queues: the producers' own pace
                figures["send_rate"] = self.messages / (self.send_ns / 1e9)
            return CellResult(
                scenario=self.scenario,
                placement=self.placement,
                metric=m.key,
                kind=m.kind,
                size=m.size,
                figures=figures,
                messages=self.messages,
                nbytes=self.nbytes,
                seconds=self.ns / 1e9,
                repeats=self.rounds,
                per_pass=self.per_pass,
                checksum=f"crc32:{self.crc:08x}",
                counts=dict(self.counts),
            )
        if m.kind == RATE:
            return CellResult(
                scenario=self.scenario,
                placement=self.placement,
                metric=m.key,
                kind=m.kind,
                size=m.size,
                figures={"rate": self.messages / (self.ns / 1e9)},
                messages=self.messages,
                nbytes=0,
                seconds=self.ns / 1e9,
                repeats=self.rounds,
                per_pass=self.per_pass,
            )
        if m.kind in (RTT, LATENCY):
            ordered = sorted(self.times)
            p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
            return CellResult(
                scenario=self.scenario,
                placement=self.placement,
                metric=m.key,
                kind=m.kind,
                size=m.size,
                figures={
                    "median": statistics.median(ordered) / 1e3,
                    "p99": p99 / 1e3,
                    "mean": statistics.fmean(ordered) / 1e3,
                    "min": ordered[0] / 1e3,
                },
                messages=2 * len(ordered),
                nbytes=2 * m.size * len(ordered),  # 0 for latency: signals carry no bytes
                seconds=sum(ordered) / 1e9,
                repeats=len(ordered),
                per_pass=self.per_pass,
            )
        return CellResult(
            scenario=self.scenario,
            placement=self.placement,
            metric=m.key,
            kind=m.kind,
            size=m.size,
            figures={"rate": self.nbytes / (self.ns / 1e9) / 1e6},
            messages=self.messages,
            nbytes=self.nbytes,
            seconds=self.ns / 1e9,
            repeats=self.rounds,
            per_pass=self.per_pass,
            checksum=f"crc32:{self.crc:08x}",
        )


ProgressFn = Callable[[str, int], None]


class Runner:
    """Measures ``scenarios`` in every placement; see the module docstring.

    Args:
        scenarios: what to run (from :func:`winipc.bench.registry.select`).
        quick: the short budget (:data:`QUICK`) instead of :data:`FULL`.
        source: the data moved in throughput cells (random by default, or a file).
        fault: test hook: ``"rtt"`` damages one echo in the worker, ``"throughput"``
            one unit sent by the runner, ``"msgs"`` one message of a burst; the run must
            then fail verification.
        progress: called with (description, steps done) around each cell.
        metrics: the metrics to measure (all but the ``--plot`` sizes by default).
        budget: overrides the budget ``quick`` selects.
        placement: ``"all"``, ``"same-core"`` or ``"cross-core"``.

    Raises:
        ValueError: the placement is impossible here.
    """

    def __init__(
        self,
        scenarios: Sequence[Scenario],
        *,
        quick: bool = False,
        source: Source | None = None,
        fault: str | None = None,
        progress: ProgressFn | None = None,
        metrics: Sequence[Metric] = DEFAULT_METRICS,
        budget: Budget | None = None,
        placement: str = "all",
    ) -> None:
        self.scenarios = list(scenarios)
        self.quick = quick
        self.budget = budget if budget is not None else QUICK if quick else FULL
        self.rtt_pool = Source.random().data
        self.source = source if source is not None else Source(self.rtt_pool)
        self.fault = fault
        self.metrics = list(metrics)
        self._progress = progress
        self.placements, self.notes = placements(placement)
        self._limit_set: LimitSet | None = None
        self._msg_start = 0  # where the next burst of messages starts in the pool
        #: scenario name -> why it cannot run here (its cells are reported without figures)
        self.unavailable: dict[str, str] = {}
        for sc in self.scenarios:
            reason = sc.unavailable()
            if reason is not None:
                self.unavailable[sc.name] = reason
                self.notes.append(f"{sc.name} not measured: {reason}")

    def plan(self) -> list[tuple[Scenario, Placement, list[Metric]]]:
        """(scenario, placement, metrics) for each worker session of one pass, in order."""
        out = []
        for placement in self.placements:
            for sc in self.scenarios:
                metrics = [m for m in self.metrics if sc.supports(m)]
                if metrics and sc.name not in self.unavailable:
                    out.append((sc, placement, metrics))
        return out

    @property
    def steps(self) -> int:
        """Cells to measure, all passes (for a progress bar)."""
        return self.budget.passes * sum(len(m) for _s, _p, m in self.plan())

    def _step(self, text: str, done: int) -> None:
        if self._progress is not None:
            self._progress(text, done)

    def run(self) -> RunResult:
        """Measure everything; raise on the first failure.

        Raises:
            VerificationError: a payload arrived damaged.
            BenchError: a worker failed.
        """
        result = RunResult(
            scenarios=self.scenarios,
            placements=self.placements,
            notes=list(self.notes),
            quick=self.quick,
            passes=self.budget.passes,
            source=self.source if self.source.file else None,
            started=time.time(),
        )
        t0 = time.monotonic()
        cells: dict[tuple[str, str, str], _Cell] = {}
        for sc, placement, metrics in self.plan():
            for m in metrics:
                cells[(sc.name, placement.name, m.key)] = _Cell(sc.name, placement.name, m)
        for sc in self.scenarios:
            if sc.name in self.unavailable:
                for placement in self.placements:
                    for m in self.metrics:
                        if sc.supports(m):
                            cells[(sc.name, placement.name, m.key)] = _Cell(
                                sc.name, placement.name, m, unavailable=self.unavailable[sc.name]
                            )
        if any(sc.limit and any(m.kind == THROUGHPUT for m in ms) for sc, _p, ms in self.plan()):
            result.limit = limit_sizing()
            result.notes.append(result.limit.reason)
            self._step(f"preparing the memcpy limit's {result.limit.bytes // MiB} MiB source", 0)
            self._limit_set = LimitSet(result.limit.bytes)
        workdir = tempfile.mkdtemp(prefix=f"winipc-bench-{os.getpid()}-")
        try:
            n = 0
            for pass_no in range(self.budget.passes):
                for sc, placement, metrics in self.plan():
                    n += 1
                    setup = Setup(workdir, f"{os.getpid()}-{n}", secrets.token_hex(16))
                    mine = [cells[(sc.name, placement.name, m.key)] for m in metrics]
                    self._session(sc, placement, mine, setup, pass_no)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if self._limit_set is not None:
                self._limit_set.close()
                self._limit_set = None
        result.results = [c.finish() for c in cells.values()]
        result.duration = time.monotonic() - t0
        return result

    def _session(
        self, sc: Scenario, placement: Placement, cells: list[_Cell], setup: Setup, pass_no: int
    ) -> None:
        original = os.sched_getaffinity(0) if placement.runner_cpu is not None else None
        try:
            if placement.runner_cpu is not None:
                os.sched_setaffinity(0, {placement.runner_cpu})
            where = f"{sc.name}, {placement.name}"
            with blame(None, f"{where}, starting the worker"):
                worker = WorkerSession(sc, placement.worker_cpu, setup, self.fault)
            try:
                with blame(worker, f"{where}, connecting"), worker.watchdog(60.0):
                    ep = sc.connect(worker.address, setup)
                try:
                    for cell in cells:
                        label = cell.metric.label
                        text = f"pass {pass_no + 1}/{self.budget.passes} · {where} · {label}"
                        self._step(text, 0)
                        with (
                            blame(worker, f"{where}, {label}"),
                            worker.watchdog(self._cell_timeout()),
                        ):
                            if cell.metric.group == "rpc":
                                self._rpc(worker, sc, ep, cell)
                            elif cell.metric.kind == RTT:
                                self._rtt(worker, ep, cell)
                            elif cell.metric.kind == THROUGHPUT and sc.limit:
                                self._limit_throughput(worker, ep, cell)
                            elif cell.metric.kind == THROUGHPUT:
                                self._throughput(worker, ep, cell)
                            elif cell.metric.group == "queue":
                                self._queue(worker, sc, ep, cell)
                            elif cell.metric.kind == MESSAGES:
                                self._messages(worker, ep, cell)
                            elif cell.metric.kind == DELIVERY:
                                self._delivery(worker, sc, ep, cell)
                            else:
                                self._exchange(worker, sc, ep, cell)
                        self._step(text, 1)
                finally:
                    ep.close()
            finally:
                worker.close()
        finally:
            if original is not None:
                os.sched_setaffinity(0, original)

    def _cell_timeout(self) -> float:
        extra = 0.0 if self.source.file is None else len(self.source.data) / 20e6
        return 120.0 + extra

    # ---------------------------------------------------------------- round trip
    def _rtt(self, worker: WorkerSession, ep: Endpoint, cell: _Cell) -> None:
        b, size, k = self.budget, cell.metric.size, self.budget.passes
        start = len(cell.times) + b.rtt_warmup * len(cell.per_pass)

        def batch(count: int) -> list[int]:
            nonlocal start
            units = rtt_units(self.rtt_pool, size, count, start)
            start += count
            worker.command({"op": "echo", "size": size, "count": count})
            times = ping(ep, units)
            worker.reply()
            return times

        batch(b.rtt_warmup)
        times: list[int] = []
        most, least = b.rtt_max // k, b.rtt_min // k
        while len(times) < most and (len(times) < least or sum(times) < b.rtt_seconds / k * 1e9):
            times += batch(min(b.rtt_batch, most - len(times)))
        cell.times += times
        cell.per_pass.append(statistics.median(times) / 1e3)

    # ---------------------------------------------------------------- latency, rate
    def _exchange(self, worker: WorkerSession, sc: Scenario, ep: Endpoint, cell: _Cell) -> None:
        """Batches of a scenario's own exchange (set-to-wake, hand-offs), both sides at once.

        The round-trip budget applies: ``rtt_warmup`` operations untimed, then batches of
        ``rtt_batch`` until ``rtt_min`` operations and ``rtt_seconds`` (at most
        ``rtt_max`` operations), per pass.
        """
        b, k, m = self.budget, self.budget.passes, cell.metric

        def batch(count: int) -> list[int]:
            worker.command({"op": "exchange", "metric": m.key, "count": count})
            mine = sc.exchange(ep, m, count, True)
            theirs = [int(t) for t in worker.reply()["stamps"]]
            if m.kind == LATENCY:
                return wake_latencies(mine, theirs)
            ops, ns = handoffs(mine, theirs)
            return [ops, ns]

        batch(max(2, b.rtt_warmup))
        most, least = b.rtt_max // k, b.rtt_min // k
        if m.kind == LATENCY:
            times: list[int] = []
            while len(times) < most and (len(times) < least or sum(times) < b.rtt_seconds / k * 1e9):
                times += batch(min(b.rtt_batch, most - len(times)))
            cell.times += times
            cell.per_pass.append(statistics.median(times) / 1e3)
            return
        ops, ns, rounds = 0, 0, 0
        while ops < most and (ops < least or ns < b.rtt_seconds / k * 1e9):
            got, took = batch(max(2, min(b.rtt_batch, (most - ops) // 2)))
            ops, ns, rounds = ops + got, ns + took, rounds + 1
        cell.messages += ops
        cell.ns += ns
        cell.rounds += rounds
        cell.per_pass.append(ops / (ns / 1e9))

    # ---------------------------------------------------------------- delivery
    def _delivery(self, worker: WorkerSession, sc: Scenario, ep: Endpoint, cell: _Cell) -> None:
        """One burst of :attr:`Budget.burst` messages per pass, written as fast as the
        scenario's writer can; the worker counts and verifies what arrives."""
        count = self.budget.burst
        worker.command({"op": "exchange", "metric": cell.metric.key, "count": count})
        mine = sc.exchange(ep, cell.metric, count, True)
        got = deliveries(mine, [int(t) for t in worker.reply()["stamps"]])
        for key, value in (
            ("sent", got.sent),
            ("received", got.received),
            ("duplicates", got.duplicates),
        ):
            cell.counts[key] = cell.counts.get(key, 0) + value
        cell.ns += got.deliver_ns
        cell.send_ns += got.send_ns
        cell.rounds += 1
        cell.per_pass.append(100.0 * (got.sent - got.received) / got.sent)

    # ---------------------------------------------------------------- throughput
    def _throughput(self, worker: WorkerSession, ep: Endpoint, cell: _Cell) -> None:
        b, size, k = self.budget, cell.metric.size, self.budget.passes
        units = self.source.round(size, b.round_bytes, b.round_units)
        period = len(self.source.data) if self.source.file else None
        sender: Endpoint = Corrupting(ep) if self.fault == "throughput" else ep
        # warm-up: a few units, or one whole pass of a file (verified, not timed)
        warm = units[: min(len(units), 4) if period is None else math.ceil(period / size)]
        self._round(worker, sender, warm, size, period)
        crc = crc32_of(units)
        total = sum(len(u) for u in units)
        rounds, ns = 0, 0
        least = max(1, math.ceil(b.tput_min_rounds / k))
        while rounds < b.tput_max_rounds and (rounds < least or ns < b.tput_seconds / k * 1e9):
            ns += self._round(worker, sender, units, size, period, crc, total)
            rounds += 1
        cell.nbytes += total * rounds
        cell.ns += ns
        cell.rounds += rounds
        cell.messages += len(units) * rounds
        cell.crc = crc
        cell.per_pass.append(total * rounds / (ns / 1e9) / 1e6)

    def _limit_throughput(self, worker: WorkerSession, ep: Endpoint, cell: _Cell) -> None:
        """Throughput of the limit: every round a fresh window of the large set.

        The round's checksum is computed after the round (computing it before would
        bring the window into the cache): the worker reports the CRC-32 of what it
        received and the runner compares it with that of the window.
        """
        b, size, k = self.budget, cell.metric.size, self.budget.passes
        assert self._limit_set is not None
        limit_set = self._limit_set
        sender: Endpoint = Corrupting(ep) if self.fault == "throughput" else ep

        def one(units: list[memoryview]) -> int:
            total = len(units) * size
            worker.command({"op": "sink", "size": size, "total": total, "period": None, "crc32": None})
            elapsed = send_round(sender, units)
            got = worker.reply(self._cell_timeout())
            crc = crc32_of(units)
            if got.get("crc32") != crc or got.get("bytes") != total:
                raise VerificationError(
                    f"throughput: checksum mismatch (the receiver reports crc32 "
                    f"{got.get('crc32')} over {got.get('bytes')} bytes; sent {crc} over {total})"
                )
            cell.crc = crc
            return elapsed

        one(limit_set.round(size, 4 * size))  # warm-up: verified, not timed
        rounds, ns, nbytes, count = 0, 0, 0, 0
        least = max(1, math.ceil(b.tput_min_rounds / k))
        while rounds < b.tput_max_rounds and (rounds < least or ns < b.tput_seconds / k * 1e9):
            units = limit_set.round(size, b.round_bytes, b.round_units)
            ns += one(units)
            rounds, nbytes, count = rounds + 1, nbytes + len(units) * size, count + len(units)
            del units
        cell.nbytes += nbytes
        cell.ns += ns
        cell.rounds += rounds
        cell.messages += count
        cell.per_pass.append(nbytes / (ns / 1e9) / 1e6)

    # ---------------------------------------------------------------- messages
    def _messages(self, worker: WorkerSession, ep: Endpoint, cell: _Cell) -> None:
        """Bursts of small messages one way; figure: messages per second.

        Each burst's messages are cut from the random pool at offsets no earlier burst
        used; the worker checks each length and the CRC-32 of the whole burst.
        """
        b, size, k = self.budget, cell.metric.size, self.budget.passes
        sender: Endpoint = Corrupting(ep) if self.fault == "msgs" else ep

        def burst(count: int) -> int:
            units = rtt_units(self.rtt_pool, size, count, self._msg_start)
            self._msg_start += count
            crc = crc32_of(units)
            worker.command({"op": "msgs", "size": size, "count": count, "crc32": crc})
            elapsed = send_burst(sender, units, batches(units))
            got = worker.reply(self._cell_timeout())
            if got.get("crc32") != crc or got.get("units") != count:
                raise VerificationError(
                    f"messages: the receiver reports crc32 {got.get('crc32')} over "
                    f"{got.get('units')} messages; sent {crc} over {count}"
                )
            cell.crc = crc
            return elapsed

        burst(max(1, b.msgs_warmup))
        bursts, ns, count = 0, 0, 0
        least = max(1, math.ceil(b.msgs_min_bursts / k))
        while bursts < least or ns < b.msgs_seconds / k * 1e9:
            ns += burst(b.msgs_burst)
            bursts, count = bursts + 1, count + b.msgs_burst
        cell.messages += count
        cell.nbytes += count * size
        cell.ns += ns
        cell.rounds += bursts
        cell.per_pass.append(count / (ns / 1e9))

    # ---------------------------------------------------------------- message queues
    def _queue(self, worker: WorkerSession, sc: Scenario, ep: Endpoint, cell: _Cell) -> None:
        """Bursts of queue messages, producers (runner side) to the consumer (worker).

        Both sides run the scenario's :meth:`~Scenario.exchange` at once. The runner's
        side returns ``[first send, end of the last send, messages sent, checksum]``,
        the worker's ``[messages received, duplicates, stamp of the last receipt,
        checksum]`` (``time.monotonic_ns()``; the checksum is the sum of the messages'
        CRC-32s modulo 2**32, whatever their order). A burst's time runs from the first
        send to the last receipt. One untimed burst of :attr:`Budget.queue_warmup`
        messages per pass, then bursts, each sized to fill the time left, until
        :attr:`Budget.queue_seconds` (per run) of timed bursts.

        Raises:
            VerificationError: a message is missing, or the checksums differ.
        """
        b, m, k = self.budget, cell.metric, self.budget.passes

        def burst(count: int, timed: bool = True) -> tuple[int, int]:
            worker.command({"op": "exchange", "metric": m.key, "count": count})
            start, end, sent, crc = sc.exchange(ep, m, count, True)
            received, duplicates, last, their_crc = (
                int(t) for t in worker.reply(self._cell_timeout())["stamps"]
            )
            if sent != count or received != count or their_crc != crc:
                raise VerificationError(
                    f"queue: {sent} messages sent and {received} received of {count} "
                    f"(checksums: sent {crc:08x}, received {their_crc:08x})"
                )
            if timed:  # the warm-up is verified, not counted
                for key, value in (("sent", sent), ("received", received), ("duplicates", duplicates)):
                    cell.counts[key] = cell.counts.get(key, 0) + value
                cell.crc = crc
                cell.send_ns += max(1, end - start)
            return received, max(1, last - start)

        burst(max(1, b.queue_warmup), timed=False)
        goal = b.queue_seconds / k * 1e9
        count, got, ns, bursts = max(1, b.queue_warmup), 0, 0, 0
        while bursts == 0 or ns < goal:
            n, took = burst(count)
            got, ns, bursts = got + n, ns + took, bursts + 1
            count = max(16, min(b.queue_max_burst, int(n / took * (goal - ns))))
        cell.messages += got
        cell.nbytes += got * m.size
        cell.ns += ns
        cell.rounds += bursts
        cell.per_pass.append(got / (ns / 1e9))

    # ---------------------------------------------------------------- remote procedure calls
    def _rpc(self, worker: WorkerSession, sc: Scenario, ep: Endpoint, cell: _Cell) -> None:
        """Batches of calls, the runner's client to the worker's server (group ``rpc``).

        Both sides run the scenario's :meth:`~Scenario.exchange` at once. The runner's
        side makes ``count`` calls and returns: ``rpc-null`` (latency), each call's round
        trip in ns; ``rpc-calls-*`` (rate), ``[start, end, calls]``; ``rpc-1mib``
        (throughput), ``[start, end, calls, CRC-32 of the last argument sent]``. The
        worker's side waits until its server has served them and returns ``[calls
        served, CRC-32 of the last argument received, its length]``. One untimed batch
        of :attr:`Budget.rpc_warmup` calls per pass (a 16th for the 1 MiB argument),
        then batches, each sized to fill the time left, until :attr:`Budget.rpc_seconds`
        (per run) of timed calls.

        Raises:
            VerificationError: the server did not serve exactly the calls made, or the
                last argument it received is not the one sent.
        """
        b, m, k = self.budget, cell.metric, self.budget.passes

        def batch(count: int) -> list[int]:
            worker.command({"op": "exchange", "metric": m.key, "count": count})
            mine = sc.exchange(ep, m, count, True)
            served, crc, length = (int(t) for t in worker.reply(self._cell_timeout())["stamps"])
            if served != count or (m.kind == LATENCY and len(mine) != count):
                raise VerificationError(f"rpc: {count} calls made, {served} served")
            if m.kind == THROUGHPUT and (crc, length) != (mine[3], m.size):
                raise VerificationError(
                    f"rpc: the last argument arrived as {length} bytes, crc32 {crc:08x} "
                    f"(sent {m.size} bytes, crc32 {mine[3]:08x})"
                )
            return mine

        warm = max(1, b.rpc_warmup // 16) if m.kind == THROUGHPUT else b.rpc_warmup
        least = 1 if m.kind == THROUGHPUT else 8
        batch(warm)
        goal = b.rpc_seconds / k * 1e9
        count, calls, ns, rounds = warm, 0, 0, 0
        times: list[int] = []
        while rounds == 0 or ns < goal:
            mine = batch(count)
            if m.kind == LATENCY:
                times += mine
                took = sum(mine)
            else:
                took = max(1, mine[1] - mine[0])
                if m.kind == THROUGHPUT:
                    cell.crc = mine[3]
            calls, ns, rounds = calls + count, ns + took, rounds + 1
            count = max(least, min(b.rpc_max_batch, int(count / took * (goal - ns))))
        if m.kind == LATENCY:
            cell.times += times
            cell.per_pass.append(statistics.median(times) / 1e3)
            return
        cell.messages += calls
        cell.nbytes += calls * m.size
        cell.ns += ns
        cell.rounds += rounds
        cell.per_pass.append(
            calls / (ns / 1e9) if m.kind == RATE else calls * m.size / (ns / 1e9) / 1e6
        )

    def _round(
        self,
        worker: WorkerSession,
        ep: Endpoint,
        units: Sequence[bytes],
        size: int,
        period: int | None,
        crc: int | None = None,
        total: int | None = None,
    ) -> int:
        crc = crc32_of(units) if crc is None else crc
        total = sum(len(u) for u in units) if total is None else total
        worker.command({"op": "sink", "size": size, "total": total, "period": period, "crc32": crc})
        elapsed = send_round(ep, units)
        got = worker.reply(self._cell_timeout())
        if got.get("crc32") != crc or got.get("bytes") != total:
            raise VerificationError(
                f"throughput: the receiver reports crc32 "
                f"{got.get('crc32')} over {got.get('bytes')} bytes; sent {crc} over {total}"
            )
        return elapsed
