"""``winipc msg find|send|post|listen``: window messages from the shell.

``find`` lists windows (FindWindowEx over top-level and message-only windows, then
GetWindowText / GetClassName / GetWindowThreadProcessId for each); ``send`` is
SendMessage (SendMessageTimeout with ``--timeout`` or ``--abort-if-hung``) and prints the
LRESULT; ``send --copydata`` sends WM_COPYDATA with a file's bytes; ``post`` is
PostMessage; ``listen`` creates a window (RegisterClass + CreateWindowEx), runs a message
loop and prints every message its window procedure receives.

Arguments:

* HWND: a number (``0x1A2B4`` or decimal), or ``broadcast`` (HWND_BROADCAST, 0xFFFF);
  ``--class``/``--title`` instead find the window (a top-level one first, then a
  message-only one).
* MSG: a number, a WM_ name (``WM_CLOSE``, ``wm_user+5``, ``WM_APP+1``), or ``--register
  NAME`` for RegisterWindowMessage(NAME) (then MSG is left out).
* WPARAM and LPARAM: numbers (WPARAM 0..2**64-1, LPARAM -2**63..2**63-1; put ``--``
  before a negative one); ``--lparam-text``/``--lparam-hex`` pass bytes instead (a
  pointer parameter, as winipc carries them).

Output of ``listen`` (stdout carries messages only; status lines go to stderr): one
line per message, or one JSON object per line with ``--json`` (see :func:`_record`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import sys
import zlib
from collections.abc import Callable
from typing import IO, Any

import click

from winipc import errors as W
from winipc._core import atoms
from winipc.cli._common import ErrorReportingGroup, note, print_json, raise_interrupt

_WPARAM_MAX = 2**64 - 1
_LPARAM_MIN, _LPARAM_MAX = -(2**63), 2**63 - 1
_MSG_MAX = 0xFFFF_FFFF
_DEFAULT_CLASS = "winipc-listen"
#: where message numbers with a base name start (WM_USER+n, WM_APP+n)
_BASES = (("WM_USER", 0x0400, 0x8000), ("WM_APP", 0x8000, 0xC000))


def _messages() -> Any:
    """:mod:`winipc.messages`, imported when a command needs it."""
    from winipc import messages

    return messages


# --------------------------------------------------------------------------- names and numbers
def _wm_names() -> dict[int, str]:
    """Message number -> WM_ name, from the constants of :mod:`winipc.messages`."""
    M = _messages()
    out: dict[int, str] = {}
    for name in sorted(dir(M)):
        value = getattr(M, name)
        if name.startswith("WM_") and isinstance(value, int) and not isinstance(value, bool):
            out.setdefault(value, name)
    return out


def message_name(msg: int) -> str:
    """``WM_CLOSE``, ``WM_USER+5``, ``WM_APP+1``, ``"my message"`` (a registered one) or
    ``0x1234``: how ``listen`` names a message number."""
    known = _wm_names().get(msg)
    if known is not None:
        return known
    for base, lo, hi in _BASES:
        if lo < msg < hi:
            return f"{base}+{msg - lo}"
    if 0xC000 <= msg <= 0xFFFF:
        try:
            return json.dumps(atoms.name_of(msg), ensure_ascii=False)
        except W.WinIPCError:
            pass
    return f"0x{msg:04X}"


def _number(text: str, what: str, lo: int, hi: int) -> int:
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number (decimal or 0x hex)", param_hint=what) from None
    if not lo <= value <= hi:
        raise click.BadParameter(f"{value} is out of range ({lo}..{hi:#x})", param_hint=what)
    return value


def parse_message(text: str) -> int:
    """MSG as a number, a WM_ name or NAME+N (``WM_USER+5``); names ignore case.

    Raises:
        click.BadParameter: neither a number nor a known WM_ name.
    """
    head, plus, tail = text.strip().partition("+")
    if head[:1].isdigit():
        return _number(text, "MSG", 0, _MSG_MAX)
    by_name = {name: value for value, name in _wm_names().items()}
    for name in dir(_messages()):
        if name.startswith("WM_"):
            by_name[name] = getattr(_messages(), name)
    value = by_name.get(head.strip().upper())
    if value is None:
        raise click.BadParameter(
            f"{text!r} is not a number or a WM_ name (WM_CLOSE, WM_USER+1, ...); for a "
            "registered message use --register NAME",
            param_hint="MSG",
        )
    offset = _number(tail, "MSG", 0, _MSG_MAX) if plus else 0
    if value + offset > _MSG_MAX:
        raise click.BadParameter(f"{text} is above 0xFFFFFFFF", param_hint="MSG")
    return int(value) + offset


def parse_hwnd(text: str) -> int:
    """HWND as a number or ``broadcast`` (HWND_BROADCAST)."""
    if text.strip().lower() in ("broadcast", "hwnd_broadcast"):
        return int(_messages().HWND_BROADCAST)
    return _number(text, "HWND", 1, 0xFFFF_FFFF)


def _find_target(class_name: str | None, title: str | None) -> int:
    """The window ``--class``/``--title`` name: a top-level one, else a message-only one."""
    M = _messages()
    hwnd = M.find_window(class_name, title)
    if hwnd is None:
        hwnd = M.find_window_ex(M.HWND_MESSAGE, None, class_name, title)
    if hwnd is None:
        what = " and ".join(
            f"{k} {v!r}" for k, v in (("class", class_name), ("title", title)) if v is not None
        )
        raise W.InvalidWindowHandle(f"no window with {what} (top-level or message-only)", funcname="FindWindow")
    return int(hwnd)


# --------------------------------------------------------------------------- find
def _windows(class_name: str | None, title: str | None, message_only: bool) -> list[Any]:
    """WindowInfo of every window that matches, top-level ones first."""
    M = _messages()
    parents: list[int | None] = [M.HWND_MESSAGE] if message_only else [None, M.HWND_MESSAGE]
    out: list[Any] = []
    seen: set[int] = set()
    for parent in parents:
        after: int | None = None
        while True:
            hwnd = M.find_window_ex(parent, after, class_name, title)
            if hwnd is None or hwnd in seen:
                break
            seen.add(hwnd)
            after = hwnd
            with contextlib.suppress(W.InvalidWindowHandle):  # gone since it was found
                out.append(M.window_info(hwnd))
    return out


def _info_json(info: Any) -> dict[str, Any]:
    return {
        "hwnd": info.hwnd,
        "class": info.class_name,
        "title": info.title,
        "pid": info.pid,
        "tid": info.tid,
        "uid": info.uid,
        "message_only": info.message_only,
    }


def _safe(text: str) -> str:
    """Text from another process, without control characters for the terminal."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _print_table(header: list[str], rows: list[list[str]], right: set[int]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i, title in enumerate(header):
        table.add_column(title, justify="right" if i in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    if sys.stdout.isatty():
        Console().print(table)
        return
    buf = io.StringIO()
    Console(file=buf, width=100_000, no_color=True, highlight=False).print(table)
    click.echo("\n".join(line.rstrip() for line in buf.getvalue().splitlines()))


@click.group("msg", cls=ErrorReportingGroup)
def msg_group() -> None:
    """Window messages: find windows, send or post a message, listen on a window.

    HWND is a number (0x1A2B4) or "broadcast"; MSG a number, a WM_ name (WM_CLOSE,
    WM_USER+1) or --register NAME (RegisterWindowMessage).
    """


@msg_group.command("find")
@click.option("--class", "class_name", metavar="CLASS", help="Only windows of this class (any case).")
@click.option("--title", metavar="TITLE", help="Only windows with this title (any case).")
@click.option("--message-only", is_flag=True, help="Only message-only windows (parent HWND_MESSAGE).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def find_cmd(class_name: str | None, title: str | None, message_only: bool, as_json: bool) -> None:
    """List the windows you may reach: top-level ones, then message-only ones.

    For each: HWND, class, title, owning process and thread, and whether it is
    message-only. --class and --title match whole strings, ignoring case (FindWindowEx).
    """
    infos = _windows(class_name, title, message_only)
    if as_json:
        print_json([_info_json(i) for i in infos])
        return
    if not infos:
        click.echo("no windows", err=True)
        return
    rows = [
        [
            f"0x{i.hwnd:X}",
            _safe(i.class_name),
            _safe(i.title),
            str(i.pid),
            str(i.tid),
            "yes" if i.message_only else "no",
        ]
        for i in infos
    ]
    _print_table(["HWND", "CLASS", "TITLE", "PID", "TID", "MESSAGE-ONLY"], rows, {3, 4})


# --------------------------------------------------------------------------- send, post
def _target_and_params(
    args: tuple[str, ...],
    class_name: str | None,
    title: str | None,
    register: str | None,
    copydata: bool,
    lparam_bytes: bytes | None,
) -> tuple[int, int, int, int | bytes]:
    """(hwnd, msg, wparam, lparam) from the positional arguments and the options."""
    rest = list(args)
    if class_name is not None or title is not None:
        hwnd = _find_target(class_name, title)
    else:
        if not rest:
            raise click.UsageError("give HWND, or --class/--title to find the window")
        hwnd = parse_hwnd(rest.pop(0))
    if copydata:
        if register is not None:
            raise click.UsageError("--copydata sends WM_COPYDATA: --register does not apply")
        if rest:
            raise click.UsageError(f"--copydata sends WM_COPYDATA: unexpected {' '.join(rest)!r}")
        return hwnd, int(_messages().WM_COPYDATA), 0, 0
    if register is not None:
        msg = int(_messages().register_window_message(register))
    elif rest:
        msg = parse_message(rest.pop(0))
    else:
        raise click.UsageError("give MSG (a number or a WM_ name) or --register NAME")
    wparam = _number(rest.pop(0), "WPARAM", 0, _WPARAM_MAX) if rest else 0
    lparam: int | bytes = 0
    if rest:
        if lparam_bytes is not None:
            raise click.UsageError("give LPARAM or --lparam-text/--lparam-hex, not both")
        lparam = _number(rest.pop(0), "LPARAM", _LPARAM_MIN, _LPARAM_MAX)
    elif lparam_bytes is not None:
        lparam = lparam_bytes
    if rest:
        raise click.UsageError(f"unexpected extra arguments: {' '.join(rest)!r}")
    return hwnd, msg, wparam, lparam


def _lparam_bytes(text: str | None, hexdigits: str | None) -> bytes | None:
    if text is not None and hexdigits is not None:
        raise click.UsageError("--lparam-text and --lparam-hex: one of them")
    if text is not None:
        return text.encode("utf-8", "surrogateescape")
    if hexdigits is not None:
        try:
            return bytes.fromhex(hexdigits)
        except ValueError:
            raise click.BadParameter(
                f"{hexdigits!r} is not hex digits (pairs, spaces allowed)", param_hint="--lparam-hex"
            ) from None
    return None


def _target_options(fn: Callable[..., None]) -> Callable[..., None]:
    for deco in reversed(
        [
            click.argument("args", nargs=-1, metavar="[HWND] [MSG] [WPARAM] [LPARAM]"),
            click.option("--class", "class_name", metavar="CLASS", help="Find the window by class (instead of HWND)."),
            click.option("--title", metavar="TITLE", help="Find the window by title (instead of HWND)."),
            click.option("--register", metavar="NAME", help="MSG is RegisterWindowMessage(NAME) (leave MSG out)."),
            click.option("--lparam-text", metavar="TEXT", help="LPARAM is these bytes (UTF-8), as a pointer parameter."),
            click.option("--lparam-hex", metavar="HEX", help="LPARAM is these bytes (hex digits), as a pointer parameter."),
        ]
    ):
        fn = deco(fn)
    return fn


@msg_group.command("send")
@_target_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="SendMessageTimeout: give up after SECONDS (ERROR_TIMEOUT, exit status 1).",
)
@click.option(
    "--abort-if-hung",
    is_flag=True,
    help="SMTO_ABORTIFHUNG: fail at once when the window's thread is hung (has not "
    "retrieved messages for a while); without --timeout, never time out otherwise.",
)
@click.option(
    "--copydata",
    type=click.File("rb"),
    metavar="FILE",
    help="Send WM_COPYDATA with the bytes of FILE (- for stdin) instead of MSG.",
)
@click.option(
    "--dwdata",
    default="0",
    metavar="N",
    show_default=True,
    help="With --copydata: the COPYDATASTRUCT's dwData (0..2**64-1).",
)
def send_cmd(
    args: tuple[str, ...],
    class_name: str | None,
    title: str | None,
    register: str | None,
    lparam_text: str | None,
    lparam_hex: str | None,
    timeout: float | None,
    abort_if_hung: bool,
    copydata: IO[bytes] | None,
    dwdata: str,
) -> None:
    """Send a message and print the window procedure's result (LRESULT, a number).

    \b
    winipc msg send 0x1A2B4 WM_USER+1 5 7
    winipc msg send --class MyApp --register "my message" 1
    winipc msg send --class MyApp --copydata report.json --dwdata 3

    Waits until the window procedure returns (SendMessage), at most SECONDS with
    --timeout (SendMessageTimeout). Failures exit with status 1 and the Win32 error:
    ERROR_INVALID_WINDOW_HANDLE (no such window, or it was destroyed during the call),
    ERROR_TIMEOUT (time-out, or a hung window with --abort-if-hung), ERROR_ACCESS_DENIED
    (the window's security refuses you). A send to "broadcast" prints 0.
    """
    M = _messages()
    hwnd, msg, wparam, lparam = _target_and_params(
        args, class_name, title, register, copydata is not None, _lparam_bytes(lparam_text, lparam_hex)
    )
    if copydata is not None:
        data = copydata.read()
        dw = _number(dwdata, "--dwdata", 0, _WPARAM_MAX)
        if abort_if_hung:
            raise click.UsageError("--abort-if-hung does not apply to --copydata (use --timeout)")
        result = M.send_copydata(hwnd, dw, data, timeout=timeout)
    elif timeout is None and not abort_if_hung:
        result = M.send_message(hwnd, msg, wparam, lparam)
    else:
        flags = M.SMTO_NORMAL
        if abort_if_hung:
            flags |= M.SMTO_ABORTIFHUNG
        if timeout is None:  # abort if hung, else wait as long as it takes
            flags |= M.SMTO_NOTIMEOUTIFNOTHUNG
            timeout = float(M.HUNG_TIMEOUT)
        result = M.send_message_timeout(hwnd, msg, wparam, lparam, flags, timeout)
    click.echo(str(int(result)))


@msg_group.command("post")
@_target_options
def post_cmd(
    args: tuple[str, ...],
    class_name: str | None,
    title: str | None,
    register: str | None,
    lparam_text: str | None,
    lparam_hex: str | None,
) -> None:
    """Post a message to a window's queue and return at once (PostMessage).

    \b
    winipc msg post 0x1A2B4 WM_CLOSE
    winipc msg post broadcast --register "settings changed"

    Prints nothing. Failures exit with status 1 and the Win32 error
    (ERROR_INVALID_WINDOW_HANDLE, ERROR_ACCESS_DENIED, ...).
    """
    hwnd, msg, wparam, lparam = _target_and_params(
        args, class_name, title, register, False, _lparam_bytes(lparam_text, lparam_hex)
    )
    _messages().post_message(hwnd, msg, wparam, lparam)


# --------------------------------------------------------------------------- listen
def _printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\t\n" for ch in text.replace("\r\n", "\n"))


def _bytes_text(data: bytes) -> str:
    """``'text'`` when the bytes are printable UTF-8, else ``hex: 00 ff``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _printable(text):
        return json.dumps(text, ensure_ascii=False)
    return "hex: " + data.hex(" ")


def _bytes_fields(prefix: str, data: bytes, dump: bool) -> dict[str, Any]:
    out: dict[str, Any] = {f"{prefix}size": len(data), f"{prefix}crc32": f"{zlib.crc32(data):08x}"}
    if dump:
        try:
            out[f"{prefix}data"] = data.decode("utf-8")
        except UnicodeDecodeError:
            out[f"{prefix}data_b64"] = base64.b64encode(data).decode("ascii")
    return out


def _record(
    hwnd: int, msg: int, wparam: int, lparam: Any, posted: Any | None, dump: bool
) -> dict[str, Any]:
    """What ``listen --json`` prints for one message.

    Keys: ``hwnd`` (the listening window), ``msg`` (number), ``name`` (as
    :func:`message_name`), ``wparam``, ``kind`` (``sent`` or ``posted``), ``sender_pid``
    (posted messages and WM_COPYDATA; else null); ``lparam`` (a number, or null when it
    carries bytes: then ``lparam_size`` and ``lparam_crc32``, and with --dump
    ``lparam_data`` (UTF-8 text) or ``lparam_data_b64``); for WM_COPYDATA ``dwdata``,
    ``sender_hwnd``, ``sender_uid``, ``size``, ``crc32`` and with --dump ``data`` or
    ``data_b64``.
    """
    M = _messages()
    rec: dict[str, Any] = {
        "hwnd": hwnd,
        "msg": msg,
        "name": message_name(msg),
        "wparam": wparam,
        "kind": "posted" if posted is not None else "sent",
        "sender_pid": getattr(posted, "sender_pid", None),
    }
    if msg == M.WM_COPYDATA and hasattr(lparam, "dwdata"):
        rec["lparam"] = None
        rec.update(
            dwdata=int(lparam.dwdata),
            sender_hwnd=getattr(lparam, "sender_hwnd", None),
            sender_pid=getattr(lparam, "sender_pid", None),
            sender_uid=getattr(lparam, "sender_uid", None),
        )
        rec.update(_bytes_fields("", bytes(lparam.data), dump))
    elif isinstance(lparam, (bytes, bytearray, memoryview)):
        rec["lparam"] = None
        rec.update(_bytes_fields("lparam_", bytes(lparam), dump))
    else:
        rec["lparam"] = int(lparam) if isinstance(lparam, int) else None
    return rec


def _line(rec: dict[str, Any], lparam: Any, dump: bool) -> str:
    """The text line ``listen`` prints for one message."""
    head = f"{rec['name']} (0x{rec['msg']:04X})"
    sender = f" from pid {rec['sender_pid']}" if rec.get("sender_pid") is not None else ""
    if "dwdata" in rec:
        who = f" from hwnd 0x{rec['sender_hwnd']:X}" if rec.get("sender_hwnd") else ""
        text = f"{head} {rec['kind']}{who}{sender}: dwdata={rec['dwdata']} size={rec['size']} crc32={rec['crc32']}"
        if dump:
            text += " data=" + _bytes_text(bytes(lparam.data))
        return text
    text = f"{head} {rec['kind']}{sender}: wparam={rec['wparam']}"
    if rec["lparam"] is not None:
        return text + f" lparam={rec['lparam']}"
    if "lparam_size" in rec:
        text += f" lparam={rec['lparam_size']} bytes crc32={rec['lparam_crc32']}"
        if dump:
            text += " " + _bytes_text(bytes(lparam))
        return text
    return text + f" lparam={lparam!r}"


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@msg_group.command("listen")
@click.option("--class", "class_name", default=_DEFAULT_CLASS, show_default=True, metavar="CLASS",
              help="The window class to register and create the window with.")
@click.option("--title", default="", metavar="TITLE", help="The window's title.")
@click.option("--message-only", is_flag=True,
              help="A message-only window (parent HWND_MESSAGE): found only with --message-only, no broadcasts.")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Exit after N messages.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@click.option("--dump", is_flag=True, help="Show the bytes of WM_COPYDATA and byte LPARAMs, not only size and CRC-32.")
def listen_cmd(
    class_name: str, title: str, message_only: bool, count: int | None, as_json: bool, dump: bool
) -> None:
    """Create a window and print every message it receives; every one is answered 0.

    The first line on stderr is "listening HWND" (the window's handle, in hex). One line
    per message on stdout: its name and number, sent or posted (and by which process),
    WPARAM and LPARAM; WM_COPYDATA with dwData, the sender, the size and a CRC-32 of the
    data (the data itself with --dump). Ends on WM_CLOSE, WM_QUIT, N messages (--count),
    Ctrl-C or SIGTERM (exit status 0); the window is destroyed then.
    """
    M = _messages()
    out = sys.stdout.buffer
    state: dict[str, Any] = {"ready": False, "stop": False, "seen": 0, "posted": None}

    def emit(hwnd: int, msg: int, wparam: int, lparam: Any) -> None:
        posted = state["posted"]
        if posted is not None and (posted.message != msg or posted.hwnd != hwnd):
            posted = None
        rec = _record(hwnd, msg, wparam, lparam, posted, dump)
        line = json.dumps(rec, ensure_ascii=False) if as_json else _line(rec, lparam, dump)
        try:
            out.write(line.encode("utf-8", "backslashreplace") + b"\n")
            out.flush()
        except BrokenPipeError:
            _silence_stdout()
            stop()
            return
        state["seen"] += 1
        if count is not None and state["seen"] >= count:
            stop()

    def stop() -> None:
        if not state["stop"]:
            state["stop"] = True
            M.post_quit_message(0)

    def wndproc(hwnd: int, msg: int, wparam: int, lparam: Any) -> int:
        if not state["ready"] or state["stop"]:
            return 0  # our own WM_CREATE / WM_DESTROY, or after the end
        emit(hwnd, msg, wparam, lparam)
        if msg == M.WM_CLOSE:
            stop()
        return 0

    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    M.register_class(class_name, wndproc)
    window: Any = None
    try:
        window = M.create_window(
            class_name, title, parent=M.HWND_MESSAGE if message_only else None, wndproc=wndproc
        )
        state["ready"] = True
        note(f"listening 0x{window.hwnd:X}")
        while True:
            m = M.get_message()
            if m.message == M.WM_QUIT:
                if not state["stop"]:  # someone else's WM_QUIT
                    state["posted"] = m
                    emit(m.hwnd, m.message, m.wparam, m.lparam)
                break
            state["posted"] = m
            try:
                M.dispatch_message(m)
            finally:
                state["posted"] = None
    except KeyboardInterrupt:
        note("stopping")
    finally:
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            state["stop"] = True
            if window is not None:
                window.destroy()
            M.unregister_class(class_name)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
