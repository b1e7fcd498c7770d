"""winipc bench: the peers, winipc's anonymous pipes, the messages metric, the memcpy
limit, --placement, --plot and the saved last run, through the real CLI.

Speed is never asserted: only that figures exist, were verified and have the documented
shape. A peer whose package is missing is skipped, or fails the test when
WINIPC_REQUIRE_ALL=1 (CI installs winipc[peers] and winipc[bench]).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from winipc.bench import plot, registry, report, scenarios_peers, workload
from winipc.bench.cli import bench
from winipc.bench.registry import DEFAULT_METRICS, METRICS

REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
NEW = [
    "winipc-anon-pipe",
    "af-unix-seqpacket",
    "os-pipe",
    "tcp-loopback",
    "mp-queue",
    "zmq-pair",
    "faster-fifo",
]
OPTIONAL = {"zmq-pair": "pyzmq", "faster-fifo": "faster-fifo"}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every run saves its document into this test's directory, never into ~/.cache."""
    path = tmp_path / "cache" / "bench-last.json"
    monkeypatch.setenv(report.CACHE_ENV, str(path))
    return path


@pytest.fixture
def no_workdir_left() -> Iterator[None]:
    yield
    import tempfile

    mine = f"winipc-bench-{os.getpid()}-"
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith(mine)]


def _run(*args: str) -> Any:
    return CliRunner().invoke(bench, list(args), catch_exceptions=False)


def _doc(*args: str) -> dict[str, Any]:
    result = _run("--quick", "--json", *args)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def _missing(name: str) -> str | None:
    """Why an optional peer cannot run here; fails the test when everything is required."""
    why = registry.get(name).unavailable()
    if why is not None and REQUIRE:
        pytest.fail(f"{name}: {why} (required: WINIPC_REQUIRE_ALL=1)")
    return why


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_optional_peer_is_installed(name: str) -> None:
    why = _missing(name)
    if why is not None:
        pytest.skip(why)
    assert registry.get(name).peer


def test_new_scenarios_run_between_processes(cache: Path, no_workdir_left: None) -> None:
    args = [a for name in [*NEW, "memcpy-limit"] for a in ("--only", name)]
    doc = _doc(*args)
    placements = [p["name"] for p in doc["placements"]]
    by_cell = {(r["scenario"], r["placement"], r["metric"]): r for r in doc["results"]}
    info = {s["name"]: s for s in doc["scenarios"]}
    assert doc["schema"] == "winipc-bench/2" and doc["verified"] is True
    for name in NEW:
        sc = registry.get(name)
        assert info[name]["selected"] and info[name]["peer"] == (name != "winipc-anon-pipe")
        assert info[name]["group"] == "transport" and info[name]["limit"] is False
        why = _missing(name) if name in OPTIONAL else None
        for p in placements:
            for m in DEFAULT_METRICS:
                if not sc.supports(m):
                    continue
                r = by_cell[(name, p, m.key)]
                if why is not None:
                    assert r["figures"] == {} and r["unavailable"] == why
                    continue
                assert r["verified"] is True and r["seconds"] > 0 and r["bytes"] > 0
                for fig in r["figures"].values():
                    assert math.isfinite(fig["value"]) and fig["value"] > 0
                    assert fig["best_peer"] in {n for n in info if info[n]["peer"]}
                if m.kind == "messages":
                    assert r["figures"]["rate"]["unit"] == "1/s"
                    assert r["messages"] > 0 and r["bytes"] == 64 * r["messages"]
                    assert r["rounds"] >= 1 and r["checksum"].startswith("crc32:")
                if m.kind == "throughput":
                    rate = r["figures"]["rate"]
                    assert rate["limit"] == "memcpy-limit" and rate["ratio_to_limit"] > 0
                if m.kind == "rtt":
                    assert r["figures"]["median"]["value"] <= r["figures"]["p99"]["value"]
        if why is None:
            assert set(info[name]["figures"]) == set(placements)
            assert info[name]["figures"][placements[0]]["msgs-64"]["rate"] > 0
        else:
            assert info[name]["unavailable"] == why and info[name]["figures"] == {}
    # the limit: measured from a set past the cache, on the throughput metrics only
    lim = doc["limit"]
    assert lim["source_bytes"] >= workload.LIMIT_FLOOR and lim["reason"] in doc["notes"]
    assert info["memcpy-limit"]["limit"] is True and info["memcpy-limit"]["peer"] is False
    for p in placements:
        for key in ("tput-64k", "tput-1m"):
            r = by_cell[("memcpy-limit", p, key)]
            assert r["figures"]["rate"]["ratio_to_limit"] == pytest.approx(1.0)
        assert ("memcpy-limit", p, "rtt-64") not in by_cell
    # the run was saved for winipc choose: the same document, private to the user
    assert json.loads(cache.read_text()) == doc
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert not [p for p in cache.parent.iterdir() if p.name != cache.name]  # no temp left


