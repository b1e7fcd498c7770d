"""Local queues shared with other users: ``create_queue(..., security=...)``.

A second OS user (tests/xuser.py) plays the grantee; the test process (root) owns the
queues. Full grants (``"rw"``) share the database through POSIX ACLs; send-only grants
(``"w"``) go through the queue's ``incoming/`` drop folder.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from winipc import errors as W
from winipc import msmq
from winipc._backends import os_backend as B
from winipc._backends import queue_files as F
from winipc._core.security import SecurityAttributes
from winipc.msmq import _incoming as I
from winipc.msmq import _local
from winipc.msmq import _message as M
from xuser import USER, python_for, second_user

Q = r".\private$\shared-tests"
ACL_USER = 2  # tag of a named user entry


def _folder(path: str = Q) -> Path:
    return Path(_local._queue_dir(msmq.parse(path)))


@pytest.fixture
def xuser(shared_root: tuple[Path, Path]) -> Iterator[tuple[pwd.struct_passwd, Path, Path]]:
    """The second user, the sticky shared root, and a copy of src (with msgpack) it can import."""
    user = second_user()
    root, src = shared_root
    shutil.copytree(os.path.dirname(msgpack.__file__), src / "msgpack")  # the other user's Python needs it
    yield user, root, src


def _run_as(user: pwd.struct_passwd, code: str, root: Path, src: Path) -> list[str]:
    env = {"WINIPC_ROOT": str(root), "PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [python_for(user), "-c", code], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        env=env, capture_output=True, text=True, cwd="/", timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def _acl_perm(path: Path, uid: int, default: bool = False) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        entries = B.get_acl(fd, default)
    finally:
        os.close(fd)
    assert entries is not None, f"{path} has no {'default ' if default else ''}ACL"
    for tag, perm, ident in entries:
        if tag == ACL_USER and ident == uid:
            return perm
    return None


_PROBE = """
import sqlite3
from winipc import errors as W
from winipc import msmq
Q = {q!r}
for access in ("send", "receive", "peek"):
    try:
        msmq.open(Q, access).close()
        print(access, "allowed")
    except W.WinIPCError as e:
        print(access, "refused", type(e).__name__)
for name, call in (("delete", msmq.delete_queue), ("purge", msmq.purge_queue), ("info", msmq.queue_info)):
    try:
        call(Q)
        print(name, "allowed")
    except W.WinIPCError as e:
        print(name, "refused", type(e).__name__)
try:
    sqlite3.connect("file:{folder}/queue.db?mode=ro", uri=True).execute("select * from msg").fetchall()
    print("file allowed")
except sqlite3.Error:
    print("file refused")
"""


def test_full_access_both_ways_also_after_every_connection_closed(xuser: tuple[pwd.struct_passwd, Path, Path]) -> None:
    user, root, src = xuser
    msmq.create_queue(Q, label="shared", security=SecurityAttributes(allow={f"user:{USER}": "rw"}))
    folder = _folder()
    try:
        # the folder lets the grantee in and list, never create or remove names
        assert _acl_perm(folder, user.pw_uid) == 0o5
        assert _acl_perm(folder, user.pw_uid, default=True) == 0o6
        assert _acl_perm(folder / "queue.db", user.pw_uid) == 0o6
        assert stat.S_IMODE(folder.stat().st_mode) & 0o007 == 0
        assert not (folder / "incoming").exists()  # nobody is send-only
        for round_ in range(2):
            with msmq.open(Q, "send") as q:
                q.send(b"from owner %d" % round_, label="down", app_specific=round_, priority=6)
            # every connection closed: SQLite removed -wal/-shm and the owner's close remade them
            for name in ("queue.db-wal", "queue.db-shm"):
                assert (folder / name).exists(), name
                assert _acl_perm(folder / name, user.pw_uid) == 0o6, name
            out = _run_as(user, f"""
from winipc import msmq
with msmq.open({Q!r}, "receive") as q:
    m = q.receive(timeout=5)
    print("got", m.body.decode(), m.label, m.app_specific, m.priority)
