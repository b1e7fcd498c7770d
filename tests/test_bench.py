"""winipc bench: real two-process runs in --quick mode, verification, registry, report.

Speed is never asserted here: only that figures exist, are positive and were verified.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from winipc.bench import registry
from winipc.bench.cli import bench
from winipc.bench.registry import DEFAULT_METRICS, Endpoint, Listening, Scenario, Setup
from winipc.bench.report import CACHE_ENV, build_document
from winipc.bench.runner import QUICK, CellResult, Placement, Runner, RunResult

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every run saves its document into this test's directory, never into ~/.cache."""
    path = tmp_path / "bench-last.json"
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


class _BrokenScenario(Scenario):
    """A plug-in scenario (registered in the worker too) whose server side fails."""

    name = "test-broken-serve"
    mechanism = "a server side that raises"

    def serve(self, setup: Setup) -> Listening:
        raise RuntimeError("serve exploded on purpose")

    def connect(self, address: str, setup: Setup) -> Endpoint:
        raise AssertionError("never reached: serve fails first")


# The worker imports this module to find the scenario (plug-in path); only register it
# when the test that needs it asked for it, so other runs see the built-ins only.
if os.environ.get("WINIPC_BENCH_TEST_PLUGIN") == "1" and "test-broken-serve" not in {
    s.name for s in registry.all_scenarios()
}:
    registry.register(_BrokenScenario())


def _run(*args: str) -> Any:
    result = CliRunner().invoke(bench, list(args), catch_exceptions=False)
    return result


def _doc(*args: str) -> dict[str, Any]:
    result = _run("--quick", "--json", *args)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


@pytest.fixture
def no_workdir_left() -> Iterator[None]:
    """The runner's private temporary directory is gone after the run."""
    yield
    mine = f"winipc-bench-{os.getpid()}-"
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith(mine)]


def _check_delivery(r: dict[str, Any], passes: int) -> None:
    """A delivery result: counts add up, loss and rates match them."""
    if "unavailable" in r:
        assert r["figures"] == {} and r["unavailable"]
        return
    sent, received = r["sent"], r["received"]
    assert sent == passes * QUICK.burst and 0 <= received <= sent and r["duplicates"] >= 0
    assert r["messages"] == received and r["bytes"] == received * r["size"]
    assert r["rounds"] == passes
    fig = {k: v["value"] for k, v in r["figures"].items()}
    assert fig["loss"] == pytest.approx(100.0 * (sent - received) / sent)
    assert fig["send_rate"] > 0 and (fig["rate"] > 0) == (received > 0)
    assert r["figures"]["loss"]["unit"] == "%"
    assert len(r["per_pass"]) == passes


def _check_figures(doc: dict[str, Any]) -> None:
    for r in doc["results"]:
        assert r["verified"] is True
        if r["kind"] == "delivery":
            _check_delivery(r, doc["passes"])
            continue
        if "unavailable" in r:  # an optional peer not installed here
            assert r["figures"] == {} and r["unavailable"]
            continue
        assert r["messages"] > 0 and r["seconds"] > 0
        assert r["bytes"] > 0 or r["kind"] in ("latency", "rate")  # signals carry no bytes
        for fig in r["figures"].values():
            assert isinstance(fig["value"], float)
            assert math.isfinite(fig["value"]) and fig["value"] > 0
            assert fig["unit"] in ("us", "MB/s", "1/s")
        if r["kind"] in ("throughput", "messages"):
            assert r["checksum"].startswith("crc32:")
            assert r["rounds"] >= 1
        elif r["kind"] == "rate":
            assert r["rounds"] >= 1
        else:
            assert r["iterations"] >= 1 and r["messages"] == 2 * r["iterations"]
            assert r["figures"]["median"]["value"] <= r["figures"]["p99"]["value"]
        assert len(r["per_pass"]) == doc["passes"]


