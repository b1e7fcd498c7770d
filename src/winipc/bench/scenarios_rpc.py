"""Bench scenarios for remote procedure calls: :mod:`winipc.rpc` against the Python RPC peers.

Every scenario here is in group ``rpc`` and measured on the group's own metrics (and
nothing else is measured on them):

* ``rpc-null`` (kind ``latency``): the round trip of a null call, ``null()`` with no
  argument and no result, from just before the call to its return; median and p99 in µs;
* ``rpc-calls-1`` and ``rpc-calls-8`` (kind ``rate``): null calls per second, from one
  client thread and from :data:`THREADS` client threads calling at once (the figure runs
  from the first thread's start to the last thread's end);
* ``rpc-1mib`` (kind ``throughput``): ``size(data)`` with a 1 MiB ``bytes`` argument, the
  server returning its length; MB/s of argument moved.

The worker process is the server: :meth:`~winipc.bench.registry.Scenario.serve` starts the
mechanism's server in background threads of the worker (pinned like the worker, threads
inherit the CPU of the thread that makes them); the runner is the client. Each batch is
one :meth:`~winipc.bench.registry.Scenario.exchange` on both sides
(:meth:`winipc.bench.runner.Runner._rpc`): the runner makes the calls, the worker waits
until its server has counted as many, then reports ``[calls served in the batch, CRC-32
of the last argument received, its length]``. Every result is checked by the client
(``null()`` returns None — ``b""`` for grpcio —, ``size()`` the length sent), every call
is counted once by the server, and the last 1 MiB argument of each batch is compared by
CRC-32 with the one sent (arguments rotate among four different 1 MiB values).

winipc (``peer=False``):

* ``winipc-rpc``: ``winipc.rpc`` over ``ncalrpc`` (a winipc message pipe, fast path);
  eight client threads share one binding (its pool of connections, opened by
  ``Binding.connect(8)`` before any timing);
* ``winipc-rpc-tcp``: the same over ``ncacn_ip_tcp:127.0.0.1`` (no TLS);
* ``rpc-ref-pipe-64``: the reference, not RPC: a 64 B round trip (``write()`` /
  ``recv()``) on the winipc message pipe ncalrpc runs on (fast path on), measured on
  ``rpc-null`` only: the floor a null call is held to.

Peers (``peer=True``), each over a Unix socket in the run's private (0700) workdir:

* ``rpc-xmlrpc``: ``xmlrpc.server`` (a threading server, HTTP/1.1 keep-alive) and
  ``xmlrpc.client.ServerProxy`` with a transport that connects to the socket;
  bytes travel as base64, None as ``<nil/>``;
* ``rpc-pyro5``: a Pyro5 ``Daemon(unixsocket=...)`` (thread pool server), proxies on
  ``PYRO:bench@./u:<path>`` with the msgpack serializer;
* ``rpc-rpyc``: an RPyC ``ThreadedServer(socket_path=...)`` and ``unix_connect()``; the
  remote methods are looked up once (``f = conn.root.null``), so a call is one request;
* ``rpc-grpcio``: a grpcio server with a generic handler (``bytes`` in and out, no
  generated code, ``ThreadPoolExecutor`` of 10 workers) on ``unix:<path>``, one channel
  the client threads share;
* ``rpc-mp-manager``: ``multiprocessing.managers.BaseManager`` with a registered object
  (AF_UNIX, the run's secret as authkey), served by ``get_server().serve_forever()`` in
  the worker; the client's proxy opens a connection per thread, as it does;
* ``rpc-msgpack-socket``: a hand-written protocol: each request a 4-byte length and a
  msgpack array ``[method, argument...]``, each reply a 4-byte length and the msgpack
  result; a thread per connection on the server.

Peers whose client is not thread-safe (xmlrpc, Pyro5, RPyC, the msgpack socket) get one
client per client thread. Pyro5, RPyC and grpcio are optional (``winipc[peers]``): a
missing one is reported not available, with the reason. The winipc scenarios are not
available while :mod:`winipc.rpc` cannot be imported.

Importing this module registers the scenarios and the targets the report holds them to.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import importlib
import importlib.util
import os
import socket
import socketserver
import struct
import threading
import time
import xmlrpc.client
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.managers import BaseManager
from typing import Any
from xmlrpc.server import SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler

from winipc.bench.registry import (
    LATENCY,
    RATE,
    THROUGHPUT,
    Buffer,
    Endpoint,
    Metric,
    MetricKind,
    Scenario,
    Setup,
    Target,
    register,
    register_target,
)
from winipc.bench.workload import BenchError, VerificationError, echo, no_gc, ping, rtt_units

#: the scenarios' group
GROUP = "rpc"
#: the group's metrics (registered in :data:`winipc.bench.registry.METRICS`)
NULL, CALLS_1, CALLS_8, ARG_1M = "rpc-null", "rpc-calls-1", "rpc-calls-8", "rpc-1mib"
#: client threads of ``rpc-calls-8``
THREADS = 8
#: bytes of the ``rpc-1mib`` argument
MiB = 1024 * 1024
#: different 1 MiB arguments the client rotates through
ARGS = 4
#: bytes of the reference pipe's round trip
PIPE_UNIT = 64
#: seconds a side waits for the other before the run fails (never reached when healthy)
PATIENCE = 60.0
#: the interface's UUID (the issue's) and version
IFACE_UUID = "6f0a1c9e-2b1d-4c1e-9a35-0b5e7d9f1a01"

_I64 = struct.Struct("<q")
_LEN = struct.Struct("<I")


# --------------------------------------------------------------------------- the server's tally
class Tally:
    """What a server saw: calls counted, the last argument kept (not copied) for its CRC.

    Every server method calls :meth:`call`; the worker's side of a batch
    (:meth:`wait`) returns once the server has counted the batch's calls.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reached = threading.Event()
        self.calls = 0
        self.goal = 1 << 62
        self.last: Any = None
        self._reported = 0

    def call(self, arg: Any = None) -> None:
        with self._lock:
            self.calls += 1
            if arg is not None:
                self.last = arg
            if self.calls >= self.goal:
                self._reached.set()

    def wait(self, count: int, timeout: float = PATIENCE) -> list[int]:
        """Wait until ``count`` more calls than at the previous wait were served.

        Returns:
            ``[calls served since the previous wait, CRC-32 of the last argument
            received (0: none), its length]``.

        Raises:
            BenchError: they were not served within ``timeout`` seconds.
        """
        with self._lock:
            self.goal = self._reported + count
            if self.calls >= self.goal:
                self._reached.set()
        if not self._reached.wait(timeout):
            raise BenchError(
                f"rpc: the server counted {self.calls - self._reported} of {count} calls "
                f"within {timeout} s"
            )
        with self._lock:
            self._reached.clear()
            self.goal = 1 << 62
            served, self._reported = self.calls - self._reported, self.calls
            last = self.last
        if last is None:
            return [served, 0, 0]
        return [served, zlib.crc32(last), len(last)]


