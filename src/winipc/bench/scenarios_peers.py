"""More peers, each used with its best plain API, and winipc's anonymous pipes.

The peers (``peer=True``), beside ``af-unix-stream`` and ``mp-pipe``
(:mod:`winipc.bench.scenarios`):

* ``af-unix-seqpacket``: a raw AF_UNIX ``SOCK_SEQPACKET`` socket bound to a path in the
  run's workdir. A packet must fit in the sender's buffer, so both ends raise
  ``SO_SNDBUF`` and ``SO_RCVBUF`` to :data:`SEQPACKET_BUFFER` (the kernel doubles it; the
  default, about 208 KiB, cannot carry a 1 MiB message). ``send()`` per message;
  ``recv_into(..., MSG_TRUNC)``, which gives a longer message's real length.
* ``os-pipe``: two kernel pipes, one per direction. ``os.pipe()`` only reaches a process
  that inherits it, and the worker is an unrelated process, so the pipes are FIFOs made
  with ``os.mkfifo`` in the run's private workdir: the same kernel object, opened by
  path. Each pipe's buffer is raised to :data:`PIPE_SIZE` with ``F_SETPIPE_SZ`` (the
  unprivileged maximum by default). ``os.write`` / ``os.writev``, ``os.readv``.
* ``tcp-loopback``: TCP over 127.0.0.1 with ``TCP_NODELAY``; the runner first sends the
  run's secret, so a stranger that connects first is refused. ``sendall``,
  ``sendmsg`` (gather), ``recv_into``.
* ``mp-queue``: ``multiprocessing.Queue`` (spawn context): ``put()`` / ``get()``.
* ``zmq-pair`` (pyzmq, ``winipc[peers]``): a PAIR socket over ``ipc://`` in the
  workdir; ``send()`` (``copy=False`` from 64 KiB, pyzmq's own copy threshold),
  ``recv()``, ``recv_into()`` (pyzmq 26.4 and later); batches are multipart messages
  (``send_multipart`` / ``recv_multipart``), pyzmq's way of moving many frames per call.
* ``faster-fifo`` (faster-fifo, ``winipc[peers]``): ``faster_fifo.Queue`` with a
  :data:`FIFO_BUFFER` circular buffer, carrying ``bytes`` as they are (``dumps`` and
  ``loads`` are ``bytes``, not pickle); ``put()`` / ``get()``, ``put_many()`` /
  ``get_many()``.

Byte streams (``os-pipe``, ``tcp-loopback``) batch the way a program reading records
from a stream would: one gather write per batch, and reads of everything that has
arrived, cut into whole units (a partial one waits for the next read).

The two queues reach the runner the way ``multiprocessing`` hands them to a child it
spawns: pickled while "spawning", the objects' descriptors (the queue's pipe, the
faster-fifo queue's shared memory, a ``multiprocessing`` heap arena) collected instead
of inherited and passed beside the pickle with ``SCM_RIGHTS`` over a socket in the
workdir; the runner unpickles with them in place.

winipc (``peer=False``): ``winipc-anon-pipe``, two anonymous pipes
(:func:`winipc.pipes.create_pipe`, CreatePipe, buffer :data:`PIPE_SIZE` like the
``os-pipe`` peer) made by the worker. An anonymous pipe is meant to be inherited, but
the worker is an unrelated process that the runner did not spawn through winipc, so the
runner's ends are duplicated into it over a winipc named pipe with
:meth:`~winipc.pipes.PipeConnection.send_handle` (DuplicateHandle), the way a Windows
program hands a pipe to a process it did not create. ``write()``, ``read_exact()``;
batches are one ``write()`` of the joined messages and ``read()`` of what arrived.

Importing this module registers every scenario; the optional peers say in
:meth:`~winipc.bench.registry.Scenario.unavailable` why they cannot run when their
package is missing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import json
import os
import pickle
import socket
import struct
import time
from collections.abc import Callable, Sequence
from multiprocessing import context as mp_context
from multiprocessing import get_context
from multiprocessing.reduction import ForkingPickler
from typing import Any

import winipc.pipes
from winipc.bench.registry import Buffer, Endpoint, Metric, Scenario, Setup, register
from winipc.bench.workload import BenchError, VerificationError

MiB = 1024 * 1024
#: SO_SNDBUF / SO_RCVBUF asked for on SOCK_SEQPACKET (the kernel doubles it): room for
#: a 4 MiB message (the largest unit of --plot) and some pipelining of 1 MiB ones
SEQPACKET_BUFFER = 4 * MiB
#: pipe buffer (F_SETPIPE_SZ) of the os-pipe peer and of winipc's anonymous pipes
PIPE_SIZE = MiB
#: faster-fifo's circular buffer: a 4 MiB message must fit
FIFO_BUFFER = 16 * MiB
#: seconds a queue peer waits for the other side before the run fails
PATIENCE = 60.0
_LEN = struct.Struct("<Q")
#: buffers per gather write (writev, sendmsg)
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


# --------------------------------------------------------------------------- byte streams
class _Batches:
    """``recv_many`` on a byte stream: what has arrived, cut into whole units.

    A partial unit read past the last whole one waits in ``_pending`` for the next read.
    Subclasses provide ``_read(n)``: 1..n bytes, ``b""`` at end of file.
    """

    _pending: bytes = b""

    def _read(self, n: int) -> bytes:
        raise NotImplementedError

    def _take_pending(self, view: memoryview) -> int:
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def recv_many(self, max: int, size: int) -> Sequence[Buffer]:
        buf, want = self._pending, max * size
        while len(buf) < size:
            chunk = self._read(want - len(buf))
            if not chunk:
                raise EOFError(f"end of file after {len(buf)} of {size} bytes")
            buf = buf + chunk if buf else chunk
        n = min(len(buf) // size, max)
        self._pending = buf[n * size :]
        view = memoryview(buf)
        return [view[i * size : (i + 1) * size] for i in range(n)]


class _Stream(_Batches):
    """A byte-stream end: exact units, received into the caller's memory.

    Subclasses provide ``_read`` (see :class:`_Batches`), ``_read_into(view)`` (1..len
    bytes, 0 at end of file), ``_write(data)`` (all of it) and ``_writev(units)`` (one
    gather write: bytes written, maybe fewer than all).
    """

    def _read_into(self, view: memoryview) -> int:
        raise NotImplementedError

    def _write(self, data: Buffer) -> None:
        raise NotImplementedError

    def _writev(self, units: Sequence[Buffer]) -> int:
        raise NotImplementedError

    def send(self, data: Buffer) -> None:
        self._write(data)

    def send_many(self, units: Sequence[Buffer]) -> None:
        for i in range(0, len(units), _IOV_MAX):
            part = units[i : i + _IOV_MAX]
            n = self._writev(part)
            if n < sum(len(u) for u in part):  # a short gather write: the rest in one piece
                self._write(memoryview(b"".join(units[i:]))[n:])
                return

    def recv_into(self, buffer: memoryview) -> int:
        size = len(buffer)
        got = self._take_pending(buffer) if self._pending else 0
        read_into = self._read_into
        while got < size:
            n = read_into(buffer[got:])
            if n == 0:
                raise EOFError(f"end of file after {got} of {size} bytes")
            got += n
        return got

    def recv(self, size: int) -> Buffer:
        buf = bytearray(size)
        self.recv_into(memoryview(buf))
        return buf


class _SocketStreamEnd(_Stream):
    """A connected stream socket (TCP here)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def _read(self, n: int) -> bytes:
        return self._sock.recv(n)

    def _read_into(self, view: memoryview) -> int:
        return self._sock.recv_into(view)

    def _write(self, data: Buffer) -> None:
        self._sock.sendall(data)

    def _writev(self, units: Sequence[Buffer]) -> int:
        return self._sock.sendmsg(units)

    def close(self) -> None:
        self._sock.close()


