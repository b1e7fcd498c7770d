"""winipc choose: questions to a ranked list of mechanisms, with bench figures.

Every run goes through the real command (click's CliRunner on the top-level ``winipc``
group, or a subprocess), with WINIPC_BENCH_CACHE pointed into tmp_path so the user's own
last bench run never leaks in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from winipc.bench import choose as C
from winipc.cli import cli

from conftest import child_env

AVAILABLE = {m.key for m in C.MECHANISMS if m.state == "available"}
PLANNED = {m.key for m in C.MECHANISMS if m.state == "planned"}
LOCAL_ONLY = {m.key for m in C.MECHANISMS if m.state == "available" and m.network is None}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the command looks for the last bench run (nothing there yet)."""
    path = tmp_path / "cache" / "bench-last.json"
    monkeypatch.setenv("WINIPC_BENCH_CACHE", str(path))
    return path


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["choose", *args], input=input, catch_exceptions=False)


def run_json(*args: str) -> dict[str, Any]:
    result = run("--no-input", "--json", *args)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def keys(entries: list[dict[str, Any]]) -> list[str]:
    return [e["mechanism"] for e in entries]


def why(doc: dict[str, Any], section: str, key: str) -> str:
    entry = next(e for e in doc[section] if e["mechanism"] == key)
    return " | ".join(entry["why"])


def _result(scenario: str, metric: str, placement: str, **figures: float) -> dict[str, Any]:
    units = {"median": "us", "p99": "us", "rate": "MB/s"}
    return {
        "scenario": scenario,
        "placement": placement,
        "metric": metric,
        "kind": "rtt" if metric.startswith("rtt") else "throughput",
        "size": 64,
        "figures": {
            name: {
                "value": value,
                "unit": units[name],
                "better": "lower" if units[name] == "us" else "higher",
                "ratio_to_best_peer": 1.5,
                "best_peer": "af-unix-stream",
            }
            for name, value in figures.items()
        },
        "verified": True,
    }


def bench_document() -> dict[str, Any]:
    """A small run in the shape of ``winipc bench --json``: the message-mode pipe is slower
    than the mailslot on round trips but faster on throughput (cross-core); same-core has
    other figures, to tell placements apart."""
    results = []
    for placement, scale in (("same-core", 1.0), ("cross-core", 2.0)):
        results += [
            _result("winipc-pipe-message", "rtt-64", placement, median=20.0 * scale, p99=40.0),
            _result("winipc-pipe-message", "tput-1m", placement, rate=2000.0 / scale),
            _result("winipc-pipe-message", "tput-64k", placement, rate=1800.0 / scale),
            _result("winipc-mailslot", "rtt-64", placement, median=5.0 * scale, p99=9.0),
            _result("winipc-mailslot", "tput-1m", placement, rate=900.0 / scale),
            _result("winipc-mailslot", "tput-64k", placement, rate=800.0 / scale),
            _result("af-unix-stream", "rtt-64", placement, median=4.0, p99=8.0),
        ]
    return {
        "schema": "winipc-bench/1",
        "winipc_version": "0.1.0",
        "started": "2026-11-21T10:00:00+00:00",
        "mode": "quick",
        "placements": [
            {"name": "same-core", "runner_cpu": 0, "worker_cpu": 0},
            {"name": "cross-core", "runner_cpu": 0, "worker_cpu": 1},
        ],
        "metrics": [
            {"key": "rtt-64", "kind": "rtt", "size": 64, "label": "round trip 64 B"},
            {"key": "tput-1m", "kind": "throughput", "size": 1048576, "label": "throughput 1 MiB"},
        ],
        "results": results,
        "verified": True,
    }


