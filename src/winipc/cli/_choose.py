"""``winipc choose``: the seeds' questions in, a ranked list of winipc mechanisms out.

Every question is a flag; one not given is asked (click prompts, on stderr) when stdin is
a terminal or with ``--interactive``, and takes its default with ``--no-input`` or when
stdin is not a terminal. Figures come from the last ``winipc bench`` run
(:func:`winipc.bench.choose.default_cache_path`) or ``--from FILE``. See docs/choose.md.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import click

from winipc.bench import choose as C
from winipc.cli._common import Failure, note, print_json

SCHEMA = "winipc-choose/1"
#: what ``winipc bench --quick`` costs, for the hint when there is no document
_QUICK_HINT = "run `winipc bench --quick` (about 11 s) to measure this machine"


def _ask(q: C.Question) -> Any:
    if q.choices:
        return click.prompt(
            q.prompt,
            type=click.Choice(q.choices),
            default=q.default,
            err=True,
            show_choices=True,
        )
    return click.confirm(q.prompt, default=bool(q.default), err=True)


def _gather(given: dict[str, Any], interactive: bool) -> tuple[C.Answers, dict[str, str]]:
    """The answers, and where each came from: ``flag``, ``prompt`` or ``default``."""
    answers: dict[str, Any] = {}
    source: dict[str, str] = {}
    for q in C.QUESTIONS:
        value = given.get(q.key)
        if value is not None:
            answers[q.key], source[q.key] = value, "flag"
        elif interactive and not (q.skip_when_network and answers.get("network")):
            answers[q.key], source[q.key] = _ask(q), "prompt"
        else:
            answers[q.key], source[q.key] = q.default, "default"
    return C.Answers(**answers), source


def _load(from_file: Path | None) -> tuple[C.BenchDocument | None, dict[str, Any]]:
    """The bench document and the ``bench`` part of the JSON output."""
    path = from_file if from_file is not None else C.default_cache_path()
    info: dict[str, Any] = {"path": str(path), "status": "missing"}
    try:
        doc = C.load_document(path)
    except FileNotFoundError:
        if from_file is not None:
            raise Failure(f"bench document {path}: no such file") from None
        info["note"] = f"no bench figures: {path} does not exist; {_QUICK_HINT}"
        return None, info
    except C.BenchDocumentError as exc:
        raise Failure(str(exc)) from None
    info.update(status="loaded", started=doc.started, mode=doc.mode)
    notes = [f"figures from {path}" + (f" ({doc.mode} run, {doc.started})" if doc.started else "")]
    if doc.mode == "quick":
        notes.append("a --quick run's figures are rough; `winipc bench` gives steadier ones")
    info["note"] = "; ".join(notes)
    return doc, info


def _document(choice: C.Choice, source: dict[str, str], bench: dict[str, Any]) -> dict[str, Any]:
    a = choice.answers
    return {
        "schema": SCHEMA,
        "answers": a.to_json(),
        "answered_by": source,
        "flags": a.flags(),
        "bench": {**bench, "placement": choice.placement},
        "order": _order_text(a),
        "ranked": [x.to_json(i) for i, x in enumerate(choice.ranked, 1)],
        "not_suitable": [x.to_json() for x in choice.not_suitable],
        "planned": [x.to_json() for x in choice.planned],
        "planned_not_suitable": [x.to_json() for x in choice.planned_not_suitable],
        "relax": {k: list(v) for k, v in choice.relax.items()},
        "hint": None if choice.ranked else _hint(choice),
    }


def _order_text(a: C.Answers) -> str:
    if a.performance == "latency":
        return "fit, then the latency figure (lowest µs first), then the table order"
    if a.performance == "throughput":
        return "fit, then the throughput figure (MB/s, then per s; highest first), then the table order"
    return "fit, then the table order (performance not critical: figures shown, not ranked on)"


def _summary(a: C.Answers) -> str:
    return ", ".join(
        [
            "other computers" if a.network else "this computer",
            "partners on other OSes or without winipc" if a.other_os else "winipc partners",
            "found implicitly" if a.discovery else "partners named",
            f"{a.coupling} coupling",
            a.pattern,
            "child processes" if a.related else "unrelated processes",
            f"performance: {a.performance}",
            "GUI" if a.gui else "console",
        ]
    )


def _other_answer(q: C.Question, current: Any) -> str:
    if q.key == "pattern":
        return f"another --pattern than {current}"
    if q.choices:
        return q.flag(next(c for c in q.choices if c != current))
    return q.flag(not current)


def _hint(choice: C.Choice) -> str:
    """Said when nothing available fits: which single answer keeps which mechanisms out."""
    text = "No available mechanism does all of this."
    questions = {q.key: q for q in C.QUESTIONS}
    parts = [
        f"{_other_answer(questions[key], getattr(choice.answers, key))} would allow "
        + ", ".join(mechs)
        for key, mechs in choice.relax.items()
    ]
    if parts:
        text += " Changing one answer: " + "; ".join(parts) + "."
    return text


def _print(choice: C.Choice, bench: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    tty = sys.stdout.isatty()
    buf = io.StringIO()
    console = Console() if tty else Console(file=buf, width=150, no_color=True, highlight=False)
    a = choice.answers
    console.print(Text(f"winipc choose: {_summary(a)}", style="bold"))
    if choice.ranked:
        table = Table(
            box=box.SIMPLE_HEAD,
            title="ranked",
            title_justify="left",
            show_lines=False,
            pad_edge=False,
        )
        table.add_column("#", justify="right")
        table.add_column("mechanism")
        table.add_column("why", ratio=3)
        table.add_column("figure", ratio=2)
        for i, x in enumerate(choice.ranked, 1):
            m = x.mechanism
            fig: Text | str
            if x.figure is None:
                fig = Text("-" if bench["status"] == "missing" else "not measured", style="dim")
            else:
                fig = Text(x.figure.text())
                fig.append("\n" + x.figure.basis(), style="dim")
            table.add_row(
                str(i),
                Text(m.title, style="bold").append("\n" + m.module, style="dim"),
                "\n".join(f"- {r.text}" for r in x.reasons),
                fig,
                end_section=True,
            )
        console.print(table)
    else:
        console.print(Text(_hint(choice), style="yellow"))
    if choice.not_suitable:
        table = Table(
            box=box.SIMPLE_HEAD, title="not suitable", title_justify="left", pad_edge=False
        )
        table.add_column("mechanism")
        table.add_column("why not", ratio=1)
        for x in choice.not_suitable:
            table.add_row(x.mechanism.title, "; ".join(r.text for r in x.reasons))
        console.print(table)
    if choice.planned:
        table = Table(
            box=box.SIMPLE_HEAD,
            title="planned (not available yet)",
            title_justify="left",
            pad_edge=False,
        )
        table.add_column("mechanism")
        table.add_column("will offer", ratio=1)
        for x in choice.planned:
            table.add_row(
                Text(x.mechanism.title).append("\n" + x.mechanism.module, style="dim"),
                x.mechanism.offers + "\n" + "; ".join(r.text for r in x.reasons),
            )
        console.print(table)
    notes = [f"Order: {_order_text(a)}."]
    if choice.placement:
        notes.append(
            f"Figures from placement {choice.placement} where measured (--placement to change)."
        )
    notes.append(bench["note"] + ".")
    notes.append("Same answers without questions: winipc choose " + " ".join(a.flags()))
    for line in notes:
        console.print(Text(line, style="dim"), soft_wrap=True)
    if not tty:
        click.echo("\n".join(line.rstrip() for line in buf.getvalue().splitlines()))


@click.command("choose")
@click.option(
    "--network/--local",
    default=None,
    help="Partners on other computers / on this computer only. Default: --local.",
)
@click.option(
    "--other-os/--same-os",
    default=None,
    help="Some partners run another OS or do not use winipc (another language, a "
    "Windows machine) / all are winipc programs. Default: --same-os.",
)
@click.option(
    "--discovery/--no-discovery",
    default=None,
    help="Partners find each other implicitly / each is told where the other "
    "is. Default: --no-discovery.",
)
@click.option(
    "--coupling",
    type=click.Choice(C.COUPLINGS),
    default=None,
    help="loose: any application, agreeing only on a data format (cut and paste); "
    "tight: specific partners sharing a protocol. Default: tight.",
)
@click.option(
    "--pattern",
    type=click.Choice(tuple(C.PATTERNS)),
    default=None,
    help="What the exchange is: "
    + "; ".join(f"{k}: {v}" for k, v in C.PATTERNS.items())
    + ". Default: request-reply.",
)
@click.option(
    "--related/--unrelated",
    default=None,
    help="Partners are child processes this program starts / any processes. Default: --unrelated.",
)
@click.option(
    "--performance",
    type=click.Choice(C.GOALS),
    default=None,
    help="The figure that orders mechanisms of equal fit. Default: none.",
)
@click.option(
    "--gui/--console",
    default=None,
    help="A GUI application (a window, an event loop) / a console one. Default: --console.",
)
@click.option(
    "--interactive/--no-input",
    default=None,
    help="Ask the questions no flag answered / never ask: they take their "
    "defaults. Default: ask when stdin is a terminal.",
)
@click.option(
    "--from",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read figures from this `winipc bench --json` document instead of the last run's.",
)
@click.option(
    "--placement",
    metavar="NAME",
    default=None,
    help="Take figures from this placement first (same-core, cross-core, ...). "
    "Default: cross-core when measured.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of tables.")
def choose_cmd(
    network: bool | None,
    other_os: bool | None,
    discovery: bool | None,
    coupling: str | None,
    pattern: str | None,
    related: bool | None,
    performance: str | None,
    gui: bool | None,
    interactive: bool | None,
    from_file: Path | None,
    placement: str | None,
    as_json: bool,
) -> None:
    """Which winipc mechanism fits: answer the questions Microsoft's IPC overview asks,
    get the mechanisms ranked, each with why and the bench figure behind it.

    Mechanisms that cannot do what was asked are listed as not suitable, with the
    reason; planned ones are listed apart. Figures come from the last `winipc bench`
    run ($WINIPC_BENCH_CACHE, else $XDG_CACHE_HOME/winipc/bench-last.json) or --from
    FILE; without one, the ranking is given without figures. See docs/choose.md.
    """
    given = {
        "network": network,
        "other_os": other_os,
        "discovery": discovery,
        "coupling": coupling,
        "pattern": pattern,
        "related": related,
        "performance": performance,
        "gui": gui,
    }
    ask = interactive if interactive is not None else sys.stdin.isatty()
    answers, source = _gather(given, ask)
    doc, bench = _load(from_file)
    try:
        choice = C.choose(answers, doc, placement)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--placement") from None
    if placement is not None and doc is None:
        bench["note"] += "; --placement ignored"
    if as_json:
        if doc is None:
            note(bench["note"])
        print_json(_document(choice, source, bench))
    else:
        _print(choice, bench)
