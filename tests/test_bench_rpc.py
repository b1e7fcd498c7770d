"""winipc bench, remote procedure calls: the rpc scenarios between real processes, tiny budgets.

Only the shape of the outcome is checked (every call served once, the JSON keys, the
targets computed, a missing peer reported), never a speed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from winipc.bench import registry
from winipc.bench import scenarios_rpc as SR
from winipc.bench.cli import bench
from winipc.bench.registry import Setup
from winipc.bench.report import CACHE_ENV, build_document, render_targets
from winipc.bench.runner import QUICK, CellResult, Placement, Runner, RunResult
from winipc.bench.workload import BenchError, VerificationError

REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
RPC = sorted(s.name for s in registry.all_scenarios() if s.group == "rpc")
METRICS = [SR.NULL, SR.CALLS_1, SR.CALLS_8, SR.ARG_1M]
TINY = dataclasses.replace(QUICK, rpc_seconds=0.01, rpc_warmup=8)
TARGETS = {
    "rpc-null-vs-pipe", "rpc-calls-1-vs-frameworks", "rpc-calls-1-vs-mp-manager",
    "rpc-calls-8-vs-frameworks", "rpc-calls-8-vs-mp-manager", "rpc-1mib",
}  # fmt: skip


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs save their document into this test's directory, never into ~/.cache."""
    path = tmp_path / "bench-last.json"
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


def _doc(patterns: list[str], placement: str = "same-core") -> dict[str, Any]:
    run = Runner(registry.select(patterns), budget=TINY, placement=placement).run()
    doc = build_document(run, registry.all_scenarios())
    json.dumps(doc)  # the document is JSON
    mine = f"winipc-bench-{os.getpid()}-"
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith(mine)]
    return doc


def test_registered_with_their_metrics_and_targets() -> None:
    assert set(RPC) == {
        "winipc-rpc", "winipc-rpc-tcp", "rpc-ref-pipe-64", "rpc-xmlrpc", "rpc-pyro5",
        "rpc-rpyc", "rpc-grpcio", "rpc-mp-manager", "rpc-msgpack-socket",
    }  # fmt: skip
    assert {s.name for s in registry.all_scenarios() if s.group == "rpc" and s.peer} == {
        "rpc-xmlrpc", "rpc-pyro5", "rpc-rpyc", "rpc-grpcio", "rpc-mp-manager", "rpc-msgpack-socket",
    }  # fmt: skip
    kinds = {m: registry.metric(m).kind for m in METRICS}
    assert kinds == {SR.NULL: "latency", SR.CALLS_1: "rate", SR.CALLS_8: "rate", SR.ARG_1M: "throughput"}
    assert registry.metric(SR.ARG_1M).size == 1024 * 1024
    for s in registry.all_scenarios():
        mine = [m.key for m in registry.METRICS if s.supports(m)]
        if s.name == "rpc-ref-pipe-64":
            assert mine == [SR.NULL]
        elif s.group == "rpc":
            assert mine == METRICS  # the rpc metrics alone
        else:
            assert not set(mine) & set(METRICS)  # nothing else is measured on them
    targets = {t.key: t for t in registry.targets() if t.key.startswith("rpc")}
    assert set(targets) == TARGETS
    assert targets["rpc-null-vs-pipe"].at_most == 1.3
    assert targets["rpc-null-vs-pipe"].figure == "median"
    assert targets["rpc-calls-8-vs-frameworks"].versus == ("rpc-pyro5", "rpc-rpyc", "rpc-grpcio")
    assert targets["rpc-calls-1-vs-frameworks"].at_least == 3.0
    assert targets["rpc-calls-8-vs-mp-manager"].at_least == 1.0
    assert targets["rpc-1mib"].versus is None and targets["rpc-1mib"].at_least == 1000.0


def _check_rpc_cell(r: dict[str, Any]) -> None:
    if "unavailable" in r:
        assert r["figures"] == {} and r["unavailable"]
        return
    assert r["verified"] is True and r["messages"] > 0 and r["seconds"] > 0
    assert len(r["per_pass"]) == 1
    for fig in r["figures"].values():
        assert math.isfinite(fig["value"]) and fig["value"] > 0
        assert fig["ratio_to_best_peer"] is None or fig["ratio_to_best_peer"] > 0
    if r["metric"] == SR.NULL:
        assert r["kind"] == "latency" and r["size"] == 0 and r["bytes"] == 0
        assert set(r["figures"]) == {"median", "p99", "mean", "min"}
        assert r["figures"]["median"]["unit"] == "us"
        assert r["figures"]["min"]["value"] <= r["figures"]["median"]["value"]
        assert r["figures"]["median"]["value"] <= r["figures"]["p99"]["value"]
        assert r["iterations"] >= 1 and r["messages"] == 2 * r["iterations"]
    elif r["metric"] in (SR.CALLS_1, SR.CALLS_8):
        assert r["kind"] == "rate" and r["rounds"] >= 1
        assert set(r["figures"]) == {"rate"} and r["figures"]["rate"]["unit"] == "1/s"
        assert r["figures"]["rate"]["value"] == pytest.approx(r["messages"] / r["seconds"])
    else:
        assert r["metric"] == SR.ARG_1M and r["kind"] == "throughput"
        assert r["bytes"] == r["messages"] * 1024 * 1024 and r["rounds"] >= 1
        assert r["checksum"].startswith("crc32:")
        rate = r["figures"]["rate"]
        assert rate["unit"] == "MB/s" and rate["value"] == pytest.approx(r["bytes"] / r["seconds"] / 1e6)


