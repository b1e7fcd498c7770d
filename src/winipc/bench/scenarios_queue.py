"""Bench scenarios for message queues: :mod:`winipc.msmq` against persist-queue and nats-py.

Every scenario here is in group ``queue`` and measured on one metric, ``queue-1k``:
bursts of 1 KiB messages from producers to one consumer, messages per second from the
first send to the last receipt (see :meth:`winipc.bench.runner.Runner._queue` for the
burst sizes and the budget). The worker process is the consumer: it creates the queue
(or stream) in :meth:`~winipc.bench.registry.Scenario.serve`, opens it to receive, and
removes it when the session ends; the runner opens it to send. Both sides also remove
it when they close, so a failed session leaves nothing behind.

winipc (``peer=False``):

* ``winipc-queue-recoverable``: a local queue (one SQLite file), recoverable delivery
  (on disk, fdatasync, before ``send()`` returns), one producer, ``send()`` per message;
* ``winipc-queue-recoverable-4p``: the same with four producer processes at once (the
  local store commits their sends together: group commit);
* ``winipc-queue-send-many``: recoverable, one producer, ``send_many()`` of 64 messages
  (every one of them on disk before it returns);
* ``winipc-queue-express``: express delivery (committed to the queue file without
  waiting for the disk), one producer;
* ``winipc-queue-nats``: a queue on the NATS JetStream server at
  ``nats://127.0.0.1:4222`` (:data:`NATS_URL`), recoverable, one producer; the consumer
  opens it with ``prefetch=`` :data:`NATS_PREFETCH`: at-least-once receives (messages
  pulled ahead, ``+ACK`` not waited for), as the nats-py peer's;
* ``winipc-queue-nats-exact``: the same with the default receive (no prefetch: each
  message removed on the server before ``receive()`` returns, at most once), for the
  price of MSMQ's semantics; no target.

Peers (``peer=True``):

* ``persist-queue``: ``persistqueue.SQLiteAckQueue`` (``auto_commit=True``,
  ``multithreading=False``, bodies stored as they are: no pickle) in the run's workdir;
  ``put()``, and ``get()`` + ``ack()`` in the consumer. It opens SQLite in WAL mode and
  leaves ``synchronous`` at SQLite's default, FULL (2): each commit syncs the WAL, so
  each ``put()`` is on disk when it returns, as a recoverable send is (the description
  reports the value read from a live queue). Its blocking ``get()`` is woken only by a
  ``put()`` of the same process, so the consumer polls ``get(block=False)`` every
  :data:`PERSIST_POLL` seconds while the queue is empty; acknowledged rows are cleared
  between bursts (untimed), as a long-running user of it would.
* ``nats-py-queue``: raw nats-py on the same server: a work-queue stream, a loop of
  ``await js.publish()`` (each waiting for the server's acknowledgement), a durable
  pull consumer that ``fetch()``es up to :data:`FETCH` messages and ``ack()``s each.

The NATS scenarios are not available when no NATS server with JetStream answers at
:data:`NATS_URL`, persist-queue when the package is missing (``winipc[peers]``).

Each message is 1024 bytes: the burst's nonce and the message's sequence number, then
bytes of a pool both sides derive from the run's secret. The consumer checks every
message against what it must be, counts each sequence number once (a second copy is a
duplicate), and both sides report the sum of the messages' CRC-32s, which the runner
compares. The multi-producer scenario runs its producers as processes
(``python -c "...producer_main()"``) started when the runner connects; they inherit the
runner's CPU placement and start each burst together.

Importing this module registers the scenarios and the targets the report holds them to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from winipc.bench.registry import (
    MESSAGES,
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
from winipc.bench.workload import BenchError, VerificationError, no_gc

#: the scenarios' group and their metric's key
GROUP = "queue"
METRIC = "queue-1k"
#: bytes per message
BODY = 1024
#: seconds a side waits for the other before the run fails (never reached when healthy)
PATIENCE = 60.0
#: messages per send_many() call of winipc-queue-send-many
SEND_MANY_BATCH = 64
#: producer processes of winipc-queue-recoverable-4p
PRODUCERS = 4
#: the NATS server of the NATS scenarios
NATS_URL = "nats://127.0.0.1:4222"
#: most messages one fetch() of the raw nats-py consumer asks for
FETCH = 256
#: ``prefetch`` of winipc-queue-nats's receiving handle (see winipc.msmq.open)
NATS_PREFETCH = 16
#: seconds the persist-queue consumer sleeps when the queue is empty
PERSIST_POLL = 0.0005

_HEAD = struct.Struct("<II")  # nonce, sequence number
_POOL = 64 * 1024


# --------------------------------------------------------------------------- messages
def message_pool(secret: str) -> bytes:
    """The bytes every message is cut from, the same in every process of a run."""
    return hashlib.shake_256(secret.encode()).digest(_POOL)


def burst_nonce(secret: str, n: int) -> int:
    """The nonce of a session's ``n``-th burst (both sides count their bursts)."""
    return zlib.crc32(f"{secret}:{n}".encode())


