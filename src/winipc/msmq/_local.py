"""The local queue store: one SQLite database (WAL) per queue, no daemon.

Layout (docs/wire/msmq-store.md has the byte-level details)::

    <store>/                          $WINIPC_ROOT/msmq, else /var/tmp/winipc-msmq
      .tx/<pid>-<hex>                 liveness tokens of processes with open transactions
      priv.orders/                    one folder per queue, 0700 (owner only)
        queue.db, -wal, -shm          the SQLite database, 0600
        lock                          flock taken around every write transaction
        sync                          group commit state (GroupSync)
        receivers                     flock: shared per receiving handle, exclusive for DENY_RECEIVE_SHARE
        wait/                         doorbells of blocked receivers
        access                        who may do what (only with ``security=``)
        incoming/                     drop files of send-only users (only when some are granted)

Writers serialize on the ``lock`` flock (a kernel wait, not SQLite's sleeping busy
handler), then ``BEGIN IMMEDIATE``. SQLite runs with ``synchronous=NORMAL``: a commit
reaches the WAL without an fsync, so it survives the crash of any process; a recoverable
send or a transaction commit then waits for :class:`GroupSync` to ``fdatasync`` the WAL,
one sync serving every commit that finished before it started.

Each message row carries a CRC-32 of its properties and body, checked on every read;
SQLite's own corruption errors become :class:`~winipc.errors.CorruptQueueError` too.

Transactions: a send inside a transaction inserts its row as *pending*; a receive marks
its row *locked* by the transaction. Commit of a one-queue transaction is one SQLite
transaction. Over several queues, the first queue enlisted is the coordinator: commit
finalizes the coordinator's rows and records the transaction in its ``txlog`` in one
SQLite transaction (the commit point), then finalizes the other queues, then drops the
record. A transaction whose owner process died (its token's flock is free) is resolved
by whoever next touches one of its rows: rolled forward when the coordinator's txlog has
it, else rolled back.

Shared queues (``security=`` granting other users, MQCreateQueue's security descriptor):
a principal with read and write gets the database through POSIX ACLs on the folder and
its files, plus a default ACL for files made later; the folder itself stays unwritable
to them (nobody but the owner can put a name, e.g. a symlink, in it), so the owner's
process remakes SQLite's ``-wal`` and ``-shm`` when its last connection removed them. A
principal with write only (send) gets no database: it drops one file per send into
``incoming/`` (see :mod:`winipc.msmq._incoming`), which any process with database access
ingests (:func:`_ingest`) before it receives, peeks or counts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import pwd
import re
import secrets
import select
import shutil
import sqlite3
import stat
import threading
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import msgpack

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends import queue_files as F
from winipc._core.security import Access, SecurityAttributes
from winipc.msmq import _express as E
from winipc.msmq import _incoming as I
from winipc.msmq import _message as M
from winipc.msmq._api import (
    SINGLE_MESSAGE,
    Cursor,
    Queue,
    QueueAccess,
    QueueInfo,
    QueueStat,
    ShareMode,
    Transaction,
    TxArg,
    _Single,
    check_queue_properties,
)
from winipc.msmq._names import (
    SUB_DEADLETTER,
    SUB_JOURNAL,
    SUB_MAIN,
    SUB_POISON,
    QueueRef,
)

STORE_VERSION = 2
DEFAULT_STORE = "/var/tmp/winipc-msmq"
SUB_CODES = {SUB_MAIN: 0, SUB_JOURNAL: 1, SUB_DEADLETTER: 2, SUB_POISON: 3}
READY, PENDING, LOCKED = 0, 1, 2
#: While a receiver waits and another transaction holds messages of the queue, it checks
#: this often (seconds) whether that transaction's owner died (its messages come back).
RECOVERY_INTERVAL = 0.5
#: A drop file still under its temporary name after this many seconds was abandoned by a
#: sender that died; the ingesting process removes it.
STALE_TEMP = 3600.0
ACCESS_FILE = "access"
INCOMING = "incoming"
#: The most bytes of an ``access`` record read.
MAX_ACCESS_RECORD = 64 * 1024
_WAL_FILES = ["queue.db-wal", "queue.db-shm"]
#: Files of a shared queue made at creation (grantees cannot make files in its folder).
_SHARED_FILES = ["queue.db", *_WAL_FILES, "lock", "sync", "receivers"]

_log = logging.getLogger("winipc.msmq")

#: The two indexes store version 2 changed (:meth:`_Store._migrate` makes them again).
_ORDER_INDEX = "CREATE INDEX IF NOT EXISTS msg_order ON msg(sub, state, pri DESC, seq, size)"
_ID_INDEX = "CREATE INDEX IF NOT EXISTS msg_id ON msg(msgid) WHERE native = 0"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS msg(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  sub INTEGER NOT NULL,
  state INTEGER NOT NULL,
  tx TEXT,
  txc TEXT,
  pri INTEGER NOT NULL,
  msgid TEXT NOT NULL,
  corr TEXT,
  expires REAL,
  aborts INTEGER NOT NULL DEFAULT 0,
  size INTEGER NOT NULL,
  props BLOB NOT NULL,
  body BLOB NOT NULL,
  crc INTEGER NOT NULL,
  native INTEGER NOT NULL DEFAULT 0
);
{_ORDER_INDEX};
{_ID_INDEX};
CREATE INDEX IF NOT EXISTS msg_corr ON msg(corr) WHERE corr IS NOT NULL;
CREATE INDEX IF NOT EXISTS msg_tx ON msg(tx) WHERE tx IS NOT NULL;
CREATE TABLE IF NOT EXISTS txlog(tx TEXT PRIMARY KEY, participants BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS incoming(name TEXT PRIMARY KEY, at REAL NOT NULL, status INTEGER NOT NULL);
"""

#: Queues with a quota or a journal quota (only those: each counter update is one more page
#: written per send and receive) count their messages and bytes per (sub, state) here.
_COUNTERS = """
CREATE TABLE IF NOT EXISTS counters(
  sub INTEGER NOT NULL, state INTEGER NOT NULL, n INTEGER NOT NULL, bytes INTEGER NOT NULL,
  PRIMARY KEY(sub, state));
CREATE TRIGGER IF NOT EXISTS msg_ins AFTER INSERT ON msg BEGIN
  INSERT INTO counters(sub, state, n, bytes) VALUES (NEW.sub, NEW.state, 1, NEW.size)
  ON CONFLICT(sub, state) DO UPDATE SET n = n + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS msg_del AFTER DELETE ON msg BEGIN
  UPDATE counters SET n = n - 1, bytes = bytes - OLD.size WHERE sub = OLD.sub AND state = OLD.state;
END;
CREATE TRIGGER IF NOT EXISTS msg_upd AFTER UPDATE OF sub, state ON msg BEGIN
  UPDATE counters SET n = n - 1, bytes = bytes - OLD.size WHERE sub = OLD.sub AND state = OLD.state;
  INSERT INTO counters(sub, state, n, bytes) VALUES (NEW.sub, NEW.state, 1, NEW.size)
  ON CONFLICT(sub, state) DO UPDATE SET n = n + 1, bytes = bytes + NEW.size;
END;
"""

_COLS = "seq, sub, state, tx, pri, msgid, corr, expires, aborts, size, props, body, crc"
#: The by-id condition (parameters: the native row the id names or -1, the id, the id): a
#: native id's row by its lookup id, another's through the index of non-native ids; the
#: select reads ``msg`` NOT INDEXED so that it looks the rows up by lookup id rather than
#: scanning the subqueue's order index.
_BY_ID = "AND seq IN (SELECT ? UNION ALL SELECT seq FROM msg WHERE msgid = ? AND native = 0) AND msgid = ?"
_BY_ID_FROM = "msg NOT INDEXED"
#: A message's acknowledge without flags (``is`` tests it without Flag.__and__).
_NO_ACK = M.Ack.NONE
#: check_alive trusts a queue folder's ctime once it is this many seconds old.
ALIVE_SETTLE = 2.0
#: A queue with an express store learns of its deletion from the store's deleted flag; it
#: still checks its folder (as a queue without one does) this often (seconds), in case the
#: deleting process died between renaming the folder and setting the flag.
ALIVE_RECHECK = 0.5
#: A receiver finding no message watches the express store this long (seconds) before it
#: sleeps on its doorbell (see LocalQueue._spin).
EXPRESS_SPIN = 0.0002
#: send() properties _send_fast and _send_fast_sql handle
_FAST_PROPS = frozenset({"delivery", "priority", "label", "correlation_id", "app_specific", "response_queue",
                         "use_dead_letter"})
_EXPRESS = M.Delivery.EXPRESS
_RECOVERABLE = M.Delivery.RECOVERABLE
_NUMBERS = (int, float)
_new_object = object.__new__
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# ---------------------------------------------------------------------------- the store


def _counted(info: QueueInfo) -> bool:
    """Whether a queue keeps counters (:data:`_COUNTERS`): one with a quota or a journal quota."""
    return info.quota is not None or info.journal_quota is not None


#: A store's message id GUID (meta ``guid``), as written by :func:`_new_guid`.
_GUID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")


def _new_guid() -> str:
    return str(uuid.uuid4()).upper()


def store_root() -> str:
    """The verified queue store folder (created when missing).

    ``$WINIPC_ROOT/msmq`` when WINIPC_ROOT is set, else ``/var/tmp/winipc-msmq``: /var/tmp
    survives reboots (FHS), as durable queues must. Created 1777 (sticky) by root, else
    0700 for the user's own queues; verified like the machine-wide root. Root also makes
    the ``.tx`` folder of liveness tokens (1777, sticky), so that users sharing queues can
    all hold transactions there.
    """
    env = os.environ.get("WINIPC_ROOT")
    if env:
        base = os.path.abspath(env)
        B.verify_shared_root(base, create=True)
        path = os.path.join(base, "msmq")
    else:
        path = DEFAULT_STORE
    B.verify_shared_root(path, create=True)
    if B.uid() == 0 and not os.path.isdir(os.path.join(path, ".tx")):
        _tx_folder(path)
    return path


def _tx_folder(root: str) -> str:
    path = os.path.join(root, ".tx")
    B.verify_shared_root(path, create=True)
    return path


def _queue_dir(ref: QueueRef, root: str | None = None) -> str:
    root = store_root() if root is None else root
    if ref.system:
        return os.path.join(root, f"system$.{B.uid()}")
    return os.path.join(root, ref.file_stem())


def _translate_db(exc: Exception, where: str) -> W.WinIPCError:
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text or "corrupt" in text
    ):
        return W.CorruptQueueError(f"queue {where}: {text}")
    if isinstance(exc, sqlite3.OperationalError) and ("readonly" in text or "unable to open" in text):
        return W.QueueAccessDenied(f"queue {where}: {text}")
    return W.MessageStorageFailed(f"queue {where}: {text}")


def _crc(props: bytes, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(props))


# --------------------------------------------------------------------------- sharing

FULL, SEND, NONE = "full", "send", "none"
_RW = Access.READ | Access.WRITE
#: POSIX perms (4 r, 2 w, 1 x) each class of principal gets on each kind of entry.
_PERMS: dict[str, dict[str, int]] = {
    "folder": {FULL: 5, SEND: 1, NONE: 0},  # reach and list; never create or remove names
    "folder_default": {FULL: 6, SEND: 0, NONE: 0},  # files the owner makes later (-wal, -shm)
    "file": {FULL: 6, SEND: 0, NONE: 0},  # the database, lock, sync, receivers
    "access": {FULL: 4, SEND: 4, NONE: 0},  # the access record: who may do what
    "wait": {FULL: 7, SEND: 5, NONE: 0},  # receivers register doorbells; senders ring them
    "incoming": {FULL: 7, SEND: 3, NONE: 0},  # senders create but cannot list; readers ingest
    "incoming_default": {FULL: 4, SEND: 0, NONE: 0},  # drop files: readable by readers only
}


def _class(rights: Access | int) -> str:
    r = Access(int(rights)) & _RW
    if r == _RW:
        return FULL
    if r == Access.WRITE:
        return SEND
    return NONE


@dataclasses.dataclass
class _Sharing:
    """What a queue's ``security=`` comes to on disk: each principal's class (full, send, none).

    Named users are checked first, then groups, then everyone else (POSIX ACL order); a
    ``none`` entry takes a principal out of a wider grant.
    """

    owner: int
    users: dict[int, str]
    groups: dict[int, str]
    everyone: str

    @property
    def incoming(self) -> bool:
        return SEND in self.users.values() or SEND in self.groups.values() or self.everyone == SEND

    def perms(self, kind: str) -> tuple[dict[int, int], dict[int, int], int]:
        table = _PERMS[kind]
        return ({u: table[c] for u, c in self.users.items()},
                {g: table[c] for g, c in self.groups.items()}, table[self.everyone])


def _groups_of_user(user: int) -> frozenset[int]:
    try:
        gid = pwd.getpwuid(user).pw_gid
    except KeyError:
        return frozenset()
    return B.groups_of(user, gid)


