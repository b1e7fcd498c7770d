"""The local store's format (docs/wire/msmq-store.md, version 2): native message ids,
counters only where a quota needs them, and the migration of a version 1 queue.

Each check that matters across processes opens the queue in a child process, as another
program would.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from msmqutil import ID_RE, SYSTEM_DEADLETTER
from winipc import errors as W
from winipc import msmq
from winipc.msmq import _local

Q = r".\private$\store-tests"
QQ = r".\private$\store-quota"

#: What version 1 had where version 2 differs (the rest of the schema is the same).
V1_INDEXES = """
CREATE INDEX msg_order ON msg(sub, state, pri DESC, seq);
CREATE INDEX msg_id ON msg(msgid);
"""
V1_COUNTERS = """
CREATE TABLE counters(
  sub INTEGER NOT NULL, state INTEGER NOT NULL, n INTEGER NOT NULL, bytes INTEGER NOT NULL,
  PRIMARY KEY(sub, state));
CREATE TRIGGER msg_ins AFTER INSERT ON msg BEGIN
  INSERT INTO counters(sub, state, n, bytes) VALUES (NEW.sub, NEW.state, 1, NEW.size)
  ON CONFLICT(sub, state) DO UPDATE SET n = n + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER msg_del AFTER DELETE ON msg BEGIN
  UPDATE counters SET n = n - 1, bytes = bytes - OLD.size WHERE sub = OLD.sub AND state = OLD.state;
END;
CREATE TRIGGER msg_upd AFTER UPDATE OF sub, state ON msg BEGIN
  UPDATE counters SET n = n - 1, bytes = bytes - OLD.size WHERE sub = OLD.sub AND state = OLD.state;
  INSERT INTO counters(sub, state, n, bytes) VALUES (NEW.sub, NEW.state, 1, NEW.size)
  ON CONFLICT(sub, state) DO UPDATE SET n = n + 1, bytes = bytes + NEW.size;