with msmq.open({Q!r}, "send") as q:
    q.send({{"round": {round_}}}, label="up", correlation_id="c-{round_}")
print("info", msmq.queue_info({Q!r}).label)
""", root, src)
            assert out == [f"got from owner {round_} down {round_} 6", "info shared"], out
            with msmq.open(Q, "receive") as q:
                m = q.receive(timeout=5)
                assert m.body == {"round": round_}
                assert (m.label, m.correlation_id, m.sender_uid) == ("up", f"c-{round_}", user.pw_uid)
                with pytest.raises(W.IoTimeout):
                    q.receive(timeout=0)
        out = _run_as(user, _PROBE.format(q=Q, folder=folder), root, src)
        for line in ("send allowed", "receive allowed", "peek allowed", "purge allowed", "info allowed",
                     "delete refused QueueAccessDenied", "file allowed"):
            assert line in out, out
    finally:
        msmq.delete_queue(Q)


def test_send_only_user_sends_through_incoming_and_cannot_read(xuser: tuple[pwd.struct_passwd, Path, Path]) -> None:
    user, root, src = xuser
    msmq.create_queue(Q, security=SecurityAttributes(allow={f"user:{USER}": "w"}))
    folder = _folder()
    try:
        assert _acl_perm(folder, user.pw_uid) == 0o1  # reach, no listing
        assert _acl_perm(folder / "queue.db", user.pw_uid) == 0
        assert _acl_perm(folder / "incoming", user.pw_uid) == 0o3  # create, no listing
        waiting = msmq.open(Q, "receive")
        got: list[object] = []
        t = threading.Thread(target=lambda: got.append(waiting.receive(timeout=60)))
        t.start()  # woken by the sender's doorbell, not by polling
        out = _run_as(user, f"""
import os
from winipc import errors as W
from winipc import msmq
with msmq.open({Q!r}, "send") as q:
    a = q.send(b"recoverable", label="r", priority=5, correlation_id="c1", app_specific=7)
    b = q.send({{"k": [1, 2]}}, label="e", delivery=msmq.Delivery.EXPRESS)
    many = q.send_many([b"m1", msmq.Message(b"m2", label="two")])
    print("ids", a.id, b.id, *[m.id for m in many])
    for call in (lambda: q.receive(timeout=0), lambda: q.peek(timeout=0), q.stat, q.purge, q.cursor):
        try:
            call()
            print("handle allowed")
        except W.QueueAccessDenied:
            print("handle refused")
    tx = msmq.transaction()
    try:
        q.send(b"x", transaction=tx)
    except W.WinIPCError as e:
        print("tx refused", type(e).__name__)
    finally:
        tx.abort()
try:
    os.listdir({str(folder / "incoming")!r})
    print("listing allowed")
except PermissionError:
    print("listing refused")
""" + _PROBE.format(q=Q, folder=folder), root, src)
        t.join(60)
        assert not t.is_alive()
        waiting.close()
        ids = out[0].split()[1:]
        assert len(ids) == 4
        assert out.count("handle refused") == 5, out
        assert "tx refused TransactionUsage" in out or "tx refused QueueAccessDenied" in out, out
        for line in ("listing refused", "send allowed", "receive refused QueueAccessDenied",
                     "peek refused QueueAccessDenied", "delete refused QueueAccessDenied",
                     "purge refused QueueAccessDenied", "info allowed", "file refused"):
            assert line in out, out
        first = got[0]
        assert isinstance(first, msmq.Message)
        received = [first]
        with msmq.open(Q, "receive") as q:
            while True:
                try:
                    received.append(q.receive(timeout=0))
                except W.IoTimeout:
                    break
        assert sorted(m.id for m in received) == sorted(ids)
        by_id = {m.id: m for m in received}
        a, b, m1, m2 = (by_id[i] for i in ids)
        assert (a.body, a.label, a.priority, a.correlation_id, a.app_specific) == (b"recoverable", "r", 5, "c1", 7)
        assert a.delivery == msmq.Delivery.RECOVERABLE
        assert (b.body, b.label, b.delivery) == ({"k": [1, 2]}, "e", msmq.Delivery.EXPRESS)
        assert (m1.body, m2.body, m2.label) == (b"m1", b"m2", "two")
        assert {m.sender_uid for m in received} == {user.pw_uid}
        assert all(m.lookup_id > 0 and m.destination_queue == Q for m in received)
        assert list((folder / "incoming").iterdir()) == []
    finally:
        msmq.delete_queue(Q)


def test_send_only_user_on_a_transactional_queue_uses_single_message(xuser: tuple[pwd.struct_passwd, Path, Path]) -> None:
    user, root, src = xuser
    msmq.create_queue(Q, transactional=True, security=SecurityAttributes(allow={f"user:{USER}": "w"}))
    try:
        out = _run_as(user, f"""