def make_body(pool: bytes, nonce: int, seq: int) -> bytes:
    """Message ``seq`` of the burst ``nonce``: :data:`BODY` bytes."""
    off = (seq * 1031) % (_POOL - BODY)
    return _HEAD.pack(nonce, seq) + pool[off : off + BODY - _HEAD.size]


def checksum(bodies: Sequence[Buffer]) -> int:
    """The sum of the bodies' CRC-32s modulo 2**32: the same in any order."""
    return sum(zlib.crc32(b) for b in bodies) & 0xFFFFFFFF


# --------------------------------------------------------------------------- senders, receivers
class Sender(Protocol):
    """One producer's way of sending (built from a JSON spec, in any process)."""

    def send_all(self, bodies: Sequence[bytes]) -> None:
        """Send every body, in order; each is stored (as durable as the scenario says)
        when this returns."""

    def close(self) -> None: ...


class Receiver(Protocol):
    """The consumer's way of receiving."""

    def take(self, most: int, timeout: float) -> list[bytes]:
        """1 to ``most`` bodies (received, and acknowledged where the queue has it).

        Raises:
            BenchError: nothing arrived within ``timeout`` seconds.
        """

    def after_burst(self) -> None:
        """Housekeeping between bursts (untimed)."""

    def close(self) -> None: ...


@contextlib.contextmanager
def _no_durability_warning() -> Iterator[None]:
    """The NATS backend warns once per handle when a recoverable send is not synced: the
    bench describes that itself, and a warning must not end a test run."""
    with warnings.catch_warnings():
        backend = sys.modules.get("winipc.msmq._nats")  # loaded once a NATS queue is open
        category = getattr(backend, "DurabilityWarning", None)
        if isinstance(category, type) and issubclass(category, Warning):
            warnings.simplefilter("ignore", category)
        yield


class _MsmqSender:
    def __init__(self, path: str, express: bool, batch: int) -> None:
        from winipc import msmq

        self._delivery = msmq.Delivery.EXPRESS if express else msmq.Delivery.RECOVERABLE
        self._batch = batch
        self._q = msmq.open(path, "send")

    def send_all(self, bodies: Sequence[bytes]) -> None:
        with _no_durability_warning():
            if self._batch:
                send_many, step = self._q.send_many, self._batch
                for i in range(0, len(bodies), step):
                    send_many(bodies[i : i + step])
                return
            send, delivery = self._q.send, self._delivery
            for body in bodies:
                send(body, delivery=delivery)

    def close(self) -> None:
        self._q.close()


class _MsmqReceiver:
    def __init__(self, path: str, prefetch: int = 0) -> None:
        from winipc import msmq

        self._q = msmq.open(path, "receive", prefetch=prefetch) if prefetch else msmq.open(path, "receive")

    def take(self, most: int, timeout: float) -> list[bytes]:
        from winipc import errors as W

        try:
            m = self._q.receive(timeout)
        except W.IoTimeout:
            raise BenchError(f"queue: no message within {timeout} s") from None
        if not isinstance(m.body, bytes):
            raise VerificationError(f"queue: a {m.body_type} body, expected bytes")
        return [m.body]

    def after_burst(self) -> None:
        pass

    def close(self) -> None:
        self._q.close()


