"""Bench scenarios for file mappings, and the physical limit every throughput is held to.

``winipc-mapping``: the runner copies each unit into a ring in a named
:class:`~winipc.mapping.FileMapping` that the worker opened; the worker copies it out (a
fresh ``bytes`` per unit, like every other receiver) and the CRC of what it read is
verified. Ordering comes from small doorbell messages on an AF_UNIX socket (a system
call on each side, which orders the memory): the writer announces how far it has written
at least every :data:`DOORBELL` bytes, the reader how far it has read, so the writer
never overwrites unread bytes. Both copies and every doorbell are timed.

``memcpy-limit`` (the limit, :attr:`~winipc.bench.registry.Scenario.limit`): one core
copying units of the same size with ``memcpy`` (``bytearray`` slice assignment) into a
pre-touched destination of the runner process, nothing else timed. Its units come from a
source set larger than the last-level cache (:class:`winipc.bench.workload.LimitSet`,
each round a fresh window), where every other scenario sends from the runner's 9 MiB
random pool: a cache-resident source makes memcpy look about twice as fast as memory
allows. The copied bytes then go to the worker over a socket, outside the timed
section, to be verified the same way as every other round.

The mapping is a way of moving bytes between processes like the others, so it is in the
``transport`` group, compared with the best transport peer.

Importing this module registers both scenarios.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import queue
import socket
import struct
import threading

from winipc.bench.registry import THROUGHPUT, Buffer, Endpoint, Scenario, Setup, register
from winipc.bench.scenarios import _recv_exact
from winipc.bench.workload import ACK, VerificationError, prefaulted
from winipc.mapping import FILE_MAP_WRITE, FileMapping, MappedView

#: bytes of the ring in the mapping (and the memcpy peer's first destination size)
RING_SIZE = 64 * 1024 * 1024
#: the writer rings (and the reader credits) at least this often, in bytes
DOORBELL = 1024 * 1024
_MSG = struct.Struct("<cQ")
_WRITTEN, _CONSUMED, _BYTES = b"W", b"C", b"B"


class _Control:
    """The doorbell socket: (kind, counter) messages and inline byte messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox: list[bytes] = []

    def ring(self, kind: bytes, value: int) -> None:
        self.sock.sendall(_MSG.pack(kind, value))

    def send_bytes(self, data: Buffer) -> None:
        self.sock.sendall(_MSG.pack(_BYTES, len(data)) + bytes(data))

    def next(self) -> tuple[bytes, int]:
        """The next message; the payload of an inline byte message goes to ``inbox``."""
        kind, value = _MSG.unpack(_recv_exact(self.sock, _MSG.size))
        if kind == _BYTES:
            self.inbox.append(bytes(_recv_exact(self.sock, value)))
        return kind, value


def _touch(ring: memoryview, write: bool) -> None:
    """Fault in every page of the ring in this process, before anything is timed: the
    first round would otherwise measure page faults of a fresh mapping, not copies."""
    pages = ring[:: mmap.PAGESIZE]
    if write:
        pages[:] = bytes(len(pages))
    else:
        bytes(pages)


class _RingWriter:
    """Runner side of ``winipc-mapping``: copies units into the ring."""

    def __init__(self, mapping: FileMapping, view: MappedView, ctl: _Control) -> None:
        self._mapping = mapping
        self._view = view
        with memoryview(view) as ring:
            _touch(ring, write=True)
        self._ctl = ctl
        self._written = 0
        self._announced = 0
        self._consumed = 0

    def _announce(self) -> None:
        if self._written != self._announced:
            self._ctl.ring(_WRITTEN, self._written)
            self._announced = self._written

    def send(self, data: Buffer) -> None:
        src = memoryview(data)
        n, pos, view = len(src), 0, self._view
        while pos < n:
            free = RING_SIZE - (self._written - self._consumed)
            if free == 0:
                self._announce()
                while free == 0:
                    kind, value = self._ctl.next()
                    if kind == _CONSUMED:
                        self._consumed = value
                    free = RING_SIZE - (self._written - self._consumed)
            at = self._written % RING_SIZE
            chunk = min(n - pos, free, RING_SIZE - at)
            view[at : at + chunk] = src[pos : pos + chunk]
            self._written += chunk
            pos += chunk
            if self._written - self._announced >= DOORBELL:
                self._announce()

    def recv(self, size: int) -> Buffer:
        self._announce()
        while not self._ctl.inbox:
            kind, value = self._ctl.next()
            if kind == _CONSUMED:
                self._consumed = value
        return self._ctl.inbox.pop(0)

    def close(self) -> None:
        self._view.close()
        self._mapping.close()
        self._ctl.sock.close()


