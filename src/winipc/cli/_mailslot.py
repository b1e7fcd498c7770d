"""``winipc mailslot read|write``: mailslots from the shell.

``read`` creates the mailslot (CreateMailslot) and prints every message as it comes, so
it lives as long as the command runs; ``write`` opens a mailslot by name (CreateFile),
sends one message (WriteFile) and exits. Names are ``\\\\.\\mailslot\\NAME`` (or a bare
NAME) for this machine, and for ``write`` also ``\\\\HOST\\mailslot\\NAME`` (one host)
and ``\\\\*\\mailslot\\NAME`` (every host, at most 424 bytes).

Output of ``read`` (stdout carries messages only; status lines go to stderr):

* one message per line: its text when it is UTF-8 and printable (tabs and line breaks
  allowed), else ``hex: `` and its bytes in hex (``hex: 00 ff 1b``), so that a message
  from another host cannot send control sequences to the terminal;
* with ``--json``, one JSON object per line (see :func:`_as_json`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sys
from typing import IO, Any

import click

from winipc import errors as W
from winipc._core.names import mailslot_name
from winipc._wire import mailslot as wire
from winipc.cli._common import ErrorReportingGroup, note, raise_interrupt
from winipc.mailslots import Mailslot, MailslotMessage, write_mailslot

_IDLE = 3600.0  # a finite wait per read; the loop just waits again
_DWORD_MAX = 0xFFFF_FFFF




def _printable(text: str) -> bool:
    """Text a terminal shows as it is: no control characters but tab and line breaks."""
    return all(ch.isprintable() or ch in "\t\n" for ch in text.replace("\r\n", "\n"))


def _as_text(data: bytes) -> str:
    """The line ``read`` prints for a message (without its line ending)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _printable(text):
        return text.removesuffix("\n")
    return "hex: " + data.hex(" ")


def _as_json(msg: MailslotMessage) -> str:
    """The JSON line ``read --json`` prints for a message.

    Keys: ``data`` (the message as text, when it is UTF-8) or ``data_b64`` (base64
    otherwise), ``size`` (bytes), ``sender_pid``, ``sender_uid`` (checked by the kernel
    for local writers; null for network ones), ``sender_host`` (null for local
    writers), ``address`` (``[ip, port]`` of a UDP sender, else null) and ``transport``
    (``local``, ``udp`` or ``nats``).
    """
    record: dict[str, Any] = {}
    try:
        record["data"] = msg.data.decode("utf-8")
    except UnicodeDecodeError:
        record["data_b64"] = base64.b64encode(msg.data).decode("ascii")
    record.update(
        size=len(msg.data),
        sender_pid=msg.sender_pid,
        sender_uid=msg.sender_uid,
        sender_host=msg.sender_host,
        address=list(msg.address) if msg.address is not None else None,
        transport=msg.transport,
    )
    return json.dumps(record, ensure_ascii=False)


def _emit(stream: IO[bytes], line: str) -> None:
    stream.write(line.encode("utf-8", "backslashreplace") + b"\n")
    stream.flush()


