"""The local queue store: crashes, corruption, other users, group commit, file modes.

The behaviour every backend shares is in test_msmq_conformance.py; these are the local
store's own guarantees.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msmq_kill import run_kill_cycles
from winipc import errors as W
from winipc import msmq
from winipc._backends import queue_files as F
from winipc.msmq import _local
from xuser import python_for, second_user

Q = r".\private$\local-tests"


def _folder(path: str) -> Path:
    return Path(_local._queue_dir(msmq.parse(path)))


def test_sigkill_producers_and_consumers_200_times_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    books = run_kill_cycles(200, tmp_path, seed=20261121)
    assert books["kills"] == 200
    assert books["acknowledged"] > 0
    assert books["stored"] >= books["acknowledged"]


def test_files_are_owner_only_whatever_the_umask() -> None:
    old = os.umask(0)
    try:
        msmq.create_queue(Q)
        with msmq.open(Q, "send|receive") as q:
            q.send(b"x")  # creates the WAL and the shared-memory index
            folder = _folder(Q)
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
            names = {p.name for p in folder.iterdir()}
            assert {"queue.db", "queue.db-wal", "queue.db-shm", "lock", "sync", "wait"} <= names
            for p in folder.iterdir():
                mode = stat.S_IMODE(p.stat().st_mode)
                assert mode & 0o077 == 0, f"{p.name} has mode {oct(mode)}"
            q.receive(timeout=0)
    finally:
        os.umask(old)
        msmq.delete_queue(Q)


def _flip_in(path: Path, marker: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(marker)
    assert at >= 0, f"{marker!r} not found in {path.name}"
    data[at + 3] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_bit_flip_in_a_message_is_detected_never_returned() -> None:
    msmq.create_queue(Q)
    marker = b"MARKER-" + os.urandom(8).hex().encode()
    with msmq.open(Q, "send") as q:
        q.send(marker + b" the rest of the body", label="flip me")
        q.send(b"an intact message")
    db = _folder(Q) / "queue.db"
    assert not (_folder(Q) / "queue.db-wal").exists()  # the last close checkpointed it
    _flip_in(db, marker)
    try:
        problems = msmq.integrity_check(Q)
        assert any("checksum" in p for p in problems), problems
        with msmq.open(Q, "receive") as q:
            with pytest.raises(W.CorruptQueueError):
                q.peek(timeout=0)
            with pytest.raises(W.CorruptQueueError):
                q.receive(timeout=0)
    finally:
        msmq.delete_queue(Q)


def test_damage_to_the_database_structure_is_reported_as_corruption() -> None:
    msmq.create_queue(Q)
    with msmq.open(Q, "send") as q:
        q.send_many([os.urandom(2000) for _ in range(50)])
    db = _folder(Q) / "queue.db"
    data = bytearray(db.read_bytes())
    page = 4096
    for i in range(2 * page, min(len(data), 5 * page), 7):  # scribble over b-tree pages
        data[i] ^= 0xFF
    db.write_bytes(bytes(data))
    try:
        problems = msmq.integrity_check(Q)
        assert problems
        got: list[BaseException] = []
        try:
            with msmq.open(Q, "receive") as q:
                for _ in range(60):
                    q.receive(timeout=0)
        except (W.CorruptQueueError, W.IoTimeout) as exc:
            got.append(exc)
        assert got and isinstance(got[0], W.CorruptQueueError), got
    finally:
        msmq.delete_queue(Q)


def test_group_sync_skips_a_commit_that_a_later_sync_covered(tmp_path: Path) -> None:
    wal = tmp_path / "q.db-wal"
    wal.write_bytes(b"frames")
    a = F.GroupSync(str(tmp_path / "sync"), str(wal), str(tmp_path))
    b = F.GroupSync(str(tmp_path / "sync"), str(wal), str(tmp_path))
    try:
        before = time.monotonic_ns()
        assert a.durable(before) is True  # nobody synced after this commit: sync now
        assert b.durable(before) is False  # a's sync started after it: covered
        assert b.durable(time.monotonic_ns()) is True  # committed after a's sync began
        wal.unlink()  # checkpointed and removed: nothing to sync, still recorded
        assert a.durable(time.monotonic_ns()) is True
    finally:
        a.close()
        b.close()


def test_a_dead_transaction_is_rolled_back_by_the_next_receiver(tmp_path: Path) -> None:
    msmq.create_queue(Q, transactional=True)
    try:
        with msmq.open(Q, "send") as q:
            q.send(b"job", transaction=msmq.SINGLE_MESSAGE)
        code = f"""
