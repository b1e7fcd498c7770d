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
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import select
import shutil
import sqlite3
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import msgpack

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends import queue_files as F
from winipc._core.security import SecurityAttributes
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

STORE_VERSION = 1
DEFAULT_STORE = "/var/tmp/winipc-msmq"
SUB_CODES = {SUB_MAIN: 0, SUB_JOURNAL: 1, SUB_DEADLETTER: 2, SUB_POISON: 3}
READY, PENDING, LOCKED = 0, 1, 2
#: While a receiver waits and another transaction holds messages of the queue, it checks
#: this often (seconds) whether that transaction's owner died (its messages come back).
RECOVERY_INTERVAL = 0.5

_SCHEMA = """
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
  crc INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS msg_order ON msg(sub, state, pri DESC, seq);
CREATE INDEX IF NOT EXISTS msg_id ON msg(msgid);
CREATE INDEX IF NOT EXISTS msg_corr ON msg(corr) WHERE corr IS NOT NULL;
CREATE INDEX IF NOT EXISTS msg_tx ON msg(tx) WHERE tx IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters(
  sub INTEGER NOT NULL, state INTEGER NOT NULL, n INTEGER NOT NULL, bytes INTEGER NOT NULL,
  PRIMARY KEY(sub, state));
CREATE TABLE IF NOT EXISTS txlog(tx TEXT PRIMARY KEY, participants BLOB NOT NULL, created REAL NOT NULL);
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


# ---------------------------------------------------------------------------- the store


def store_root() -> str:
    """The verified queue store folder (created when missing).

    ``$WINIPC_ROOT/msmq`` when WINIPC_ROOT is set, else ``/var/tmp/winipc-msmq``: /var/tmp
    survives reboots (FHS), as durable queues must. Created 1777 (sticky) by root, else
    0700 for the user's own queues; verified like the machine-wide root.
    """
    env = os.environ.get("WINIPC_ROOT")
    if env:
        base = os.path.abspath(env)
        B.verify_shared_root(base, create=True)
        path = os.path.join(base, "msmq")
    else:
        path = DEFAULT_STORE
    B.verify_shared_root(path, create=True)
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


@dataclasses.dataclass
class _Row:
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
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            raise W.QueueNotFound(f"queue {self.ref} does not exist") from None
        except PermissionError:
            raise W.QueueAccessDenied(f"queue {self.ref}: no access to its folder") from None
        self.ino = st.st_ino
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            raise W.QueueAccessDenied(f"queue {self.ref}: access denied (the queue is its owner's only)")
        try:
            self.write_lock = F.FileLock(os.path.join(folder, "lock"))
            self.sync = F.GroupSync(os.path.join(folder, "sync"), self.db_path + "-wal", folder)
            mode = "rwc" if create is not None else "rw"
            conn = sqlite3.connect(
                f"file:{urllib.parse.quote(self.db_path)}?mode={mode}", uri=True, timeout=30.0,
                isolation_level=None, check_same_thread=False, cached_statements=64,
            )
            self.conn = conn
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if create is not None:
                conn.executescript(_SCHEMA)
                self._init_meta(create)
            self.info = self._read_info()
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

    def _init_meta(self, info: QueueInfo) -> None:
        assert self.conn is not None
        with self.write():
            blob = msgpack.packb(dataclasses.asdict(info), use_bin_type=True)
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (STORE_VERSION,))
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
        if rows.get("version") != STORE_VERSION:
            raise W.CorruptQueueError(f"queue {self.ref}: store version {rows.get('version')!r}, expected {STORE_VERSION}")
        rec = msgpack.unpackb(blob, raw=False)
        fields = {f.name for f in dataclasses.fields(QueueInfo)}
        return QueueInfo(**{k: v for k, v in rec.items() if k in fields})

    def check_alive(self) -> None:
        try:
            st = os.lstat(self.folder)
        except FileNotFoundError:
            raise W.QueueDeleted(f"queue {self.ref} was deleted") from None
        if st.st_ino != self.ino:
            raise W.QueueDeleted(f"queue {self.ref} was deleted (and created again)")

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under the queue's flock (commits on success)."""
        assert self.conn is not None and self.write_lock is not None
        with self._lock:
            self.write_lock.acquire()
            try:
                conn = self.conn
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                else:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _translate_db(exc, str(self.ref)) from None
            finally:
                self.write_lock.release()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        assert self.conn is not None
        with self._lock:
            try:
                yield self.conn
            except sqlite3.Error as exc:
                raise _translate_db(exc, str(self.ref)) from None

    def durable(self, committed_ns: int) -> None:
        assert self.sync is not None
        self.sync.durable(committed_ns)

    def ring(self) -> None:
        F.ring(self.wait_dir)

    def close(self) -> None:
        with self._lock:
            if self.conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.close()
                self.conn = None
            for res in (self.write_lock, self.sync, self.receivers):
                if res is not None:
                    res.close()
            self.write_lock = self.sync = self.receivers = None

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
               aborts: int = 0) -> int:
        props = msgpack.packb(M.to_record(m), use_bin_type=True)
        expires = m.expires_at
        cur = conn.execute(
            "INSERT INTO msg(sub, state, tx, txc, pri, msgid, corr, expires, aborts, size, props, body, crc)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (sub, state, tx, txc, m.priority, m.id, m.correlation_id, expires, aborts, len(body),
             props, body, _crc(props, body)),
        )
        return int(cur.lastrowid or 0)

    def counters(self, conn: sqlite3.Connection) -> dict[tuple[int, int], tuple[int, int]]:
        return {(s, st): (n, b) for s, st, n, b in conn.execute("SELECT sub, state, n, bytes FROM counters")}


