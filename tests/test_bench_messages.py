"""winipc bench, window messages: SendMessage round trips and WM_COPYDATA throughput
between real processes (--quick), verification, and the pieces.

Speed is never asserted: only that figures exist, were verified, are compared with the
peers, and that a damaged payload fails the run.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from winipc.bench import registry
from winipc.bench import scenarios_messages as SM
from winipc.bench.cli import bench
from winipc.bench.report import CACHE_ENV
from winipc.bench.workload import Source, VerificationError, ping

MiB = 1024 * 1024
MINE = {"winipc-sendmessage", "winipc-copydata"}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs save their document into this test's directory, never into ~/.cache."""
    path = tmp_path / "bench-last.json"
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


@pytest.fixture
def no_workdir_left() -> Iterator[None]:
    yield
    mine = f"winipc-bench-{os.getpid()}-"
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith(mine)]


def _run(*args: str) -> Any:
    return CliRunner().invoke(bench, list(args), catch_exceptions=False)


def test_registered_with_their_metrics() -> None:
    assert {s.name for s in registry.select(["messages"])} == MINE
    assert [s.name for s in registry.select(["copydata"])] == ["winipc-copydata"]
    send, copy = registry.get("winipc-sendmessage"), registry.get("winipc-copydata")
    for s in (send, copy):
        assert s.group == "transport" and not s.peer and not s.limit
        assert s.unavailable() is None
    assert [m.key for m in registry.DEFAULT_METRICS if send.supports(m)] == ["rtt-64"]
    assert [m.key for m in registry.DEFAULT_METRICS if copy.supports(m)] == ["tput-64k", "tput-1m", "tput-16m"]
    big = registry.metric("tput-16m")
    assert big.kind == "throughput" and big.size == 16 * MiB and not big.plot
    # 16 MiB units: WM_COPYDATA and what it is held to, nothing else
    assert {s.name for s in registry.all_scenarios() if s.supports(big)} == {
        "winipc-copydata", "af-unix-stream", "mp-pipe", "memcpy-limit",
    }  # fmt: skip
    assert registry.get("af-unix-seqpacket").supports(registry.metric("tput-1m"))
    assert not registry.get("af-unix-seqpacket").supports(big)


def test_messages_between_processes(cache: Path, no_workdir_left: None) -> None:
    args = ["--quick", "--json", "--placement", "same-core", "--only", "messages"]
    result = _run(*args, "--only", "af-unix-stream", "--only", "memcpy-limit")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verified"] is True
    cells = {(r["scenario"], r["metric"]): r for r in doc["results"]}
    assert {k for k in cells if k[0] in MINE} == {
        ("winipc-sendmessage", "rtt-64"),
        ("winipc-copydata", "tput-64k"),
        ("winipc-copydata", "tput-1m"),
        ("winipc-copydata", "tput-16m"),
    }
    rtt = cells[("winipc-sendmessage", "rtt-64")]
    assert rtt["verified"] is True and rtt["iterations"] >= 100
    med = rtt["figures"]["median"]
    assert med["value"] > 0 and med["best_peer"] == "af-unix-stream" and med["ratio_to_best_peer"] > 0
    for key in ("tput-64k", "tput-1m", "tput-16m"):
        r = cells[("winipc-copydata", key)]
        size = registry.metric(key).size
        assert r["verified"] is True and r["checksum"].startswith("crc32:")
        assert r["bytes"] > 0 and r["bytes"] % size == 0 and r["messages"] == r["bytes"] // size
        rate = r["figures"]["rate"]
        assert rate["value"] > 0 and rate["best_peer"] == "af-unix-stream"
        assert rate["limit"] == "memcpy-limit" and rate["ratio_to_limit"] > 0
    assert ("af-unix-stream", "tput-16m") in cells and ("memcpy-limit", "tput-16m") in cells
    assert json.loads(cache.read_text()) == doc


def test_table_shows_both(cache: Path) -> None:
    result = _run("--quick", "--placement", "same-core", "--only", "messages")
    assert result.exit_code == 0, result.output
    assert "winipc-sendmessage" in result.stdout and "winipc-copydata" in result.stdout
    assert "16 MiB" in result.stdout