# --------------------------------------------------------------------------- client side
@dataclass
class Calls:
    """One client: its two calls, what ``null()`` returns, and how to close it."""

    null: Callable[[], Any]
    size: Callable[[bytes], Any]
    close: Callable[[], None]
    null_result: Any = None


class _Crew:
    """Client threads that make null calls together, each with its own client (or one
    shared), kept for the whole session so connections are made once (in the warm-up)."""

    def __init__(self, make: Callable[[], Calls], n: int) -> None:
        self._make = make
        self._n = n
        self._go = threading.Barrier(n + 1)
        self._done = threading.Barrier(n + 1)
        self._counts = [0] * n
        self._stamps = [(0, 0)] * n
        self._errors: list[BaseException] = []
        self._stop = False
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"rpc-client-{i}", daemon=True)
            for i in range(n)
        ]
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        calls: Calls | None = None
        try:
            calls = self._make()
        except BaseException as exc:
            self._errors.append(exc)
        try:
            while True:
                self._go.wait()
                if self._stop:
                    return
                try:
                    if calls is not None:
                        null, want, clock = calls.null, calls.null_result, time.monotonic_ns
                        start = clock()
                        for _ in range(self._counts[i]):
                            if null() != want:
                                raise VerificationError("rpc: a null call returned a value")
                        self._stamps[i] = (start, clock())
                except BaseException as exc:
                    self._errors.append(exc)
                self._done.wait()
        except threading.BrokenBarrierError:
            return
        finally:
            if calls is not None:
                with contextlib.suppress(Exception):
                    calls.close()

    def run(self, count: int) -> tuple[int, int]:
        """``count`` null calls split among the threads; (first start, last end)."""
        per, extra = divmod(count, self._n)
        self._counts = [per + (1 if i < extra else 0) for i in range(self._n)]
        self._stamps = [(0, 0)] * self._n
        self._go.wait(PATIENCE)
        self._done.wait(PATIENCE * 2)
        if self._errors:
            raise self._errors[0]
        used = [s for s, c in zip(self._stamps, self._counts, strict=True) if c]
        return min(s for s, _ in used), max(e for _, e in used)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(threading.BrokenBarrierError):
            self._go.wait(5.0)
        for t in self._threads:
            t.join(5.0)