def test_table_shows_messages_and_limit_columns() -> None:
    result = _run("--quick", "--only", "os-pipe", "--only", "memcpy-limit", "--placement", "same-core")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "msgs" in out and "os-pipe (peer)" in out and "memcpy-limit (limit)" in out
    assert "share of the memcpy limit" in out and "cross-core" not in out.split("n% =")[0]


@pytest.mark.parametrize(
    ("fault", "scenario"),
    [
        ("msgs", "os-pipe"),  # batched: one gather write per batch
        ("msgs", "af-unix-seqpacket"),  # one send per message, recv_into at the receiver
        ("throughput", "tcp-loopback"),  # recv_into the round buffer
        ("throughput", "memcpy-limit"),  # the limit's own check, after the round
        ("rtt", "winipc-anon-pipe"),
    ],
)
def test_damaged_payload_fails_the_run(
    fault: str, scenario: str, cache: Path, no_workdir_left: None
) -> None:
    result = _run(
        "--quick", "--json", "--placement", "same-core", "--only", scenario, "--inject-fault", fault
    )
    assert result.exit_code == 3, result.output
    assert "payload verification failed" in result.output
    assert "checksum mismatch" in result.output
    assert result.stdout == ""
    assert not cache.exists()  # an invalid run is not saved


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_damaged_payload_on_optional_peers(name: str, no_workdir_left: None) -> None:
    why = _missing(name)
    if why is not None:
        pytest.skip(why)
    result = _run("--quick", "--placement", "cross-core", "--only", name, "--inject-fault", "msgs")
    assert result.exit_code == 3, result.output
    assert "checksum mismatch" in result.output


def test_missing_peer_package_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such(module: str, package: str) -> tuple[Any, str | None]:
        return None, f"{package} is not installed (pip install 'winipc[peers]')"

    monkeypatch.setattr(scenarios_peers, "_optional", no_such)
    doc = _doc("--only", "zmq-pair", "--only", "faster-fifo")  # no worker starts
    assert doc["results"] and all(r["figures"] == {} for r in doc["results"])
    assert {r["unavailable"] for r in doc["results"]} == {
        "pyzmq is not installed (pip install 'winipc[peers]')",
        "faster-fifo is not installed (pip install 'winipc[peers]')",
    }
    result = _run("--quick", "--only", "zmq-pair")
    assert result.exit_code == 0 and "n/a" in result.output


