"""The scenario registry: what ``winipc bench`` can measure, and the shape of a scenario.

A *scenario* is one way of moving bytes between two processes (a winipc named pipe in
message mode, a raw AF_UNIX socket, ``multiprocessing.Pipe``...). It has two halves that
run in two real processes:

* the **server side** runs in the worker process (``python -m winipc.bench.worker``):
  :meth:`Scenario.serve` makes something a client can reach and returns a
  :class:`Listening` that names its address and accepts the one client;
* the **client side** runs in the runner: :meth:`Scenario.connect` reaches that address.

Both sides then speak through an :class:`Endpoint`: ``send`` one unit, ``recv`` one unit.
A *unit* is a message on message-oriented transports and a run of exactly ``size`` bytes
on byte streams. The measurements themselves (round trips, bulk transfer, checksums) are
written once, in :mod:`winipc.bench.workload`, over that interface.

A *metric* is what a scenario is measured on: a round trip of 64 B, a burst of 64 B
messages (messages per second), or throughput with 64 KiB or 1 MiB units (and, for
``--plot``, units from 64 B to 4 MiB). Scenarios say which metric kinds they support.

Endpoints may offer faster receive and batch methods (:class:`IntoEndpoint`,
:class:`BatchEndpoint`); the workload uses them when they are there, so each mechanism
is measured with its own best plain API.

The *limit* (``memcpy-limit``, :attr:`Scenario.limit`) is not a way between processes:
it is one core copying the same units with ``memcpy`` from a source larger than the
last-level cache, the figure every throughput is compared with.

Synchronization scenarios move no bytes: they support the ``latency`` kind (one process
signals, the other wakes: each side stamps its half with the system-wide monotonic
clock) or the ``rate`` kind (operations per second, both sides stamping each of their
operations). Both halves run :meth:`Scenario.exchange`, and the runner turns the two
lists of stamps into figures (:mod:`winipc.bench.workload`).

Best-effort delivery (network mailslots, which may drop) has the ``delivery`` kind: the
runner's side of :meth:`Scenario.exchange` writes a burst of ``count`` messages as fast
as it can, the worker's side receives and verifies what arrives; the figures are the
loss and the delivered rate (:func:`winipc.bench.workload.deliveries`). A scenario that
cannot run on this machine (no network interface to broadcast on...) says why in
:meth:`Scenario.unavailable`; its cells are reported as not available, with the reason.

Message queues (group ``queue``) are measured on a metric of their own, ``queue-1k``
(kind ``messages``, but only for scenarios of that group: :attr:`Metric.group`): bursts
of 1 KiB messages from producers to a consumer through the scenario's
:meth:`Scenario.exchange`, sized by time (:mod:`winipc.bench.scenarios_queue`).

Remote procedure calls (group ``rpc``) have metrics of their own too: ``rpc-null`` (kind
``latency``: a null call's round trip), ``rpc-calls-1`` and ``rpc-calls-8`` (kind
``rate``: null calls per second from 1 and 8 client threads) and ``rpc-1mib`` (kind
``throughput``: a 1 MiB argument), each batch of calls through the scenario's
:meth:`Scenario.exchange` (:mod:`winipc.bench.scenarios_rpc`).

A :class:`Target` is a goal a figure is held to in every run (a ratio to another
scenario's figure or to the best of several, or a value), registered with :func:`register_target`; the report
computes and prints each one per placement.

To add a scenario, subclass :class:`Scenario` in a module and call :func:`register` at
import time of that module: the worker imports the module that defines the scenario's
class before it looks the name up, so plug-ins work in both processes.
"""

from __future__ import annotations

import abc
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Buffer = bytes | bytearray | memoryview

#: metric kinds
RTT: Literal["rtt"] = "rtt"
THROUGHPUT: Literal["throughput"] = "throughput"
LATENCY: Literal["latency"] = "latency"
RATE: Literal["rate"] = "rate"
DELIVERY: Literal["delivery"] = "delivery"
MESSAGES: Literal["messages"] = "messages"
MetricKind = Literal["rtt", "throughput", "latency", "rate", "delivery", "messages"]