def test_quick_run_covers_every_registered_scenario(no_workdir_left: None, cache: Path) -> None:
    doc = _doc()
    names = {s.name for s in registry.all_scenarios()}
    assert {s["name"] for s in doc["scenarios"]} == names
    assert all(s["selected"] for s in doc["scenarios"])
    assert doc["verified"] is True and doc["payload"] == {"kind": "random", "verified": True}
    placements = [p["name"] for p in doc["placements"]]
    cpus = len(os.sched_getaffinity(0))
    assert placements == (["same-core", "cross-core"] if cpus >= 2 else ["same-core"])
    cells = {(r["scenario"], r["placement"], r["metric"]) for r in doc["results"]}
    want = {
        (n, p, m.key)
        for n in names
        for p in placements
        for m in DEFAULT_METRICS
        if registry.get(n).supports(m)
    }
    assert cells == want  # the --plot sizes are not measured without --plot
    _check_figures(doc)
    peers = {s.name for s in registry.all_scenarios() if s.peer}
    for r in doc["results"]:
        for fig in r["figures"].values():
            if r["kind"] == "delivery":  # no peer is measured on delivery
                assert fig["ratio_to_best_peer"] is None and fig["best_peer"] is None
                continue
            assert fig["ratio_to_best_peer"] > 0
            assert fig["best_peer"] in peers
            if r["kind"] == "throughput":  # every throughput against the memcpy limit
                assert fig["ratio_to_limit"] > 0 and fig["limit"] == "memcpy-limit"
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["python"]
    # every scenario is summarised for winipc choose, and the run is saved for it
    for s in doc["scenarios"]:
        assert {"name", "mechanism", "peer", "group", "figures"} <= set(s)
        if s["unavailable"] is None and s["group"] != "delivery":
            assert set(s["figures"]) == set(placements)
    assert json.loads(cache.read_text()) == doc


def test_only_and_payload_file_is_moved_and_verified(tmp_path: Path) -> None:
    data = os.urandom(200_003)  # not a multiple of either unit size
    payload = tmp_path / "payload.bin"
    payload.write_bytes(data)
    doc = _doc("--only", "winipc-pipe-message", "--only", "af-unix*", "--payload", str(payload))
    selected = {s["name"] for s in doc["scenarios"] if s["selected"]}
    # af-unix-seqpacket: a message transport receiving into the round buffer (recv_into)
    assert selected == {"winipc-pipe-message", "af-unix-stream", "af-unix-seqpacket"}
    assert {r["scenario"] for r in doc["results"]} == selected
    pay = doc["payload"]
    assert pay["kind"] == "file" and pay["bytes"] == len(data) and pay["verified"] is True
    assert pay["crc32"] == f"crc32:{zlib.crc32(data):08x}"
    for r in doc["results"]:
        if r["kind"] == "throughput":
            assert r["bytes"] % len(data) == 0  # whole passes of the file only
    _check_figures(doc)


def test_passes_are_merged(no_workdir_left: None) -> None:
    budget = dataclasses.replace(QUICK, passes=2, rtt_min=200, round_bytes=1024 * 1024)
    seen: list[int] = []
    runner = Runner(
        [registry.get("af-unix-stream")],
        budget=budget,
        progress=lambda _text, done: seen.append(done),
    )
    run = runner.run()
    supported = [m for m in DEFAULT_METRICS if registry.get("af-unix-stream").supports(m)]
    assert sum(seen) == runner.steps == 2 * len(run.placements) * len(supported)
    assert len(run.results) == len(run.placements) * len(supported)
    for r in run.results:
        assert len(r.per_pass) == 2 and all(v > 0 for v in r.per_pass)
        assert r.repeats >= 2  # at least one round trip or round per pass
        if r.kind == "rtt":
            assert r.repeats >= 200


@pytest.mark.parametrize(
    ("fault", "scenario"), [("rtt", "mp-pipe"), ("throughput", "winipc-pipe-byte")]
)
def test_damaged_payload_fails_the_run(
    fault: str, scenario: str, no_workdir_left: None, cache: Path
) -> None:
    result = _run("--quick", "--json", "--only", scenario, "--inject-fault", fault)
    assert result.exit_code == 3, result.output
    assert "payload verification failed" in result.output
    assert "checksum mismatch" in result.output
    assert result.stdout == ""  # no figures from an invalid run
    assert not cache.exists()


def test_worker_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINIPC_BENCH_TEST_PLUGIN", "1")
    broken = _BrokenScenario()
    registry.register(broken)
    try:
        result = _run("--quick", "--only", broken.name)
    finally:
        registry.unregister(broken.name)
    assert result.exit_code == 1, result.output
    assert "serve exploded on purpose" in result.output
    assert "test-broken-serve, same-core" in result.output


def test_placement_option() -> None:
    doc = _doc("--only", "af-unix-stream", "--placement", "same-core")
    assert [p["name"] for p in doc["placements"]] == ["same-core"]
    assert {r["placement"] for r in doc["results"]} == {"same-core"}
    if len(os.sched_getaffinity(0)) >= 2:
        doc = _doc("--only", "af-unix-stream", "--placement", "cross-core")
        assert {r["placement"] for r in doc["results"]} == {"cross-core"}
    result = _run("--quick", "--placement", "sideways")
    assert result.exit_code == 2


