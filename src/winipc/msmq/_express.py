"""A local queue's express messages, kept in memory (MSMQ's MQMSG_DELIVERY_EXPRESS).

MSMQ keeps express messages in the queue manager's memory: no disk write, lost when the
machine or the service restarts. winipc has no service, so each local queue that can take
them has one file in /dev/shm (tmpfs: memory, gone at reboot) that every process using
the queue maps: :class:`winipc._native._xstore.XStore`, a block store with one FIFO list
per priority under a robust process-shared mutex (docs/wire/msmq-express.md).

The queue's folder holds the file's name (``express``, written once, atomically), so a
queue deleted and created again never meets the old queue's messages. The /dev/shm file
is 0600 and must belong to the queue's owner; it is opened without following links.

Used where the native extension is built and /dev/shm exists, for non-transactional
queues that only their owner uses (no ``security=`` grants): MSMQ does not send express
messages to transactional queues, and a shared queue's other users could not map an 0600
file. Elsewhere express messages go to the queue's SQLite database, which is slower and
more durable than asked.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import secrets
import stat
import struct
import zlib
from typing import Any

import msgpack

from winipc import errors as W
from winipc._backends import posix as B
from winipc.msmq import _message as M

try:
    if os.environ.get("WINIPC_NO_NATIVE", "") not in ("", "0"):
        raise ImportError("native accelerators disabled by WINIPC_NO_NATIVE")
    from winipc._native import _xstore as X
except ImportError:  # not built here (macOS, no compiler) or switched off
    X = None  # type: ignore[assignment]
else:  # what X.decode builds: Messages with these defaults and enum members
    X.configure(M.Message, M._DEFAULTS, M._DELIVERIES, M._ACKS, M._CLASSES, M.BODY_BYTES, M.BODY_MSGPACK)

#: find() modes and operations (the extension's FIRST.. and LOCATE.. values)
FIRST, KEY1, KEY2, AFTER, EXACT = range(5)
LOCATE, PEEK, TAKE = range(3)
#: Priorities 0..PRIORITIES-1
PRIORITIES = 8
#: Bytes of the /dev/shm file of one queue (sparse: memory is used as messages arrive).
CAPACITY = 256 * 1024 * 1024
#: The file in a queue's folder naming its express store.
TOKEN_FILE = "express"
_PREFIX = "winipc-msmq."
_LEN = struct.Struct("<I")
_MAX_TOKEN = 256
#: The header's magic and the offset of its ``deleted`` flag (u32; docs/wire/msmq-express.md).
MAGIC = b"WXSTORE1"
DELETED_OFFSET = 36
HEADER_SIZE = 4096


#: Express lookup ids are arrival stamps (ns since the epoch), far above SQLite's row ids.
STAMP_FLOOR = 10**18


def is_express_lookup_id(lookup_id: int) -> bool:
    """True for the lookup id of a message in an express store."""
    return lookup_id >= STAMP_FLOOR


def available() -> bool:
    """True where express stores can be used (the extension is built, /dev/shm exists)."""
    return X is not None and B.shm_dir() is not None


def message_key(text: str) -> bytes:
    """The key the store matches for a message id (key 1) or correlation id (key 2)."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) + 1 > X.MAX_KEY:
        return b"\xffH" + hashlib.blake2b(raw, digest_size=32).digest()
    return b"\x01" + raw  # b"" stands for "no correlation id"