def test_every_rpc_scenario_between_processes() -> None:
    doc = _doc(["rpc"])
    names = {r["scenario"] for r in doc["results"]}
    assert names == set(RPC)
    assert {(r["scenario"], r["metric"]) for r in doc["results"]} == {
        (n, m) for n in RPC for m in METRICS if n != "rpc-ref-pipe-64" or m == SR.NULL
    }
    for r in doc["results"]:
        _check_rpc_cell(r)
    info = {s["name"]: s for s in doc["scenarios"]}
    for name in ("rpc-xmlrpc", "rpc-mp-manager", "rpc-msgpack-socket"):  # the stdlib ones
        assert info[name]["unavailable"] is None and info[name]["figures"]["same-core"]
    missing = {n: info[n]["unavailable"] for n in RPC if info[n]["unavailable"]}
    if REQUIRE:
        assert not missing, missing
    # the targets: one line per target, each computed from the run's figures
    targets = {t["key"]: t for t in doc["targets"]}
    assert set(targets) == TARGETS
    figure = {(r["scenario"], r["metric"]): r["figures"] for r in doc["results"]}
    for t in doc["targets"]:
        assert t["placement"] == "same-core" and t["scenario"] == "winipc-rpc"
        if "winipc-rpc" in missing:
            assert t["met"] is None and "winipc-rpc not measured" in t["why"]
            continue
        assert t["value"] == figure[("winipc-rpc", t["metric"])][t["figure"]]["value"]
        if t["versus"] is None:
            assert t["met"] == (t["value"] >= t["at_least"]) and t["ratio"] is None
        elif t["versus_value"] is not None:
            assert t["ratio"] == pytest.approx(t["value"] / t["versus_value"])
    null = targets["rpc-null-vs-pipe"]
    if null["ratio"] is not None:
        assert null["at_most"] == 1.3 and null["met"] == (null["ratio"] <= 1.3)
    frameworks = targets["rpc-calls-8-vs-frameworks"]
    assert frameworks["among"] == ["rpc-pyro5", "rpc-rpyc", "rpc-grpcio"]
    measured = [n for n in frameworks["among"] if n not in missing]
    if measured and "winipc-rpc" not in missing:
        best = max(measured, key=lambda n: figure[(n, SR.CALLS_8)]["rate"]["value"])
        assert frameworks["versus"] == best
        assert frameworks["versus_value"] == figure[(best, SR.CALLS_8)]["rate"]["value"]
    lines = [line for line in render_targets(doc) if "calls" in line or "round trip" in line]
    assert len(lines) == 5 and all(line.startswith("Target ") for line in lines)
    assert any("<= 1.3x" in line for line in lines)


def test_a_missing_peer_is_reported_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SR.PYRO5, "package", "winipc_no_such_package_for_tests")
    monkeypatch.setattr(SR.GRPC, "package", "winipc_no_such_package_either")
    doc = _doc(["rpc-pyro5", "rpc-grpcio", "rpc-msgpack-socket"])
    info = {s["name"]: s for s in doc["scenarios"]}
    assert "winipc_no_such_package_for_tests is not installed" in info["rpc-pyro5"]["unavailable"]
    assert info["rpc-msgpack-socket"]["unavailable"] is None
    for r in doc["results"]:
        _check_rpc_cell(r)
        assert ("unavailable" in r) == (r["scenario"] != "rpc-msgpack-socket")
    assert {r["metric"] for r in doc["results"] if r["scenario"] == "rpc-pyro5"} == set(METRICS)
    assert any("rpc-pyro5 not measured" in n for n in doc["notes"])
    assert doc["targets"] == []  # winipc-rpc was not selected: no target line