def _plan_sharing(sec: SecurityAttributes, owner: int) -> _Sharing:
    """The on-disk form of ``sec`` for a queue of ``owner`` (MQCreateQueue's descriptor).

    Rights: WRITE alone is send (MQSEC_WRITE_MESSAGE); READ with WRITE is send, receive and
    peek (MQSEC_RECEIVE_MESSAGE, MQSEC_PEEK_MESSAGE); CONNECT and QUERY add nothing. Deny
    entries win: they are folded into each principal's entry.

    Raises:
        InvalidParameter: an allow entry grants READ without WRITE (peek or receive
            without send): whoever may read the SQLite file must be able to write it.
        NotSupported: a denied group must be kept out of another group's (or
            everyone's) grant, which POSIX ACLs cannot express.
    """
    allow_u: dict[int, Access] = {}
    allow_g: dict[int, Access] = {}
    deny_u: dict[int, Access] = {}
    deny_g: dict[int, Access] = {}
    every = deny_every = Access(0)
    for ace in sec.allow:
        if ace.rights & Access.READ and not ace.rights & Access.WRITE:
            raise W.InvalidParameter(
                f"security: {ace.kind}:{ace.ident} is allowed READ without WRITE (peek or receive "
                "without send); a local queue cannot enforce that: whoever may read its SQLite "
                "file must be able to write it. Grant 'rw' (send, receive, peek) or 'w' (send)")
        if ace.kind == "uid":
            allow_u[ace.ident] = allow_u.get(ace.ident, Access(0)) | ace.rights
        elif ace.kind == "gid":
            allow_g[ace.ident] = allow_g.get(ace.ident, Access(0)) | ace.rights
        else:
            every |= ace.rights
    for ace in sec.deny:
        if ace.kind == "uid":
            deny_u[ace.ident] = deny_u.get(ace.ident, Access(0)) | ace.rights
        elif ace.kind == "gid":
            deny_g[ace.ident] = deny_g.get(ace.ident, Access(0)) | ace.rights
        else:
            deny_every |= ace.rights
    everyone = every & ~deny_every
    users: dict[int, str] = {}
    for user in (set(allow_u) | set(deny_u)) - {owner}:
        gids = _groups_of_user(user)
        would = allow_u.get(user, Access(0)) | every
        denied = deny_u.get(user, Access(0)) | deny_every
        for g in gids:
            would |= allow_g.get(g, Access(0))
            denied |= deny_g.get(g, Access(0))
        users[user] = _class(would & ~denied)
    groups: dict[int, Access] = {}
    for g in set(allow_g) | set(deny_g):
        groups[g] = (allow_g.get(g, Access(0)) | every) & ~(deny_g.get(g, Access(0)) | deny_every)
    owner_gid = os.getgid()
    for g, denied in deny_g.items():
        others = [(f"group {h}", r) for h, r in groups.items() if h != g]
        if g != owner_gid:
            others.append(("everyone (the owner's group too)", everyone))
        for who, r in others:
            if _class(r) != NONE and r & denied & _RW:
                raise W.NotSupported(
                    f"security: deny of group {g} cannot be enforced against the grant to {who}: "
                    "a member of both would get the grant (POSIX ACLs have no deny entries). "
                    "Deny users instead, or grant only to users and to that group")
    return _Sharing(owner, users, {g: _class(r) for g, r in groups.items()}, _class(everyone))


def _check_shareable_store(root: str) -> None:
    st = os.lstat(root)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0 or not mode & stat.S_ISVTX or not mode & 0o001:
        raise W.NotSupported(
            f"the queue store {root} (owner uid {st.st_uid}, mode {oct(mode)}) is not shared: other "
            f"users cannot reach a queue in it. Sharing queues needs a store made by root with "
            f"mode 1777 (as root: mkdir -m 1777 {root})")


def _acl(path: str, sharing: _Sharing, kind: str, *, directory: bool = False,
         default: str | None = None, default_users: dict[int, int] | None = None) -> None:
    """Set ``path``'s access ACL (and default ACL) for ``sharing``; NotSupported without ACLs."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0))
    try:
        users, groups, other = sharing.perms(kind)
        ok = B.set_access_acl(fd, users, groups, owner=7 if directory else 6, group=other, other=other)
        if ok and default is not None:
            users, groups, other = sharing.perms(default)
            users.update(default_users or {})
            ok = B.set_default_acl(fd, users, groups, owner=6, group=other, other=other)
    finally:
        os.close(fd)
    if not ok:
        raise W.NotSupported(
            f"queue store {os.path.dirname(os.path.dirname(path))}: its file system has no POSIX "
            "ACLs, so a queue cannot be opened to other users there (it is never widened to "
            "everyone instead)")


def _apply_sharing(folder: str, sharing: _Sharing) -> None:
    """Give a queue folder being created the modes and ACLs of ``sharing`` (see _PERMS)."""
    for name in _SHARED_FILES:
        os.chmod(os.path.join(folder, name), 0o600)
    os.chmod(os.path.join(folder, ACCESS_FILE), 0o600)
    os.chmod(os.path.join(folder, "wait"), 0o1700)  # sticky: nobody removes another's doorbell
    for name in _SHARED_FILES:
        _acl(os.path.join(folder, name), sharing, "file")
    _acl(os.path.join(folder, ACCESS_FILE), sharing, "access")
    _acl(os.path.join(folder, "wait"), sharing, "wait", directory=True)
    if sharing.incoming:
        inc = os.path.join(folder, INCOMING)
        os.chmod(inc, 0o700)  # not sticky: readers other than the owner remove ingested files
        readers = {sharing.owner: 4}
        _acl(inc, sharing, "incoming", directory=True, default="incoming_default", default_users=readers)
    _acl(folder, sharing, "folder", directory=True, default="folder_default")


@dataclasses.dataclass
class _AccessRecord:
    """A queue's ``access`` file: its owner, properties and security (readable by grantees)."""

    owner: int
    info: QueueInfo
    security: SecurityAttributes
    incoming: bool

    def encode(self) -> bytes:
        blob: bytes = msgpack.packb({
            "version": 1, "owner": self.owner, "info": dataclasses.asdict(self.info),
            "security": self.security.to_record(), "incoming": self.incoming,
        }, use_bin_type=True)
        return blob + zlib.crc32(blob).to_bytes(4, "little")

    @classmethod
    def decode(cls, data: bytes, where: str) -> _AccessRecord:
        bad = W.CorruptQueueError(f"queue {where}: its access record is damaged")
        if len(data) < 5 or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
            raise bad
        try:
            rec = msgpack.unpackb(data[:-4], raw=False)
            fields = {f.name for f in dataclasses.fields(QueueInfo)}
            info = QueueInfo(**{k: v for k, v in rec["info"].items() if k in fields})
            return cls(int(rec["owner"]), info, SecurityAttributes.from_record(rec["security"]),
                       bool(rec["incoming"]))
        except (W.WinIPCError, KeyError, TypeError, ValueError, AttributeError):
            raise bad from None