def _silence_stdout() -> None:
    """After stdout's reader went away: send the rest (and Python's final flush) nowhere."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@click.group("mailslot", cls=ErrorReportingGroup)
def mailslot_group() -> None:
    """Mailslots: read one (create it and print what arrives) or write to one.

    NAME is \\\\.\\mailslot\\NAME or just NAME; write also takes \\\\HOST\\mailslot\\NAME
    (one host) and \\\\*\\mailslot\\NAME (every host).
    """


@mailslot_group.command("read")
@click.argument("name")
@click.option(
    "--network",
    is_flag=True,
    help="Also take messages from other hosts (UDP, and NATS when configured). "
    "Off by default, as on Windows 11.",
)
@click.option(
    "--nats",
    metavar="URL",
    help="Take network messages through this NATS server (implies --network). "
    "Default: $WINIPC_NATS_URL when --network is given.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Exit after N messages.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Exit (status 0) once SECONDS pass without a message; the wait restarts with "
    "each message. Default: wait until Ctrl-C or SIGTERM.",
)
@click.option(
    "--max-size",
    type=click.IntRange(0, _DWORD_MAX),
    default=0,
    show_default=True,
    metavar="BYTES",
    help="The largest message writers may send (0 = any size); longer ones are refused "
    "to the writer (ERROR_INVALID_PARAMETER) and dropped when they come from the network.",
)
def read_cmd(
    name: str,
    network: bool,
    nats: str | None,
    as_json: bool,
    count: int | None,
    timeout: float | None,
    max_size: int,
) -> None:
    """Create the mailslot NAME and print its messages as they come.

    Runs until Ctrl-C or SIGTERM (exit status 0), N messages (--count) or SECONDS
    without a message (--timeout). The first line on stderr is "listening NAME" (the
    mailslot's full name); stdout carries only the messages. The mailslot disappears
    when the command ends.
    """
    slot = Mailslot(name, max_size, None, accept_network=network or nats is not None, nats_url=nats)
    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        note(f"listening {slot.name}")
        if slot.accept_network:
            port = wire.udp_port(mailslot_name(slot.name).name)
            from winipc._backends.nats import nats_url

            via_nats = nats_url(nats) is not None  # the URL may hold credentials: not shown
            note(f"network: UDP port {port}" + (" and NATS" if via_nats else ""))
        out = sys.stdout.buffer
        received = 0
        while count is None or received < count:
            try:
                msg = slot.read_message(timeout=_IDLE if timeout is None else timeout)
            except W.SemTimeout:
                if timeout is not None:
                    break
                continue
            try:
                _emit(out, _as_json(msg) if as_json else _as_text(msg.data))
            except BrokenPipeError:
                _silence_stdout()
                break
            received += 1
    except KeyboardInterrupt:
        note("stopping")
    finally:
        # a second Ctrl-C or SIGTERM must not cut the close short
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            slot.close()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


@mailslot_group.command("write")
@click.argument("name")
@click.argument("message", required=False)
@click.option(
    "--hex",
    "as_hex",
    is_flag=True,
    help="MESSAGE is hex digits (spaces allowed), sent as those bytes.",
)
@click.option(
    "--file",
    "source",
    type=click.File("rb"),
    metavar="PATH",
    help="Send the contents of PATH (- for stdin) as the message, instead of MESSAGE.",
)
@click.option(
    "--nats",
    metavar="URL",
    help="Send to other hosts through this NATS server. Default: $WINIPC_NATS_URL, else UDP.",
)
def write_cmd(
    name: str, message: str | None, as_hex: bool, source: IO[bytes] | None, nats: str | None
) -> None:
    """Send one message to the mailslot NAME.

    MESSAGE is text, sent as UTF-8 (an empty MESSAGE is a zero-length message). Prints
    nothing on success. Failures exit with status 1 and the Win32 error:
    ERROR_FILE_NOT_FOUND (no mailslot NAME on this machine), ERROR_INVALID_PARAMETER
    (longer than the mailslot takes; nothing is sent), ERROR_ACCESS_DENIED (its security
    refuses you). A message to another host is sent without knowing whether a mailslot
    listens there, as on Windows.
    """
    if (message is None) == (source is None):
        raise click.UsageError("give MESSAGE or --file PATH (one of them)")
    if as_hex and source is not None:
        raise click.UsageError("--hex applies to MESSAGE, not to --file")
    if source is not None:
        data = source.read()
    elif as_hex:
        assert message is not None
        try:
            data = bytes.fromhex(message)
        except ValueError:
            raise click.BadParameter(
                f"{message!r} is not hex digits (pairs, spaces allowed)", param_hint="MESSAGE"
            ) from None
    else:
        assert message is not None
        data = message.encode("utf-8", "surrogateescape")  # argv's own bytes
    write_mailslot(name, data, nats_url=nats)