def _arguments() -> list[bytes]:
    """:data:`ARGS` different random 1 MiB arguments."""
    return [os.urandom(MiB) for _ in range(ARGS)]


class _ClientEnd:
    """The runner's end: a client in this thread, client threads for ``rpc-calls-8``."""

    def __init__(self, scenario: RpcScenario, address: str, setup: Setup) -> None:
        self._scenario, self._address, self._setup = scenario, address, setup
        self.calls: Calls | None = scenario.client(address, setup)
        self._crew: _Crew | None = None
        self._args: list[bytes] = []
        self._sent = 0

    def _make(self) -> Calls:
        if self._scenario.shared:
            assert self.calls is not None
            return Calls(self.calls.null, self.calls.size, lambda: None, self.calls.null_result)
        return self._scenario.client(self._address, self._setup)

    def run(self, metric: Metric, count: int) -> list[int]:
        """The runner's side of a batch (see :meth:`winipc.bench.runner.Runner._rpc`)."""
        calls = self.calls
        assert calls is not None
        clock = time.monotonic_ns
        if metric.key == NULL:
            null, want = calls.null, calls.null_result
            times = [0] * count
            with no_gc():
                for i in range(count):
                    t0 = clock()
                    got = null()
                    times[i] = clock() - t0
                    if got != want:
                        raise VerificationError(f"rpc: null() returned {got!r:.60}")
            return times
        if metric.key == CALLS_1:
            null, want = calls.null, calls.null_result
            with no_gc():
                start = clock()
                for _ in range(count):
                    if null() != want:
                        raise VerificationError("rpc: a null call returned a value")
                end = clock()
            return [start, end, count]
        if metric.key == CALLS_8:
            if self._crew is None:
                self._crew = _Crew(self._make, THREADS)
            with no_gc():
                start, end = self._crew.run(count)
            return [start, end, count]
        if metric.key == ARG_1M:
            if not self._args:
                self._args = _arguments()
            args, size, n = self._args, calls.size, len(self._args)
            first = self._sent
            with no_gc():
                start = clock()
                for i in range(first, first + count):
                    got = size(args[i % n])
                    if got != MiB:
                        raise VerificationError(f"rpc: size() of 1 MiB returned {got!r:.60}")
                end = clock()
            self._sent += count
            return [start, end, count, zlib.crc32(args[(first + count - 1) % n])]
        raise BenchError(f"rpc scenarios measure no {metric.key}")

    def send(self, data: Buffer) -> None:
        raise NotImplementedError("rpc scenarios call through exchange()")

    def recv(self, size: int) -> Buffer:
        raise NotImplementedError("rpc scenarios call through exchange()")

    def close(self) -> None:
        try:
            if self._crew is not None:
                self._crew.close()
                self._crew = None
        finally:
            calls, self.calls = self.calls, None
            if calls is not None:
                calls.close()