def _read_access(ref: QueueRef, folder: str) -> _AccessRecord | None:
    """The access record of the queue in ``folder``, None when it has none (owner-only).

    Raises QueueNotFound, QueueAccessDenied (the folder is another user's only).
    """
    try:
        fd = os.open(os.path.join(folder, ACCESS_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if not os.path.lexists(folder):
            raise W.QueueNotFound(f"queue {ref.main()} does not exist") from None
        return None
    except PermissionError:
        raise W.QueueAccessDenied(f"queue {ref.main()}: access denied (the queue is its owner's only)") from None
    except OSError as exc:
        if not os.path.lexists(folder):
            raise W.QueueNotFound(f"queue {ref.main()} does not exist") from None
        raise W.QueueAccessDenied(f"queue {ref.main()}: {exc.strerror}") from None
    try:
        data = os.read(fd, MAX_ACCESS_RECORD + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_ACCESS_RECORD:
        raise W.CorruptQueueError(f"queue {ref.main()}: its access record is too large")
    return _AccessRecord.decode(data, str(ref.main()))


_RIGHTS = (
    (QueueAccess.SEND, Access.WRITE, "send (MQSEC_WRITE_MESSAGE)"),
    (QueueAccess.RECEIVE, _RW, "receive (MQSEC_RECEIVE_MESSAGE)"),
    (QueueAccess.PEEK, Access.READ, "peek (MQSEC_PEEK_MESSAGE)"),
)


def _open_mode(ref: QueueRef, folder: str, rec: _AccessRecord, access: QueueAccess) -> str:
    """``"db"`` (the database) or ``"drop"`` (send-only, through incoming/) for this opener.

    Raises QueueAccessDenied, naming the right, when ``access`` asks for a right the
    queue's security does not grant us (deny entries win, also over the owner).
    """
    me = B.uid()
    owner = me if me == 0 else rec.owner  # root is refused only by deny entries
    for flag, needed, name in _RIGHTS:
        if access & flag and not rec.security.check(owner, me, os.getgid(), needed):
            raise W.QueueAccessDenied(f"queue {ref}: access denied: uid {me} does not have the {name} right")
    if os.access(os.path.join(folder, "queue.db"), os.R_OK | os.W_OK):
        return "db"
    if access == QueueAccess.SEND and rec.incoming:
        return "drop"
    raise W.QueueAccessDenied(f"queue {ref}: access denied (its files refuse uid {me})")


class _Row(NamedTuple):
    """One ``msg`` row, in :data:`_COLS` order (a tuple: made for every message read)."""

    seq: int
    sub: int
    state: int
    tx: str | None
    pri: int
    msgid: str
    corr: str | None
    expires: float | None
    aborts: int
    size: int
    props: bytes
    body: bytes
    crc: int


class _WriteTx:
    """:meth:`_Store.write`: a class, not a generator, as it runs on every send and receive."""

    __slots__ = ("conn", "store")

    def __init__(self, store: _Store) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        store = self.store
        conn, lock = store.conn, store.write_lock
        assert conn is not None and lock is not None
        store._lock.acquire()
        try:
            lock.acquire()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except BaseException as exc:
                lock.release()
                if isinstance(exc, sqlite3.Error):
                    raise _translate_db(exc, str(store.ref)) from None
                raise
        except BaseException:
            store._lock.release()
            raise
        self.conn = conn
        return conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        store, conn = self.store, self.conn
        try:
            try:
                if conn.in_transaction:
                    conn.execute("COMMIT" if kind is None else "ROLLBACK")
            except sqlite3.Error as err:
                raise _translate_db(err, str(store.ref)) from None
            if isinstance(exc, sqlite3.Error):
                raise _translate_db(exc, str(store.ref)) from None
        finally:
            assert store.write_lock is not None
            store.write_lock.release()
            store._lock.release()


class _ReadTx:
    """:meth:`_Store.read`: the connection under the store's thread lock."""

    __slots__ = ("store",)

    def __init__(self, store: _Store) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        store = self.store
        store._lock.acquire()
        assert store.conn is not None
        return store.conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.store._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise _translate_db(exc, str(self.store.ref)) from None


class _Store:
    """One open connection to one queue's folder (a handle, a transaction or a tool owns it)."""

    def __init__(self, ref: QueueRef, folder: str, *, create: QueueInfo | None = None) -> None:
        self.ref = ref.main()
        self.folder = folder
        self.db_path = os.path.join(folder, "queue.db")
        self.wait_dir = os.path.join(folder, "wait")
        self._lock = threading.RLock()
        self.conn: sqlite3.Connection | None = None
        self.write_lock: F.FileLock | None = None
        self.sync: F.GroupSync | None = None
        self.receivers: F.FileLock | None = None
        #: the queue's express messages in memory (winipc._native._xstore), where used
        self.express: Any = None
        #: (gen, monotonic deadline) while SQLite is known to hold no ready main message
        self.sql_empty: tuple[int, float] | None = None
        #: the folder, open (O_PATH) once check_alive verified it by path (see there), and its ctime then
        self._folder_fd = -1
        self._alive_ctime = 0
        #: with an express store: the folder is checked again (check_alive) from this monotonic time on
        self._recheck_at = 0.0
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            raise W.QueueNotFound(f"queue {self.ref} does not exist") from None
        except PermissionError:
            raise W.QueueAccessDenied(f"queue {self.ref}: no access to its folder") from None
        self.ino = st.st_ino
        self.owner = (st.st_uid, st.st_gid)
        #: native message ids: "{GUID}\\" and the lookup id (:meth:`native_id`); set by _read_info
        self.id_prefix = ""
        #: shared (``security=`` granted others): the folder's ACL mask shows in its group bits
        self.shared = create is None and bool(stat.S_IMODE(st.st_mode) & 0o077)
        #: we may make files in the folder (its owner, or root)
        self.maker = B.uid() in (0, st.st_uid)
        self.incoming: str | None = None
        #: ((inode, mtime ns, ctime ns), monotonic deadline) of ``incoming/`` seen empty
        self.incoming_idle: tuple[tuple[int, int, int], float] | None = None
        if self.shared:
            inc = os.path.join(folder, INCOMING)
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(os.lstat(inc).st_mode):
                    self.incoming = inc
            if not os.access(folder, os.X_OK) or not os.access(self.db_path, os.R_OK | os.W_OK):
                raise W.QueueAccessDenied(f"queue {self.ref}: access denied (not granted to uid {B.uid()})")
            for name in ("queue.db", *_WAL_FILES):
                with contextlib.suppress(FileNotFoundError):
                    if not stat.S_ISREG(os.lstat(os.path.join(folder, name)).st_mode):
                        raise W.QueueAccessDenied(f"queue {self.ref}: {name} is not a regular file; refused")
        elif not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            raise W.QueueAccessDenied(f"queue {self.ref}: access denied (the queue is its owner's only)")
        try:
            mode = 0o660 if self.shared else 0o600  # a shared queue's ACL mask is the group bits
            self.write_lock = F.FileLock(os.path.join(folder, "lock"), mode=mode)
            self.sync = F.GroupSync(os.path.join(folder, "sync"), self.db_path + "-wal", folder, mode=mode)
            if self.shared:
                # the owner's last close removes -wal and -shm, then remakes them, under the
                # lock: grantees cannot make them (the folder is not theirs to write)
                with self.write_lock:
                    if self.maker:
                        F.ensure_files(folder, _WAL_FILES, 0o660, self.owner)
                    elif not all(os.path.lexists(os.path.join(folder, n)) for n in _WAL_FILES):
                        raise W.MessageStorageFailed(
                            f"queue {self.ref}: its -wal/-shm files are missing (its owner's process "
                            "died while closing it); the owner must open the queue once")
                    conn = self._connect(create)
            else:
                conn = self._connect(create)
            if create is not None:
                conn.executescript(_SCHEMA)
                if _counted(create):
                    conn.executescript(_COUNTERS)
                self._init_meta(create)
            self.info = self._read_info()
            if (create is None and E.available() and not self.shared and st.st_uid == B.uid()
                    and not self.info.transactional and not self.ref.system):
                # (not while creating: a creation that fails must leave no /dev/shm file)
                try:
                    self.express = E.open_store(folder, st.st_uid, st.st_ino)
                except W.QueueNotFound:
                    raise W.QueueNotFound(f"queue {self.ref} does not exist") from None
        except W.WinIPCError:
            self.close()
            raise
        except sqlite3.Error as exc:
            self.close()
            if "unable to open" in str(exc) and not os.path.exists(self.db_path):
                raise W.QueueNotFound(f"queue {self.ref} does not exist") from None
            raise _translate_db(exc, str(self.ref)) from None
        except OSError as exc:
            self.close()
            raise W.QueueAccessDenied(f"queue {self.ref}: {exc.strerror or exc}") from None

    # -- plumbing

    def _connect(self, create: QueueInfo | None) -> sqlite3.Connection:
        mode = "rwc" if create is not None else "rw"
        conn = sqlite3.connect(
            f"file:{urllib.parse.quote(self.db_path)}?mode={mode}", uri=True, timeout=30.0,
            isolation_level=None, check_same_thread=False, cached_statements=64,
        )
        self.conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _init_meta(self, info: QueueInfo) -> None:
        assert self.conn is not None
        with self.write():
            blob = msgpack.packb(dataclasses.asdict(info), use_bin_type=True)
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (STORE_VERSION,))
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('guid', ?)", (_new_guid(),))
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('info', ?)", (blob,))
            self.conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('info_crc', ?)", (zlib.crc32(blob),)
            )

    def _read_info(self) -> QueueInfo:
        assert self.conn is not None
        try:
            rows = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise W.QueueNotFound(f"queue {self.ref} is being created or was not created completely") from None
            raise
        blob = rows.get("info")
        if not isinstance(blob, bytes) or rows.get("info_crc") != zlib.crc32(blob):
            raise W.CorruptQueueError(f"queue {self.ref}: its properties record fails its checksum")
        version = rows.get("version")
        if version not in (1, STORE_VERSION):
            raise W.CorruptQueueError(f"queue {self.ref}: store version {version!r}, expected {STORE_VERSION}")
        rec = msgpack.unpackb(blob, raw=False)
        fields = {f.name for f in dataclasses.fields(QueueInfo)}
        info = QueueInfo(**{k: v for k, v in rec.items() if k in fields})
        guid = self._migrate(info) if version == 1 else rows.get("guid")
        if not isinstance(guid, str) or not _GUID.fullmatch(guid):
            raise W.CorruptQueueError(f"queue {self.ref}: its message id GUID is missing or malformed")
        self.id_prefix = "{" + guid + "}\\"
        return info

    def _migrate(self, info: QueueInfo) -> str | None:
        """Store version 1 to 2, in one transaction (the first opener of this version does it;
        a process of an older version with the queue open then fails on its next use of the
        counters or its next open). Returns the new ``guid``."""
        assert self.conn is not None
        with self.write() as conn:
            if conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == (1,):
                _log.info("queue %s: store version 1 migrated to %d", self.ref, STORE_VERSION)
                conn.execute("ALTER TABLE msg ADD COLUMN native INTEGER NOT NULL DEFAULT 0")
                conn.execute("DROP INDEX msg_order")
                conn.execute("DROP INDEX msg_id")
                if not _counted(info):
                    for name in ("msg_ins", "msg_del", "msg_upd"):
                        conn.execute(f"DROP TRIGGER {name}")
                    conn.execute("DROP TABLE counters")
                conn.execute(_ORDER_INDEX)
                conn.execute(_ID_INDEX)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('guid', ?)", (_new_guid(),))
                conn.execute("UPDATE meta SET value = ? WHERE key = 'version'", (STORE_VERSION,))
            row = conn.execute("SELECT value FROM meta WHERE key = 'guid'").fetchone()
        return None if row is None or not isinstance(row[0], str) else row[0]

    def check_alive(self) -> None:
        """Raise QueueDeleted when the queue's folder is gone or is another queue's.

        delete_queue renames the folder before removing it, and a rename changes the
        folder's ctime. So while an ``fstat`` of the folder (a descriptor kept open) shows
        the ctime last verified by path, and that ctime was older than ALIVE_SETTLE seconds
        when verified (no change can then share it, whatever the timestamp granularity),
        nothing happened to it: no path lookup. Anything else is checked by path.

        With an express store, MQDeleteQueue sets the store's ``deleted`` flag (whatever
        process deletes the queue, after renaming the folder, before unlinking the store),
        so one load of the flag stands in for the folder check, which runs only every
        ALIVE_RECHECK seconds (a deleter that died between the rename and the flag).
        """
        xs = self.express
        if xs is not None:
            if xs.deleted:
                raise W.QueueDeleted(f"queue {self.ref} was deleted")
            now = time.monotonic()
            if now < self._recheck_at:
                return
            self._check_folder()
            self._recheck_at = now + ALIVE_RECHECK
            return
        self._check_folder()

    def _check_folder(self) -> None:
        fd = self._folder_fd
        if fd >= 0:
            try:
                st = os.fstat(fd)
                if st.st_ctime_ns == self._alive_ctime and st.st_nlink:
                    return
            except OSError:
                pass
        try:
            st = os.lstat(self.folder)
        except FileNotFoundError:
            raise W.QueueDeleted(f"queue {self.ref} was deleted") from None
        if st.st_ino != self.ino:
            raise W.QueueDeleted(f"queue {self.ref} was deleted (and created again)")
        if st.st_ctime_ns < time.time_ns() - int(ALIVE_SETTLE * 1e9):
            self._remember_alive(st.st_ctime_ns)

    def _remember_alive(self, ctime_ns: int) -> None:
        with self._lock:
            if self.conn is None:
                return  # closed
            if self._folder_fd < 0:
                try:
                    fd = os.open(self.folder, _DIR_FLAGS)
                except OSError:
                    return
                try:
                    st = os.fstat(fd)
                except OSError:
                    st = None
                if st is None or st.st_ino != self.ino or st.st_ctime_ns != ctime_ns:
                    os.close(fd)  # replaced or changed since the lstat: checked by path next time
                    return
                self._folder_fd = fd
            self._alive_ctime = ctime_ns

    def write(self) -> _WriteTx:
        """A write transaction under the queue's flock (commits on success, rolls back on
        an exception); a context manager giving the connection. SQLite errors become
        WinIPCError (:func:`_translate_db`)."""
        assert self.conn is not None and self.write_lock is not None
        return _WriteTx(self)

    def read(self) -> _ReadTx:
        """The connection, under the store's thread lock, for reads (a context manager;
        SQLite errors become WinIPCError)."""
        assert self.conn is not None
        return _ReadTx(self)

    def durable(self, committed_ns: int) -> None:
        assert self.sync is not None
        self.sync.durable(committed_ns)

    def ring(self) -> None:
        if self.express is not None:
            self.express.bump_gen()  # after the commit: receivers look at SQLite again
        F.ring(self.wait_dir)

    def close(self) -> None:
        with self._lock:
            if self.conn is not None:
                if self.shared and self.maker and self.write_lock is not None:
                    with self.write_lock:  # see __init__: remake what SQLite's last close removed
                        with contextlib.suppress(sqlite3.Error):
                            self.conn.close()
                        with contextlib.suppress(W.WinIPCError):
                            F.ensure_files(self.folder, _WAL_FILES, 0o660, self.owner)
                else:
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.close()
                self.conn = None
            if self.express is not None:
                self.express.close()
                self.express = None
            for res in (self.write_lock, self.sync, self.receivers):
                if res is not None:
                    res.close()
            self.write_lock = self.sync = self.receivers = None
            if self._folder_fd >= 0:
                os.close(self._folder_fd)
                self._folder_fd = -1

    # -- rows

    @staticmethod
    def row(t: tuple[Any, ...]) -> _Row:
        return _Row(*t)

    def to_message(self, r: _Row) -> M.Message:
        if _crc(r.props, r.body) != r.crc:
            raise W.CorruptQueueError(
                f"queue {self.ref}: message {r.msgid!r} (lookup id {r.seq}) fails its checksum"
            )
        try:
            rec = msgpack.unpackb(r.props, raw=False)
        except Exception as exc:
            raise W.CorruptQueueError(f"queue {self.ref}: message {r.seq} properties: {exc}") from None
        body_type = rec.get("body_type", M.BODY_BYTES) if isinstance(rec, dict) else M.BODY_BYTES
        m = M.from_record(rec, M.decode_body(r.body, body_type))
        if m.id != r.msgid or m.priority != r.pri:
            raise W.CorruptQueueError(f"queue {self.ref}: message {r.seq}: row and record disagree")
        m.lookup_id = r.seq
        m.abort_count = r.aborts
        return m

    def insert(self, conn: sqlite3.Connection, m: M.Message, body: bytes, *, sub: int = 0,
               state: int = READY, tx: str | None = None, txc: str | None = None,
               aborts: int = 0, seq: int | None = None) -> int:
        """Insert ``m``; returns its lookup id. With ``seq`` (from :meth:`next_seq`, in the same
        transaction) the row is native: ``m.id`` must be :meth:`native_id` of it, and the
        message id index leaves it out (a by-id look finds it by ``seq``)."""
        props = msgpack.packb(M.to_record(m), use_bin_type=True)
        expires = m.expires_at
        cur = conn.execute(
            "INSERT INTO msg(seq, sub, state, tx, txc, pri, msgid, corr, expires, aborts, size, props, body, crc,"
            " native) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (seq, sub, state, tx, txc, m.priority, m.id, m.correlation_id, expires, aborts, len(body),
             props, body, _crc(props, body), 0 if seq is None else 1),
        )
        return int(cur.lastrowid or 0)

    @staticmethod
    def next_seq(conn: sqlite3.Connection) -> int:
        """The lookup id the next row inserted gets (in a write transaction; AUTOINCREMENT's
        counter, so never one a deleted row had)."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'msg'").fetchone()
        return (int(row[0]) if row else 0) + 1

    def native_id(self, seq: int) -> str:
        """The message id of the native row ``seq``: ``{GUID}\\seq``, the GUID the store's own."""
        return f"{self.id_prefix}{seq}"

    def native_seq(self, msgid: str) -> int:
        """The row a native message id names, or -1 (see :meth:`insert`)."""
        prefix = self.id_prefix
        if msgid.startswith(prefix):
            tail = msgid[len(prefix):]
            if 0 < len(tail) < 19 and tail.isascii() and tail.isdigit():
                return int(tail)
        return -1

    @property
    def counted(self) -> bool:
        """Whether the store keeps the ``counters`` table (see :data:`_COUNTERS`)."""
        return _counted(self.info)

    def counters(self, conn: sqlite3.Connection) -> dict[tuple[int, int], tuple[int, int]]:
        """(messages, bytes) per (sub, state): the counters table, else a scan of the order index."""
        q = ("SELECT sub, state, n, bytes FROM counters" if self.counted
             else "SELECT sub, state, COUNT(*), SUM(size) FROM msg GROUP BY sub, state")
        return {(s, st): (n, b) for s, st, n, b in conn.execute(q)}


# ----------------------------------------------------------------------- queue management


def create_queue(ref: QueueRef, *, transactional: bool = False, label: str = "", quota: int | None = None,
                 journal: bool = False, journal_quota: int | None = None, max_aborts: int = 5,
                 security: SecurityAttributes | None = None) -> QueueInfo:
    """MQCreateQueue for a local queue: its folder, database and, with ``security``, ACLs.

    ``security`` (the security descriptor) may grant other users and groups ``"w"``
    (send: MQSEC_WRITE_MESSAGE, through the queue's ``incoming/`` folder) or ``"rw"``
    (send, receive and peek: the database itself); deny entries win. Without it the
    queue is its owner's only (0700 folder, 0600 files).

    Raises QueueExists, IllegalQueuePathname, IllegalPropertyValue; InvalidParameter for
    read without write; NotSupported when the store is not shared (not root's 1777), the
    file system has no POSIX ACLs, or a group deny cannot be enforced.
    """
    check_queue_properties(ref, label, quota, journal_quota, max_aborts)
    if ref.system:
        raise W.QueueExists("the system dead-letter queue exists already (it is created on first use)")
    sharing = None
    if security is not None and security.opens_to_others:
        sharing = _plan_sharing(security, B.uid())
        _check_shareable_store(store_root())
    return _create(ref, QueueInfo(
        path=ref.path, format_name=ref.main().format_name, label=label, transactional=bool(transactional),
        quota=quota, journal=bool(journal), journal_quota=journal_quota, max_aborts=max_aborts,
        created=time.time(), owner_uid=B.uid(), backend="local",
    ), security if security is not None and (security.allow or security.deny) else None, sharing)


