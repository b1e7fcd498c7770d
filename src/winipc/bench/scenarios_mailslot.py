"""Bench scenarios for mailslots: a local transport, and how many network messages arrive.

``winipc-mailslot`` (group ``transport``): a mailslot is one-way, so each side creates its
own and opens the other's. The worker serves mailslot *W*; the runner creates mailslot
*R*, opens *W* and writes a hello naming *R*, which the worker opens. A unit is one
message (mailslots never split or merge them): a round trip is a write to the other
side's mailslot and a read from one's own; throughput rounds go runner -> worker in *W*,
the acknowledgement comes back in *R*. Messages over 64 KiB travel in a memfd
(``winipc.mailslots._local``).

Delivery (metric kind ``delivery``, bursts of 64 B and 424 B messages): the runner
writes a burst as fast as its writer can; the worker reads all along, then, once the
runner's "done" message (empty, over the local writer, which never drops) has come,
drains for :data:`DRAIN` seconds. Each message carries a burst nonce, a sequence number
and the CRC-32 of the rest, checked by the reader after the burst; a damaged message
fails the run, a copy of one already received counts as a duplicate, one from another
burst (nonce) is ignored. The routes:

* ``winipc-mailslot`` itself: the local writer (expected loss: 0);
* ``winipc-mailslot-broadcast``: ``\\\\*\\mailslot\\x`` over UDP to each interface's
  broadcast address, which this host receives back through loopback (W has
  ``accept_network=True``); not available without a broadcast-capable interface;
* ``winipc-mailslot-udp``: ``\\\\<this host's own IPv4 address>\\mailslot\\x``, UDP
  unicast to this host (127.0.0.1 would name the local mailslot); not available without
  a non-loopback IPv4 address.

The network routes measure UDP: ``WINIPC_NATS_URL`` is ignored by these scenarios.
Importing this module registers the three scenarios.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import zlib
from collections.abc import Iterator

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc.bench.registry import (
    DELIVERY,
    MESSAGES,
    RTT,
    THROUGHPUT,
    Buffer,
    Endpoint,
    Metric,
    Scenario,
    Setup,
    register,
)
from winipc.bench.workload import BenchError, VerificationError, no_gc
from winipc.mailslots import Mailslot, MailslotWriter, open_mailslot

#: seconds a read waits for the other side before the run fails (never reached when healthy)
PATIENCE = 30.0
#: seconds the reader keeps reading after the writer's "done", for datagrams in flight
DRAIN = 0.05

_HELLO = b"winipc-bench-hello:"
_READY = b"winipc-bench-ready:"
#: delivery message header: burst nonce, sequence number, CRC-32 of everything else
_HEAD = struct.Struct("<III")
_NATS_ENV = "WINIPC_NATS_URL"


@contextlib.contextmanager
def _udp_only() -> Iterator[None]:
    """Network mailslot objects made in the block use UDP, whatever ``WINIPC_NATS_URL`` says."""
    saved = os.environ.pop(_NATS_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[_NATS_ENV] = saved


def _own_address() -> str | None:
    """This host's first non-loopback IPv4 address, or None."""
    addrs = sorted(a for a in B.local_ipv4_addresses() if not a.startswith("127."))
    return addrs[0] if addrs else None


class _SlotEnd:
    """One side: reads its own mailslot, writes the other side's.

    Attributes:
        slot: this side's mailslot.
        writer: the other side's mailslot, opened for writing.
        burst: the writer of delivery bursts (the runner's side; ``writer`` for the
            local route).
    """

    def __init__(
        self,
        slot: Mailslot,
        writer: MailslotWriter,
        *,
        burst: MailslotWriter | None = None,
        owns_slot: bool,
    ) -> None:
        self.slot = slot
        self.writer = writer
        self.burst = burst if burst is not None else writer
        self._owns_slot = owns_slot

    def send(self, data: Buffer) -> None:
        self.writer.write(data)

    def recv(self, size: int) -> Buffer:
        return self.slot.read()

    def close(self) -> None:
        if self.burst is not self.writer:
            self.burst.close()
        self.writer.close()
        if self._owns_slot:
            self.slot.close()


