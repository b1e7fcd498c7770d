"""The express store (winipc._native._xstore, winipc.msmq._express): structure, crashes, queues."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from winipc.msmq import _express as E

pytestmark = pytest.mark.skipif(not E.available(), reason="the express store needs the native extension and /dev/shm")

if E.available():
    from winipc._native import _xstore as X


@pytest.fixture
def store_file() -> Iterator[tuple[str, int]]:
    path = f"/dev/shm/winipc-test-xstore.{os.getpid()}.{random.getrandbits(32):08x}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, X.DATA_OFF + X.BLOCK * 4000)
    X.XStore(fd, True).close()
    try:
        yield path, fd
    finally:
        os.close(fd)
        os.unlink(path)


def _put(s: object, pri: int, key: bytes, data: bytes) -> int:
    stamp, _waiters = s.put(pri, key, b"", 0.0, 0, data)  # type: ignore[attr-defined]
    return int(stamp)


def test_order_keys_and_cursor_positions(store_file: tuple[str, int]) -> None:
    s = X.XStore(store_file[1])
    a = _put(s, 3, b"a", b"1" * 10)
    b = _put(s, 5, b"b", b"2" * 3000)  # a chain of several blocks
    c = _put(s, 3, b"c", b"3")
    s.put(0, b"d", b"corr", 0.0, 0, b"4")
    assert s.find(X.FIRST, b"", 0, 0, X.LOCATE) == (b, 5)
    assert s.find(X.AFTER, b"", 5, b, X.LOCATE) == (a, 3)
    assert s.find(X.AFTER, b"", 3, a, X.LOCATE) == (c, 3)
    assert s.find(X.EXACT, b"", 3, c, X.PEEK)[6] == b"3"
    assert s.find(X.KEY2, b"corr", 0, 0, X.PEEK)[4] == b"d"
    assert s.find(X.KEY1, b"b", 0, 0, X.TAKE)[6] == b"2" * 3000
    assert s.find(X.KEY1, b"b", 0, 0, X.TAKE) is None
    assert [s.find(X.FIRST, b"", 0, 0, X.TAKE)[4] for _ in range(3)] == [b"a", b"c", b"d"]
    assert s.find(X.FIRST, b"", 0, 0, X.TAKE) is None
    assert s.check() == []
    assert s.stat()["count"] == 0


def test_full_store_refuses_whole_messages(store_file: tuple[str, int]) -> None:
    s = X.XStore(store_file[1])
    n = 0
    with pytest.raises(X.Full, match="express store full"):
        while True:
            _put(s, 1, b"k", b"x" * 1100)
            n += 1
    assert s.stat()["count"] == n
    assert s.check() == []
    assert s.purge() == n
    assert s.stat()["count"] == 0 and s.check() == []


def test_a_damaged_header_is_refused(store_file: tuple[str, int]) -> None:
    _path, fd = store_file
    os.pwrite(fd, b"XXXXXXXX", 0)
    with pytest.raises(ValueError, match="header does not match"):
        X.XStore(fd)


@pytest.mark.parametrize("point", [1, 2, 3, 4, 5])
def test_a_process_dying_inside_put_or_take_leaves_a_whole_store(store_file: tuple[str, int], point: int) -> None:
    path, fd = store_file
    s = X.XStore(fd)
    for i in range(6):
        _put(s, i % 8, b"k%d" % i, b"x" * (100 + 700 * i))
    code = textwrap.dedent(f"""
        import os
        from winipc._native import _xstore as X
        s = X.XStore(os.open({path!r}, os.O_RDWR))
        X._set_crash_point({point})
        if {point} <= 3:
            s.put(7, b"new", b"", 0.0, 0, b"y" * 2000)
        else:
            s.find(X.FIRST, b"", 0, 0, X.TAKE)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == 77
    assert s.check() == []  # the next locker rebuilt it
    st = s.stat()
    assert st["rebuilds"] == 1
    # puts commit at point 3 (the head's state), takes at point 5 (after the state is cleared)
    expected = {1: 6, 2: 6, 3: 7, 4: 6, 5: 5}[point]
    assert st["count"] == expected
    got = []
    while (r := s.find(X.FIRST, b"", 0, 0, X.TAKE)) is not None:
        got.append(r[4])
    assert len(got) == expected and len(set(got)) == expected
    assert s.check() == [] and s.stat()["free_bytes"] == s.stat()["capacity"]