class _FifoEnd(_Stream):
    """Two pipe descriptors: one to read, one to write."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self._rfd, self._wfd = rfd, wfd

    def _read(self, n: int) -> bytes:
        return os.read(self._rfd, n)

    def _read_into(self, view: memoryview) -> int:
        return os.readv(self._rfd, [view])

    def _write(self, data: Buffer) -> None:
        view, done = memoryview(data), 0
        while done < len(view):
            done += os.write(self._wfd, view[done:])

    def _writev(self, units: Sequence[Buffer]) -> int:
        return os.writev(self._wfd, units)

    def close(self) -> None:
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _set_pipe_size(fd: int) -> None:
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):  # over /proc/sys/fs/pipe-max-size: keep the default
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


class _FifoListening:
    """Worker side of ``os-pipe``: two FIFOs in the workdir, runner to worker and back."""

    def __init__(self, workdir: str, name: str) -> None:
        self._paths = [os.path.join(workdir, f"{name}.{way}") for way in ("up", "down")]
        for path in self._paths:
            os.mkfifo(path, 0o600)
        self.address = json.dumps(self._paths)

    def accept(self, timeout: float | None) -> Endpoint:
        up, down = self._paths
        # The read end opens at once without O_NONBLOCK's wait for a writer; the write
        # end of "down" opens once the runner waits on its read end (ENXIO until then).
        rfd = os.open(up, os.O_RDONLY | os.O_NONBLOCK)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                wfd = os.open(down, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    os.close(rfd)
                    raise
                if deadline is not None and time.monotonic() > deadline:
                    os.close(rfd)
                    raise TimeoutError(f"os-pipe: no runner within {timeout} s") from None
                time.sleep(0.0005)
        for fd in (rfd, wfd):
            os.set_blocking(fd, True)
            _set_pipe_size(fd)
        return _FifoEnd(rfd, wfd)

    def close(self) -> None:
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


class OsPipeScenario(Scenario):
    """Peer: kernel pipes (FIFOs made with ``os.mkfifo``), one per direction."""

    name = "os-pipe"
    mechanism = "kernel pipe pair (os.mkfifo FIFOs; what os.pipe() makes)"
    peer = True
    description = (
        f"two FIFOs in the workdir, F_SETPIPE_SZ {PIPE_SIZE // MiB} MiB; os.write()/os.writev(), "
        "os.readv() into the receiver's buffer"
    )

    def serve(self, setup: Setup) -> _FifoListening:
        return _FifoListening(setup.workdir, self.name)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        up, down = json.loads(address)
        wfd = os.open(up, os.O_WRONLY)  # the worker holds the read end open already
        try:
            rfd = os.open(down, os.O_RDONLY)
        except BaseException:
            os.close(wfd)
            raise
        return _FifoEnd(rfd, wfd)


class _TcpListening:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.bind(("127.0.0.1", 0))
            self._sock.listen(4)
        except BaseException:
            self._sock.close()
            raise
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"

    def accept(self, timeout: float | None) -> Endpoint:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            self._sock.settimeout(left)
            conn, _ = self._sock.accept()
            conn.settimeout(5.0)
            try:
                said = conn.recv(len(self._secret), socket.MSG_WAITALL)
            except OSError:
                said = b""
            if said == self._secret:
                conn.settimeout(None)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return _SocketStreamEnd(conn)
            conn.close()  # not our runner

    def close(self) -> None:
        self._sock.close()


class TcpLoopbackScenario(Scenario):
    """Peer: TCP over the loopback interface, Nagle off."""

    name = "tcp-loopback"
    mechanism = "TCP over 127.0.0.1 (TCP_NODELAY)"
    peer = True
    description = "listen on 127.0.0.1:0; sendall()/sendmsg(), recv_into(); TCP_NODELAY both ends"

    def serve(self, setup: Setup) -> _TcpListening:
        return _TcpListening(setup.secret.encode())

    def connect(self, address: str, setup: Setup) -> Endpoint:
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host, int(port)))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(setup.secret.encode())
        except BaseException:
            sock.close()
            raise
        return _SocketStreamEnd(sock)


# --------------------------------------------------------------------------- SOCK_SEQPACKET
def _seqpacket_buffers(sock: socket.socket) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, SEQPACKET_BUFFER)


_max_packet: int | None = None


def seqpacket_max_message() -> int:
    """The largest message a SOCK_SEQPACKET socket with our buffers takes (bytes).

    ``net.core.wmem_max`` caps what an unprivileged SO_SNDBUF gets; a message must fit
    in the send buffer (less a little bookkeeping).
    """
    global _max_packet
    if _max_packet is None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b:
            _seqpacket_buffers(a)
            _max_packet = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - 4096
    return _max_packet


class _PacketEnd:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: Buffer) -> None:
        self._sock.send(data)  # one packet: all of it or an error

    def recv_into(self, buffer: memoryview) -> int:
        # MSG_TRUNC: a longer packet returns its real length, so it cannot pass for a unit
        n = self._sock.recv_into(buffer, len(buffer), socket.MSG_TRUNC)
        if n == 0 and len(buffer):
            raise EOFError("SOCK_SEQPACKET: the peer closed the connection")
        return n

    def recv(self, size: int) -> Buffer:
        buf = bytearray(size)
        n = self.recv_into(memoryview(buf))
        if n != size:
            raise VerificationError(f"SOCK_SEQPACKET: a message of {n} bytes, expected {size}")
        return buf

    def close(self) -> None:
        self._sock.close()


class _UnixListening:
    """Worker side of a raw AF_UNIX peer: a socket of ``kind`` bound to ``path``.

    ``make_end`` turns the accepted socket into the scenario's end.
    """

    def __init__(self, path: str, kind: int, make_end: Callable[[socket.socket], Endpoint]) -> None:
        self.address = path
        self._make_end = make_end
        self._sock = socket.socket(socket.AF_UNIX, kind)
        try:
            self._sock.bind(path)
            self._sock.listen(1)
        except BaseException:
            self._sock.close()
            raise

    def accept(self, timeout: float | None) -> Endpoint:
        self._sock.settimeout(timeout)
        conn, _ = self._sock.accept()
        conn.settimeout(None)
        return self._make_end(conn)

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.address)


def _packet_end(conn: socket.socket) -> Endpoint:
    _seqpacket_buffers(conn)
    return _PacketEnd(conn)


class SeqpacketScenario(Scenario):
    """Peer: a raw AF_UNIX SOCK_SEQPACKET socket (one message per packet)."""

    name = "af-unix-seqpacket"
    mechanism = "raw AF_UNIX SOCK_SEQPACKET socket"
    peer = True
    description = (
        f"bind/listen/accept on a path, SO_SNDBUF/SO_RCVBUF {SEQPACKET_BUFFER // MiB} MiB; "
        "send() per message, recv_into(MSG_TRUNC)"
    )

    def supports(self, metric: Metric) -> bool:
        # a packet larger than the send buffer cannot be sent (EMSGSIZE)
        return super().supports(metric) and metric.size <= seqpacket_max_message()

    def serve(self, setup: Setup) -> _UnixListening:
        path = os.path.join(setup.workdir, f"{self.name}.sock")
        return _UnixListening(path, socket.SOCK_SEQPACKET, _packet_end)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            _seqpacket_buffers(sock)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return _PacketEnd(sock)


# --------------------------------------------------------------------------- handing objects over
_received: list[int] | None = None


class _PassedFd:
    """A descriptor a pickled object needs, passed beside the pickle (what a spawned
    child would have inherited); ``detach()`` gives the runner's copy."""

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        if _received is None or not 0 <= self.index < len(_received):
            raise BenchError("a pickled object needs a descriptor that was not passed")
        return _received[self.index]