def test_cli_quick_run_prints_the_rpc_table_and_targets(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("winipc.bench.runner.QUICK", TINY)
    args = ["--quick", "--placement", "same-core", "--only", "winipc-rpc", "--only", "rpc-ref*"]
    result = CliRunner().invoke(bench, [*args, "--only", "rpc-mp-manager"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "rpc" in out and "null call round trip" in out and "null calls, 8 threads" in out
    assert "rpc-mp-manager (peer)" in out
    assert "Target calls per second, 1 client thread, vs multiprocessing managers" in out
    saved = json.loads(cache.read_text())
    assert {t["key"] for t in saved["targets"]} == TARGETS


# --------------------------------------------------------------------------- pieces


def test_tally_counts_batches_and_keeps_the_last_argument() -> None:
    tally = SR.Tally()
    for _ in range(3):
        tally.call()
    assert tally.wait(3, 1.0) == [3, 0, 0]
    data = os.urandom(100)

    def late() -> None:
        tally.call()
        tally.call(data)

    t = threading.Timer(0.05, late)
    t.start()
    served, crc, length = tally.wait(2, 5.0)
    t.join()
    assert (served, length) == (2, 100) and crc == __import__("zlib").crc32(data)
    with pytest.raises(BenchError, match="counted 0 of 1 calls"):
        tally.wait(1, 0.05)


class _Wrong(SR.RpcScenario):
    """A client whose results are wrong (no server: the client is faked)."""

    name = "test-rpc-wrong"

    def client(self, address: str, setup: Setup) -> SR.Calls:
        return SR.Calls(lambda: 1, lambda data: len(data) - 1, lambda: None)


@pytest.mark.parametrize("metric", [SR.NULL, SR.CALLS_1, SR.CALLS_8, SR.ARG_1M])
def test_client_refuses_a_wrong_result(metric: str) -> None:
    end = _Wrong().connect("nowhere", Setup("/nonexistent", "t", "ab" * 16))
    try:
        with pytest.raises(VerificationError):
            _Wrong().exchange(end, registry.metric(metric), 8, True)
    finally:
        end.close()


def test_frames_carry_small_and_large_bodies() -> None:
    a, b = socket.socketpair()
    try:
        left, right = SR._Frames(a), SR._Frames(b)
        big = os.urandom(3 * 1024 * 1024)  # larger than the socket buffer and the frame buffer
        for body in (b"x", big, b"", big[:70_000]):  # request, then reply: one frame at a time
            sender = threading.Thread(target=left.send, args=(body,))
            sender.start()
            assert bytes(right.recv()) == body
            sender.join()
        a.close()
        with pytest.raises(EOFError):
            right.recv()
    finally:
        a.close()
        b.close()


def test_targets_of_a_made_up_run() -> None:
    def cell(scenario: str, metric: str, value: float | None, why: str | None = None) -> CellResult:
        kind = registry.metric(metric).kind
        fig = "median" if kind == "latency" else "rate"
        return CellResult(
            scenario, "same-core", metric, kind, registry.metric(metric).size,
            {} if value is None else {fig: value}, 0, 0, 1.0, 1, unavailable=why,
        )  # fmt: skip

    run = RunResult([registry.get(n) for n in RPC], [Placement("same-core", 0, 0)])
    run.results = [
        cell("winipc-rpc", SR.NULL, 12.0),
        cell("rpc-ref-pipe-64", SR.NULL, 10.0),
        cell("winipc-rpc", SR.CALLS_1, 30_000.0),
        cell("rpc-pyro5", SR.CALLS_1, 8_000.0),
        cell("rpc-rpyc", SR.CALLS_1, 12_000.0),
        cell("rpc-grpcio", SR.CALLS_1, None, "grpc is not installed"),
        cell("rpc-mp-manager", SR.CALLS_1, 25_000.0),
        cell("winipc-rpc", SR.ARG_1M, 900.0),
    ]
    got = {t["key"]: t for t in build_document(run, registry.all_scenarios())["targets"]}
    assert got["rpc-null-vs-pipe"]["ratio"] == pytest.approx(1.2)
    assert got["rpc-null-vs-pipe"]["met"] is True and got["rpc-null-vs-pipe"]["unit"] == "us"
    best = got["rpc-calls-1-vs-frameworks"]
    assert best["versus"] == "rpc-rpyc" and best["versus_value"] == 12_000.0
    assert best["ratio"] == pytest.approx(2.5) and best["met"] is False
    assert "rpc-grpcio not measured: grpc is not installed" in best["why"]
    assert got["rpc-calls-1-vs-mp-manager"]["met"] is True
    assert got["rpc-calls-8-vs-frameworks"]["met"] is None  # nothing measured on it
    assert got["rpc-calls-8-vs-frameworks"]["versus"] == "rpc-pyro5 / rpc-rpyc / rpc-grpcio"
    assert got["rpc-1mib"]["met"] is False and got["rpc-1mib"]["value"] == 900.0
    run.results[0] = cell("winipc-rpc", SR.NULL, 14.0)  # 1.4x the pipe: above the ceiling
    got = {t["key"]: t for t in build_document(run, registry.all_scenarios())["targets"]}
    assert got["rpc-null-vs-pipe"]["met"] is False