@dataclass(frozen=True)
class Metric:
    """One column group of the report.

    Attributes:
        key: stable identifier used in JSON (``"rtt-64"``, ``"tput-64k"``).
        kind: ``"rtt"`` (round trip, µs, lower is better), ``"throughput"`` (MB/s,
            10**6 bytes per second, higher is better), ``"latency"`` (one way, signal to
            wake, or an RPC null call's round trip, µs, lower is better), ``"rate"`` (operations per second, higher is
            better), ``"delivery"`` (a burst of messages: loss in %, lower is better,
            and messages delivered per second) or ``"messages"`` (a burst of small
            messages sent one way, verified: messages per second, higher is better).
        size: bytes per unit (message, or chunk on a byte stream); 0 for latency and rate.
        label: human text for the table header.
        plot: measured only for ``--plot`` (the extra unit sizes of the throughput curve).
        group: measured only by scenarios of this group (``"queue"``, ``"rpc"``); None: by every
            scenario that supports the kind.
        only: measured only by the scenarios named here (and supporting the kind); empty:
            no such restriction. ``tput-16m`` is WM_COPYDATA's large unit, measured on
            ``winipc-copydata`` and the peers and limit it is held to, not on every
            transport (a SOCK_SEQPACKET message cannot be 16 MiB).
    """

    key: str
    kind: MetricKind
    size: int
    label: str
    plot: bool = False
    group: str | None = None
    only: tuple[str, ...] = ()


KiB, MiB = 1024, 1024 * 1024

METRICS: tuple[Metric, ...] = (
    Metric("rtt-64", RTT, 64, "round trip 64 B"),
    Metric("msgs-64", MESSAGES, 64, "64 B messages"),
    Metric("tput-64k", THROUGHPUT, 64 * KiB, "throughput 64 KiB"),
    Metric("tput-1m", THROUGHPUT, MiB, "throughput 1 MiB"),
    # WM_COPYDATA's large unit, with the peers and the limit it is compared with
    Metric(
        "tput-16m",
        THROUGHPUT,
        16 * MiB,
        "throughput 16 MiB",
        only=("winipc-copydata", "af-unix-stream", "mp-pipe", "memcpy-limit"),
    ),
    Metric("wake", LATENCY, 0, "set-to-wake"),
    Metric("handoff", RATE, 0, "hand-offs"),
    Metric("burst-64", DELIVERY, 64, "burst of 64 B"),
    Metric("burst-424", DELIVERY, 424, "burst of 424 B"),
    # bursts of 1 KiB messages through a message queue, producers to a consumer
    Metric("queue-1k", MESSAGES, KiB, "1 KiB queue messages", group="queue"),
    # remote procedure calls, client (runner) to server (worker): a null call's round
    # trip, null calls per second from 1 and 8 client threads, a 1 MiB argument
    Metric("rpc-null", LATENCY, 0, "null call round trip", group="rpc"),
    Metric("rpc-calls-1", RATE, 0, "null calls, 1 thread", group="rpc"),
    Metric("rpc-calls-8", RATE, 0, "null calls, 8 threads", group="rpc"),
    Metric("rpc-1mib", THROUGHPUT, MiB, "1 MiB argument", group="rpc"),
    # the rest of the throughput curve, measured for --plot only
    Metric("tput-64", THROUGHPUT, 64, "throughput 64 B", plot=True),
    Metric("tput-1k", THROUGHPUT, KiB, "throughput 1 KiB", plot=True),
    Metric("tput-16k", THROUGHPUT, 16 * KiB, "throughput 16 KiB", plot=True),
    Metric("tput-256k", THROUGHPUT, 256 * KiB, "throughput 256 KiB", plot=True),
    Metric("tput-4m", THROUGHPUT, 4 * MiB, "throughput 4 MiB", plot=True),
)
#: the metrics of a run without ``--plot``
DEFAULT_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if not m.plot)


def metric(key: str) -> Metric:
    """The metric whose key is ``key``.

    Raises:
        KeyError: no such metric.
    """
    for m in METRICS:
        if m.key == key:
            return m
    raise KeyError(f"no bench metric {key!r}")


@dataclass(frozen=True)
class Setup:
    """What both halves of a scenario share for one run.

    Attributes:
        workdir: a private (0700) temporary directory for socket files and such; the
            runner creates and removes it.
        tag: a string unique to this run and scenario, for object names.
        secret: a random hex string both sides know (authentication keys).
    """

    workdir: str
    tag: str
    secret: str


class Endpoint(Protocol):
    """One connected end: sends and receives units.

    Optional methods, used by :mod:`winipc.bench.workload` when an end has them (so each
    mechanism is measured with its best plain API): ``recv_into`` (:class:`IntoEndpoint`)
    and ``send_many`` / ``recv_many`` (:class:`BatchEndpoint`).
    """

    def send(self, data: Buffer) -> None:
        """Send one unit: all of ``data`` (one message on message transports)."""

    def recv(self, size: int) -> Buffer:
        """Receive one unit of ``size`` bytes (the next message on message transports)."""

    def close(self) -> None:
        """Close the end; the peer sees end-of-file."""


class IntoEndpoint(Endpoint, Protocol):
    """An end that can receive into memory the caller owns (optional).

    The throughput sink then receives a whole round into one preallocated, pre-touched
    buffer, instead of a fresh object per unit.
    """

    def recv_into(self, buffer: memoryview) -> int:
        """Receive the next unit into ``buffer``, which is exactly the expected size.

        Byte streams fill all of it. Message transports receive one whole message and
        return its length: a message of another length must show as a different return
        value (or an error), never as a silently truncated unit.

        Returns:
            The unit's length in bytes.
        """