def write(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the questions


def test_network_excludes_local_only_mechanisms(cache: Path) -> None:
    doc = run_json("--network", "--pattern", "one-way")
    assert keys(doc["ranked"]) == ["mailslot", "msmq"]  # msmq across machines: NATS JetStream
    # rpc reaches other machines (ncacn_ip_tcp) but makes calls only
    assert set(keys(doc["not_suitable"])) == LOCAL_ONLY | {"rpc"}
    assert "calls only" in why(doc, "not_suitable", "rpc")
    assert "local only today" in why(doc, "not_suitable", "named-pipe-message")
    assert "over TLS (planned)" in why(doc, "not_suitable", "named-pipe-message")
    assert "cannot reach other computers" in why(doc, "not_suitable", "file-mapping")
    assert "UDP" in why(doc, "ranked", "mailslot")
    # the planned remote pipe is offered as planned, never ranked
    assert "named-pipe-message-remote" in keys(doc["planned"])
    # the same question answered "local" keeps the pipes, best first for one-way messages
    local = run_json("--local", "--pattern", "one-way")
    assert keys(local["ranked"])[:2] == ["named-pipe-message", "mailslot"]


def test_other_os_needs_a_documented_wire(cache: Path) -> None:
    doc = run_json("--local", "--other-os", "--pattern", "one-way")
    ranked = keys(doc["ranked"])
    assert "named-pipe-message" in ranked and "mailslot" not in ranked
    assert "only winipc programs" in why(doc, "not_suitable", "mailslot")
    assert "docs/wire/pipe-messages.md" in why(doc, "ranked", "named-pipe-message")
    # across machines the mailslot's documented datagram qualifies
    assert keys(run_json("--network", "--other-os", "--pattern", "one-way")["ranked"]) == [
        "mailslot", "msmq",
    ]


def test_discovery_across_machines_needs_broadcast(cache: Path) -> None:
    doc = run_json("--network", "--discovery", "--pattern", "broadcast")
    assert keys(doc["ranked"]) == ["mailslot"]
    assert "\\\\*\\mailslot" in why(doc, "ranked", "mailslot")
    assert "netbios-names" in keys(doc["planned"])
    # no discovery asked: the name service is not offered
    assert "netbios-names" not in keys(run_json("--network", "--pattern", "broadcast")["planned"])


def test_gui_and_console_answers(cache: Path) -> None:
    gui = run_json("--gui", "--pattern", "request-reply")
    console = run_json("--console", "--pattern", "request-reply")
    # window messages: console programs too (message-only windows); a GUI is told how
    # they fit its message loop, and their fit rises for it
    assert "window-messages" in keys(gui["ranked"]) and "window-messages" in keys(console["ranked"])
    assert "message loop" in why(gui, "ranked", "window-messages")
    fits = [{e["mechanism"]: e["fit"] for e in d["ranked"]}["window-messages"] for d in (console, gui)]
    assert fits == [2, 3]
    # a GUI is told how the pipe fits its event loop, and the pipe's fit rises for it
    assert "asyncio" in why(gui, "ranked", "named-pipe-message")
    assert "asyncio" not in why(console, "ranked", "named-pipe-message")
    fit = {e["mechanism"]: e["fit"] for e in gui["ranked"]}
    assert (
        fit["named-pipe-message"]
        == next(e["fit"] for e in console["ranked"] if e["mechanism"] == "named-pipe-message") + 1
    )
    # shared state: the mutex (waitable in asyncio) rises for a GUI, the mapping (no
    # wait of its own) does not, so they tie and the table's order decides
    con_fit = {
        e["mechanism"]: e["fit"]
        for e in run_json("--console", "--pattern", "shared-state")["ranked"]
    }
    gui_fit = {
        e["mechanism"]: e["fit"] for e in run_json("--gui", "--pattern", "shared-state")["ranked"]
    }
    assert (con_fit["file-mapping"], con_fit["mutex"]) == (3, 2)
    assert (gui_fit["file-mapping"], gui_fit["mutex"]) == (3, 3)
    assert "clipboard" not in keys(gui["planned"])  # loose coupling only


def test_related_children_prefer_the_anonymous_pipe(cache: Path) -> None:
    assert "anonymous-pipe" not in keys(run_json("--pattern", "stream")["ranked"])
    doc = run_json("--related", "--pattern", "stream")
    assert keys(doc["ranked"])[0] == "anonymous-pipe"
    assert "stdin/stdout" in why(doc, "ranked", "anonymous-pipe")


def test_nothing_available_fits_says_what_would(cache: Path) -> None:
    result = run("--no-input", "--coupling", "loose", "--network")
    assert result.exit_code == 0, result.output
    assert "No available mechanism does all of this" in result.stdout
    assert "--coupling tight would allow mailslot" in result.stdout
    doc = run_json("--pattern", "durable")
    assert keys(doc["ranked"]) == ["msmq", "file-mapping"]
    assert not set(keys(doc["ranked"])) & PLANNED


# --------------------------------------------------------------------------- figures


def test_bench_figures_order_latency_and_throughput(cache: Path) -> None:
    write(cache, bench_document())
    latency = run_json("--pattern", "one-way", "--performance", "latency")
    throughput = run_json("--pattern", "one-way", "--performance", "throughput")
    assert latency["bench"]["status"] == "loaded"
    assert latency["bench"]["placement"] == "cross-core"
    assert keys(latency["ranked"])[:2] == ["mailslot", "named-pipe-message"]
    assert keys(throughput["ranked"])[:2] == ["named-pipe-message", "mailslot"]
    fig = latency["ranked"][0]["figure"]
    assert fig["scenario"] == "winipc-mailslot" and fig["metric"] == "rtt-64"
    assert fig["placement"] == "cross-core" and fig["value"] == 10.0 and fig["unit"] == "us"
    assert fig["p99"] == 9.0 and fig["best_peer"] == "af-unix-stream"
    fig = throughput["ranked"][0]["figure"]
    assert fig["metric"] == "tput-64k" and fig["value"] == 900.0  # messages: 64 KiB units
    stream = run_json("--pattern", "stream", "--performance", "throughput")
    fig = next(e for e in stream["ranked"] if e["mechanism"] == "named-pipe-message")["figure"]
    assert fig["metric"] == "tput-1m" and fig["value"] == 1000.0  # bulk: 1 MiB units
    # not critical: the table's order, figures still shown
    none = run_json("--pattern", "one-way")
    assert keys(none["ranked"])[:2] == ["named-pipe-message", "mailslot"]
    assert none["ranked"][0]["figure"]["metric"] == "rtt-64"
    # a mechanism the run did not measure has no figure
    assert next(e for e in none["ranked"] if e["mechanism"] == "named-pipe-byte")["figure"] is None


def test_rpc_is_ranked_for_calls_with_its_bench_figures(cache: Path) -> None:
    doc = bench_document()
    for placement in ("same-core", "cross-core"):
        null = _result("winipc-rpc", "rpc-null", placement, median=30.0, p99=60.0)
        null["kind"] = "latency"
        calls = _result("winipc-rpc", "rpc-calls-1", placement, rate=40_000.0)
        calls["kind"] = "rate"
        calls["figures"]["rate"]["unit"] = "1/s"
        tcp = _result("winipc-rpc-tcp", "rpc-null", placement, median=50.0, p99=90.0)
        tcp["kind"] = "latency"
        doc["results"] += [null, calls, tcp]
    write(cache, doc)
    local = run_json("--pattern", "request-reply", "--performance", "latency")
    assert "rpc" in keys(local["ranked"])
    fig = next(e for e in local["ranked"] if e["mechanism"] == "rpc")["figure"]
    assert fig["scenario"] == "winipc-rpc" and fig["metric"] == "rpc-null" and fig["value"] == 30.0
    fast = run_json("--pattern", "request-reply", "--performance", "throughput")
    fig = next(e for e in fast["ranked"] if e["mechanism"] == "rpc")["figure"]
    assert fig["metric"] == "rpc-calls-1" and fig["value"] == 40_000.0 and fig["unit"] == "1/s"
    # across machines: ncacn_ip_tcp, backed by the TCP scenario
    remote = run_json("--network", "--pattern", "request-reply", "--performance", "latency")
    assert "rpc" in keys(remote["ranked"])
    assert next(e for e in remote["ranked"] if e["mechanism"] == "rpc")["figure"]["scenario"] == (
        "winipc-rpc-tcp"
    )
    # calls only: not suitable for a byte stream
    assert "calls only" in why(run_json("--pattern", "stream"), "not_suitable", "rpc")


def test_placement_and_from(cache: Path, tmp_path: Path) -> None:
    write(cache, bench_document())
    doc = run_json("--pattern", "one-way", "--performance", "latency", "--placement", "same-core")
    assert doc["ranked"][0]["figure"]["placement"] == "same-core"
    assert doc["ranked"][0]["figure"]["value"] == 5.0
    bad = run("--no-input", "--placement", "other-core")
    assert bad.exit_code == 2 and "same-core, cross-core" in bad.output
    # --from reads another document; the cache is not consulted
    other = bench_document()
    for r in other["results"]:
        if r["scenario"] == "winipc-mailslot" and r["metric"] == "rtt-64":
            r["figures"]["median"]["value"] = 99.0
    path = write(tmp_path / "other.json", other)
    doc = run_json("--from", str(path), "--pattern", "one-way", "--performance", "latency")
    assert doc["bench"]["path"] == str(path)
    assert keys(doc["ranked"])[:2] == ["named-pipe-message", "mailslot"]
    missing = run("--no-input", "--from", str(tmp_path / "nope.json"))
    assert missing.exit_code == 2 and "nope.json" in missing.output


def test_table_shows_figures(cache: Path) -> None:
    write(cache, bench_document())
    result = run("--no-input", "--pattern", "one-way", "--performance", "latency")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.index("Mailslot") < out.index("Named pipe, message mode")
    assert "10.0 µs median, p99 9.0" in out
    assert "round trip 64 B (rtt-64), cross-core, winipc-mailslot" in out
    assert "not suitable" in out
    assert "not measured" in out  # the byte-mode pipe, absent from the run
    assert "figures from " + str(cache) in out
    assert "--pattern one-way" in out  # the same answers as flags


def test_missing_document_ranks_without_figures(cache: Path) -> None:
    result = run("--no-input")
    assert result.exit_code == 0, result.output
    assert f"no bench figures: {cache} does not exist" in result.stdout
    assert "winipc bench --quick" in result.stdout
    assert "Named pipe, message mode" in result.stdout
    doc = json.loads(run("--no-input", "--json").stdout)
    assert doc["bench"]["status"] == "missing" and doc["bench"]["placement"] is None
    assert doc["ranked"] and all(e["figure"] is None for e in doc["ranked"])
    assert not cache.exists()  # nothing was run or written


def test_default_cache_path_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WINIPC_BENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = write(tmp_path / "xdg" / "winipc" / "bench-last.json", bench_document())
    assert C.default_cache_path() == path
    doc = run_json("--pattern", "one-way")
    assert doc["bench"]["path"] == str(path) and doc["bench"]["status"] == "loaded"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the spec says
    assert C.default_cache_path() == Path.home() / ".cache" / "winipc" / "bench-last.json"


def _bad_value() -> dict[str, Any]:
    doc = bench_document()
    doc["results"][3]["figures"]["median"]["value"] = "fast"
    return doc


def _bad_results() -> dict[str, Any]:
    doc = bench_document()
    doc["results"] = {"winipc-pipe-message": 1}
    return doc


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ('{"results": [], "x": NaN}', "NaN is not a number"),
        ("[1, 2]", "document: expected an object, got list"),
        ('{"schema": "other/1", "results": []}', "not a winipc bench document"),
        ('{"schema": "winipc-bench/1"}', "no 'results' list"),
        (_bad_value, "results[3].figures.median.value: expected a number, got str"),
        (_bad_results, "results: expected a list, got dict"),
        ('{"results": [{"scenario": "x", "metric": "rtt-64"}]}', "results[0].placement"),
    ],
)
def test_malformed_document_is_an_error_naming_the_file(
    cache: Path, content: Any, message: str
) -> None:
    cache.parent.mkdir(parents=True)
    if callable(content):
        content = json.dumps(content())
    if isinstance(content, bytes):
        cache.write_bytes(content)
    else:
        cache.write_text(content, encoding="utf-8")
    for args in ((), ("--json",)):
        result = run("--no-input", *args)
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        assert f"error: bench document {cache}: " in result.stderr
        assert message in result.stderr


