"""winipc bench, message queues: the queue scenarios between real processes, tiny counts.

Only the shape of the outcome is checked (every message received, the JSON keys, the
ratios to the peers computed), never a speed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from natsutil import server_answers
from winipc.bench import registry
from winipc.bench import scenarios_queue as SQ
from winipc.bench.cli import bench
from winipc.bench.registry import Setup
from winipc.bench.report import CACHE_ENV, build_document, render_targets
from winipc.bench.runner import QUICK, CellResult, Placement, Runner, RunResult
from winipc.bench.workload import VerificationError

REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
QUEUE = sorted(s.name for s in registry.all_scenarios() if s.group == "queue")
TINY = dataclasses.replace(QUICK, queue_seconds=0.01, queue_warmup=4)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs save their document into this test's directory, never into ~/.cache."""
    path = tmp_path / "bench-last.json"
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


@pytest.fixture
def store_cleaned(winipc_root: Path) -> Iterator[None]:
    """No queue is left behind; then the local store's folder goes if it is empty
    (whether the store keeps its folder is the store's business)."""
    yield
    from winipc import msmq

    assert msmq.list_queues() == []
    mine = f"winipc-bench-{os.getpid()}-"
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith(mine)]
    store = winipc_root / "msmq"
    if store.is_dir() and not any(p.is_file() for p in store.rglob("*")):
        for p in sorted(store.rglob("*"), reverse=True):
            p.rmdir()
        store.rmdir()


def _streams_left() -> list[str]:
    """The raw JetStream scenario's streams still on the server."""
    import asyncio

    import nats

    async def names() -> list[str]:
        nc = await nats.connect(SQ.NATS_URL)
        try:
            return [s.config.name for s in await nc.jetstream().streams_info()]
        finally:
            await nc.close()

    return [n for n in asyncio.run(names()) if n.startswith(f"WINIPC_BENCH_{os.getpid()}_")]


def _doc(patterns: list[str], placement: str = "same-core") -> dict[str, Any]:
    runner = Runner(registry.select(patterns), budget=TINY, placement=placement)
    run = runner.run()
    doc = build_document(run, registry.all_scenarios())
    json.dumps(doc)  # the document is JSON
    return doc


def test_registered_with_their_metric_and_targets() -> None:
    assert set(QUEUE) == {
        "winipc-queue-recoverable", "winipc-queue-recoverable-4p", "winipc-queue-send-many",
        "winipc-queue-express", "winipc-queue-nats", "winipc-queue-nats-exact", "nats-py-queue",
        "persist-queue",
    }  # fmt: skip
    metric = registry.metric(SQ.METRIC)
    assert metric.group == "queue" and metric.size == 1024 and metric.kind == "messages"
    for s in registry.all_scenarios():
        # queue scenarios are measured on queue-1k alone, and nothing else is
        assert s.supports(metric) == (s.group == "queue")
        if s.group == "queue":
            assert [m.key for m in registry.METRICS if s.supports(m)] == [SQ.METRIC]
    assert {s.name for s in registry.all_scenarios() if s.group == "queue" and s.peer} == {
        "nats-py-queue",
        "persist-queue",
    }
    targets = {t.key: t for t in registry.targets()}
    assert targets["queue-recoverable-vs-persist-queue"].at_least == 2.0
    assert targets["queue-recoverable-4p-vs-persist-queue"].at_least == 10.0
    assert targets["queue-send-many-vs-persist-queue"].at_least == 10.0
    assert targets["queue-express"].at_least == 100_000 and targets["queue-express"].versus is None
    assert targets["queue-nats-vs-nats-py"].versus == "nats-py-queue"


def _check_queue_cell(r: dict[str, Any]) -> None:
    if "unavailable" in r:
        assert r["figures"] == {} and r["unavailable"]
        return
    assert r["verified"] is True and r["kind"] == "messages" and r["size"] == 1024
    assert r["sent"] == r["received"] == r["messages"] > 0  # every message received
    assert r["duplicates"] >= 0 and r["bytes"] == 1024 * r["messages"]
    assert r["rounds"] >= 1 and r["checksum"].startswith("crc32:") and r["seconds"] > 0
    rate = r["figures"]["rate"]
    assert rate["unit"] == "1/s" and rate["better"] == "higher"
    assert math.isfinite(rate["value"]) and rate["value"] > 0
    assert rate["value"] == pytest.approx(r["messages"] / r["seconds"])
    assert len(r["per_pass"]) == 1


