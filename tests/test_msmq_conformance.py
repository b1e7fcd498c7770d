"""Conformance of winipc.msmq to MSMQ's queue semantics, run against every backend.

Each test runs on the local store (SQLite) and on NATS JetStream (the server at
nats://127.0.0.1:4222; skipped when none answers, failed instead under
WINIPC_REQUIRE_ALL=1), unless it is marked for the local store only. Every queue a test
creates is deleted when it ends. Tests assert outcomes only: waits have generous
liveness bounds, never speed limits. Cross-process behaviour uses real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pickle
import random
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msmqutil import ID_RE, Queues, as_bytes, assert_empty, assert_invalid_handle, finish
from natsutil import server_answers
from winipc import errors as W
from winipc import msmq
from winipc.msmq import Ack, Delivery, MessageClass

from conftest import run_py, wait_line

REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
#: Seconds to wait for something that should happen at once before calling it lost.
WAIT = 10.0


def _skip(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (required: WINIPC_REQUIRE_ALL=1)")
    pytest.skip(reason)


def _need_nats() -> None:
    try:
        import nats  # noqa: F401
    except ImportError:
        _skip("nats-py is not installed (pip install 'winipc[nats]')")
    if not server_answers():
        _skip("no NATS server answers at nats://127.0.0.1:4222")


@pytest.fixture(
    params=[
        "local",
        # The local NATS server does not fsync: recoverable sends may warn about it.
        pytest.param("nats", marks=pytest.mark.filterwarnings("ignore:.*durab:UserWarning")),
    ]
)
def backend(request: pytest.FixtureRequest, winipc_root: Path) -> Iterator[Queues]:
    """Unique queues on one backend; every queue created is deleted at the end.

    Depends on ``winipc_root`` so the queues are gone before it checks for leftovers.
    """
    kind: str = request.param
    if kind == "nats":
        _need_nats()
        try:
            from winipc.msmq._nats import DurabilityWarning
        except ImportError:
            pass
        else:
            warnings.filterwarnings("ignore", category=DurabilityWarning)
    queues = Queues(kind)
    yield queues
    queues.cleanup()


local_only = pytest.mark.parametrize("backend", ["local"], indirect=True)


def begin_tx(backend: Queues) -> msmq.Transaction:
    """A transaction on the backend: msmq.transaction() locally, the NATS backend's own."""
    if backend.kind == "local":
        return msmq.transaction()
    from winipc.msmq import _nats

    begin = getattr(_nats, "begin_transaction", None)
    if begin is None:
        pytest.skip("the NATS backend has no begin_transaction(url)")
    return begin(backend.url)  # type: ignore[no-any-return]


# --- bodies and properties


def test_bytes_bodies_round_trip(backend: Queues) -> None:
    path = backend.new()
    bodies = [b"", b"\x00", os.urandom(4096), bytearray(b"from a bytearray"), memoryview(b"from a memoryview")]
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        for body in bodies:
            s.send(body)
        for body in bodies:
            m = r.receive(timeout=WAIT)
            assert m.body_type == "bytes"
            got = as_bytes(m.body)
            assert len(got) == len(body)
            assert hashlib.sha256(got).digest() == hashlib.sha256(bytes(body)).digest()
        assert_empty(r)


def test_one_mib_body_round_trip(backend: Queues) -> None:
    """1 MiB is well inside MSMQ's 4 MB message limit: the local store carries it. A NATS
    server carries at most its max_payload (1 MiB by default, headers included): above
    that the send is refused naming the limit and nothing is stored (docs/wire/msmq-nats.md),
    and the largest body that fits with the headers round-trips."""
    path = backend.new()
    big = os.urandom(1024 * 1024)
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        if backend.kind == "nats":
            with pytest.raises(W.IllegalPropertyValue, match="max_payload"):
                s.send(big, label="big")
            assert_empty(r)
            big = big[: 1024 * 1024 - 16 * 1024]
        sent = s.send(big, label="big")
        m = r.receive(timeout=WAIT)
        assert m.id == sent.id and m.body_type == "bytes"
        got = as_bytes(m.body)
        assert len(got) == len(big)
        assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
        assert_empty(r)


MSGPACK_BODIES: list[Any] = [
    {"sku": 42, "qty": 3},
    [1, "two", None, True, 2.5],
    "héllo, wörld ✓",
    0,
    -7,
    2**40,
    None,
    False,
    {"order": {"lines": [{"sku": 1, "tags": ["a", "b"]}, {"sku": 2, "raw": b"\x00\xff"}]}, "n": [[], {}]},
]