END;
INSERT INTO counters SELECT sub, state, COUNT(*), SUM(size) FROM msg GROUP BY sub, state;
"""


def _db(path: str) -> Path:
    return Path(_local._queue_dir(msmq.parse(path))) / "queue.db"


def _sql(path: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with sqlite3.connect(_db(path)) as c:
        return c.execute(query, params).fetchall()


def _objects(path: str) -> set[str]:
    return {name for (name,) in _sql(path, "SELECT name FROM sqlite_master")}


def _child(code: str) -> str:
    """Run ``code`` in another Python process (this test's WINIPC_ROOT); its stdout."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _guid(path: str) -> str:
    (row,) = _sql(path, "SELECT value FROM meta WHERE key = 'guid'")
    return str(row[0])


def test_a_sent_message_id_names_the_queue_and_its_lookup_id_and_another_process_finds_it_by_id() -> None:
    msmq.create_queue(Q)
    msmq.create_queue(QQ, quota=1 << 20)
    try:
        with msmq.open(Q, "send") as s, msmq.open(QQ, "send") as s2:
            sent = [s.send(b"one"), *s.send_many([b"two", b"three"]), s.send(b"four", delivery=msmq.Delivery.EXPRESS)]
            other = s2.send(b"elsewhere")
        prefix = "{" + _guid(Q) + "}\\"
        assert _guid(QQ) != _guid(Q)
        for m in sent[:3]:
            assert ID_RE.match(m.id) and m.id == f"{prefix}{m.lookup_id}", m.id
        assert not sent[3].id.startswith(prefix)  # express: the sending process's id space
        assert other.id == "{" + _guid(QQ) + "}\\" + str(other.lookup_id)
        assert _sql(Q, "SELECT native, COUNT(*) FROM msg GROUP BY native") == [(1, 3)]
        out = _child(
            "from winipc import errors, msmq\n"
            f"with msmq.open({Q!r}, 'receive') as r:\n"
            f"    print(r.receive_by_id({sent[1].id!r}).body.decode())\n"
            f"    print(r.peek_by_id({sent[3].id!r}).body.decode())\n"
            "    for bad in (" + repr(prefix + "999999") + ", " + repr(prefix + "x") + ", " + repr(other.id) + "):\n"
            "        try:\n"
            "            r.peek_by_id(bad)\n"
            "        except errors.MessageNotFound:\n"
            "            print('not found')\n"
        )
        assert out.split("\n")[:5] == ["two", "four", "not found", "not found", "not found"]
        with msmq.open(Q, "receive") as r:
            assert [r.receive(timeout=0).body for _ in range(3)] == [b"one", b"three", b"four"]
    finally:
        msmq.delete_queue(Q)
        msmq.delete_queue(QQ)


def test_journal_and_dead_letter_copies_keep_the_original_id_and_are_found_by_it() -> None:
    msmq.create_queue(Q, journal=True)
    try:
        with msmq.open(Q, "send|receive") as q:
            first = q.send(b"journalled")
            q.send(b"filler")  # the copy's lookup id is not the original's
            assert q.receive_by_id(first.id).body == b"journalled"
            late = q.send(b"late", time_to_be_received=0.01, use_dead_letter=True)
        (copy_seq,) = _sql(Q, "SELECT seq FROM msg WHERE sub = 1 AND msgid = ?", (first.id,))[0]
        assert copy_seq != first.lookup_id
        assert _sql(Q, "SELECT native FROM msg WHERE seq = ?", (copy_seq,)) == [(0,)]
        out = _child(
            "import time\n"
            "from winipc import errors, msmq\n"
            f"with msmq.open({Q!r} + ';journal', 'receive') as j:\n"
            f"    print(j.peek_by_id({first.id!r}).body.decode())\n"
            f"with msmq.open({Q!r}, 'receive') as r:\n"
            "    time.sleep(0.05)\n"
            "    print(r.receive(timeout=0).body.decode())\n"
            "    try:\n"
            f"        r.peek_by_id({first.id!r})\n"
            "    except errors.MessageNotFound:\n"
            "        print('gone from the queue')\n"
        )
        assert out.split("\n")[:3] == ["journalled", "filler", "gone from the queue"]
        with msmq.open(Q, "receive") as q, pytest.raises(W.IoTimeout):
            q.receive(timeout=0)  # "late" has expired: to the dead-letter queue
        with msmq.open(SYSTEM_DEADLETTER, "receive") as d:
            assert d.receive_by_id(late.id).body == b"late"
        assert msmq.integrity_check(Q) == []
    finally:
        msmq.delete_queue(Q)
        with contextlib.suppress(W.QueueNotFound):
            msmq.delete_queue(SYSTEM_DEADLETTER)


def test_only_a_queue_with_a_quota_keeps_counters_and_stat_counts_either_way() -> None:
    msmq.create_queue(Q, journal=True)
    msmq.create_queue(QQ, quota=10_000, journal=True)
    try:
        for path in (Q, QQ):
            with msmq.open(path, "send|receive") as q:
                q.send_many([b"x" * 1000, b"y" * 2000, b"z" * 3000])
                q.receive(timeout=0)
                st = q.stat()
                assert (st.messages, st.bytes, st.journal_messages) == (2, 5000, 1)
        assert "counters" not in _objects(Q) and "msg_ins" not in _objects(Q)
        assert {"counters", "msg_ins", "msg_del", "msg_upd"} <= _objects(QQ)
        with msmq.open(QQ, "send") as q:
            with pytest.raises(W.InsufficientResources):
                q.send(b"w" * 6000)  # 5000 held + 6000 > 10000
            q.send(b"w" * 4000)
        assert msmq.integrity_check(Q) == [] and msmq.integrity_check(QQ) == []
    finally:
        msmq.delete_queue(Q)
        msmq.delete_queue(QQ)


def _downgrade_to_version_1(path: str) -> None:
    """Turn a version 2 queue into the version 1 format (as an older winipc wrote it)."""
    counted = "counters" in _objects(path)
    c = sqlite3.connect(_db(path), isolation_level=None)
    try:
        c.executescript(
            "BEGIN IMMEDIATE; DROP INDEX msg_order; DROP INDEX msg_id; ALTER TABLE msg DROP COLUMN native;"
            + V1_INDEXES + ("" if counted else V1_COUNTERS)
            + "DELETE FROM meta WHERE key = 'guid'; UPDATE meta SET value = 1 WHERE key = 'version'; COMMIT;")
    finally:
        c.close()
    assert _sql(path, "SELECT value FROM meta WHERE key = 'version'") == [(1,)]


def test_a_version_1_queue_is_migrated_by_its_first_opener_and_keeps_every_message() -> None:
    msmq.create_queue(Q, journal=True)
    msmq.create_queue(QQ, quota=1 << 20)
    try:
        with msmq.open(Q, "send|receive") as q:
            old = [q.send(f"old {i}".encode(), priority=i % 3, correlation_id=f"c{i}") for i in range(6)]
            q.receive(timeout=0)  # one journal copy
        with msmq.open(QQ, "send") as q:
            q.send(b"quota'd")
        for path in (Q, QQ):
            _downgrade_to_version_1(path)
            assert {"counters", "msg_ins"} <= _objects(path)
        # a second process migrates Q: by-id lookups of old ids work, new ids are native
        out = _child(
            "from winipc import msmq\n"
            f"with msmq.open({Q!r}, 'send|receive') as q:\n"
            f"    print(q.peek_by_id({old[3].id!r}).body.decode())\n"
            "    new = q.send(b'new')\n"
            "    print(q.receive_by_id(new.id).body.decode(), new.lookup_id)\n"
            "    print(q.stat().messages, q.stat().journal_messages)\n"
        )
        lines = out.split("\n")
        assert lines[0] == "old 3"
        assert lines[1].startswith("new ")
        assert lines[2] == "5 2"  # the child's receive was journalled too
        assert _sql(Q, "SELECT value FROM meta WHERE key = 'version'") == [(2,)]
        assert "counters" not in _objects(Q)
        new_seq = int(lines[1].split()[1])
        assert new_seq > max(m.lookup_id for m in old)  # lookup ids are never reused
        with msmq.open(QQ, "receive") as q:
            assert q.receive(timeout=0).body == b"quota'd"
        assert {"counters", "msg_ins"} <= _objects(QQ)
        assert _sql(QQ, "SELECT n, bytes FROM counters WHERE sub = 0") == [(0, 0)]
        with msmq.open(Q, "receive") as q:
            assert q.receive_by_correlation_id("c4", timeout=0).body == b"old 4"
            # priority first, then the order sent
            assert [q.receive(timeout=0).body for _ in range(4)] == [b"old 5", b"old 1", b"old 0", b"old 3"]
        with msmq.open(Q + ";journal", "receive") as j:
            assert j.receive_by_id(old[2].id).body == b"old 2"  # the first received (priority 2)
        assert msmq.integrity_check(Q) == [] and msmq.integrity_check(QQ) == []
    finally:
        msmq.delete_queue(Q)
        msmq.delete_queue(QQ)


def test_processes_opening_a_version_1_queue_at_once_migrate_it_once() -> None:
    msmq.create_queue(Q)
    try:
        with msmq.open(Q, "send") as q:
            q.send_many([f"m{i}".encode() for i in range(20)])
        _downgrade_to_version_1(Q)
        go = f"{_db(Q)}.go"
        code = (
            "import os, time\n"
            "from winipc import msmq\n"
            f"while not os.path.exists({go!r}):\n"
            "    time.sleep(0.001)\n"
            f"with msmq.open({Q!r}, 'peek') as q:\n"
            "    print(q.stat().messages)\n"
        )
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        Path(go).touch()
        try:
            outs = [p.communicate(timeout=60) for p in procs]
        finally:
            os.unlink(go)
        assert [p.returncode for p in procs] == [0] * 4, [e for _o, e in outs]
        assert [o.strip() for o, _e in outs] == ["20"] * 4
        assert _sql(Q, "SELECT value FROM meta WHERE key = 'version'") == [(2,)]
        assert len(_sql(Q, "SELECT value FROM meta WHERE key = 'guid'")) == 1
        # whoever read version 1 before another process migrated it migrates nothing again
        store = _local._open_store(msmq.parse(Q))
        try:
            assert store._migrate(store.info) == _guid(Q)
        finally:
            store.close()
        assert msmq.integrity_check(Q) == []
    finally:
        msmq.delete_queue(Q)


def test_a_row_marked_native_under_another_id_is_reported_by_the_integrity_check() -> None:
    msmq.create_queue(Q, journal=True)
    try:
        with msmq.open(Q, "send|receive") as q:
            m = q.send(b"a")
            q.receive(timeout=0)
        assert msmq.integrity_check(Q) == []
        with sqlite3.connect(_db(Q)) as c:
            c.execute("UPDATE msg SET native = 1 WHERE sub = 1")  # the journal copy: not its own id
        problems = msmq.integrity_check(Q)
        assert any("marked native" in p and repr(m.id) in p for p in problems), problems
    finally:
        msmq.delete_queue(Q)


def test_a_newer_store_version_is_refused_as_corruption() -> None:
    msmq.create_queue(Q)
    try:
        with sqlite3.connect(_db(Q)) as c:
            c.execute("UPDATE meta SET value = 3 WHERE key = 'version'")
        with pytest.raises(W.CorruptQueueError, match="store version 3"):
            msmq.open(Q, "receive")
    finally:
        msmq.delete_queue(Q)


def test_a_by_id_look_reads_rows_by_lookup_id_and_the_non_native_id_index_not_the_whole_subqueue() -> None:
    msmq.create_queue(Q)
    try:
        with msmq.open(Q, "send") as q:
            q.send_many([b"m"] * 50)
        sql = (f"EXPLAIN QUERY PLAN SELECT {_local._COLS} FROM {_local._BY_ID_FROM} WHERE sub = ? AND state = 0 "
               f"{_local._BY_ID} ORDER BY pri DESC, seq LIMIT 1")
        plan = " | ".join(str(r[3]) for r in _sql(Q, sql, (0, 7, "x", "x")))
        assert "USING INTEGER PRIMARY KEY" in plan and "USING INDEX msg_id" in plan, plan
        assert "msg_order" not in plan, plan
    finally:
        msmq.delete_queue(Q)


def test_a_stored_record_leaves_out_default_properties_and_full_records_still_read() -> None:
    """A row's property record holds only what differs from the Message defaults (smaller
    rows: three 1 KiB messages to a 4 KiB page, not two); a reader takes an absent property
    as its default, and a record with every property (as winipc wrote before) reads the same."""
    import json

    import msgpack

    msmq.create_queue(Q)
    try:
        out = _child(
            "from winipc import msmq\n"
            f"with msmq.open({Q!r}, 'send') as s:\n"
            "    for m in (s.send(b'plain'), s.send(b'rich', label='L', priority=5, correlation_id='c',\n"
            "                                       app_specific=7, use_dead_letter=True, time_to_be_received=600.0)):\n"
            "        print(m.lookup_id, m.id)\n"
        )
        (plain_seq, plain_id), (rich_seq, rich_id) = ((int(a), b) for a, b in (x.split() for x in out.splitlines()))
        records = {seq: msgpack.unpackb(props) for seq, props in _sql(Q, "SELECT seq, props FROM msg")}
        assert set(records[plain_seq]) == {"id", "sent_time", "arrived_time", "source_machine", "sender_pid",
                                            "sender_uid", "destination_queue"}
        rich = records[rich_seq]
        assert (rich["label"], rich["priority"], rich["correlation_id"], rich["app_specific"]) == ("L", 5, "c", 7)
        assert rich["use_dead_letter"] is True and rich["time_to_be_received"] == 600.0
        assert "acknowledge" not in rich and "body_type" not in rich and "response_queue" not in rich

        with msmq.open(Q, "peek") as p:
            before = {m.lookup_id: m for m in (p.peek_by_id(plain_id), p.peek_by_id(rich_id))}
        # rewrite the plain row as an earlier winipc did: every property in the record
        m = before[plain_seq]
        full = {name: getattr(m, name) for name in _local.M.STORED_FIELDS}
        full = {k: int(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in full.items()}  # enums
        props = msgpack.packb(full, use_bin_type=True)
        with sqlite3.connect(_db(Q)) as c:
            c.execute("UPDATE msg SET props = ?, crc = ? WHERE seq = ?", (props, _local._crc(props, b"plain"), plain_seq))
        out = _child(
            "import json\n"
            "from winipc import msmq\n"
            f"with msmq.open({Q!r}, 'receive') as r:\n"
            "    for _ in range(2):\n"
            "        m = r.receive(timeout=0)\n"
            "        print(json.dumps({k: (v if not isinstance(v, bytes) else v.decode())\n"
            "                          for k, v in vars(m).items()}))\n"
        )
        got = [json.loads(line) for line in out.splitlines()]
        assert [g["body"] for g in got] == ["rich", "plain"]
        for g in got:
            want = before[g["lookup_id"]]
            for name, value in g.items():
                expected = getattr(want, name)
                assert value == (expected.decode() if isinstance(expected, bytes) else expected), name
        assert got[1]["label"] == "" and got[1]["priority"] == msmq.Message.priority
        assert got[1]["correlation_id"] is None and got[1]["delivery"] == msmq.Delivery.RECOVERABLE
    finally:
        msmq.delete_queue(Q)