def test_sigkill_at_random_points_loses_and_doubles_nothing(store_file: tuple[str, int]) -> None:
    """Producers and consumers killed at random: every message is taken at most once,
    every put acknowledged before the kill is taken or still held, the structure stays whole."""
    path, fd = store_file
    code = textwrap.dedent(f"""
        import os, sys
        from winipc._native import _xstore as X
        s = X.XStore(os.open({path!r}, os.O_RDWR))
        role, tag = sys.argv[1], sys.argv[2]
        out = os.fdopen(1, "w", buffering=1)
        i = 0
        while True:
            if role == "put":
                key = ("%s.%d" % (tag, i)).encode()
                try:
                    s.put(i % 8, key, b"", 0.0, 0, key * (1 + i % 40))
                except X.Full:
                    continue
                out.write("P " + key.decode() + "\\n")
            else:
                # peek, say which one is about to be taken, take exactly that one: a kill
                # between the take and its report is told apart from a lost message
                r = s.find(X.FIRST, b"", 0, 0, X.PEEK)
                if r is not None:
                    out.write("I " + r[4].decode() + "\\n")
                    r = s.find(X.EXACT, b"", r[1], r[0], X.TAKE)
                    if r is not None:
                        assert r[6] == r[4] * (len(r[6]) // len(r[4])), "data does not match key"
                        out.write("T " + r[4].decode() + "\\n")
            i += 1
    """)
    rng = random.Random(7)
    put_acked: set[str] = set()
    taken: list[str] = []
    in_flight: set[str] = set()  # a killed consumer's last take, unreported
    tmp = Path(path + ".logs")
    tmp.mkdir()
    try:
        for cycle in range(30):
            procs: list[tuple[Path, subprocess.Popen[bytes]]] = []
            for n, role in enumerate(("put", "put", "take")):
                log = tmp / f"{cycle}.{n}"
                with open(log, "wb") as out:
                    procs.append((log, subprocess.Popen([sys.executable, "-c", code, role, f"{cycle}.{n}"], stdout=out)))
            time.sleep(0.15 + rng.random() * 0.2)
            for _log, p in procs:
                p.send_signal(signal.SIGKILL)
                p.wait()
            for log, _p in procs:
                last_intent = None
                for line in log.read_text().split("\n")[:-1]:  # complete lines only
                    kind, _, key = line.partition(" ")
                    if kind == "P":
                        put_acked.add(key)
                    elif kind == "I":
                        last_intent = key
                    else:
                        taken.append(key)
                        last_intent = None
                if last_intent is not None:
                    in_flight.add(last_intent)
        s = X.XStore(fd)
        assert s.check() == []
        while (r := s.find(X.FIRST, b"", 0, 0, X.TAKE)) is not None:
            taken.append(r[4].decode())
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    assert len(taken) == len(set(taken)), "a message was taken twice"
    missing = put_acked - set(taken) - in_flight
    assert not missing, f"{len(missing)} acknowledged puts lost"
    assert len(put_acked) > 1000 and len(taken) > 1000  # the cycles did work


# ------------------------------------------------------------------ queues with an express store

from winipc import errors as W  # noqa: E402
from winipc import msmq  # noqa: E402
from winipc.msmq import _local  # noqa: E402

SEND = """
import sys
from winipc import msmq
X, R = msmq.Delivery.EXPRESS, msmq.Delivery.RECOVERABLE
with msmq.open(sys.argv[1], "send") as q:
    for spec in sys.argv[2:]:
        kind, pri, body = spec.split(":")
        q.send(body.encode(), priority=int(pri), delivery=X if kind == "x" else R, correlation_id="c-" + body)
print("sent", flush=True)
"""


