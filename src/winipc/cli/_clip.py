"""``winipc clip copy|paste|formats|watch``: the clipboard from the shell.

``copy`` is OpenClipboard + EmptyClipboard + SetClipboardData + CloseClipboard; ``paste``
GetClipboardData; ``formats`` EnumClipboardFormats (with each format's size, and whether
Windows would synthesize it from another one); ``watch`` a message-only window registered
with AddClipboardFormatListener, printing each WM_CLIPBOARDUPDATE.

FORMAT is a CF_ name (``CF_UNICODETEXT``, ``cf_dib``), a number (``13``, ``0xC0F1``) or
a registered format's name (``"HTML Format"``, ``PNG``). Text formats (CF_UNICODETEXT,
CF_TEXT, CF_OEMTEXT) take and give UTF-8 text, converted as Windows stores them; every
other format moves its bytes as they are.

The clipboard is the user's (per session), as :mod:`winipc.clipboard` has it; when a
desktop is present the library keeps text and images in sync with it
(``WINIPC_CLIPBOARD_BRIDGE=0`` turns that off).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import click

from winipc import errors as W
from winipc._core import atoms
from winipc.cli._common import ErrorReportingGroup, Failure, note, print_json, raise_interrupt
from winipc.cli._msg import _print_table, _safe, _silence_stdout

#: seconds ``copy``/``paste``/``formats`` retry while another program has the clipboard open
OPEN_RETRY = 2.0
_TEXT_FORMATS = {13: "utf-16-le", 1: "cp1252", 7: "cp437"}  # CF_UNICODETEXT, CF_TEXT, CF_OEMTEXT
CF_UNICODETEXT = 13


def _clipboard() -> Any:
    """:mod:`winipc.clipboard`, imported when a command needs it."""
    from winipc import clipboard

    return clipboard


def _cf_names() -> dict[int, str]:
    C = _clipboard()
    out: dict[int, str] = {}
    for name in sorted(dir(C)):
        value = getattr(C, name)
        if name.startswith("CF_") and isinstance(value, int) and not isinstance(value, bool):
            out.setdefault(value, name)
    return out


def format_name(fmt: int) -> str:
    """``CF_UNICODETEXT``, a registered format's name, or ``format 0x0201``."""
    known = _cf_names().get(fmt)
    if known is not None:
        return known
    if 0xC000 <= fmt <= 0xFFFF:
        with contextlib.suppress(W.WinIPCError):
            return str(_clipboard().get_format_name(fmt))
    return f"format 0x{fmt:04X}"


def parse_format(text: str, *, register: bool) -> int:
    """FORMAT as a number, a CF_ name or a registered name.

    Args:
        text: what the user typed.
        register: register an unknown name (``copy``); else an unknown name fails
            (``paste``: nothing can be there under a name nobody registered).

    Raises:
        click.BadParameter: a number out of 1..0xFFFF, an unknown CF_ name, or (without
            ``register``) a name no program registered.
    """
    stripped = text.strip()
    if stripped[:1].isdigit():
        try:
            value = int(stripped, 0)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a number", param_hint="--format") from None
        if not 1 <= value <= 0xFFFF:
            raise click.BadParameter(f"{value} is out of range (1..0xFFFF)", param_hint="--format")
        return value
    by_name = {name: value for value, name in _cf_names().items()}
    if stripped.upper().startswith("CF_"):
        if stripped.upper() not in by_name:
            raise click.BadParameter(
                f"{text!r} is not a predefined format ({', '.join(sorted(by_name))})",
                param_hint="--format",
            )
        return by_name[stripped.upper()]
    if register:
        return int(_clipboard().register_format(stripped))
    found = atoms.find(stripped)
    if found is None:
        raise Failure(f"no clipboard format named {stripped!r} is registered: the clipboard cannot hold it")
    return int(found)


