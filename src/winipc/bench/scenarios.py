"""The built-in scenarios: winipc named pipes, and the peers they are compared with.

The peers are the best plain use of each mechanism a Python programmer would write by
hand: ``sendall`` / ``recv_into`` on an AF_UNIX stream socket, and ``send_bytes`` /
``recv_bytes_into`` on a ``multiprocessing.connection`` over AF_UNIX. Each receiver uses
its fastest plain API: where an end offers ``recv_into`` (winipc message pipes, both
peers here) the throughput sink receives into one reused buffer.
"""

from __future__ import annotations

import os
import socket
from multiprocessing import BufferTooShort
from multiprocessing.connection import Client, Connection, Listener

import winipc.pipes
from winipc.bench.registry import RTT, Buffer, Endpoint, Scenario, Setup, register
from winipc.bench.scenarios_peers import _SocketStreamEnd, _UnixListening


# --------------------------------------------------------------------------- winipc pipes
class _PipeEndpoint:
    """A winipc pipe end; byte mode reads exact chunks, message mode whole messages."""

    def __init__(self, conn: winipc.pipes.PipeConnection, message: bool) -> None:
        self._conn = conn
        self._message = message

    def send(self, data: Buffer) -> None:
        self._conn.write(data)

    def recv(self, size: int) -> Buffer:
        if self._message:
            return self._conn.recv()
        return self._conn.read_exact(size)

    def send_many(self, units: list[Buffer]) -> None:
        self._conn.send_many(units)

    def close(self) -> None:
        self._conn.close()


class _MessageEndpoint(_PipeEndpoint):
    """Message mode: batches of whole messages, and receiving into the caller's buffer."""

    def recv_many(self, max_count: int) -> list[bytes]:
        return self._conn.recv_many(max_count)

    def recv_into(self, buffer: memoryview) -> int:
        return self._conn.recv_into(buffer)