from winipc import errors as W
from winipc import msmq
with msmq.open({Q!r}, "send") as q:
    q.send_many([b"one", b"two"], transaction=msmq.SINGLE_MESSAGE)
    tx = msmq.transaction()
    for t in (None, tx):
        try:
            q.send(b"three", transaction=t)
            print("sent")
        except W.TransactionUsage:
            print("refused")
    tx.abort()
""", root, src)
        assert out == ["refused", "refused"], out
        with msmq.open(Q, "receive") as q, msmq.transaction() as tx:
            got = [q.receive(timeout=0, transaction=tx) for _ in range(2)]
            assert [m.body for m in got] == [b"one", b"two"]
            assert all(m.transactional and m.priority == 0 for m in got)
            with pytest.raises(W.IoTimeout):
                q.receive(timeout=0, transaction=tx)
    finally:
        msmq.delete_queue(Q)


def test_a_user_not_granted_is_refused(xuser: tuple[pwd.struct_passwd, Path, Path]) -> None:
    user, root, src = xuser
    msmq.create_queue(Q, security=SecurityAttributes(allow={"uid:65534": "rw", "uid:65533": "w"}))
    try:
        with msmq.open(Q, "send") as q:
            q.send(b"not for you")
        out = _run_as(user, _PROBE.format(q=Q, folder=_folder()), root, src)
        for line in ("send refused QueueAccessDenied", "receive refused QueueAccessDenied",
                     "peek refused QueueAccessDenied", "delete refused QueueAccessDenied",
                     "purge refused QueueAccessDenied", "info refused QueueAccessDenied", "file refused"):
            assert line in out, out
        with msmq.open(Q, "receive") as q:
            assert q.receive(timeout=0).body == b"not for you"
    finally:
        msmq.delete_queue(Q)


def test_deny_wins_over_allow(xuser: tuple[pwd.struct_passwd, Path, Path]) -> None:
    user, root, src = xuser
    group = f"group:{pwd.getpwuid(user.pw_uid).pw_name}"  # its primary group has its name
    q2 = r".\private$\shared-tests-2"
    # everyone may do everything, but not this user
    msmq.create_queue(Q, security=SecurityAttributes(allow={"everyone": "rw"}, deny={f"user:{USER}": "rw"}))
    # its group may do everything, but the user may not read: it is left with send
    msmq.create_queue(q2, security=SecurityAttributes(allow={group: "rw"}, deny={f"user:{USER}": "r"}))
    try:
        out = _run_as(user, _PROBE.format(q=Q, folder=_folder()), root, src)
        for line in ("send refused QueueAccessDenied", "receive refused QueueAccessDenied",
                     "peek refused QueueAccessDenied", "file refused"):
            assert line in out, out
        out = _run_as(user, _PROBE.format(q=q2, folder=_folder(q2)) + f"""
with msmq.open({q2!r}, "send") as q:
    q.send(b"still may send")