class _FdSpawning:
    """Stands for the Popen of a child being spawned while objects are pickled for it:
    ``multiprocessing`` asks it to duplicate each descriptor the objects need."""

    DupFd = _PassedFd

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(fd)
        return len(self.fds) - 1


def share(obj: Any) -> tuple[bytes, list[int]]:
    """``obj`` pickled as for a spawned child, and the descriptors it needs."""
    spawning = _FdSpawning()
    set_spawning: Any = mp_context.set_spawning_popen
    set_spawning(spawning)
    try:
        return bytes(ForkingPickler.dumps(obj)), spawning.fds
    finally:
        set_spawning(None)


def unshare(data: bytes, fds: list[int]) -> Any:
    """The object :func:`share` pickled, rebuilt with the descriptors passed beside it."""
    global _received
    _received = fds
    try:
        # The worker this runner started pickled these objects for it and passed them over
        # a socket in the run's private 0700 directory; nothing else reaches it.
        return pickle.loads(data)  # trusted-peer-opt-in
    finally:
        _received = None


class _Handoff:
    """Worker side of the queue peers: hands the pickled queues and their descriptors
    to the one runner that connects to a socket in the workdir, then is its end."""

    def __init__(self, path: str, objects: Any, end: Endpoint) -> None:
        self.address = path
        self._end = end
        self._data, self._fds = share(objects)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(path)
            self._sock.listen(1)
        except BaseException:
            self._sock.close()
            raise

    def accept(self, timeout: float | None) -> Endpoint:
        self._sock.settimeout(timeout)
        conn, _ = self._sock.accept()
        with conn:
            conn.settimeout(None)
            socket.send_fds(conn, [_LEN.pack(len(self._data)) + self._data], self._fds)
            conn.recv(1)  # the runner has them: the socket can go
        return self._end

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.address)