class _SlotListening:
    """The worker's mailslot W, waiting for the runner's hello."""

    def __init__(self, name: str, accept_network: bool) -> None:
        with _udp_only():
            self.slot = Mailslot(name, read_timeout=PATIENCE, accept_network=accept_network)
        self.address = self.slot.name

    def accept(self, timeout: float | None) -> Endpoint:
        hello = self.slot.read(timeout=timeout)
        if not hello.startswith(_HELLO):
            raise BenchError(f"mailslot: expected the runner's hello, got {hello[:40]!r}")
        return _SlotEnd(self.slot, open_mailslot(hello[len(_HELLO) :].decode()), owns_slot=False)

    def close(self) -> None:
        self.slot.close()


def _payloads(nonce: int, size: int, count: int) -> list[bytes]:
    """``count`` delivery messages of ``size`` bytes: header, then random bytes."""
    body = os.urandom(count * (size - _HEAD.size))
    step = size - _HEAD.size
    out = []
    for seq in range(count):
        rest = body[seq * step : (seq + 1) * step]
        crc = zlib.crc32(rest, zlib.crc32(struct.pack("<II", nonce, seq)))
        out.append(_HEAD.pack(nonce, seq, crc) + rest)
    return out


def _tally(got: list[bytes], nonce: int, size: int, count: int) -> tuple[int, int, int]:
    """(distinct messages, duplicates, index in ``got`` of the last counted one).

    Raises:
        VerificationError: a message of this burst is damaged or out of range.
    """
    seen = bytearray(count)
    received = duplicates = 0
    last = -1
    for i, msg in enumerate(got):
        if len(msg) < _HEAD.size:
            raise VerificationError(f"delivery: a message of {len(msg)} bytes")
        their_nonce, seq, crc = _HEAD.unpack_from(msg)
        if zlib.crc32(msg[_HEAD.size :], zlib.crc32(msg[:8])) != crc:
            raise VerificationError(f"delivery: message #{i} received is damaged (CRC-32)")
        if their_nonce != nonce:
            continue  # a late message of an earlier burst
        if len(msg) != size or seq >= count:
            raise VerificationError(
                f"delivery: message {seq} is {len(msg)} bytes (expected {size}, < {count} messages)"
            )
        if seen[seq]:
            duplicates += 1
            continue
        seen[seq] = 1
        received += 1
        last = i
    return received, duplicates, last


class MailslotScenario(Scenario):
    """Two winipc mailslots, one per direction; delivery of a burst by the local writer."""

    name = "winipc-mailslot"
    mechanism = "winipc mailslots, one per direction"
    kinds = frozenset({RTT, THROUGHPUT, MESSAGES, DELIVERY})
    description = (
        "Mailslot() in each process, open_mailslot() of the other's; write() and read() of "
        "whole messages; delivery bursts by the local writer"
    )
    #: where delivery bursts go: "local", "broadcast" or "udp"
    route = "local"

    def serve(self, setup: Setup) -> _SlotListening:
        return _SlotListening(
            f"\\\\.\\mailslot\\winipc-bench-{setup.tag}-{self.name}", self.route != "local"
        )

    def _burst_writer(self, address: str) -> MailslotWriter | None:
        return None

    def connect(self, address: str, setup: Setup) -> Endpoint:
        mine = Mailslot(address + "-back", read_timeout=PATIENCE)
        writer: MailslotWriter | None = None
        try:
            writer = open_mailslot(address)
            writer.write(_HELLO + mine.name.encode())
            burst = self._burst_writer(address)
        except BaseException:
            if writer is not None:
                writer.close()
            mine.close()
            raise
        return _SlotEnd(mine, writer, burst=burst, owns_slot=True)

    def exchange(self, ep: Endpoint, metric: Metric, count: int, runner: bool) -> list[int]:
        if metric.kind != DELIVERY:
            return super().exchange(ep, metric, count, runner)
        assert isinstance(ep, _SlotEnd)
        return _burst(ep, metric.size, count) if runner else _receive(ep, metric.size, count)