def test_python_dash_m_lists_scenarios() -> None:
    env = dict(os.environ, PYTHONPATH=SRC)
    out = subprocess.run(
        [sys.executable, "-m", "winipc.bench", "--list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    listed = json.loads(out)
    assert [s["name"] for s in listed] == [s.name for s in registry.all_scenarios()]
    assert {s["name"] for s in listed if s["peer"]} >= {
        "af-unix-stream",
        "af-unix-seqpacket",
        "os-pipe",
        "tcp-loopback",
        "mp-pipe",
        "mp-queue",
        "zmq-pair",
        "faster-fifo",
        "mp-event",
        "mp-lock",
    }
    assert [s["name"] for s in listed if s["limit"]] == ["memcpy-limit"]


def test_unknown_pattern_is_a_usage_error() -> None:
    result = _run("--only", "no-such-thing")
    assert result.exit_code == 2
    assert "matches no scenario" in result.output


def test_select_glob_and_substring() -> None:
    pipes = [s.name for s in registry.select(["winipc-pipe-*"])]
    assert pipes[:2] == ["winipc-pipe-byte", "winipc-pipe-message"]
    assert all(n.startswith("winipc-pipe-") for n in pipes)
    assert [s.name for s in registry.select(["UNIX"])] == ["af-unix-stream", "af-unix-seqpacket"]
    assert [s.name for s in registry.select(["af-unix-s*"])] == ["af-unix-stream", "af-unix-seqpacket"]
    assert registry.select([]) == registry.all_scenarios()
    with pytest.raises(ValueError, match="matches no scenario"):
        registry.select(["zzz*"])


def test_register_refuses_duplicates_and_bad_names() -> None:
    with pytest.raises(ValueError, match="registered already"):
        registry.register(registry.get("mp-pipe"))
    bad = _BrokenScenario()
    bad.name = "Has Space"
    with pytest.raises(ValueError, match="lower-case"):
        registry.register(bad)


def _cell(scenario: str, metric: str, value: float) -> CellResult:
    kind = "rtt" if metric.startswith("rtt") else "throughput"
    figures = {"median": value, "p99": 2 * value} if kind == "rtt" else {"rate": value}
    return CellResult(scenario, "same-core", metric, kind, 64, figures, 2, 128, 0.1, 1)


def test_ratios_are_to_the_best_peer() -> None:
    run = RunResult(
        scenarios=registry.all_scenarios(),
        placements=[Placement("same-core", 0, 0)],
        results=[
            _cell("winipc-pipe-byte", "rtt-64", 20.0),
            _cell("af-unix-stream", "rtt-64", 10.0),
            _cell("mp-pipe", "rtt-64", 16.0),
            _cell("winipc-pipe-byte", "tput-1m", 900.0),
            _cell("af-unix-stream", "tput-1m", 1000.0),
            _cell("mp-pipe", "tput-1m", 1200.0),
        ],
    )
    doc = build_document(run, registry.all_scenarios())
    fig = {(r["scenario"], r["metric"]): r["figures"] for r in doc["results"]}
    # round trip: lower is better, so the best peer is the fastest (10 µs)
    assert fig[("winipc-pipe-byte", "rtt-64")]["median"]["ratio_to_best_peer"] == 2.0
    assert fig[("winipc-pipe-byte", "rtt-64")]["median"]["best_peer"] == "af-unix-stream"
    assert fig[("mp-pipe", "rtt-64")]["p99"]["ratio_to_best_peer"] == 1.6
    # throughput: higher is better, so the best peer is mp-pipe (1200 MB/s)
    assert fig[("winipc-pipe-byte", "tput-1m")]["rate"]["ratio_to_best_peer"] == 0.75
    assert fig[("af-unix-stream", "tput-1m")]["rate"]["best_peer"] == "mp-pipe"


def test_sync_stamps_are_verified() -> None:
    from winipc.bench.workload import VerificationError, handoffs, wake_latencies

    assert wake_latencies([10, 20, 30], [12, 25, 31]) == [2, 5, 1]
    with pytest.raises(VerificationError, match="wake #1"):
        wake_latencies([10, 20, 30], [12, 19, 31])  # woke before it was set
    with pytest.raises(VerificationError, match="wake #0"):
        wake_latencies([10, 20], [21, 22])  # one wake for two sets
    with pytest.raises(VerificationError, match="signals"):
        wake_latencies([10, 20], [12])
    assert handoffs([0, 20, 40], [10, 30, 50]) == (4, 40)  # the first hand-off not counted
    with pytest.raises(VerificationError, match="alternate"):
        handoffs([0, 20, 25], [10, 30, 50])


# --------------------------------------------------------------------------- mailslots
def test_mailslot_scenarios_run_between_processes(no_workdir_left: None) -> None:
    from winipc._backends import os_backend

    doc = _doc("--only", "winipc-mailslot*")
    selected = {s["name"] for s in doc["scenarios"] if s["selected"]}
    assert selected == {"winipc-mailslot", "winipc-mailslot-broadcast", "winipc-mailslot-udp"}
    _check_figures(doc)
    placements = [p["name"] for p in doc["placements"]]
    by_cell = {(r["scenario"], r["placement"], r["metric"]): r for r in doc["results"]}
    for p in placements:
        # the transport: round trips and throughput, verified, with figures
        for key in ("rtt-64", "tput-64k", "tput-1m"):
            r = by_cell[("winipc-mailslot", p, key)]
            assert all(f["value"] > 0 for f in r["figures"].values())
        for size in (64, 424):
            # local mailslots never drop
            local = by_cell[("winipc-mailslot", p, f"burst-{size}")]
            assert local["received"] == local["sent"] == QUICK.burst
            assert local["figures"]["loss"]["value"] == 0.0 and local["duplicates"] == 0
            # network routes: measured when this machine can, else n/a with the reason
            bcast = by_cell[("winipc-mailslot-broadcast", p, f"burst-{size}")]
            udp = by_cell[("winipc-mailslot-udp", p, f"burst-{size}")]
            assert ("unavailable" in bcast) == (not os_backend.broadcast_addresses())
            own = [a for a in os_backend.local_ipv4_addresses() if not a.startswith("127.")]
            assert ("unavailable" in udp) == (not own)
            for r in (bcast, udp):
                if "unavailable" not in r:
                    assert r["sent"] == QUICK.burst and r["received"] <= r["sent"]
    assert {r["metric"] for r in doc["results"] if r["kind"] == "delivery"} == {
        "burst-64",
        "burst-424",
    }
    from io import StringIO

    from rich.console import Console

    from winipc.bench.report import print_table

    out = StringIO()
    print_table(doc, Console(file=out, width=150))
    text = out.getvalue()
    assert "best-effort delivery" in text and "winipc-mailslot-broadcast" in text
    assert "burst" not in text.split("best-effort delivery")[0]  # not in the main table


def test_mailslot_routes_unavailable_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from winipc.bench import scenarios_mailslot

    monkeypatch.setattr(scenarios_mailslot.B, "broadcast_addresses", lambda: [])
    monkeypatch.setattr(scenarios_mailslot, "_own_address", lambda: None)
    doc = _doc("--only", "winipc-mailslot-*")  # no worker starts: nothing can run
    assert doc["results"] and all(r["figures"] == {} for r in doc["results"])
    reasons = {r["scenario"]: r["unavailable"] for r in doc["results"]}
    assert "broadcast address" in reasons["winipc-mailslot-broadcast"]
    assert "no non-loopback IPv4 address" in reasons["winipc-mailslot-udp"]
    assert any("winipc-mailslot-udp not measured" in n for n in doc["notes"])
    result = _run("--quick", "--only", "winipc-mailslot-broadcast")
    assert result.exit_code == 0, result.output
    assert "n/a" in result.output and "not measured" in result.output


def test_delivery_accounts_are_verified() -> None:
    from winipc.bench.scenarios_mailslot import _payloads, _tally
    from winipc.bench.workload import VerificationError, deliveries

    got = deliveries([100, 150, 10], [8, 1, 300])
    assert (got.sent, got.received, got.duplicates) == (10, 8, 1)
    assert (got.send_ns, got.deliver_ns) == (50, 200)
    assert deliveries([100, 150, 10], [0, 0, 0]).deliver_ns == 0
    with pytest.raises(VerificationError, match="of 10 sent"):
        deliveries([100, 150, 10], [11, 0, 300])  # more received than sent
    with pytest.raises(VerificationError, match="before"):
        deliveries([100, 150, 10], [3, 0, 50])
    msgs = _payloads(7, 64, 5)
    assert all(len(m) == 64 for m in msgs)
    stale = _payloads(8, 424, 1)  # another burst's message: ignored
    assert _tally([msgs[0], stale[0], msgs[3], msgs[3], msgs[1]], 7, 64, 5) == (3, 1, 4)
    damaged = bytearray(msgs[2])
    damaged[40] ^= 0x01
    with pytest.raises(VerificationError, match="damaged"):
        _tally([msgs[0], bytes(damaged)], 7, 64, 5)
    with pytest.raises(VerificationError, match="expected 424"):
        _tally(msgs[:1], 7, 424, 5)  # a message of this burst with the wrong length