class _ServerEnd:
    """The worker's end: the server runs in its threads; a batch waits for its calls."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def send(self, data: Buffer) -> None:
        raise NotImplementedError("rpc scenarios call through exchange()")

    def recv(self, size: int) -> Buffer:
        raise NotImplementedError("rpc scenarios call through exchange()")

    def close(self) -> None:
        pass


class _RpcListening:
    """The worker side after serve(): the server is up; accept() has nothing to wait for."""

    def __init__(self, address: str, tally: Tally, stop: Callable[[], None]) -> None:
        self.address = address
        self._tally = tally
        self._stop: Callable[[], None] | None = stop

    def accept(self, timeout: float | None) -> Endpoint:
        return _ServerEnd(self._tally)

    def close(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()


def _thread(target: Callable[[], Any], name: str) -> threading.Thread:
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t


# --------------------------------------------------------------------------- scenarios
class RpcScenario(Scenario):
    """Base of the RPC scenarios: a server in the worker, clients in the runner.

    Subclasses start their server (:meth:`start`) and make a client (:meth:`client`).

    Attributes:
        package: the import name of the optional package it needs (None: stdlib or
            winipc).
        shared: the client threads of ``rpc-calls-8`` share one client (True) or each
            make their own (the client is not thread-safe).
    """

    group = GROUP
    kinds: frozenset[MetricKind] = frozenset({LATENCY, RATE, THROUGHPUT})
    package: str | None = None
    shared = False

    def supports(self, metric: Metric) -> bool:
        return metric.kind in self.kinds and metric.group == GROUP

    def unavailable(self) -> str | None:
        if self.package is not None and importlib.util.find_spec(self.package) is None:
            return f"{self.package} is not installed (pip install 'winipc[peers]')"
        return None

    def start(self, setup: Setup, tally: Tally) -> tuple[str, Callable[[], None]]:
        """Start the server (worker side); return its address and how to stop it."""
        raise NotImplementedError

    def client(self, address: str, setup: Setup) -> Calls:
        """A client of the server at ``address`` (runner side, any thread)."""
        raise NotImplementedError

    def serve(self, setup: Setup) -> _RpcListening:
        tally = Tally()
        address, stop = self.start(setup, tally)
        return _RpcListening(address, tally, stop)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        return _ClientEnd(self, address, setup)

    def exchange(self, ep: Endpoint, metric: Metric, count: int, runner: bool) -> list[int]:
        if metric.group != GROUP:
            return super().exchange(ep, metric, count, runner)
        if runner:
            assert isinstance(ep, _ClientEnd)
            return ep.run(metric, count)
        assert isinstance(ep, _ServerEnd)
        return ep.tally.wait(count)


def _sock_path(setup: Setup, name: str) -> str:
    return os.path.join(setup.workdir, f"{setup.tag}-{name}.sock")


# --------------------------------------------------------------------------- winipc.rpc
def _rpc_unavailable() -> str | None:
    try:
        rpc = importlib.import_module("winipc.rpc")
    except ImportError as exc:
        return f"winipc.rpc cannot be imported: {exc}"
    missing = [n for n in ("interface", "RpcServer", "bind") if not hasattr(rpc, n)]
    if missing:
        return f"winipc.rpc has no {', '.join(missing)} yet"
    return None


@functools.cache
def bench_interface() -> tuple[type, type]:
    """(interface, implementation class) of the bench's winipc.rpc interface.

    The implementation takes the :class:`Tally` it reports to.
    """
    rpc: Any = importlib.import_module("winipc.rpc")

    @rpc.interface(uuid=IFACE_UUID, version=(1, 0))
    class BenchIface:
        def null(self) -> None:
            raise NotImplementedError

        def echo(self, data: bytes) -> bytes:
            raise NotImplementedError

        def size(self, data: bytes) -> int:
            raise NotImplementedError

    class BenchImpl(BenchIface):
        def __init__(self, tally: Tally) -> None:
            self._tally = tally

        def null(self) -> None:
            self._tally.call()

        def echo(self, data: bytes) -> bytes:
            self._tally.call(data)
            return data

        def size(self, data: bytes) -> int:
            self._tally.call(data)
            return len(data)

    return BenchIface, BenchImpl


class WinipcRpcScenario(RpcScenario):
    """winipc.rpc over ncalrpc: a winipc message pipe on the fast path."""

    name = "winipc-rpc"
    mechanism = "winipc.rpc, ncalrpc (message pipe, fast path)"
    description = (
        "RpcServer().register(impl); listen('ncalrpc:[...]'); start() in the worker; "
        "rpc.bind(binding).client(BenchIface) and connect(8) in the runner; the 8 client threads share "
        "one binding (its connection pool) and one proxy"
    )
    shared = True

    def unavailable(self) -> str | None:
        return _rpc_unavailable()

    def binding(self, setup: Setup) -> str:
        return f"ncalrpc:[winipc-bench-{setup.tag}]"

    def server_options(self, setup: Setup) -> dict[str, Any]:
        """Keyword arguments of ``RpcServer()``."""
        return {}

    def bind_options(self, setup: Setup) -> dict[str, Any]:
        """Keyword arguments of ``rpc.bind()``."""
        return {}

    def start(self, setup: Setup, tally: Tally) -> tuple[str, Callable[[], None]]:
        rpc: Any = importlib.import_module("winipc.rpc")
        _iface, impl = bench_interface()
        server = rpc.RpcServer(register_endpoints=False, **self.server_options(setup))  # bound by string
        try:
            server.register(impl(tally))
            address = str(server.listen(self.binding(setup)))
            server.start()
        except BaseException:
            with contextlib.suppress(Exception):
                server.stop()
            raise
        return address, server.stop

    def client(self, address: str, setup: Setup) -> Calls:
        rpc: Any = importlib.import_module("winipc.rpc")
        iface, _impl = bench_interface()
        b = rpc.bind(address, **self.bind_options(setup))
        try:
            proxy = b.client(iface)
            b.connect(THREADS)  # one connection per client thread of rpc-calls-8, made before any timing
        except BaseException:
            b.close()
            raise
        return Calls(proxy.null, proxy.size, b.close)


class WinipcRpcTcpScenario(WinipcRpcScenario):
    """winipc.rpc over ncacn_ip_tcp on the loopback interface."""

    name = "winipc-rpc-tcp"
    mechanism = "winipc.rpc, ncacn_ip_tcp on 127.0.0.1 (shared key, no TLS)"
    description = (
        "as winipc-rpc with listen('ncacn_ip_tcp:127.0.0.1[0]') (a port the system picks); "
        "RpcServer(keys={'bench': secret}) and bind(auth=AuthInfo(AuthLevel.CONNECT, "
        "'bench', secret)): the client proves the key when it connects, frames carry no MAC"
    )

    def binding(self, setup: Setup) -> str:
        return "ncacn_ip_tcp:127.0.0.1[0]"

    def server_options(self, setup: Setup) -> dict[str, Any]:
        return {"keys": {"bench": setup.secret.encode()}}

    def bind_options(self, setup: Setup) -> dict[str, Any]:
        rpc: Any = importlib.import_module("winipc.rpc")
        key = setup.secret.encode()
        return {"auth": rpc.AuthInfo(rpc.AuthLevel.CONNECT, "bench", key)}


class PipeReferenceScenario(Scenario):
    """The reference: a 64 B round trip on the winipc message pipe that ncalrpc uses."""

    name = "rpc-ref-pipe-64"
    mechanism = "reference: 64 B round trip on a winipc message pipe (fast path)"
    group = GROUP
    kinds: frozenset[MetricKind] = frozenset({LATENCY})
    description = (
        "not RPC: PipeInstance(message=True, fast_path=True) in the worker, "
        "connect(read_message=True, fast_path=True) in the runner; write() 64 B, recv() "
        "the echo (the pipe winipc.rpc's ncalrpc runs on); rpc-null only"
    )

    def __init__(self) -> None:
        from winipc.bench.scenarios import NamedPipeScenario

        self._pipe = NamedPipeScenario(message=True, variant="fast")
        self._pool: bytes = b""
        self._start = 0

    def supports(self, metric: Metric) -> bool:
        return metric.key == NULL

    def unavailable(self) -> str | None:
        return self._pipe.unavailable()

    def serve(self, setup: Setup) -> Any:
        return self._pipe.serve(setup)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        self._pool = hashlib.shake_256(setup.secret.encode()).digest(64 * 1024)
        self._start = 0
        return self._pipe.connect(address, setup)

    def exchange(self, ep: Endpoint, metric: Metric, count: int, runner: bool) -> list[int]:
        if metric.key != NULL:
            return super().exchange(ep, metric, count, runner)
        if not runner:
            echo(ep, PIPE_UNIT, count)
            return [count, 0, 0]
        units = rtt_units(self._pool, PIPE_UNIT, count, self._start)
        self._start += count
        return ping(ep, units)


# --------------------------------------------------------------------------- xmlrpc
class _XmlHandler(SimpleXMLRPCRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client
    disable_nagle_algorithm = False  # TCP_NODELAY: not on a Unix socket (no Nagle there)
    rpc_paths = ("/RPC2",)

    def address_string(self) -> str:  # an AF_UNIX peer has no address
        return "unix"


class _XmlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer, SimpleXMLRPCDispatcher):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: str) -> None:
        self.logRequests = False
        SimpleXMLRPCDispatcher.__init__(self, allow_none=True, encoding=None, use_builtin_types=True)
        socketserver.UnixStreamServer.__init__(self, path, _XmlHandler)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__(use_builtin_types=True)
        self._path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        cached = self._connection
        if cached[1] is not None and host == cached[0]:
            return cached[1]
        conn = _UnixHTTPConnection(self._path)
        self._connection = host, conn
        return conn


class XmlRpcScenario(RpcScenario):
    """Peer: the standard library's XML-RPC over a Unix socket."""

    name = "rpc-xmlrpc"
    mechanism = "xmlrpc.server / xmlrpc.client (stdlib), HTTP/1.1 over a Unix socket"
    peer = True
    description = (
        "SimpleXMLRPCDispatcher on a threading UnixStreamServer (HTTP/1.1 keep-alive, "
        "allow_none, use_builtin_types) in the worker; ServerProxy with a transport that "
        "connects to the socket, one per client thread; bytes as base64"
    )

    def start(self, setup: Setup, tally: Tally) -> tuple[str, Callable[[], None]]:
        path = _sock_path(setup, self.name)
        server = _XmlServer(path)

        def null() -> None:
            tally.call()

        def size(data: Any) -> int:
            tally.call(data)
            return len(data)

        server.register_function(null, "null")
        server.register_function(size, "size")
        thread = _thread(functools.partial(server.serve_forever, 0.05), "xmlrpc-server")

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5.0)

        return path, stop

    def client(self, address: str, setup: Setup) -> Calls:
        proxy = xmlrpc.client.ServerProxy(
            "http://localhost/RPC2",
            transport=_UnixTransport(address),
            allow_none=True,
            use_builtin_types=True,
        )
        return Calls(proxy.null, proxy.size, proxy("close"))