class BatchEndpoint(Endpoint, Protocol):
    """An end that sends and receives many small units per call (optional).

    Used by the ``messages`` metric (``msgs-64``): the runner hands the end batches of
    messages, the worker takes as many as have arrived.
    """

    def send_many(self, units: Sequence[Buffer]) -> None:
        """Send every unit of ``units``, in order, each as one unit (message)."""

    def recv_many(self, max: int, size: int) -> Sequence[Buffer]:
        """Receive 1 to ``max`` units, as many as have arrived (waits for the first).

        Args:
            max: units wanted at most.
            size: the unit size; byte streams return whole units of this size (and keep
                a partial one for the next call). A message transport may ignore it and
                declare ``recv_many(max)`` alone: the workload passes ``size`` only to a
                method that takes two arguments.

        Raises:
            NotImplementedError: not on this end (before reading anything); the
                workload then receives one unit at a time.
        """


class Listening(Protocol):
    """The server side after :meth:`Scenario.serve`: reachable, waiting for one client."""

    #: what the client side passes to :meth:`Scenario.connect`
    address: str

    def accept(self, timeout: float | None) -> Endpoint:
        """Wait up to ``timeout`` seconds for the client and return the connected end."""

    def close(self) -> None:
        """Stop listening and remove whatever :meth:`Scenario.serve` created."""


class Scenario(abc.ABC):
    """A way of moving bytes between two processes; see the module docstring.

    Attributes:
        name: unique, lower-case, used by ``--only`` (``"winipc-pipe-message"``).
        mechanism: what is measured, for humans (``"named pipe, message mode"``).
        peer: True for the comparison baselines that are not winipc; ratios in the
            report are to the best peer of the same run and group.
        limit: True for the physical limit (``memcpy-limit``): neither winipc nor a peer;
            every throughput figure is also given as a ratio to it.
        group: scenarios compared with one another (``"transport"``, ``"sync"``,
            ``"delivery"``): a figure's ratio is to the best peer of its own group.
        kinds: the metric kinds supported.
        description: one sentence on how the scenario is built.
        keywords: further words a plain ``--only`` pattern selects the scenario by (whole
            word, any case): ``--only messages`` selects the window-message scenarios.
    """

    name: str = ""
    mechanism: str = ""
    peer: bool = False
    limit: bool = False
    group: str = "transport"
    kinds: frozenset[MetricKind] = frozenset({RTT, THROUGHPUT, MESSAGES})
    description: str = ""
    keywords: frozenset[str] = frozenset()

    def supports(self, metric: Metric) -> bool:
        """Whether this scenario is measured on ``metric``."""
        if metric.only and self.name not in metric.only:
            return False
        return metric.kind in self.kinds and metric.group in (None, self.group)

    def unavailable(self) -> str | None:
        """Why this scenario cannot be measured on this machine, or None when it can.

        Asked in the runner before any worker starts; the scenario's cells are then
        reported as not available, with this reason, instead of failing the run.
        """
        return None

    @abc.abstractmethod
    def serve(self, setup: Setup) -> Listening:
        """Server side (worker process): become reachable for one client."""

    @abc.abstractmethod
    def connect(self, address: str, setup: Setup) -> Endpoint:
        """Client side (runner process): connect to ``address`` from :meth:`serve`."""

    def exchange(self, ep: Endpoint, metric: Metric, count: int, runner: bool) -> list[int]:
        """One batch of a ``latency`` or ``rate`` metric, on one side; both run at once.

        Stamps are ``time.monotonic_ns()`` values (one clock for every process).

        Args:
            ep: this side's end, from :meth:`connect` (runner) or the accept (worker).
            metric: the metric measured.
            count: operations each side performs in this batch.
            runner: True on the runner's side, False on the worker's.

        Returns:
            ``count`` stamps. latency: runner, just before each signal; worker, just
            after each wake. rate: each side, one per operation of its own, taken
            while it holds what it hands off. delivery (``count`` messages in a burst):
            runner, ``[first write, end of the last write, messages written]``; worker,
            ``[messages received, duplicates, stamp of the last one received]``.

        Raises:
            VerificationError: the other side broke the exchange's rules.
        """
        raise NotImplementedError(f"{self.name} measures no {metric.kind} metric")

    def __repr__(self) -> str:
        return f"<Scenario {self.name}>"


