"""``winipc queue``: MSMQ-style message queues (:mod:`winipc.msmq`) from the shell.

``create``, ``delete``, ``purge``, ``ls``, ``send``, ``receive``, ``peek``, ``stat`` and
``integrity`` stand for MQCreateQueue, MQDeleteQueue, MQPurgeQueue, MQMgmtGetInfo,
MQSendMessage, MQReceiveMessage (receive and peek), MQMgmtGetInfo again and a check of
the queue file. PATH is a queue path name (``.\\private$\\orders``), a format name
(``DIRECT=OS:.\\private$\\orders``, with ``;journal``, ``;poison`` or ``;deadletter``), a
NATS queue (``nats://host:4222/orders``) or a bare NAME, which means ``.\\private$\\NAME``
(so that a shell needs no backslashes).

Output: stdout carries what was asked for (a body, an id, a count, JSON); status lines
go to stderr. Failures of the queue print ``error: [0xC00E0003 MQ_ERROR_QUEUE_NOT_FOUND]
...`` on stderr and exit with status 1 (a receive or peek that times out too, as waits
do in the other groups); bad arguments exit with status 2.

A body is printed as its text when it is UTF-8 and printable (tabs and line breaks
allowed), else as ``hex: `` and its bytes in hex, so that a message cannot send control
sequences to the terminal; a msgpack body (``--json-body``) is printed as JSON.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import signal
import sys
import warnings
from collections.abc import Iterator
from typing import IO, Any

import click

from winipc import errors as W
from winipc import msmq
from winipc.cli._common import ErrorReportingGroup, Failure, note, print_json, raise_interrupt

_JSON_INDENT = 2


def queue_path(text: str) -> str:
    """The queue a PATH argument names: a bare NAME is ``.\\private$\\NAME``."""
    if "\\" in text or "://" in text or "=" in text:
        return text
    return ".\\private$\\" + text


def _printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\t\n" for ch in text.replace("\r\n", "\n"))


def _bytes_text(data: bytes) -> str:
    """A bytes body as a line: its text when UTF-8 and printable, else ``hex: ..``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _printable(text):
        return text.removesuffix("\n")
    return "hex: " + data.hex(" ")