import os, sys
from winipc import msmq
q = msmq.open({Q!r}, "receive")
tx = msmq.transaction()
m = q.receive(timeout=5, transaction=tx)
print("holding", m.body.decode(), flush=True)
sys.stdin.readline()
"""
        from conftest import child_env

        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=child_env())
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "holding job"
            with msmq.open(Q, "receive") as q:
                with pytest.raises(W.IoTimeout):
                    q.receive(timeout=0)  # locked by a live transaction
                proc.kill()
                proc.wait(10)
                m = q.receive(timeout=10)  # the owner died: the message comes back
                assert m.body == b"job"
                assert m.abort_count == 1
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
    finally:
        msmq.delete_queue(Q)


def _run_as(user: pwd.struct_passwd, code: str, root: Path, src: Path) -> str:
    env = {"WINIPC_ROOT": str(root), "PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [python_for(user), "-c", code], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        env=env, capture_output=True, text=True, cwd="/", timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_second_user_cannot_open_an_owner_only_queue(shared_root: tuple[Path, Path]) -> None:
    import shutil

    import msgpack

    user = second_user()
    root, src = shared_root
    shutil.copytree(os.path.dirname(msgpack.__file__), src / "msgpack")  # the other user's Python needs it
    msmq.create_queue(Q)
    try:
        with msmq.open(Q, "send") as q:
            q.send(b"secret")
        out = _run_as(user, f"""
import sqlite3
from winipc import errors as W
from winipc import msmq
for access in ("send", "receive", "peek"):
    try:
        msmq.open({Q!r}, access).close()
        print(access, "allowed")
    except W.WinIPCError as e:
        print(access, "refused", type(e).__name__)
try:
    msmq.delete_queue({Q!r})
    print("delete allowed")
except W.WinIPCError as e:
    print("delete refused", type(e).__name__)
try:
    sqlite3.connect("file:{root}/msmq/priv.local-tests/queue.db?mode=ro", uri=True).execute("select * from msg").fetchall()
    print("file allowed")
except sqlite3.Error as e:
    print("file refused")