@pytest.mark.parametrize(
    ("fault", "scenario"),
    [
        ("rtt", "winipc-sendmessage"),  # an echo damaged in the worker: a wrong LRESULT
        ("throughput", "winipc-copydata"),  # a unit damaged by the runner: the worker's CRC
    ],
)
def test_damaged_payload_fails_the_run(fault: str, scenario: str, cache: Path, no_workdir_left: None) -> None:
    result = _run(
        "--quick", "--json", "--placement", "same-core", "--only", scenario, "--inject-fault", fault
    )
    assert result.exit_code == 3, result.output
    assert "payload verification failed" in result.output
    assert "checksum mismatch" in result.output
    assert result.stdout == ""
    assert not cache.exists()


# --------------------------------------------------------------------------- pieces
def test_lresult_carries_two_checksums() -> None:
    for crc, echoed in ((0, 0), (0xFFFF_FFFF, 0xFFFF_FFFF), (0x1234_5678, 0x8000_0000), (5, 0)):
        value = SM._reply(crc, echoed)
        assert -(2**63) <= value < 2**63  # an LRESULT
        assert SM._unpack(value) == (crc, echoed)


def _runner_end() -> Any:
    end = SM._SendMessageEnd.__new__(SM._SendMessageEnd)
    end._hwnd, end._echo, end.mismatches = 1, b"", 0
    end._unechoed = SM.collections.deque()
    return end


def test_sendmessage_end_checks_every_reply() -> None:
    """The runner's check, against an in-process window procedure (no worker): right
    replies pass; a wrong CRC-32, a damaged echo or an echo reported twice fail ping."""
    units = [os.urandom(64) for _ in range(6)]
    worker = SM._EchoWindowEnd()
    worker.pump.handled_one = lambda: None  # type: ignore[method-assign]
    end = _runner_end()

    def call(hwnd: int, msg: int, wparam: int, lparam: bytes) -> int:
        reply = worker.proc(hwnd, msg, wparam, lparam)
        worker.send(worker.recv(64))  # the echo loop, after the reply was made
        return reply

    end._send = call
    assert len(ping(end, units)) == len(units) and end.mismatches == 0

    def damaged(hwnd: int, msg: int, wparam: int, lparam: bytes) -> int:
        reply = worker.proc(hwnd, msg, wparam, lparam)
        echo = bytearray(worker.recv(64))
        echo[0] ^= 1
        worker.send(echo)
        return reply

    end2, worker = _runner_end(), SM._EchoWindowEnd()
    worker.pump.handled_one = lambda: None  # type: ignore[method-assign]
    end2._send = damaged
    with pytest.raises(VerificationError, match="checksum mismatch"):
        ping(end2, units)
    assert end2.mismatches == len(units) - 1  # every echo damaged; the first reply reports none

    end3 = _runner_end()
    end3._send = lambda h, m, w, lparam: SM._reply(zlib.crc32(lparam) ^ 1, 0)
    with pytest.raises(VerificationError, match="checksum mismatch"):
        ping(end3, units)
    end4 = _runner_end()  # an echo reported with nothing sent before
    end4._send = lambda h, m, w, lparam: SM._reply(zlib.crc32(lparam), SM._ECHOED | 7)
    with pytest.raises(VerificationError, match="checksum mismatch"):
        ping(end4, units)


def test_copydata_end_keeps_early_units_in_order() -> None:
    """Two units handled by one GetMessage: the second waits for the next receive."""
    worker = SM._CopyDataWindowEnd()
    worker.pump.handled_one = lambda: None  # type: ignore[method-assign]

    class CD:
        def __init__(self, data: bytes) -> None:
            self.data = memoryview(data)

    first, second = os.urandom(100), os.urandom(100)
    buf = bytearray(100)

    def both() -> None:
        assert worker.proc(1, 0x004A, 0, CD(first)) == 100
        assert worker.proc(1, 0x004A, 0, CD(second)) == 100

    worker.pump.until = lambda done: both()  # type: ignore[method-assign]
    assert worker.recv_into(memoryview(buf)) == 100 and bytes(buf) == first
    assert worker.recv_into(memoryview(buf)) == 100 and bytes(buf) == second
    assert worker.recv_into(memoryview(bytearray(50))) == 100  # too long: the length shows it


def test_units_larger_than_the_pool() -> None:
    pool = Source(os.urandom(3 * MiB))
    units = pool.round(4 * MiB, 8 * MiB)
    assert len(units) == 2 and all(len(u) == 4 * MiB for u in units)
    assert units[0] != units[1]
    assert units[0][: 3 * MiB] == pool.data and units[0][3 * MiB :] == pool.data[: MiB]
    small = pool.round(64 * 1024, MiB)
    assert len(small) == 16 and all(len(u) == 64 * 1024 for u in small)
