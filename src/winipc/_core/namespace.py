"""The object namespace: create-or-open, Windows lifetime, listing and reclaiming.

Each named object is a directory in its root, named by :attr:`ObjectName.storage_id`::

    <root>/pipe.3f2a.../          the object, owned by its creator
        record                    JSON: type, display name, owner, creator pid, attributes
        holders                   empty; each handle write-locks one byte of it
        0.sock, 1.sock, ...       resources of the object (here: listening pipe instances)

Lifetime is Windows': every handle holds a write lock on its own byte of ``holders`` (an
open-file-description lock, so the kernel drops it when the handle's last descriptor
closes, also when the holder is killed). An object whose holders file has no locked byte is
dead; whoever finds it dead removes it, and nobody ever opens it. Create, open and
destroy are serialized by ``flock`` on the object's directory (the guard).

A new object is built under a temporary name, with its creator's lock already held, and
renamed into place, so a visible object is always complete and alive. A name taken by a
directory of another owner, a file, or a symlink is refused, never adopted.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._core import roots
from winipc._core.names import ObjectName
from winipc._core.security import SecurityAttributes

RECORD = "record"
HOLDERS = "holders"
RECORD_LIMIT = 64 * 1024
#: folders of services that live beside the objects in a root and are not objects: the
#: atom table, clipboards, the message-queue store and remote pipes' intakes (never listed,
#: never cleaned)
SERVICE_FOLDERS = frozenset({"atoms", "clipboard", "msmq", "pipe-remote"})
_RETRIES = 64


@dataclass(frozen=True)
class ObjectRecord:
    """What an object's ``record`` file says about it."""

    type: str
    name: str
    owner: int
    creator_pid: int
    created: float
    attrs: dict[str, Any] = field(default_factory=dict)
    security: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "type": self.type,
                "name": self.name,
                "owner": self.owner,
                "creator_pid": self.creator_pid,
                "created": self.created,
                "attrs": self.attrs,
                "security": self.security,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, raw: bytes, where: str) -> ObjectRecord:
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or d.get("v") != 1:
                raise ValueError("unknown record version")
            return cls(
                str(d["type"]),
                str(d["name"]),
                int(d["owner"]),
                int(d["creator_pid"]),
                float(d["created"]),
                dict(d.get("attrs") or {}),
                dict(d.get("security") or {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise W.InvalidData(f"malformed object record at {where}: {exc}") from None

    @property
    def security_attributes(self) -> SecurityAttributes:
        return SecurityAttributes.from_record(self.security)


class NamedRef:
    """One handle's hold on a named object (one locked byte of its record)."""

    def __init__(self, name: ObjectName, root: str, path: str, fd: int, record: ObjectRecord) -> None:
        self.name = name
        self.root = root
        self.path = path
        self.record = record
        self._fd = fd
        self._dir_id = B.lstat_id(path)
        B.take_slot(fd)
        _live.add(self)

    @classmethod
    def adopt(cls, name: ObjectName, root: str, path: str, fd: int, record: ObjectRecord) -> NamedRef:
        """Wrap a holders descriptor received from another process (inherited or passed).

        It shares the sender's open file description, hence its lock: no new slot.
        """
        ref = cls.__new__(cls)
        ref.name, ref.root, ref.path, ref.record, ref._fd = name, root, path, record, fd
        ref._dir_id = B.lstat_id(path)
        _live.add(ref)
        return ref

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def release(self) -> bool:
        """Drop this hold; the last one removes the object. Returns True if it did."""
        if self._fd < 0:
            return False
        fd, self._fd = self._fd, -1
        try:
            dfd = B.open_dir(self.path)
        except W.WinIPCError:
            B.close_fd(fd)  # the name was removed under us (winipc rm)
            return False
        try:
            B.guard(dfd)
            here = B.fstat_id(dfd)
            B.close_fd(fd)  # releases our lock unless a child or duplicate shares it
            if self._dir_id is None or (here.dev, here.ino) != (self._dir_id.dev, self._dir_id.ino):
                return False  # the name now belongs to another object
            probe = B.open_file_readonly(os.path.join(self.path, HOLDERS))
            try:
                if B.has_holders(probe):
                    return False
            finally:
                B.close_fd(probe)
            return _retire(self.root, self.path)
        except W.WinIPCError:
            return False
        finally:
            B.unguard(dfd)
            B.close_fd(dfd)


_SHM_NAME = re.compile(r"winipc\.(\d+)\.([a-z]+\.[0-9a-f]{24})\.[0-9a-f]{16}")


def shm_file_name(owner: int, storage_id: str) -> str:
    """A fresh name for memory-backed data of an object (kept in /dev/shm).

    An object lists such names in ``record.attrs["shm_files"]``; they are removed with the
    object (last handle, reclaim, ``winipc rm``, ``winipc clean``).
    """
    return f"winipc.{owner}.{storage_id}.{secrets.token_hex(8)}"


def _external_files(path: str) -> tuple[int, list[str]]:
    """(owner, paths) of the memory-backed files an object's record lists, validated."""
    shm = B.shm_dir()
    try:
        fd = B.open_file_readonly(os.path.join(path, RECORD))
    except W.WinIPCError:
        return -1, []
    try:
        owner = B.fstat_id(fd).uid
        rec = ObjectRecord.decode(B.read_fd(fd, RECORD_LIMIT), path)
    except W.WinIPCError:
        return -1, []
    finally:
        B.close_fd(fd)
    names = rec.attrs.get("shm_files", [])
    out = []
    for name in names if isinstance(names, list) and shm else []:
        m = _SHM_NAME.fullmatch(name) if isinstance(name, str) else None
        # only files named for this very object and its owner: a record cannot aim elsewhere
        if m and int(m.group(1)) == owner and m.group(2) == os.path.basename(path):
            out.append(os.path.join(str(shm), name))
    return owner, out


def _retire(root: str, path: str) -> bool:
    """Remove an object: its memory-backed files first, then its directory."""
    owner, files = _external_files(path)
    if owner not in (-1, B.uid()) and B.uid() != 0:
        return False
    for f in files:
        B.unlink_owned(f, owner)
    return B.retire_dir(root, path)


_live: weakref.WeakSet[NamedRef] = weakref.WeakSet()


@atexit.register
def _release_all() -> None:
    """Holds still open at a normal exit are released, so a last holder removes its object.

    The kernel drops a dying process's locks anyway; releasing here also removes the
    object's files (and /dev/shm memory) instead of leaving a dead leftover for the next
    create, open or ``winipc clean``.
    """
    for ref in list(_live):
        try:
            ref.release()
        except Exception:
            pass


def object_path(name: ObjectName) -> tuple[str, str]:
    """(root, directory) of a name; verifies the root."""
    root = roots.root_for(name)
    return root, os.path.join(root, name.storage_id)


class _Dead(Exception):
    pass


def _open_existing(name: ObjectName, root: str, path: str) -> NamedRef:
    """Hold an existing live object; raise _Dead after reclaiming a dead one."""
    dfd = B.open_dir(path)  # FileNotFound if gone; AccessDenied on a symlink/file squatter
    try:
        B.guard(dfd)
        here = B.fstat_id(dfd)
        now = B.lstat_id(path)
        if now is None or (now.dev, now.ino) != (here.dev, here.ino):
            raise _Dead()  # replaced or removed while we waited: look again
        rec_path = os.path.join(path, RECORD)
        try:
            rfd = B.open_file_readonly(rec_path)
            fd = B.open_file_readwrite(os.path.join(path, HOLDERS))
        except W.FileNotFound:
            _reclaim(root, path, here.uid, "it is incomplete")
            raise _Dead() from None
        try:
            for f in (rfd, fd):
                fid = B.fstat_id(f)
                if fid.uid != here.uid:
                    raise W.AccessDenied(
                        f"{name.display}: a file of the object is owned by uid {fid.uid} but "
                        f"its directory by uid {here.uid}; refusing a squatted name"
                    )
            if not B.has_holders(fd):
                _reclaim(root, path, here.uid, "no handle holds it")
                raise _Dead()
            record = ObjectRecord.decode(B.read_fd(rfd, RECORD_LIMIT), rec_path)
            if record.owner != here.uid:
                raise W.AccessDenied(
                    f"{name.display}: record claims owner {record.owner} but the directory "
                    f"belongs to uid {here.uid}; refusing a squatted name"
                )
            return NamedRef(name, root, path, fd, record)
        except BaseException:
            B.close_fd(fd)
            raise
        finally:
            B.close_fd(rfd)
    finally:
        B.unguard(dfd)
        B.close_fd(dfd)


def _reclaim(root: str, path: str, owner: int, why: str) -> None:
    if owner not in (B.uid(), 0) and B.uid() != 0:
        raise W.AccessDenied(
            f"{path} is a dead object ({why}) owned by uid {owner}; only its owner or root can "
            "reclaim it (winipc clean)"
        )
    if not _retire(root, path):
        raise W.AccessDenied(f"cannot reclaim dead object {path} ({why})")


def create(
    name: ObjectName,
    type_: str,
    attrs: dict[str, Any],
    security: SecurityAttributes,
    *,
    populate: Callable[[str], None] | None = None,
) -> tuple[NamedRef, bool]:
    """Create the named object, or hold the live one already there.

    Args:
        name: the object's name.
        type_: the object type recorded (``"pipe"``, ``"event"``, ...).
        attrs: type-specific attributes, JSON-serializable, fixed for the object's life.
        security: who may use it; decides the file modes.
        populate: called with the directory while it is still private, to create
            resources before the object becomes visible.

    Returns:
        (hold, created): ``created`` is False when a live object already had the name
        (the caller decides whether that is ERROR_ALREADY_EXISTS or an open). Its type
        may differ from ``type_``.

    Raises:
        AccessDenied: a file, symlink, or another user's dead object squats the name.
    """
    root, path = object_path(name)
    record = ObjectRecord(
        type_, name.display, B.uid(), B.pid(), time.time(), attrs, security.to_record()
    )
    for _ in range(_RETRIES):
        tmp = B.make_temp_dir(root, security.file_mode(directory=True))
        fd = -1
        try:
            B.close_fd(B.write_new_file(tmp, RECORD, record.encode(), security.file_mode()))
            fd = B.write_new_file(tmp, HOLDERS, b"", security.file_mode(holders=True))
            ref = NamedRef(name, root, path, fd, record)
            if populate is not None:
                populate(tmp)
            if B.publish_dir(tmp, path):
                ref._dir_id = B.lstat_id(path)
                return ref, True
        except BaseException:
            B.close_fd(fd)
            B.remove_tree(tmp)
            raise
        B.close_fd(fd)
        B.remove_tree(tmp)
        try:
            return _open_existing(name, root, path), False
        except (_Dead, W.FileNotFound):
            continue
    raise W.AccessDenied(f"{name.display}: the name keeps changing under us; gave up after {_RETRIES} tries")


def open_existing(name: ObjectName) -> NamedRef:
    """Hold the live object of this name.

    Raises:
        FileNotFound: no live object has the name.
        AccessDenied: the name is squatted or we may not read the object.
    """
    root, path = object_path(name)
    for _ in range(_RETRIES):
        try:
            return _open_existing(name, root, path)
        except _Dead:
            continue
        except W.FileNotFound:
            break
    raise W.FileNotFound(f"{name.display} does not exist")


def lookup(name: ObjectName) -> tuple[str, ObjectRecord]:
    """Read a live object's record without holding it (clients of pipes do this).

    Returns:
        (directory, record).

    Raises:
        FileNotFound: no live object has the name.
        AccessDenied: the record is unreadable to us or squatted.
    """
    _root, path = object_path(name)
    rec_path = os.path.join(path, RECORD)
    try:
        here = B.lstat_id(path)
        if here is None:
            raise W.FileNotFound(f"{name.display} does not exist")
        fd = B.open_file_readonly(rec_path)
    except W.FileNotFound:
        raise W.FileNotFound(f"{name.display} does not exist") from None
    try:
        fid = B.fstat_id(fd)
        if fid.uid != here.uid:
            raise W.AccessDenied(f"{name.display}: squatted name (record and directory owners differ)")
        if not _alive(path):
            raise W.FileNotFound(f"{name.display} does not exist (only a dead leftover is there)")
        record = ObjectRecord.decode(B.read_fd(fd, RECORD_LIMIT), rec_path)
        if record.owner != here.uid:
            raise W.AccessDenied(f"{name.display}: squatted name (record owner is not the directory owner)")
        return path, record
    finally:
        B.close_fd(fd)


def _count(path: str) -> int | None:
    """Handles holding the object at ``path`` (0 when it has no holders file)."""
    try:
        fd = B.open_file_readonly(os.path.join(path, HOLDERS))
    except W.FileNotFound:
        return 0
    except W.WinIPCError:
        return None
    try:
        return B.count_holders(fd)
    finally:
        B.close_fd(fd)


def _alive(path: str) -> bool:
    n = _count(path)
    return n is None or n > 0


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class ObjectInfo:
    """One entry of ``winipc ls``."""

    type: str
    name: str
    owner: int
    owner_name: str
    handles: int | None
    creator_pid: int | None
    created: float | None
    path: str
    fs_paths: tuple[str, ...]
    alive: bool
    scope: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "owner": self.owner_name,
            "uid": self.owner,
            "handles": self.handles,
            "creator_pid": self.creator_pid,
            "created": self.created,
            "path": self.path,
            "fs_paths": list(self.fs_paths),
            "alive": self.alive,
            "scope": self.scope,
        }


def _inspect(root: str, entry: str, scope: str) -> ObjectInfo | None:
    path = os.path.join(root, entry)
    st = B.lstat_id(path)
    if st is None:
        return None
    try:
        fd = B.open_file_readonly(os.path.join(path, RECORD))
    except W.WinIPCError:
        return ObjectInfo("?", entry, st.uid, B.user_name(st.uid), None, None, None, path, (), False, scope)
    try:
        holders = _count(path)
        try:
            rec: ObjectRecord | None = ObjectRecord.decode(B.read_fd(fd, RECORD_LIMIT), path)
        except W.WinIPCError:
            rec = None
    finally:
        B.close_fd(fd)
    extra = tuple(
        sorted(os.path.join(path, f) for f in B.list_dir(path) if f.endswith(".sock"))
    ) + tuple(_external_files(path)[1])
    alive = holders is None or holders > 0
    if rec is None:
        return ObjectInfo("?", entry, st.uid, B.user_name(st.uid), holders, None, None, path, extra, alive, scope)
    return ObjectInfo(
        rec.type,
        rec.name,
        st.uid,
        B.user_name(st.uid),
        holders,
        rec.creator_pid,
        rec.created,
        path,
        extra,
        alive,
        scope,
    )


def list_objects() -> list[ObjectInfo]:
    """Every object in both roots, live or dead, with its holder count."""
    out: list[ObjectInfo] = []
    seen: set[str] = set()
    for scope, root in (("local", roots.local_root()), ("global", roots.global_root())):
        if root in seen:
            continue
        seen.add(root)
        for entry in sorted(B.list_dir(root)):
            if entry.startswith(".") or entry.startswith("local-") or entry in SERVICE_FOLDERS:
                continue
            info = _inspect(root, entry, scope)
            if info is not None:
                out.append(info)
    return out


def remove(name: ObjectName) -> None:
    """Take a name out of the namespace now, live or not (``winipc rm``).

    Handles already open keep working on what they have; new opens fail.

    Raises:
        FileNotFound: nothing has the name.
        AccessDenied: the object is another user's.
    """
    root, path = object_path(name)
    st = B.lstat_id(path)
    if st is None:
        raise W.FileNotFound(f"{name.display} does not exist")
    if st.uid != B.uid() and B.uid() != 0:
        raise W.AccessDenied(f"{name.display} belongs to uid {st.uid}")
    if not _retire(root, path):
        raise W.AccessDenied(f"cannot remove {name.display}")


def clean() -> list[ObjectInfo]:
    """Remove every object whose holders are all dead, and stale temporary folders.

    Returns:
        What was removed. Objects of other users are skipped unless we are root.
    """
    removed: list[ObjectInfo] = []
    me = B.uid()
    for scope, root in (("local", roots.local_root()), ("global", roots.global_root())):
        for entry in B.list_dir(root):
            path = os.path.join(root, entry)
            if entry.startswith((".tmp.", ".dead.", ".b.")):
                st = B.lstat_id(path)
                if st is not None and (st.uid == me or me == 0) and _older_than(path, 60.0):
                    B.remove_tree(path)
                continue
            if entry.startswith(".") or entry.startswith("local-") or entry in SERVICE_FOLDERS:
                continue
            info = _inspect(root, entry, scope)
            if info is None or info.alive or (info.owner != me and me != 0):
                continue
            try:
                dfd = B.open_dir(path)
            except W.WinIPCError:
                continue
            try:
                B.guard(dfd)
                again = _inspect(root, entry, scope)
                if again is not None and not again.alive and _retire(root, path):
                    removed.append(info)
            finally:
                B.unguard(dfd)
                B.close_fd(dfd)
    _sweep_shm(me)
    return removed


def _sweep_shm(me: int) -> None:
    """Remove memory-backed files no process holds (their holders all died).

    Every process with such a file open holds a lock on it (``B.hold_shared``), whatever
    namespace root its object lives in, so an unheld file is an orphan; files younger
    than a minute are left to a creator that may not have locked it yet.
    """
    shm = B.shm_dir()
    if shm is None:
        return
    for name in B.list_dir(shm):
        m = _SHM_NAME.fullmatch(name)
        if not m or (int(m.group(1)) != me and me != 0):
            continue
        path = os.path.join(shm, name)
        age = B.mtime_age(path)
        if age is not None and age > 60.0 and not B.file_is_held(path):
            B.unlink_owned(path, int(m.group(1)))


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.lstat(path).st_mtime > seconds
    except OSError:
        return False