def test_a_directory_is_an_error(cache: Path) -> None:
    cache.mkdir(parents=True)
    result = run("--no-input")
    assert result.exit_code == 1 and f"bench document {cache}: cannot read it" in result.stderr


# --------------------------------------------------------------------------- output and input


def test_json_shape(cache: Path) -> None:
    write(cache, bench_document())
    doc = run_json("--performance", "latency")
    assert doc["schema"] == "winipc-choose/1"
    assert set(doc) >= {
        "answers", "answered_by", "flags", "bench", "order", "ranked", "not_suitable",
        "planned", "planned_not_suitable", "relax", "hint",
    }  # fmt: skip
    assert set(doc["answers"]) == {q.key for q in C.QUESTIONS}
    assert [e["rank"] for e in doc["ranked"]] == list(range(1, len(doc["ranked"]) + 1))
    # every available mechanism is ranked or not suitable, exactly once; planned ones apart
    listed = keys(doc["ranked"]) + keys(doc["not_suitable"])
    assert sorted(listed) == sorted(AVAILABLE)
    planned = keys(doc["planned"]) + keys(doc["planned_not_suitable"])
    assert set(planned) >= PLANNED
    fits = [e["fit"] for e in doc["ranked"]]
    assert fits == sorted(fits, reverse=True) and min(fits) >= 1
    for e in doc["ranked"]:
        assert e["state"] == "available" and e["suitable"] is True
        assert e["why"] and all(isinstance(w, str) and w for w in e["why"])
        if e["figure"] is not None:
            assert set(e["figure"]) >= {"scenario", "metric", "placement", "value", "unit"}
            assert isinstance(e["figure"]["value"], float)
    for e in doc["not_suitable"]:
        assert e["suitable"] is False and e["fit"] == 0 and e["why"]
    for e in doc["planned"]:
        assert e["state"] == "planned" and e["offers"] and "figure" not in e
    assert doc["hint"] is None