def _create(ref: QueueRef, info: QueueInfo, security: SecurityAttributes | None = None,
            sharing: _Sharing | None = None) -> QueueInfo:
    root = store_root()
    final = _queue_dir(ref, root)
    if os.path.lexists(final):
        raise W.QueueExists(f"queue {ref.path} exists already")
    tmp = os.path.join(root, f".new.{ref.file_stem()}.{os.getpid()}.{time.monotonic_ns()}")
    os.mkdir(tmp, 0o700)
    try:
        os.chmod(tmp, 0o700)
        os.mkdir(os.path.join(tmp, "wait"), 0o700)
        if sharing is not None and sharing.incoming:
            os.mkdir(os.path.join(tmp, INCOMING), 0o700)
        store = _Store(ref, tmp, create=info)
        store.close()
        if security is not None:
            rec = _AccessRecord(info.owner_uid, info, security, sharing is not None and sharing.incoming)
            with open(os.path.join(tmp, ACCESS_FILE), "xb") as f:
                f.write(rec.encode())
        for name in os.listdir(tmp):
            p = os.path.join(tmp, name)
            if os.path.isfile(p):
                os.chmod(p, 0o600)
        if sharing is not None:
            F.ensure_files(tmp, _SHARED_FILES, 0o600, None)
            _apply_sharing(tmp, sharing)
        try:
            os.rename(tmp, final)  # atomic; fails when another creator's folder is there
        except OSError:
            raise W.QueueExists(f"queue {ref.path} exists already") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _open_store(ref: QueueRef, root: str | None = None) -> _Store:
    folder = _queue_dir(ref, root)
    if ref.system and not os.path.lexists(folder):
        with contextlib.suppress(W.QueueExists):
            _create(ref, QueueInfo(
                path=".\\system$;deadletter", format_name="DIRECT=OS:.\\system$;deadletter",
                label="dead-letter queue", created=time.time(), owner_uid=B.uid(), backend="local",
            ))
    return _Store(ref, folder)


def delete_queue(ref: QueueRef) -> None:
    """MQDeleteQueue: only the queue's owner (or root) may; others get QueueAccessDenied.

    (MQSEC_DELETE_QUEUE cannot be granted: the store's sticky bit lets only the owner
    remove the folder.)
    """
    if ref.subqueue and not ref.system:
        raise W.MsmqError(f"{ref}: a subqueue is deleted with its queue",
                          winerror=W.MQ_ERROR_UNSUPPORTED_FORMATNAME_OPERATION)
    root = store_root()
    folder = _queue_dir(ref, root)
    try:
        owner = os.lstat(folder).st_uid
    except FileNotFoundError:
        raise W.QueueNotFound(f"queue {ref} does not exist") from None
    if B.uid() not in (0, owner):
        raise W.QueueAccessDenied(f"queue {ref}: access denied: only its owner (uid {owner}) deletes it")
    nacks: list[M.Message] = []
    dead = os.path.join(root, f".dead.{os.path.basename(folder)}.{os.getpid()}.{time.monotonic_ns()}")
    try:
        store = _Store(ref, folder)  # QueueNotFound / QueueAccessDenied
    except W.CorruptQueueError:
        store = None  # a damaged queue can still be deleted (its owner checked below)
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            raise W.QueueAccessDenied(f"queue {ref}: access denied") from None
    if store is None:
        lock = F.FileLock(os.path.join(folder, "lock"))
        try:
            with lock:
                os.rename(folder, dead)
        finally:
            lock.close()
    else:
        try:
            assert store.write_lock is not None
            with store.write_lock:
                try:
                    with store.read() as conn:
                        rows = conn.execute(f"SELECT {_COLS} FROM msg WHERE sub = 0").fetchall()
                    for t in rows:
                        with contextlib.suppress(W.CorruptQueueError):
                            m = store.to_message(store.row(t))
                            if m.acknowledge & M.Ack.NEGATIVE_RECEIVE and m.admin_queue:
                                nacks.append(m)
                except W.CorruptQueueError:
                    pass
                if store.express is not None:
                    for found in _express_all(store):
                        with contextlib.suppress(W.CorruptQueueError):
                            m = E.decode(found, str(ref))
                            if m.acknowledge & M.Ack.NEGATIVE_RECEIVE and m.admin_queue:
                                nacks.append(m)
                os.rename(folder, dead)
        finally:
            store.close()
    E.remove_store(dead)
    F.ring(os.path.join(dead, "wait"))
    shutil.rmtree(dead, ignore_errors=True)
    sweep_tokens(_tx_folder(root))
    for m in nacks:
        _post_ack(m, M.MessageClass.NACK_Q_DELETED)


def _express_all(store: _Store) -> Iterator[tuple[Any, ...]]:
    """Every message of the queue's express store in order (peeked, not taken)."""
    xs = store.express
    found = xs.find(E.FIRST, b"", 0, 0, E.PEEK)
    while found is not None:
        yield found
        found = xs.find(E.AFTER, b"", found[1], found[0], E.PEEK)


def purge_queue(ref: QueueRef) -> int:
    q = open_queue(ref, QueueAccess.RECEIVE, ShareMode.DENY_NONE)
    try:
        return q.purge()
    finally:
        q.close()


def queue_info(ref: QueueRef) -> QueueInfo:
    """MQGetQueueProperties: also for a send-only grantee (from the queue's access record)."""
    try:
        store = _open_store(ref)
    except W.QueueAccessDenied:
        rec = None if ref.system else _read_access(ref, _queue_dir(ref))
        if rec is None:
            raise
        return rec.info
    try:
        return store.info
    finally:
        store.close()


def list_queues() -> list[QueueInfo]:
    root = store_root()
    out = []
    for name in sorted(os.listdir(root)):
        if name.startswith("."):
            continue
        folder = os.path.join(root, name)
        try:
            ref = QueueRef(host=".", private=True, name=name)
            store = _Store(ref, folder)
        except W.WinIPCError:
            continue
        try:
            out.append(store.info)
        finally:
            store.close()
    return out


def integrity_check(ref: QueueRef) -> list[str]:
    problems: list[str] = []
    try:
        store = _open_store(ref.main())
    except W.CorruptQueueError as exc:
        return [str(exc.strerror)]
    except sqlite3.DatabaseError as exc:
        return [f"queue {ref}: {exc}"]
    try:
        with store.read() as conn:
            try:
                conn.execute("BEGIN")  # one snapshot for every check below
                try:
                    for (line,) in conn.execute("PRAGMA integrity_check"):
                        if line != "ok":
                            problems.append(f"sqlite: {line}")
                    for t in conn.execute(f"SELECT {_COLS} FROM msg"):
                        r = store.row(t)
                        try:
                            store.to_message(r)
                        except W.CorruptQueueError as exc:
                            problems.append(str(exc.strerror))
                    for seq, msgid, native in conn.execute("SELECT seq, msgid, native FROM msg WHERE native <> 0"):
                        if native != 1 or msgid != store.native_id(seq):
                            problems.append(f"queue {ref}: row {seq} is marked native ({native!r}) but its message"
                                            f" id is {msgid!r}")
                    counted: dict[tuple[int, int], int] = {}
                    actual: dict[tuple[int, int], int] = {}
                    if store.counted:
                        counted = {(s, st): n for s, st, n, _b in conn.execute("SELECT sub, state, n, bytes FROM counters")}
                        actual = {(s, st): n for s, st, n in conn.execute("SELECT sub, state, COUNT(*) FROM msg GROUP BY sub, state")}
                finally:
                    conn.execute("COMMIT")
                for k in set(counted) | set(actual):
                    if counted.get(k, 0) != actual.get(k, 0):
                        problems.append(f"counters: subqueue {k[0]} state {k[1]} says {counted.get(k, 0)}, holds {actual.get(k, 0)}")
            except sqlite3.DatabaseError as exc:
                problems.append(f"sqlite: {exc}")
        if store.express is not None:
            problems += [f"express store: {p}" for p in store.express.check()]
            try:
                for found in _express_all(store):
                    try:
                        E.decode(found, f"queue {ref}")
                    except W.CorruptQueueError as exc:
                        problems.append(str(exc.strerror))
            except ValueError as exc:
                problems.append(f"express store: {exc}")
    except W.CorruptQueueError as exc:
        problems.append(str(exc.strerror))
    finally:
        store.close()
    return problems


# ----------------------------------------------------------------------------- acks


def _post_ack(original: M.Message, cls: M.MessageClass) -> None:
    """Post an acknowledgement of ``original`` to its admin queue (best effort, as MSMQ's)."""
    if not original.admin_queue:
        return
    flags = original.acknowledge
    if cls.is_nack:
        wanted = M.Ack.NEGATIVE_RECEIVE if cls.value & 0x4000 else M.Ack.NEGATIVE_ARRIVAL
    else:
        wanted = M.Ack.POSITIVE_RECEIVE if cls.value & 0x4000 else M.Ack.POSITIVE_ARRIVAL
    if not flags & wanted:
        return
    from winipc.msmq import open as open_any

    ack = M.Message(
        body=original.body if cls.is_nack else b"",
        label=original.label,
        correlation_id=original.id,
        delivery=original.delivery,
    )
    try:
        admin = open_any(original.admin_queue, "send")
    except W.WinIPCError:
        return
    try:
        sender = getattr(admin, "_send_ack", None)
        if sender is not None:
            sender(ack, cls)
        else:
            admin.send(ack, transaction=SINGLE_MESSAGE if admin.transactional else None)
    except W.WinIPCError:
        pass
    finally:
        admin.close()


# ------------------------------------------------------------------ incoming drop files

_junk_warned: set[str] = set()
#: One ingest pass reads at most this many bytes of drop files (the rest waits for the next).
INGEST_BATCH_BYTES = I.MAX_FILE
INGEST_BATCH_FILES = 1000
#: An empty ``incoming/`` whose mtime and ctime are this many seconds old is remembered
#: (folder inode, mtime, ctime): until one changes, it is not listed again ...
INCOMING_SETTLE = 2.0
#: ... for at most this many seconds.
INCOMING_RECHECK = 30.0


def _unlink_incoming(folder: str, names: Iterable[str]) -> None:
    """Remove drop files that are ingested (or refused) and recorded as such."""
    for name in names:
        F.remove_entry(os.path.join(folder, name))


@dataclasses.dataclass
class _IngestPass:
    read: int = 0  # bytes of drop files read
    files: int = 0
    taken: int = 0  # messages inserted
    recoverable: bool = False
    acks: list[tuple[M.Message, M.MessageClass]] = dataclasses.field(default_factory=list)


def _ingest_one(store: _Store, conn: sqlite3.Connection, path: str, now: float, run: _IngestPass) -> str | None:
    """Insert one drop file's messages; returns why it was refused ("" when taken, None when gone)."""
    found = F.read_drop_file(path, I.MAX_FILE)
    run.files += 1
    if found.data is None:
        return None if found.problem == "gone" else found.problem
    run.read += len(found.data)
    try:
        batch = I.decode(found.data)
    except I.IncomingFormatError as exc:
        return f"is malformed ({exc})"
    info = store.info
    msgs = batch.messages
    if batch.single_message != info.transactional:
        cls = M.MessageClass.NACK_NOT_TRANSACTIONAL_Q if batch.single_message else M.MessageClass.NACK_NOT_TRANSACTIONAL_MSG
        run.acks += [(m, cls) for m, _b in msgs]
        return ("was sent in a transaction to a non-transactional queue" if batch.single_message
                else "was sent without a transaction to a transactional queue")
    for m, _b in msgs:
        if m.id.startswith(store.id_prefix):
            return f"uses the queue's own message id space ({m.id!r})"
        if conn.execute("SELECT 1 FROM msg WHERE msgid = ? AND native = 0 LIMIT 1", (m.id,)).fetchone():
            return f"repeats message id {m.id!r}"
    if info.quota is not None:
        row = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM counters WHERE sub = 0").fetchone()
        total = sum(len(b) for _m, b in msgs)
        if (row[0] if row else 0) + total > info.quota:
            run.acks += [(m, M.MessageClass.NACK_Q_EXCEED_QUOTA) for m, _b in msgs]
            return f"would exceed the queue's quota of {info.quota} bytes"
    for m, body in msgs:
        m.sender_uid = found.uid  # from the kernel, not from the file
        m.arrived_time = now
        m.destination_queue = info.path
        m.transactional = batch.single_message
        m.abort_count = 0
        if info.transactional:
            m.priority = 0
            m.delivery = M.Delivery.RECOVERABLE
        m.lookup_id = store.insert(conn, m, body)
        run.taken += 1
        run.recoverable = run.recoverable or m.delivery == M.Delivery.RECOVERABLE
        if m.acknowledge & M.Ack.POSITIVE_ARRIVAL:
            run.acks.append((m, M.MessageClass.ACK_REACH_QUEUE))
    return ""


def _ingest(store: _Store) -> int:
    """Move the drop files of ``store``'s ``incoming/`` into its database; returns messages taken.

    Crash-safe: in one SQLite transaction (under the queue's write lock) each new file's
    messages are inserted and its name recorded in table ``incoming``; the files are
    removed only after the commit (and, for recoverable messages, the WAL's fdatasync). A
    name already recorded is never ingested again, so a crash before the commit loses
    nothing (the files stay) and a crash after it duplicates nothing (the record stays
    until the file is gone). A file that is not a valid batch is removed with a logged
    warning and never reaches the queue.
    """
    inc = store.incoming
    if inc is None:
        return 0
    try:
        st = os.stat(inc)
        key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        key = None
    idle = store.incoming_idle
    if key is not None and idle is not None and idle[0] == key and time.monotonic() < idle[1]:
        return 0  # unchanged since it was last seen empty: no listdir
    try:
        if not os.listdir(inc):
            # Empty, and (stat before listdir) nothing arrived in the INCOMING_SETTLE seconds
            # before the stat: a file that arrives later changes the folder's mtime even at a
            # coarse timestamp granularity, so its key tells.
            settled = time.time_ns() - int(INCOMING_SETTLE * 1e9)
            if key is not None and key[1] < settled and key[2] < settled:
                store.incoming_idle = (key, time.monotonic() + INCOMING_RECHECK)
            return 0
    except OSError:
        return 0
    store.incoming_idle = None
    now = time.time()
    run = _IngestPass()
    done: list[str] = []
    more = False
    with store.write() as conn:
        try:
            names = set(os.listdir(inc))  # under the lock: no other ingester between here and commit
        except OSError:
            names = set()
        known = {n for (n,) in conn.execute("SELECT name FROM incoming")}
        gone = known - names
        if gone:
            conn.executemany("DELETE FROM incoming WHERE name = ?", [(n,) for n in gone])
        done += sorted(known & names)
        for name in sorted(names - known):
            if run.read >= INGEST_BATCH_BYTES or run.files >= INGEST_BATCH_FILES:
                more = True  # the rest in the next pass: bounded memory and lock time
                break
            path = os.path.join(inc, name)
            if I.is_temp_name(name):
                age = F.entry_age(path)
                if age is not None and age > STALE_TEMP:
                    _log.warning("queue %s: removing %s, abandoned by its sender", store.ref, name)
                    F.remove_entry(path)
                continue
            if not I.is_final_name(name):
                if name not in _junk_warned:
                    if len(_junk_warned) > 1000:
                        _junk_warned.clear()
                    _junk_warned.add(name)
                    _log.warning("queue %s: incoming entry %r is not a drop file; removed", store.ref, name[:80])
                F.remove_entry(path)
                continue
            problem = _ingest_one(store, conn, path, now, run)
            if problem is None:
                continue
            if problem:
                _log.warning("queue %s: incoming file %s %s; discarded", store.ref, name, problem)
            conn.execute("INSERT INTO incoming(name, at, status) VALUES (?, ?, ?)", (name, now, 1 if problem else 0))
            done.append(name)
    if run.recoverable:
        store.durable(time.monotonic_ns())
    _unlink_incoming(inc, done)
    if run.taken or more:
        store.ring()  # wakes receivers, and with ``more`` the next pass
    for m, cls in run.acks:
        _post_ack(m, cls)
    return run.taken