# --------------------------------------------------------------------------- Pyro5
class Pyro5Scenario(RpcScenario):
    """Peer: Pyro5 over a Unix socket, msgpack serializer."""

    name = "rpc-pyro5"
    mechanism = "Pyro5 Daemon(unixsocket=...) and Proxy, msgpack serializer"
    peer = True
    package = "Pyro5"
    description = (
        "a Pyro5 Daemon(unixsocket=path) (thread-pool server) in the worker, the object "
        "registered as 'bench'; Proxy('PYRO:bench@./u:path') with _pyroSerializer = "
        "'msgpack' in the runner, one per client thread"
    )

    def start(self, setup: Setup, tally: Tally) -> tuple[str, Callable[[], None]]:
        api: Any = importlib.import_module("Pyro5.api")

        class PyroBench:
            def null(self) -> None:
                tally.call()

            def size(self, data: bytes) -> int:
                tally.call(data)
                return len(data)

        api.expose(PyroBench)
        daemon = api.Daemon(unixsocket=_sock_path(setup, self.name))
        uri = daemon.register(PyroBench(), "bench")
        thread = _thread(daemon.requestLoop, "pyro5-daemon")

        def stop() -> None:
            daemon.shutdown()
            thread.join(5.0)
            daemon.close()

        return str(uri), stop

    def client(self, address: str, setup: Setup) -> Calls:
        api: Any = importlib.import_module("Pyro5.api")
        proxy = api.Proxy(address)
        proxy._pyroSerializer = "msgpack"
        return Calls(proxy.null, proxy.size, proxy._pyroRelease)