""", root, src)
        for line in ("send allowed", "receive refused QueueAccessDenied", "peek refused QueueAccessDenied",
                     "file refused"):
            assert line in out, out
        with msmq.open(q2, "receive") as q:
            assert q.receive(timeout=0).body == b"still may send"
    finally:
        msmq.delete_queue(Q)
        msmq.delete_queue(q2)


def test_grants_that_cannot_be_enforced_are_refused_and_leave_nothing() -> None:
    if os.geteuid() != 0:
        pytest.skip("a shared queue store needs root")
    with pytest.raises(W.InvalidParameter, match="READ without WRITE"):
        msmq.create_queue(Q, security=SecurityAttributes(allow={"uid:65534": "r"}))
    with pytest.raises(W.NotSupported, match="deny of group"):
        msmq.create_queue(Q, security=SecurityAttributes(allow={"gid:65534": "rw"}, deny={"gid:65533": "w"}))
    with pytest.raises(W.QueueNotFound):
        msmq.queue_info(Q)


def test_no_posix_acls_means_not_supported_never_wider_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("a shared queue store needs root")
    monkeypatch.setattr(B, "set_access_acl", lambda *a, **k: False)
    with pytest.raises(W.NotSupported, match="no POSIX ACLs"):
        msmq.create_queue(Q, security=SecurityAttributes(allow={"uid:65534": "rw"}))
    with pytest.raises(W.QueueNotFound):
        msmq.queue_info(Q)


def test_a_store_that_is_not_shared_refuses_sharing(winipc_root: Path) -> None:
    (winipc_root / "msmq").mkdir(mode=0o700)  # the user's own store: nobody else gets in
    with pytest.raises(W.NotSupported, match="not shared"):
        msmq.create_queue(Q, security=SecurityAttributes(allow={"uid:65534": "w"}))
    msmq.create_queue(Q)  # owner-only queues still work there
    msmq.delete_queue(Q)


# ------------------------------------------------------------------------ crafted files


def _drop(folder: Path, name: str, data: bytes) -> Path:
    p = folder / "incoming" / name
    p.write_bytes(data)
    return p


def _record(body: bytes = b"ok", **over: object) -> tuple[bytes, bytes]:
    m = M.Message(body=body, label="crafted")
    m.id = M.new_message_id()
    rec = M.to_record(m)
    rec.update(over)
    return msgpack.packb(rec, use_bin_type=True), body


def _with_crc(data: bytes) -> bytes:
    import zlib

    return data + zlib.crc32(data).to_bytes(4, "little")


def _name() -> str:
    return _local._drop_name()


def test_crafted_incoming_files_never_reach_the_queue(
    xuser: tuple[pwd.struct_passwd, Path, Path], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    user, root, src = xuser
    msmq.create_queue(Q, security=SecurityAttributes(allow={f"user:{USER}": "w"}))
    folder = _folder()

    def no_unpickling(*a: object, **k: object) -> None:
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    pickled = pickle.dumps({"evil": True})
    good = I.encode([_record(pickled)], single_message=False)
    with sqlite3.connect(folder / "queue.db") as c:
        (guid,) = c.execute("SELECT value FROM meta WHERE key = 'guid'").fetchone()
    crafted = {
        # the id a message the queue stores next gets (its native ids are only its own)
        "the queue's own id space": I.encode([_record(id="{" + guid + "}\\1")], single_message=False),
        "garbage": os.urandom(300),
        "pickle": pickled,
        "torn": good[:-9],
        "bad crc": good[:-1] + bytes([good[-1] ^ 1]),
        "bad id": I.encode([_record(id="not-an-id")], single_message=False),
        "wrong property type": I.encode([_record(label=123)], single_message=False),
        "bad msgpack body": I.encode([_record(b"\xc1", body_type="msgpack")], single_message=False),
        "huge claim": _with_crc(I.MAGIC + bytes([1, 0, 0, 0]) + (5).to_bytes(4, "little")
                                + (0xFFFFFFF0).to_bytes(4, "little") * 2 + b"\0" * 8),
        "single_message to a plain queue": I.encode([_record()], single_message=True),
    }
    names = {label: _name() for label in crafted}
    inc = folder / "incoming"
    try:
        # as the send-only user: the crafted files, a too-large (sparse) one, a symlink, a FIFO,
        # a folder, a junk name, and one real message through the API
        out = _run_as(user, f"""
