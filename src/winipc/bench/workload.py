"""The measurements, written once over :class:`~winipc.bench.registry.Endpoint`.

Round trip (runner side :func:`ping`, worker side :func:`echo`): the runner sends a unit,
the worker sends it back, the runner times each exchange with ``perf_counter_ns``. The
echoes are kept and checked against what was sent (CRC-32 over all of them, plus the
length of each) after the timed loop.

Throughput (runner side :func:`send_round`, worker side :func:`sink`): the runner sends
a *round* of units and waits for a one-byte acknowledgement; the round's time runs from
the first send to the acknowledgement, so it covers every byte reaching the receiver. The
receiver keeps the units it got and computes their CRC-32 only after it acknowledged, so
checksums stay out of the timed section, and memory stays bounded by the round size. A
receiver whose end has ``recv_into`` receives the whole round into one preallocated,
pre-touched buffer (:class:`RoundBuffer`) instead of a fresh object per unit.

Messages (runner side :func:`send_burst`, worker side :func:`take_messages`): a burst of
small messages one way, then the acknowledgement; figure: messages per second. Ends with
``send_many`` / ``recv_many`` get the messages in batches of :data:`MSG_BATCH`.

The physical limit (:class:`LimitSet`): the memcpy peer copies units cut from a set
larger than the last-level cache, a different window each round, so its source comes
from memory, not from the cache.

The cyclic garbage collector is off during timed loops on both sides (as ``timeit``
does), so a collection triggered by one scenario's allocations does not land in its
figures.

CRC-32 (``zlib.crc32``, ~2.4 GB/s here) is enough: the check is against transport bugs
(lost, reordered, duplicated or corrupted bytes), not against an adversary.
"""

from __future__ import annotations

import gc
import inspect
import mmap
import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from winipc.bench.registry import Buffer, Endpoint