def test_local_queues_and_persist_queue_between_processes(store_cleaned: None) -> None:
    doc = _doc(["winipc-queue-[rse]*", "persist-queue"])
    names = {r["scenario"] for r in doc["results"]}
    assert names == {
        "winipc-queue-recoverable", "winipc-queue-recoverable-4p", "winipc-queue-send-many",
        "winipc-queue-express", "persist-queue",
    }  # fmt: skip
    assert {r["metric"] for r in doc["results"]} == {SQ.METRIC}
    for r in doc["results"]:
        _check_queue_cell(r)
    info = {s["name"]: s for s in doc["scenarios"]}
    assert info["persist-queue"]["peer"] is True and info["winipc-queue-express"]["group"] == "queue"
    persist_missing = info["persist-queue"]["unavailable"]
    if persist_missing is None:
        assert "synchronous=" in info["persist-queue"]["description"]
    elif REQUIRE:
        pytest.fail(f"persist-queue: {persist_missing}")
    # the targets: ratios to persist-queue, and express against its figure
    targets = {t["key"]: t for t in doc["targets"]}
    assert set(targets) == {
        "queue-recoverable-vs-persist-queue", "queue-recoverable-4p-vs-persist-queue",
        "queue-send-many-vs-persist-queue", "queue-express",
    }  # fmt: skip
    figure = {r["scenario"]: r["figures"].get("rate", {}).get("value") for r in doc["results"]}
    for t in doc["targets"]:
        assert t["placement"] == "same-core" and t["metric"] == SQ.METRIC
        assert t["value"] == figure[t["scenario"]]
        if t["versus"] is None:
            assert t["met"] == (t["value"] >= t["at_least"]) and t["ratio"] is None
        elif persist_missing is None:
            assert t["versus_value"] == figure["persist-queue"]
            assert t["ratio"] == pytest.approx(t["value"] / t["versus_value"])
            assert t["met"] == (t["ratio"] >= t["at_least"])
        else:
            assert t["ratio"] is None and t["met"] is None and "persist-queue" in t["why"]
    lines = render_targets(doc)
    assert len(lines) == 4 and all(line.startswith("Target ") for line in lines)


def test_nats_queues_between_processes(store_cleaned: None) -> None:
    doc = _doc(["winipc-queue-nats", "nats-py-queue"])
    for r in doc["results"]:
        _check_queue_cell(r)
    (target,) = doc["targets"]
    assert target["key"] == "queue-nats-vs-nats-py"
    reasons = {s["name"]: s["unavailable"] for s in doc["scenarios"] if s["selected"]}
    if server_answers():
        assert reasons["nats-py-queue"] is None
        if reasons["winipc-queue-nats-exact"] is None:  # selected too: the default receive's figure
            exact = [r for r in doc["results"] if r["scenario"] == "winipc-queue-nats-exact"]
            assert exact and all(r["figures"] for r in exact)
        assert target["versus_value"] > 0
        if reasons["winipc-queue-nats"] is None:
            assert target["ratio"] == pytest.approx(target["value"] / target["versus_value"])
        assert _streams_left() == []
    else:
        if REQUIRE:
            pytest.fail("no NATS server at 127.0.0.1:4222 (required: WINIPC_REQUIRE_ALL=1)")
        assert all(reasons.values())
        assert target["met"] is None and "not measured" in target["why"]
        assert "n/a" in render_targets(doc)[0]