import os
from winipc import msmq
inc = {str(inc)!r}
for name, data in {[(names[k], v) for k, v in crafted.items()]!r}:
    with open(os.path.join(inc, name), "wb") as f:
        f.write(data)
with open(os.path.join(inc, {_name()!r}), "wb") as f:
    f.truncate({I.MAX_FILE + 1})
os.symlink("/etc/passwd", os.path.join(inc, {_name()!r}))
os.mkfifo(os.path.join(inc, {_name()!r}))
os.mkdir(os.path.join(inc, {_name()!r}))
open(os.path.join(inc, "junk name"), "wb").close()
with msmq.open({Q!r}, "send") as q:
    print(q.send(b"the real one").id)
""", root, src)
        with caplog.at_level(logging.WARNING, logger="winipc.msmq"), msmq.open(Q, "receive") as q:
            m = q.receive(timeout=5)
            assert (m.body, m.id) == (b"the real one", out[0])
            with pytest.raises(W.IoTimeout):
                q.receive(timeout=0)
            assert q.stat().messages == 0
        assert list(inc.iterdir()) == []
        warned = " ".join(r.getMessage() for r in caplog.records)
        for name in names.values():
            assert name in warned
        # a real drop file whose body is pickle bytes is data, returned as bytes, never loaded
        with open(inc / _name(), "wb") as f:
            f.write(good)
        with msmq.open(Q, "receive") as q:
            assert q.receive(timeout=0).body == pickled
    finally:
        msmq.delete_queue(Q)


def test_decoder_caps_and_refuses_without_raising_anything_else() -> None:
    good = I.encode([_record(), _record(b"x" * 100)], single_message=True)
    batch = I.decode(good)
    assert batch.single_message and [b for _m, b in batch.messages] == [b"ok", b"x" * 100]
    for cut in range(len(good)):
        with pytest.raises(I.IncomingFormatError):
            I.decode(good[:cut])
    for i in range(len(good)):
        flipped = bytearray(good)
        flipped[i] ^= 0x40
        with pytest.raises(I.IncomingFormatError):
            I.decode(bytes(flipped))
    with pytest.raises(I.IncomingFormatError):
        I.decode(b"\0" * (I.MAX_FILE + 1))


# ---------------------------------------------------------------------- crash safety


def _shared_send_only_queue(transactional: bool = False) -> None:
    if os.geteuid() != 0:
        pytest.skip("a shared queue store needs root")
    msmq.create_queue(Q, transactional=transactional, security=SecurityAttributes(allow={"uid:65534": "w"}))


def _drop_sender() -> _local.LocalDropQueue:
    """A send-only handle to Q for this process (as a granted user would get)."""
    ref = msmq.parse(Q)
    folder = _local._queue_dir(ref)
    rec = _local._read_access(ref, folder)
    assert rec is not None
    return _local.LocalDropQueue(ref, msmq.QueueAccess.SEND, folder, rec)


def _in_child_killed_at(patch: str) -> int:
    """Fork; in the child make ``patch`` kill the process, then ingest; returns its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if patch == "after commit":
                _local._unlink_incoming = lambda *a: os._exit(77)  # type: ignore[assignment]
            else:
                real = I.decode
                seen = []

                def decode(data: bytes) -> I.Batch:
                    seen.append(1)
                    if len(seen) == 2:
                        os._exit(77)  # mid-transaction: one file inserted, not committed
                    return real(data)

                I.decode = decode  # type: ignore[assignment]
            q = msmq.open(Q, "peek")
            q.peek(timeout=0)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("crash", ["after commit", "during the transaction"])