def test_no_input_takes_the_defaults(cache: Path) -> None:
    doc = run_json()
    assert doc["answers"] == C.DEFAULTS.to_json()
    assert doc["answers"] == {
        "network": False, "other_os": False, "discovery": False, "coupling": "tight",
        "pattern": "request-reply", "related": False, "performance": "none", "gui": False,
    }  # fmt: skip
    assert set(doc["answered_by"].values()) == {"default"}
    assert keys(doc["ranked"])[0] == "named-pipe-message"
    flagged = run_json("--network")
    assert flagged["answered_by"]["network"] == "flag"
    assert flagged["answered_by"]["gui"] == "default"


def test_interactive_prompts_ask_what_no_flag_answered(cache: Path) -> None:
    # network: yes, other OS: no, discovery: yes, coupling: default, pattern: broadcast,
    # (related is not asked across machines), performance: latency, gui: no
    result = run(
        "--interactive", "--json", "--gui",
        input="y\nn\ny\n\nbroadcast\nlatency\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # prompts went to stderr
    assert doc["answers"]["network"] is True and doc["answers"]["discovery"] is True
    assert doc["answers"]["pattern"] == "broadcast" and doc["answers"]["coupling"] == "tight"
    assert doc["answers"]["performance"] == "latency" and doc["answers"]["gui"] is True
    assert doc["answered_by"]["network"] == "prompt"
    assert doc["answered_by"]["related"] == "default"
    assert doc["answered_by"]["gui"] == "flag"
    assert "Are the partners child processes" not in result.stderr
    assert "Must it talk to programs on other computers" in result.stderr
    assert keys(doc["ranked"]) == ["mailslot"]


def test_not_a_terminal_never_prompts(cache: Path) -> None:
    """A real process whose stdin is not a terminal: defaults, no question, no wait."""
    proc = subprocess.run(
        [sys.executable, "-m", "winipc", "choose", "--json", "--pattern", "signal"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["answers"]["network"] is False and doc["answered_by"]["pattern"] == "flag"
    assert keys(doc["ranked"])[:2] == ["event", "semaphore"]
    assert "?" not in proc.stderr  # no question was asked
    assert "winipc bench --quick" in proc.stderr  # the missing-figures note, off stdout


# --------------------------------------------------------------------------- the table


def test_table_is_consistent() -> None:
    seen = set()
    for m in C.MECHANISMS:
        assert m.key not in seen
        seen.add(m.key)
        assert set(m.patterns) <= set(C.PATTERNS) and set(m.network_patterns) <= set(C.PATTERNS)
        assert all(1 <= f.score <= 3 and f.why for f in [*m.patterns.values()])
        assert m.coupling <= set(C.COUPLINGS) and m.module.startswith("winipc.")
        assert set(m.foreign) <= {"local", "network"} and set(m.discovery) <= {"local", "network"}
        if m.state == "planned":
            assert not m.bench
    assert {
        "named-pipe-message", "named-pipe-byte", "anonymous-pipe", "mailslot",
        "file-mapping", "event", "mutex", "semaphore", "waitable-timer", "msmq", "rpc",
        "window-messages",
    } <= AVAILABLE  # fmt: skip
    assert "clipboard" in AVAILABLE
    assert {"dde", "com", "netbios-names", "serial"} <= PLANNED


def test_answers_reject_unknown_values() -> None:
    with pytest.raises(ValueError, match="pattern"):
        C.Answers(pattern="telepathy")
    with pytest.raises(ValueError, match="performance"):
        C.Answers(performance="fast")
