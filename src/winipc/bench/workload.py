"""The measurements, written once over :class:`~winipc.bench.registry.Endpoint`.

Round trip (runner side :func:`ping`, worker side :func:`echo`): the runner sends a unit,
the worker sends it back, the runner times each exchange with ``perf_counter_ns``. The
echoes are kept and checked against what was sent (CRC-32 over all of them, plus the
length of each) after the timed loop.

Throughput (runner side :func:`send_round`, worker side :func:`sink`): the runner sends
a *round* of units and waits for a one-byte acknowledgement; the round's time runs from
the first send to the acknowledgement, so it covers every byte reaching the receiver. The
receiver keeps the units it got and computes their CRC-32 only after it acknowledged, so
checksums stay out of the timed section, and memory stays bounded by the round size.

The cyclic garbage collector is off during timed loops on both sides (as ``timeit``
does), so a collection triggered by one scenario's allocations does not land in its
figures.

CRC-32 (``zlib.crc32``, ~2.4 GB/s here) is enough: the check is against transport bugs
(lost, reordered, duplicated or corrupted bytes), not against an adversary.
"""

from __future__ import annotations

import gc
import os
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from winipc.bench.registry import Buffer, Endpoint

ACK = b"k"
#: size of the random pool units are cut from (bytes); 1 MiB units at varying offsets
POOL_SIZE = 9 * 1024 * 1024
#: a prime stride, so consecutive units start at different offsets of the pool
_STRIDE = 104_729


