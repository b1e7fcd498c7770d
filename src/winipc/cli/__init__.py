"""The ``winipc`` command: list, remove and clean named objects; serve and use pipes.

``winipc ls``, ``winipc rm NAME``, ``winipc clean``, ``winipc pipe serve|send|cat``,
``winipc rpc serve|call|ls|idl`` and ``winipc bench`` (registered when
:mod:`winipc.bench.cli` is importable). See docs/cli.md.

Errors of winipc print as ``error: [WinError 2 ERROR_FILE_NOT_FOUND] ...`` on stderr and
exit with status 1; bad arguments exit with status 2 (click's usage errors).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from winipc import __version__
from winipc import errors as W
from winipc.cli._common import Failure
from winipc.cli._mailslot import mailslot_group
from winipc.cli._map import map_group
from winipc.cli._objects import clean_cmd, ls_cmd, rm_cmd
from winipc.cli._pipe import pipe_group
from winipc.cli._sync import event_group, mutex_group, sem_group

__all__ = ["cli", "main"]

_BENCH_MODULE = "winipc.bench.cli"


def _bench_available() -> bool:
    try:
        return importlib.util.find_spec(_BENCH_MODULE) is not None
    except (ImportError, ValueError):
        return False


def _load_bench() -> click.Command | None:
    """``winipc.bench.cli.bench``, imported on first use; None while it does not exist."""
    try:
        module = importlib.import_module(_BENCH_MODULE)
    except ImportError:
        return None
    cmd = getattr(module, "bench", None)
    return cmd if isinstance(cmd, click.Command) else None


class WinIPCGroup(click.Group):
    """The top-level group: turns winipc errors into ``error: ...`` and exit status 1,
    and loads ``bench`` lazily (its module may pull in heavy optional dependencies)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except W.WinIPCError as exc:
            raise Failure(str(exc)) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = list(super().list_commands(ctx))
        if "bench" not in names and _bench_available():
            names.append("bench")
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name == "bench":
            cmd = _load_bench()
        return cmd


@click.group(cls=WinIPCGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="winipc")
def cli() -> None:
    """Windows IPC objects on this machine: list them, clean up, talk to pipes.

    Names are Win32 names: \\\\.\\pipe\\NAME for pipes, Global\\NAME or Local\\NAME
    (or a plain NAME) for kernel objects.
    """


cli.add_command(ls_cmd)
cli.add_command(rm_cmd)
cli.add_command(clean_cmd)
cli.add_command(pipe_group)
cli.add_command(event_group)
cli.add_command(mailslot_group)
cli.add_command(map_group)
cli.add_command(mutex_group)
cli.add_command(sem_group)
cli.add_command(importlib.import_module("winipc.cli._choose").choose_cmd)
cli.add_command(importlib.import_module("winipc.cli._queue").queue_group)
cli.add_command(importlib.import_module("winipc.cli._rpc").rpc_group)
cli.add_command(importlib.import_module("winipc.cli._msg").msg_group)
cli.add_command(importlib.import_module("winipc.cli._clip").clip_group)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``winipc`` console script and ``python -m winipc``."""
    cli.main(args=argv, prog_name="winipc")