def _burst(ep: _SlotEnd, size: int, count: int) -> list[int]:
    """Runner side of a delivery exchange: wait for the reader, write, say done."""
    ready = ep.slot.read(timeout=PATIENCE)
    if not ready.startswith(_READY) or len(ready) != len(_READY) + 4:
        raise BenchError(f"delivery: expected the reader's ready, got {ready[:40]!r}")
    (nonce,) = struct.unpack("<I", ready[len(_READY) :])
    messages = _payloads(nonce, size, count)
    write, clock = ep.burst.write, time.monotonic_ns
    with no_gc():
        start = clock()
        for msg in messages:
            write(msg)
        end = clock()
    ep.writer.write(b"")  # done: the local writer never drops, and keeps its order
    return [start, end, count]


def _receive(ep: _SlotEnd, size: int, count: int) -> list[int]:
    """Worker side of a delivery exchange: read until done, drain, verify, count."""
    nonce = int.from_bytes(os.urandom(4), "little")
    got: list[bytes] = []
    stamps: list[int] = []
    read, clock = ep.slot.read, time.monotonic_ns
    ep.writer.write(_READY + struct.pack("<I", nonce))
    with no_gc():
        while msg := read(timeout=PATIENCE):
            got.append(msg)
            stamps.append(clock())
        while True:
            try:
                msg = read(timeout=DRAIN)
            except W.SemTimeout:
                break
            if not msg:
                raise VerificationError("delivery: a second 'done' message")
            got.append(msg)
            stamps.append(clock())
    received, duplicates, last = _tally(got, nonce, size, count)
    return [received, duplicates, stamps[last] if last >= 0 else 0]


class MailslotBroadcastScenario(MailslotScenario):
    """Delivery of ``\\\\*\\mailslot\\x`` broadcasts (UDP) back to this host."""

    name = "winipc-mailslot-broadcast"
    group = "delivery"
    mechanism = "winipc mailslot broadcast, \\\\*\\mailslot\\x over UDP"
    kinds = frozenset({DELIVERY})
    description = (
        "bursts written to \\\\*\\mailslot\\x (a UDP datagram to each interface's broadcast "
        "address) and read back by the worker's Mailslot(accept_network=True)"
    )
    route = "broadcast"

    def unavailable(self) -> str | None:
        if not B.broadcast_addresses():
            return "no up, non-loopback IPv4 interface with a broadcast address to send to"
        return None

    def _burst_writer(self, address: str) -> MailslotWriter | None:
        with _udp_only():
            return open_mailslot(address.replace("\\\\.\\", "\\\\*\\", 1))


class MailslotUnicastScenario(MailslotScenario):
    """Delivery of UDP unicast mailslot messages to this host's own address."""

    name = "winipc-mailslot-udp"
    group = "delivery"
    mechanism = "winipc mailslot to a host, \\\\<own IPv4>\\mailslot\\x over UDP"
    kinds = frozenset({DELIVERY})
    description = (
        "bursts written to \\\\<this host's non-loopback IPv4 address>\\mailslot\\x (UDP "
        "unicast) and read by the worker's Mailslot(accept_network=True)"
    )
    route = "udp"

    def unavailable(self) -> str | None:
        if _own_address() is None:
            return "this host has no non-loopback IPv4 address (127.0.0.1 names the local mailslot)"
        return None

    def _burst_writer(self, address: str) -> MailslotWriter | None:
        host = _own_address()
        if host is None:
            raise BenchError(f"{self.name}: {self.unavailable()}")
        with _udp_only():
            return open_mailslot(address.replace("\\\\.\\", f"\\\\{host}\\", 1))


MAILSLOT = register(MailslotScenario())
MAILSLOT_BROADCAST = register(MailslotBroadcastScenario())
MAILSLOT_UDP = register(MailslotUnicastScenario())