""", root, src).split("\n")
        for access in ("send", "receive", "peek"):
            assert f"{access} refused QueueAccessDenied" in out, out
        assert "delete refused QueueAccessDenied" in out, out
        assert "file refused" in out, out
        with msmq.open(Q, "receive") as q:
            assert q.receive(timeout=0).body == b"secret"
    finally:
        msmq.delete_queue(Q)
    for p in (root / "msmq").iterdir():
        assert p.name == ".tx", p


def test_sharing_violation_for_exclusive_receive() -> None:
    msmq.create_queue(Q)
    try:
        a = msmq.open(Q, "receive", share=msmq.ShareMode.DENY_RECEIVE_SHARE)
        with pytest.raises(W.SharingViolation):
            msmq.open(Q, "receive")
        msmq.open(Q, "send").close()  # senders are not receivers
        a.close()
        with msmq.open(Q, "receive"), pytest.raises(W.SharingViolation):
            msmq.open(Q, "receive", share=msmq.ShareMode.DENY_RECEIVE_SHARE)
    finally:
        msmq.delete_queue(Q)


def test_closing_a_handle_wakes_its_blocked_receiver() -> None:
    import threading

    msmq.create_queue(Q)
    try:
        q = msmq.open(Q, "receive")
        got: list[BaseException] = []

        def wait() -> None:
            try:
                q.receive(timeout=30)
            except BaseException as exc:
                got.append(exc)

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.2)
        q.close()
        t.join(10)
        assert not t.is_alive()
        assert got and isinstance(got[0], (W.OperationCancelled, W.MsmqError)), got
    finally:
        msmq.delete_queue(Q)


def test_properties_come_back_as_the_types_they_were_checked_into() -> None:
    """validate() and the stored record's fast paths: ints given for enum properties come back
    as the enum members, the stored record holds plain ints (and leaves defaults out), a
    forever TTL is None."""
    import msgpack

    admin = Q + "-admin"
    msmq.create_queue(Q)
    msmq.create_queue(admin)
    try:
        with msmq.open(Q, "send|receive") as q:
            sent = q.send(b"typed", delivery=1, acknowledge=0x08, admin_queue=admin, use_dead_letter=1,
                          time_to_reach_queue=2**40, time_to_be_received=7, priority=5, app_specific=9)
            assert sent.delivery is msmq.Delivery.RECOVERABLE
            assert sent.acknowledge is msmq.Ack.NEGATIVE_RECEIVE
            assert sent.use_dead_letter is True and sent.time_to_reach_queue is None
            assert isinstance(sent.time_to_be_received, float)
            with q._store.read() as conn:  # type: ignore[attr-defined]
                (props,) = conn.execute("SELECT props FROM msg WHERE msgid = ?", (sent.id,)).fetchone()
            rec = msgpack.unpackb(props, raw=False)
            assert set(rec) < set(_local.M.STORED_FIELDS)
            assert "delivery" not in rec and "message_class" not in rec  # their defaults: left out
            assert type(rec["acknowledge"]) is int and rec["acknowledge"] == 8
            got = q.receive(timeout=0)
            assert got.delivery is msmq.Delivery.RECOVERABLE
            assert got.acknowledge is msmq.Ack.NEGATIVE_RECEIVE
            assert got.message_class is msmq.MessageClass.NORMAL
            assert got.use_dead_letter is True and got.time_to_reach_queue is None
            assert got.properties() == sent.properties()
            # a Message as the body, with properties over it; unknown ones are refused
            again = q.send(got, label="copy", delivery=msmq.Delivery.RECOVERABLE)
            assert again.label == "copy" and again.body == b"typed" and again.id != got.id
            with pytest.raises(W.IllegalPropertyValue, match="colour"):
                q.send(got, colour="red")
            assert q.receive(timeout=0).label == "copy"
    finally:
        msmq.delete_queue(Q)
        msmq.delete_queue(admin)


_RECEIVE_PROPS = """
import json, sys
from winipc import msmq
with msmq.open(sys.argv[1], "receive") as q:
    out = []
    for _ in range(int(sys.argv[2])):
        m = q.receive(timeout=10)
        p = m.properties()
        p["body"] = m.body.hex()
        out.append(p)