class _RingReader:
    """Worker side of ``winipc-mapping``: copies units out of the ring.

    ``recv_into`` copies a unit straight into the receiver's round buffer. ``recv`` copies
    it into private round buffers (allocated and faulted in once, reused every round)
    and returns a slice of them, valid until the next round starts (after the
    acknowledgement, when the runner has had the checksum). Allocating fresh memory per
    unit would measure page faults instead of the mapping.
    """

    def __init__(self, view: MappedView, ctl: _Control) -> None:
        self._view = view
        self._ring = memoryview(view)
        _touch(self._ring, write=False)
        self._ctl = ctl
        self._known = 0
        self._read = 0
        self._credited = 0
        self._buffers: list[memoryview] = []
        self._buf_index = 0
        self._buf_pos = 0
        self._new_round = True

    def _room(self, size: int) -> memoryview:
        """A private slice of ``size`` bytes for the next unit of this round."""
        if self._new_round:
            self._buf_index, self._buf_pos, self._new_round = 0, 0, False
        if self._buffers and self._buf_pos + size > len(self._buffers[self._buf_index]):
            self._buf_index, self._buf_pos = self._buf_index + 1, 0
        if self._buf_index == len(self._buffers):
            self._buffers.append(memoryview(prefaulted(max(RING_SIZE, size))))
        start = self._buf_pos
        self._buf_pos += size
        return self._buffers[self._buf_index][start : start + size]

    def recv(self, size: int) -> Buffer:
        out = self._room(size)
        self.recv_into(out)
        return out

    def recv_into(self, out: memoryview) -> int:
        """Copy the next ``len(out)`` bytes out of the ring into ``out``."""
        size = len(out)
        if size > RING_SIZE - DOORBELL:
            raise ValueError(f"unit of {size} bytes is larger than the ring allows ({RING_SIZE - DOORBELL})")
        while self._known - self._read < size:
            kind, value = self._ctl.next()
            if kind == _WRITTEN:
                self._known = value
        at = self._read % RING_SIZE
        first = min(size, RING_SIZE - at)
        out[:first] = self._ring[at : at + first]
        if first < size:
            out[first:] = self._ring[: size - first]
        self._read += size
        if self._read - self._credited >= DOORBELL:
            self._ctl.ring(_CONSUMED, self._read)
            self._credited = self._read
        return size

    def send(self, data: Buffer) -> None:
        self._new_round = True
        self._ctl.send_bytes(data)

    def close(self) -> None:
        self._ring.release()
        self._view.close()
        self._ctl.sock.close()


class _Listening:
    """A control socket in the workdir (and, for the mapping, the mapping itself)."""

    def __init__(self, path: str, mapping: FileMapping | None) -> None:
        self._path = path
        self._mapping = mapping
        self.address = json.dumps({"socket": path, "mapping": mapping.name if mapping else None})
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(path)
            self._sock.listen(1)
        except BaseException:
            self.close()
            raise

    def accept(self, timeout: float | None) -> Endpoint:
        self._sock.settimeout(timeout)
        conn, _ = self._sock.accept()
        conn.settimeout(None)
        ctl = _Control(conn)
        if self._mapping is None:
            return _CopyReceiver(ctl)
        return _RingReader(self._mapping.map_view(), ctl)

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        if self._mapping is not None:
            self._mapping.close()


def _connect(address: str) -> tuple[dict[str, str | None], _Control]:
    where = json.loads(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(where["socket"]))
    except BaseException:
        sock.close()
        raise
    return where, _Control(sock)