# ------------------------------------------------------------------------- transactions

_token_lock = threading.Lock()
#: this process's liveness token per store, held while it has transactions open there
_tokens: dict[str, tuple[F.OwnerToken, int]] = {}
_tx_counter = itertools.count(1)


def _acquire_token(root: str) -> F.OwnerToken:
    with _token_lock:
        entry = _tokens.get(root)
        if entry is not None and entry[0].pid == os.getpid() and entry[0].fd >= 0:
            _tokens[root] = (entry[0], entry[1] + 1)
            return entry[0]
        folder = _tx_folder(root)
        sweep_tokens(folder)
        token = F.OwnerToken(folder)
        _tokens[root] = (token, 1)
        return token


def _release_token(root: str, token: F.OwnerToken) -> None:
    with _token_lock:
        entry = _tokens.get(root)
        if entry is None or entry[0] is not token:
            return
        if entry[1] <= 1:
            del _tokens[root]
            if token.pid == os.getpid():
                token.close()
        else:
            _tokens[root] = (token, entry[1] - 1)


#: bumped in a forked child: handles then rebuild what they cached of this process (see _send_fast)
_forks = 0


def _after_fork() -> None:
    global _token_lock, _forks
    _forks += 1
    _token_lock = threading.Lock()
    _tokens.clear()  # the parent's tokens are the parent's (their files stay locked by it)
    _live_transactions.clear()


os.register_at_fork(after_in_child=_after_fork)


def sweep_tokens(folder: str | None = None) -> int:
    """Remove the liveness tokens of processes that are gone; returns how many."""
    folder = _tx_folder(store_root()) if folder is None else folder
    gone = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if not F.token_alive(folder, name):
            gone += 1
    return gone


class LocalTransaction(Transaction):
    """MQBeginTransaction's internal transaction over local queues."""

    def __init__(self) -> None:
        self._root = store_root()
        self._token = _acquire_token(self._root)
        self.id = f"{self._token.name}:{next(_tx_counter)}"
        self._stores: dict[str, _Store] = {}
        self._order: list[str] = []
        self._lock = threading.RLock()
        self._done = False
        self._received: list[tuple[str, M.Message]] = []
        self._sent: list[M.Message] = []
        _live_transactions.add(self.id)

    @property
    def closed(self) -> bool:
        return self._done

    @property
    def coordinator(self) -> str | None:
        return self._order[0] if self._order else None

    def enlist(self, ref: QueueRef) -> str | None:
        """Join a queue; returns the coordinator's folder name to record in rows."""
        with self._lock:
            if self._done:
                raise W.TransactionSequence(f"transaction {self.id} is already finished")
            folder = _queue_dir(ref.main(), self._root)
            key = os.path.basename(folder)
            if key not in self._stores:
                self._stores[key] = _Store(ref.main(), folder)
                self._order.append(key)
            return self.coordinator

    def note_received(self, store_key: str, m: M.Message) -> None:
        with self._lock:
            self._received.append((store_key, m))

    def note_sent(self, m: M.Message) -> None:
        with self._lock:
            self._sent.append(m)

    def commit(self) -> None:
        with self._lock:
            if self._done:
                raise W.TransactionSequence(f"transaction {self.id} is already finished")
            try:
                keys = list(self._order)
                if len(keys) > 1:
                    coord = self._stores[keys[0]]
                    t = _finalize(coord, self.id, txlog=keys)
                    coord.durable(t)
                    for k in keys[1:]:
                        s = self._stores[k]
                        s.durable(_finalize(s, self.id))
                    with coord.write() as conn:
                        conn.execute("DELETE FROM txlog WHERE tx = ?", (self.id,))
                elif keys:
                    s = self._stores[keys[0]]
                    s.durable(_finalize(s, self.id))
                for k in keys:
                    self._stores[k].ring()
            except BaseException:
                self._finish()
                raise
            self._finish()
            for m in self._sent:
                _post_ack(m, M.MessageClass.ACK_REACH_QUEUE)
            for _k, m in self._received:
                _post_ack(m, M.MessageClass.ACK_RECEIVE)

    def abort(self) -> None:
        with self._lock:
            if self._done:
                return
            try:
                for k in self._order:
                    s = self._stores[k]
                    _rollback(s, self.id)
                    s.ring()
            finally:
                self._finish()

    def _finish(self) -> None:
        self._done = True
        _live_transactions.discard(self.id)
        for s in self._stores.values():
            s.close()
        self._stores.clear()
        _release_token(self._root, self._token)

    def __del__(self) -> None:
        # a transaction dropped unfinished is aborted, as MSMQ aborts one whose holder ends
        if not getattr(self, "_done", True):
            with contextlib.suppress(Exception):
                self.abort()

    def __repr__(self) -> str:
        state = "finished" if self._done else f"{len(self._order)} queue(s)"
        return f"<LocalTransaction {self.id} {state}>"


_live_transactions: set[str] = set()


def begin_transaction() -> LocalTransaction:
    return LocalTransaction()


def _insert_copy(conn: sqlite3.Connection, sub: int, pri: int, msgid: str, corr: str | None, aborts: int,
                 props: bytes, body: bytes, crc: int) -> None:
    """Store a ready copy of a message (a journal copy or a dead letter), its record unchanged."""
    conn.execute(
        "INSERT INTO msg(sub, state, pri, msgid, corr, expires, aborts, size, props, body, crc)"
        " VALUES (?, 0, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
        (sub, pri, msgid, corr, aborts, len(body), props, body, crc),
    )


def _journal_and_delete(store: _Store, conn: sqlite3.Connection, seqs: list[int]) -> None:
    if not seqs:
        return
    marks = ",".join("?" * len(seqs))
    if store.info.journal:
        conn.execute(
            f"INSERT INTO msg(sub, state, pri, msgid, corr, expires, aborts, size, props, body, crc)"
            f" SELECT 1, 0, pri, msgid, corr, NULL, aborts, size, props, body, crc FROM msg"
            f" WHERE seq IN ({marks}) AND sub = 0",
            seqs,
        )
        _trim_journal(store, conn)
    conn.execute(f"DELETE FROM msg WHERE seq IN ({marks})", seqs)


def _trim_journal(store: _Store, conn: sqlite3.Connection) -> None:
    quota = store.info.journal_quota
    if quota is None:
        return
    row = conn.execute("SELECT bytes FROM counters WHERE sub = 1 AND state = 0").fetchone()
    used = row[0] if row else 0
    while used > quota:
        r = conn.execute("SELECT seq, size FROM msg WHERE sub = 1 ORDER BY seq LIMIT 1").fetchone()
        if r is None:
            break
        conn.execute("DELETE FROM msg WHERE seq = ?", (r[0],))
        used -= r[1]


def _finalize(store: _Store, tx: str, txlog: list[str] | None = None) -> int:
    """Commit ``tx``'s rows in one queue; returns the commit's finish time (ns)."""
    with store.write() as conn:
        conn.execute("UPDATE msg SET state = 0, tx = NULL, txc = NULL WHERE tx = ? AND state = 1", (tx,))
        locked = [r[0] for r in conn.execute("SELECT seq FROM msg WHERE tx = ? AND state = 2", (tx,))]
        _journal_and_delete(store, conn, locked)
        if txlog is not None:
            conn.execute("INSERT OR REPLACE INTO txlog VALUES (?, ?, ?)",
                         (tx, msgpack.packb(txlog), time.time()))
    return time.monotonic_ns()


def _rollback(store: _Store, tx: str) -> None:
    with store.write() as conn:
        conn.execute("DELETE FROM msg WHERE tx = ? AND state = 1", (tx,))
        conn.execute("UPDATE msg SET state = 0, tx = NULL, txc = NULL, aborts = aborts + 1 WHERE tx = ? AND state = 2", (tx,))
        limit = store.info.max_aborts
        conn.execute("UPDATE msg SET sub = 3 WHERE sub = 0 AND state = 0 AND aborts > ?", (limit,))


def _recover(store: _Store) -> int:
    """Resolve transactions of dead owners found in ``store``; returns how many."""
    folder = _tx_folder(os.path.dirname(store.folder))
    with store.read() as conn:
        rows = conn.execute("SELECT DISTINCT tx, txc FROM msg WHERE tx IS NOT NULL").fetchall()
        logged = [r[0] for r in conn.execute("SELECT tx FROM txlog")]
    done = 0
    me = os.path.basename(store.folder)
    for tx, txc in rows:
        if tx in _live_transactions:
            continue
        token = tx.rsplit(":", 1)[0]
        if F.token_alive(folder, token):
            continue
        committed = False
        if txc and txc != me:
            try:
                coord = _Store(QueueRef(host=".", private=True, name=txc), os.path.join(os.path.dirname(store.folder), txc))
            except W.WinIPCError:
                coord = None
            if coord is not None:
                try:
                    with coord.read() as c:
                        committed = c.execute("SELECT 1 FROM txlog WHERE tx = ?", (tx,)).fetchone() is not None
                finally:
                    coord.close()
        if committed:
            _finalize(store, tx)
        else:
            _rollback(store, tx)
        store.ring()
        done += 1
    for tx in logged:  # the coordinator's records of finished transactions whose owner died
        token = tx.rsplit(":", 1)[0]
        if tx in _live_transactions or F.token_alive(folder, token):
            continue
        with store.read() as conn:
            rec = conn.execute("SELECT participants FROM txlog WHERE tx = ?", (tx,)).fetchone()
        if rec is None:
            continue
        pending = False
        for key in msgpack.unpackb(rec[0]):
            if key == me:
                continue
            try:
                s = _Store(QueueRef(host=".", private=True, name=key), os.path.join(os.path.dirname(store.folder), key))
            except W.QueueNotFound:
                continue
            except W.WinIPCError:
                pending = True
                continue
            try:
                with s.read() as c:
                    if c.execute("SELECT 1 FROM msg WHERE tx = ? LIMIT 1", (tx,)).fetchone():
                        pending = True
            finally:
                s.close()
        if not pending:
            with store.write() as conn:
                conn.execute("DELETE FROM txlog WHERE tx = ?", (tx,))
    return done


# ---------------------------------------------------------------------------- handles


def open_queue(ref: QueueRef, access: QueueAccess, share: ShareMode) -> Queue:
    """MQOpenQueue on a local queue.

    A shared queue's access record is checked first: asking for a right that its security
    does not grant raises QueueAccessDenied before any data is touched. A user granted
    only send gets a :class:`LocalDropQueue` (sends go through ``incoming/``).
    """
    if not ref.system:
        folder = _queue_dir(ref)
        rec = _read_access(ref, folder)
        if rec is not None and _open_mode(ref, folder, rec, access) == "drop":
            return LocalDropQueue(ref, access, folder, rec)
    return LocalQueue(ref, access, share)