# --------------------------------------------------------------------------- RPyC
class RpycScenario(RpcScenario):
    """Peer: RPyC's threaded server over a Unix socket."""

    name = "rpc-rpyc"
    mechanism = "RPyC ThreadedServer(socket_path=...) and unix_connect()"
    peer = True
    package = "rpyc"
    description = (
        "an rpyc.ThreadedServer(service, socket_path=path) in the worker; "
        "rpyc.utils.factory.unix_connect(path) in the runner, one per client thread; "
        "the remote methods looked up once (conn.root.null), so a call is one request"
    )

    def start(self, setup: Setup, tally: Tally) -> tuple[str, Callable[[], None]]:
        rpyc: Any = importlib.import_module("rpyc")

        class RpycBench(rpyc.Service):  # type: ignore[misc]
            def exposed_null(self) -> None:
                tally.call()

            def exposed_size(self, data: bytes) -> int:
                tally.call(data)
                return len(data)

        path = _sock_path(setup, self.name)
        server = rpyc.ThreadedServer(RpycBench, socket_path=path, listener_timeout=0.05)
        server.listener.listen(64)  # start() listens too, in its thread: be reachable now
        thread = _thread(server.start, "rpyc-server")

        def stop() -> None:
            server.close()
            thread.join(5.0)

        return path, stop

    def client(self, address: str, setup: Setup) -> Calls:
        factory: Any = importlib.import_module("rpyc.utils.factory")
        conn = factory.unix_connect(address)
        return Calls(conn.root.null, conn.root.size, conn.close)


# --------------------------------------------------------------------------- grpcio
_SERVICE = "winipc.bench.Bench"


def _int_le(data: bytes) -> int:
    value: int = _I64.unpack(data)[0]
    return value