def test_msgpack_bodies_round_trip(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        for body in MSGPACK_BODIES:
            s.send(body)
        for body in MSGPACK_BODIES:
            m = r.receive(timeout=WAIT)
            assert m.body_type == "msgpack"
            assert m.body == body
            assert type(m.body) is type(body)
        assert_empty(r)


def test_properties_kept(backend: Queues) -> None:
    path = backend.new()
    reply = backend.new()
    admin = backend.new()
    t0 = time.time()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        sent = s.send(
            b"payload",
            label="an order",
            priority=6,
            correlation_id="corr-1",
            app_specific=2**32 - 1,
            response_queue=reply,
            admin_queue=admin,
            delivery=Delivery.EXPRESS,
            time_to_be_received=3600,
        )
        s.send({"second": True})  # defaults
        m = r.receive(timeout=WAIT)
        d = r.receive(timeout=WAIT)
    t1 = time.time()
    assert as_bytes(m.body) == b"payload"
    assert m.label == "an order"
    assert m.priority == 6
    assert m.correlation_id == "corr-1"
    assert m.app_specific == 2**32 - 1
    assert m.response_queue == reply
    assert m.admin_queue == admin
    assert m.delivery == Delivery.EXPRESS
    assert m.time_to_be_received == 3600
    assert m.message_class == MessageClass.NORMAL
    assert isinstance(m.id, str) and ID_RE.match(m.id), m.id
    assert m.id == sent.id
    assert t0 - 2 <= m.sent_time <= t1 + 2
    assert t0 - 2 <= m.arrived_time <= t1 + 2
    assert m.arrived_time >= m.sent_time - 1
    # the defaults
    assert d.body == {"second": True}
    assert d.label == ""
    assert d.priority == msmq.DEFAULT_PRIORITY
    assert d.correlation_id is None
    assert d.app_specific == 0
    assert d.response_queue is None and d.admin_queue is None
    assert d.delivery == Delivery.RECOVERABLE
    assert d.time_to_be_received is None
    assert ID_RE.match(d.id) and d.id != m.id


def test_ids_unique(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        sent = [s.send(b"x").id for _ in range(20)]
        got = [r.receive(timeout=WAIT).id for _ in range(20)]
    assert len(set(sent)) == 20
    assert got == sent
    assert all(ID_RE.match(i) for i in got)


SENDER = """
import sys
from winipc import msmq
with msmq.open(sys.argv[1], "send") as q:
    m = q.send(b"from a child", label="child")
print("sent", m.id, flush=True)
"""


def test_sender_pid_of_other_process(backend: Queues, procs: list[subprocess.Popen[str]]) -> None:
    path = backend.new()
    p = run_py(SENDER, path)
    procs.append(p)
    out = finish(p)
    with msmq.open(path, "receive") as r:
        m = r.receive(timeout=WAIT)
    assert as_bytes(m.body) == b"from a child"
    assert m.sender_pid == p.pid
    assert m.sender_pid != os.getpid()
    assert out.split()[:2] == ["sent", m.id]


# --- order


def test_priority_order(backend: Queues) -> None:
    path = backend.new()
    rng = random.Random(1234)
    plan = [rng.randrange(8) for _ in range(50)]
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        for seq, prio in enumerate(plan):
            s.send([prio, seq], priority=prio)
        got = [r.receive(timeout=WAIT) for _ in plan]
        assert_empty(r)
    expected = sorted(([prio, seq] for seq, prio in enumerate(plan)), key=lambda x: (-x[0], x[1]))
    assert [m.body for m in got] == expected
    assert [m.priority for m in got] == [e[0] for e in expected]


# --- peek, timeouts, waking


def test_peek_does_not_remove(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        sent = s.send(b"look")
        for _ in range(3):
            m = r.peek(timeout=WAIT)
            assert as_bytes(m.body) == b"look" and m.id == sent.id
        assert r.stat().messages == 1
        assert r.receive(timeout=0).id == sent.id
        assert_empty(r)


def test_receive_timeouts_on_empty(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "receive") as r:
        with pytest.raises(W.IoTimeout) as ei:
            r.receive(timeout=0)
        assert isinstance(ei.value, TimeoutError)
        assert ei.value.winerror == W.MQ_ERROR_IO_TIMEOUT
        with pytest.raises(TimeoutError):
            r.peek(timeout=0)
        t0 = time.monotonic()
        with pytest.raises(W.IoTimeout):
            r.receive(timeout=0.2)
        waited = time.monotonic() - t0
        assert 0.19 <= waited < 10, waited


WAITER = """
import sys
from winipc import msmq
with msmq.open(sys.argv[1], "receive") as q:
    print("ready", flush=True)
    m = q.receive(timeout=30)
print("got", bytes(m.body).hex(), flush=True)
"""


def test_blocking_receive_wakes_on_arrival(
    backend: Queues, procs: list[subprocess.Popen[str]]
) -> None:
    path = backend.new()
    p = run_py(WAITER, path)
    procs.append(p)
    wait_line(p, "ready", timeout=WAIT + 10)
    # The child prints "ready" just before it blocks; a short pause makes it likely that
    # it is already waiting (the outcome does not depend on it).
    time.sleep(0.3)
    with msmq.open(path, "send") as s:
        s.send(b"wake up")
    line = wait_line(p, "got", timeout=20)  # well under the child's 30 s
    assert line.split()[1] == b"wake up".hex()
    finish(p, timeout=WAIT)
    with msmq.open(path, "receive") as r:
        assert_empty(r)


# --- lookups


def test_receive_and_peek_by_id(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        ids = [s.send(f"m{i}".encode()).id for i in range(3)]
        assert as_bytes(r.peek_by_id(ids[1]).body) == b"m1"
        m = r.receive_by_id(ids[1])
        assert as_bytes(m.body) == b"m1" and m.id == ids[1]
        with pytest.raises(W.MessageNotFound):
            r.peek_by_id(ids[1])
        with pytest.raises(W.MessageNotFound):
            r.receive_by_id(ids[1])
        unknown = "{00000000-0000-0000-0000-000000000000}\\1"
        with pytest.raises(W.MessageNotFound) as ei:
            r.receive_by_id(unknown)
        assert isinstance(ei.value, LookupError)
        with pytest.raises(W.MessageNotFound):
            r.peek_by_id(unknown)
        assert [as_bytes(r.receive(timeout=0).body) for _ in range(2)] == [b"m0", b"m2"]
        assert_empty(r)


def test_receive_and_peek_by_correlation_id(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        s.send(b"a1", correlation_id="c1")
        s.send(b"b", correlation_id="c2")
        s.send(b"a2", correlation_id="c1")
        s.send(b"none")
        assert as_bytes(r.peek_by_correlation_id("c2").body) == b"b"
        assert as_bytes(r.peek_by_correlation_id("c1").body) == b"a1"
        assert as_bytes(r.receive_by_correlation_id("c1").body) == b"a1"
        assert as_bytes(r.receive_by_correlation_id("c1").body) == b"a2"
        with pytest.raises(W.IoTimeout):
            r.receive_by_correlation_id("c1", timeout=0)
        with pytest.raises(W.IoTimeout):
            r.peek_by_correlation_id("nope", timeout=0)
        assert r.stat().messages == 2
        assert [as_bytes(r.receive(timeout=0).body) for _ in range(2)] == [b"b", b"none"]


# --- cursors


def test_cursor(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        with r.cursor() as c, pytest.raises(W.IoTimeout):
            c.peek_current(timeout=0)
        for i in range(3):
            s.send(f"m{i}".encode())
        with r.cursor() as fresh, pytest.raises(W.IllegalCursorAction):
            fresh.peek_next(timeout=0)
        with r.cursor() as c:
            assert as_bytes(c.peek_current().body) == b"m0"
            assert as_bytes(c.peek_current().body) == b"m0"  # does not move
            assert as_bytes(c.peek_next().body) == b"m1"
            assert as_bytes(c.peek_next().body) == b"m2"
            with pytest.raises(W.IoTimeout):
                c.peek_next(timeout=0)
        assert r.stat().messages == 3  # peeking removed nothing
        with r.cursor() as c:
            c.peek_current()
            assert as_bytes(c.peek_next().body) == b"m1"
            assert as_bytes(c.receive_current().body) == b"m1"
        assert [as_bytes(r.receive(timeout=0).body) for _ in range(2)] == [b"m0", b"m2"]
        assert_empty(r)


# --- time to be received, dead letters, acknowledgements


def _expire(m: msmq.Message) -> None:
    """Sleep until ``m``'s time-to-be-received has run out (with a margin)."""
    assert m.time_to_be_received is not None
    time.sleep(max(0.0, m.sent_time + m.time_to_be_received + 0.3 - time.time()))


def test_expired_message_not_delivered(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        m = s.send(b"stale", time_to_be_received=0.2)
        s.send(b"fresh", time_to_be_received=3600)
        _expire(m)
        assert as_bytes(r.receive(timeout=0).body) == b"fresh"
        with pytest.raises(W.IoTimeout):
            r.receive(timeout=0)
        assert r.stat().messages == 0


@pytest.mark.parametrize("transactional", [False, True], ids=["plain", "transactional"])
def test_expired_message_goes_to_dead_letter(backend: Queues, transactional: bool) -> None:
    path = backend.new(transactional=transactional)
    tx = msmq.SINGLE_MESSAGE if transactional else None
    dlq = backend.deadletter(path, transactional=transactional)
    label = "dl-" + os.urandom(4).hex()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        sent = s.send(b"too late", label=label, time_to_be_received=0.2, use_dead_letter=True, transaction=tx)
        _expire(sent)
        with pytest.raises(W.IoTimeout):
            r.receive(timeout=0)
    with msmq.open(dlq, "receive") as d:
        m = d.receive(timeout=WAIT)
        assert as_bytes(m.body) == b"too late"
        assert m.label == label
        with pytest.raises(W.IoTimeout):
            d.receive(timeout=0)


def test_expired_message_negative_ack(backend: Queues) -> None:
    path = backend.new()
    admin = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        sent = s.send(
            b"nobody came", time_to_be_received=0.2, acknowledge=Ack.NEGATIVE_RECEIVE, admin_queue=admin
        )
        _expire(sent)
        with pytest.raises(W.IoTimeout):
            r.receive(timeout=0)
    with msmq.open(admin, "receive") as a:
        nack = a.receive(timeout=WAIT)
        assert nack.message_class == MessageClass.NACK_RECEIVE_TIMEOUT
        assert nack.message_class.is_nack
        assert nack.correlation_id == sent.id
        with pytest.raises(W.IoTimeout):
            a.receive(timeout=0)


def test_positive_acks(backend: Queues) -> None:
    path = backend.new()
    admin = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r, msmq.open(admin, "receive") as a:
        arrived = s.send(b"arrival", acknowledge=Ack.POSITIVE_ARRIVAL, admin_queue=admin)
        ack = a.receive(timeout=WAIT)
        assert ack.message_class == MessageClass.ACK_REACH_QUEUE
        assert ack.correlation_id == arrived.id
        assert r.receive(timeout=WAIT).id == arrived.id
        with pytest.raises(W.IoTimeout):
            a.receive(timeout=0)  # no receive acknowledgement was asked for

        received = s.send(b"receipt", acknowledge=Ack.POSITIVE_RECEIVE, admin_queue=admin)
        with pytest.raises(W.IoTimeout):
            a.peek(timeout=0)  # nothing until it is received
        assert r.receive(timeout=WAIT).id == received.id
        ack = a.receive(timeout=WAIT)
        assert ack.message_class == MessageClass.ACK_RECEIVE
        assert not ack.message_class.is_nack
        assert ack.correlation_id == received.id
        with pytest.raises(W.IoTimeout):
            a.receive(timeout=0)


# --- bad input


BAD_SENDS: list[tuple[str, Any, dict[str, Any]]] = [
    ("label", b"x", {"label": "x" * 251}),
    ("label", b"x", {"label": 7}),
    ("priority", b"x", {"priority": 8}),
    ("priority", b"x", {"priority": -1}),
    ("priority", b"x", {"priority": True}),
    ("priority", b"x", {"priority": 3.0}),
    ("app_specific", b"x", {"app_specific": 2**32}),
    ("app_specific", b"x", {"app_specific": -1}),
    ("correlation_id", b"x", {"correlation_id": "c" * 256}),
    ("time_to_be_received", b"x", {"time_to_be_received": -1}),
    ("acknowledge", b"x", {"acknowledge": Ack.POSITIVE_ARRIVAL}),  # no admin_queue
    ("body", object(), {}),
    ("body", {"k": object()}, {}),
    ("colour", b"x", {"colour": "red"}),
]


def test_bad_sends_rejected_and_nothing_stored(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        for prop, body, kw in BAD_SENDS:
            with pytest.raises(W.IllegalPropertyValue) as ei:
                s.send(body, **kw)
            assert isinstance(ei.value, ValueError)
            assert prop in str(ei.value), f"{kw}: {ei.value}"
            assert r.stat().messages == 0, f"{prop} {kw}: something was stored"
        with pytest.raises(W.IllegalPropertyValue) as ei:
            s.send(b"x", label="y" * 251)
        assert "250" in str(ei.value)
        # the limits themselves are accepted
        s.send(b"ok", label="z" * 250, priority=7, app_specific=2**32 - 1, correlation_id="c" * 255)
        s.send(b"ok", priority=0)
        assert r.stat().messages == 2
        assert r.receive(timeout=0).label == "z" * 250
        assert r.receive(timeout=0).priority == 0
        assert_empty(r)


def test_queue_path_errors(backend: Queues) -> None:
    if backend.kind == "local":
        bad = ["", "noslash", ".\\private$\\a;b"]
        error: type[W.MsmqError] = W.IllegalQueuePathname
    else:
        bad = [backend.url + "/", backend.url + "/a;b", backend.url + "/a/b"]
        error = W.IllegalFormatName
    for path in bad:
        with pytest.raises(error) as ei:
            msmq.create_queue(path)
        assert isinstance(ei.value, ValueError)
        with pytest.raises(error):
            msmq.open(path, "send")
    with pytest.raises(W.IllegalQueuePathname):
        msmq.create_queue(None)  # type: ignore[arg-type]


def test_queue_exists_and_not_found(backend: Queues) -> None:
    path = backend.new(label="first")
    with pytest.raises(W.QueueExists) as ei:
        msmq.create_queue(path, label="second")
    assert isinstance(ei.value, FileExistsError)
    assert msmq.queue_info(path).label == "first"
    missing = backend.path()
    with pytest.raises(W.QueueNotFound) as nf:
        msmq.open(missing, "receive")
    assert isinstance(nf.value, FileNotFoundError)
    with pytest.raises(W.QueueNotFound):
        msmq.open(missing, "send")
    with pytest.raises(W.QueueNotFound):
        msmq.queue_info(missing)
    with pytest.raises(W.QueueNotFound):
        msmq.delete_queue(missing)


# --- transactions


def test_transactional_queue_needs_transaction(backend: Queues) -> None:
    path = backend.new(transactional=True)
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        assert s.transactional
        with pytest.raises(W.TransactionUsage):
            s.send(b"no tx")
        assert r.stat().messages == 0
        sent = s.send(b"single", transaction=msmq.SINGLE_MESSAGE)
        m = r.receive(timeout=WAIT)
        assert as_bytes(m.body) == b"single" and m.id == sent.id
        assert m.transactional
        assert_empty(r)


def test_plain_queue_refuses_transaction(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        assert not s.transactional
        with pytest.raises(W.TransactionUsage):
            s.send(b"single", transaction=msmq.SINGLE_MESSAGE)
        tx = begin_tx(backend)
        try:
            with pytest.raises(W.TransactionUsage):
                s.send(b"in tx", transaction=tx)
        finally:
            tx.abort()
        assert_empty(r)


def test_single_queue_commit_and_abort(backend: Queues) -> None:
    path = backend.new(transactional=True)
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        tx = begin_tx(backend)
        s.send(b"committed", transaction=tx)
        assert_empty(r)  # invisible until commit
        tx.commit()
        assert tx.closed
        with pytest.raises(W.TransactionSequence):
            tx.commit()
        assert as_bytes(r.receive(timeout=WAIT).body) == b"committed"

        tx = begin_tx(backend)
        s.send(b"aborted", transaction=tx)
        tx.abort()
        assert tx.closed
        assert_empty(r)

        s.send(b"returns", transaction=msmq.SINGLE_MESSAGE)
        tx = begin_tx(backend)
        m = r.receive(timeout=WAIT, transaction=tx)
        assert as_bytes(m.body) == b"returns"
        assert_empty(r)  # hidden while the transaction is open
        tx.abort()
        again = r.receive(timeout=WAIT)
        assert again.id == m.id and again.abort_count == 1


@local_only
def test_transaction_across_queues_commits(backend: Queues) -> None:
    a, b, c = (backend.new(transactional=True) for _ in range(3))
    with contextlib.ExitStack() as st:
        sa = st.enter_context(msmq.open(a, "send"))
        ra = st.enter_context(msmq.open(a, "receive"))
        sb = st.enter_context(msmq.open(b, "send"))
        rb = st.enter_context(msmq.open(b, "receive"))
        sc = st.enter_context(msmq.open(c, "send"))
        rc = st.enter_context(msmq.open(c, "receive"))
        sa.send(b"job", transaction=msmq.SINGLE_MESSAGE)
        with msmq.transaction() as tx:
            job = ra.receive(timeout=WAIT, transaction=tx)
            sb.send(b"to b", transaction=tx)
            sc.send(b"to c", transaction=tx)
            assert_empty(rb)
            assert_empty(rc)
            with pytest.raises(W.IoTimeout):
                ra.peek(timeout=0)
            stat = ra.stat()
            assert stat.messages == 0 and stat.locked == 1
        assert tx.closed
        assert as_bytes(job.body) == b"job"
        assert as_bytes(rb.receive(timeout=WAIT).body) == b"to b"
        assert as_bytes(rc.receive(timeout=WAIT).body) == b"to c"
        for q in (ra, rb, rc):
            assert_empty(q)
            assert q.stat().locked == 0


@local_only
def test_transaction_across_queues_aborts_on_exception(backend: Queues) -> None:
    a, b, c = (backend.new(transactional=True) for _ in range(3))
    with contextlib.ExitStack() as st:
        sa = st.enter_context(msmq.open(a, "send"))
        ra = st.enter_context(msmq.open(a, "receive"))
        sb = st.enter_context(msmq.open(b, "send"))
        rb = st.enter_context(msmq.open(b, "receive"))
        sc = st.enter_context(msmq.open(c, "send"))
        rc = st.enter_context(msmq.open(c, "receive"))
        sent = sa.send(b"job", transaction=msmq.SINGLE_MESSAGE)
        with pytest.raises(RuntimeError, match="boom"), msmq.transaction() as tx:
            ra.receive(timeout=WAIT, transaction=tx)
            sb.send(b"to b", transaction=tx)
            sc.send(b"to c", transaction=tx)
            raise RuntimeError("boom")
        assert tx.closed
        assert_empty(rb)
        assert_empty(rc)
        back = ra.receive(timeout=WAIT)
        assert back.id == sent.id and as_bytes(back.body) == b"job"
        assert back.abort_count == 1


TX_CHILD = """
import sys
from winipc import msmq
a, b = sys.argv[1], sys.argv[2]
qa = msmq.open(a, "receive")
qb = msmq.open(b, "send")
tx = msmq.transaction()
m = qa.receive(timeout=30, transaction=tx)
qb.send(b"from the child", transaction=tx)
print("ready to commit", m.id, flush=True)
sys.stdin.readline()  # killed here
tx.commit()
print("committed", flush=True)
"""


@local_only
def test_transaction_all_or_nothing_when_killed(
    backend: Queues, procs: list[subprocess.Popen[str]]
) -> None:
    a = backend.new(transactional=True)
    b = backend.new(transactional=True)
    with msmq.open(a, "send") as sa:
        sent = sa.send(b"job", transaction=msmq.SINGLE_MESSAGE)
    p = run_py(TX_CHILD, a, b, stdin=subprocess.PIPE)
    procs.append(p)
    line = wait_line(p, "ready to commit", timeout=WAIT + 10)
    assert line.split()[-1] == sent.id
    with msmq.open(a, "receive") as ra, msmq.open(b, "receive") as rb:
        with pytest.raises(W.IoTimeout):
            ra.peek(timeout=0)  # the child holds it
        p.kill()
        p.wait(WAIT)
        back = ra.receive(timeout=5)  # recovery may happen on this access
        assert back.id == sent.id and as_bytes(back.body) == b"job"
        assert_empty(rb)
        assert_empty(ra)


@local_only
def test_poison_message_after_max_aborts(backend: Queues) -> None:
    path = backend.new(transactional=True, max_aborts=2)
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        sent = s.send(b"poison", transaction=msmq.SINGLE_MESSAGE)
        for i in range(3):
            tx = msmq.transaction()
            m = r.receive(timeout=WAIT, transaction=tx)
            assert m.id == sent.id and m.abort_count == i
            tx.abort()
        with pytest.raises(W.IoTimeout):
            r.receive(timeout=0)
        assert r.stat().messages == 0
    with msmq.open(path + ";poison", "receive") as p:
        m = p.receive(timeout=WAIT)
        assert m.id == sent.id and as_bytes(m.body) == b"poison"
        with pytest.raises(W.IoTimeout):
            p.receive(timeout=0)


# --- journal


def test_journal_keeps_received_messages(backend: Queues) -> None:
    path = backend.new(journal=True)
    assert msmq.queue_info(path).journal
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        ids = [s.send(f"j{i}".encode(), label=f"j{i}").id for i in range(3)]
        r.peek(timeout=WAIT)  # a peek journals nothing
        got = [r.receive(timeout=WAIT) for _ in range(2)]  # the third stays
    assert [m.id for m in got] == ids[:2]
    with msmq.open(path + ";journal", "receive") as j:
        copies = [j.receive(timeout=WAIT) for _ in range(2)]
        with pytest.raises(W.IoTimeout):
            j.receive(timeout=0)
    assert sorted(as_bytes(m.body) for m in copies) == [b"j0", b"j1"]
    assert sorted(m.label for m in copies) == ["j0", "j1"]


# --- nothing is ever unpickled


class _Trap:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


def test_pickle_bodies_are_never_unpickled(backend: Queues, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_Trap(marker))
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        s.send(evil)
        s.send({"blob": evil, "list": [evil]})
        s.send(evil, label="peeked")
        m = r.receive(timeout=WAIT)
        assert m.body_type == "bytes"
        assert as_bytes(m.body) == evil
        m = r.receive(timeout=WAIT)
        assert m.body_type == "msgpack"
        assert m.body == {"blob": evil, "list": [evil]}
        assert isinstance(m.body["blob"], bytes)
        assert as_bytes(r.peek(timeout=WAIT).body) == evil
        with r.cursor() as c:
            assert as_bytes(c.peek_current().body) == evil
        assert as_bytes(r.receive(timeout=WAIT).body) == evil
    assert not marker.exists()


# --- several processes


MP_SENDER = """
import sys
from winipc import msmq
path, who, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with msmq.open(path, "send") as q:
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n):
        q.send([who, i], delivery=msmq.Delivery.EXPRESS)
print("done", flush=True)
"""

MP_RECEIVER = """
import json, sys
from winipc import msmq
got = []
with msmq.open(sys.argv[1], "receive") as q:
    print("ready", flush=True)
    while True:
        m = q.receive(timeout=30)
        if m.body == "stop":
            break
        got.append([m.body[0], m.body[1], m.id])
print(json.dumps(got), flush=True)
"""


@pytest.mark.parametrize("receivers", [1, 2])
def test_many_processes_exactly_once(
    backend: Queues, procs: list[subprocess.Popen[str]], receivers: int
) -> None:
    senders, each = 4, 200
    path = backend.new()
    recv = [run_py(MP_RECEIVER, path) for _ in range(receivers)]
    send = [
        run_py(MP_SENDER, path, str(who), str(each), stdin=subprocess.PIPE) for who in range(senders)
    ]
    procs.extend(recv + send)
    for p in recv + send:
        wait_line(p, "ready", timeout=30)
    for p in send:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in send:
        finish(p, timeout=60)
    with msmq.open(path, "send") as s:
        for _ in recv:
            s.send("stop", priority=0, delivery=Delivery.EXPRESS)  # after every job
    results = [json.loads(finish(p, timeout=60).strip().splitlines()[-1]) for p in recv]
    everything = [item for got in results for item in got]
    assert sorted((who, i) for who, i, _ in everything) == [
        (who, i) for who in range(senders) for i in range(each)
    ]
    assert len({mid for _, _, mid in everything}) == senders * each
    if receivers == 1:
        for who in range(senders):
            assert [i for w, i, _ in results[0] if w == who] == list(range(each))
    with msmq.open(path, "receive") as r:
        assert_empty(r)


# --- asyncio


def test_areceive_gets_message_from_other_thread(backend: Queues) -> None:
    path = backend.new()

    async def main() -> msmq.Message:
        with msmq.open(path, "receive") as r, msmq.open(path, "send") as s:
            task = asyncio.create_task(r.areceive(timeout=WAIT))
            await asyncio.sleep(0.1)
            t = threading.Thread(target=s.send, args=(b"async",))
            t.start()
            try:
                return await asyncio.wait_for(task, WAIT + 5)
            finally:
                t.join(WAIT)

    m = asyncio.run(main())
    assert as_bytes(m.body) == b"async"
    with msmq.open(path, "receive") as r:
        assert_empty(r)


def test_cancelled_areceive_loses_nothing(backend: Queues) -> None:
    path = backend.new()

    async def main() -> None:
        with msmq.open(path, "receive") as r, msmq.open(path, "send") as s:
            task = asyncio.create_task(r.areceive(timeout=WAIT))
            await asyncio.sleep(0.2)  # let it start waiting
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            sent = await asyncio.to_thread(s.send, b"keep me")
            m = await asyncio.to_thread(r.receive, WAIT)
            assert m.id == sent.id and as_bytes(m.body) == b"keep me"
            m2 = s.send(b"and me")
            got = await r.areceive(timeout=WAIT)
            assert got.id == m2.id

    asyncio.run(main())


# --- management


def test_stat_purge_list_and_info(backend: Queues) -> None:
    path = backend.new(label="orders", quota=1 << 20, transactional=True)
    plain = backend.new()
    info = msmq.queue_info(path)
    assert info.transactional and info.label == "orders" and info.quota == 1 << 20
    assert info.backend == backend.kind
    assert not msmq.queue_info(plain).transactional
    assert msmq.queue_info(plain).quota is None
    listed = msmq.list_queues(None if backend.kind == "local" else backend.url)
    names = [q.path.casefold() for q in listed]
    for p in (path, plain):
        assert p.casefold() in names, (p, names)
    with msmq.open(plain, "send") as s, msmq.open(plain, "receive") as r:
        assert r.info.path.casefold() == plain.casefold()
        for i in range(3):
            s.send(b"0123456789", label=str(i))
        st = r.stat()
        assert st.messages == 3
        assert st.bytes >= 30
        assert isinstance(st.durability, str) and st.durability
        assert r.purge() == 3
        assert_empty(r)
        s.send(b"a")
        s.send(b"b")
        assert msmq.purge_queue(plain) == 2
        assert_empty(r)
        assert r.purge() == 0


def test_quota(backend: Queues) -> None:
    path = backend.new(quota=4096)
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        with pytest.raises(W.InsufficientResources):
            s.send(b"q" * 5000)
        assert_empty(r)
        s.send(b"q" * 3000)
        before = r.stat()
        with pytest.raises(W.InsufficientResources):
            s.send(b"q" * 2000)
        after = r.stat()
        assert after.messages == before.messages == 1
        assert after.bytes == before.bytes
        assert len(as_bytes(r.receive(timeout=0).body)) == 3000
        s.send(b"q" * 2000)  # room again once received
        assert r.stat().messages == 1


def test_closed_handle(backend: Queues) -> None:
    path = backend.new()
    q = msmq.open(path, "send|receive")
    assert not q.closed
    q.close()
    assert q.closed
    q.close()  # idempotent
    calls = [
        lambda: q.send(b"x"),
        lambda: q.receive(timeout=0),
        lambda: q.peek(timeout=0),
        lambda: q.stat(),
        lambda: q.purge(),
        lambda: q.cursor(),
    ]
    for call in calls:
        with pytest.raises((W.InvalidHandle, W.MsmqError)) as ei:
            call()
        assert_invalid_handle(ei.value)
    with msmq.open(path, "receive") as r:
        assert_empty(r)


@local_only
def test_delete_with_open_handle(backend: Queues) -> None:
    path = backend.new()
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        s.send(b"doomed")
        msmq.delete_queue(path)
        with pytest.raises(W.QueueDeleted) as ei:
            r.receive(timeout=0)
        assert isinstance(ei.value, FileNotFoundError)
        with pytest.raises(W.QueueNotFound):
            msmq.open(path, "receive")
    with pytest.raises(W.QueueNotFound):
        msmq.delete_queue(path)


@local_only
def test_delete_wakes_blocked_receiver(backend: Queues) -> None:
    path = backend.new()
    errors: list[BaseException] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            r.receive(timeout=WAIT)
        except BaseException as exc:
            errors.append(exc)

    with msmq.open(path, "receive") as r:
        t = threading.Thread(target=wait)
        t.start()
        started.wait(WAIT)
        time.sleep(0.2)  # likely blocked by now; the outcome does not depend on it
        msmq.delete_queue(path)
        t.join(WAIT + 5)
        assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], W.QueueDeleted), errors