ACK = b"k"
#: size of the random pool units are cut from (bytes); 1 MiB units at varying offsets
POOL_SIZE = 9 * 1024 * 1024
#: a prime stride, so consecutive units start at different offsets of the pool
_STRIDE = 104_729
#: messages per ``send_many`` call in a burst (and at most per ``recv_many`` call)
MSG_BATCH = 256
MiB = 1024 * 1024


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

    def round(self, size: int, round_bytes: int, max_units: int | None = None) -> list[bytes]:
        """One throughput round of units of ``size`` bytes, about ``round_bytes`` in all.

        Random data: ``round_bytes // size`` units (at least one, at most ``max_units``)
        from varying offsets (a unit larger than the pool repeats it from its offset). A
        file: the whole file chunked at ``size`` (the last chunk may be shorter), repeated
        so that a round holds about ``round_bytes`` (at least one pass). Units are
        ``bytes`` (copied here, outside any timed section), the type every sender takes
        as it is (a queue pickles it, a socket sends it).
        """
        if self.file is None:
            count = round_count(size, round_bytes, max_units)
            if size > len(self.data) - _STRIDE:  # larger than the pool (16 MiB units)
                return [_tiled(self.data, i * _STRIDE, size) for i in range(count)]
            span = len(self.data) - size
            offsets = ((i * _STRIDE) % span for i in range(count))
            return [self.data[o : o + size] for o in offsets]
        chunks = [self.data[o : o + size] for o in range(0, len(self.data), size)]
        passes = max(1, round_bytes // len(self.data))
        return chunks * passes


def _tiled(pool: bytes, start: int, size: int) -> bytes:
    """``size`` bytes of ``pool`` read from ``start`` round and round (a unit larger than
    the pool; units from different starts differ)."""
    out = bytearray(size)
    at, pos = start % len(pool), 0
    while pos < size:
        n = min(len(pool) - at, size - pos)
        out[pos : pos + n] = pool[at : at + n]
        pos, at = pos + n, 0
    return bytes(out)


def round_count(size: int, round_bytes: int, max_units: int | None = None) -> int:
    """Units of ``size`` bytes in a round of about ``round_bytes`` (at least one)."""
    count = max(1, round_bytes // size)
    return count if max_units is None else max(1, min(count, max_units))


# --------------------------------------------------------------------------- the limit
@dataclass(frozen=True)
class LimitSizing:
    """How large the memcpy limit's source set is, and why.

    Attributes:
        bytes: the size used.
        llc_bytes: the last-level cache the system reports (0 when it reports none).
        llc_level: that cache's level (3 for an L3), 0 when unknown.
        mem_available: MemAvailable from /proc/meminfo (0 when unknown).
        reason: one sentence for the notes.
    """

    bytes: int
    llc_bytes: int
    llc_level: int
    mem_available: int
    reason: str


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1024, "M": MiB, "G": 1024 * MiB}.get(text[-1:], 1)
    return int(text.rstrip("KMG") or 0) * scale


def last_level_cache(cpu_dir: str = "/sys/devices/system/cpu/cpu0/cache") -> tuple[int, int]:
    """(size in bytes, level) of the largest-level data or unified cache of CPU 0; (0, 0)
    when the system does not say."""
    best = (0, 0)
    try:
        entries = sorted(e for e in os.listdir(cpu_dir) if e.startswith("index"))
    except OSError:
        return best
    for entry in entries:
        try:
            with open(os.path.join(cpu_dir, entry, "level"), encoding="ascii") as fh:
                level = int(fh.read())
            with open(os.path.join(cpu_dir, entry, "type"), encoding="ascii") as fh:
                kind = fh.read().strip()
            with open(os.path.join(cpu_dir, entry, "size"), encoding="ascii") as fh:
                size = _parse_size(fh.read())
        except (OSError, ValueError):
            continue
        if kind != "Instruction" and (level, size) > (best[1], best[0]):
            best = (size, level)
    return best


def mem_available(meminfo: str = "/proc/meminfo") -> int:
    """MemAvailable in bytes, 0 when unknown."""
    try:
        with open(meminfo, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


#: the limit's source set is at least this large, whatever the cache says
LIMIT_FLOOR = 64 * MiB


def limit_sizing(llc: tuple[int, int] | None = None, available: int | None = None) -> LimitSizing:
    """The size of the memcpy limit's source: ``max(2 x LLC, 64 MiB)``, capped at a
    quarter of MemAvailable (a VM may report its host's cache, hundreds of MiB)."""
    llc_bytes, level = last_level_cache() if llc is None else llc
    avail = mem_available() if available is None else available
    want = max(2 * llc_bytes, LIMIT_FLOOR)
    where = f"L{level} {llc_bytes // MiB} MiB" if llc_bytes else "no cache size reported"
    size, why = want, f"max(2 x LLC, 64 MiB) with {where}"
    if avail and want > avail // 4:
        size = max(LIMIT_FLOOR, avail // 4 // MiB * MiB)
        why += f", capped at a quarter of MemAvailable ({avail // MiB} MiB)"
    reason = (
        f"memcpy-limit copies from a {size // MiB} MiB source set ({why}), larger than the "
        f"last-level cache, so its source comes from memory"
    )
    return LimitSizing(size, llc_bytes, level, avail, reason)


class LimitSet:
    """The memcpy limit's source: ``size`` bytes of pre-touched memory, and a cursor.

    Filled by tiling a random block whose length is not a power of two, so a unit taken
    from a wrong offset fails verification. Each round takes the next window of the set
    (wrapping), so a round never copies bytes that an earlier round left in the cache
    until the whole set has been read.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._map = mmap.mmap(-1, size)
        block = os.urandom(4 * MiB + 4099)
        for at in range(0, size, len(block)):
            n = min(len(block), size - at)
            self._map[at : at + n] = block[:n]
        self._view = memoryview(self._map)
        self._cursor = 0

    def round(self, size: int, round_bytes: int, max_units: int | None = None) -> list[memoryview]:
        """The next window of the set as units of ``size`` bytes (see :meth:`Source.round`)."""
        count = round_count(size, round_bytes, max_units)
        span = count * size
        if span > self.size:
            raise ValueError(f"a round of {span} bytes is larger than the limit's set ({self.size})")
        if self._cursor + span > self.size:
            self._cursor = 0
        at, self._cursor = self._cursor, self._cursor + span
        view = self._view
        return [view[at + i * size : at + (i + 1) * size] for i in range(count)]

    def close(self) -> None:
        """Release the memory now, or when the last unit handed out is gone (a unit
        still referenced, say by a traceback, keeps the mapping alive until then)."""
        self._view.release()
        try:
            self._map.close()
        except BufferError:
            pass


class RoundBuffer:
    """One preallocated, pre-touched buffer a receiver fills round after round."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def view(self, size: int) -> memoryview:
        """A view of ``size`` bytes (the buffer grows, pre-touched, when it must)."""
        if len(self._buf) < size:
            self._buf = prefaulted(size)
        return memoryview(self._buf)[:size]


def prefaulted(size: int) -> bytearray:
    """``size`` bytes of private memory with every page already faulted in."""
    buf = bytearray(size)
    page = mmap.PAGESIZE
    buf[::page] = b"\1" * len(range(0, size, page))
    return buf


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

    def _damage(self, data: Buffer) -> Buffer:
        if self._count == self._at:
            damaged = bytearray(data)
            damaged[len(damaged) // 2] ^= 0x01
            data = damaged
        self._count += 1
        return data

    def send(self, data: Buffer) -> None:
        self._inner.send(self._damage(data))

    def send_many(self, units: Sequence[Buffer]) -> None:
        """Batches stay batches (through the inner end's ``send_many`` when it has one)."""
        units = [self._damage(u) for u in units]
        send_many = getattr(self._inner, "send_many", None)
        if send_many is not None:
            send_many(units)
        else:
            for u in units:
                self._inner.send(u)

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
    """What the receiver of a round (or a burst) got.

    Attributes:
        crc32: CRC-32 of everything received, in order.
        nbytes: bytes received.
        units: units (messages or chunks) received.
    """

    crc32: int
    nbytes: int
    units: int


def sink(
    ep: Endpoint,
    size: int,
    total: int,
    period: int | None = None,
    buffer: RoundBuffer | None = None,
) -> SinkResult:
    """Worker side of :func:`send_round`: receive ``total`` bytes in units of ``size``.

    The sender cuts every ``period`` bytes (a file's length: each pass of the file is
    chunked on its own) into units of ``size``, the last one shorter; the receiver
    expects the same units. The acknowledgement goes out as soon as the last byte
    arrived, and the checksum is computed after it. An end with ``recv_into`` receives
    the round into ``buffer`` (one preallocated, pre-touched buffer reused every round).

    Args:
        ep: the connected end.
        size: bytes per unit.
        total: bytes in the round.
        period: bytes per pass; None for one pass of ``total``.
        buffer: where an end with ``recv_into`` receives (a new one if None).

    Raises:
        VerificationError: a unit of the wrong length arrived (message transports).
    """
    period = total if period is None else period
    recv_into: Callable[[memoryview], int] | None = getattr(ep, "recv_into", None)
    if recv_into is not None:
        view = (buffer or RoundBuffer()).view(total)
        nbytes = units = 0
        with no_gc():
            while nbytes < total:
                want = min(size, period - nbytes % period, total - nbytes)
                got = recv_into(view[nbytes : nbytes + want])
                if got != want:
                    raise VerificationError(
                        f"throughput: unit {units} is {got} bytes, expected {want}"
                    )
                nbytes += want
                units += 1
            ep.send(ACK)
        crc = zlib.crc32(view)
        view.release()
        return SinkResult(crc, nbytes, units)
    recv = ep.recv
    got_units: list[Buffer] = []
    nbytes = 0
    with no_gc():
        while nbytes < total:
            want = min(size, period - nbytes % period, total - nbytes)
            unit = recv(want)
            if len(unit) != want:
                raise VerificationError(
                    f"throughput: unit {len(got_units)} is {len(unit)} bytes, expected {want}"
                )
            got_units.append(unit)
            nbytes += want
        ep.send(ACK)
    return SinkResult(crc32_of(got_units), nbytes, len(got_units))


# --------------------------------------------------------------------------- messages
def batches(units: Sequence[Buffer], per: int = MSG_BATCH) -> list[list[Buffer]]:
    """``units`` cut into lists of ``per`` (the last one shorter)."""
    return [list(units[i : i + per]) for i in range(0, len(units), per)]


def send_burst(ep: Endpoint, units: Sequence[Buffer], groups: Sequence[Sequence[Buffer]]) -> int:
    """Runner side of the ``messages`` metric: send a burst, wait for the acknowledgement.

    Args:
        ep: the connected end.
        units: the messages, one by one (for an end without ``send_many``).
        groups: the same messages in batches (:func:`batches`, for ``send_many``).

    Returns:
        ns from the first send to the acknowledgement.

    Raises:
        VerificationError: the acknowledgement is not the expected byte.
    """
    clock = time.perf_counter_ns
    send_many: Callable[[Sequence[Buffer]], None] | None = getattr(ep, "send_many", None)
    with no_gc():
        t0 = clock()
        if send_many is not None:
            for group in groups:
                send_many(group)
        else:
            send = ep.send
            for unit in units:
                send(unit)
        ack = ep.recv(1)
        elapsed = clock() - t0
    if bytes(ack) != ACK:
        raise VerificationError(f"messages: expected the acknowledgement {ACK!r}, got {bytes(ack)!r}")
    return elapsed


def recv_many_of(ep: Endpoint) -> Callable[[int, int], Sequence[Buffer]] | None:
    """``ep.recv_many`` as a function of (max, size), or None when the end has none.

    A ``recv_many(max)`` that takes no unit size (a message transport) is called with
    ``max`` alone.
    """
    fn: Callable[..., Sequence[Buffer]] | None = getattr(ep, "recv_many", None)
    if fn is None:
        return None
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return fn
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params):
        return fn
    only_max: Callable[[int], Sequence[Buffer]] = fn

    def recv_many(count: int, size: int) -> Sequence[Buffer]:
        return only_max(count)

    return recv_many


def take_messages(ep: Endpoint, size: int, count: int, buffer: RoundBuffer | None = None) -> SinkResult:
    """Worker side of :func:`send_burst`: receive ``count`` messages of ``size`` bytes.

    Takes them with ``recv_many`` when the end has it (and does not raise
    ``NotImplementedError`` from it, before reading anything, as a byte-mode end may),
    else into ``buffer`` with ``recv_into``, else one ``recv`` each; acknowledges as soon
    as the last one arrived, then checks every message's length and computes the CRC-32
    of all of them.

    Raises:
        VerificationError: a message of the wrong length arrived.
    """
    recv_many = recv_many_of(ep)
    recv_into: Callable[[memoryview], int] | None = getattr(ep, "recv_into", None)
    got: list[Buffer] = []
    if recv_many is not None:
        try:
            got += recv_many(count, size)
        except NotImplementedError:  # not on this kind of end (a byte stream): nothing read
            recv_many = None
    if recv_many is not None:
        with no_gc():
            while len(got) < count:
                got += recv_many(count - len(got), size)
            ep.send(ACK)
    elif recv_into is not None:
        view = (buffer or RoundBuffer()).view(size * count)
        lengths = [0] * count
        with no_gc():
            for i in range(count):
                lengths[i] = recv_into(view[i * size : (i + 1) * size])
            ep.send(ACK)
        bad = next((i for i, n in enumerate(lengths) if n != size), None)
        if bad is not None:
            view.release()
            raise VerificationError(f"messages: message {bad} is {lengths[bad]} bytes, expected {size}")
        crc = zlib.crc32(view)
        view.release()
        return SinkResult(crc, size * count, count)
    else:
        recv = ep.recv
        got = [b""] * count
        with no_gc():
            for i in range(count):
                got[i] = recv(size)
            ep.send(ACK)
    if len(got) != count:
        raise VerificationError(f"messages: {len(got)} messages arrived, {count} were sent")
    for i, unit in enumerate(got):
        if len(unit) != size:
            raise VerificationError(f"messages: message {i} is {len(unit)} bytes, expected {size}")
    return SinkResult(crc32_of(got), size * count, count)


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