class GrpcScenario(RpcScenario):
    """Peer: grpcio unary calls with a generic handler, bytes in and out."""

    name = "rpc-grpcio"
    mechanism = "grpcio unary-unary, generic handler (bytes), over a Unix socket"
    peer = True
    package = "grpc"
    shared = True
    description = (
        "grpc.server(ThreadPoolExecutor(10)) with method_handlers_generic_handler (no "
        "generated code; requests and replies are bytes, size() an 8-byte integer) on "
        "unix:path in the worker; one insecure_channel in the runner, its unary_unary "
        "callables shared by the client threads"
    )

    def start(self, setup: Setup, tally: Tally) -> tuple[str, Callable[[], None]]:
        grpc: Any = importlib.import_module("grpc")

        def null(request: bytes, context: Any) -> bytes:
            tally.call()
            return b""

        def size(request: bytes, context: Any) -> bytes:
            tally.call(request)
            return _I64.pack(len(request))

        handler = grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "Null": grpc.unary_unary_rpc_method_handler(null),
                "Size": grpc.unary_unary_rpc_method_handler(size),
            },
        )
        pool = ThreadPoolExecutor(max_workers=THREADS + 2)
        server = grpc.server(pool)
        server.add_generic_rpc_handlers((handler,))
        path = _sock_path(setup, self.name)
        server.add_insecure_port(f"unix:{path}")
        server.start()

        def stop() -> None:
            server.stop(None).wait(5.0)
            pool.shutdown(wait=False)

        return path, stop

    def client(self, address: str, setup: Setup) -> Calls:
        grpc: Any = importlib.import_module("grpc")
        channel = grpc.insecure_channel(f"unix:{address}")
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
            null = channel.unary_unary(f"/{_SERVICE}/Null", _registered_method=True)
            size = channel.unary_unary(
                f"/{_SERVICE}/Size", response_deserializer=_int_le, _registered_method=True
            )
        except BaseException:
            channel.close()
            raise
        return Calls(functools.partial(null, b""), size, channel.close, null_result=b"")


