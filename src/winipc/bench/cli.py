"""``winipc bench``: the click command (``from winipc.bench.cli import bench``).

Exit status: 0 on success, 1 when a worker failed, 3 when a payload arrived damaged
(verification failed; no figures are printed then), 2 for bad usage.

After every successful run the JSON document is saved for ``winipc choose``
(:func:`winipc.bench.report.save_last`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from winipc.bench import registry
from winipc.bench.registry import DEFAULT_METRICS, METRICS
from winipc.bench.report import build_document, print_table, save_last
from winipc.bench.runner import Runner
from winipc.bench.workload import BenchError, Source, VerificationError


class _BenchFailed(click.ClickException):
    exit_code = 1


class _VerificationFailed(click.ClickException):
    exit_code = 3


def _list(as_json: bool) -> None:
    scenarios = registry.all_scenarios()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "mechanism": s.mechanism,
                        "peer": s.peer,
                        "limit": s.limit,
                        "group": s.group,
                        "kinds": sorted(s.kinds),
                        "description": s.description,
                    }
                    for s in scenarios
                ],
                indent=2,
            )
        )
        return
    for s in scenarios:
        tag = "peer  " if s.peer else "limit " if s.limit else "winipc"
        why = s.unavailable()
        click.echo(f"{s.name:25} {tag}  {s.mechanism}" + (f"  [n/a: {why}]" if why else ""))


@click.command("bench")
@click.option("--quick", is_flag=True, help="Short budgets: the whole run takes a few seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of the table.")
@click.option(
    "--payload",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    help="Move this file (chunked at each unit size) in the throughput runs, verified at "
    "the receiver, instead of random bytes.",
)
@click.option(
    "--only",
    "patterns",
    multiple=True,
    metavar="PATTERN",
    help="Run the scenarios matching PATTERN (glob, or substring); repeatable. "
    "Ratios need a peer among them.",
)
@click.option(
    "--placement",
    type=click.Choice(["all", "same-core", "cross-core"]),
    default="all",
    show_default=True,
    help="Measure with both processes on one core, on two cores, or both.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    metavar="FILE.png",
    help="Also measure throughput at 64 B to 4 MiB units and draw MB/s against unit size, "
    "one line per scenario, one panel per placement (needs matplotlib: winipc[bench]).",
)
@click.option("--list", "list_only", is_flag=True, help="List the registered scenarios and exit.")
@click.option(
    "--inject-fault",
    type=click.Choice(["rtt", "throughput", "msgs"]),
    hidden=True,
    help="Testing: damage one payload to prove that verification fails the run.",
)
def bench(
    quick: bool,
    as_json: bool,
    payload: Path | None,
    patterns: tuple[str, ...],
    placement: str,
    plot: Path | None,
    list_only: bool,
    inject_fault: str | None,
) -> None:
    """Measure winipc's pipes, mailslots, mappings, events and mutexes against the plain
    Python ways (AF_UNIX stream and seqpacket sockets, kernel pipes, TCP loopback,
    multiprocessing Pipe, Queue, Event and Lock, pyzmq and faster-fifo when installed).

    Each scenario runs between two real processes, pinned to one core (same-core) and
    to two (cross-core): round trip of 64 B (median and p99, µs), 64 B messages per
    second one way, and throughput with 64 KiB and 1 MiB units (MB/s = 10^6 B/s), also
    given as a share of a single-core memcpy from memory (memcpy-limit). Every payload is
    verified with CRC-32; a damaged one fails the run with exit status 3. Events:
    set-to-wake latency (median and p99, µs); mutexes: hand-offs per second between two
    processes taking strict turns. The ratio printed after each figure is to the best
    peer (non-winipc scenario) of the same run. The JSON document of every successful
    run is saved to $XDG_CACHE_HOME/winipc/bench-last.json ($WINIPC_BENCH_CACHE
    overrides). See docs/bench.md.
    """
    if list_only:
        _list(as_json)
        return
    try:
        scenarios = registry.select(patterns)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    draw = None
    if plot is not None:
        from winipc.bench import plot as plotting

        why = plotting.unavailable()
        if why is not None:
            raise click.UsageError(f"--plot: {why}")
        draw = plotting.draw
    try:
        source = Source.from_file(str(payload)) if payload is not None else None
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--payload") from None
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        auto_refresh=False,
    )

    def step(text: str, done: int) -> None:
        # Refreshed only between cells: no thread of ours runs while a cell is timed.
        progress.update(task, description=text, advance=done)
        progress.refresh()

    try:
        runner = Runner(
            scenarios,
            quick=quick,
            source=source,
            fault=inject_fault,
            progress=step,
            metrics=METRICS if plot is not None else DEFAULT_METRICS,
            placement=placement,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--placement") from None
    task = progress.add_task("starting", total=runner.steps)
    try:
        with progress:
            run = runner.run()
    except VerificationError as exc:
        raise _VerificationFailed(f"payload verification failed: {exc}") from None
    except BenchError as exc:
        raise _BenchFailed(f"bench failed: {exc}") from None
    doc = build_document(run, registry.all_scenarios())
    try:
        save_last(doc)
    except OSError as exc:  # the run itself succeeded: say so, and go on
        err.print(f"winipc bench: could not save the run for winipc choose: {exc}", style="yellow")
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        # A table piped to a file or pasted into docs should not wrap at 80 columns.
        print_table(doc, Console() if sys.stdout.isatty() else Console(width=150))
    if draw is not None and plot is not None:  # after the figures: a failure loses none
        try:
            draw(doc, plot)
        except OSError as exc:
            raise click.FileError(str(plot), hint=str(exc)) from None


def main() -> None:
    """Entry point of ``python -m winipc.bench``."""
    bench(prog_name="winipc bench")