@contextlib.contextmanager
def _opened(retry: float | None = None) -> Iterator[Any]:
    """The clipboard, open (OpenClipboard with no owner window) for the block.

    Retries for ``retry`` seconds (:data:`OPEN_RETRY` when None) while another program
    has it open (ERROR_ACCESS_DENIED, which OpenClipboard gives at once), as Windows
    programs do; then fails with it.
    """
    C = _clipboard()
    deadline = time.monotonic() + (OPEN_RETRY if retry is None else retry)
    while True:
        try:
            C.open()
            break
        except W.AccessDenied:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
    try:
        yield C
    finally:
        C.close()


def _decode_text(fmt: int, data: bytes) -> str:
    """A text format's bytes, up to its NUL, as str."""
    codec = _TEXT_FORMATS[fmt]
    if fmt == CF_UNICODETEXT:
        n = len(data) - len(data) % 2
        for i in range(0, n, 2):
            if data[i] == 0 and data[i + 1] == 0:
                n = i
                break
        return data[:n].decode(codec, errors="replace")
    end = data.find(b"\0")
    return (data if end < 0 else data[:end]).decode(codec, errors="replace")


def split_synthesized(fmts: list[int]) -> int:
    """How many of EnumClipboardFormats' list are real: the rest Windows synthesized.

    The list holds the real formats in the order they were set, then the ones synthesized
    from them; the real part is the shortest prefix whose synthesized formats are exactly
    the rest.
    """
    from winipc.clipboard import _formats

    for k in range(len(fmts) + 1):
        if _formats.synthesized_formats(fmts[:k]) == fmts[k:]:
            return k
    return len(fmts)


@click.group("clip", cls=ErrorReportingGroup)
def clip_group() -> None:
    """The clipboard: copy to it, paste from it, list its formats, watch it change.

    FORMAT is a CF_ name (CF_UNICODETEXT, CF_DIB), a number, or a registered format's name
    ("HTML Format"). Text goes in and out as UTF-8.
    """


@clip_group.command("copy")
@click.argument("source", type=click.File("rb"), default="-", metavar="[FILE]")
@click.option(
    "--format",
    "fmt_text",
    metavar="FORMAT",
    help="The format to put the data in. Default: text, as CF_UNICODETEXT.",
)
def copy_cmd(source: IO[bytes], fmt_text: str | None) -> None:
    """Put the contents of FILE (stdin when there is none) on the clipboard.

    Empties the clipboard first, so FILE becomes its only content (Windows synthesizes
    the other text formats from a text one). A text format needs UTF-8 input; any other
    format takes the bytes as they are. A registered format's name is registered if no
    program did yet (RegisterClipboardFormat). Fails with ERROR_ACCESS_DENIED when
    another program keeps the clipboard open for more than 2 seconds.
    """
    fmt = CF_UNICODETEXT if fmt_text is None else parse_format(fmt_text, register=True)
    data = source.read()
    payload: bytes | str = data
    if fmt in _TEXT_FORMATS:
        try:
            payload = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Failure(
                f"the input is not UTF-8 text (byte {exc.start}); give a binary --format to "
                "copy bytes as they are"
            ) from None
    with _opened() as C:
        C.empty()
        C.set_data(fmt, payload)


@clip_group.command("paste")
@click.option(
    "--format",
    "fmt_text",
    metavar="FORMAT",
    help="The format to read. Default: text (CF_UNICODETEXT, synthesized from the others).",
)
def paste_cmd(fmt_text: str | None) -> None:
    """Write the clipboard's content in FORMAT to stdout.

    Text formats are written as UTF-8 (up to the terminating NUL, nothing added); other
    formats as their bytes. Exits with status 1 when the clipboard holds nothing in
    FORMAT, naming the formats it does hold.
    """
    fmt = CF_UNICODETEXT if fmt_text is None else parse_format(fmt_text, register=False)
    with _opened() as C:
        data = C.get_data(fmt)
        held = [] if data is not None else C.enum_formats()
    if data is None:
        there = ", ".join(format_name(f) for f in held) if held else "nothing"
        raise Failure(f"the clipboard holds no {format_name(fmt)} (it holds: {there})")
    out = _decode_text(fmt, data).encode("utf-8", "surrogateescape") if fmt in _TEXT_FORMATS else data
    try:
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        _silence_stdout()