class LocalQueue(Queue):
    """An open local queue (see :class:`winipc.msmq.Queue` for the methods)."""

    def __init__(self, ref: QueueRef, access: QueueAccess, share: ShareMode) -> None:
        self.ref = ref
        self.access = access
        self._sub = SUB_CODES[ref.subqueue] if not ref.system else 0
        self._store = _open_store(ref)
        self._closed = False
        self._doorbell: F.Doorbell | None = None
        self._door_lock = threading.Lock()
        self._next_recovery = 0.0
        try:
            if access & (QueueAccess.RECEIVE | QueueAccess.PEEK) and share == ShareMode.DENY_RECEIVE_SHARE:
                lock = F.FileLock(os.path.join(self._store.folder, "receivers"))
                self._store.receivers = lock
                if not lock.try_exclusive():
                    raise W.SharingViolation(f"queue {ref} is open for receiving elsewhere")
            elif access & QueueAccess.RECEIVE:
                lock = F.FileLock(os.path.join(self._store.folder, "receivers"))
                self._store.receivers = lock
                if not lock.try_shared():
                    raise W.SharingViolation(f"queue {ref} is open for exclusive receive (MQ_DENY_RECEIVE_SHARE)")
            if access & QueueAccess.SEND and self._sub != 0:
                raise W.MsmqError(f"{ref}: messages cannot be sent to a subqueue",
                                  winerror=W.MQ_ERROR_UNSUPPORTED_FORMATNAME_OPERATION)
            self._recover_now()
        except BaseException:
            self._store.close()
            raise
        st = self._store
        lean = st.express is not None and self._sub == 0 and not st.info.transactional
        sends = bool(int(access) & int(QueueAccess.SEND))
        #: plain sends skip the generic path (see _send_fast_sql): no transactions, no quota
        self._fast_sql = sends and self._sub == 0 and not st.info.transactional and st.info.quota is None
        #: plain express sends go to the express store directly (see _send_fast)
        self._fast_send = lean and self._fast_sql
        #: receives without a transaction try the express store first (see receive)
        self._fast_receive = lean and bool(int(access) & int(QueueAccess.RECEIVE))
        self._where = f"queue {ref}"
        #: (fork count, attributes every message this handle sends starts from)
        self._template: tuple[int, dict[str, Any]] | None = None

    # -- properties

    @property
    def info(self) -> QueueInfo:
        return self._store.info

    @property
    def transactional(self) -> bool:
        return self._store.info.transactional

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self, need: QueueAccess) -> _Store:
        if self._closed:
            raise W.MsmqError(f"queue handle {self.ref} is closed", winerror=W.MQ_ERROR_INVALID_HANDLE)
        if not int(self.access) & int(need):  # ints: Flag.__and__ costs a microsecond
            raise W.QueueAccessDenied(
                f"queue {self.ref} was opened for {self.access.name}, not {need.name}")
        self._store.check_alive()
        return self._store

    def _tx(self, transaction: TxArg, sending: bool) -> LocalTransaction | _Single | None:
        if transaction is None:
            if sending and self.transactional:
                raise W.TransactionUsage(
                    f"queue {self.ref} is transactional: send within a transaction or with SINGLE_MESSAGE")
            return None
        if isinstance(transaction, _Single):
            if not self.transactional:
                raise W.TransactionUsage(f"queue {self.ref} is not transactional: send without a transaction")
            return transaction
        if not isinstance(transaction, LocalTransaction):
            raise W.TransactionUsage(f"{transaction!r} is not a local transaction (use winipc.msmq.transaction())")
        if transaction.closed:
            raise W.TransactionSequence(f"transaction {transaction.id} is already finished")
        if not self.transactional:
            raise W.TransactionUsage(
                f"queue {self.ref} is not transactional: {'send' if sending else 'receive'} without a transaction")
        return transaction

    # -- sending

    def send(self, body: Any = b"", *, transaction: TxArg = None, **props: Any) -> M.Message:
        if (transaction is None and type(body) is bytes and props.keys() <= _FAST_PROPS and not self._closed
                and self._fast_sql):
            if props.get("delivery") is _EXPRESS and self._fast_send:
                return self._send_fast(body, props)
            return self._send_fast_sql(body, props)
        m = M.make_message(body, props)
        m.message_class = M.MessageClass.NORMAL
        return self._send_prepared([m], transaction)[0]

    def _send_template(self) -> dict[str, Any]:
        t = dict(M._DEFAULTS)
        t.update(source_machine=B.host_name(), sender_pid=os.getpid(), sender_uid=B.uid(),
                 destination_queue=self._store.info.path, message_class=M.MessageClass.NORMAL)
        self._template = (_forks, t)
        return t

    def _fast_message(self, store: _Store, body: bytes, props: dict[str, Any]) -> M.Message:
        """The Message a send() of ``_FAST_PROPS`` only builds, checked, as _send_prepared
        builds it, without its lists. The sender's host and pid are the process's when this
        handle first sent (again after a fork)."""
        store.check_alive()
        if len(body) > M.MAX_BODY:
            M.encode_body(body)  # raises IllegalPropertyValue
        tm = self._template
        attrs = (self._send_template() if tm is None or tm[0] != _forks else tm[1]).copy()
        attrs["body"] = body
        attrs["sent_time"] = attrs["arrived_time"] = time.time()
        attrs["sender_uid"] = os.geteuid()  # at each send, as MSMQ takes the sender's SID from its token
        attrs.update(props)
        m: M.Message = _new_object(M.Message)
        m.__dict__ = attrs
        d = attrs["delivery"]
        # the template's values are valid: a send with no property but a Delivery member needs no check
        if len(props) > ("delivery" in props) or (d is not _EXPRESS and d is not _RECOVERABLE):
            M.validate(m)
        return m

    def _send_fast(self, body: bytes, props: dict[str, Any]) -> M.Message:
        """send() of one express ``bytes`` body without a transaction, acknowledgement,
        time limit or quota (``_FAST_PROPS`` only) into the express store."""
        store = self._store
        m = self._fast_message(store, body, props)
        m.id = M.new_message_id()
        try:
            m.lookup_id, waiters = E.put(store.express, m, body)
        except (MemoryError, OSError, ValueError) as exc:
            raise E.translate(exc, self._where) from None
        if waiters:
            F.ring(store.wait_dir)
        return m

    def _send_fast_sql(self, body: bytes, props: dict[str, Any]) -> M.Message:
        """send() of one ``bytes`` body without a transaction, acknowledgement, time limit
        or quota (``_FAST_PROPS`` only) into SQLite: recoverable, or express where the queue
        has no express store; what _send_prepared does for it, without its lists."""
        store = self._store
        m = self._fast_message(store, body, props)
        with store.write() as conn:
            seq = store.next_seq(conn)
            m.id = store.native_id(seq)
            m.lookup_id = store.insert(conn, m, body, seq=seq)
        if m.delivery is _RECOVERABLE:
            store.durable(time.monotonic_ns())
        store.ring()
        return m

    def _send_ack(self, ack: M.Message, cls: M.MessageClass) -> None:
        M.validate(ack)
        ack.message_class = cls
        tx: TxArg = SINGLE_MESSAGE if self.transactional else None
        self._send_prepared([ack], tx)

    def send_many(self, messages: Iterable[Any], *, transaction: TxArg = None) -> list[M.Message]:
        prepared = []
        for item in messages:
            item = M.make_message(item, {})
            item.message_class = M.MessageClass.NORMAL
            prepared.append(item)
        return self._send_prepared(prepared, transaction)

    def _send_prepared(self, prepared: list[M.Message], transaction: TxArg) -> list[M.Message]:
        store = self._check(QueueAccess.SEND)
        tx = self._tx(transaction, sending=True)
        if not prepared:
            return []
        now = time.time()
        host = B.host_name()
        pid, uid, path = os.getpid(), B.uid(), store.info.path  # once per call, not per message
        in_tx, transactional = tx is not None, self.transactional
        bodies = []
        for m in prepared:
            data, kind = M.encode_body(m.body)
            bodies.append(data)
            m.body_type = kind
            m.id = M.new_message_id()
            m.sent_time = m.arrived_time = now
            m.source_machine = host
            m.sender_pid = pid
            m.sender_uid = uid
            m.destination_queue = path
            m.transactional = in_tx
            if transactional:
                m.priority = 0  # MSMQ sends transactional messages at priority 0
                m.delivery = M.Delivery.RECOVERABLE
            m.abort_count = 0
        txid = txc = None
        if isinstance(tx, LocalTransaction):
            txc = tx.enlist(self.ref)
            txid = tx.id
        quota = store.info.quota
        to_sql = list(zip(prepared, bodies, strict=True))
        if store.express is not None and txid is None:
            to_sql = self._send_express(store, to_sql)
        if to_sql:
            with store.write() as conn:
                if quota is not None:
                    self._check_quota(conn, quota, sum(len(b) for _m, b in to_sql))
                seq = store.next_seq(conn)
                for m, data in to_sql:
                    m.id = store.native_id(seq)
                    m.lookup_id = store.insert(conn, m, data, state=PENDING if txid else READY, tx=txid, txc=txc,
                                               seq=seq)
                    seq += 1
        t = time.monotonic_ns()
        if txid is None:
            if any(m.delivery == M.Delivery.RECOVERABLE for m in prepared):
                store.durable(t)
            if to_sql:
                store.ring()
            for m in prepared:
                if m.acknowledge is not _NO_ACK and m.acknowledge & M.Ack.POSITIVE_ARRIVAL:
                    _post_ack(m, M.MessageClass.ACK_REACH_QUEUE)
        else:
            assert isinstance(tx, LocalTransaction)
            for m in prepared:
                tx.note_sent(m)
        for m, data in zip(prepared, bodies, strict=True):
            if isinstance(m.body, (bytearray, memoryview)):
                m.body = data
        return prepared

    def _check_quota(self, conn: sqlite3.Connection, quota: int, total: int) -> None:
        """InsufficientResources unless ``total`` more bytes fit the queue's quota (both stores)."""
        row = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM counters WHERE sub = 0").fetchone()
        xs = self._store.express
        used = (row[0] if row else 0) + (0 if xs is None else int(xs.stat()["bytes"]))
        if used + total > quota:
            raise W.InsufficientResources(
                f"queue {self.ref}: quota of {quota} bytes exceeded ({used} used, {total} more sent)")

    def _send_express(self, store: _Store, items: list[tuple[M.Message, bytes]]) -> list[tuple[M.Message, bytes]]:
        """Put the express messages of ``items`` in the express store; returns the others."""
        xs = store.express
        rest = [(m, d) for m, d in items if m.delivery != M.Delivery.EXPRESS]
        express = [(m, d) for m, d in items if m.delivery == M.Delivery.EXPRESS]
        if not express:
            return rest
        quota = store.info.quota
        if quota is not None:
            with store.read() as conn:
                self._check_quota(conn, quota, sum(len(d) for _m, d in items))
        waiters = 0
        for m, data in express:
            try:
                m.lookup_id, waiters = E.put(xs, m, data)
            except (MemoryError, OSError, ValueError) as exc:
                raise E.translate(exc, f"queue {self.ref}") from None
        if waiters:
            F.ring(store.wait_dir)
        return rest

    # -- receiving

    def _doorbell_fd(self) -> F.Doorbell:
        with self._door_lock:
            if self._doorbell is None:
                self._doorbell = F.Doorbell(self._store.wait_dir)
            return self._doorbell

    def _recover_now(self) -> None:
        self._next_recovery = time.monotonic() + RECOVERY_INTERVAL
        with self._store.read() as conn:
            busy = conn.execute("SELECT 1 FROM msg WHERE tx IS NOT NULL LIMIT 1").fetchone()
            logged = conn.execute("SELECT 1 FROM txlog LIMIT 1").fetchone()
        if busy or logged:
            _recover(self._store)

    def _has_locked(self) -> bool:
        with self._store.read() as conn:
            return conn.execute("SELECT 1 FROM msg WHERE tx IS NOT NULL LIMIT 1").fetchone() is not None

    def _wait(self, attempt: Any, timeout: float | None, what: str) -> M.Message:
        """Run ``attempt()`` until it returns a message, sleeping on the doorbell between."""
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout or timeout < 0
        ):
            raise W.MsmqError(f"timeout={timeout!r}: seconds >= 0, or None to wait forever",
                              winerror=W.MQ_ERROR_INVALID_PARAMETER)
        m = attempt()
        if m is not None:
            return m  # type: ignore[no-any-return]
        if timeout == 0:
            self._maybe_recover(force=True)
            m = attempt()
            if m is not None:
                return m  # type: ignore[no-any-return]
            raise W.IoTimeout(f"{what} on {self.ref}: no message (timeout 0)")
        deadline = None if timeout is None else time.monotonic() + timeout
        xs = self._store.express
        if xs is not None and EXPRESS_SPIN > 0:
            m = self._spin(attempt, xs)
            if m is not None:
                return m
        bell = self._doorbell_fd()
        if xs is None:
            return self._wait_loop(attempt, deadline, timeout, what, bell)
        xs.wait_begin()  # express senders ring only while someone waits (docs/wire/msmq-express.md)
        try:
            return self._wait_loop(attempt, deadline, timeout, what, bell)
        finally:
            xs.wait_end()

    def _spin(self, attempt: Any, xs: Any) -> M.Message | None:
        """Yield the CPU and watch the express store's change counter for EXPRESS_SPIN
        seconds before sleeping: a sender then keeps going without ringing (no receiver
        waits), and on one core the sender gets the CPU to send more than one message."""
        changes = xs.changes
        end = time.monotonic() + EXPRESS_SPIN
        while not self._closed:
            os.sched_yield()
            now = xs.changes
            if now != changes:
                changes = now
                m = attempt()
                if m is not None:
                    return m  # type: ignore[no-any-return]
            if time.monotonic() >= end:
                break
        return None

    def _wait_loop(self, attempt: Any, deadline: float | None, timeout: float | None, what: str,
                   bell: F.Doorbell) -> M.Message:
        while True:
            bell.drain()
            self._store.check_alive()
            m = attempt()
            if m is not None:
                return m  # type: ignore[no-any-return]
            locked = self._maybe_recover()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise W.IoTimeout(f"{what} on {self.ref}: no message within {timeout} s")
            wait = None if deadline is None else deadline - now
            if locked:
                wait = RECOVERY_INTERVAL if wait is None else min(wait, RECOVERY_INTERVAL)
            if self._closed:
                raise W.OperationCancelled(f"{what} on {self.ref}: the handle was closed")
            try:
                select.select([bell.fileno()], [], [], wait)
            except (OSError, ValueError):
                if not self._closed:
                    raise
            if self._closed:
                raise W.OperationCancelled(f"{what} on {self.ref}: the handle was closed")

    def _maybe_recover(self, force: bool = False) -> bool:
        """Recover dead owners' transactions now and then; True while some rows are locked."""
        locked = self._has_locked()
        if locked and (force or time.monotonic() >= self._next_recovery):
            self._recover_now()
            locked = self._has_locked()
        return locked

    def _select(self, conn: sqlite3.Connection, extra: str, params: tuple[Any, ...]) -> _Row | None:
        t = conn.execute(
            f"SELECT {_COLS} FROM {_BY_ID_FROM if extra is _BY_ID else 'msg'} WHERE sub = ? AND state = 0 {extra}"
            " ORDER BY pri DESC, seq LIMIT 1",
            (self._sub, *params),
        ).fetchone()
        return None if t is None else self._store.row(t)

    def _expire_due(self) -> None:
        """Move or drop expired ready messages of this subqueue (time-to-be-received)."""
        store = self._store
        now = time.time()
        expired: list[M.Message] = []
        with store.write() as conn:
            rows = conn.execute(
                f"SELECT {_COLS} FROM msg WHERE sub = ? AND state = 0 AND expires IS NOT NULL AND expires <= ?",
                (self._sub, now),
            ).fetchall()
            for t in rows:
                r = store.row(t)
                m = store.to_message(r)
                expired.append(m)
                if m.use_dead_letter and self._sub == 0:
                    conn.execute("UPDATE msg SET sub = 2, expires = NULL WHERE seq = ?", (r.seq,))
                else:
                    conn.execute("DELETE FROM msg WHERE seq = ?", (r.seq,))
        if expired:
            if not self.transactional:
                self._forward_dead_letters()
            for m in expired:
                _post_ack(m, M.MessageClass.NACK_RECEIVE_TIMEOUT)

    def _forward_dead_letters(self) -> None:
        """Move a non-transactional queue's dead letters to the system dead-letter queue."""
        store = self._store
        if store.ref.system:
            return
        with store.read() as conn:
            rows = [store.row(t) for t in conn.execute(f"SELECT {_COLS} FROM msg WHERE sub = 2 AND state = 0")]
        if not rows:
            return
        dlq = _open_store(QueueRef(host=".", private=True, name="system$", subqueue=SUB_DEADLETTER, system=True))
        try:
            with dlq.write() as conn:  # copy first: a crash here repeats the copy, never loses it
                for r in rows:
                    _insert_copy(conn, 0, r.pri, r.msgid, r.corr, r.aborts, r.props, r.body, r.crc)
            dlq.durable(time.monotonic_ns())
            dlq.ring()
        finally:
            dlq.close()
        with store.write() as conn:
            conn.executemany("DELETE FROM msg WHERE seq = ?", [(r.seq,) for r in rows])

    def _ingest(self) -> None:
        if self._store.incoming is not None:
            _ingest(self._store)

    def _take(self, extra: str, params: tuple[Any, ...], tx: LocalTransaction | None,
              remove: bool) -> M.Message | None:
        store = self._store
        self._ingest()
        now = time.time()
        if not remove:
            with store.read() as conn:
                r = self._select(conn, extra, params)
            if r is None:
                return None
            if r.expires is not None and r.expires <= now:
                self._expire_due()
                return self._take(extra, params, tx, remove)
            return store.to_message(r)
        if tx is not None:
            txc = tx.enlist(self.ref)
        expired = False
        with store.write() as conn:
            r = self._select(conn, extra, params)
            if r is None:
                return None
            if r.expires is not None and r.expires <= now:
                expired = True
            else:
                m = store.to_message(r)
                if tx is not None:
                    conn.execute("UPDATE msg SET state = 2, tx = ?, txc = ? WHERE seq = ?", (tx.id, txc, r.seq))
                elif self._sub == 0 and not store.ref.system:
                    _journal_and_delete(store, conn, [r.seq])
                else:
                    conn.execute("DELETE FROM msg WHERE seq = ?", (r.seq,))
        if expired:
            self._expire_due()
            return self._take(extra, params, tx, remove)
        if tx is not None:
            tx.note_received(os.path.basename(store.folder), m)
        elif m.acknowledge is not _NO_ACK and m.acknowledge & M.Ack.POSITIVE_RECEIVE:
            _post_ack(m, M.MessageClass.ACK_RECEIVE)
        return m

    _KINDS = {"first": ("", E.FIRST), "id": (_BY_ID, E.KEY1), "corr": ("AND corr = ?", E.KEY2),
              "after": ("AND (pri < ? OR (pri = ? AND seq > ?))", E.AFTER)}

    def _attempt(self, kind: str, key: Any, tx: LocalTransaction | None, remove: bool,
                 xpos: tuple[int, int] | None = None) -> M.Message | None:
        """One look for a message: ``kind`` first | id | corr | after (a cursor: ``key`` is
        the SQLite position (priority, seq), ``xpos`` the express one (priority, stamp))."""
        extra = self._KINDS[kind][0]
        params: tuple[Any, ...] = ()
        if kind == "id":
            params = (self._store.native_seq(key), key, key)
        elif kind == "corr":
            params = (key,)
        elif kind == "after":
            params = (key[0], key[0], key[1]) if key is not None else ()
            if key is None:
                extra = ""
        xs = self._store.express
        if xs is None or tx is not None or self._sub != 0:
            return self._take(extra, params, tx, remove)
        return self._xattempt(kind, key, extra, params, remove, xpos)

    def _sql_known_empty(self) -> bool:
        known = self._store.sql_empty
        xs = self._store.express
        return known is not None and known[0] == xs.gen and time.monotonic() < known[1]

    def _xattempt(self, kind: str, key: Any, extra: str, params: tuple[Any, ...], remove: bool,
                  xpos: tuple[int, int] | None) -> M.Message | None:
        """The first message of the express store and SQLite together, in MSMQ's order."""
        store = self._store
        xs = store.express
        op = E.TAKE if remove else E.PEEK
        where = f"queue {self.ref}"
        mode = self._KINDS[kind][1]
        xkey = E.message_key(key) if kind in ("id", "corr") else b""
        xpri, xstamp = xpos if xpos is not None else (E.PRIORITIES, 0)
        if kind == "after" and xpos is None:
            mode = E.FIRST
        for _attempt in range(1000):
            try:
                if kind == "id" or (kind == "first" and self._sql_known_empty()):
                    found = xs.find(mode, xkey, xpri, xstamp, op)
                    if found is not None:
                        m = self._express_found(found, remove)
                        if m is not None:
                            return m
                        continue
                    if kind == "first":
                        return None
                    return self._take(extra, params, None, remove)
                loc = xs.find(mode, xkey, xpri, xstamp, E.LOCATE)
            except (MemoryError, OSError, ValueError) as exc:
                raise E.translate(exc, where) from None
            gen = xs.gen
            if loc is None:  # nothing express: one look at SQLite, under its lock when taking
                m = self._take(extra, params, None, remove)
                if m is None and kind == "first":
                    store.sql_empty = (gen, time.monotonic() + RECOVERY_INTERVAL)
                return m
            self._ingest()
            with store.read() as conn:
                row = self._select(conn, extra, params)
            if row is None and kind == "first":
                store.sql_empty = (gen, time.monotonic() + RECOVERY_INTERVAL)
            if loc is None and row is None:
                return None
            if loc is not None and (row is None or loc[1] > row.pri or (
                    loc[1] == row.pri and loc[0] < int(store.to_message(row).arrived_time * 1e9))):
                try:
                    found = xs.find(E.EXACT, b"", loc[1], loc[0], op)
                except (MemoryError, OSError, ValueError) as exc:
                    raise E.translate(exc, where) from None
                if found is None:
                    continue  # another receiver took it
                m = self._express_found(found, remove)
                if m is not None:
                    return m
                continue
            assert row is not None
            m = self._take("AND seq = ?", (row.seq,), None, remove)
            if m is not None:
                return m
        raise W.MsmqError(f"{where}: no stable first message after 1000 looks", winerror=W.MQ_ERROR)

    def _express_found(self, found: tuple[Any, ...], removed: bool, m: M.Message | None = None) -> M.Message | None:
        """The message of an express ``find`` (``m``: already decoded): None when it had
        expired (then handled)."""
        store = self._store
        where = self._where
        if m is None:
            m = E.decode(found, where)
        expires = found[2]
        if expires and expires <= time.time():
            if not removed:
                try:
                    found = store.express.find(E.EXACT, b"", found[1], found[0], E.TAKE)
                except (MemoryError, OSError, ValueError) as exc:
                    raise E.translate(exc, where) from None
                if found is None:
                    return None
            if m.use_dead_letter:
                props, body = E.split(found, m)
                self._dead_letter_express(m, props, body)
            _post_ack(m, M.MessageClass.NACK_RECEIVE_TIMEOUT)
            return None
        if removed:
            if store.info.journal:
                props, body = E.split(found, m)
                with store.write() as conn:
                    _insert_copy(conn, 1, m.priority, m.id, m.correlation_id, 0, props, body, _crc(props, body))
                    _trim_journal(store, conn)
            if m.acknowledge & M.Ack.POSITIVE_RECEIVE:
                _post_ack(m, M.MessageClass.ACK_RECEIVE)
        return m

    def _receive_express(self) -> M.Message | None:
        """Take the first express message while SQLite is known to hold no ready one (what
        _xattempt("first") does then, with fewer layers); None: take the generic path."""
        store = self._store
        if not self._sql_known_empty():
            return None
        try:
            found = store.express.find(E.FIRST, b"", E.PRIORITIES, 0, E.TAKE)
        except (MemoryError, OSError, ValueError) as exc:
            raise E.translate(exc, self._where) from None
        if found is None:
            return None
        m = E.decode(found, self._where)
        if found[2] or store.info.journal or m.acknowledge is not _NO_ACK:
            return self._express_found(found, True, m)  # expiry, journal copy, acknowledgement
        return m

    def _dead_letter_express(self, m: M.Message, props: bytes, body: bytes) -> None:
        """An expired express message to the user's system dead-letter queue (copied)."""
        dlq = _open_store(QueueRef(host=".", private=True, name="system$", subqueue=SUB_DEADLETTER, system=True))
        try:
            with dlq.write() as conn:
                _insert_copy(conn, 0, m.priority, m.id, m.correlation_id, 0, props, body, _crc(props, body))
            dlq.ring()
        finally:
            dlq.close()

    def _receive_tx(self, transaction: TxArg) -> LocalTransaction | None:
        if transaction is None:
            return None
        if isinstance(transaction, _Single):
            raise W.TransactionUsage("SINGLE_MESSAGE is for sends; receive with a transaction or without one")
        tx = self._tx(transaction, sending=False)
        assert isinstance(tx, LocalTransaction)
        return tx

    def receive(self, timeout: float | None = None, *, transaction: TxArg = None) -> M.Message:
        if (self._fast_receive and transaction is None and not self._closed
                and (timeout is None or (type(timeout) in _NUMBERS and timeout >= 0))):
            self._store.check_alive()
            m = self._receive_express()
            if m is not None:
                return m
        self._check(QueueAccess.RECEIVE)
        tx = self._receive_tx(transaction)
        return self._wait(lambda: self._attempt("first", None, tx, True), timeout, "receive")

    def peek(self, timeout: float | None = None) -> M.Message:
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        return self._wait(lambda: self._attempt("first", None, None, False), timeout, "peek")

    def receive_by_id(self, message_id: str, *, transaction: TxArg = None) -> M.Message:
        self._check(QueueAccess.RECEIVE)
        tx = self._receive_tx(transaction)
        m = self._attempt("id", str(message_id), tx, True)
        if m is None:
            raise W.MessageNotFound(f"queue {self.ref}: no message with id {message_id!r}")
        return m

    def peek_by_id(self, message_id: str) -> M.Message:
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        m = self._attempt("id", str(message_id), None, False)
        if m is None:
            raise W.MessageNotFound(f"queue {self.ref}: no message with id {message_id!r}")
        return m

    def receive_by_correlation_id(self, correlation_id: str, timeout: float | None = 0.0, *,
                                  transaction: TxArg = None) -> M.Message:
        self._check(QueueAccess.RECEIVE)
        tx = self._receive_tx(transaction)
        cid = str(correlation_id)
        return self._wait(lambda: self._attempt("corr", cid, tx, True), timeout,
                          "receive by correlation id")

    def peek_by_correlation_id(self, correlation_id: str, timeout: float | None = 0.0) -> M.Message:
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        cid = str(correlation_id)
        return self._wait(lambda: self._attempt("corr", cid, None, False), timeout,
                          "peek by correlation id")

    def cursor(self) -> LocalCursor:
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        return LocalCursor(self)

    async def areceive(self, timeout: float | None = None, *, transaction: TxArg = None) -> M.Message:
        """asyncio twin of :meth:`receive`: waits on the doorbell in the event loop (no thread)."""
        import asyncio

        self._check(QueueAccess.RECEIVE)
        tx = self._receive_tx(transaction)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        bell = self._doorbell_fd()
        xs = self._store.express
        if xs is not None:
            xs.wait_begin()
        try:
            return await self._areceive_loop(loop, deadline, timeout, tx, bell)
        finally:
            if xs is not None:
                xs.wait_end()

    async def _areceive_loop(self, loop: Any, deadline: float | None, timeout: float | None,
                             tx: LocalTransaction | None, bell: F.Doorbell) -> M.Message:
        import asyncio

        while True:
            bell.drain()
            self._store.check_alive()
            m = self._attempt("first", None, tx, True)
            if m is not None:
                return m
            locked = self._maybe_recover()
            now = loop.time()
            if deadline is not None and now >= deadline:
                raise W.IoTimeout(f"receive on {self.ref}: no message within {timeout} s")
            wait = None if deadline is None else deadline - now
            if locked:
                wait = RECOVERY_INTERVAL if wait is None else min(wait, RECOVERY_INTERVAL)
            fut: asyncio.Future[None] = loop.create_future()

            def ready(f: asyncio.Future[None] = fut) -> None:
                if not f.done():
                    f.set_result(None)

            loop.add_reader(bell.fileno(), ready)
            try:
                await asyncio.wait_for(fut, wait)
            except asyncio.TimeoutError:
                pass
            finally:
                loop.remove_reader(bell.fileno())
            if self._closed:
                raise W.OperationCancelled(f"receive on {self.ref}: the handle was closed")

    async def apeek(self, timeout: float | None = None) -> M.Message:
        import asyncio

        return await asyncio.to_thread(self.peek, timeout)

    # -- management

    def stat(self) -> QueueStat:
        store = self._check(QueueAccess.RECEIVE | QueueAccess.PEEK | QueueAccess.SEND)
        self._ingest()
        with store.read() as conn:
            c = store.counters(conn)

        def n(sub: int, state: int = 0) -> int:
            return c.get((sub, state), (0, 0))[0]

        used = sum(b for (s, _st), (_n, b) in c.items() if s == self._sub)
        ready = n(self._sub)
        if store.express is not None and self._sub == 0:
            xst = store.express.stat()
            ready += xst["count"]
            used += xst["bytes"]
        return QueueStat(
            info=store.info,
            messages=ready,
            bytes=used,
            locked=n(self._sub, LOCKED),
            journal_messages=n(1),
            deadletter_messages=n(2),
            poison_messages=n(3),
            durability="recoverable: fdatasync of the queue's WAL before send returns (group commit); "
            + ("express: in memory (/dev/shm; survives process crashes, lost when the machine restarts)"
               if store.express is not None else
               "express: in the queue file, not synced (survives process crashes, not machine crashes)"),
            recoverable_is_durable=True,
        )

    def purge(self) -> int:
        store = self._check(QueueAccess.RECEIVE)
        self._ingest()
        with store.write() as conn:
            rows = [store.row(t) for t in conn.execute(
                f"SELECT {_COLS} FROM msg WHERE sub = ? AND state = 0", (self._sub,))]
            conn.execute("DELETE FROM msg WHERE sub = ? AND state = 0", (self._sub,))
        nacks = []
        for r in rows:
            with contextlib.suppress(W.CorruptQueueError):
                m = store.to_message(r)
                if m.acknowledge & M.Ack.NEGATIVE_RECEIVE:
                    nacks.append(m)
        purged = len(rows)
        if store.express is not None and self._sub == 0:
            while (found := store.express.find(E.FIRST, b"", 0, 0, E.TAKE)) is not None:
                purged += 1
                with contextlib.suppress(W.CorruptQueueError):
                    m = E.decode(found, str(self.ref))
                    if m.acknowledge & M.Ack.NEGATIVE_RECEIVE:
                        nacks.append(m)
        for m in nacks:
            _post_ack(m, M.MessageClass.NACK_Q_PURGED)
        return purged

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._door_lock:
            bell, self._doorbell = self._doorbell, None
        if bell is not None:
            F.ring(self._store.wait_dir)  # wakes this handle's blocked receivers (they see closed)
            bell.close()
        self._store.close()