class _RawBytes:
    """A persist-queue serializer that stores bytes as they are (no pickle)."""

    dumps = staticmethod(bytes)
    loads = staticmethod(bytes)


def _persist_queue(path: str) -> Any:
    pq = importlib.import_module("persistqueue")
    return pq.SQLiteAckQueue(path, auto_commit=True, multithreading=False, serializer=_RawBytes)


class _PersistSender:
    def __init__(self, path: str) -> None:
        self._q = _persist_queue(path)

    def send_all(self, bodies: Sequence[bytes]) -> None:
        put = self._q.put
        for body in bodies:
            put(body)

    def close(self) -> None:
        self._q.close()


class _PersistReceiver:
    def __init__(self, path: str) -> None:
        self._q = _persist_queue(path)
        self._empty = importlib.import_module("persistqueue").Empty

    def take(self, most: int, timeout: float) -> list[bytes]:
        q, empty = self._q, self._empty
        deadline = 0.0
        while True:
            try:
                item = q.get(block=False, raw=True)
            except empty:
                now = time.monotonic()
                if not deadline:
                    deadline = now + timeout
                elif now > deadline:
                    raise BenchError(f"persist-queue: no message within {timeout} s") from None
                time.sleep(PERSIST_POLL)
                continue
            q.ack(item)
            data: bytes = item["data"]
            return [data]

    def after_burst(self) -> None:
        self._q.clear_acked_data(max_delete=0, keep_latest=0)

    def close(self) -> None:
        self._q.close()


class _JetStream:
    """A nats-py connection with a private event loop, run while an operation runs."""

    def __init__(self, url: str) -> None:
        self.nats = importlib.import_module("nats")
        self.loop = asyncio.new_event_loop()
        try:
            self.nc = self.run(self.nats.connect(url, connect_timeout=5, allow_reconnect=False))
        except BaseException:
            self.loop.close()
            raise
        self.js = self.nc.jetstream()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            self.run(self.nc.close())
        finally:
            self.loop.close()


def _stream_names(tag: str) -> tuple[str, str]:
    """(stream, subject) of the raw JetStream scenario for a session."""
    token = "".join(c if c.isalnum() else "_" for c in tag)
    return f"WINIPC_BENCH_{token}", f"winipc-bench.{token}"


class _JetStreamSender:
    def __init__(self, url: str, subject: str) -> None:
        self._c = _JetStream(url)
        self._subject = subject

    def send_all(self, bodies: Sequence[bytes]) -> None:
        js, subject = self._c.js, self._subject

        async def publish() -> None:
            for body in bodies:
                await js.publish(subject, body)

        self._c.run(publish())

    def close(self) -> None:
        self._c.close()


class _JetStreamReceiver:
    def __init__(self, url: str, stream: str, subject: str) -> None:
        self._c = _JetStream(url)
        try:
            self._sub = self._c.run(self._c.js.pull_subscribe(subject, durable="bench", stream=stream))
        except BaseException:
            self._c.close()
            raise

    def take(self, most: int, timeout: float) -> list[bytes]:
        sub, timeouts = self._sub, self._c.nats.errors.TimeoutError

        async def fetch() -> list[bytes]:
            try:
                msgs = await sub.fetch(batch=min(most, FETCH), timeout=timeout)
            except timeouts:
                raise BenchError(f"nats-py: no message within {timeout} s") from None
            out = []
            for m in msgs:
                out.append(m.data)
                await m.ack()
            return out

        got: list[bytes] = self._c.run(fetch())
        return got

    def after_burst(self) -> None:
        self._c.run(self._c.nc.flush())  # the acknowledgements reach the server

    def close(self) -> None:
        self._c.close()