_REGISTRY: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    """Add ``scenario`` to the registry and return it.

    Raises:
        ValueError: the name is empty, not lower-case, or taken.
    """
    name = scenario.name
    if not name or name != name.lower() or any(c.isspace() for c in name):
        raise ValueError(f"scenario name must be non-empty lower-case without spaces: {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"a scenario named {name!r} is registered already")
    _REGISTRY[name] = scenario
    return scenario


def unregister(name: str) -> None:
    """Remove a scenario (tests and plug-ins); unknown names are ignored."""
    _REGISTRY.pop(name, None)


#: the built-in scenario modules, in the order their scenarios are listed
_BUILTINS = (
    "winipc.bench.scenarios",
    "winipc.bench.scenarios_mailslot",
    "winipc.bench.scenarios_mapping",
    "winipc.bench.scenarios_peers",
    "winipc.bench.scenarios_sync",
    "winipc.bench.scenarios_queue",
    "winipc.bench.scenarios_rpc",
    "winipc.bench.scenarios_messages",
)


def _load_builtins() -> None:
    import winipc.bench.scenarios  # noqa: F401  (registers the built-in scenarios)
    from winipc.bench import (
        scenarios_mailslot,  # noqa: F401  (mailslots, and their delivery)
        scenarios_mapping,  # noqa: F401  (mapping copy bandwidth, the memcpy limit)
        scenarios_messages,  # noqa: F401  (SendMessage round trips, WM_COPYDATA throughput)
        scenarios_peers,  # noqa: F401  (more peers, and winipc's anonymous pipes)
        scenarios_queue,  # noqa: F401  (message queues, their peers and targets)
        scenarios_rpc,  # noqa: F401  (remote procedure calls, their peers and targets)
        scenarios_sync,  # noqa: F401  (event and mutex scenarios)
    )


@dataclass(frozen=True)
class Target:
    """A goal a figure is held to, per placement, in every run that measures it.

    Attributes:
        key: stable identifier used in JSON (``"queue-recoverable-vs-persist-queue"``).
        scenario: the scenario whose figure is held to the goal.
        metric: the metric's key (``"queue-1k"``).
        text: what is compared, for humans.
        at_least: the goal: the ratio ``scenario / versus`` (with ``versus``) or the
            figure itself (in the figure's unit) must reach this.
        versus: the scenario it is compared with; several: the best figure of those
            measured (lowest for µs, highest for rates); None for a goal on the value.
        figure: which figure of the metric (``"rate"``).
        at_most: a ceiling instead (or as well): the ratio (or the value) must not
            exceed this (round trips: ``at_least`` 0 and ``at_most`` 1.3).
    """

    key: str
    scenario: str
    metric: str
    text: str
    at_least: float
    versus: str | tuple[str, ...] | None = None
    figure: str = "rate"
    at_most: float | None = None


_TARGETS: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    """Add ``target`` (see :class:`Target`) and return it.

    Raises:
        ValueError: its key is taken.
    """
    if target.key in _TARGETS:
        raise ValueError(f"a bench target {target.key!r} is registered already")
    _TARGETS[target.key] = target
    return target


def targets() -> list[Target]:
    """Every registered target, in registration order."""
    _load_builtins()
    return list(_TARGETS.values())


def all_scenarios() -> list[Scenario]:
    """Every registered scenario: winipc's, then the peers, then the limit; each in the
    order of :data:`_BUILTINS` (whichever module was imported first), then plug-ins, each
    module's in registration order."""
    _load_builtins()

    def rank(s: Scenario) -> tuple[int, int]:
        module = type(s).__module__
        kind = 1 if s.peer else 2 if s.limit else 0
        return kind, _BUILTINS.index(module) if module in _BUILTINS else len(_BUILTINS)

    return sorted(_REGISTRY.values(), key=rank)  # stable: registration order within


def get(name: str) -> Scenario:
    """The scenario called ``name``.

    Raises:
        KeyError: no such scenario.
    """
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no bench scenario named {name!r}") from None


def select(patterns: Iterable[str]) -> list[Scenario]:
    """Scenarios matching any of ``patterns`` (all of them when there is none).

    A pattern with ``*``, ``?`` or ``[`` is a shell-style glob on the whole name; any other
    pattern matches as a substring, or a whole :attr:`Scenario.keywords` word. Matching
    ignores case.

    Raises:
        ValueError: a pattern matches no scenario (the message lists the names).
    """
    scenarios = all_scenarios()
    pats = [p.lower() for p in patterns if p.strip()]
    if not pats:
        return scenarios
    chosen: list[Scenario] = []
    for pat in pats:
        glob = any(c in pat for c in "*?[")
        hits = [
            s
            for s in scenarios
            if (fnmatch.fnmatchcase(s.name, pat) if glob else pat in s.name or pat in s.keywords)
        ]
        if not hits:
            names = ", ".join(s.name for s in scenarios)
            raise ValueError(f"--only {pat!r} matches no scenario; the scenarios are: {names}")
        chosen += [s for s in hits if s not in chosen]
    return [s for s in scenarios if s in chosen]