def _fetch(path: str) -> tuple[Any, list[int]]:
    """Runner side of :class:`_Handoff`: the objects, and the descriptors received."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        msg, fds, flags, _addr = socket.recv_fds(sock, 65536, 64)
        try:
            if flags & getattr(socket, "MSG_CTRUNC", 0):
                raise BenchError("queue hand-over: descriptors were cut off")
            buf = bytearray(msg)
            while len(buf) < _LEN.size or len(buf) < _LEN.size + _LEN.unpack_from(buf)[0]:
                more = sock.recv(65536)
                if not more:
                    raise BenchError("queue hand-over: the worker closed the socket early")
                buf += more
            objects = unshare(bytes(buf[_LEN.size :]), fds)
            sock.sendall(b"k")
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
    return objects, fds


# --------------------------------------------------------------------------- multiprocessing.Queue
class _MpQueueEnd:
    """Puts on one ``multiprocessing.Queue``, gets from the other."""

    def __init__(self, out: Any, inbox: Any) -> None:
        self._out, self._in = out, inbox

    def send(self, data: Buffer) -> None:
        self._out.put(data if type(data) is bytes else bytes(data))

    def recv(self, size: int) -> Buffer:
        got: Buffer = self._in.get(timeout=PATIENCE)
        return got

    def close(self) -> None:
        # Everything sent was received (the run is over) or the run failed: never wait
        # on the feeder thread, whose pipe may have no reader left.
        for q in (self._out, self._in):
            q.cancel_join_thread()
            q.close()


class MpQueueScenario(Scenario):
    """Peer: ``multiprocessing.Queue`` (spawn context), one per direction."""

    name = "mp-queue"
    mechanism = "multiprocessing.Queue (spawn context)"
    peer = True
    description = (
        "two spawn-context Queues made by the worker, handed to the runner as to a spawned "
        "child (descriptors by SCM_RIGHTS); put()/get() of bytes"
    )

    def serve(self, setup: Setup) -> _Handoff:
        ctx = get_context("spawn")
        up, down = ctx.Queue(), ctx.Queue()
        return _Handoff(
            os.path.join(setup.workdir, f"{self.name}.sock"), (up, down), _MpQueueEnd(down, up)
        )

    def connect(self, address: str, setup: Setup) -> Endpoint:
        (up, down), _fds = _fetch(address)  # the Connections own the descriptors
        return _MpQueueEnd(up, down)


# --------------------------------------------------------------------------- faster-fifo
def _optional(module: str, package: str) -> tuple[Any, str | None]:
    """The module, or None and why it cannot be used."""
    try:
        return importlib.import_module(module), None
    except ImportError as exc:
        return None, f"{package} is not installed (pip install 'winipc[peers]'): {exc}"


class _FasterFifoEnd:
    def __init__(self, out: Any, inbox: Any, fds: Sequence[int] = ()) -> None:
        self._out, self._in = out, inbox
        self._fds = list(fds)

    def send(self, data: Buffer) -> None:
        self._out.put(data, timeout=PATIENCE)

    def recv(self, size: int) -> Buffer:
        got: Buffer = self._in.get(timeout=PATIENCE)
        return got

    def send_many(self, units: Sequence[Buffer]) -> None:
        self._out.put_many(units if isinstance(units, list | tuple) else list(units), timeout=PATIENCE)

    def recv_many(self, max: int) -> Sequence[Buffer]:
        got: Sequence[Buffer] = self._in.get_many(timeout=PATIENCE, max_messages_to_get=max)
        return got

    def close(self) -> None:
        # The runner's arenas keep their mappings; the descriptors are not needed after.
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


class FasterFifoScenario(Scenario):
    """Peer: ``faster_fifo.Queue`` (shared-memory circular buffer), one per direction."""

    name = "faster-fifo"
    mechanism = "faster_fifo.Queue (shared-memory ring, process-shared mutex)"
    peer = True
    description = (
        f"two Queues ({FIFO_BUFFER // MiB} MiB, dumps/loads = bytes) made by the worker, handed "
        "over as to a spawned child; put()/get(), put_many()/get_many()"
    )

    def unavailable(self) -> str | None:
        _mod, why = _optional("faster_fifo", "faster-fifo")
        if why is None:
            _red, why = _optional("faster_fifo_reduction", "faster-fifo")
        return why

    def serve(self, setup: Setup) -> _Handoff:
        ff = importlib.import_module("faster_fifo")
        importlib.import_module("faster_fifo_reduction")  # makes the queues picklable
        up = ff.Queue(max_size_bytes=FIFO_BUFFER, loads=bytes, dumps=bytes)
        down = ff.Queue(max_size_bytes=FIFO_BUFFER, loads=bytes, dumps=bytes)
        return _Handoff(
            os.path.join(setup.workdir, f"{self.name}.sock"), (up, down), _FasterFifoEnd(down, up)
        )

    def connect(self, address: str, setup: Setup) -> Endpoint:
        importlib.import_module("faster_fifo_reduction")
        (up, down), fds = _fetch(address)
        return _FasterFifoEnd(up, down, fds)


# --------------------------------------------------------------------------- pyzmq
class _ZmqEnd:
    def __init__(self, zmq: Any, ctx: Any, sock: Any) -> None:
        self._ctx, self._sock = ctx, sock
        self._threshold = int(getattr(zmq, "COPY_THRESHOLD", 65536))

    def send(self, data: Buffer) -> None:
        self._sock.send(data, copy=len(data) < self._threshold)

    def recv(self, size: int) -> Buffer:
        got: Buffer = self._sock.recv()
        return got

    def send_many(self, units: Sequence[Buffer]) -> None:
        self._sock.send_multipart(units)

    def recv_many(self, max: int) -> Sequence[Buffer]:
        # one multipart message: the sender's batch (never more than it was asked for)
        got: Sequence[Buffer] = self._sock.recv_multipart()
        return got

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()


class _ZmqIntoEnd(_ZmqEnd):
    """pyzmq 26.4 and later: ``recv_into`` (a longer frame returns its real length)."""

    def recv_into(self, buffer: memoryview) -> int:
        n: int = self._sock.recv_into(buffer)
        return n


def _zmq_end(zmq: Any, ctx: Any, sock: Any) -> Endpoint:
    cls = _ZmqIntoEnd if hasattr(sock, "recv_into") else _ZmqEnd
    return cls(zmq, ctx, sock)


class _ZmqListening:
    def __init__(self, zmq: Any, path: str) -> None:
        self._zmq = zmq
        self._path = path
        self.address = f"ipc://{path}"
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PAIR)
        try:
            self._sock.bind(self.address)
        except BaseException:
            self._sock.close(linger=0)
            self._ctx.term()
            raise
        self._taken = False

    def accept(self, timeout: float | None) -> Endpoint:
        # PAIR connects in the background; the first message waits for the runner
        self._taken = True
        return _zmq_end(self._zmq, self._ctx, self._sock)

    def close(self) -> None:
        if not self._taken:
            self._sock.close(linger=0)
            self._ctx.term()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)


class ZmqPairScenario(Scenario):
    """Peer: a pyzmq PAIR socket over ``ipc://`` (a Unix socket in the workdir)."""

    name = "zmq-pair"
    mechanism = "pyzmq PAIR socket over ipc://"
    peer = True
    description = (
        "bind/connect ipc:// in the workdir; send() (copy=False from 64 KiB), recv()/"
        "recv_into(); batches as send_multipart()/recv_multipart()"
    )

    def unavailable(self) -> str | None:
        zmq, why = _optional("zmq", "pyzmq")
        if zmq is not None and not zmq.has("ipc"):
            why = "this libzmq has no ipc:// transport"
        return why

    def serve(self, setup: Setup) -> _ZmqListening:
        zmq = importlib.import_module("zmq")
        return _ZmqListening(zmq, os.path.join(setup.workdir, f"{self.name}.sock"))

    def connect(self, address: str, setup: Setup) -> Endpoint:
        zmq = importlib.import_module("zmq")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PAIR)
        try:
            sock.connect(address)
        except BaseException:
            sock.close(linger=0)
            ctx.term()
            raise
        return _zmq_end(zmq, ctx, sock)