def _send_from_child(path: str, *specs: str) -> None:
    out = subprocess.run([sys.executable, "-c", SEND, path, *specs], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "sent", out.stderr


def _shm_file(path: str) -> Path:
    name = (Path(_local._queue_dir(msmq.parse(path))) / E.TOKEN_FILE).read_text().strip()
    return Path("/dev/shm") / name


@pytest.fixture
def queue() -> Iterator[str]:
    path = r".\private$\express-tests"
    msmq.create_queue(path, journal=True)
    try:
        yield path
    finally:
        shm = _shm_file(path)
        msmq.delete_queue(path)
        assert not shm.exists(), "MQDeleteQueue left the express store behind"


def test_express_and_recoverable_messages_come_out_in_one_order(queue: str) -> None:
    _send_from_child(queue, "r:3:a", "x:3:b", "x:5:c", "r:5:d", "r:0:e", "x:7:f")
    with msmq.open(queue, "receive") as q:
        st = q.stat()
        assert st.messages == 6 and "in memory" in st.durability
        with q.cursor() as cur:
            seen = [bytes(cur.peek_current().body)]
            for _ in range(5):
                seen.append(bytes(cur.peek_next().body))
        assert seen == [b"f", b"c", b"d", b"a", b"b", b"e"]
        assert bytes(q.peek_by_correlation_id("c-b").body) == b"b"
        got = [q.receive(timeout=0) for _ in range(6)]
        assert [bytes(m.body) for m in got] == [b"f", b"c", b"d", b"a", b"b", b"e"]
        assert [m.delivery for m in got][:3] == [msmq.Delivery.EXPRESS, msmq.Delivery.EXPRESS, msmq.Delivery.RECOVERABLE]
        with pytest.raises(W.IoTimeout):
            q.receive(timeout=0)
        assert q.stat().journal_messages == 6  # express receives are journaled too
    with msmq.open(queue + ";journal", "receive") as j:
        assert sorted(bytes(j.receive(timeout=0).body) for _ in range(6)) == [b"a", b"b", b"c", b"d", b"e", b"f"]


def test_by_id_cursor_receive_purge_and_integrity(queue: str) -> None:
    with msmq.open(queue, "send") as s:
        ids = [s.send(b"m%d" % i, delivery=msmq.Delivery.EXPRESS if i % 2 else msmq.Delivery.RECOVERABLE).id
               for i in range(6)]
    with msmq.open(queue, "receive") as q:
        assert bytes(q.peek_by_id(ids[3]).body) == b"m3"
        assert bytes(q.receive_by_id(ids[3]).body) == b"m3"
        with pytest.raises(W.MessageNotFound):
            q.receive_by_id(ids[3])
        with q.cursor() as cur:
            assert bytes(cur.peek_current().body) == b"m0"
            assert bytes(cur.peek_next().body) == b"m1"
            assert bytes(cur.receive_current().body) == b"m1"  # express, taken under the cursor
            assert bytes(cur.peek_current().body) == b"m2"
        assert msmq.integrity_check(queue) == []
        assert q.purge() == 4
        assert q.stat().messages == 0


def test_a_cursor_never_steps_back_to_a_higher_priority_message_of_the_other_store(queue: str) -> None:
    """A message sent at a higher priority than the one under the cursor lies behind it
    (MSMQ's order), whichever store holds it; equal or lower priorities lie ahead."""
    with msmq.open(queue, "receive") as q:
        _send_from_child(queue, "x:3:x1", "x:3:x2")
        with q.cursor() as cur:
            assert bytes(cur.peek_current().body) == b"x1"  # express, and SQLite is empty
            _send_from_child(queue, "r:5:r-high", "r:3:r-same")
            assert bytes(cur.peek_next().body) == b"x2"
            assert bytes(cur.peek_next().body) == b"r-same"
            with pytest.raises(W.IoTimeout):
                cur.peek_next(timeout=0)
        assert [bytes(q.receive(timeout=0).body) for _ in range(4)] == [b"r-high", b"x1", b"x2", b"r-same"]
        _send_from_child(queue, "r:2:r1", "r:2:r2")
        with q.cursor() as cur:
            assert bytes(cur.peek_current().body) == b"r1"  # SQLite, and the express store is empty
            _send_from_child(queue, "x:6:x-high", "x:2:x-same")
            assert bytes(cur.peek_next().body) == b"r2"
            assert bytes(cur.peek_next().body) == b"x-same"
            with pytest.raises(W.IoTimeout):
                cur.peek_next(timeout=0)
        assert [bytes(q.receive(timeout=0).body) for _ in range(4)] == [b"x-high", b"r1", b"r2", b"x-same"]


def test_a_flipped_byte_in_the_express_store_is_reported_not_returned(queue: str) -> None:
    with msmq.open(queue, "send") as s:
        s.send(b"secret-payload" * 10, delivery=msmq.Delivery.EXPRESS)
    shm = _shm_file(queue)
    data = bytearray(shm.read_bytes()[: X.DATA_OFF + X.BLOCK * 4])
    at = data.index(b"secret-payload")
    with open(shm, "r+b") as f:
        f.seek(at)
        f.write(b"S")
    problems = msmq.integrity_check(queue)
    assert any("checksum" in p for p in problems), problems
    with msmq.open(queue, "receive") as q, pytest.raises(W.CorruptQueueError):
        q.receive(timeout=0)


def test_expired_express_messages_go_to_the_dead_letter_queue_when_asked(queue: str) -> None:
    with msmq.open(queue, "send") as s:
        s.send(b"dead", delivery=msmq.Delivery.EXPRESS, time_to_be_received=0.05, use_dead_letter=True)
        s.send(b"gone", delivery=msmq.Delivery.EXPRESS, time_to_be_received=0.05)
        s.send(b"live", delivery=msmq.Delivery.EXPRESS)
    time.sleep(0.1)
    try:
        with msmq.open(queue, "receive") as q:
            assert bytes(q.receive(timeout=0).body) == b"live"
            with pytest.raises(W.IoTimeout):
                q.receive(timeout=0)
        with msmq.open(r".\system$;deadletter", "receive") as d:
            assert bytes(d.receive(timeout=0).body) == b"dead"
            with pytest.raises(W.IoTimeout):
                d.receive(timeout=0)
    finally:
        msmq.delete_queue(r".\system$;deadletter")


def test_a_full_store_refuses_the_send_and_keeps_what_it_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(E, "CAPACITY", X.DATA_OFF + X.BLOCK * 64)
    path = r".\private$\express-small"
    msmq.create_queue(path)
    try:
        with msmq.open(path, "send|receive") as q:
            sent = 0
            with pytest.raises(W.InsufficientResources, match="express store is full"):
                while True:
                    q.send(b"z" * 1000, delivery=msmq.Delivery.EXPRESS)
                    sent += 1
            assert sent > 0 and q.stat().messages == sent
            q.send(b"still", delivery=msmq.Delivery.RECOVERABLE)  # recoverable ones still go to disk
            assert [len(bytes(q.receive(timeout=0).body)) for _ in range(sent + 1)] == [1000] * sent + [5]
    finally:
        msmq.delete_queue(path)


RECEIVER = """
import sys
from winipc import msmq
with msmq.open(sys.argv[1], "receive") as q:
    print("ready", flush=True)
    m = q.receive(timeout=30)
    print("got", bytes(m.body).decode(), m.delivery.name, flush=True)
"""


def test_a_blocked_receiver_in_another_process_wakes_for_an_express_send(queue: str) -> None:
    with subprocess.Popen([sys.executable, "-c", RECEIVER, queue], stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            time.sleep(0.3)  # it is asleep on the doorbell by now
            with msmq.open(queue, "send") as s:
                s.send(b"wake", delivery=msmq.Delivery.EXPRESS)
            assert p.stdout.readline().strip() == "got wake EXPRESS"
            assert p.wait(30) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_transactional_queues_keep_no_express_store() -> None:
    path = r".\private$\express-tx"
    msmq.create_queue(path, transactional=True)
    try:
        with msmq.open(path, "send|receive") as q:
            q.send(b"t", delivery=msmq.Delivery.EXPRESS, transaction=msmq.SINGLE_MESSAGE)
            m = q.receive(timeout=0)
            assert m.delivery == msmq.Delivery.RECOVERABLE  # MSMQ: transactional messages are recoverable
        assert not (Path(_local._queue_dir(msmq.parse(path))) / E.TOKEN_FILE).exists()
    finally:
        msmq.delete_queue(path)


def test_constants_match_the_extension() -> None:
    assert (E.FIRST, E.KEY1, E.KEY2, E.AFTER, E.EXACT) == (X.FIRST, X.KEY1, X.KEY2, X.AFTER, X.EXACT)
    assert (E.LOCATE, E.PEEK, E.TAKE) == (X.LOCATE, X.PEEK, X.TAKE)


# ------------------------------------------------------------------ deletion flag, records

DELETE = """
import sys
from winipc import msmq
msmq.delete_queue(sys.argv[1])
print("deleted", flush=True)
"""


@pytest.mark.parametrize("no_native", [False, True])
def test_a_deletion_by_another_process_is_seen_through_the_store_flag(monkeypatch: pytest.MonkeyPatch,
                                                                      no_native: bool) -> None:
    """MQDeleteQueue in another process (also one without the extension: it sets the flag
    with Python's mmap) sets the store's deleted flag: the handle's next send and receive
    raise QueueDeleted with no folder check (ALIVE_RECHECK is an hour here)."""
    monkeypatch.setattr(_local, "ALIVE_RECHECK", 3600.0)
    path = r".\private$\express-deleted"
    msmq.create_queue(path)
    q = msmq.open(path, "send|receive")
    try:
        q.send(b"a", delivery=msmq.Delivery.EXPRESS)
        assert bytes(q.receive(timeout=0).body) == b"a"  # the folder check ran: next one in an hour
        shm = _shm_file(path)
        env = dict(os.environ, WINIPC_NO_NATIVE="1") if no_native else dict(os.environ)
        out = subprocess.run([sys.executable, "-c", DELETE, path], capture_output=True, text=True, timeout=60, env=env)
        assert out.stdout.strip() == "deleted", out.stderr
        assert not shm.exists()
        assert q._store.express.deleted  # type: ignore[attr-defined]
        with pytest.raises(W.QueueDeleted):
            q.send(b"lost", delivery=msmq.Delivery.EXPRESS)
        with pytest.raises(W.QueueDeleted):
            q.receive(timeout=0)
    finally:
        q.close()


def test_mark_deleted_sets_the_flag_the_extension_reads(store_file: tuple[str, int]) -> None:
    s = X.XStore(store_file[1])
    assert not s.deleted and X.DELETED_OFFSET == E.DELETED_OFFSET
    assert E.mark_deleted(store_file[0])
    assert s.deleted
    assert not E.mark_deleted("/dev/null")  # not a store: refused


def test_without_the_flag_the_folder_is_still_checked_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deleter that died between renaming the folder and setting the flag: the folder
    check (every ALIVE_RECHECK seconds) still reports the deletion."""
    monkeypatch.setattr(_local, "ALIVE_RECHECK", 0.0)
    path = r".\private$\express-renamed"
    msmq.create_queue(path)
    folder = Path(_local._queue_dir(msmq.parse(path)))
    aside = folder.with_name(".dead.test-" + folder.name)
    q = msmq.open(path, "send")
    try:
        q.send(b"a", delivery=msmq.Delivery.EXPRESS)
        folder.rename(aside)
        try:
            with pytest.raises(W.QueueDeleted):
                q.send(b"b", delivery=msmq.Delivery.EXPRESS)
        finally:
            aside.rename(folder)
    finally:
        q.close()
        msmq.delete_queue(path)


RECEIVE_ALL = """
import sys, json
from winipc import msmq
out = []
with msmq.open(sys.argv[1], "receive") as q:
    for _ in range(int(sys.argv[2])):
        m = q.receive(timeout=10)
        p = m.properties()
        p["body"] = m.body.hex() if isinstance(m.body, bytes) else m.body
        out.append(p)
print(json.dumps(out))
"""


def test_every_property_survives_the_express_store_between_processes(queue: str) -> None:
    admin = r".\private$\express-admin"
    msmq.create_queue(admin)
    try:
        sent = []
        with msmq.open(queue, "send") as s:
            sent.append(s.send(b"\x00plain", delivery=msmq.Delivery.EXPRESS))
            sent.append(s.send(b"fast", delivery=msmq.Delivery.EXPRESS, priority=6, label="l\u00e9",
                               correlation_id="corr", app_specific=2**32 - 1,
                               response_queue=admin, use_dead_letter=True))
            sent.append(s.send({"k": [1, 2.5, "x"]}, delivery=msmq.Delivery.EXPRESS, priority=0,
                               admin_queue=admin, acknowledge=msmq.Ack.NEGATIVE_RECEIVE,
                               time_to_be_received=3600, time_to_reach_queue=10.5))
        out = subprocess.run([sys.executable, "-c", RECEIVE_ALL, queue, "3"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        import json

        got = {p["id"]: p for p in json.loads(out.stdout)}
        assert len(got) == 3
        for m in sent:
            p = got[m.id]
            want = m.properties()
            want["body"] = m.body.hex() if isinstance(m.body, bytes) else m.body
            assert p == want
            assert E.is_express_lookup_id(p["lookup_id"])
        # the journal keeps SQLite records (msgpack) of format-2 express messages
        with msmq.open(queue + ";journal", "receive") as j:
            copies = {j.receive(timeout=0).id for _ in range(3)}
        assert copies == set(got)
    finally:
        msmq.delete_queue(admin)


def test_format_1_records_of_an_older_store_are_still_read(queue: str) -> None:
    from winipc.msmq import _message as M

    with msmq.open(queue, "send") as s:
        s.send(b"new", delivery=msmq.Delivery.EXPRESS)
        xs = s._store.express  # type: ignore[attr-defined]
        m = M.make_message(b"old", {"label": "v1", "delivery": msmq.Delivery.EXPRESS})
        m.id, m.sent_time, m.destination_queue = M.new_message_id(), time.time(), queue
        k1, k2, data, crc = E.encode(m, b"old")
        assert data[4] != 2  # a msgpack map, not a format-2 record
        xs.put(m.priority, k1, k2, 0.0, crc, data)
    with msmq.open(queue, "receive") as q:
        assert bytes(q.receive(timeout=0).body) == b"new"
        old = q.receive(timeout=0)
        assert (bytes(old.body), old.label, old.id) == (b"old", "v1", m.id)


def test_a_damaged_format_2_record_is_refused(store_file: tuple[str, int]) -> None:
    from winipc.msmq import _message as M

    s = X.XStore(store_file[1])
    m = M.make_message(b"body", {"label": "x", "delivery": msmq.Delivery.EXPRESS})
    m.id, m.sent_time = M.new_message_id(), time.time()
    E.put(s, m, b"body")
    found = s.find(E.FIRST, b"", 8, 0, E.PEEK)
    assert E.decode(found, "t").label == "x"
    data = bytearray(found[6])
    data[4 + 64] = 0xFF  # the id's length: past the record
    forged = (*found[:3], X_crc(bytes(data)), found[4], found[5], bytes(data))  # a valid CRC
    with pytest.raises(W.CorruptQueueError):
        E.decode(forged, "t")
    with pytest.raises(W.CorruptQueueError, match="checksum"):
        E.decode((*found[:6], bytes(data)), "t")


def X_crc(data: bytes) -> int:
    import zlib

    return zlib.crc32(data)