def _jsonable(value: Any) -> Any:
    """A msgpack value as JSON: bytes become hex strings, map keys strings."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def body_json(m: msmq.Message) -> dict[str, Any]:
    """The body of ``m`` for ``--json``: ``body`` and how to read it, ``body_encoding``:
    ``"utf-8"`` (bytes that are UTF-8 text), ``"hex"`` (other bytes) or ``"msgpack"``
    (a msgpack value, as JSON; bytes inside it as hex strings)."""
    if isinstance(m.body, (bytes, bytearray, memoryview)):
        data = bytes(m.body)
        try:
            return {"body": data.decode("utf-8"), "body_encoding": "utf-8", "size": len(data)}
        except UnicodeDecodeError:
            return {"body": data.hex(), "body_encoding": "hex", "size": len(data)}
    return {"body": _jsonable(m.body), "body_encoding": "msgpack"}


def body_text(m: msmq.Message) -> str:
    """The body of ``m`` as the line ``receive`` and ``peek`` print."""
    if isinstance(m.body, (bytes, bytearray, memoryview)):
        return _bytes_text(bytes(m.body))
    return json.dumps(_jsonable(m.body), ensure_ascii=False)


def _when(ts: float) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _quota(q: int | None) -> str:
    return "none" if q is None else f"{q:,} B"


def _print_table(table: Any) -> None:
    from rich.console import Console

    if sys.stdout.isatty():
        Console().print(table)
        return
    # into a pipe or a file: never cut a path, no trailing blanks
    buf = io.StringIO()
    Console(file=buf, width=100_000, no_color=True, highlight=False).print(table)
    click.echo("\n".join(line.rstrip() for line in buf.getvalue().splitlines()))


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a waiting command like Ctrl-C does (its queue handle is closed)."""
    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _check_label(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and len(value) > msmq.MAX_LABEL:
        raise click.BadParameter(
            f"{len(value)} characters, at most {msmq.MAX_LABEL} (MQ_MAX_MSG_LABEL_LEN)"
        )
    return value


@click.group("queue", cls=ErrorReportingGroup)
def queue_group() -> None:
    """Message queues (MSMQ): create, send, receive, peek, inspect.

    PATH is .\\private$\\NAME (or just NAME), .\\NAME, a format name
    (DIRECT=OS:.\\private$\\NAME, with ;journal, ;poison or ;deadletter) or
    nats://host:4222/NAME for a queue on a NATS JetStream server.
    """


# --------------------------------------------------------------------------- create, delete


@queue_group.command("create")
@click.argument("path")
@click.option("--transactional", is_flag=True, help="Sends need a transaction (MQ_TRANSACTIONAL).")
@click.option("--label", default="", metavar="L", help="The queue's label (PROPID_Q_LABEL).")
@click.option(
    "--quota",
    type=click.IntRange(min=0),
    metavar="BYTES",
    help="Bytes of message bodies the queue may hold (PROPID_Q_QUOTA); default: no limit.",
)
@click.option("--journal", is_flag=True, help="Keep a copy of each received message in PATH;journal.")
@click.option(
    "--max-aborts",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    metavar="N",
    help="A message whose transactional receive aborted more than N times moves to PATH;poison.",
)
def create_cmd(
    path: str, transactional: bool, label: str, quota: int | None, journal: bool, max_aborts: int
) -> None:
    """Create the queue PATH (MQCreateQueue), private to you.

    Fails with MQ_ERROR_QUEUE_EXISTS when it exists. Prints nothing on stdout; the
    format name goes to stderr.
    """
    info = msmq.create_queue(
        queue_path(path),
        transactional=transactional,
        label=label,
        quota=quota,
        journal=journal,
        max_aborts=max_aborts,
    )
    note(f"created {info.format_name}")


@queue_group.command("delete")
@click.argument("path")
def delete_cmd(path: str) -> None:
    """Delete the queue PATH and its messages (MQDeleteQueue)."""
    msmq.delete_queue(queue_path(path))


@queue_group.command("purge")
@click.argument("path")
def purge_cmd(path: str) -> None:
    """Remove every ready message of PATH (MQPurgeQueue); prints how many."""
    click.echo(str(msmq.purge_queue(queue_path(path))))


# --------------------------------------------------------------------------- send


def _body(
    body: str | None, as_hex: bool, source: IO[bytes] | None, json_body: bool
) -> Any:
    if (body is None) == (source is None):
        raise click.UsageError("give BODY or --file PATH (one of them)")
    if as_hex and (source is not None or json_body):
        raise click.UsageError("--hex applies to BODY alone (not with --file or --json-body)")
    if source is not None:
        data = source.read()
    elif as_hex:
        assert body is not None
        try:
            return bytes.fromhex(body)
        except ValueError:
            raise click.BadParameter(
                f"{body!r} is not hex digits (pairs, spaces allowed)", param_hint="BODY"
            ) from None
    else:
        assert body is not None
        data = body.encode("utf-8", "surrogateescape")  # argv's own bytes
    if not json_body:
        return data
    try:
        return json.loads(data)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--json-body") from None


@queue_group.command("send")
@click.argument("path")
@click.argument("body", required=False)
@click.option("--label", callback=_check_label, metavar="L", help="The message's label.")
@click.option(
    "--priority",
    type=click.IntRange(msmq.MIN_PRIORITY, msmq.MAX_PRIORITY),
    default=msmq.DEFAULT_PRIORITY,
    show_default=True,
    help="0..7, higher first (transactional queues ignore it, as MSMQ does).",
)
@click.option(
    "--express/--recoverable",
    default=False,
    help="Express: not waiting for the disk (lost if the machine crashes). "
    "Default: recoverable, on disk before send returns.",
)
@click.option("--correlation-id", metavar="ID", help="PROPID_M_CORRELATIONID.")
@click.option("--hex", "as_hex", is_flag=True, help="BODY is hex digits (spaces allowed), sent as those bytes.")
@click.option(
    "--file",
    "source",
    type=click.File("rb"),
    metavar="F",
    help="Send the contents of F (- for stdin) as the body, instead of BODY.",
)
@click.option(
    "--json-body",
    is_flag=True,
    help="BODY (or F) is JSON, sent as a msgpack value (receivers get the value back).",
)
def send_cmd(
    path: str,
    body: str | None,
    label: str | None,
    priority: int,
    express: bool,
    correlation_id: str | None,
    as_hex: bool,
    source: IO[bytes] | None,
    json_body: bool,
) -> None:
    """Send one message to PATH (MQSendMessage) and print its id.

    BODY is text, sent as UTF-8 bytes. To a transactional queue the message is its own
    transaction (MQ_SINGLE_MESSAGE). Warnings of the queue (a NATS server that does not
    sync recoverable messages) print as "warning: ..." on stderr.
    """
    value = _body(body, as_hex, source, json_body)
    props: dict[str, Any] = {
        "priority": priority,
        "delivery": msmq.Delivery.EXPRESS if express else msmq.Delivery.RECOVERABLE,
    }
    if label is not None:
        props["label"] = label
    if correlation_id is not None:
        props["correlation_id"] = correlation_id
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # e.g. NATS: "recoverable is not on disk": said plainly
        with msmq.open(queue_path(path), "send") as q:
            tx = msmq.SINGLE_MESSAGE if q.transactional else None
            sent = q.send(value, transaction=tx, **props)
    for w in caught:
        note(f"warning: {w.message}")
    click.echo(sent.id)


# --------------------------------------------------------------------------- receive, peek


def _show(m: msmq.Message, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps({**body_json(m), "properties": m.properties()}, indent=_JSON_INDENT, ensure_ascii=False)
        )
    else:
        sys.stdout.buffer.write(body_text(m).encode("utf-8", "backslashreplace") + b"\n")
        sys.stdout.buffer.flush()


def _take(path: str, timeout: float | None, as_json: bool, *, peek: bool) -> None:
    full = queue_path(path)
    with _sigterm_as_interrupt(), msmq.open(full, "receive" if not peek else "peek") as q:
        try:
            m = q.peek(timeout) if peek else q.receive(timeout)
        except W.IoTimeout:
            raise W.IoTimeout(f"no message in {full} within {timeout:g} s") from None
    _show(m, as_json)


_timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Give up after SECONDS (MQ_ERROR_IO_TIMEOUT, exit status 1); 0 only looks. "
    "Default: wait until a message comes.",
)
_json_option = click.option(
    "--json", "as_json", is_flag=True, help="The body and every message property as JSON."
)


