"""Which winipc mechanism fits a program: the seeds' questions, a table, bench figures.

Microsoft's "Interprocess communications" overview asks six questions of an application
before it picks an IPC mechanism. :data:`QUESTIONS` holds them, plus two that winipc needs
to rank sensibly (what the exchange is, and whether the partners are children the
program starts):

=============  ==========================================  ============================
question       answers (``Answers`` field: type)            default
=============  ==========================================  ============================
network        other computers or this one (``network``)   ``False`` (this computer)
other OS       partners without winipc / on another OS     ``False``
discovery      partners found implicitly (``discovery``)   ``False``
coupling       ``"loose"`` (any application, a data        ``"tight"``
               format) or ``"tight"`` (specific partners)
performance    ``"latency"``, ``"throughput"``, ``"none"``  ``"none"``
GUI            a window and an event loop (``gui``)         ``False`` (console)
pattern        one of :data:`PATTERNS`                      ``"request-reply"``
related        partners are children it starts             ``False``
=============  ==========================================  ============================

:data:`MECHANISMS` is the table: one :class:`Mechanism` per winipc mechanism, available
or planned, saying what each answer means for it, and which bench scenarios back it (a
later issue adds a mechanism by adding one entry there). :func:`choose` assesses every
entry against the answers: a mechanism that cannot do what was asked is *not suitable*
(with the reasons); the rest get a *fit* (a small integer, higher is better) and are
ordered by fit, then by the bench figure that matters for the performance goal, then by
their place in the table. Planned mechanisms are assessed the same way but listed apart,
never ranked.

Bench figures come from the document ``winipc bench --json`` prints and ``winipc bench``
leaves in :func:`default_cache_path`; :func:`load_document` reads one as untrusted input
(JSON only, every used field type-checked, size capped) and raises
:class:`BenchDocumentError` naming the file when it is malformed. Units: round trips and
wake-ups in µs (``"us"``), throughput in MB/s (10**6 B/s), rates in ``"1/s"``, loss in %.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DEFAULTS",
    "MECHANISMS",
    "PATTERNS",
    "QUESTIONS",
    "Answers",
    "Assessment",
    "BenchDocument",
    "BenchDocumentError",
    "BenchRef",
    "Choice",
    "Figure",
    "Fit",
    "Mechanism",
    "Question",
    "Reason",
    "choose",
    "default_cache_path",
    "load_document",
]

#: what the exchange is; the help text of each
PATTERNS: dict[str, str] = {
    "request-reply": "a client asks, a server answers (calls, queries, commands)",
    "one-way": "messages or notifications to one reader, no reply expected",
    "stream": "a flow of bytes, often bulk data (files, arrays, a child's stdout)",
    "broadcast": "one writer, many readers get the same message",
    "shared-state": "several processes read and write the same data in place",
    "signal": "wake-ups, locks and turns; no data",
    "durable": "messages kept until read, across restarts of either side",
}
#: patterns whose throughput is bytes in bulk (MB/s figures first); the others are messages
BULK_PATTERNS = frozenset({"stream", "shared-state", "durable"})
GOALS = ("latency", "throughput", "none")
COUPLINGS = ("tight", "loose")

Scope = Literal["local", "network"]
State = Literal["available", "planned"]


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Answers:
    """The answers to :data:`QUESTIONS`; the defaults are those of ``--no-input``.

    Attributes:
        network: partners on other computers (True) or on this one only (False).
        other_os: some partners run another operating system or do not use winipc
            (another language, a Windows machine): they need a documented wire format
            or a standard protocol.
        discovery: partners must find each other implicitly, without being told a host
            name or an object name each.
        coupling: ``"loose"``: any application, agreeing only on a data format (cut and
            paste); ``"tight"``: specific applications sharing a protocol.
        pattern: what the exchange is, a key of :data:`PATTERNS`.
        related: the partners are child processes this program starts.
        performance: ``"latency"``, ``"throughput"`` or ``"none"`` (not critical).
        gui: the program has a window and an event loop (True) or is a console
            program (False).
    """

    network: bool = False
    other_os: bool = False
    discovery: bool = False
    coupling: str = "tight"
    pattern: str = "request-reply"
    related: bool = False
    performance: str = "none"
    gui: bool = False

    def __post_init__(self) -> None:
        if self.coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, not {self.coupling!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {tuple(PATTERNS)}, not {self.pattern!r}")
        if self.performance not in GOALS:
            raise ValueError(f"performance must be one of {GOALS}, not {self.performance!r}")

    @property
    def scope(self) -> Scope:
        return "network" if self.network else "local"

    def flags(self) -> list[str]:
        """The command-line flags that give these answers (``["--local", ...]``)."""
        return [q.flag(getattr(self, q.key)) for q in QUESTIONS]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULTS = Answers()


@dataclass(frozen=True)
class Question:
    """One question: its ``Answers`` field, prompt and flags.

    Attributes:
        key: the :class:`Answers` field.
        prompt: the question as asked interactively.
        flags: for a yes/no question, the (yes, no) flags (``("--network", "--local")``);
            for a choice, the one option taking a value (``("--coupling",)``).
        choices: the values of a choice question; empty for yes/no.
        seed: True for the six questions of the Microsoft text, False for winipc's own.
        skip_when_network: not asked when the partners are on other computers.
    """

    key: str
    prompt: str
    flags: tuple[str, ...]
    choices: tuple[str, ...] = ()
    seed: bool = True
    skip_when_network: bool = False

    @property
    def default(self) -> Any:
        return getattr(DEFAULTS, self.key)

    def flag(self, value: Any) -> str:
        """The flag that gives ``value`` (``"--local"``, ``"--coupling tight"``)."""
        if self.choices:
            return f"{self.flags[0]} {value}"
        return self.flags[0] if value else self.flags[1]


QUESTIONS: tuple[Question, ...] = (
    Question(
        "network",
        "Must it talk to programs on other computers (not only this one)?",
        ("--network", "--local"),
    ),
    Question(
        "other_os",
        "May some partners run another operating system or not use winipc "
        "(another language, a Windows machine)?",
        ("--other-os", "--same-os"),
    ),
    Question(
        "discovery",
        "Must it find its partners by itself, without being told where each one is?",
        ("--discovery", "--no-discovery"),
    ),
    Question(
        "coupling",
        "Any application in a general way, agreeing only on a data format like cut and "
        "paste (loose), or specific partners sharing a protocol (tight)?",
        ("--coupling",),
        COUPLINGS,
    ),
    Question(
        "pattern",
        "What is the exchange?\n"
        + "".join(f"  {k:13}  {v}\n" for k, v in PATTERNS.items())
        + "Exchange",
        ("--pattern",),
        tuple(PATTERNS),
        seed=False,
    ),
    Question(
        "related",
        "Are the partners child processes this program starts?",
        ("--related", "--unrelated"),
        seed=False,
        skip_when_network=True,
    ),
    Question(
        "performance",
        "Is performance critical: round-trip latency, throughput, or none?",
        ("--performance",),
        GOALS,
    ),
    Question(
        "gui",
        "Is it a GUI application (a window and an event loop) rather than a console one?",
        ("--gui", "--console"),
    ),
)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Fit:
    """How well a mechanism does one pattern: 3 made for it, 2 good, 1 possible with work."""

    score: int
    why: str


@dataclass(frozen=True)
class BenchRef:
    """A bench scenario whose figures back a mechanism.

    Attributes:
        scenario: the scenario's name (``"winipc-pipe-message"``); may not be registered
            yet (a coming scenario): its figures are used once a run has them.
        scope: the answer to the network question it speaks for.
        patterns: only for these patterns (empty: all).
    """

    scenario: str
    scope: Scope = "local"
    patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mechanism:
    """One row of the table: what a winipc mechanism does with each answer.

    Attributes:
        key: stable identifier (``"named-pipe-message"``), used in ``--json``.
        title: for humans.
        module: the winipc module.
        state: ``"available"`` now, or ``"planned"``.
        offers: one sentence: what it is (and for a planned one, will be).
        patterns: the patterns it does, with the fit (absent: it cannot).
        network_patterns: overrides of ``patterns`` when the partners are on other
            computers.
        cannot: why it cannot do a pattern absent from ``patterns`` (default: a generic
            sentence).
        network: how it reaches other computers; None: local only.
        network_planned: for a local-only mechanism, how it will reach them (planned).
        foreign: per scope, how a partner without winipc or on another OS takes part;
            absent scope: it cannot.
        discovery: per scope, how partners find each other without being told where;
            absent scope: they must be told.
        related_only: only between a parent and the children it starts.
        coupling: ``"loose"`` and/or ``"tight"``.
        gui: ``"window"``: needs a window and a message loop (a GUI application);
            ``"user"``: made for a user's actions in a GUI; ``"any"``.
        event_loop: how it fits a GUI's event loop without blocking; None: it does not.
        role: ``"transport"`` (moves data or signals) or ``"discovery"`` (finds partners,
            pair it with a transport; suits only when discovery across machines is asked).
        bench: scenarios whose figures back it, in order of preference.
    """

    key: str
    title: str
    module: str
    state: State
    offers: str
    patterns: Mapping[str, Fit]
    network_patterns: Mapping[str, Fit] = field(default_factory=dict)
    cannot: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    network_planned: str | None = None
    foreign: Mapping[str, str] = field(default_factory=dict)
    discovery: Mapping[str, str] = field(default_factory=dict)
    related_only: bool = False
    coupling: frozenset[str] = frozenset({"tight"})
    gui: Literal["any", "window", "user"] = "any"
    event_loop: str | None = None
    role: Literal["transport", "discovery"] = "transport"
    bench: tuple[BenchRef, ...] = ()


_PIPE_COMMON = {
    "broadcast": Fit(1, "point to point: one instance per reader, write to each"),
    "shared-state": Fit(1, "each side keeps its own copy; send it the changes"),
    "signal": Fit(1, "a short write wakes the reader; a named event is lighter"),
}
_PIPE_CANNOT = {"durable": "nothing is kept once the pipe closes (as on Windows)"}
_NAME_LOCAL = "partners open an agreed name (Local\\ per user, Global\\ machine-wide)"
_NO_DATA = "carries no data, only a signal: pair it with a mapping or a pipe"
_ASYNC_WAIT = "wait_any_async() waits for it inside an asyncio loop, without blocking"

MECHANISMS: tuple[Mechanism, ...] = (
    # ---- available
    Mechanism(
        key="named-pipe-message",
        title="Named pipe, message mode",
        module="winipc.pipes",
        state="available",
        offers="Duplex connection carrying whole messages; transact() sends one and reads "
        "the reply (TransactNamedPipe, CallNamedPipe); asyncio server and client.",
        patterns={
            "request-reply": Fit(3, "transact(): one message out, its reply back"),
            "one-way": Fit(
                3, "whole messages in order; a writer waits for a slow reader, nothing is lost"
            ),
            "stream": Fit(2, "carries a stream too, cut into messages"),
            **_PIPE_COMMON,
        },
        cannot=_PIPE_CANNOT,
        network_planned="\\\\server\\pipe\\name over TLS",
        foreign={
            "local": "documented framing (docs/wire/pipe-messages.md): a Unix program "
            "in any language connects to the instance socket"
        },
        discovery={"local": "clients open an agreed machine-wide name, \\\\.\\pipe\\name"},
        event_loop="asyncio server and client (docs/pipes-asyncio.md): no blocking in the "
        "GUI's loop",
        bench=(BenchRef("winipc-pipe-message"), BenchRef("winipc-pipe-fast")),
    ),
    Mechanism(
        key="named-pipe-byte",
        title="Named pipe, byte mode",
        module="winipc.pipes",
        state="available",
        offers="Duplex, flow-controlled byte stream between unrelated processes "
        "(CreateNamedPipe, ConnectNamedPipe, PeekNamedPipe); asyncio server and client.",
        patterns={
            "stream": Fit(3, "a duplex byte stream, flow-controlled"),
            "request-reply": Fit(2, "works; you frame the messages (message mode does it)"),
            "one-way": Fit(2, "works; you frame the messages (message mode does it)"),
            **_PIPE_COMMON,
        },
        cannot=_PIPE_CANNOT,
        network_planned="\\\\server\\pipe\\name over TLS",
        foreign={
            "local": "raw bytes, no framing: any Unix program (socat, nc -U) connects "
            "to the instance socket"
        },
        discovery={"local": "clients open an agreed machine-wide name, \\\\.\\pipe\\name"},
        event_loop="asyncio server and client (docs/pipes-asyncio.md): no blocking in the "
        "GUI's loop",
        bench=(BenchRef("winipc-pipe-fast"), BenchRef("winipc-pipe-byte")),
    ),
    Mechanism(
        key="anonymous-pipe",
        title="Anonymous pipe",
        module="winipc.pipes",
        state="available",
        offers="One-way OS pipe between a parent and the child it starts (CreatePipe, "
        "handle inheritance, stdin/stdout redirection with winipc.spawn).",
        patterns={
            "stream": Fit(3, "the child's stdin or stdout: the plainest channel to a child"),
            "one-way": Fit(3, "one direction per pipe; end of file when the writer closes"),
            "request-reply": Fit(2, "two pipes, one each way; you frame the messages"),
            **_PIPE_COMMON,
        },
        cannot=_PIPE_CANNOT,
        related_only=True,
        foreign={"local": "a plain OS pipe: the child may be any program, in any language"},
        discovery={"local": "the child inherits the handle (its stdin/stdout): nothing to find"},
        event_loop="a plain file descriptor: any event loop watches it",
        bench=(BenchRef("winipc-anon-pipe"),),
    ),
    Mechanism(
        key="mailslot",
        title="Mailslot",
        module="winipc.mailslots",
        state="available",
        offers="One-way messages to one reader from any number of writers: on this "
        "machine, to a host (UDP), broadcast to a domain (<= 424 B) or over NATS.",
        patterns={
            "one-way": Fit(
                3, "many writers, one reader; whole messages kept until read, none dropped locally"
            ),
            "signal": Fit(2, "a short message wakes the reader; wait_any takes a mailslot"),
            "request-reply": Fit(
                1,
                "a mailslot per side, the reply a separate message; a "
                "message-mode pipe does it in one call",
            ),
            "broadcast": Fit(
                1, "one reader per name on a machine: write to each reader's own mailslot"
            ),
            "stream": Fit(1, "one way only, in whole messages"),
        },
        network_patterns={
            "one-way": Fit(
                3,
                "many writers, one reader, whole messages; best effort "
                "across machines: nothing tells the writer of a loss",
            ),
            "broadcast": Fit(
                3,
                "\\\\*\\mailslot\\name reaches every reader of the name on "
                "the LAN (<= 424 B), or across subnets over NATS; best effort",
            ),
            "signal": Fit(2, "a short message wakes the reader; best effort"),
            "request-reply": Fit(1, "a mailslot per side; best effort: add your own retries"),
        },
        cannot={
            "stream": "best effort across machines: a lost datagram is a hole in the stream",
            "shared-state": "messages only: nothing is shared",
            "durable": "unread messages die with the mailslot; lost datagrams are not resent",
        },
        network="to a host over UDP (\\\\host\\mailslot\\name), broadcast "
        "(\\\\*\\mailslot\\name, <= 424 B) or NATS across subnets; best effort",
        foreign={
            "network": "documented datagram (docs/wire/mailslot.md) over UDP or NATS, "
            "for programs in any language on any OS (not Windows' own SMB "
            "mailslot protocol)"
        },
        discovery={
            "local": "writers open an agreed machine-wide name, \\\\.\\mailslot\\name",
            "network": "broadcast to \\\\*\\mailslot\\name: no host names needed; "
            "read_message() tells who sent it",
        },
        event_loop=_ASYNC_WAIT,
        bench=(
            BenchRef("winipc-mailslot-broadcast", "network", ("broadcast",)),
            BenchRef("winipc-mailslot-udp", "network"),
            BenchRef("winipc-mailslot"),
        ),
    ),
    Mechanism(
        key="file-mapping",
        title="File mapping (shared memory)",
        module="winipc.mapping",
        state="available",
        offers="Named memory both processes map: memory- or file-backed, views, "
        "copy-on-write; SharedSection for typed shared fields with an embedded lock.",
        patterns={
            "shared-state": Fit(
                3,
                "one copy of the data that every process maps; guard it "
                "with a mutex (a SharedSection embeds one)",
            ),
            "stream": Fit(
                2,
                "the cheapest bulk copy, but you write the ring and its "
                "signalling (events) yourself",
            ),
            "broadcast": Fit(
                2, "every reader maps the same view; a manual-reset event tells them it changed"
            ),
            "durable": Fit(1, "a file-backed mapping keeps its content in the file; not a queue"),
        },
        cannot={
            "request-reply": "memory, not messages: it needs events or a pipe around it",
            "one-way": "memory, not messages: it needs events or a pipe around it",
            "signal": "no wake-up of its own: pair it with an event",
        },
        foreign={
            "local": "a named mapping is a file in /dev/shm (winipc ls shows it): a "
            "program in any language can map it; the layout is yours"
        },
        discovery={"local": _NAME_LOCAL},
        bench=(BenchRef("winipc-mapping"),),
    ),
    Mechanism(
        key="event",
        title="Event",
        module="winipc.sync",
        state="available",
        offers="Named auto- or manual-reset event: set() wakes one waiter or all "
        "(SetEvent, PulseEvent); wait_any/wait_all mix it with other objects.",
        patterns={
            "signal": Fit(3, "set() wakes one waiter (auto-reset) or every waiter (manual-reset)"),
            "broadcast": Fit(
                1,
                "a manual-reset event wakes every waiter, but carries no "
                "data: pair it with a mapping",
            ),
            "shared-state": Fit(1, "tells the readers of a mapping that it changed"),
        },
        cannot={p: _NO_DATA for p in ("request-reply", "one-way", "stream", "durable")},
        foreign={"local": "state and locking protocol documented (docs/wire/sync-state.md)"},
        discovery={"local": _NAME_LOCAL},
        event_loop=_ASYNC_WAIT,
        bench=(BenchRef("winipc-event"),),
    ),
    Mechanism(
        key="mutex",
        title="Mutex",
        module="winipc.sync",
        state="available",
        offers="Named mutex: one owner at a time, recursive, abandoned (WAIT_ABANDONED) "
        "when its owner dies.",
        patterns={
            "shared-state": Fit(
                2, "guards the data in a mapping; abandoned, not stuck, when its owner dies"
            ),
            "signal": Fit(2, "hands ownership to the next waiter, one at a time"),
        },
        cannot={
            p: "a lock: carries no data"
            for p in ("request-reply", "one-way", "stream", "broadcast", "durable")
        },
        foreign={"local": "state and locking protocol documented (docs/wire/sync-state.md)"},
        discovery={"local": _NAME_LOCAL},
        event_loop=_ASYNC_WAIT,
        bench=(BenchRef("winipc-mutex"),),
    ),
    Mechanism(
        key="semaphore",
        title="Semaphore",
        module="winipc.sync",
        state="available",
        offers="Named counting semaphore: release(n) lets up to n waiters through "
        "(CreateSemaphore, ReleaseSemaphore).",
        patterns={
            "signal": Fit(3, "counts: n releases let n waiters through, none lost"),
            "shared-state": Fit(1, "limits how many processes use a resource at once"),
        },
        cannot={
            p: _NO_DATA for p in ("request-reply", "one-way", "stream", "broadcast", "durable")
        },
        foreign={"local": "state and locking protocol documented (docs/wire/sync-state.md)"},
        discovery={"local": _NAME_LOCAL},
        event_loop=_ASYNC_WAIT,
    ),
    Mechanism(
        key="waitable-timer",
        title="Waitable timer",
        module="winipc.sync",
        state="available",
        offers="Named timer signalled at a due time or period (SetWaitableTimer), "
        "manual- or auto-reset.",
        patterns={
            "signal": Fit(
                2, "wakes its waiters at a set time or period, in every process that opens it"
            )
        },
        cannot={
            p: _NO_DATA
            for p in ("request-reply", "one-way", "stream", "broadcast", "shared-state", "durable")
        },
        foreign={"local": "state and locking protocol documented (docs/wire/sync-state.md)"},
        discovery={"local": _NAME_LOCAL},
        event_loop=_ASYNC_WAIT,
    ),
    Mechanism(
        key="msmq",
        title="Message queues (MSMQ-style)",
        module="winipc.msmq",
        state="available",
        offers="Durable queues: send, receive, peek, cursors, transactions, journal, "
        "dead-letter and poison subqueues; one SQLite file per queue, no daemon; the same "
        "API on NATS JetStream across machines.",
        patterns={
            "durable": Fit(
                3,
                "messages kept until received, across restarts of either side; recoverable "
                "ones on disk before send returns; transactions over sends and receives",
            ),
            "one-way": Fit(
                3,
                "sender and receiver need not run at the same time; any number of "
                "senders, priorities; every message stored, so slower than a pipe",
            ),
            "request-reply": Fit(
                1,
                "a response queue per sender (response_queue, correlation_id); every "
                "message stored: a message-mode pipe answers far faster",
            ),
            "broadcast": Fit(1, "each message is received once: one queue per reader"),
            "signal": Fit(1, "a message wakes a waiting receiver; an event is far lighter"),
        },
        cannot={
            "stream": "whole messages, each stored on its own: a pipe carries a byte stream",
            "shared-state": "messages only: nothing is shared",
        },
        network="NATS JetStream (nats://server:4222/queue): the same API; recoverable "
        "is on the server's disk only as it syncs (winipc queue stat says)",
        foreign={
            "local": "one SQLite file per queue, its layout documented "
            "(docs/wire/msmq-store.md): any language with SQLite reads it",
            "network": "NATS JetStream streams, mapping documented (docs/wire/msmq-nats.md): "
            "NATS clients in any language",
        },
        discovery={
            "local": "an agreed queue name (.\\private$\\name); winipc queue ls lists them"
        },
        event_loop="areceive() / apeek(): asyncio waits that do not block the GUI's loop",
        bench=(
            BenchRef("winipc-queue-nats", "network"),
            BenchRef("winipc-queue-recoverable"),
            BenchRef("winipc-queue-send-many"),
            BenchRef("winipc-queue-express"),
        ),
    ),
    Mechanism(
        key="rpc",
        title="RPC",
        module="winipc.rpc",
        state="available",
        offers="Remote procedure calls on declared interfaces (the class is the IDL): "
        "ncalrpc and ncacn_np locally, ncacn_ip_tcp with keys or TLS; context handles, "
        "callbacks, async calls, an endpoint mapper.",
        patterns={
            "request-reply": Fit(
                3,
                "a call is a function call: typed arguments out, results or the server's "
                "error back; a thread-safe binding pools connections for threads",
            ),
        },
        cannot={p: "calls only" for p in PATTERNS if p != "request-reply"},
        network="ncacn_ip_tcp: a shared key per principal, TLS (PKT_PRIVACY), client "
        "certificates",
        foreign={
            s: "the conversation is specified byte by byte, msgpack payloads "
            "(docs/wire/rpc.md): a client in any language can call"
            for s in ("local", "network")
        },
        discovery={"local": "the endpoint mapper finds a server's endpoint by interface"},
        event_loop="b.async_client(I): coroutine methods, cancelling the task cancels the call",
        bench=(
            BenchRef("winipc-rpc-tcp", "network"),
            BenchRef("winipc-rpc"),
        ),
    ),
    Mechanism(
        key="window-messages",
        title="Window messages, WM_COPYDATA",
        module="winipc.messages",
        state="available",
        offers="Windows (message-only ones for console programs) and a message loop: "
        "SendMessage(Timeout) waits for the reply, PostMessage queues, WM_COPYDATA carries "
        "up to 64 MiB through shared memory; FindWindow, RegisterWindowMessage.",
        patterns={
            "request-reply": Fit(
                2,
                "SendMessage waits for the window procedure's result (8 bytes; WM_COPYDATA "
                "carries data there); the receiver runs a message loop",
            ),
            "one-way": Fit(2, "PostMessage queues a message without waiting"),
            "broadcast": Fit(2, "a registered message sent to every top-level window"),
            "signal": Fit(2, "a posted message wakes the window's message loop"),
            "stream": Fit(1, "WM_COPYDATA blocks, each a synchronous call; a pipe streams"),
        },
        network_planned="later",
        discovery={"local": "FindWindow by class or title; messages registered by name"},
        event_loop="a window procedure runs in the GUI's own message loop; message_queue() "
        "waits with kernel objects in wait_any (MsgWaitForMultipleObjects)",
        bench=(BenchRef("winipc-sendmessage"), BenchRef("winipc-copydata")),
    ),
    # ---- planned
    Mechanism(
        key="clipboard",
        title="Clipboard",
        module="winipc.clipboard",
        state="available",
        offers="Set and get data in standard or registered formats, change listeners, "
        "delayed rendering; bridged to the desktop clipboard.",
        patterns={
            "one-way": Fit(2, "copy once; any application pastes in a format it knows"),
            "shared-state": Fit(2, "one current content per session, in several formats"),
            "broadcast": Fit(2, "clipboard listeners hear every change"),
        },
        cannot={
            "request-reply": "no replies: the last copy wins",
            "durable": "the next copy replaces it",
        },
        network_planned="NATS key-value (later)",
        foreign={"local": "bridged to the desktop clipboard: every desktop program takes part"},
        discovery={"local": "one clipboard per session: nobody to find"},
        coupling=frozenset({"loose"}),
        gui="user",
    ),
    Mechanism(
        key="dde",
        title="DDE (dynamic data exchange)",
        module="winipc.dde",
        state="planned",
        offers="DDEML conversations by service and topic: request, poke, execute, and "
        "advise loops that push updates.",
        patterns={
            "request-reply": Fit(2, "request and poke items in a conversation"),
            "shared-state": Fit(2, "advise loops push each new value of an item (hot links)"),
            "broadcast": Fit(2, "an advise loop per client, updated as the data changes"),
            "one-way": Fit(2, "poke and execute"),
        },
        network_planned="later",
        discovery={"local": "initiate by service and topic: every server of the service answers"},
        coupling=frozenset({"loose", "tight"}),
        gui="window",
    ),
    Mechanism(
        key="com",
        title="COM objects",
        module="winipc.com",
        state="planned",
        offers="Objects with interfaces over winipc.rpc: CoCreateInstance by class id, a "
        "class registry, servers started on demand, a running object table.",
        patterns={
            "request-reply": Fit(3, "method calls on an interface"),
            "shared-state": Fit(2, "an object holds the state; clients call it"),
        },
        network="DCOM-style over TLS",
        discovery={"local": "the class registry finds and starts the server (CoCreateInstance)"},
        coupling=frozenset({"loose", "tight"}),
    ),
    Mechanism(
        key="netbios-names",
        title="NetBIOS names",
        module="winipc.names",
        state="planned",
        offers="Register and find names on the LAN (mDNS / DNS-SD): partners find each "
        "other without host names; pair it with a transport.",
        patterns={
            p: Fit(1, "finds partners on the LAN by name; pair it with a transport")
            for p in PATTERNS
        },
        network="mDNS / DNS-SD",
        foreign={"network": "mDNS / DNS-SD: a standard every OS speaks"},
        discovery={"network": "names registered and resolved on the LAN"},
        role="discovery",
    ),
    Mechanism(
        key="serial",
        title="Serial ports",
        module="winipc.serial",
        state="planned",
        offers='COM ports through pyserial (CreateFile("COM1"), DCB), RFC 2217 across '
        "the network: for devices on a serial line, not processes.",
        patterns={
            "stream": Fit(2, "a byte stream to a device on a serial line"),
            "request-reply": Fit(2, "commands and replies to a device"),
        },
        network="RFC 2217 (serial over TCP)",
        foreign={
            "local": "a serial line: the other end may be any device or system",
            "network": "RFC 2217, a standard",
        },
    ),
)


# --------------------------------------------------------------------------- bench document

#: largest bench document read, in bytes
MAX_DOCUMENT = 32 * 1024 * 1024
#: placements preferred for figures when ``--placement`` is not given
PREFERRED_PLACEMENTS = ("cross-core", "same-core", "unpinned")
#: per goal and (bulk, messages) pattern class: the (metric, figure) looked for, in order
METRIC_PREFERENCE: dict[str, dict[bool, tuple[tuple[str, str], ...]]] = {
    "latency": {
        bulk: (
            ("rtt-64", "median"),
            ("wake", "median"),
            ("handoff", "rate"),
            ("burst-64", "rate"),
            ("burst-424", "rate"),
            ("queue-1k", "rate"),
            ("rpc-null", "median"),
        )
        for bulk in (True, False)
    },
    "throughput": {
        True: (
            ("tput-1m", "rate"),
            ("tput-64k", "rate"),
            ("msgs-64", "rate"),
            ("burst-424", "rate"),
            ("handoff", "rate"),
            ("queue-1k", "rate"),
            ("rpc-1mib", "rate"),
        ),
        False: (
            ("msgs-64", "rate"),
            ("tput-64k", "rate"),
            ("tput-1m", "rate"),
            ("burst-64", "rate"),
            ("handoff", "rate"),
            ("queue-1k", "rate"),
            ("rpc-calls-1", "rate"),
        ),
    },
}
#: throughput figures compared in this order of units (within one fit)
THROUGHPUT_UNITS = ("MB/s", "1/s")


class BenchDocumentError(ValueError):
    """A bench document that is not JSON of the expected shape; names the file."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"bench document {path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class BenchFigure:
    """One figure of a result: ``value`` in ``unit`` (``"us"``, ``"MB/s"``, ``"1/s"``, ``"%"``)."""

    value: float
    unit: str | None
    better: str | None
    ratio_to_best_peer: float | None
    best_peer: str | None


@dataclass(frozen=True)
class BenchResult:
    """One (scenario, placement, metric) cell of a run; ``unavailable``: why it could not run."""

    scenario: str
    placement: str
    metric: str
    kind: str | None
    figures: Mapping[str, BenchFigure]
    unavailable: str | None


@dataclass(frozen=True)
class BenchDocument:
    """The parts of a ``winipc bench --json`` document that ``choose`` uses.

    Attributes:
        path: the file it was read from.
        started: when the run started (ISO 8601, UTC), if given.
        mode: ``"quick"`` or ``"full"``, if given.
        placements: the run's placement names, in its order (may be empty).
        labels: metric key -> human label (``"rtt-64"`` -> ``"round trip 64 B"``).
        results: (scenario, metric, placement) -> result; the first of duplicates.
    """

    path: str
    started: str | None
    mode: str | None
    placements: tuple[str, ...]
    labels: Mapping[str, str]
    results: Mapping[tuple[str, str, str], BenchResult]

    def result(self, scenario: str, metric: str, placement: str) -> BenchResult | None:
        return self.results.get((scenario, metric, placement))

    def all_placements(self) -> list[str]:
        """Placements named in the document, then those only found in results."""
        names = list(self.placements)
        for _s, _m, p in self.results:
            if p not in names:
                names.append(p)
        return names


def default_cache_path(env: Mapping[str, str] | None = None) -> Path:
    """Where ``winipc bench`` leaves its last run's document.

    ``$WINIPC_BENCH_CACHE`` if set and not empty, else ``$XDG_CACHE_HOME/winipc/
    bench-last.json`` (``XDG_CACHE_HOME`` defaulting to ``~/.cache``, as the XDG base
    directory specification says; a relative ``XDG_CACHE_HOME`` is ignored).
    """
    env = os.environ if env is None else env
    explicit = env.get("WINIPC_BENCH_CACHE")
    if explicit:
        return Path(explicit)
    xdg = env.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "winipc" / "bench-last.json"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


class _Checker:
    """Type checks of the untrusted document; errors name the file and the field."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> BenchDocumentError:
        return BenchDocumentError(self.path, f"{where}: {problem}")

    @staticmethod
    def _kind(value: Any) -> str:
        return "null" if value is None else type(value).__name__

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {self._kind(value)}")
        return value

    def array(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {self._kind(value)}")
        return value

    def text(self, value: Any, where: str, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {self._kind(value)}")
        return value

    def number(self, value: Any, where: str, optional: bool = False) -> float | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"expected a number, got {self._kind(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise self.fail(where, "expected a finite number")
        return number


def _parse_figure(c: _Checker, raw: Any, where: str) -> BenchFigure:
    fig = c.obj(raw, where)
    value = c.number(fig.get("value"), f"{where}.value")
    assert value is not None
    better = c.text(fig.get("better"), f"{where}.better", optional=True)
    if better not in (None, "lower", "higher"):
        raise c.fail(f"{where}.better", f"expected 'lower' or 'higher', got {better!r}")
    return BenchFigure(
        value=value,
        unit=c.text(fig.get("unit"), f"{where}.unit", optional=True),
        better=better,
        ratio_to_best_peer=c.number(
            fig.get("ratio_to_best_peer"), f"{where}.ratio_to_best_peer", optional=True
        ),
        best_peer=c.text(fig.get("best_peer"), f"{where}.best_peer", optional=True),
    )


def parse_document(raw: Any, path: str) -> BenchDocument:
    """Check the decoded JSON ``raw`` of ``path`` and keep what ``choose`` uses.

    Fields not used are not checked; missing optional ones are None or empty.

    Raises:
        BenchDocumentError: not an object, a schema other than ``winipc-bench/*``, no
            ``results`` list, or a used field of the wrong type.
    """
    c = _Checker(path)
    doc = c.obj(raw, "document")
    schema = c.text(doc.get("schema"), "schema", optional=True)
    if schema is not None and not schema.startswith("winipc-bench/"):
        raise c.fail("schema", f"{schema!r} is not a winipc bench document (winipc-bench/*)")
    if "results" not in doc:
        raise c.fail("document", "no 'results' list: not a winipc bench document")
    placements: list[str] = []
    for i, p in enumerate(c.array(doc.get("placements", []), "placements")):
        name = c.text(c.obj(p, f"placements[{i}]").get("name"), f"placements[{i}].name")
        assert name is not None
        placements.append(name)
    labels: dict[str, str] = {}
    for i, m in enumerate(c.array(doc.get("metrics", []), "metrics")):
        mo = c.obj(m, f"metrics[{i}]")
        key = c.text(mo.get("key"), f"metrics[{i}].key")
        label = c.text(mo.get("label"), f"metrics[{i}].label", optional=True)
        if key is not None and label is not None:
            labels[key] = label
    results: dict[tuple[str, str, str], BenchResult] = {}
    for i, r in enumerate(c.array(doc["results"], "results")):
        where = f"results[{i}]"
        ro = c.obj(r, where)
        scenario = c.text(ro.get("scenario"), f"{where}.scenario")
        metric = c.text(ro.get("metric"), f"{where}.metric")
        placement = c.text(ro.get("placement"), f"{where}.placement")
        assert scenario is not None and metric is not None and placement is not None
        figs = c.obj(ro.get("figures", {}), f"{where}.figures")
        figures = {
            str(name): _parse_figure(c, f, f"{where}.figures.{name}") for name, f in figs.items()
        }
        result = BenchResult(
            scenario=scenario,
            placement=placement,
            metric=metric,
            kind=c.text(ro.get("kind"), f"{where}.kind", optional=True),
            figures=figures,
            unavailable=c.text(ro.get("unavailable"), f"{where}.unavailable", optional=True),
        )
        results.setdefault((scenario, metric, placement), result)
    return BenchDocument(
        path=path,
        started=c.text(doc.get("started"), "started", optional=True),
        mode=c.text(doc.get("mode"), "mode", optional=True),
        placements=tuple(placements),
        labels=labels,
        results=results,
    )


def load_document(path: Path | str) -> BenchDocument:
    """Read and check the bench document at ``path`` (JSON only, at most 32 MiB).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        BenchDocumentError: it cannot be read (a directory, no permission), is too big,
            not UTF-8, not JSON (``NaN`` and ``Infinity`` refused), or not of the shape
            :func:`parse_document` checks.
    """
    name = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_DOCUMENT + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BenchDocumentError(name, f"cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_DOCUMENT:
        raise BenchDocumentError(name, f"larger than {MAX_DOCUMENT} bytes")
    try:
        raw = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise BenchDocumentError(
            name, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except json.JSONDecodeError as exc:
        raise BenchDocumentError(
            name, f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise BenchDocumentError(name, f"not JSON winipc can use: {exc}") from None
    return parse_document(raw, name)


# --------------------------------------------------------------------------- figures


_DEFAULT_UNITS = {"median": "us", "p99": "us", "mean": "us", "min": "us", "loss": "%"}


@dataclass(frozen=True)
class Figure:
    """The bench figure behind a mechanism's place.

    Attributes:
        scenario, metric, placement: the cell of the run it comes from.
        name: the figure's name in the cell (``"median"``, ``"rate"``).
        value: its value, in ``unit``: ``"us"`` (µs, lower is better), ``"MB/s"``
            (10**6 B/s), ``"1/s"`` (operations or messages per second), or what the
            document says.
        label: the metric's label from the document (``"round trip 64 B"``), or its key.
        p99: the cell's p99 in µs, shown with a median.
        loss: the cell's loss in %, shown with a delivery rate.
        ratio_to_best_peer, best_peer: from the document.
    """

    scenario: str
    metric: str
    placement: str
    name: str
    value: float
    unit: str
    label: str
    p99: float | None = None
    loss: float | None = None
    ratio_to_best_peer: float | None = None
    best_peer: str | None = None

    def text(self) -> str:
        """``"23.1 µs median, p99 41.5"``, ``"1,353 MB/s"``, ``"45,766 per s, 0.0 % lost"``."""
        if self.unit == "us":
            out = f"{self.value:,.1f} µs {self.name}"
            if self.p99 is not None and self.name != "p99":
                out += f", p99 {self.p99:,.1f}"
        elif self.unit == "MB/s":
            out = f"{self.value:,.0f} MB/s"
        elif self.unit == "1/s":
            out = f"{self.value:,.0f} per s"
        else:
            out = f"{self.value:,.6g} {self.unit}"
        if self.loss is not None:
            out += f", {self.loss:.1f} % lost"
        return out

    def basis(self) -> str:
        """``"round trip 64 B (rtt-64), cross-core, winipc-pipe-message"`` and the ratio to the best peer."""
        out = f"{self.label} ({self.metric})" if self.label != self.metric else self.metric
        out += f", {self.placement}, {self.scenario}"
        if self.ratio_to_best_peer is not None and self.best_peer:
            out += f", \N{MULTIPLICATION SIGN}{self.ratio_to_best_peer:.2f} {self.best_peer}"
        return out

    def sort_key(self, goal: str) -> tuple[int, float]:
        """Smaller first. latency: µs per operation (a rate r counts 10**6/r µs);
        throughput: by unit (:data:`THROUGHPUT_UNITS` order), then highest first."""
        if goal == "latency":
            if self.unit == "us":
                return (0, self.value)
            if self.unit == "1/s" and self.value > 0:
                return (0, 1e6 / self.value)
            return (1, 0.0)
        if goal == "throughput":
            group = THROUGHPUT_UNITS.index(self.unit) if self.unit in THROUGHPUT_UNITS else 9
            return (group, -self.value)
        return (0, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "placement": self.placement,
            "figure": self.name,
            "value": self.value,
            "unit": self.unit,
            "label": self.label,
            "p99": self.p99,
            "loss": self.loss,
            "ratio_to_best_peer": self.ratio_to_best_peer,
            "best_peer": self.best_peer,
            "text": self.text(),
        }


def _unit(fig: BenchFigure, name: str, metric: str) -> str:
    if fig.unit:
        return fig.unit
    if name == "rate":
        return "MB/s" if metric.startswith("tput") else "1/s"
    return _DEFAULT_UNITS.get(name, "")


def _make_figure(doc: BenchDocument, r: BenchResult, name: str) -> Figure:
    fig = r.figures[name]
    p99 = r.figures.get("p99") if name == "median" else None
    loss = r.figures.get("loss")
    return Figure(
        scenario=r.scenario,
        metric=r.metric,
        placement=r.placement,
        name=name,
        value=fig.value,
        unit=_unit(fig, name, r.metric),
        label=doc.labels.get(r.metric, r.metric),
        p99=None if p99 is None else p99.value,
        loss=None if loss is None or name == "loss" else loss.value,
        ratio_to_best_peer=fig.ratio_to_best_peer,
        best_peer=fig.best_peer,
    )


def find_figure(
    m: Mechanism, answers: Answers, doc: BenchDocument, placements: Sequence[str]
) -> Figure | None:
    """The figure that backs ``m`` for these answers, or None when the run has none.

    The goal is the performance answer (``"none"``: latency, else throughput). Tried in
    order: ``m.bench`` scenarios of the answers' scope (and pattern), then the goal's
    metrics (:data:`METRIC_PREFERENCE`), then ``placements``. A cell that could not run
    (``unavailable``) is skipped.
    """
    bulk = answers.pattern in BULK_PATTERNS
    goals = [answers.performance] if answers.performance != "none" else ["latency", "throughput"]
    refs = [
        ref
        for ref in m.bench
        if ref.scope == answers.scope and (not ref.patterns or answers.pattern in ref.patterns)
    ]
    for goal in goals:
        for ref in refs:
            for metric, name in METRIC_PREFERENCE[goal][bulk]:
                for placement in placements:
                    r = doc.result(ref.scenario, metric, placement)
                    if r is not None and r.unavailable is None and name in r.figures:
                        return _make_figure(doc, r, name)
    return None


# --------------------------------------------------------------------------- choosing


@dataclass(frozen=True)
class Reason:
    """Why a mechanism fits or does not; ``question``: the answer it follows from."""

    question: str
    text: str


@dataclass(frozen=True)
class Assessment:
    """One mechanism against the answers.

    Attributes:
        mechanism: the table row.
        suitable: it can do what was asked.
        fit: higher is better (pattern fit 1..3, +1 for each answer it is made for,
            -1 for one it fits badly); 0 when not suitable.
        reasons: why it fits, or (not suitable) why not.
        figure: the bench figure behind it, if the run has one.
    """

    mechanism: Mechanism
    suitable: bool
    fit: int
    reasons: tuple[Reason, ...]
    figure: Figure | None = None

    def to_json(self, rank: int | None = None) -> dict[str, Any]:
        m = self.mechanism
        out: dict[str, Any] = {} if rank is None else {"rank": rank}
        out.update(
            {
                "mechanism": m.key,
                "title": m.title,
                "module": m.module,
                "state": m.state,
                "suitable": self.suitable,
                "fit": self.fit,
                "why": [r.text for r in self.reasons],
            }
        )
        if m.state == "planned":
            out["offers"] = m.offers
        else:
            out["figure"] = None if self.figure is None else self.figure.to_json()
        return out


def assess(m: Mechanism, a: Answers) -> Assessment:
    """How ``m`` does with the answers ``a`` (no figure; :func:`choose` adds it)."""
    scope = a.scope
    no: list[Reason] = []
    yes: list[Reason] = []
    bonus = 0
    if a.network and m.network is None:
        if m.network_planned:
            no.append(
                Reason(
                    "network", f"local only today; across machines: {m.network_planned} (planned)"
                )
            )
        else:
            no.append(Reason("network", "local only: cannot reach other computers"))
    if m.related_only and not a.related:
        no.append(Reason("related", "only between a parent and the children it starts"))
    if a.other_os and scope not in m.foreign:
        where = " across machines" if a.network else " on this machine"
        no.append(Reason("other_os", f"only winipc programs can take part{where}"))
    if a.discovery and scope not in m.discovery:
        no.append(
            Reason(
                "discovery",
                "partners must be told where it is" + (" (a host name)" if a.network else ""),
            )
        )
    if a.coupling not in m.coupling:
        text = (
            "made for specific partners sharing a protocol, not for any application"
            if a.coupling == "loose"
            else "shared by every application of the session: not a private channel"
        )
        no.append(Reason("coupling", text))
    if not a.gui and m.gui == "window":
        no.append(Reason("gui", "needs a window and a message loop: a GUI application"))
    if m.role == "discovery" and not (a.discovery and a.network):
        no.append(Reason("discovery", "finds partners across machines; not asked for"))
    fits = {**m.patterns, **m.network_patterns} if a.network else dict(m.patterns)
    fit = fits.get(a.pattern)
    if fit is None:
        no.append(Reason("pattern", f"{a.pattern}: {m.cannot.get(a.pattern, 'not made for it')}"))
    if no:
        return Assessment(m, False, 0, tuple(no))
    assert fit is not None
    yes.append(Reason("pattern", fit.why))
    if a.network and m.network:
        yes.append(Reason("network", m.network))
    if a.other_os:
        yes.append(Reason("other_os", m.foreign[scope]))
    if a.discovery:
        yes.append(Reason("discovery", m.discovery[scope]))
    if a.related and m.related_only:
        bonus += 1
        yes.append(Reason("related", "made for a child process: its stdin/stdout"))
    if a.gui:
        if m.gui in ("window", "user"):
            bonus += 1
            yes.append(Reason("gui", "made for GUI applications"))
        elif m.event_loop:
            bonus += 1
            yes.append(Reason("gui", m.event_loop))
    elif m.gui == "user":
        bonus -= 1
        yes.append(Reason("gui", "made for a user's cut and paste in a GUI"))
    return Assessment(m, True, max(1, fit.score + bonus), tuple(yes))


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` found.

    Attributes:
        answers: the answers ranked for.
        ranked: suitable available mechanisms, best first.
        not_suitable: available mechanisms that cannot do it, in table order.
        planned: planned mechanisms (and planned network support of available ones)
            that will suit, best first.
        planned_not_suitable: the other planned ones.
        placement: the placement figures were taken from first (None: no document).
        relax: question key -> available mechanisms that only that answer excludes.
    """

    answers: Answers
    ranked: tuple[Assessment, ...]
    not_suitable: tuple[Assessment, ...]
    planned: tuple[Assessment, ...]
    planned_not_suitable: tuple[Assessment, ...]
    placement: str | None
    relax: Mapping[str, tuple[str, ...]]


def pick_placement(doc: BenchDocument, wanted: str | None = None) -> list[str]:
    """The placements to take figures from, in order: ``wanted`` (or the preferred one
    of :data:`PREFERRED_PLACEMENTS` the document has, or its first), then the others.

    Raises:
        ValueError: ``wanted`` is not a placement of the document (the message lists them).
    """
    names = doc.all_placements()
    if wanted is not None:
        if wanted not in names:
            have = ", ".join(names) or "none"
            raise ValueError(f"placement {wanted!r} is not in {doc.path} (it has: {have})")
        first = wanted
    else:
        first = next((p for p in PREFERRED_PLACEMENTS if p in names), names[0] if names else "")
    return [first, *(p for p in names if p != first)] if first else names


def choose(
    answers: Answers,
    doc: BenchDocument | None = None,
    placement: str | None = None,
    mechanisms: Sequence[Mechanism] = MECHANISMS,
) -> Choice:
    """Assess ``mechanisms`` against ``answers`` and rank the available ones.

    Order of ``ranked``: fit (highest first); within one fit, when performance is
    critical, the figure of :func:`find_figure` (:meth:`Figure.sort_key`; no figure
    after every figure); then the table order. Planned ones: fit, then table order.

    Raises:
        ValueError: ``placement`` is not in ``doc``.
    """
    placements = pick_placement(doc, placement) if doc is not None else []
    goal = answers.performance
    order = {m.key: i for i, m in enumerate(mechanisms)}
    ranked: list[Assessment] = []
    unsuitable: list[Assessment] = []
    planned: list[Assessment] = []
    planned_no: list[Assessment] = []
    for m in mechanisms:
        a = assess(m, answers)
        if m.state == "planned":
            (planned if a.suitable else planned_no).append(a)
            continue
        if a.suitable:
            fig = find_figure(m, answers, doc, placements) if doc is not None else None
            ranked.append(dataclasses.replace(a, figure=fig))
            continue
        unsuitable.append(a)
        if answers.network and m.network is None and m.network_planned:
            remote = dataclasses.replace(
                m,
                key=f"{m.key}-remote",
                title=f"{m.title}, across machines",
                state="planned",
                offers=f"{m.title} across machines: {m.network_planned}.",
                network=m.network_planned,
                network_planned=None,
                bench=(),
            )
            order[remote.key] = order[m.key]
            ra = assess(remote, answers)
            (planned if ra.suitable else planned_no).append(ra)

    def figure_key(a: Assessment) -> tuple[int, float]:
        if goal == "none":
            return (0, 0.0)
        return a.figure.sort_key(goal) if a.figure is not None else (10, 0.0)

    ranked.sort(key=lambda a: (-a.fit, figure_key(a), order[a.mechanism.key]))
    planned.sort(key=lambda a: (-a.fit, order[a.mechanism.key]))
    relax: dict[str, list[str]] = {}
    for a in unsuitable:
        questions = {r.question for r in a.reasons}
        if len(questions) == 1:
            relax.setdefault(questions.pop(), []).append(a.mechanism.key)
    return Choice(
        answers=answers,
        ranked=tuple(ranked),
        not_suitable=tuple(unsuitable),
        planned=tuple(planned),
        planned_not_suitable=tuple(planned_no),
        placement=placements[0] if placements else None,
        relax={k: tuple(v) for k, v in relax.items()},
    )
