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
import time
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


# ----------------------------------------------------------------------------- exact receives (default)

BY_ID_TAKER = """
import sys
from winipc import errors as W
from winipc import msmq
q = msmq.open(sys.argv[1], "receive")
print("ready", flush=True)
sys.stdin.readline()
for mid in sys.argv[2:]:
    try:
        q.receive_by_id(mid)
        print("took", mid, flush=True)
    except W.MessageNotFound:
        print("missed", mid, flush=True)
print("done", flush=True)
q.close()
"""


def _by_id_taker(path: str, ids: list[str]) -> subprocess.Popen[str]:
    return run_py(BY_ID_TAKER, path, *ids, stdin=subprocess.PIPE)


def _taken(p: subprocess.Popen[str]) -> list[str]:
    assert p.stdout is not None
    took = []
    for line in p.stdout:
        if line.startswith("took "):
            took.append(line.split()[1])
        if line.startswith("done"):
            break
    assert p.wait(WAIT) == 0
    return took


@pytest.mark.parametrize("concurrent", [False, True], ids=["between-receives", "while-receiving"])
def test_no_duplicate_when_another_process_receives_by_id(
        N: Any, queues: list[str], procs: list[subprocess.Popen[str]], concurrent: bool) -> None:
    """Without prefetch a plain receive never hands out a message that another process
    received by id (both delete by sequence: the server lets one of them win), also in
    the middle of a run of receives that would fill a prefetch buffer."""
    path = _new(queues)
    with msmq.open(path, "send") as s:
        sent = [s.send(b"m%d" % i).id for i in range(40)]
    # between receives: the ones a prefetching handle would hold after its first receives;
    # while receiving: from the tail, so that the two meet (and race) in the middle
    wanted = sent[4:30] if not concurrent else sent[:3:-1]
    p = _by_id_taker(path, wanted)
    procs.append(p)
    wait_line(p, "ready", timeout=WAIT + 10)
    got: list[str] = []
    with msmq.open(path, "receive") as r:
        got += [r.receive(timeout=WAIT).id for _ in range(4)]
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        if not concurrent:
            took = _taken(p)
        while True:
            try:
                got.append(r.receive(timeout=0 if not concurrent else 3).id)
            except W.IoTimeout:
                break
            if concurrent:
                time.sleep(0.005)  # the other process's by-id scans are slower: let them catch up
        if concurrent:
            took = _taken(p)
        assert r.stat().messages == 0
    assert took, "the other process received nothing by id"
    assert not set(got) & set(took), "a message was received twice"
    assert len(got) == len(set(got))
    assert sorted(got + took) == sorted(sent)  # nothing lost
    assert [i for i in got if i in sent] == [i for i in sent if i in got]  # FIFO kept


RECEIVE_AND_DIE = """
import os, signal, sys
from winipc import msmq
q = msmq.open(sys.argv[1], "receive")
got = [q.receive(timeout=10).id for _ in range(3)]
print("got", *got, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # nothing after receive returned: no late +ACK
"""


def test_exact_receive_survives_a_crash_right_after(
        N: Any, queues: list[str], procs: list[subprocess.Popen[str]]) -> None:
    """Without prefetch, what receive returned is gone from the stream before it
    returns: a process killed right after holds no delivery the server would hand out
    again (at most once across a crash)."""
    path = _new(queues)
    with msmq.open(path, "send") as s:
        ids = [s.send(b"x%d" % i).id for i in range(5)]
    p = run_py(RECEIVE_AND_DIE, path)
    procs.append(p)
    assert wait_line(p, "got", timeout=WAIT + 10).split()[1:] == ids[:3]
    p.wait(WAIT)

    async def stored(nc: Any, names: Any) -> int:
        info = await N._api(nc, f"STREAM.INFO.{names.stream}")
        return int(info["state"]["messages"])

    assert _raw(N, path, stored) == 2  # only the two it did not receive
    with msmq.open(path, "receive") as r:
        assert [r.receive(timeout=WAIT).id for _ in range(2)] == ids[3:]
        with pytest.raises(W.IoTimeout):
            r.receive(timeout=0)


def test_prefetch_argument_checked(N: Any, queues: list[str]) -> None:
    path = _new(queues)
    for bad in (-1, N.MAX_PREFETCH + 1, True, 1.5, "4", None):
        with pytest.raises(W.MsmqError, match="prefetch") as ei:
            msmq.open(path, "receive", prefetch=bad)
        assert ei.value.winerror == W.MQ_ERROR_INVALID_PARAMETER
    with pytest.raises(W.MsmqError, match="prefetch"):
        msmq.open(path, "send", prefetch=4)  # nothing to receive
    with msmq.open(path, "receive", prefetch=N.MAX_PREFETCH) as q:
        assert q.prefetch == N.MAX_PREFETCH
    with msmq.open(path, "receive") as q:
        assert q.prefetch == 0


def test_prefetch_rejected_for_local_queues(N: Any) -> None:
    path = f".\\private$\\t{uuid.uuid4().hex[:12]}"
    msmq.create_queue(path)
    try:
        with pytest.raises(W.MsmqError, match="prefetch") as ei:
            msmq.open(path, "receive", prefetch=8)
        assert ei.value.winerror == W.MQ_ERROR_INVALID_PARAMETER
        msmq.open(path, "receive", prefetch=0).close()
    finally:
        msmq.delete_queue(path)


# ----------------------------------------------------------------------------- prefetch (opt-in)

