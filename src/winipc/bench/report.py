"""Turn a run into the JSON document (``--json``) and the tables; ratios to the best peer.

The document is the single source: the tables (and ``--plot``) are drawn from it. Each
figure carries its unit, which direction is better, and ``ratio_to_best_peer``: the
figure divided by the best figure any peer (non-winipc scenario) of the same group
reached on the same metric in the same placement of the same run. So for round trips
(µs, lower is better) a ratio of 1.20 is 20 % slower than the best peer; for throughput
(MB/s, higher is better) 0.80 is 20 % less throughput. Throughput figures also carry
``ratio_to_limit``: the figure divided by the memcpy limit's (``memcpy-limit``, one core
copying the same units from a source larger than the last-level cache) with units of the
same size in the same placement, when the limit was measured.

Each scenario of the document also carries its figures by placement and metric
(``scenarios[].figures``), the shape ``winipc choose`` reads from the last run's file,
which :func:`save_last` writes after every successful run (see docs/bench.md).

``delivery`` results (bursts of best-effort messages) are not in the main table: they
have a small table of their own (:func:`render_delivery`), with the messages sent and
received, the loss and the rates; a scenario that could not run here shows ``n/a``.

``targets`` holds every registered :class:`~winipc.bench.registry.Target` whose scenario
ran, per placement: the figure, the one it is compared with, the ratio, the goal and
whether it was ``met`` (null, with ``why``, when a side could not be measured); the
table is followed by one line per target (:func:`render_targets`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

import winipc
from winipc.bench.registry import (
    DELIVERY,
    LATENCY,
    MESSAGES,
    METRICS,
    RATE,
    RTT,
    THROUGHPUT,
    Metric,
    Scenario,
    targets,
)
from winipc.bench.runner import RunResult
from winipc.bench.workload import crc32_of

SCHEMA = "winipc-bench/2"

#: figure name -> (unit, better) per metric kind
FIGURES: dict[str, dict[str, tuple[str, str]]] = {
    "rtt": {
        "median": ("us", "lower"),
        "p99": ("us", "lower"),
        "mean": ("us", "lower"),
        "min": ("us", "lower"),
    },
    "throughput": {"rate": ("MB/s", "higher")},
    "latency": {
        "median": ("us", "lower"),
        "p99": ("us", "lower"),
        "mean": ("us", "lower"),
        "min": ("us", "lower"),
    },
    "rate": {"rate": ("1/s", "higher")},
    "messages": {"rate": ("1/s", "higher"), "send_rate": ("1/s", "higher")},
    "delivery": {
        "loss": ("%", "lower"),
        "rate": ("1/s", "higher"),
        "send_rate": ("1/s", "higher"),
    },
}
#: the figures shown in the table, per metric kind (delivery: in its own table)
SHOWN: dict[str, tuple[str, ...]] = {
    "rtt": ("median", "p99"),
    "throughput": ("rate",),
    "latency": ("median", "p99"),
    "rate": ("rate",),
    "messages": ("rate",),
    "delivery": ("loss", "rate", "send_rate"),
}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    """CPU count, CPUs available, CPU model, Python and platform of this machine."""
    avail = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_available": avail,
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def _metric_doc(m: Metric) -> dict[str, Any]:
    return {
        "key": m.key,
        "kind": m.kind,
        "size": m.size,
        "label": m.label,
        "plot_only": m.plot,
        "figures": {k: {"unit": u, "better": b} for k, (u, b) in FIGURES[m.kind].items()},
    }


def _scenario_doc(
    s: Scenario, selected: bool, results: list[dict[str, Any]], unavailable: str | None
) -> dict[str, Any]:
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for r in results:
        if r["scenario"] == s.name and r["figures"]:
            figures.setdefault(r["placement"], {})[r["metric"]] = {
                k: f["value"] for k, f in r["figures"].items()
            }
    return {
        "name": s.name,
        "mechanism": s.mechanism,
        "peer": s.peer,
        "limit": s.limit,
        "group": s.group,
        "kinds": sorted(s.kinds),
        "description": s.description,
        "selected": selected,
        "unavailable": unavailable,
        "figures": figures,
    }


def _targets(run: RunResult) -> list[dict[str, Any]]:
    """The registered targets whose scenario ran, per placement (see the module docstring)."""
    selected = {s.name for s in run.scenarios}
    cells = {(r.scenario, r.placement, r.metric): r for r in run.results}
    out: list[dict[str, Any]] = []
    for t in targets():
        if t.scenario not in selected:
            continue
        for p in run.placements:
            entry: dict[str, Any] = {
                "key": t.key,
                "text": t.text,
                "scenario": t.scenario,
                "versus": t.versus,
                "placement": p.name,
                "metric": t.metric,
                "figure": t.figure,
                "at_least": t.at_least,
                "value": None,
                "versus_value": None,
                "ratio": None,
                "met": None,
                "why": None,
            }
            if t.at_most is not None:
                entry["at_most"] = t.at_most
            among = (t.versus,) if isinstance(t.versus, str) else t.versus or ()
            if not isinstance(t.versus, str) and among:
                entry["versus"], entry["among"] = " / ".join(among), list(among)
            why: list[str] = []
            for side, name in [("value", t.scenario)] + [("versus_value", n) for n in among]:
                r = cells.get((name, p.name, t.metric))
                if r is None:
                    why.append(f"{name} was not run")
                elif r.unavailable is not None:
                    why.append(f"{name} not measured: {r.unavailable}")
                elif t.figure in r.figures:
                    got, (unit, better) = r.figures[t.figure], FIGURES[r.kind][t.figure]
                    old = entry[side]
                    if old is None or (got < old if better == "lower" else got > old):
                        entry[side] = got
                        if side == "versus_value" and len(among) > 1:
                            entry["versus"] = name  # the best of several
                    entry["unit"] = unit
            if why:
                entry["why"] = "; ".join(why)
            value, versus = entry["value"], entry["versus_value"]
            ceiling = math.inf if t.at_most is None else t.at_most
            if not among and value is not None:
                entry["met"] = t.at_least <= value <= ceiling
            elif value is not None and versus:
                entry["ratio"] = value / versus
                entry["met"] = t.at_least <= entry["ratio"] <= ceiling
            out.append(entry)
    return out


def build_document(run: RunResult, registered: list[Scenario]) -> dict[str, Any]:
    """The machine-readable account of ``run`` (see the module docstring for ratios).

    Args:
        run: what :meth:`winipc.bench.runner.Runner.run` returned.
        registered: every registered scenario (listed, with ``selected``).
    """
    peers = {s.name for s in run.scenarios if s.peer}
    limits = {s.name for s in run.scenarios if s.limit}
    group = {s.name: s.group for s in run.scenarios}
    # (placement, unit size) -> rate: a throughput of another group with units of the
    # same size (rpc-1mib) is held to the same limit
    limit: dict[tuple[str, int], tuple[float, str]] = {}
    for r in run.results:
        if r.scenario in limits and r.kind == THROUGHPUT and "rate" in r.figures:
            limit[(r.placement, r.size)] = (r.figures["rate"], r.scenario)
    best: dict[tuple[str, str, str, str], tuple[float, str]] = {}
    for r in run.results:
        if r.scenario not in peers:
            continue
        for fig, value in r.figures.items():
            key = (group[r.scenario], r.placement, r.metric, fig)
            lower = FIGURES[r.kind][fig][1] == "lower"
            cur = best.get(key)
            if cur is None or (value < cur[0] if lower else value > cur[0]):
                best[key] = (value, r.scenario)
    results = []
    for r in run.results:
        figures: dict[str, Any] = {}
        for fig, value in r.figures.items():
            unit, better = FIGURES[r.kind][fig]
            peer = best.get((group[r.scenario], r.placement, r.metric, fig))
            figures[fig] = {
                "value": value,
                "unit": unit,
                "better": better,
                "ratio_to_best_peer": None if peer is None or not peer[0] else value / peer[0],
                "best_peer": None if peer is None else peer[1],
            }
            if r.kind == THROUGHPUT:
                lim = limit.get((r.placement, r.size))
                figures[fig]["ratio_to_limit"] = (
                    None if lim is None or not lim[0] else value / lim[0]
                )
                figures[fig]["limit"] = None if lim is None else lim[1]
        results.append(
            {
                "scenario": r.scenario,
                "placement": r.placement,
                "metric": r.metric,
                "kind": r.kind,
                "size": r.size,
                "figures": figures,
                "messages": r.messages,
                "bytes": r.nbytes,
                "seconds": r.seconds,
                ("iterations" if r.kind in (RTT, LATENCY) else "rounds"): r.repeats,
                "per_pass": r.per_pass,
                "verified": r.verified,
                "checksum": r.checksum,
            }
        )
        if r.counts:
            results[-1].update(r.counts)  # delivery, queues: sent, received, duplicates
        if r.unavailable is not None:
            results[-1]["unavailable"] = r.unavailable
    payload: dict[str, Any] = {"kind": "random", "verified": True}
    if run.source is not None and run.source.file is not None:
        payload = {
            "kind": "file",
            "path": run.source.file,
            "bytes": len(run.source.data),
            "crc32": f"crc32:{crc32_of([run.source.data]):08x}",
            "verified": all(r.verified for r in run.results),
        }
    selected = {s.name for s in run.scenarios}
    why_not = {r.scenario: r.unavailable for r in run.results if r.unavailable is not None}
    started = _dt.datetime.fromtimestamp(run.started, _dt.timezone.utc)
    lim_doc = None
    if run.limit is not None:
        lim_doc = {
            "source_bytes": run.limit.bytes,
            "llc_bytes": run.limit.llc_bytes,
            "llc_level": run.limit.llc_level,
            "mem_available": run.limit.mem_available,
            "reason": run.limit.reason,
        }
    return {
        "schema": SCHEMA,
        "winipc_version": winipc.__version__,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": run.duration,
        "mode": "quick" if run.quick else "full",
        "passes": run.passes,
        "machine": machine_info(),
        "payload": payload,
        "placements": [
            {"name": p.name, "runner_cpu": p.runner_cpu, "worker_cpu": p.worker_cpu}
            for p in run.placements
        ],
        "notes": run.notes,
        "limit": lim_doc,
        "metrics": [_metric_doc(m) for m in METRICS],
        "scenarios": [
            _scenario_doc(s, s.name in selected, results, why_not.get(s.name)) for s in registered
        ],
        "results": results,
        "targets": _targets(run),
        "verified": all(r.verified for r in run.results),
    }


def _cell(fig: dict[str, Any], show_limit: bool) -> Text:
    value = float(fig["value"])
    text = Text(f"{value:,.1f}" if fig["unit"] == "us" else f"{value:,.0f}")
    ratio = fig["ratio_to_best_peer"]
    if ratio is not None:
        good = ratio <= 1.0 if fig["better"] == "lower" else ratio >= 1.0
        text.append(
            f" ×{ratio:.2f}",  # noqa: RUF001
            style="green" if good else "yellow",
        )
    share = fig.get("ratio_to_limit")
    if show_limit and share is not None:
        text.append(f" {100 * share:.0f}%", style="cyan")
    return text


def _size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size // (1024 * 1024)} MiB"
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def _header(m: dict[str, Any], fig: str) -> str:
    unit = "µs" if FIGURES[m["kind"]][fig][0] == "us" else "MB/s"
    if m["kind"] == RTT:
        return f"RTT {m['size']} B\n{fig} {unit}"
    if m["kind"] == LATENCY:
        return f"{m['label']}\n{fig} {unit}"
    if m["kind"] == RATE:
        return f"{m['label']}\nper s"
    if m["kind"] == MESSAGES:
        return f"{_size(int(m['size']))} msgs\nper s"
    return f"{_size(int(m['size']))}\n{unit}"


def render_tables(doc: dict[str, Any]) -> list[Table]:
    """The report as rich tables, one per scenario group (transport, sync...):
    scenario-by-placement rows, figure columns.

    Delivery results are left to :func:`render_delivery`; the extra throughput sizes of
    ``--plot`` are in the JSON and the plot only.
    """
    plot_only = {m["key"] for m in doc["metrics"] if m.get("plot_only")}
    shown = [r for r in doc["results"] if r["kind"] != DELIVERY and r["metric"] not in plot_only]
    info = {s["name"]: s for s in doc["scenarios"]}
    order = [s["name"] for s in doc["scenarios"] if s["selected"]]
    groups: list[str] = []
    for name in order:
        if any(r["scenario"] == name for r in shown) and info[name]["group"] not in groups:
            groups.append(info[name]["group"])
    return [_group_table(doc, g, [r for r in shown if info[r["scenario"]]["group"] == g]) for g in groups]


def _group_table(doc: dict[str, Any], group: str, shown: list[dict[str, Any]]) -> Table:
    metrics = [m for m in doc["metrics"] if any(r["metric"] == m["key"] for r in shown)]
    columns = [(m, fig) for m in metrics for fig in SHOWN[m["kind"]]]
    table = Table(
        title=f"winipc bench ({doc['mode']}, {doc['started']}): {group}", title_justify="left"
    )
    table.add_column("scenario")
    table.add_column("placement")
    for m, fig in columns:
        table.add_column(_header(m, fig), justify="right")
    by_row: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in shown:
        by_row.setdefault((r["scenario"], r["placement"]), {})[r["metric"]] = r
    info = {s["name"]: s for s in doc["scenarios"]}
    order = [s["name"] for s in doc["scenarios"] if s["selected"]]
    for p in doc["placements"]:
        names = [n for n in order if (n, p["name"]) in by_row]
        for i, name in enumerate(names):
            row = by_row[(name, p["name"])]
            peer, limit = info[name]["peer"], info[name].get("limit", False)
            tag = " (peer)" if peer else " (limit)" if limit else ""
            cells: list[Text | str] = [
                Text(name + tag, style="dim" if peer or limit else "bold"),
                p["name"],
            ]
            for m, fig in columns:
                got = row.get(m["key"])
                if got is not None and "unavailable" in got:
                    cells.append("n/a")
                else:
                    cells.append(_cell(got["figures"][fig], not limit) if got else "-")
            table.add_row(*cells, end_section=i == len(names) - 1)
    return table


def render_table(doc: dict[str, Any]) -> Table:
    """The first of :func:`render_tables` (an empty table when nothing was measured)."""
    tables = render_tables(doc)
    return tables[0] if tables else Table(title=f"winipc bench ({doc['mode']}): nothing measured")


def render_delivery(doc: dict[str, Any]) -> Table | None:
    """The delivery results (bursts of best-effort messages) as a table; None if none.

    One row per scenario, placement and message size: messages sent and received
    (distinct, verified), the loss, messages delivered per second (from the first write
    to the last receipt) and written per second (the writer's own pace). ``n/a`` for a
    scenario that could not run here (the reason is in the notes).
    """
    results = [r for r in doc["results"] if r["kind"] == DELIVERY]
    if not results:
        return None
    table = Table(
        title="best-effort delivery: bursts written as fast as the writer can, then drained",
        title_justify="left",
    )
    for title in ("scenario", "placement", "size"):
        table.add_column(title)
    for title in ("sent", "received", "loss %", "delivered\nper s", "written\nper s"):
        table.add_column(title, justify="right")
    order = [s["name"] for s in doc["scenarios"] if s["selected"]]
    sizes = {m["key"]: i for i, m in enumerate(doc["metrics"])}
    for p in doc["placements"]:
        rows = [r for r in results if r["placement"] == p["name"]]
        rows.sort(key=lambda r: (order.index(r["scenario"]), sizes[r["metric"]]))
        for i, r in enumerate(rows):
            head = [r["scenario"], p["name"], f"{r['size']} B"]
            cells: list[str]
            if "unavailable" in r:
                cells = ["n/a"] * 5
            else:
                fig = r["figures"]
                cells = [
                    f"{r['sent']:,}",
                    f"{r['received']:,}",
                    f"{fig['loss']['value']:.1f}",
                    f"{fig['rate']['value']:,.0f}",
                    f"{fig['send_rate']['value']:,.0f}",
                ]
            table.add_row(*head, *cells, end_section=i == len(rows) - 1)
    return table


def render_targets(doc: dict[str, Any]) -> list[str]:
    """One line per target and placement: the figure or ratio, the goal, met or not."""
    lines = []
    for t in doc.get("targets", []):
        unit = "per s" if t.get("unit") == "1/s" else t.get("unit", "")
        most = t.get("at_most")
        if t["versus"] is None:
            what = f"{t['scenario']} ({t['placement']})"
            got = "n/a" if t["value"] is None else f"{t['value']:,.0f} {unit}"
            goal = f">= {t['at_least']:,.0f} {unit}" if most is None else f"<= {most:,.0f} {unit}"
        else:
            what = f"{t['scenario']} / {t['versus']} ({t['placement']})"
            got = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f}x"
            goal = f">= {t['at_least']:g}x" if most is None else f"<= {most:g}x"
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        line = f"Target {t['text']}: {what}: {got}, target {goal}: {verdict}"
        lines.append(line + (f" ({t['why']})" if t.get("why") else ""))
    return lines


def render_notes(doc: dict[str, Any]) -> list[str]:
    """The lines printed under the table: how to read it, payload, verification, notes."""
    lines = [
        "×n = ratio to the best peer of the same group (transport, sync) and placement. "  # noqa: RUF001
        "µs: lower is better; MB/s (10^6 B/s), per s: higher is better.",
    ]
    if doc.get("limit"):
        lines.append(
            "n% = share of the memcpy limit (one core copying the same units from a "
            f"{doc['limit']['source_bytes'] // (1024 * 1024)} MiB source, larger than the "
            "last-level cache) in the same placement."
        )
    pay = doc["payload"]
    if pay["kind"] == "file":
        lines.append(
            f"Payload: {pay['path']} ({pay['bytes']:,} B, {pay['crc32']}), "
            f"verified at the receiver: {'yes' if pay['verified'] else 'NO'}."
        )
    m = doc["machine"]
    lines.append(
        f"Every payload verified (CRC-32): {'yes' if doc['verified'] else 'NO'}. "
        f"{m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"run took {doc['duration_s']:.1f} s."
    )
    return lines + [f"Note: {n}" for n in doc["notes"]]


def print_table(doc: dict[str, Any], console: Console | None = None) -> None:
    """Print :func:`render_table` and :func:`render_notes` to ``console`` (stdout by default)."""
    console = console or Console()
    for table in render_tables(doc):
        console.print(table)
    delivery = render_delivery(doc)
    if delivery is not None:
        console.print(delivery)
    for line in render_targets(doc):
        console.print(line, highlight=False)
    for line in render_notes(doc):
        console.print(line, style="dim", highlight=False)


#: overrides where the last run's document is saved
CACHE_ENV = "WINIPC_BENCH_CACHE"


def last_run_path() -> Path:
    """Where :func:`save_last` writes: ``$WINIPC_BENCH_CACHE``, else
    ``$XDG_CACHE_HOME/winipc/bench-last.json`` (``~/.cache`` when XDG_CACHE_HOME is unset
    or not absolute)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "winipc" / "bench-last.json"


def save_last(doc: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``doc`` to ``path`` (:func:`last_run_path` by default): mode 0600, atomically
    (a temporary file in the same directory, then ``rename``), directories made 0700.

    Returns:
        The path written.

    Raises:
        OSError: the file could not be written.
    """
    path = last_run_path() if path is None else path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mkstemp made it 0600
            json.dump(doc, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