# --------------------------------------------------------------------------- multiprocessing managers
class _MpBench:
    """The object a BaseManager serves."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally

    def null(self) -> None:
        self._tally.call()

    def size(self, data: bytes) -> int:
        self._tally.call(data)
        return len(data)


def _manager_class(obj: _MpBench | None = None) -> type[BaseManager]:
    """A BaseManager subclass with ``bench`` registered (served: ``obj``)."""
    cls: type[BaseManager] = type("BenchManager", (BaseManager,), {})
    if obj is None:
        cls.register("bench", exposed=("null", "size"))
    else:
        cls.register("bench", callable=lambda: obj, exposed=("null", "size"))
    return cls


class MpManagerScenario(RpcScenario):
    """Peer: a multiprocessing manager serving one registered object."""

    name = "rpc-mp-manager"
    mechanism = "multiprocessing.managers.BaseManager, a registered object (AF_UNIX)"
    peer = True
    shared = True
    description = (
        "BaseManager(address=path, authkey=secret) with 'bench' registered, "
        "get_server().serve_forever() in a thread of the worker (a thread per "
        "connection); connect() and m.bench() in the runner; the proxy opens one "
        "connection per client thread"
    )

    def start(self, setup: Setup, tally: Tally) -> tuple[str, Callable[[], None]]:
        path = _sock_path(setup, self.name)
        manager = _manager_class(_MpBench(tally))(address=path, authkey=setup.secret.encode())
        server: Any = manager.get_server()
        _thread(server.serve_forever, "manager-server")

        def stop() -> None:
            event = getattr(server, "stop_event", None)
            if event is not None:
                event.set()
            with contextlib.suppress(OSError):
                server.listener.close()

        return path, stop

    def client(self, address: str, setup: Setup) -> Calls:
        manager: Any = _manager_class()(address=address, authkey=setup.secret.encode())
        manager.connect()
        holder = [manager.bench()]

        def close() -> None:
            holder.clear()  # the proxy goes: its finalizer tells the server (decref)

        proxy = holder[0]
        return Calls(proxy.null, proxy.size, close)


# --------------------------------------------------------------------------- hand-written msgpack
class _Frames:
    """Length-prefixed frames on a stream socket (request, then reply: no pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray(64 * 1024)

    def send(self, body: bytes) -> None:
        head = _LEN.pack(len(body))
        if len(body) < 64 * 1024:
            self.sock.sendall(head + body)
            return
        sent = self.sock.sendmsg([head, body])
        if sent < len(head):
            self.sock.sendall(head[sent:])
            sent = len(head)
        if sent < len(head) + len(body):
            self.sock.sendall(memoryview(body)[sent - len(head) :])

    def recv(self) -> memoryview:
        sock, buf = self.sock, self._buf
        got = sock.recv_into(buf)
        while 0 < got < 4:
            more = sock.recv_into(memoryview(buf)[got:])
            got = got + more if more else 0
        if got == 0:
            raise EOFError("msgpack socket: end of file")
        total = 4 + _LEN.unpack_from(buf)[0]
        if total > len(buf):
            bigger = bytearray(total)
            bigger[:got] = buf[:got]
            self._buf = buf = bigger
        view = memoryview(buf)
        while got < total:
            n = sock.recv_into(view[got:total])
            if n == 0:
                raise EOFError("msgpack socket: end of file inside a frame")
            got += n
        if got != total:
            raise BenchError("msgpack socket: more bytes than one frame")
        return view[4:total]


class MsgpackUnixScenario(RpcScenario):
    """Peer: a hand-written msgpack request/response protocol over a Unix socket."""

    name = "rpc-msgpack-socket"
    mechanism = "hand-written msgpack request/response over AF_UNIX"
    peer = True
    description = (
        "each request a 4-byte length and msgpack [method, args...], each reply a 4-byte "
        "length and the msgpack result; a thread per connection in the worker; "
        "sendall()/sendmsg() and recv_into() a reused buffer; one socket per client thread"
    )

    def start(self, setup: Setup, tally: Tally) -> tuple[str, Callable[[], None]]:
        import msgpack

        packb, unpackb = msgpack.packb, msgpack.unpackb
        none = packb(None)
        path = _sock_path(setup, self.name)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(64)
        conns: list[socket.socket] = []

        def serve(conn: socket.socket) -> None:
            frames = _Frames(conn)
            try:
                while True:
                    request = unpackb(frames.recv())
                    if request[0] == 0:
                        tally.call()
                        frames.send(none)
                    else:
                        data = request[1]
                        tally.call(data)
                        frames.send(packb(len(data)))
            except (EOFError, OSError):
                pass
            finally:
                conn.close()

        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                conns.append(conn)
                _thread(functools.partial(serve, conn), "msgpack-conn")

        _thread(accept, "msgpack-accept")

        def stop() -> None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
            for c in conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)

        return path, stop

    def client(self, address: str, setup: Setup) -> Calls:
        import msgpack

        packb, unpackb = msgpack.packb, msgpack.unpackb
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        frames = _Frames(sock)
        send, recv = frames.send, frames.recv
        null_request = packb([0])

        def null() -> Any:
            send(null_request)
            return unpackb(recv())

        def size(data: bytes) -> Any:
            send(packb([1, data]))
            return unpackb(recv())

        return Calls(null, size, sock.close)


# --------------------------------------------------------------------------- registration
WINIPC = register(WinipcRpcScenario())
WINIPC_TCP = register(WinipcRpcTcpScenario())
PIPE_REF = register(PipeReferenceScenario())
XMLRPC = register(XmlRpcScenario())
PYRO5 = register(Pyro5Scenario())
RPYC = register(RpycScenario())
GRPC = register(GrpcScenario())
MP_MANAGER = register(MpManagerScenario())
MSGPACK = register(MsgpackUnixScenario())

#: the peers the calls-per-second targets take the best of
FRAMEWORKS: tuple[str, ...] = (PYRO5.name, RPYC.name, GRPC.name)

register_target(
    Target(
        "rpc-null-vs-pipe",
        WINIPC.name,
        NULL,
        "null call round trip (median) vs a 64 B pipe round trip",
        0.0,
        versus=PIPE_REF.name,
        figure="median",
        at_most=1.3,
    )
)
for _key, _threads in ((CALLS_1, 1), (CALLS_8, THREADS)):
    _what = f"calls per second, {_threads} client thread{'s' if _threads > 1 else ''}"
    register_target(
        Target(
            f"{_key}-vs-frameworks",
            WINIPC.name,
            _key,
            f"{_what}, vs the best of Pyro5, RPyC, grpcio",
            3.0,
            versus=FRAMEWORKS,
        )
    )
    register_target(
        Target(
            f"{_key}-vs-mp-manager",
            WINIPC.name,
            _key,
            f"{_what}, vs multiprocessing managers",
            1.0,
            versus=MP_MANAGER.name,
        )
    )
register_target(Target("rpc-1mib", WINIPC.name, ARG_1M, "a 1 MiB argument", 1000.0))