# --------------------------------------------------------------------------- winipc anonymous pipes
class _AnonPipeEnd(_Batches):
    """Two winipc anonymous pipe ends, one to read and one to write, used with winipc's
    API only (``PipeEnd`` has no ``readinto``, so the sink takes fresh objects)."""

    def __init__(self, r: winipc.pipes.PipeEnd, w: winipc.pipes.PipeEnd) -> None:
        self._r, self._w = r, w

    def _read(self, n: int) -> bytes:
        return self._r.read(n)

    def send(self, data: Buffer) -> None:
        self._w.write(data)

    def send_many(self, units: Sequence[Buffer]) -> None:
        self._w.write(b"".join(units))

    def recv(self, size: int) -> Buffer:
        if not self._pending:
            return self._r.read_exact(size)
        buf = bytearray(size)  # recv_many read ahead: that first, then the pipe
        got = self._take_pending(memoryview(buf))
        if got < size:
            buf[got:] = self._r.read_exact(size - got)
        return buf

    def close(self) -> None:
        self._r.close()
        self._w.close()


class _AnonPipeListening:
    """Worker side: two anonymous pipes, and a named pipe to duplicate the runner's ends over."""

    def __init__(self, name: str) -> None:
        self.address = name
        self._inst = winipc.pipes.PipeInstance(name, max_instances=1)
        self._ends: list[winipc.pipes.PipeEnd] = []
        try:
            self._ends += winipc.pipes.create_pipe(PIPE_SIZE)  # runner -> worker
            self._ends += winipc.pipes.create_pipe(PIPE_SIZE)  # worker -> runner
        except BaseException:
            self.close()
            raise

    def accept(self, timeout: float | None) -> Endpoint:
        up_r, up_w, down_r, down_w = self._ends
        self._inst.connect(timeout=timeout)
        self._inst.send_handle(up_w)  # DuplicateHandle into the runner
        self._inst.send_handle(down_r)
        self._inst.read(1, timeout=timeout)  # the runner has both
        up_w.close()  # only the runner's copies remain: end of file works both ways
        down_r.close()
        self._ends = []
        return _AnonPipeEnd(up_r, down_w)

    def close(self) -> None:
        for end in self._ends:
            end.close()
        self._inst.close()