def make_sender(spec: dict[str, Any]) -> Sender:
    """The sender a spec (JSON, from :meth:`QueueScenario.address`) describes."""
    kind = spec["kind"]
    if kind == "msmq":
        return _MsmqSender(spec["path"], bool(spec.get("express")), int(spec.get("batch", 0)))
    if kind == "persist":
        return _PersistSender(spec["path"])
    if kind == "jetstream":
        return _JetStreamSender(spec["url"], spec["subject"])
    raise BenchError(f"queue: unknown sender kind {kind!r}")


def make_receiver(spec: dict[str, Any]) -> Receiver:
    """The receiver a spec describes."""
    kind = spec["kind"]
    if kind == "msmq":
        return _MsmqReceiver(spec["path"], int(spec.get("prefetch", 0)))
    if kind == "persist":
        return _PersistReceiver(spec["path"])
    if kind == "jetstream":
        return _JetStreamReceiver(spec["url"], spec["stream"], spec["subject"])
    raise BenchError(f"queue: unknown receiver kind {kind!r}")


# --------------------------------------------------------------------------- producer processes
class _Lines:
    """JSON lines from a pipe, with a time-out."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buf = b""

    def read(self, timeout: float, who: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                raise BenchError(f"{who}: no answer within {timeout} s")
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise BenchError(f"{who} ended")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise BenchError(f"{who}: unexpected output {line[:200]!r}")
        if not obj.get("ok", True):
            cls = VerificationError if obj.get("verification") else BenchError
            raise cls(f"{who}: {obj.get('error')}")
        return obj


class ProducerPool:
    """Producer processes sending one burst together, each every ``n``-th message.

    Args:
        spec: what each sends to (:func:`make_sender`).
        secret: the run's secret (the message pool).
        n: how many.
    """

    def __init__(self, spec: dict[str, Any], secret: str, n: int) -> None:
        env = dict(os.environ)
        pkg_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_parent, env.get("PYTHONPATH")]))
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lines: list[_Lines] = []
        try:
            for i in range(n):
                proc = subprocess.Popen(
                    [sys.executable, "-c", "from winipc.bench.scenarios_queue import producer_main as m; m()"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    bufsize=0,
                    env=env,
                )
                self._procs.append(proc)
                assert proc.stdout is not None
                self._lines.append(_Lines(proc.stdout))
                self._say(proc, {"spec": spec, "secret": secret, "index": i, "of": n})
            for i, lines in enumerate(self._lines):
                lines.read(30.0, f"producer {i}")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _say(proc: subprocess.Popen[bytes], obj: dict[str, Any]) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write((json.dumps(obj) + "\n").encode())
        except BrokenPipeError:
            raise BenchError("a producer process is gone") from None

    def burst(self, nonce: int, count: int) -> tuple[int, int, int]:
        """Every producer sends its share of a burst; (first send, last end, sent)."""
        for proc in self._procs:
            self._say(proc, {"op": "burst", "nonce": nonce, "count": count})
        for i, lines in enumerate(self._lines):
            lines.read(PATIENCE, f"producer {i}")  # bodies built: ready to go
        for proc in self._procs:
            self._say(proc, {"op": "go"})
        done = [lines.read(PATIENCE * 2, f"producer {i}") for i, lines in enumerate(self._lines)]
        return (
            min(int(d["start"]) for d in done),
            max(int(d["end"]) for d in done),
            sum(int(d["sent"]) for d in done),
        )

    def close(self) -> None:
        for proc in self._procs:
            with contextlib.suppress(OSError, BenchError):
                self._say(proc, {"op": "quit"})
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        self._procs = []


def producer_main() -> None:
    """A producer process of :class:`ProducerPool` (JSON lines on stdin and stdout)."""

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def read() -> dict[str, Any] | None:
        line = sys.stdin.readline()
        return json.loads(line) if line else None

    try:
        job = read()
        if job is None:
            return
        sender = make_sender(job["spec"])
        try:
            pool = message_pool(job["secret"])
            index, of = int(job["index"]), int(job["of"])
            say({"ready": True})
            while (cmd := read()) is not None and cmd.get("op") == "burst":
                nonce, count = int(cmd["nonce"]), int(cmd["count"])
                bodies = [make_body(pool, nonce, seq) for seq in range(index, count, of)]
                say({"prepared": True})
                go = read()
                if go is None or go.get("op") != "go":
                    break
                with no_gc():
                    start = time.monotonic_ns()
                    sender.send_all(bodies)
                    end = time.monotonic_ns()
                say({"start": start, "end": end, "sent": len(bodies)})
        finally:
            sender.close()
    except Exception as exc:  # reported to the runner, which raises it there
        say({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)


# --------------------------------------------------------------------------- the two ends
class _ProducerEnd:
    """The runner's end: one sender in this process, or a pool of producer processes."""

    def __init__(self, scenario: QueueScenario, spec: dict[str, Any], setup: Setup) -> None:
        self._scenario, self._spec, self._secret = scenario, spec, setup.secret
        self._pool = message_pool(setup.secret)
        self._bursts = 0
        self._sender: Sender | None = None
        self._producers: ProducerPool | None = None
        try:
            if scenario.producers > 1:
                self._producers = ProducerPool(spec, setup.secret, scenario.producers)
            else:
                self._sender = make_sender(spec)
        except BaseException:
            scenario.remove(spec)
            raise

    def produce(self, count: int) -> list[int]:
        nonce = burst_nonce(self._secret, self._bursts)
        self._bursts += 1
        if self._producers is not None:
            start, end, sent = self._producers.burst(nonce, count)
        else:
            assert self._sender is not None
            bodies = [make_body(self._pool, nonce, seq) for seq in range(count)]
            with no_gc():
                start = time.monotonic_ns()
                self._sender.send_all(bodies)
                end = time.monotonic_ns()
            sent = count
        crc = checksum([make_body(self._pool, nonce, seq) for seq in range(count)])
        return [start, end, sent, crc]

    def send(self, data: Buffer) -> None:
        raise NotImplementedError("queue scenarios send through exchange()")

    def recv(self, size: int) -> Buffer:
        raise NotImplementedError("queue scenarios receive through exchange()")

    def close(self) -> None:
        try:
            if self._producers is not None:
                self._producers.close()
            if self._sender is not None:
                self._sender.close()
        finally:
            self._scenario.remove(self._spec)  # the worker does too: whoever is first


