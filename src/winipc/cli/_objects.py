"""``winipc ls``, ``winipc rm`` and ``winipc clean``: the namespace as a whole."""

from __future__ import annotations

import datetime
import io
import os
import sys
from collections.abc import Iterable

import click

from winipc import errors as W
from winipc._core import namespace
from winipc._core.names import ObjectName, parse, pipe_name
from winipc.cli._common import print_json


def _created(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _table(infos: Iterable[namespace.ObjectInfo], title: str | None = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, title=title, show_edge=False, pad_edge=False)
    table.add_column("TYPE")
    table.add_column("NAME", overflow="fold")
    table.add_column("OWNER")
    table.add_column("HANDLES", justify="right")
    table.add_column("PID", justify="right")
    table.add_column("CREATED")
    table.add_column("STATE")
    table.add_column("PATH", overflow="fold")
    for info in infos:
        state = Text("alive", style="green") if info.alive else Text("stale", style="red")
        paths = "\n".join([info.path, *(f"  {p}" for p in info.fs_paths)])
        table.add_row(
            Text(info.type),
            Text(info.name),
            Text(info.owner_name),
            Text("?" if info.handles is None else str(info.handles)),
            Text("?" if info.creator_pid is None else str(info.creator_pid)),
            Text(_created(info.created)),
            state,
            Text(paths),
        )
    if sys.stdout.isatty():
        Console().print(table)
        return
    # Into a pipe or a file: never cut or fold a path, and no trailing blanks.
    buf = io.StringIO()
    Console(file=buf, width=100_000, no_color=True, highlight=False).print(table)
    click.echo("\n".join(line.rstrip() for line in buf.getvalue().splitlines()))


@click.command("ls")
@click.option(
    "--type", "type_", metavar="TYPE", help="Only objects of this type (pipe, event, ...)."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def ls_cmd(type_: str | None, as_json: bool) -> None:
    """List every named object, live or stale, in both namespace roots.

    For each object: type, name, owner, open handle count, creator pid, creation time,
    state (alive, or stale: a leftover no handle holds, which `winipc clean` removes) and
    its place on the file system (for a pipe, its folder and each listening instance's
    socket).
    """
    infos = namespace.list_objects()
    if type_ is not None:
        infos = [i for i in infos if i.type.lower() == type_.lower()]
    infos.sort(key=lambda i: (i.type, i.name.lower(), i.scope))
    if as_json:
        print_json([i.to_json() for i in infos])
    elif not infos:
        click.echo("no objects" + (f" of type {type_}" if type_ else ""), err=True)
    else:
        _table(infos)


def _pipe_exists(name: ObjectName) -> bool:
    try:
        _root, path = namespace.object_path(name)
    except W.WinIPCError:
        return False
    return os.path.isdir(path)


@click.command("rm")
@click.argument("name")
def rm_cmd(name: str) -> None:
    """Take NAME out of the namespace now, live or not.

    NAME is a Win32 name: \\\\.\\pipe\\NAME, Global\\NAME, Local\\NAME or a plain NAME
    (which is Local\\NAME, as on Windows). Handles already open keep working on what they
    have; new opens fail with ERROR_FILE_NOT_FOUND.
    """
    oname = parse(name)
    try:
        namespace.remove(oname)
    except W.FileNotFound as exc:
        if oname.family == "kernel" and "\\" not in name:
            as_pipe = pipe_name(name)
            if _pipe_exists(as_pipe):
                raise W.FileNotFound(
                    f"{exc.strerror}; a pipe has this name: winipc rm '{as_pipe.display}'"
                ) from None
        raise
    click.echo(f"removed {oname.display}")


@click.command("clean")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as a JSON list.")
def clean_cmd(as_json: bool) -> None:
    """Remove stale objects: those whose every holder has closed or died.

    Live objects are never touched; other users' objects only when run as root.
    """
    removed = namespace.clean()
    if as_json:
        print_json([i.to_json() for i in removed])
        return
    if not removed:
        click.echo("nothing to clean", err=True)
    for info in removed:
        click.echo(f"removed {info.type} {info.name} ({info.path})")
