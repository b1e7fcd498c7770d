"""``winipc map create|dump|write``: file mappings from the shell.

A mapping lives while a handle or a view of it is open (Windows' rule), so
``winipc map create NAME SIZE`` alone makes a mapping that is gone when the command
exits; ``--hold`` keeps it until Ctrl-C (or SIGTERM), so that other processes and
``winipc map dump|write`` can use it.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click

from winipc import errors as W
from winipc.cli._common import Failure, note
from winipc.mapping import (
    ALLOCATION_GRANULARITY,
    FILE_MAP_READ,
    FILE_MAP_WRITE,
    PAGE_READONLY,
    PAGE_READWRITE,
    FileMapping,
)

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"(0x[0-9a-f]+|\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def byte_count(value: str) -> int:
    """Parse a byte count: ``4096``, ``0x1000``, ``64K``, ``1MiB``, ``2G`` (K = 1024).

    Raises:
        click.BadParameter: not a byte count.
    """
    m = _SIZE_RE.fullmatch(str(value).strip())
    if m is None:
        raise click.BadParameter(f"{value!r} is not a byte count (e.g. 4096, 0x1000, 64K, 1M)")
    return int(m.group(1), 0) * _UNITS[m.group(2).lower()]


def _bytes_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    return None if value is None else byte_count(value)


class _MapGroup(click.Group):
    """Reports winipc errors as ``error: ...`` (exit 1) also when run on its own."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except W.WinIPCError as exc:
            raise Failure(str(exc)) from None


@click.group("map", cls=_MapGroup)
def map_group() -> None:
    """File mappings (shared memory): create and hold one, dump it, write into it.

    NAME is a kernel-object name: Global\\NAME, Local\\NAME or a plain NAME.
    """


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@map_group.command("create")
@click.argument("name")
@click.argument("size", callback=_bytes_option)
@click.option("--hold", is_flag=True, help="Keep the mapping alive until Ctrl-C (or SIGTERM).")
@click.option("--readonly", is_flag=True, help="PAGE_READONLY: views can only read it.")
def create_cmd(name: str, size: int, hold: bool, readonly: bool) -> None:
    """Create a memory-backed mapping of SIZE zero bytes (CreateFileMapping).

    Without --hold the mapping disappears when this command exits: a mapping lives only
    while some process has a handle or a view of it open.
    """
    m = FileMapping.create(name, size, PAGE_READONLY if readonly else PAGE_READWRITE)
    try:
        if m.already_exists:
            note(f"{m.name} exists already ({m.size} bytes); opened it (ERROR_ALREADY_EXISTS)")
        if not hold:
            note(
                f"created {m.name} ({m.size} bytes); it vanishes now that this command exits "
                "(a mapping lives while a handle is open): use --hold to keep it"
            )
            return
        previous = signal.signal(signal.SIGTERM, _stop)
        try:
            note("Ctrl-C releases it")
            click.echo(f"holding {m.name} {m.size}")
            sys.stdout.flush()
            while True:
                signal.pause()
        except KeyboardInterrupt:
            note(f"released {m.name}")
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        m.close()


def _window(m: FileMapping, offset: int, length: int | None) -> tuple[int, int]:
    if offset < 0 or offset > m.size:
        raise click.BadParameter(f"offset {offset} is outside the mapping's {m.size} bytes", param_hint="--offset")
    if length is None:
        length = m.size - offset
    if length < 0 or offset + length > m.size:
        raise click.BadParameter(
            f"{length} bytes at offset {offset} end past the mapping's {m.size} bytes", param_hint="--length"
        )
    return offset, length


def hexdump(data: bytes, start: int = 0) -> Iterator[str]:
    """``hexdump -C`` lines for ``data`` shown at address ``start``; repeats become ``*``."""
    previous: bytes | None = None
    starred = False
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        if chunk == previous and len(chunk) == 16:
            if not starred:
                yield "*"
                starred = True
            continue
        previous, starred = chunk, False
        hexes = " ".join(f"{b:02x}" for b in chunk)
        if len(chunk) > 8:
            hexes = hexes[:23] + " " + hexes[23:]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        yield f"{start + i:08x}  {hexes:<49} |{text}|"
    yield f"{start + len(data):08x}"


@map_group.command("dump")
@click.argument("name")
@click.option("--offset", default="0", callback=_bytes_option, show_default=True, help="First byte to show.")
@click.option("--length", default=None, callback=_bytes_option, help="Bytes to show [default: to the end].")
def dump_cmd(name: str, offset: int, length: int | None) -> None:
    """Show a mapping's bytes as a hex dump (OpenFileMapping + a read-only view)."""
    with FileMapping.open(name, FILE_MAP_READ) as m:
        offset, length = _window(m, offset, length)
        base = offset - offset % ALLOCATION_GRANULARITY
        if length == 0:
            click.echo(f"{offset:08x}")
            return
        with m.map_view(base, offset + length - base, FILE_MAP_READ) as view:
            data = view[offset - base : offset - base + length]
    for line in hexdump(data, offset):
        click.echo(line)


@map_group.command("write")
@click.argument("name")
@click.argument("data")
@click.option("--offset", default="0", callback=_bytes_option, show_default=True, help="Where to write.")
@click.option("--hex", "is_hex", is_flag=True, help="DATA is hexadecimal (spaces allowed).")
def write_cmd(name: str, data: str, offset: int, is_hex: bool) -> None:
    """Write DATA (UTF-8 text; '-' reads standard input) into a mapping at --offset."""
    if data == "-":
        payload = sys.stdin.buffer.read()
    elif is_hex:
        try:
            payload = bytes.fromhex(data)
        except ValueError as exc:
            raise click.BadParameter(f"not hexadecimal: {exc}", param_hint="DATA") from None
    else:
        payload = data.encode()
    with FileMapping.open(name, FILE_MAP_WRITE) as m:
        offset, length = _window(m, offset, len(payload))
        if length:
            base = offset - offset % ALLOCATION_GRANULARITY
            with m.map_view(base, offset + length - base, FILE_MAP_WRITE) as view:
                view[offset - base : offset - base + length] = payload
                view.flush()
        note(f"wrote {length} bytes at offset {offset} of {m.name}")