# ----------------------------------------------------------------------- queue management


def create_queue(ref: QueueRef, *, transactional: bool = False, label: str = "", quota: int | None = None,
                 journal: bool = False, journal_quota: int | None = None, max_aborts: int = 5,
                 security: SecurityAttributes | None = None) -> QueueInfo:
    check_queue_properties(ref, label, quota, journal_quota, max_aborts)
    if ref.system:
        raise W.QueueExists("the system dead-letter queue exists already (it is created on first use)")
    if security is not None and security.opens_to_others:
        raise W.NotSupported(
            "queues shared with other users are not supported yet: a local queue is its owner's "
            "only (0700 folder, 0600 files)"
        )
    return _create(ref, QueueInfo(
        path=ref.path, format_name=ref.main().format_name, label=label, transactional=bool(transactional),
        quota=quota, journal=bool(journal), journal_quota=journal_quota, max_aborts=max_aborts,
        created=time.time(), owner_uid=B.uid(), backend="local",
    ))


def _create(ref: QueueRef, info: QueueInfo) -> QueueInfo:
    root = store_root()
    final = _queue_dir(ref, root)
    if os.path.lexists(final):
        raise W.QueueExists(f"queue {ref.path} exists already")
    tmp = os.path.join(root, f".new.{ref.file_stem()}.{os.getpid()}.{time.monotonic_ns()}")
    os.mkdir(tmp, 0o700)
    try:
        os.chmod(tmp, 0o700)
        os.mkdir(os.path.join(tmp, "wait"), 0o700)
        store = _Store(ref, tmp, create=info)
        store.close()
        for name in os.listdir(tmp):
            p = os.path.join(tmp, name)
            if os.path.isfile(p):
                os.chmod(p, 0o600)
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
    if ref.subqueue and not ref.system:
        raise W.MsmqError(f"{ref}: a subqueue is deleted with its queue",
                          winerror=W.MQ_ERROR_UNSUPPORTED_FORMATNAME_OPERATION)
    root = store_root()
    folder = _queue_dir(ref, root)
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
                os.rename(folder, dead)
        finally:
            store.close()
    F.ring(os.path.join(dead, "wait"))
    shutil.rmtree(dead, ignore_errors=True)
    sweep_tokens(_tx_folder(root))
    for m in nacks:
        _post_ack(m, M.MessageClass.NACK_Q_DELETED)


def purge_queue(ref: QueueRef) -> int:
    q = open_queue(ref, QueueAccess.RECEIVE, ShareMode.DENY_NONE)
    try:
        return q.purge()
    finally:
        q.close()


def queue_info(ref: QueueRef) -> QueueInfo:
    store = _open_store(ref)
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
                    counted = {(s, st): n for s, st, n, _b in conn.execute("SELECT sub, state, n, bytes FROM counters")}
                    actual = {(s, st): n for s, st, n in conn.execute("SELECT sub, state, COUNT(*) FROM msg GROUP BY sub, state")}
                finally:
                    conn.execute("COMMIT")
                for k in set(counted) | set(actual):
                    if counted.get(k, 0) != actual.get(k, 0):
                        problems.append(f"counters: subqueue {k[0]} state {k[1]} says {counted.get(k, 0)}, holds {actual.get(k, 0)}")
            except sqlite3.DatabaseError as exc:
                problems.append(f"sqlite: {exc}")
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