@contextmanager
def no_gc() -> Iterator[None]:
    """Turn the cyclic garbage collector off for the block (restored after)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def crc32_of(units: Iterable[Buffer]) -> int:
    """CRC-32 of the concatenation of ``units``."""
    crc = 0
    for u in units:
        crc = zlib.crc32(u, crc)
    return crc


class BenchError(Exception):
    """A bench run failed (a worker died, timed out, or answered with an error)."""


class VerificationError(BenchError):
    """Data received differs from data sent: the bench run is invalid."""


# --------------------------------------------------------------------------- data sources
@dataclass(frozen=True)
class Source:
    """Where the bytes come from: a random pool, or a file moved as it is.

    Attributes:
        data: the pool (random) or the file's content.
        file: the file's path, or None for random data.
    """

    data: bytes
    file: str | None = None

    @classmethod
    def random(cls, size: int = POOL_SIZE) -> Source:
        """A pool of ``size`` random bytes."""
        return cls(os.urandom(size))

    @classmethod
    def from_file(cls, path: str) -> Source:
        """The content of ``path``.

        Raises:
            ValueError: the file is empty.
        """
        with open(path, "rb") as fh:
            data = fh.read()
        if not data:
            raise ValueError(f"payload file {path!r} is empty")
        return cls(data, os.path.abspath(path))

    def round(self, size: int, round_bytes: int) -> list[memoryview]:
        """One throughput round of units of ``size`` bytes, about ``round_bytes`` in all.

        Random data: ``round_bytes // size`` units (at least one) from varying offsets.
        A file: the whole file chunked at ``size`` (the last chunk may be shorter),
        repeated so that a round holds about ``round_bytes`` (at least one pass).
        """
        view = memoryview(self.data)
        if self.file is None:
            count = max(1, round_bytes // size)
            span = len(self.data) - size
            offsets = ((i * _STRIDE) % span for i in range(count))
            return [view[o : o + size] for o in offsets]
        chunks = [view[o : o + size] for o in range(0, len(self.data), size)]
        passes = max(1, round_bytes // len(self.data))
        return chunks * passes


def rtt_units(pool: bytes, size: int, count: int, start: int = 0) -> list[bytes]:
    """``count`` units of ``size`` bytes cut from ``pool`` at varying offsets (round trips).

    Consecutive units differ, so a stale or duplicated echo fails verification.
    """
    span = len(pool) - size
    return [pool[o : o + size] for o in (((start + i) * _STRIDE) % span for i in range(count))]


# --------------------------------------------------------------------------- faults (tests)
class Corrupting:
    """An :class:`Endpoint` that flips one bit of the ``at``-th unit it sends (0-based).

    Used by ``winipc bench --inject-fault`` to prove that verification catches damage.
    """

    def __init__(self, inner: Endpoint, at: int = 1) -> None:
        self._inner = inner
        self._at = at
        self._count = 0

    def send(self, data: Buffer) -> None:
        if self._count == self._at:
            damaged = bytearray(data)
            damaged[len(damaged) // 2] ^= 0x01
            data = damaged
        self._count += 1
        self._inner.send(data)

    def recv(self, size: int) -> Buffer:
        return self._inner.recv(size)

    def close(self) -> None:
        self._inner.close()


# --------------------------------------------------------------------------- round trip
def ping(ep: Endpoint, units: Sequence[bytes]) -> list[int]:
    """Runner side: send each unit, wait for its echo; return each round trip in ns.

    Raises:
        VerificationError: an echo differs from what was sent.
    """
    clock = time.perf_counter_ns
    times = [0] * len(units)
    echoes: list[Buffer] = [b""] * len(units)
    with no_gc():
        for i, unit in enumerate(units):
            t0 = clock()
            ep.send(unit)
            echoes[i] = ep.recv(len(unit))
            times[i] = clock() - t0
    for i, (sent, got) in enumerate(zip(units, echoes, strict=True)):
        if len(got) != len(sent):
            raise VerificationError(
                f"round trip {i}: echo is {len(got)} bytes, {len(sent)} were sent"
            )
    want, have = crc32_of(units), crc32_of(echoes)
    if want != have:
        bad = next(i for i, (s, g) in enumerate(zip(units, echoes, strict=True)) if bytes(g) != s)
        raise VerificationError(
            f"round trip: checksum mismatch (crc32 sent {want:08x}, echoed {have:08x}); "
            f"first damaged echo is #{bad}"
        )
    return times


def echo(ep: Endpoint, size: int, count: int) -> None:
    """Worker side of :func:`ping`: receive and send back ``count`` units of ``size`` bytes."""
    recv, send = ep.recv, ep.send
    with no_gc():
        for _ in range(count):
            send(recv(size))


# --------------------------------------------------------------------------- throughput
def send_round(ep: Endpoint, units: Sequence[Buffer]) -> int:
    """Runner side: send ``units``, wait for the receiver's acknowledgement; return ns.

    Raises:
        VerificationError: the acknowledgement is not the expected byte.
    """
    clock = time.perf_counter_ns
    send = ep.send
    with no_gc():
        t0 = clock()
        for unit in units:
            send(unit)
        ack = ep.recv(1)
        elapsed = clock() - t0
    if bytes(ack) != ACK:
        raise VerificationError(
            f"throughput: expected the acknowledgement {ACK!r}, got {bytes(ack)!r}"
        )
    return elapsed


@dataclass(frozen=True)
class SinkResult:
    """What the receiver of a round got.

    Attributes:
        crc32: CRC-32 of everything received, in order.
        nbytes: bytes received.
        units: units (messages or chunks) received.
    """

    crc32: int
    nbytes: int
    units: int


def sink(ep: Endpoint, size: int, total: int, period: int | None = None) -> SinkResult:
    """Worker side of :func:`send_round`: receive ``total`` bytes in units of ``size``.

    The sender cuts every ``period`` bytes (a file's length: each pass of the file is
    chunked on its own) into units of ``size``, the last one shorter; the receiver
    expects the same units. The acknowledgement goes out as soon as the last byte
    arrived, and the checksum is computed after it.

    Args:
        ep: the connected end.
        size: bytes per unit.
        total: bytes in the round.
        period: bytes per pass; None for one pass of ``total``.

    Raises:
        VerificationError: a unit of the wrong length arrived (message transports).
    """
    recv = ep.recv
    got: list[Buffer] = []
    nbytes = 0
    period = total if period is None else period
    with no_gc():
        while nbytes < total:
            want = min(size, period - nbytes % period, total - nbytes)
            unit = recv(want)
            if len(unit) != want:
                raise VerificationError(
                    f"throughput: unit {len(got)} is {len(unit)} bytes, expected {want}"
                )
            got.append(unit)
            nbytes += want
        ep.send(ACK)
    return SinkResult(crc32_of(got), nbytes, len(got))


# --------------------------------------------------------------------------- signals (sync)
def wake_latencies(signaled: Sequence[int], woke: Sequence[int]) -> list[int]:
    """Set-to-wake latencies (ns) from the signaler's and the waiter's stamps.

    Args:
        signaled: the signaling side's stamps, each taken just before a signal.
        woke: the waiting side's stamps, each taken just after a wake.

    Raises:
        VerificationError: a count differs, or a wake is not between its signal and the
            next one (a lost, spurious or doubled wake).
    """
    if len(signaled) != len(woke):
        raise VerificationError(f"signal/wake: {len(signaled)} signals, {len(woke)} wakes")
    for i, (s, w) in enumerate(zip(signaled, woke, strict=True)):
        if w < s or (i + 1 < len(signaled) and w > signaled[i + 1]):
            raise VerificationError(
                f"signal/wake: wake #{i} is not between signal #{i} and the next one"
            )
    return [w - s for s, w in zip(signaled, woke, strict=True)]


def handoffs(first: Sequence[int], second: Sequence[int]) -> tuple[int, int]:
    """Hand-offs and the ns they took, from two sides' stamps of their strict turns.

    ``first`` took turns 0, 2, 4, ...; ``second`` turns 1, 3, 5, ... The first hand-off
    (which includes the second side's start) is not counted.

    Raises:
        VerificationError: the turns did not strictly alternate, or a count differs.
    """
    if len(first) != len(second) or len(first) < 2:
        raise VerificationError(f"hand-off: {len(first)} and {len(second)} turns")
    merged = [t for pair in zip(first, second, strict=True) for t in pair]
    if any(merged[j + 1] < merged[j] for j in range(len(merged) - 1)):
        raise VerificationError("hand-off: the two processes' turns did not alternate")
    return len(merged) - 2, merged[-1] - merged[1]


# --------------------------------------------------------------------------- delivery
@dataclass(frozen=True)
class Delivery:
    """One burst of best-effort messages, from both sides' accounts.

    Attributes:
        sent: messages the writer wrote.
        received: distinct messages the reader received intact (each at most once).
        duplicates: further copies of messages already received (a broadcast that left
            by several interfaces comes back once per interface).
        send_ns: from the first write to the end of the last (the writer's pace).
        deliver_ns: from the first write to the receipt of the last message received.
    """

    sent: int
    received: int
    duplicates: int
    send_ns: int
    deliver_ns: int


def deliveries(writer: Sequence[int], reader: Sequence[int]) -> Delivery:
    """A burst's figures from the writer's and the reader's sides of a ``delivery`` exchange.

    Args:
        writer: ``[first write stamp, end of the last write stamp, messages written]``.
        reader: ``[messages received, duplicates, stamp of the last one received]``
            (``time.monotonic_ns``, one clock for every process).

    Raises:
        VerificationError: a side's account is malformed, more messages arrived than
            were sent, or the last one arrived before the first was written.
    """
    if len(writer) != 3 or len(reader) != 3:
        raise VerificationError(f"delivery: malformed accounts {list(writer)} and {list(reader)}")
    start, end, sent = writer
    received, duplicates, last = reader
    if sent < 1 or received > sent or min(received, duplicates) < 0 or end < start:
        raise VerificationError(
            f"delivery: {received} messages received (and {duplicates} duplicates) of {sent} sent"
        )
    if received and last < start:
        raise VerificationError("delivery: the last message arrived before the first was written")
    return Delivery(sent, received, duplicates, end - start, last - start if received else 0)