class MappingScenario(Scenario):
    """winipc: units copied into a ring in a named FileMapping, copied out by the other process."""

    name = "winipc-mapping"
    group = "transport"
    mechanism = "winipc FileMapping ring (copy in, copy out)"
    kinds = frozenset({THROUGHPUT})
    description = (
        "FileMapping.create(name, 64 MiB) in the worker, FileMapping.open(name, FILE_MAP_WRITE) "
        "in the runner; slice assignment into a view, bytes out of it, AF_UNIX doorbells "
        "every 1 MiB"
    )

    def serve(self, setup: Setup) -> _Listening:
        mapping = FileMapping.create(f"Local\\winipc-bench-{setup.tag}-{self.name}", RING_SIZE)
        try:
            return _Listening(os.path.join(setup.workdir, f"{self.name}.sock"), mapping)
        except BaseException:
            mapping.close()
            raise

    def connect(self, address: str, setup: Setup) -> Endpoint:
        where, ctl = _connect(address)
        try:
            mapping = FileMapping.open(str(where["mapping"]), FILE_MAP_WRITE)
        except BaseException:
            ctl.sock.close()
            raise
        try:
            view = mapping.map_view(access=FILE_MAP_WRITE)
        except BaseException:
            mapping.close()
            ctl.sock.close()
            raise
        return _RingWriter(mapping, view, ctl)


# --------------------------------------------------------------------------- the limit
class _CopyReceiver:
    """Worker side of ``memcpy-limit``: the copied bytes, for verification only."""

    def __init__(self, ctl: _Control) -> None:
        self._ctl = ctl

    def recv(self, size: int) -> Buffer:
        return bytes(_recv_exact(self._ctl.sock, size))

    def recv_into(self, buffer: memoryview) -> int:
        got, size, recv_into = 0, len(buffer), self._ctl.sock.recv_into
        while got < size:
            n = recv_into(buffer[got:])
            if n == 0:
                raise EOFError(f"socket: end of file after {got} of {size} bytes")
            got += n
        return got

    def send(self, data: Buffer) -> None:
        self._ctl.sock.sendall(bytes(data))

    def close(self) -> None:
        self._ctl.sock.close()


class _MemcpyEndpoint:
    """Runner side of ``memcpy-limit``: memcpy into private memory; verified afterwards.

    ``recv`` (the end of a timed round) hands the round's bytes to a helper thread that
    sends them to the worker, and returns the acknowledgement at once. The helper also
    reads the worker's own acknowledgement of each round: left unread, they would fill
    the socket (about 280 one-byte writes) and stop the worker in the middle of a cell.
    """

    def __init__(self, ctl: _Control) -> None:
        self._ctl = ctl
        self._dst = prefaulted(RING_SIZE)
        self._used = 0
        self._jobs: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._verify_loop, name="memcpy-verify", daemon=True)
        self._thread.start()

    def _verify_loop(self) -> None:
        while (length := self._jobs.get()) is not None:
            try:
                self._ctl.sock.sendall(memoryview(self._dst)[:length])
                ack = _recv_exact(self._ctl.sock, len(ACK))
                if bytes(ack) != ACK:
                    raise VerificationError(
                        f"memcpy-limit: expected the acknowledgement {ACK!r}, got {bytes(ack)!r}"
                    )
            except BaseException as exc:  # reported by the next send or recv
                self._error = exc
            finally:
                self._idle.set()

    def send(self, data: Buffer) -> None:
        if not self._idle.is_set():
            self._idle.wait()  # the previous round is still on its way to the worker
        n, at = len(data), self._used
        if at + n > len(self._dst):  # a round larger than the buffer (big payload files)
            self._dst.extend(bytes(at + n - len(self._dst)))
        self._dst[at : at + n] = data
        self._used = at + n

    def recv(self, size: int) -> Buffer:
        if self._error is not None:
            raise self._error
        self._idle.clear()
        self._jobs.put(self._used)
        self._used = 0
        return b"k"

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(10)
        self._ctl.sock.close()


class MemcpyScenario(Scenario):
    """The limit: ``memcpy`` of the same units, from a set larger than the LLC, on one core."""

    name = "memcpy-limit"
    group = "transport"
    mechanism = "single-core memcpy from a source larger than the last-level cache"
    limit = True
    kinds = frozenset({THROUGHPUT})
    description = (
        "units cut from a source set of max(2 x LLC, 64 MiB) (capped at MemAvailable/4), a "
        "fresh window each round, copied into a pre-touched 64 MiB bytearray in the runner; "
        "only the copies are timed; the bytes go to the worker afterwards for verification"
    )

    def serve(self, setup: Setup) -> _Listening:
        return _Listening(os.path.join(setup.workdir, f"{self.name}.sock"), None)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        _where, ctl = _connect(address)
        return _MemcpyEndpoint(ctl)


MAPPING = register(MappingScenario())
MEMCPY = register(MemcpyScenario())