def _after_fork() -> None:
    global _token_lock
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


def open_queue(ref: QueueRef, access: QueueAccess, share: ShareMode) -> LocalQueue:
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
        if not self.access & need:
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
        m = M.make_message(body, props)
        m.message_class = M.MessageClass.NORMAL
        return self._send_prepared([m], transaction)[0]

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
        bodies = []
        for m in prepared:
            data, kind = M.encode_body(m.body)
            bodies.append(data)
            m.body_type = kind
            m.id = M.new_message_id()
            m.sent_time = m.arrived_time = now
            m.source_machine = host
            m.sender_pid = os.getpid()
            m.sender_uid = B.uid()
            m.destination_queue = store.info.path
            m.transactional = tx is not None
            if self.transactional:
                m.priority = 0  # MSMQ sends transactional messages at priority 0
                m.delivery = M.Delivery.RECOVERABLE
            m.abort_count = 0
        txid = txc = None
        if isinstance(tx, LocalTransaction):
            txc = tx.enlist(self.ref)
            txid = tx.id
        quota = store.info.quota
        with store.write() as conn:
            if quota is not None:
                row = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM counters WHERE sub = 0").fetchone()
                used = row[0] if row else 0
                total = sum(len(b) for b in bodies)
                if used + total > quota:
                    raise W.InsufficientResources(
                        f"queue {self.ref}: quota of {quota} bytes exceeded ({used} used, {total} more sent)")
            for m, data in zip(prepared, bodies, strict=True):
                m.lookup_id = store.insert(conn, m, data, state=PENDING if txid else READY, tx=txid, txc=txc)
        t = time.monotonic_ns()
        if txid is None:
            if any(m.delivery == M.Delivery.RECOVERABLE for m in prepared):
                store.durable(t)
            store.ring()
            for m in prepared:
                if m.acknowledge & M.Ack.POSITIVE_ARRIVAL:
                    _post_ack(m, M.MessageClass.ACK_REACH_QUEUE)
        else:
            assert isinstance(tx, LocalTransaction)
            for m in prepared:
                tx.note_sent(m)
        for m, data in zip(prepared, bodies, strict=True):
            if isinstance(m.body, (bytearray, memoryview)):
                m.body = data
        return prepared

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
        bell = self._doorbell_fd()
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
            f"SELECT {_COLS} FROM msg WHERE sub = ? AND state = 0 {extra} ORDER BY pri DESC, seq LIMIT 1",
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
                    conn.execute(
                        "INSERT INTO msg(sub, state, pri, msgid, corr, expires, aborts, size, props, body, crc)"
                        " VALUES (0, 0, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                        (r.pri, r.msgid, r.corr, r.aborts, r.size, r.props, r.body, r.crc),
                    )
            dlq.durable(time.monotonic_ns())
            dlq.ring()
        finally:
            dlq.close()
        with store.write() as conn:
            conn.executemany("DELETE FROM msg WHERE seq = ?", [(r.seq,) for r in rows])

    def _take(self, extra: str, params: tuple[Any, ...], tx: LocalTransaction | None,
              remove: bool) -> M.Message | None:
        store = self._store
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
        elif m.acknowledge & M.Ack.POSITIVE_RECEIVE:
            _post_ack(m, M.MessageClass.ACK_RECEIVE)
        return m

    def _receive_tx(self, transaction: TxArg) -> LocalTransaction | None:
        if transaction is None:
            return None
        if isinstance(transaction, _Single):
            raise W.TransactionUsage("SINGLE_MESSAGE is for sends; receive with a transaction or without one")
        tx = self._tx(transaction, sending=False)
        assert isinstance(tx, LocalTransaction)
        return tx

    def receive(self, timeout: float | None = None, *, transaction: TxArg = None) -> M.Message:
        self._check(QueueAccess.RECEIVE)
        tx = self._receive_tx(transaction)
        return self._wait(lambda: self._take("", (), tx, True), timeout, "receive")

    def peek(self, timeout: float | None = None) -> M.Message:
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        return self._wait(lambda: self._take("", (), None, False), timeout, "peek")

    def receive_by_id(self, message_id: str, *, transaction: TxArg = None) -> M.Message:
        self._check(QueueAccess.RECEIVE)
        tx = self._receive_tx(transaction)
        m = self._take("AND msgid = ?", (str(message_id),), tx, True)
        if m is None:
            raise W.MessageNotFound(f"queue {self.ref}: no message with id {message_id!r}")
        return m

    def peek_by_id(self, message_id: str) -> M.Message:
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        m = self._take("AND msgid = ?", (str(message_id),), None, False)
        if m is None:
            raise W.MessageNotFound(f"queue {self.ref}: no message with id {message_id!r}")
        return m

    def receive_by_correlation_id(self, correlation_id: str, timeout: float | None = 0.0, *,
                                  transaction: TxArg = None) -> M.Message:
        self._check(QueueAccess.RECEIVE)
        tx = self._receive_tx(transaction)
        cid = str(correlation_id)
        return self._wait(lambda: self._take("AND corr = ?", (cid,), tx, True), timeout,
                          "receive by correlation id")

    def peek_by_correlation_id(self, correlation_id: str, timeout: float | None = 0.0) -> M.Message:
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        cid = str(correlation_id)
        return self._wait(lambda: self._take("AND corr = ?", (cid,), None, False), timeout,
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
        while True:
            bell.drain()
            self._store.check_alive()
            m = self._take("", (), tx, True)
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
        with store.read() as conn:
            c = store.counters(conn)

        def n(sub: int, state: int = 0) -> int:
            return c.get((sub, state), (0, 0))[0]

        used = sum(b for (s, _st), (_n, b) in c.items() if s == self._sub)
        return QueueStat(
            info=store.info,
            messages=n(self._sub),
            bytes=used,
            locked=n(self._sub, LOCKED),
            journal_messages=n(1),
            deadletter_messages=n(2),
            poison_messages=n(3),
            durability="recoverable: fdatasync of the queue's WAL before send returns (group commit); "
            "express: in the queue file, not synced (survives process crashes, not machine crashes)",
            recoverable_is_durable=True,
        )

    def purge(self) -> int:
        store = self._check(QueueAccess.RECEIVE)
        with store.write() as conn:
            rows = [store.row(t) for t in conn.execute(
                f"SELECT {_COLS} FROM msg WHERE sub = ? AND state = 0", (self._sub,))]
            conn.execute("DELETE FROM msg WHERE sub = ? AND state = 0", (self._sub,))
        for r in rows:
            with contextlib.suppress(W.CorruptQueueError):
                m = store.to_message(r)
                if m.acknowledge & M.Ack.NEGATIVE_RECEIVE:
                    _post_ack(m, M.MessageClass.NACK_Q_PURGED)
        return len(rows)

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
    """A cursor over a local queue: its position is the (priority, lookup id) of a message."""

    def __init__(self, queue: LocalQueue) -> None:
        self._q = queue
        self._pos: tuple[int, int] | None = None
        self._removed = False
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise W.MsmqError("cursor is closed", winerror=W.MQ_ERROR_INVALID_HANDLE)

    def _after(self, pos: tuple[int, int]) -> tuple[str, tuple[Any, ...]]:
        pri, seq = pos
        return "AND (pri < ? OR (pri = ? AND seq > ?))", (pri, pri, seq)

    def _peek_at(self, extra: str, params: tuple[Any, ...], timeout: float | None) -> M.Message:
        q = self._q
        q._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        m = q._wait(lambda: q._take(extra, params, None, False), timeout, "cursor peek")
        self._pos = (m.priority, m.lookup_id)
        self._removed = False
        return m

    def peek_current(self, timeout: float | None = 0.0) -> M.Message:
        self._check()
        if self._pos is None:
            return self._peek_at("", (), timeout)
        if self._removed:
            extra, params = self._after(self._pos)
            return self._peek_at(extra, params, timeout)
        q = self._q
        m = q._take("AND seq = ?", (self._pos[1],), None, False)
        if m is None:
            raise W.MessageAlreadyReceived(f"queue {q.ref}: the message under the cursor was received")
        return m

    def peek_next(self, timeout: float | None = 0.0) -> M.Message:
        self._check()
        if self._pos is None:
            raise W.IllegalCursorAction("peek_next before peek_current: the cursor has no position yet")
        extra, params = self._after(self._pos)
        return self._peek_at(extra, params, timeout)

    def receive_current(self, timeout: float | None = 0.0, *, transaction: TxArg = None) -> M.Message:
        self._check()
        q = self._q
        q._check(QueueAccess.RECEIVE)
        if self._pos is None or self._removed:
            self.peek_current(timeout)
        assert self._pos is not None
        tx = q._receive_tx(transaction)
        m = q._take("AND seq = ?", (self._pos[1],), tx, True)
        if m is None:
            raise W.MessageAlreadyReceived(f"queue {q.ref}: the message under the cursor was received")
        self._removed = True
        return m

    def close(self) -> None:
        self._closed = True