def test_plot_draws_every_size(tmp_path: Path, no_workdir_left: None) -> None:
    if plot.unavailable() is not None:
        if REQUIRE:
            pytest.fail(f"{plot.unavailable()} (required: WINIPC_REQUIRE_ALL=1)")
        pytest.skip(str(plot.unavailable()))
    out = tmp_path / "tput.png"
    doc = _doc(
        "--placement", "same-core", "--only", "af-unix-seqpacket", "--only", "memcpy-limit",
        "--plot", str(out),
    )
    assert [p["name"] for p in doc["placements"]] == ["same-core"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sizes = {m.size for m in METRICS if m.kind == "throughput" and not m.only}
    assert sizes == {64, 1024, 16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024}
    # tput-16m is measured by its own scenarios only (Metric.only); memcpy-limit is one
    sizes_limit = sizes | {16 * 1024 * 1024}
    curves = plot.curves(doc)["same-core"]
    assert {s for s, _ in curves["memcpy-limit"]} == sizes_limit
    assert {s for s, _ in curves["af-unix-seqpacket"]} == sizes
    assert all(v > 0 for pts in curves.values() for _, v in pts)


def test_plot_without_matplotlib_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(plot, "unavailable", lambda: "matplotlib is not installed (pip install 'winipc[bench]')")
    result = _run("--quick", "--only", "os-pipe", "--plot", str(tmp_path / "x.png"))
    assert result.exit_code == 2
    assert "matplotlib is not installed" in result.output
    assert not (tmp_path / "x.png").exists()


def test_plot_only_metrics_need_plot() -> None:
    assert not any(m.plot for m in DEFAULT_METRICS)
    assert {m.key for m in METRICS if m.plot} == {"tput-64", "tput-1k", "tput-16k", "tput-256k", "tput-4m"}


# --------------------------------------------------------------------------- units
def test_limit_sizing() -> None:
    MiB = 1024 * 1024
    vm = workload.limit_sizing((480 * MiB, 3), 23_000 * MiB)  # this VM: the host's L3
    assert vm.bytes == 960 * MiB and "L3 480 MiB" in vm.reason
    small = workload.limit_sizing((2 * MiB, 2), 8_000 * MiB)
    assert small.bytes == 64 * MiB  # the floor
    tight = workload.limit_sizing((480 * MiB, 3), 1024 * MiB)
    assert tight.bytes == 256 * MiB and "quarter of MemAvailable" in tight.reason
    unknown = workload.limit_sizing((0, 0), 0)
    assert unknown.bytes == 64 * MiB and "no cache size" in unknown.reason


def test_last_level_cache_is_read_from_sysfs(tmp_path: Path) -> None:
    for index, (level, kind, size) in enumerate(
        [(1, "Data", "48K"), (1, "Instruction", "64K"), (2, "Unified", "2048K"), (3, "Unified", "32M")]
    ):
        d = tmp_path / f"index{index}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert workload.last_level_cache(str(tmp_path)) == (32 * 1024 * 1024, 3)
    assert workload.last_level_cache(str(tmp_path / "nothing")) == (0, 0)


def test_limit_set_rounds_walk_the_whole_set() -> None:
    s = workload.LimitSet(1024 * 1024)
    try:
        first = s.round(64 * 1024, 256 * 1024)
        second = s.round(64 * 1024, 256 * 1024)
        assert len(first) == 4 and all(len(u) == 64 * 1024 for u in first)
        assert bytes(first[0]) != bytes(second[0])  # the next window, not the same bytes
        for _ in range(2):
            s.round(64 * 1024, 256 * 1024)
        again = s.round(64 * 1024, 256 * 1024)  # wrapped: the first window again
        assert bytes(again[0]) == bytes(first[0])
        with pytest.raises(ValueError, match="larger than the limit"):
            s.round(1024 * 1024, 2 * 1024 * 1024)
        del first, second, again
    finally:
        s.close()


def test_recv_many_adapts_to_its_signature() -> None:
    class OneArg:
        def recv_many(self, max: int) -> list[bytes]:
            return [b"x" * 64] * max

    class TwoArgs:
        def recv_many(self, max: int, size: int) -> list[bytes]:
            return [b"y" * size] * max

    one = workload.recv_many_of(OneArg())  # type: ignore[arg-type]
    two = workload.recv_many_of(TwoArgs())  # type: ignore[arg-type]
    assert one is not None and two is not None
    assert list(one(2, 64)) == [b"x" * 64] * 2
    assert list(two(3, 8)) == [b"y" * 8] * 3
    assert workload.recv_many_of(object()) is None  # type: ignore[arg-type]


def test_stream_batches_keep_partial_units() -> None:
    class Fake(scenarios_peers._Batches):
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        def _read(self, n: int) -> bytes:
            chunk, self.chunks[0] = self.chunks[0][:n], self.chunks[0][n:]
            if not self.chunks[0]:
                self.chunks.pop(0)
            return chunk

    data = bytes(range(200))
    fake = Fake([data[:70], data[70:150], data[150:]])
    got: list[bytes] = []
    while len(got) < 20:
        got += [bytes(u) for u in fake.recv_many(20 - len(got), 10)]
    assert b"".join(got) == data and all(len(u) == 10 for u in got)


def test_save_last_is_private_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(report.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert report.last_run_path() == tmp_path / "xdg" / "winipc" / "bench-last.json"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert report.last_run_path() == Path.home() / ".cache" / "winipc" / "bench-last.json"
    target = tmp_path / "a" / "b" / "last.json"
    monkeypatch.setenv(report.CACHE_ENV, str(target))
    assert report.save_last({"schema": "x", "n": 1}) == target
    assert report.save_last({"schema": "x", "n": 2}) == target  # replaced whole
    assert json.loads(target.read_text()) == {"schema": "x", "n": 2}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["last.json"]