class LocalCursor(Cursor):
    """A cursor over a local queue: its position is the (priority, lookup id) of a message.

    With an express store the cursor merges the two stores' orders: it keeps the last
    position it passed in each and steps to whichever store's next message comes first.
    Neither position is ever above the priority of the message under the cursor, so a
    message sent at a higher priority, to either store, lies behind it (as in MSMQ).
    """

    def __init__(self, queue: LocalQueue) -> None:
        self._q = queue
        self._pos: tuple[int, int] | None = None
        self._express = False  # the message under the cursor is in the express store
        self._spos: tuple[int, int] | None = None  # passed in SQLite: (priority, seq)
        self._xpos: tuple[int, int] | None = None  # passed in the express store: (priority, stamp)
        self._removed = False
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise W.MsmqError("cursor is closed", winerror=W.MQ_ERROR_INVALID_HANDLE)

    def _peek_at(self, after: bool, timeout: float | None) -> M.Message:
        q = self._q
        q._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        spos, xpos = (self._spos, self._xpos) if after else (None, None)
        m = q._wait(lambda: q._attempt("after", spos, None, False, xpos), timeout, "cursor peek")
        pri = m.priority
        self._pos = (pri, m.lookup_id)
        self._express = E.is_express_lookup_id(m.lookup_id)
        # In the merged order, a message of a higher priority than the one under the
        # cursor lies behind it, whichever store holds it: the other store's position
        # moves down to this priority (seq and stamp 0 come before every message of it).
        if self._express:
            self._xpos = self._pos
            if self._spos is None or self._spos[0] > pri:
                self._spos = (pri, 0)
        else:
            self._spos = self._pos
            if self._xpos is None or self._xpos[0] > pri:
                self._xpos = (pri, 0)
        self._removed = False
        return m

    def _at_current(self, remove: bool, tx: LocalTransaction | None) -> M.Message | None:
        q = self._q
        assert self._pos is not None
        if not self._express:
            return q._take("AND seq = ?", (self._pos[1],), tx, remove)
        xs = q._store.express
        if xs is None:
            return None
        try:
            found = xs.find(E.EXACT, b"", self._pos[0], self._pos[1], E.TAKE if remove else E.PEEK)
        except (MemoryError, OSError, ValueError) as exc:
            raise E.translate(exc, f"queue {q.ref}") from None
        return None if found is None else q._express_found(found, remove)

    def peek_current(self, timeout: float | None = 0.0) -> M.Message:
        self._check()
        if self._pos is None:
            return self._peek_at(False, timeout)
        if self._removed:
            return self._peek_at(True, timeout)
        m = self._at_current(False, None)
        if m is None:
            raise W.MessageAlreadyReceived(f"queue {self._q.ref}: the message under the cursor was received")
        return m

    def peek_next(self, timeout: float | None = 0.0) -> M.Message:
        self._check()
        if self._pos is None:
            raise W.IllegalCursorAction("peek_next before peek_current: the cursor has no position yet")
        return self._peek_at(True, timeout)

    def receive_current(self, timeout: float | None = 0.0, *, transaction: TxArg = None) -> M.Message:
        self._check()
        q = self._q
        q._check(QueueAccess.RECEIVE)
        if self._pos is None or self._removed:
            self.peek_current(timeout)
        assert self._pos is not None
        tx = q._receive_tx(transaction)
        m = self._at_current(True, tx)
        if m is None:
            raise W.MessageAlreadyReceived(f"queue {q.ref}: the message under the cursor was received")
        self._removed = True
        return m

    def close(self) -> None:
        self._closed = True


