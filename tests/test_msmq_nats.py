"""NATS-specific behaviour of winipc.msmq's JetStream backend (the server at
nats://127.0.0.1:4222): durability reporting, de-duplication by Nats-Msg-Id, redelivery
after a receiver dies, poison through the delivery count, abort naks, error mapping.

Skips with a reason when no server answers (fails instead under WINIPC_REQUIRE_ALL=1).
Every queue is unique per test and deleted at the end.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from natsutil import NATS_URL, server_answers
from winipc import errors as W
from winipc import msmq
from winipc.msmq import Delivery

from conftest import run_py, wait_line

REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
WAIT = 10.0

# Sends on this server warn (it does not fsync); the durability test checks the warning.
pytestmark = pytest.mark.filterwarnings("ignore::winipc.msmq._nats.DurabilityWarning")


def _skip(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (required: WINIPC_REQUIRE_ALL=1)")
    pytest.skip(reason)


@pytest.fixture
def N() -> Any:
    """The backend module (skips without nats-py or a server)."""
    try:
        import nats  # noqa: F401
    except ImportError:
        _skip("nats-py is not installed (pip install 'winipc[nats]')")
    if not server_answers():
        _skip(f"no NATS server answers at {NATS_URL}")
    return importlib.import_module("winipc.msmq._nats")


@pytest.fixture
def queues(N: Any) -> Iterator[list[str]]:
    """Paths of queues the test creates; deleted at the end."""
    created: list[str] = []
    yield created
    for path in created:
        try:
            msmq.delete_queue(path)
        except W.QueueNotFound:
            pass


def _new(created: list[str], **kw: Any) -> str:
    path = f"{NATS_URL}/t{uuid.uuid4().hex[:16]}"
    msmq.create_queue(path, **kw)
    created.append(path)
    return path


def _raw(N: Any, path: str, fn: Any) -> Any:
    """Run ``await fn(nc, names)`` with the raw nats-py client."""
    names = N._Names.of(msmq.parse(path))
    link = N.NatsLink.acquire(names.url)
    try:
        return link.call(lambda nc: fn(nc, names), timeout=WAIT)
    finally:
        link.release()


def test_durability_reported_and_warned_once(N: Any, queues: list[str]) -> None:
    path = _new(queues)
    with msmq.open(path, "send|receive") as q:
        st = q.stat()
        synced, text = N.server_durability(q._link)
        assert st.recoverable_is_durable is synced
        assert st.durability == text
        if synced:
            pytest.skip("this server syncs before acknowledging: nothing to warn about")
        assert "NOT on disk" in st.durability and "sync_interval: always" in st.durability
        q.send(b"express", delivery=Delivery.EXPRESS)  # no warning for express messages
        with pytest.warns(N.DurabilityWarning, match="NOT on disk"):
            q.send(b"recoverable")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            q.send(b"again")  # once per handle
        assert q.stat().messages == 3
    with msmq.open(path, "send") as q2, pytest.warns(N.DurabilityWarning):
        q2.send(b"new handle warns again")


def test_duplicate_publish_is_dropped(N: Any, queues: list[str]) -> None:
    path = _new(queues)
    with msmq.open(path, "send|receive") as q:
        sent = q.send(b"once", label="dedup")

        async def republish(nc: Any, names: Any) -> Any:
            msg = await nc.request(names.subject(sent.priority), b"once",
                                   headers={"Nats-Msg-Id": sent.id, "Winipc-Msmq": "1"}, timeout=WAIT)
            return json.loads(msg.data)

        ack = _raw(N, path, republish)
        assert ack.get("duplicate") is True and ack["seq"] == sent.lookup_id
        assert q.stat().messages == 1
        m = q.receive(timeout=WAIT)
        assert m.id == sent.id and m.label == "dedup"
        with pytest.raises(W.IoTimeout):
            q.receive(timeout=0)


def test_commit_retry_is_exactly_once(N: Any, queues: list[str]) -> None:
    path = _new(queues, transactional=True)
    with msmq.open(path, "send|receive") as q:
        tx = N.begin_transaction(NATS_URL)
        a = q.send(b"a", transaction=tx)
        q.send(b"b", transaction=tx)
        # a commit that died after publishing the first send: publish it by hand ...
        first = tx._sends[0]
        _raw(N, path, lambda nc, names: nc.request(first.subject, first.data, headers=first.headers, timeout=WAIT))
        tx.commit()  # ... the retried commit publishes it again: de-duplicated
        got = [q.receive(timeout=WAIT) for _ in range(2)]
        assert [bytes(m.body) for m in got] == [b"a", b"b"] and got[0].id == a.id
        with pytest.raises(W.IoTimeout):
            q.receive(timeout=0)


HOLDER = """
import importlib, sys
from winipc import msmq
_nats = importlib.import_module("winipc.msmq._nats")
q = msmq.open(sys.argv[1], "receive")
tx = _nats.begin_transaction(sys.argv[2])
m = q.receive(timeout=30, transaction=tx)
print("holding", m.id, flush=True)
sys.stdin.readline()  # killed here, the transaction still open
"""


def test_redelivery_after_receiver_killed(
    N: Any, queues: list[str], monkeypatch: pytest.MonkeyPatch, procs: list[subprocess.Popen[str]]
) -> None:
    monkeypatch.setattr(N, "ACK_WAIT", 2.0)  # fixed into the queue's consumers at creation
    path = _new(queues, transactional=True)
    with msmq.open(path, "send|receive") as q:
        sent = q.send(b"job", transaction=msmq.SINGLE_MESSAGE)
        p = run_py(HOLDER, path, NATS_URL, stdin=subprocess.PIPE)
        procs.append(p)
        line = wait_line(p, "holding", timeout=WAIT + 10)
        assert line.split()[-1] == sent.id
        with pytest.raises(W.IoTimeout):
            q.receive(timeout=3.0)  # held: the child's keep-alive outlasts the 2 s ack wait
        p.kill()
        p.wait(WAIT)
        back = q.receive(timeout=WAIT + 5)  # redelivered once the ack wait runs out
        assert back.id == sent.id and bytes(back.body) == b"job"
        assert back.abort_count == 1
        with pytest.raises(W.IoTimeout):
            q.receive(timeout=0)


def test_abort_naks_at_once(N: Any, queues: list[str]) -> None:
    path = _new(queues, transactional=True)  # ack wait 30 s: only a nak brings it back soon
    with msmq.open(path, "send|receive") as q:
        sent = q.send(b"retry me", transaction=msmq.SINGLE_MESSAGE)
        tx = N.begin_transaction(NATS_URL)
        m = q.receive(timeout=WAIT, transaction=tx)
        assert m.id == sent.id and m.abort_count == 0
        assert q.stat().locked == 1
        with pytest.raises(W.IoTimeout):
            q.peek(timeout=0)  # this process's transaction holds it
        tx.abort()
        assert tx.closed
        tx.abort()  # idempotent
        with pytest.raises(W.TransactionSequence):
            tx.commit()
        again = q.receive(timeout=5)
        assert again.id == sent.id and again.abort_count == 1


def test_poison_through_delivery_count(N: Any, queues: list[str]) -> None:
    path = _new(queues, transactional=True, max_aborts=1)

    async def consumer_max_deliver(nc: Any, names: Any) -> int:
        info = await N._api(nc, f"CONSUMER.INFO.{names.stream}.p0")
        return int(info["config"]["max_deliver"])

    assert _raw(N, path, consumer_max_deliver) == 3  # the server's own ceiling: max_aborts + 2
    with msmq.open(path, "send|receive") as q:
        sent = q.send(b"poison", transaction=msmq.SINGLE_MESSAGE)
        for i in range(2):
            tx = N.begin_transaction(NATS_URL)
            m = q.receive(timeout=WAIT, transaction=tx)
            assert m.id == sent.id and m.abort_count == i
            tx.abort()
        with pytest.raises(W.IoTimeout):
            q.receive(timeout=0)
        st = q.stat()
        assert st.messages == 0 and st.poison_messages == 1
    with msmq.open(path + ";poison", "receive") as p:
        m = p.receive(timeout=WAIT)
        assert m.id == sent.id and bytes(m.body) == b"poison" and m.abort_count == 2
        with pytest.raises(W.IoTimeout):
            p.receive(timeout=0)


def test_transaction_kinds(N: Any, queues: list[str]) -> None:
    tq = _new(queues, transactional=True)
    with msmq.open(tq, "send|receive") as q:
        local = msmq.transaction()
        try:
            with pytest.raises(W.TransactionUsage):
                q.send(b"x", transaction=local)
            with pytest.raises(W.TransactionUsage):
                q.receive(timeout=0, transaction=local)
        finally:
            local.abort()
        with pytest.raises(W.TransactionUsage):
            q.send(b"no transaction")
        assert q.stat().messages == 0


def test_unreachable_server(N: Any) -> None:
    with pytest.raises(W.QueueNotAvailable) as ei:
        msmq.open("nats://127.0.0.1:1/nothing", "send")
    assert ei.value.winerror == W.MQ_ERROR_QUEUE_NOT_AVAILABLE
    assert isinstance(ei.value, ConnectionError)


def test_body_over_max_payload(N: Any, queues: list[str]) -> None:
    path = _new(queues)
    with msmq.open(path, "send|receive") as q:
        limit = q._link.max_payload
        with pytest.raises(W.IllegalPropertyValue, match=f"max_payload={limit}"):
            q.send(b"x" * limit)
        q.send(b"x" * (limit - 4096))
        assert len(bytes(q.receive(timeout=WAIT).body)) == limit - 4096


def test_corrupt_body_raises(N: Any, queues: list[str]) -> None:
    path = _new(queues)

    async def junk(nc: Any, names: Any) -> None:
        await nc.request(names.subject(3), b"\xc1", timeout=WAIT,
                         headers={"Winipc-Msmq": "1", "Winipc-Body-Type": "msgpack", "Nats-Msg-Id": "junk-1"})

    _raw(N, path, junk)
    with msmq.open(path, "receive") as q:
        with pytest.raises(W.CorruptQueueError):
            q.receive(timeout=WAIT)
        with pytest.raises(W.CorruptQueueError):
            q.peek(timeout=0)


def test_foreign_publisher_gets_bytes_body(N: Any, queues: list[str]) -> None:
    path = _new(queues)
    _raw(N, path, lambda nc, names: nc.request(names.subject(5), b"from elsewhere", timeout=WAIT))
    with msmq.open(path, "receive") as q:
        m = q.receive(timeout=WAIT)
    assert bytes(m.body) == b"from elsewhere" and m.body_type == "bytes"
    assert m.id.startswith("{") and m.lookup_id >= 1


def test_exclusive_receiver(N: Any, queues: list[str]) -> None:
    path = _new(queues)
    with msmq.open(path, "receive", share=msmq.ShareMode.DENY_RECEIVE_SHARE):
        with pytest.raises(W.SharingViolation):
            msmq.open(path, "receive")
        msmq.open(path, "send").close()  # senders are not affected
    with msmq.open(path, "receive"), pytest.raises(W.SharingViolation):
        msmq.open(path, "receive", share=msmq.ShareMode.DENY_RECEIVE_SHARE)


def test_streams_and_subjects_as_documented(N: Any, queues: list[str]) -> None:
    path = _new(queues, quota=1 << 20, journal=True, journal_quota=1 << 16)
    name = path.rsplit("/", 1)[1]

    async def streams(nc: Any, names: Any) -> dict[str, Any]:
        out = {}
        for s in (names.stream, *(names.sub_stream(x) for x in ("journal", "poison", "deadletter"))):
            out[s] = (await N._api(nc, f"STREAM.INFO.{s}"))["config"]
        return out

    cfg = _raw(N, path, streams)
    main = cfg[f"WINIPC_MSMQ_{name}"]
    assert main["subjects"] == [f"winipc.msmq.{name}.p{p}" for p in range(8)]
    assert main["retention"] == "workqueue" and main["max_bytes"] == 1 << 20 and main["discard"] == "new"
    journal = cfg[f"WINIPC_MSMQ_{name}__JOURNAL"]
    assert journal["subjects"] == [f"winipc.msmq.{name}.journal"]
    assert journal["max_bytes"] == 1 << 16 and journal["discard"] == "old"
    assert json.loads(main["description"])["journal"] is True