@queue_group.command("receive")
@click.argument("path")
@_timeout_option
@_json_option
def receive_cmd(path: str, timeout: float | None, as_json: bool) -> None:
    """Take the first message of PATH (highest priority, then oldest) and print it.

    From a transactional queue it is a receive without a transaction (MQ_NO_TRANSACTION:
    the message is gone once printed). With --json: "body",
    "body_encoding" (utf-8, hex or msgpack) and "properties" (id, label, priority,
    correlation_id, times in seconds since the epoch, ...).
    """
    _take(path, timeout, as_json, peek=False)


@queue_group.command("peek")
@click.argument("path")
@_timeout_option
@_json_option
def peek_cmd(path: str, timeout: float | None, as_json: bool) -> None:
    """Print the first message of PATH and leave it in the queue (as receive prints it)."""
    _take(path, timeout, as_json, peek=True)


# --------------------------------------------------------------------------- ls, stat, integrity


@queue_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue, in a list.")
@click.option(
    "--nats",
    metavar="URL",
    help="List the queues of this NATS server (nats://host:4222) instead of this machine's.",
)
def ls_cmd(as_json: bool, nats: str | None) -> None:
    """List the queues of this machine's store (or of a NATS server)."""
    infos = msmq.list_queues(nats)
    if as_json:
        print_json([i.to_json() for i in infos])
        return
    if not infos:
        note("no queues")
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("PATH", overflow="fold")
    table.add_column("LABEL", overflow="fold")
    for col in ("TRANSACTIONAL", "JOURNAL", "QUOTA", "CREATED", "BACKEND"):
        table.add_column(col)
    for i in infos:
        table.add_row(
            Text(i.path),
            Text(i.label),
            "yes" if i.transactional else "no",
            "yes" if i.journal else "no",
            _quota(i.quota),
            _when(i.created),
            i.backend,
        )
    _print_table(table)


def _stat_lines(st: msmq.QueueStat) -> list[tuple[str, str]]:
    i = st.info
    return [
        ("path", i.path),
        ("format name", i.format_name),
        ("backend", i.backend),
        ("label", i.label),
        ("transactional", "yes" if i.transactional else "no"),
        ("messages", f"{st.messages:,}"),
        ("bytes", f"{st.bytes:,}"),
        ("locked", f"{st.locked:,} (received in open transactions)"),
        ("quota", _quota(i.quota)),
        ("journal", ("on" if i.journal else "off") + f", {st.journal_messages:,} messages"),
        ("journal quota", _quota(i.journal_quota)),
        ("poison messages", f"{st.poison_messages:,} (max aborts {i.max_aborts})"),
        ("dead-letter messages", f"{st.deadletter_messages:,}"),
        ("created", _when(i.created)),
        ("durability", st.durability or "-"),
    ]


@queue_group.command("stat")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="The counts and properties as JSON.")
def stat_cmd(path: str, as_json: bool) -> None:
    """Counts, bytes and properties of PATH, and what "recoverable" means on its backend."""
    with msmq.open(queue_path(path), "peek") as q:
        st = q.stat()
    if as_json:
        print_json(st.to_json())
        return
    lines = _stat_lines(st)
    width = max(len(k) for k, _v in lines)
    for key, value in lines:
        click.echo(f"{key + ':':{width + 1}} {value}")
    if not st.recoverable_is_durable:
        note("note: recoverable messages on this queue are NOT on disk when send returns")


@queue_group.command("integrity")
@click.argument("path")
def integrity_cmd(path: str) -> None:
    """Check the file of the local queue PATH (SQLite's integrity_check and every
    record's checksum): exit 0 when clean, else list the problems and exit 1."""
    full = queue_path(path)
    problems = msmq.integrity_check(full)
    if not problems:
        note(f"{full}: clean")
        return
    for p in problems:
        click.echo(p)
    raise Failure(f"{full}: {len(problems)} problem(s) found")