def _read_token(folder: str) -> str | None:
    try:
        fd = os.open(os.path.join(folder, TOKEN_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise W.MessageStorageFailed(f"{folder}: express store name: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise W.CorruptQueueError(f"{folder}: {TOKEN_FILE} is not a regular file")
        name = os.read(fd, _MAX_TOKEN).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if not name.startswith(_PREFIX) or "/" in name or not name[len(_PREFIX):].replace(".", "").isalnum():
        raise W.CorruptQueueError(f"{folder}: {TOKEN_FILE} does not name an express store")
    return name


def _write_token(folder: str) -> str:
    """Name the queue's store once: the first writer's name wins (link is atomic)."""
    name = f"{_PREFIX}{B.uid()}.{secrets.token_hex(12)}"
    tmp = os.path.join(folder, f".{TOKEN_FILE}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, name.encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, os.path.join(folder, TOKEN_FILE))
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    got = _read_token(folder)
    assert got is not None
    return got


def _open_shm(name: str, owner: int) -> tuple[Any, bool]:
    """(the store, whether this call made its file)."""
    shm = B.shm_dir()
    if shm is None:
        raise W.NotSupported("express store: no /dev/shm")
    path = os.path.join(shm, name)
    made = False
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise W.MessageStorageFailed(f"express store {path}: {exc.strerror}") from None
        else:
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != owner or stat.S_IMODE(st.st_mode) & 0o077:
                    raise W.QueueAccessDenied(
                        f"express store {path} is not the queue owner's private file; refused")
                try:
                    return X.XStore(fd), made
                except ValueError as exc:
                    raise W.CorruptQueueError(f"express store {path}: {exc}") from None
            finally:
                os.close(fd)
        # missing (first use, or the machine restarted): make it under a temporary name,
        # then link it into place; a racing maker's file wins
        tmp = os.path.join(shm, f".{name}.{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, CAPACITY)
            X.XStore(fd, True).close()
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
                made = True
        finally:
            os.close(fd)
            os.unlink(tmp)
    raise W.MessageStorageFailed(f"express store {path}: could not be opened")


def open_store(folder: str, owner: int, ino: int) -> Any:
    """The queue's :class:`XStore` (made on first use), or raises MsmqError.

    ``ino`` is the folder's inode seen by the caller: when the folder is no longer that one
    once the store is open, the queue was deleted meanwhile (QueueNotFound; a store this
    call made after the deleter's unlink is removed again)."""
    name = _read_token(folder) or _write_token(folder)
    xs, made = _open_shm(name, owner)
    try:
        gone = xs.deleted or os.lstat(folder).st_ino != ino
    except FileNotFoundError:
        gone = True
    if gone:
        xs.close()
        if made and not _still_named(folder, name):  # made after MQDeleteQueue unlinked it
            shm = B.shm_dir()
            if shm is not None:
                B.unlink_owned(os.path.join(shm, name), owner)
        raise W.QueueNotFound(f"{folder}: the queue was deleted")
    return xs


def _still_named(folder: str, name: str) -> bool:
    """True while the queue at ``folder`` (maybe created again) names the store ``name``."""
    try:
        return _read_token(folder) == name
    except (W.WinIPCError, OSError):
        return False


def mark_deleted(path: str) -> bool:
    """Set the ``deleted`` flag of the store file ``path`` (True when set).

    Plain Python (mmap), so a process without the extension (``WINIPC_NO_NATIVE=1``)
    deleting the queue still tells every process that maps the store. The file must be a
    regular file (not followed if a link) with the store's magic."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < HEADER_SIZE:
            return False
        with mmap.mmap(fd, HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mm:
            if mm[:len(MAGIC)] != MAGIC:
                return False
            mm[DELETED_OFFSET:DELETED_OFFSET + 4] = _LEN.pack(1)  # aligned: one 4-byte store
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_store(folder: str) -> None:
    """MQDeleteQueue's part: flag the store of the queue in ``folder`` deleted (every process
    mapping it sees that on its next operation), then unlink the /dev/shm file."""
    shm = B.shm_dir()
    if shm is None:
        return
    try:
        name = _read_token(folder)
    except W.WinIPCError:
        return
    if name is not None:
        path = os.path.join(shm, name)
        with contextlib.suppress(OSError):
            owner = os.lstat(folder).st_uid
            if os.lstat(path).st_uid == owner:
                mark_deleted(path)
            B.unlink_owned(path, owner)


def translate(exc: BaseException, where: str) -> W.WinIPCError:
    """The MSMQ error for an exception of the native store."""
    if X is not None and isinstance(exc, X.Full):
        return W.InsufficientResources(f"{where}: the express store is full ({exc})")
    if isinstance(exc, OSError) and exc.errno == errno.ENOTRECOVERABLE:
        return W.CorruptQueueError(f"{where}: the express store's lock is not recoverable")
    return W.CorruptQueueError(f"{where}: express store: {exc}")


# ------------------------------------------------------------------------- records
# data = u32 length of the property record | property record | body; the record is format 2
# (fixed binary, written and read by the extension) or, in stores written by winipc before
# it, format 1 (a msgpack map as in the SQLite store)


def put(xs: Any, m: M.Message, body: bytes) -> tuple[int, int]:
    """Store ``m`` (its properties checked: exact types and ranges) with the stored
    ``body`` bytes; returns (stamp, waiters). Raises the extension's errors (see translate)."""
    cid = m.correlation_id
    return xs.put_message(m.__dict__, body, message_key(m.id), b"" if cid is None else message_key(cid))  # type: ignore[no-any-return]


def encode(m: M.Message, body: bytes) -> tuple[bytes, bytes, bytes, int]:
    """(key 1, key 2, data, crc) of a message with a format-1 (msgpack) record."""
    props = msgpack.packb(M.to_record(m), use_bin_type=True)
    data = b"".join((_LEN.pack(len(props)), props, body))
    k2 = b"" if m.correlation_id is None else message_key(m.correlation_id)
    return message_key(m.id), k2, data, zlib.crc32(data)


def decode(found: tuple[Any, ...], where: str) -> M.Message:
    """The Message of a ``find`` result; raises CorruptQueueError on any mismatch."""
    stamp, pri, _expires, crc, _k1, _k2, data = found
    try:
        m = X.decode(data, crc, stamp, pri)
    except ValueError as exc:
        raise W.CorruptQueueError(f"{where}: {exc}") from None
    if m is not None:
        if m.body_type is not M.BODY_BYTES:
            m.body = M.decode_body(m.body, m.body_type)
        return m  # type: ignore[no-any-return]
    return _decode_v1(found, where)


def _decode_v1(found: tuple[Any, ...], where: str) -> M.Message:
    stamp, pri, _expires, crc, _k1, _k2, data = found
    if zlib.crc32(data) != crc or len(data) < _LEN.size:
        raise W.CorruptQueueError(f"{where}: express message {stamp} fails its checksum")
    (n,) = _LEN.unpack_from(data)
    if _LEN.size + n > len(data):
        raise W.CorruptQueueError(f"{where}: express message {stamp}: bad record length")
    try:
        rec = msgpack.unpackb(data[_LEN.size:_LEN.size + n], raw=False)
    except Exception as exc:
        raise W.CorruptQueueError(f"{where}: express message {stamp} properties: {exc}") from None
    body_type = rec.get("body_type", M.BODY_BYTES) if isinstance(rec, dict) else M.BODY_BYTES
    m = M.from_record(rec, M.decode_body(data[_LEN.size + n:], body_type))
    if m.priority != pri:
        raise W.CorruptQueueError(f"{where}: express message {stamp}: record and store disagree")
    m.lookup_id = stamp
    return m


def split(found: tuple[Any, ...], m: M.Message) -> tuple[bytes, bytes]:
    """(property record as the SQLite store keeps it, body) of a ``find`` result and its
    decoded Message ``m`` (to copy it into another store)."""
    data = found[6]
    (n,) = _LEN.unpack_from(data)
    body = data[_LEN.size + n:]
    if n and data[_LEN.size] == 2:  # format 2: the SQLite store keeps msgpack records
        rec = M.to_record(m)
        rec["lookup_id"] = 0
        return msgpack.packb(rec, use_bin_type=True), body
    return data[_LEN.size:_LEN.size + n], body