class _ConsumerEnd:
    """The worker's end: receives and verifies each burst."""

    def __init__(self, receiver: Receiver, setup: Setup) -> None:
        self._receiver = receiver
        self._secret = setup.secret
        self._pool = message_pool(setup.secret)
        self._bursts = 0

    def consume(self, count: int) -> list[int]:
        nonce = burst_nonce(self._secret, self._bursts)
        self._bursts += 1
        seen = bytearray(count)
        got: list[bytes] = []
        received = duplicates = 0
        take, unpack, size = self._receiver.take, _HEAD.unpack_from, _HEAD.size
        last = 0
        with no_gc():
            while received < count:
                for msg in take(count - received, PATIENCE):
                    if len(msg) < size:
                        raise VerificationError(f"queue: a message of {len(msg)} bytes")
                    their_nonce, seq = unpack(msg)
                    if their_nonce != nonce:
                        continue  # from an earlier burst (redelivered): not this one's
                    if seq >= count:
                        raise VerificationError(f"queue: message number {seq} of a burst of {count}")
                    if seen[seq]:
                        duplicates += 1
                        continue
                    seen[seq] = 1
                    received += 1
                    got.append(msg)
                last = time.monotonic_ns()
        self._receiver.after_burst()
        pool = self._pool
        for msg in got:
            seq = unpack(msg)[1]
            if msg != make_body(pool, nonce, seq):
                raise VerificationError(f"queue: message {seq} of the burst arrived damaged")
        return [received, duplicates, last, checksum(got)]

    def send(self, data: Buffer) -> None:
        raise NotImplementedError("queue scenarios send through exchange()")

    def recv(self, size: int) -> Buffer:
        raise NotImplementedError("queue scenarios receive through exchange()")

    def close(self) -> None:
        self._receiver.close()