def test_a_crash_while_ingesting_loses_and_duplicates_nothing(crash: str) -> None:
    _shared_send_only_queue()
    try:
        with _drop_sender() as s:
            sent = [s.send(b"a%d" % i).id for i in range(3)] + [m.id for m in s.send_many([b"b0", b"b1"])]
        inc = _folder() / "incoming"
        assert len(list(inc.iterdir())) == 4
        assert _in_child_killed_at(crash) == 77
        assert len(list(inc.iterdir())) == 4  # nothing removed before it was committed
        with msmq.open(Q, "receive") as q:
            got = []
            while True:
                try:
                    got.append(q.receive(timeout=0))
                except W.IoTimeout:
                    break
        assert sorted(m.id for m in got) == sorted(sent)
        assert sorted(m.body for m in got) == [b"a0", b"a1", b"a2", b"b0", b"b1"]
        assert list(inc.iterdir()) == []
        assert msmq.integrity_check(Q) == []
    finally:
        msmq.delete_queue(Q)


def test_an_abandoned_temporary_drop_file_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    _shared_send_only_queue()
    try:
        inc = _folder() / "incoming"
        fresh = _drop(_folder(), I.TEMP_PREFIX + _name(), b"being written")
        old = _drop(_folder(), I.TEMP_PREFIX + _name(), b"its sender died")
        os.utime(old, (1, 1))
        with msmq.open(Q, "peek") as q, pytest.raises(W.IoTimeout):
            q.peek(timeout=0)
        assert sorted(inc.iterdir()) == [fresh]  # a sender may still be writing it
        fresh.unlink()
    finally:
        msmq.delete_queue(Q)


def test_quota_is_enforced_when_a_drop_file_is_ingested() -> None:
    if os.geteuid() != 0:
        pytest.skip("a shared queue store needs root")
    msmq.create_queue(Q, quota=10, security=SecurityAttributes(allow={"uid:65534": "w"}))
    try:
        with _drop_sender() as s:
            s.send(b"12345")
            s.send(b"67890abcdef")  # over the quota: discarded when ingested
        with msmq.open(Q, "receive") as q:
            assert q.receive(timeout=0).body == b"12345"
            with pytest.raises(W.IoTimeout):
                q.receive(timeout=0)
        assert list((_folder() / "incoming").iterdir()) == []
    finally:
        msmq.delete_queue(Q)


def test_read_drop_file_refuses_what_is_not_a_plain_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    assert F.read_drop_file(str(tmp_path / "f"), 10).data == b"data"
    assert F.read_drop_file(str(tmp_path / "f"), 3).data is None
    os.link(tmp_path / "f", tmp_path / "g")
    assert "links" in F.read_drop_file(str(tmp_path / "f"), 10).problem
    os.symlink(tmp_path / "g", tmp_path / "s")
    assert F.read_drop_file(str(tmp_path / "s"), 10).data is None
    os.mkfifo(tmp_path / "p")
    assert "regular" in F.read_drop_file(str(tmp_path / "p"), 10).problem
    assert F.read_drop_file(str(tmp_path / "none"), 10).problem == "gone"


def test_deny_binds_the_owner_too() -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    msmq.create_queue(Q, security=SecurityAttributes(deny={f"user:{me}": "r"}))
    try:
        with msmq.open(Q, "send") as q:
            q.send(b"write-only for its owner")
        for access in ("receive", "peek"):
            with pytest.raises(W.QueueAccessDenied, match="MQSEC_"):
                msmq.open(Q, access)
    finally:
        msmq.delete_queue(Q)


def test_an_ingest_pass_is_bounded_and_the_rest_follows(monkeypatch: pytest.MonkeyPatch) -> None:
    _shared_send_only_queue()
    monkeypatch.setattr(_local, "INGEST_BATCH_FILES", 2)
    try:
        with _drop_sender() as s:
            for i in range(5):
                s.send(b"%d" % i, delivery=msmq.Delivery.EXPRESS)
        with msmq.open(Q, "receive") as q:
            assert q.stat().messages == 2  # one pass took two files
            assert sorted(q.receive(timeout=5).body for _ in range(5)) == [b"0", b"1", b"2", b"3", b"4"]
    finally:
        msmq.delete_queue(Q)