@clip_group.command("formats")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def formats_cmd(as_json: bool) -> None:
    """List the formats on the clipboard: id, name, size in bytes, and whether Windows
    synthesizes it from another format (CF_TEXT from CF_UNICODETEXT, ...).

    Reading a size renders a delayed format (its owner gets WM_RENDERFORMAT), as any
    clipboard viewer does on Windows; a format whose owner does not render has no size.
    """
    rows: list[dict[str, Any]] = []
    with _opened() as C:
        fmts = [int(f) for f in C.enum_formats()]
        real = split_synthesized(fmts)
        for i, fmt in enumerate(fmts):
            data = C.get_data(fmt)
            rows.append(
                {
                    "id": fmt,
                    "name": format_name(fmt),
                    "size": None if data is None else len(data),
                    "synthesized": i >= real,
                }
            )
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("the clipboard is empty", err=True)
        return
    _print_table(
        ["ID", "NAME", "SIZE", "SYNTHESIZED"],
        [
            [
                str(r["id"]),
                _safe(r["name"]),
                "?" if r["size"] is None else str(r["size"]),
                "yes" if r["synthesized"] else "no",
            ]
            for r in rows
        ],
        {0, 2},
    )


@clip_group.command("watch")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Exit after N changes.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per change.")
def watch_cmd(count: int | None, as_json: bool) -> None:
    """Print a line for every change of the clipboard, until Ctrl-C or SIGTERM.

    A message-only window listens (AddClipboardFormatListener): each WM_CLIPBOARDUPDATE
    prints the sequence number (GetClipboardSequenceNumber) and the formats then on the
    clipboard. The first line on stderr is "watching (sequence N)". With --json, one
    object per line: ``sequence``, ``formats`` (a list of {"id", "name"}; null when
    another program kept the clipboard open) and ``owner`` (the owner window or null).
    """
    from winipc import messages as M

    C = _clipboard()
    out = sys.stdout.buffer
    state = {"seen": 0, "stop": False}

    def report() -> None:
        seq = int(C.sequence_number())
        fmts: list[int] | None
        try:
            with _opened(retry=0.5):
                fmts = [int(f) for f in C.enum_formats()]
        except W.AccessDenied:
            fmts = None
        owner = C.get_owner()
        if as_json:
            rec = {
                "sequence": seq,
                "formats": None if fmts is None else [{"id": f, "name": format_name(f)} for f in fmts],
                "owner": None if owner is None else int(owner),
            }
            line = json.dumps(rec, ensure_ascii=False)
        else:
            names = "(clipboard busy)" if fmts is None else ", ".join(_safe(format_name(f)) for f in fmts) or "(empty)"
            line = f"{seq}: {names}"
        try:
            out.write(line.encode("utf-8", "backslashreplace") + b"\n")
            out.flush()
        except BrokenPipeError:
            _silence_stdout()
            state["stop"] = True
        state["seen"] += 1
        if count is not None and state["seen"] >= count:
            state["stop"] = True

    def wndproc(hwnd: int, msg: int, wparam: int, lparam: Any) -> int:
        if msg == M.WM_CLIPBOARDUPDATE and not state["stop"]:
            report()
            if state["stop"]:
                M.post_quit_message(0)
        return 0

    class_name = f"winipc-clip-watch-{id(state):x}"
    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    M.register_class(class_name, wndproc)
    window: Any = None
    listening = False
    try:
        window = M.create_window(class_name, "", parent=M.HWND_MESSAGE, wndproc=wndproc)
        C.add_format_listener(window.hwnd)
        listening = True
        note(f"watching (sequence {C.sequence_number()})")
        while not state["stop"]:
            m = M.get_message()
            if m.message == M.WM_QUIT:
                break
            M.dispatch_message(m)
    except KeyboardInterrupt:
        note("stopping")
    finally:
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if listening:
                with contextlib.suppress(W.WinIPCError):
                    C.remove_format_listener(window.hwnd)
            if window is not None:
                window.destroy()
            M.unregister_class(class_name)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