_drop_lock = threading.Lock()
_drop_last_ns = 0


def _drop_name() -> str:
    """A new drop file name: the sender's time (ns, never going back in this process) and 128 random bits."""
    global _drop_last_ns
    with _drop_lock:
        _drop_last_ns = max(time.time_ns(), _drop_last_ns + 1)
        return f"{_drop_last_ns:016x}-{secrets.token_hex(16)}.msg"


class LocalDropQueue(Queue):
    """A local queue opened for send by a user granted only the send right (MQSEC_WRITE_MESSAGE).

    Each :meth:`send` (each :meth:`send_many` batch) becomes one file in the queue's
    ``incoming/`` folder, written under a temporary name, ``fsync``ed when recoverable,
    renamed into place; then the queue's doorbells are rung. The queue's readers ingest
    it before they next receive, peek or count. Returned messages carry their ``id``;
    their ``lookup_id`` is 0 (assigned at ingest).

    Differences from a handle with database access: no transactions but SINGLE_MESSAGE
    (TransactionUsage), the quota is checked when the file is ingested (an over-quota
    send is discarded then, with NACK_Q_EXCEED_QUOTA if asked for), and receive, peek,
    cursors, stat and purge raise QueueAccessDenied.
    """

    def __init__(self, ref: QueueRef, access: QueueAccess, folder: str, rec: _AccessRecord) -> None:
        if access != QueueAccess.SEND:
            raise W.QueueAccessDenied(f"queue {ref}: access denied: uid {B.uid()} may only send")
        if ref.subqueue or ref.system:
            raise W.MsmqError(f"{ref}: messages cannot be sent to a subqueue",
                              winerror=W.MQ_ERROR_UNSUPPORTED_FORMATNAME_OPERATION)
        self.ref = ref
        self.access = access
        self._folder = folder
        self._incoming = os.path.join(folder, INCOMING)
        self._wait_dir = os.path.join(folder, "wait")
        self._rec = rec
        self._closed = False
        try:
            self._ino = os.lstat(folder).st_ino
        except FileNotFoundError:
            raise W.QueueNotFound(f"queue {ref} does not exist") from None

    @property
    def info(self) -> QueueInfo:
        return self._rec.info

    @property
    def closed(self) -> bool:
        return self._closed

    def _alive(self) -> None:
        if self._closed:
            raise W.MsmqError(f"queue handle {self.ref} is closed", winerror=W.MQ_ERROR_INVALID_HANDLE)
        try:
            ino = os.lstat(self._folder).st_ino
        except FileNotFoundError:
            raise W.QueueDeleted(f"queue {self.ref} was deleted") from None
        if ino != self._ino:
            raise W.QueueDeleted(f"queue {self.ref} was deleted (and created again)")

    def _denied(self, what: str) -> W.QueueAccessDenied:
        return W.QueueAccessDenied(
            f"queue {self.ref}: access denied: {what} needs the receive or peek right; "
            f"uid {B.uid()} has only send (MQSEC_WRITE_MESSAGE)")

    # -- sending

    def send(self, body: Any = b"", *, transaction: TxArg = None, **props: Any) -> M.Message:
        m = M.make_message(body, props)
        m.message_class = M.MessageClass.NORMAL
        return self._send_prepared([m], transaction)[0]

    def _send_ack(self, ack: M.Message, cls: M.MessageClass) -> None:
        M.validate(ack)
        ack.message_class = cls
        self._send_prepared([ack], SINGLE_MESSAGE if self.transactional else None)

    def send_many(self, messages: Iterable[Any], *, transaction: TxArg = None) -> list[M.Message]:
        prepared = []
        for item in messages:
            item = M.make_message(item, {})
            item.message_class = M.MessageClass.NORMAL
            prepared.append(item)
        return self._send_prepared(prepared, transaction)

    def _send_prepared(self, prepared: list[M.Message], transaction: TxArg) -> list[M.Message]:
        self._alive()
        single = False
        if transaction is None:
            if self.transactional:
                raise W.TransactionUsage(
                    f"queue {self.ref} is transactional: send within a transaction or with SINGLE_MESSAGE")
        elif isinstance(transaction, _Single):
            if not self.transactional:
                raise W.TransactionUsage(f"queue {self.ref} is not transactional: send without a transaction")
            single = True
        else:
            raise W.TransactionUsage(
                f"queue {self.ref}: uid {B.uid()} has only the send right, so its sends go through the "
                "queue's incoming folder, which cannot join a transaction; send with SINGLE_MESSAGE "
                "(one file: all of a send_many or none)")
        if not prepared:
            return []
        now = time.time()
        host = B.host_name()
        records: list[tuple[bytes, bytes]] = []
        for m in prepared:
            data, kind = M.encode_body(m.body)
            m.body_type = kind
            m.id = M.new_message_id()
            m.sent_time = m.arrived_time = now
            m.source_machine = host
            m.sender_pid = os.getpid()
            m.sender_uid = B.uid()
            m.destination_queue = self.info.path
            m.transactional = single
            if self.transactional:
                m.priority = 0
                m.delivery = M.Delivery.RECOVERABLE
            m.abort_count = 0
            m.lookup_id = 0
            records.append((msgpack.packb(M.to_record(m), use_bin_type=True), data))
            if isinstance(m.body, (bytearray, memoryview)):
                m.body = data
        # one file per batch; a batch too large for one file is split unless it is one
        # transaction (SINGLE_MESSAGE), which must stay one file
        chunks: list[list[int]] = [[]]
        size = I.empty_size()
        for i, (props, data) in enumerate(records):
            need = I.overhead(props) + len(data)
            if chunks[-1] and (size + need > I.MAX_FILE or len(chunks[-1]) >= I.MAX_COUNT):
                if single:
                    raise W.InsufficientResources(
                        f"queue {self.ref}: a SINGLE_MESSAGE batch from a send-only user is one file "
                        f"of at most {I.MAX_FILE} bytes; send fewer or smaller messages")
                chunks.append([])
                size = I.empty_size()
            chunks[-1].append(i)
            size += need
        for chunk in chunks:
            try:
                blob = I.encode([records[i] for i in chunk], single_message=single)
            except I.IncomingFormatError as exc:
                raise W.IllegalPropertyValue(f"queue {self.ref}: {exc}") from None
            sync = any(prepared[i].delivery == M.Delivery.RECOVERABLE for i in chunk)
            try:
                F.write_drop_file(self._incoming, _drop_name(), blob, sync=sync)
            except W.MessageStorageFailed:
                raise
            except W.WinIPCError as exc:
                self._alive()
                if isinstance(exc, PermissionError):
                    raise W.QueueAccessDenied(f"queue {self.ref}: its incoming folder refuses uid {B.uid()}") from None
                raise W.MessageStorageFailed(f"queue {self.ref}: {exc.strerror or exc}") from None
        F.ring(self._wait_dir)
        return prepared

    # -- everything else needs the database

    def receive(self, timeout: float | None = None, *, transaction: TxArg = None) -> M.Message:
        raise self._denied("receive")

    def peek(self, timeout: float | None = None) -> M.Message:
        raise self._denied("peek")

    def receive_by_id(self, message_id: str, *, transaction: TxArg = None) -> M.Message:
        raise self._denied("receive")

    def peek_by_id(self, message_id: str) -> M.Message:
        raise self._denied("peek")

    def receive_by_correlation_id(self, correlation_id: str, timeout: float | None = 0.0, *,
                                  transaction: TxArg = None) -> M.Message:
        raise self._denied("receive")

    def peek_by_correlation_id(self, correlation_id: str, timeout: float | None = 0.0) -> M.Message:
        raise self._denied("peek")

    def cursor(self) -> Cursor:
        raise self._denied("a cursor")

    async def areceive(self, timeout: float | None = None, *, transaction: TxArg = None) -> M.Message:
        raise self._denied("receive")

    async def apeek(self, timeout: float | None = None) -> M.Message:
        raise self._denied("peek")

    def stat(self) -> QueueStat:
        raise self._denied("stat (the queue's counters)")

    def purge(self) -> int:
        raise self._denied("purge")

    def close(self) -> None:
        self._closed = True