class _QueueListening:
    """The worker side after serve(): the queue exists; accept() opens it to receive."""

    def __init__(self, scenario: QueueScenario, spec: dict[str, Any], setup: Setup) -> None:
        self._scenario, self._spec, self._setup = scenario, spec, setup
        self.address = json.dumps(spec)

    def accept(self, timeout: float | None) -> Endpoint:
        return _ConsumerEnd(make_receiver(self._spec), self._setup)

    def close(self) -> None:
        self._scenario.remove(self._spec)


# --------------------------------------------------------------------------- scenarios
class QueueScenario(Scenario):
    """Base of the queue scenarios: one consumer (the worker), producers in the runner.

    Subclasses say where the queue is (:meth:`create`, :meth:`remove`) and how many
    producers send (:attr:`producers`).
    """

    group = GROUP
    kinds: frozenset[MetricKind] = frozenset({MESSAGES})
    producers = 1

    def supports(self, metric: Metric) -> bool:
        return metric.kind in self.kinds and metric.group == GROUP

    def create(self, setup: Setup) -> dict[str, Any]:
        """Make the queue (worker side); return its spec (JSON: the address)."""
        raise NotImplementedError

    def remove(self, spec: dict[str, Any]) -> None:
        """Remove the queue if it is still there; never raises."""

    def serve(self, setup: Setup) -> _QueueListening:
        spec = self.create(setup)
        return _QueueListening(self, spec, setup)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        return _ProducerEnd(self, json.loads(address), setup)

    def exchange(self, ep: Endpoint, metric: Metric, count: int, runner: bool) -> list[int]:
        if metric.group != GROUP:
            return super().exchange(ep, metric, count, runner)
        if runner:
            assert isinstance(ep, _ProducerEnd)
            return ep.produce(count)
        assert isinstance(ep, _ConsumerEnd)
        return ep.consume(count)


def _msmq_unavailable() -> str | None:
    try:
        importlib.import_module("winipc.msmq")
    except ImportError as exc:
        return f"winipc.msmq cannot be imported: {exc}"
    return None


class LocalQueueScenario(QueueScenario):
    """winipc.msmq on this machine: one SQLite queue file in the store."""

    name = "winipc-queue-recoverable"
    mechanism = "winipc.msmq local queue, recoverable, 1 producer"
    description = (
        "create_queue(.\\private$\\...) in the worker (consumer: receive()); the runner "
        "send()s each 1 KiB message with Delivery.RECOVERABLE (fdatasync of the queue's "
        "WAL before send() returns)"
    )
    express = False
    batch = 0

    def unavailable(self) -> str | None:
        return _msmq_unavailable()

    def create(self, setup: Setup) -> dict[str, Any]:
        from winipc import msmq

        path = f".\\private$\\winipc-bench-{setup.tag}-{self.name}"
        msmq.create_queue(path)
        return {"kind": "msmq", "path": path, "express": self.express, "batch": self.batch}

    def remove(self, spec: dict[str, Any]) -> None:
        from winipc import msmq

        with contextlib.suppress(Exception):
            msmq.delete_queue(spec["path"])


class LocalQueue4Scenario(LocalQueueScenario):
    name = "winipc-queue-recoverable-4p"
    mechanism = f"winipc.msmq local queue, recoverable, {PRODUCERS} producer processes"
    description = (
        f"as winipc-queue-recoverable, with {PRODUCERS} producer processes sending at once "
        "(each every 4th message; their sends are committed together: group commit)"
    )
    producers = PRODUCERS


class LocalSendManyScenario(LocalQueueScenario):
    name = "winipc-queue-send-many"
    mechanism = f"winipc.msmq local queue, recoverable, send_many() of {SEND_MANY_BATCH}"
    description = (
        f"as winipc-queue-recoverable, the runner calling send_many() with {SEND_MANY_BATCH} "
        "messages (all of them on disk before it returns)"
    )
    batch = SEND_MANY_BATCH


class LocalExpressScenario(LocalQueueScenario):
    name = "winipc-queue-express"
    mechanism = "winipc.msmq local queue, express, 1 producer"
    description = (
        "as winipc-queue-recoverable with Delivery.EXPRESS: committed to the queue file "
        "without waiting for the disk (survives a process crash, not a machine crash)"
    )
    express = True