def test_cli_quick_run_prints_the_queue_table_and_targets(
    cache: Path, store_cleaned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("winipc.bench.runner.QUICK", TINY)
    args = ["--quick", "--placement", "same-core", "--only", "winipc-queue-rec*able"]
    result = CliRunner().invoke(bench, [*args, "--only", "persist-queue"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "queue" in result.stdout and "1 KiB msgs" in result.stdout
    assert "Target recoverable, 1 producer, vs persist-queue" in result.stdout
    saved = json.loads(cache.read_text())
    assert [t["key"] for t in saved["targets"]] == ["queue-recoverable-vs-persist-queue"]


# --------------------------------------------------------------------------- pieces


class _Fake:
    """A receiver that hands out given bodies, one per take()."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = list(bodies)
        self.after = 0

    def take(self, most: int, timeout: float) -> list[bytes]:
        assert most >= 1 and self.bodies, "asked for more than was sent"
        return [self.bodies.pop(0)]

    def after_burst(self) -> None:
        self.after += 1

    def close(self) -> None:
        pass


def _setup() -> Setup:
    return Setup(workdir="/nonexistent", tag="t", secret="ab" * 16)


def test_consumer_counts_duplicates_and_ignores_earlier_bursts() -> None:
    setup = _setup()
    pool = SQ.message_pool(setup.secret)
    nonce = SQ.burst_nonce(setup.secret, 0)
    bodies = [SQ.make_body(pool, nonce, seq) for seq in range(5)]
    assert all(len(b) == SQ.BODY for b in bodies) and len(set(bodies)) == 5
    stale = SQ.make_body(pool, SQ.burst_nonce(setup.secret, 99), 1)
    fake = _Fake([bodies[3], stale, bodies[0], bodies[3], *bodies[1:3], bodies[4]])
    end = SQ._ConsumerEnd(fake, setup)
    received, duplicates, last, crc = end.consume(5)
    assert (received, duplicates, fake.after) == (5, 1, 1) and last > 0
    assert crc == SQ.checksum(bodies) == SQ.checksum(list(reversed(bodies)))


@pytest.mark.parametrize("damage", ["byte", "short", "sequence"])
def test_consumer_refuses_a_damaged_message(damage: str) -> None:
    setup = _setup()
    pool = SQ.message_pool(setup.secret)
    nonce = SQ.burst_nonce(setup.secret, 0)
    bodies = [SQ.make_body(pool, nonce, seq) for seq in range(3)]
    if damage == "byte":
        bad = bytearray(bodies[1])
        bad[500] ^= 0x40
        bodies[1] = bytes(bad)
    elif damage == "short":
        bodies[1] = bodies[1][:4]
    else:
        bodies[1] = SQ.make_body(pool, nonce, 7)  # not a number of this burst
    with pytest.raises(VerificationError):
        SQ._ConsumerEnd(_Fake(bodies), setup).consume(3)


def test_targets_of_a_made_up_run() -> None:
    def cell(scenario: str, rate: float | None, why: str | None = None) -> CellResult:
        return CellResult(
            scenario, "same-core", SQ.METRIC, "messages", 1024,
            {} if rate is None else {"rate": rate}, 0, 0, 1.0, 1, unavailable=why,
        )  # fmt: skip

    scenarios = [registry.get(n) for n in QUEUE]
    run = RunResult(scenarios, [Placement("same-core", 0, 0)])
    run.results = [
        cell("winipc-queue-recoverable", 300.0),
        cell("winipc-queue-recoverable-4p", 2000.0),
        cell("winipc-queue-send-many", 900.0),
        cell("winipc-queue-express", 150_000.0),
        cell("winipc-queue-nats", 80.0),
        cell("nats-py-queue", 100.0),
        cell("persist-queue", None, "persist-queue is not installed"),
    ]
    got = {t["key"]: t for t in build_document(run, registry.all_scenarios())["targets"]}
    assert got["queue-express"]["met"] is True and got["queue-express"]["ratio"] is None
    assert got["queue-nats-vs-nats-py"]["ratio"] == pytest.approx(0.8)
    assert got["queue-nats-vs-nats-py"]["met"] is True
    for key in ("queue-recoverable-vs-persist-queue", "queue-send-many-vs-persist-queue"):
        assert got[key]["met"] is None and got[key]["ratio"] is None
        assert "persist-queue not measured: persist-queue is not installed" in got[key]["why"]
    run.results[-1] = cell("persist-queue", 100.0)
    got = {t["key"]: t for t in build_document(run, registry.all_scenarios())["targets"]}
    assert got["queue-recoverable-vs-persist-queue"]["ratio"] == pytest.approx(3.0)
    assert got["queue-recoverable-vs-persist-queue"]["met"] is True
    assert got["queue-recoverable-4p-vs-persist-queue"]["met"] is True  # 20x
    assert got["queue-send-many-vs-persist-queue"]["met"] is False  # 9x < 10x


def test_no_nats_server_means_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    SQ._nats_server_problem.cache_clear()
    try:
        why = SQ._nats_server_problem("nats://127.0.0.1:9")  # the discard port: nobody
        assert why is not None and "nats://127.0.0.1:9" in why
    finally:
        SQ._nats_server_problem.cache_clear()


def test_persist_queue_durability_is_read_from_a_live_queue() -> None:
    if registry.get("persist-queue").unavailable() is not None:
        pytest.skip("persist-queue is not installed")
    text = SQ.persist_queue_synchronous()
    assert "journal_mode=wal" in text.lower() and "synchronous=" in text