class _ZeroCopyEndpoint(_MessageEndpoint):
    """Message mode on the fast path: ``send_buffer`` to write, ``recv_view`` to read.

    A received view keeps its ring space until it is dropped; the round trip drops each
    echo's view once the batch is checked, the echo side right after sending it back.
    """

    def send(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        with self._conn.send_buffer(view.nbytes) as buf:
            buf[:] = view

    def recv(self, size: int) -> Buffer:
        return self._conn.recv_view()


class _PipeListening:
    def __init__(self, name: str, scenario: NamedPipeScenario) -> None:
        self.address = name
        self._sc = scenario
        self._inst = winipc.pipes.PipeInstance(
            name, message=scenario.message, max_instances=1, fast_path=scenario.fast
        )

    def accept(self, timeout: float | None) -> Endpoint:
        self._inst.connect(timeout=timeout)
        return self._sc.endpoint(self._inst)

    def close(self) -> None:
        self._inst.close()


class NamedPipeScenario(Scenario):
    """A winipc named pipe (Win32: CreateNamedPipe + CreateFile), one instance.

    Args:
        message: PIPE_TYPE_MESSAGE (``send`` / ``recv`` of whole messages) instead of a
            byte stream (``write`` / ``read_exact``).
        variant: ``"socket"`` (payloads on the AF_UNIX socket: the fast path is off),
            ``"fast"`` (the shared-memory fast path, spinning as it decides: only when
            a spare core exists), ``"fast-nospin"`` (the fast path, never spinning) or
            ``"zerocopy"`` (the fast path with ``send_buffer`` / ``recv_view``).
    """

    def __init__(self, message: bool, variant: str = "socket") -> None:
        self.message = message
        self.variant = variant
        self.fast = variant != "socket"
        mode = "message" if message else "byte"
        if variant == "socket":
            self.name = f"winipc-pipe-{mode}"
            self.mechanism = f"winipc named pipe, {mode} mode, on the socket"
        else:
            self.name = f"winipc-pipe-{variant}"
            self.mechanism = {
                "fast": "winipc named pipe, shared-memory fast path",
                "fast-nospin": "winipc named pipe, fast path, never spinning",
                "zerocopy": "winipc named pipe, fast path, zero-copy send_buffer/recv_view",
            }[variant]
        if variant == "zerocopy":
            # a receiver that keeps a round of views would hold the whole ring
            self.kinds = frozenset({RTT})
        if variant == "socket":
            self.description = (
                "PipeInstance(message=True, fast_path=False) in the worker, connect(read_message=True, "
                "fast_path=False) in the runner; send()/recv() of whole messages"
                if message
                else "PipeInstance(fast_path=False) in the worker, connect(fast_path=False) in the "
                "runner; write() of chunks, read_exact(size) per chunk"
            )
        else:
            self.description = {
                "fast": "message pipe on the fast path (default spin policy); write()/recv(), "
                "recv_into() for throughput, send_many()/recv_many() for message rates",
                "fast-nospin": "as winipc-pipe-fast with spin_time = 0 on both ends",
                "zerocopy": "message pipe on the fast path; send_buffer() to write, recv_view() to "
                "read (round trips only)",
            }[variant]

    def unavailable(self) -> str | None:
        from winipc.pipes import _fast

        if self.fast and not _fast.enabled(None):
            return "the fast path is off (WINIPC_FASTPATH=0) or its extension (winipc._native._ring) is not built"
        return None

    def endpoint(self, conn: winipc.pipes.PipeConnection) -> Endpoint:
        if self.fast:
            if not conn.fast_path:
                raise RuntimeError(f"{self.name}: the connection did not take the fast path")
            if self.variant == "fast-nospin":
                conn.spin_time = 0.0
        if self.variant == "zerocopy":
            return _ZeroCopyEndpoint(conn, self.message)
        return (_MessageEndpoint if self.message else _PipeEndpoint)(conn, self.message)

    def serve(self, setup: Setup) -> _PipeListening:
        return _PipeListening(f"\\\\.\\pipe\\winipc-bench-{setup.tag}-{self.name}", self)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        conn = winipc.pipes.connect(address, read_message=self.message, fast_path=self.fast)
        return self.endpoint(conn)


# --------------------------------------------------------------------------- AF_UNIX stream
def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    """Exactly ``size`` bytes from a stream socket (used by the mapping scenario too)."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError(f"socket: end of file after {got} of {size} bytes")
        got += n
    return buf


class UnixSocketScenario(Scenario):
    """Peer: a raw AF_UNIX SOCK_STREAM socket bound to a path in the run's workdir."""

    name = "af-unix-stream"
    mechanism = "raw AF_UNIX SOCK_STREAM socket"
    peer = True
    description = (
        "bind/listen/accept on a path; sendall() and recv_into() of exact chunks, "
        "sendmsg() gather writes for batches"
    )

    def serve(self, setup: Setup) -> _UnixListening:
        path = os.path.join(setup.workdir, f"{self.name}.sock")
        return _UnixListening(path, socket.SOCK_STREAM, _SocketStreamEnd)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return _SocketStreamEnd(sock)


# --------------------------------------------------------------------------- multiprocessing
class _MpEndpoint:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def send(self, data: Buffer) -> None:
        self._conn.send_bytes(data)

    def recv(self, size: int) -> Buffer:
        return self._conn.recv_bytes()

    def recv_into(self, buffer: memoryview) -> int:
        try:
            return self._conn.recv_bytes_into(buffer)
        except BufferTooShort as exc:
            return len(exc.args[0])

    def close(self) -> None:
        self._conn.close()


class _MpListening:
    def __init__(self, path: str, authkey: bytes) -> None:
        self.address = path
        self._listener = Listener(path, family="AF_UNIX", authkey=authkey)

    def accept(self, timeout: float | None) -> Endpoint:
        # Listener.accept has no timeout; the runner's watchdog ends a worker stuck here.
        return _MpEndpoint(self._listener.accept())

    def close(self) -> None:
        self._listener.close()  # also unlinks the socket file


class MultiprocessingScenario(Scenario):
    """Peer: ``multiprocessing.connection`` (what ``multiprocessing.Pipe`` returns)."""

    name = "mp-pipe"
    mechanism = "multiprocessing.Pipe connection (AF_UNIX)"
    peer = True
    description = (
        "multiprocessing.connection.Listener/Client over AF_UNIX with an authkey; "
        "send_bytes()/recv_bytes()"
    )

    def serve(self, setup: Setup) -> _MpListening:
        path = os.path.join(setup.workdir, f"{self.name}.sock")
        return _MpListening(path, setup.secret.encode())

    def connect(self, address: str, setup: Setup) -> Endpoint:
        return _MpEndpoint(Client(address, family="AF_UNIX", authkey=setup.secret.encode()))


PIPE_BYTE = register(NamedPipeScenario(message=False))
PIPE_MESSAGE = register(NamedPipeScenario(message=True))
PIPE_FAST = register(NamedPipeScenario(message=True, variant="fast"))
PIPE_FAST_NOSPIN = register(NamedPipeScenario(message=True, variant="fast-nospin"))
PIPE_ZEROCOPY = register(NamedPipeScenario(message=True, variant="zerocopy"))
AF_UNIX_STREAM = register(UnixSocketScenario())
MP_PIPE = register(MultiprocessingScenario())