@functools.cache
def _nats_server_problem(url: str) -> str | None:
    """Why no NATS server with JetStream answers at ``url``, or None when one does."""
    try:
        importlib.import_module("nats")
    except ImportError as exc:
        return f"nats-py is not installed (pip install 'winipc[peers]'): {exc}"
    host, _, port = url.removeprefix("nats://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0) as s:
            s.settimeout(1.0)
            first = b""
            while b"\r\n" not in first and len(first) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                first += chunk
    except OSError as exc:
        return f"no NATS server answers at {url}: {exc}"
    if not first.startswith(b"INFO "):
        return f"what answers at {url} is not a NATS server"
    try:
        info = json.loads(first[5:].split(b"\r\n", 1)[0])
    except ValueError:
        return f"the NATS server at {url} sent an INFO line that is not JSON"
    if not isinstance(info, dict) or not info.get("jetstream"):
        return f"the NATS server at {url} does not have JetStream enabled (nats-server -js)"
    return None


class NatsQueueScenario(QueueScenario):
    """winipc.msmq on a NATS JetStream server, received with ``prefetch``."""

    name = "winipc-queue-nats"
    mechanism = f"winipc.msmq queue on NATS JetStream, recoverable, 1 producer, prefetch={NATS_PREFETCH}"
    description = (
        f"create_queue({NATS_URL}/...) in the worker; consumer: open(..., prefetch="
        f"{NATS_PREFETCH}) and receive(): up to {NATS_PREFETCH} messages pulled ahead, each "
        "+ACK sent after receive() returns without waiting (at least once, as the nats-py "
        "peer's fetch() + ack()); the runner send()s each message (Delivery.RECOVERABLE: "
        "acknowledged by the server; on disk only as the server syncs, see winipc queue stat)"
    )
    prefetch = NATS_PREFETCH

    def unavailable(self) -> str | None:
        why = _nats_server_problem(NATS_URL)
        if why is None:
            try:
                importlib.import_module("winipc.msmq._nats")
            except ImportError as exc:
                why = f"winipc.msmq's NATS backend cannot be imported: {exc}"
        return why

    def create(self, setup: Setup) -> dict[str, Any]:
        from winipc import msmq

        path = f"{NATS_URL}/winipc-bench-{setup.tag}-{self.name}"
        msmq.create_queue(path)
        return {"kind": "msmq", "path": path, "express": False, "batch": 0, "prefetch": self.prefetch}

    def remove(self, spec: dict[str, Any]) -> None:
        from winipc import msmq

        with contextlib.suppress(Exception):
            msmq.delete_queue(spec["path"])


class NatsExactQueueScenario(NatsQueueScenario):
    """winipc.msmq on NATS with the default (exact, at-most-once) receive."""

    name = "winipc-queue-nats-exact"
    mechanism = "winipc.msmq queue on NATS JetStream, recoverable, 1 producer, exact receive"
    description = (
        "as winipc-queue-nats, the consumer without prefetch (the default): each receive() "
        "looks which priorities hold messages, pulls one and deletes it on the server before "
        "returning (at most once, never a message another receive took)"
    )
    prefetch = 0


class NatsPyScenario(QueueScenario):
    """Peer: raw nats-py JetStream, a work-queue stream and a pull consumer."""

    name = "nats-py-queue"
    mechanism = "nats-py JetStream: await js.publish() loop, pull consumer fetch() + ack()"
    peer = True
    description = (
        f"a work-queue stream (file storage) on {NATS_URL} made by the worker; the runner "
        f"awaits js.publish() per message; the worker fetch()es up to {FETCH} from a "
        "durable pull consumer and ack()s each"
    )

    def unavailable(self) -> str | None:
        return _nats_server_problem(NATS_URL)

    def create(self, setup: Setup) -> dict[str, Any]:
        stream, subject = _stream_names(setup.tag)
        c = _JetStream(NATS_URL)
        try:
            c.run(c.js.add_stream(name=stream, subjects=[subject], retention="workqueue", storage="file"))
        finally:
            c.close()
        return {"kind": "jetstream", "url": NATS_URL, "stream": stream, "subject": subject}

    def remove(self, spec: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            c = _JetStream(spec["url"])
            try:
                c.run(c.js.delete_stream(spec["stream"]))
            finally:
                c.close()


@functools.cache
def persist_queue_synchronous() -> str:
    """SQLite's ``synchronous`` setting in a persist-queue queue, read from a live one."""
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    tmp = tempfile.mkdtemp(prefix="winipc-bench-pq-")
    try:
        q = _persist_queue(tmp)
        try:
            (value,) = q._conn.execute("PRAGMA synchronous").fetchone()
            (mode,) = q._conn.execute("PRAGMA journal_mode").fetchone()
        finally:
            q.close()
        return f"journal_mode={mode}, synchronous={names.get(value, value)} ({value})"
    except Exception as exc:  # reported, not fatal: the description only
        return f"synchronous unknown ({type(exc).__name__}: {exc})"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class PersistQueueScenario(QueueScenario):
    """Peer: persist-queue's SQLiteAckQueue, a SQLite file in the workdir."""

    name = "persist-queue"
    mechanism = "persistqueue.SQLiteAckQueue (auto_commit=True, multithreading=False)"
    peer = True

    description = (
        "a queue in the workdir made by the worker; put() per message; the worker polls "
        f"get(block=False) every {PERSIST_POLL * 1e3:g} ms when empty and ack()s; bodies "
        "stored as bytes (no pickle); SQLite journal_mode=WAL, synchronous left at "
        "SQLite's default"
    )

    def unavailable(self) -> str | None:
        try:
            importlib.import_module("persistqueue")
        except ImportError as exc:
            return f"persist-queue is not installed (pip install 'winipc[peers]'): {exc}"
        # asked once before a run: the settings it really uses go into the report
        self.description = type(self).description.replace(
            "journal_mode=WAL, synchronous left at SQLite's default", persist_queue_synchronous()
        )
        return None

    def create(self, setup: Setup) -> dict[str, Any]:
        path = os.path.join(setup.workdir, f"{setup.tag}-{self.name}")
        _persist_queue(path).close()
        return {"kind": "persist", "path": path}

    def remove(self, spec: dict[str, Any]) -> None:
        shutil.rmtree(spec["path"], ignore_errors=True)


LOCAL = register(LocalQueueScenario())
LOCAL_4P = register(LocalQueue4Scenario())
LOCAL_SEND_MANY = register(LocalSendManyScenario())
LOCAL_EXPRESS = register(LocalExpressScenario())
NATS = register(NatsQueueScenario())
NATS_EXACT = register(NatsExactQueueScenario())
NATS_PY = register(NatsPyScenario())
PERSIST = register(PersistQueueScenario())

register_target(
    Target(
        "queue-recoverable-vs-persist-queue",
        LOCAL.name,
        METRIC,
        "recoverable, 1 producer, vs persist-queue",
        2.0,
        versus=PERSIST.name,
    )
)
register_target(
    Target(
        "queue-recoverable-4p-vs-persist-queue",
        LOCAL_4P.name,
        METRIC,
        f"recoverable, {PRODUCERS} producers, vs persist-queue",
        10.0,
        versus=PERSIST.name,
    )
)
register_target(
    Target(
        "queue-send-many-vs-persist-queue",
        LOCAL_SEND_MANY.name,
        METRIC,
        f"recoverable, send_many() of {SEND_MANY_BATCH}, vs persist-queue",
        10.0,
        versus=PERSIST.name,
    )
)
register_target(
    Target("queue-express", LOCAL_EXPRESS.name, METRIC, "express, 1 producer", 100_000.0)
)
register_target(
    Target(
        "queue-nats-vs-nats-py",
        NATS.name,
        METRIC,
        "winipc on NATS vs raw nats-py js.publish()",
        0.8,
        versus=NATS_PY.name,
    )
)