PREFETCHER = """
import sys
from winipc import msmq
q = msmq.open(sys.argv[1], "receive", prefetch=16)
got = [q.receive(timeout=10).id for _ in range(int(sys.argv[2]))]
print("got", *got, flush=True)
print("locked", q.stat().locked, flush=True)  # prefetched, not handed out
q.close()  # gives them back at once
print("closed", flush=True)
"""


def test_prefetched_messages_released_on_close(N: Any, queues: list[str], procs: list[subprocess.Popen[str]]) -> None:
    path = _new(queues)  # ack wait 30 s: only the release on close brings them back soon
    with msmq.open(path, "send") as s:
        sent = [s.send(b"m%d" % i).id for i in range(40)]
    p = run_py(PREFETCHER, path, "6")
    procs.append(p)
    taken = wait_line(p, "got", timeout=WAIT + 10).split()[1:]
    assert taken == sent[:6]
    locked = int(wait_line(p, "locked", timeout=WAIT).split()[1])
    assert locked > 0  # the child held messages it had not handed out
    wait_line(p, "closed", timeout=WAIT)
    assert p.wait(WAIT) == 0
    with msmq.open(path, "receive") as r:
        rest = [r.receive(timeout=5) for _ in range(34)]  # 5 s each: far below the ack wait
        with pytest.raises(W.IoTimeout):
            r.receive(timeout=0)
    assert [m.id for m in rest] == sent[6:]  # nothing lost, nothing twice, FIFO kept
    assert all(m.abort_count <= 1 for m in rest)  # a released prefetch counts one delivery


def test_priority_respected_across_prefetch(N: Any, queues: list[str]) -> None:
    path = _new(queues)
    with msmq.open(path, "send") as s, msmq.open(path, "receive", prefetch=16) as r:
        low = [s.send(b"low%d" % i, priority=1).id for i in range(30)]
        first = [r.receive(timeout=WAIT).id for _ in range(8)]
        assert first == low[:8]
        assert r.stat().locked > 0  # later low-priority messages are prefetched
        high = s.send(b"high", priority=6)
        assert r.receive(timeout=WAIT).id == high.id  # before the prefetched ones
        rest = [r.receive(timeout=WAIT).id for _ in range(22)]
        assert rest == low[8:]
        with pytest.raises(W.IoTimeout):
            r.receive(timeout=0)


def test_receive_by_id_of_a_prefetched_message(N: Any, queues: list[str]) -> None:
    path = _new(queues)
    with msmq.open(path, "send") as s, msmq.open(path, "receive", prefetch=16) as r, \
            msmq.open(path, "receive") as r2:
        sent = [s.send(b"m%d" % i).id for i in range(20)]
        got = [r.receive(timeout=WAIT).id for _ in range(5)]
        assert r.stat().locked > 0
        buffered = [d.headers["nats-msg-id"] for b in r._buf.values() for _, d in b]
        assert buffered, "nothing prefetched"
        k = sent.index(buffered[-1])
        assert r2.receive_by_id(sent[k]).id == sent[k]  # held in r's prefetch buffer
        got += [r.receive(timeout=WAIT).id for _ in range(14)]
        with pytest.raises(W.IoTimeout):
            r.receive(timeout=0)
    assert got == sent[:k] + sent[k + 1:]  # r never hands it out again


def test_received_message_gone_for_this_process(N: Any, queues: list[str]) -> None:
    """The +ACK of a plain receive is sent without waiting; anything this process does
    next still finds the message gone (the pending acknowledgements are confirmed first)."""
    path = _new(queues, quota=4096)
    with msmq.open(path, "send") as s, msmq.open(path, "receive", prefetch=16) as r:
        for _ in range(3):
            s.send(b"q" * 3000)
            assert bytes(r.receive(timeout=WAIT).body) == b"q" * 3000
            assert r.stat().messages == 0
        with pytest.raises(W.IoTimeout):
            r.peek(timeout=0)


def test_direct_send_connection_replaced(N: Any, queues: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain sends use the handle's own connection; a dropped or idle one is replaced, and
    a send that cannot use it goes through the shared link: nothing is lost or doubled."""
    path = _new(queues)
    with msmq.open(path, "send") as s, msmq.open(path, "receive") as r:
        ids = [s.send(b"first").id]
        d = s._direct
        assert d is not None and d.nc is not None and not d.broken  # the direct path was taken
        assert d.loop is not None
        d.loop.run_until_complete(d.nc.close())  # the server or the network dropped it
        ids.append(s.send(b"after a drop").id)
        monkeypatch.setattr(N, "DIRECT_IDLE", 0.0)  # every send finds it idle: a fresh one
        ids += [s.send(b"fresh %d" % i).id for i in range(3)]
        assert not d.broken
        d.broken = True  # retired: the shared link takes over
        ids.append(s.send(b"over the link").id)
        got = [r.receive(timeout=WAIT) for _ in ids]
        assert [m.id for m in got] == ids
        with pytest.raises(W.IoTimeout):
            r.receive(timeout=0)


def test_by_id_after_abort(N: Any, queues: list[str]) -> None:
    path = _new(queues, transactional=True)
    with msmq.open(path, "send|receive") as q:
        sent = q.send(b"again", transaction=msmq.SINGLE_MESSAGE)
        tx = N.begin_transaction(NATS_URL)
        assert q.receive(timeout=WAIT, transaction=tx).id == sent.id
        tx.abort()  # returned (-NAK): delivered once, held by no one
        m = q.receive_by_id(sent.id)
        assert m.id == sent.id
        with pytest.raises(W.IoTimeout):
            q.receive(timeout=0)