print(json.dumps(out))
"""


def test_a_plain_send_stores_what_the_generic_send_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    """send() of bytes with the common properties takes a shorter path (_send_fast_sql) than
    send_many() of the same message: a receiving process gets the same properties from
    both, each recoverable send was synced before it returned, and bad properties are
    still refused on the short path."""
    reply = Q + "-reply"
    msmq.create_queue(Q)
    msmq.create_queue(reply)
    try:
        kinds = [
            {},
            {"delivery": 1},
            {"delivery": msmq.Delivery.RECOVERABLE, "priority": 6, "label": "l\u00e9", "correlation_id": "c",
             "app_specific": 2**32 - 1, "response_queue": reply, "use_dead_letter": 1},
        ]
        with msmq.open(Q, "send") as s:
            store = s._store  # type: ignore[attr-defined]
            synced: list[int] = []
            real = store.sync.durable
            monkeypatch.setattr(store.sync, "durable", lambda t: synced.append(t) or real(t))
            generic_calls: list[int] = []
            prepared = s._send_prepared  # type: ignore[attr-defined]
            monkeypatch.setattr(s, "_send_prepared", lambda *a: generic_calls.append(1) or prepared(*a))
            fast = [s.send(b"body%d" % i, **kw) for i, kw in enumerate(kinds)]
            assert len(synced) == len(kinds) and not generic_calls  # the short path, synced
            generic = s.send_many([msmq.Message(body=b"body%d" % i, **kw) for i, kw in enumerate(kinds)])
            with pytest.raises(W.IllegalPropertyValue, match="label"):
                s.send(b"x", label=7)
            with pytest.raises(W.IllegalPropertyValue, match="delivery"):
                s.send(b"x", delivery=9)
        out = subprocess.run([sys.executable, "-c", _RECEIVE_PROPS, Q, str(2 * len(kinds))],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        import json

        got = {p["id"]: p for p in json.loads(out.stdout)}
        varying = ("id", "lookup_id", "sent_time", "arrived_time")
        for a, b in zip(fast, generic, strict=True):
            pa, pb = got[a.id], got[b.id]
            assert pa["lookup_id"] == a.lookup_id and pa["sent_time"] == pa["arrived_time"] == a.sent_time
            assert pb["sent_time"] == pb["arrived_time"] == b.sent_time
            assert {k: v for k, v in pa.items() if k not in varying} == {
                k: v for k, v in pb.items() if k not in varying}
            assert a.properties() | {"body": a.body.hex()} == pa
        with msmq.open(Q, "receive") as r:
            assert r.stat().messages == 0  # the refused sends stored nothing
    finally:
        msmq.delete_queue(Q)
        msmq.delete_queue(reply)


def test_an_empty_incoming_folder_is_listed_again_once_it_changes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """_ingest remembers an empty incoming/ (no listdir per receive) but sees a new drop file."""
    inc = tmp_path / "incoming"
    inc.mkdir()

    class Reached(Exception):
        pass

    class FakeStore:
        incoming = str(inc)
        incoming_idle = None

        def write(self) -> None:
            raise Reached  # past the listing: it would ingest

    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str) -> list[str]:
        listed.append(path)
        return real_listdir(path)

    monkeypatch.setattr(_local, "INCOMING_SETTLE", 0.0)  # else only a folder 2 s old is remembered
    monkeypatch.setattr(_local.os, "listdir", listdir)
    store = FakeStore()
    time.sleep(0.05)  # past the folder's creation, at any timestamp granularity
    assert _local._ingest(store) == 0  # type: ignore[arg-type]
    assert len(listed) == 1 and store.incoming_idle is not None
    for _ in range(5):
        assert _local._ingest(store) == 0  # type: ignore[arg-type]
    assert len(listed) == 1, "an unchanged empty folder was listed again"
    time.sleep(0.05)
    (inc / "drop.msg").write_bytes(b"x")
    with pytest.raises(Reached):
        _local._ingest(store)  # type: ignore[arg-type]
    assert len(listed) == 2
    monkeypatch.setattr(_local, "INCOMING_RECHECK", 0.0)  # and the memory runs out
    (inc / "drop.msg").unlink()
    time.sleep(0.05)
    assert _local._ingest(store) == 0  # type: ignore[arg-type]
    assert _local._ingest(store) == 0  # type: ignore[arg-type]
    assert len(listed) == 4


def test_a_deleted_queue_is_noticed_without_a_path_lookup_per_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_alive: an fstat of the open folder stands in for the lstat of its path while the
    folder's ctime is the one verified; delete_queue's rename changes it (QueueDeleted)."""
    monkeypatch.setattr(_local, "ALIVE_SETTLE", 0.0)  # else only a folder 2 s old is remembered
    folder = str(_folder(Q))
    looked_up: list[str] = []
    real_lstat = os.lstat

    def lstat(path: str, *args: object, **kw: object) -> os.stat_result:
        if path == folder:
            looked_up.append(path)
        return real_lstat(path)

    for recreate in (False, True):
        msmq.create_queue(Q)
        try:
            q = msmq.open(Q, "send|receive")
            time.sleep(0.05)  # past the folder's last change, at any timestamp granularity
            q.send(b"first")
            monkeypatch.setattr(_local.os, "lstat", lstat)
            for _ in range(5):
                q.send(b"x")
                q.receive(timeout=0)
            assert looked_up == [], "the folder was looked up by path on every operation"
            time.sleep(0.05)
        finally:
            monkeypatch.setattr(_local.os, "lstat", real_lstat)
            msmq.delete_queue(Q)
        if recreate:
            msmq.create_queue(Q)
        try:
            with pytest.raises(W.QueueDeleted):
                q.send(b"lost")
            with pytest.raises(W.QueueDeleted):
                q.receive(timeout=0)
        finally:
            q.close()
            if recreate:
                msmq.delete_queue(Q)