class AnonPipeScenario(Scenario):
    """winipc anonymous pipes (CreatePipe), the runner's ends duplicated into it."""

    name = "winipc-anon-pipe"
    mechanism = "winipc anonymous pipe pair (create_pipe), ends duplicated by send_handle"
    description = (
        f"create_pipe({PIPE_SIZE // MiB} MiB) x2 in the worker; the runner's ends sent over a "
        "named pipe with send_handle(); write(), read_exact(); batches joined in one write()"
    )

    def serve(self, setup: Setup) -> _AnonPipeListening:
        return _AnonPipeListening(f"\\\\.\\pipe\\winipc-bench-{setup.tag}-{self.name}")

    def connect(self, address: str, setup: Setup) -> Endpoint:
        with winipc.pipes.connect(address) as ctl:
            w = ctl.recv_handle(timeout=30.0)
            r = ctl.recv_handle(timeout=30.0)
            if not isinstance(w, winipc.pipes.PipeEnd) or not isinstance(r, winipc.pipes.PipeEnd):
                for h in (w, r):
                    h.close()
                raise BenchError("winipc-anon-pipe: the worker sent something else than pipe ends")
            ctl.write(b"k")
        return _AnonPipeEnd(r, w)


ANON_PIPE = register(AnonPipeScenario())
SEQPACKET = register(SeqpacketScenario())
OS_PIPE = register(OsPipeScenario())
TCP_LOOPBACK = register(TcpLoopbackScenario())
MP_QUEUE = register(MpQueueScenario())
ZMQ_PAIR = register(ZmqPairScenario())
FASTER_FIFO = register(FasterFifoScenario())

