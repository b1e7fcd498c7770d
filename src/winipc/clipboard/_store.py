"""The clipboard store on disk: folder, locks, state file and data files.

Layout (``docs/wire/clipboard-store.md``, version 1)::

    <folder>/
        record        named clipboards only: msgpack {v, owner, security}
        lock          flock'ed (exclusive, briefly) around every read-modify-write of state
        open          byte 0 write-locked (OFD lock) by the handle that has the clipboard open
        state         msgpack map (see State), replaced atomically (temp file + rename)
        d.<hex>       one data file per rendered format, written before state names it

The default clipboard's folder is ``<local_root>/clipboard`` (per user, 0700); a named
clipboard's is ``<global_root>/clipboard/<storage id>`` created by its first user with
the modes (and POSIX ACLs) its SecurityAttributes give.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from typing import Any

import msgpack

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends import queue_files as Q
from winipc._core import roots
from winipc._core.names import ObjectName
from winipc._core.security import Access, SecurityAttributes

VERSION = 1
STATE = "state"
LOCK = "lock"
OPEN = "open"
RECORD = "record"
DATA_PREFIX = "d."
STATE_LIMIT = 1 << 20
RECORD_LIMIT = 64 * 1024
#: largest block one format may hold (bytes)
MAX_DATA = 1 << 30
FOLDER = "clipboard"


@dataclass
class State:
    """The clipboard's shared state (one msgpack map in ``state``)."""

    seq: int = 0
    owner: int | None = None
    owner_pid: int | None = None
    open_hwnd: int | None = None
    open_pid: int | None = None
    #: (format, data file name or None for a delayed format), in the order they were set
    formats: list[tuple[int, str | None]] = field(default_factory=list)
    listeners: list[int] = field(default_factory=list)
    #: (format, reader pid) while a reader waits for the owner to render a delayed format
    rendering: tuple[int, int] | None = None

    def encode(self) -> bytes:
        return bytes(
            msgpack.packb(
                {
                    "v": VERSION,
                    "seq": self.seq,
                    "owner": self.owner,
                    "owner_pid": self.owner_pid,
                    "open_hwnd": self.open_hwnd,
                    "open_pid": self.open_pid,
                    "formats": [[f, n] for f, n in self.formats],
                    "listeners": list(self.listeners),
                    "rendering": list(self.rendering) if self.rendering else None,
                },
                use_bin_type=True,
            )
        )

    @classmethod
    def decode(cls, raw: bytes, where: str) -> State:
        try:
            d = msgpack.unpackb(raw, raw=False, strict_map_key=True)
            if not isinstance(d, dict) or d.get("v") != VERSION:
                raise ValueError("unknown state version")

            def opt_int(v: Any) -> int | None:
                return None if v is None else int(v)

            formats: list[tuple[int, str | None]] = []
            for item in d.get("formats") or []:
                fmt, name = int(item[0]), item[1]
                if name is not None and (
                    not isinstance(name, str) or not name.startswith(DATA_PREFIX) or "/" in name
                ):
                    raise ValueError(f"bad data file name {name!r}")
                formats.append((fmt, name))
            rendering = d.get("rendering")
            return cls(
                seq=int(d["seq"]),
                owner=opt_int(d.get("owner")),
                owner_pid=opt_int(d.get("owner_pid")),
                open_hwnd=opt_int(d.get("open_hwnd")),
                open_pid=opt_int(d.get("open_pid")),
                formats=formats,
                listeners=[int(h) for h in d.get("listeners") or []],
                rendering=(int(rendering[0]), int(rendering[1])) if rendering else None,
            )
        except (ValueError, KeyError, TypeError, IndexError, msgpack.UnpackException) as exc:
            raise W.InvalidData(f"malformed clipboard state at {where}: {exc}") from None

    def find(self, fmt: int) -> int:
        for i, (f, _n) in enumerate(self.formats):
            if f == fmt:
                return i
        return -1


def _ensure_file(folder: str, name: str, mode: int) -> None:
    try:
        B.close_fd(B.write_new_file(folder, name, b"", mode))
    except W.AlreadyExists:
        pass


def _acl_maps(sec: SecurityAttributes, owner: int) -> tuple[dict[int, int], dict[int, int], bool]:
    users: dict[int, int] = {}
    groups: dict[int, int] = {}
    everyone = False
    for ace in sec.allow:
        if ace.kind == "uid" and ace.ident != owner:
            users[ace.ident] = 7
        elif ace.kind == "gid":
            groups[ace.ident] = 7
        elif ace.kind == "everyone":
            everyone = True
    return users, groups, everyone


class Store:
    """One clipboard's folder and the locks a handle holds on it."""

    def __init__(self, name: ObjectName | None, security: SecurityAttributes | None) -> None:
        self.name = name
        if name is None:
            self.folder = os.path.join(roots.local_root(), FOLDER)
            B.ensure_private_dir(self.folder)
            self.owner_uid = B.uid()
            self.security = SecurityAttributes()
            self.file_mode = 0o600
            self.display = "the clipboard"
        else:
            self.display = f"clipboard {name.display!r}"
            parent = os.path.join(roots.global_root(), FOLDER)
            self._shared_parent(parent)
            self.folder = os.path.join(parent, name.storage_id)
            self.owner_uid, self.security = self._create_or_open(parent, security or SecurityAttributes())
            self.file_mode = 0o600 if not self.security.opens_to_others else 0o660
        for fname in (LOCK, OPEN):
            _ensure_file(self.folder, fname, self.file_mode)
        self.lock = Q.FileLock(os.path.join(self.folder, LOCK), create=False)
        self._open_fd = -1

    # ----------------------------------------------------------------- creation

    @staticmethod
    def _shared_parent(parent: str) -> None:
        """``<global_root>/clipboard``: sticky 1777 when the global root is shared, else 0700."""
        root = os.path.dirname(parent)
        shared = False
        fid = B.lstat_id(root)
        if fid is not None and fid.mode & stat.S_ISVTX and fid.mode & 0o002:
            shared = True
        if B.lstat_id(parent) is None:
            tmp = B.make_temp_dir(root, 0o1777 if shared else 0o700)
            if not B.publish_dir(tmp, parent):
                B.remove_tree(tmp)
        B.verify_shared_root(parent, create=False)

    def _create_or_open(self, parent: str, security: SecurityAttributes) -> tuple[int, SecurityAttributes]:
        if B.lstat_id(self.folder) is None:
            self._create(parent, security)
        return self._check_existing()

    def _create(self, parent: str, security: SecurityAttributes) -> None:
        me = B.uid()
        others = security.opens_to_others
        tmp = B.make_temp_dir(parent, 0o700)
        try:
            mode = 0o660 if others else 0o600
            record = msgpack.packb(
                {"v": VERSION, "owner": me, "name": self.name.display if self.name else "",
                 "security": security.to_record()},
                use_bin_type=True,
            )
            B.close_fd(B.write_new_file(tmp, RECORD, bytes(record), 0o644 if others else 0o600))
            if others:
                users, groups, everyone = _acl_maps(security, me)
                dfd = B.open_dir(tmp)
                try:
                    ok = B.set_access_acl(dfd, users, groups, owner=7, group=0, other=7 if everyone else 0)
                    ok = ok and B.set_default_acl(
                        dfd, {me: 6, **{u: 6 for u in users}}, {g: 6 for g in groups},
                        owner=6, group=0, other=6 if everyone else 0,
                    )
                finally:
                    B.close_fd(dfd)
                if not ok:
                    raise W.NotSupported(
                        f"{self.display}: sharing a named clipboard with other users needs POSIX "
                        "ACLs, which this file system or OS does not offer"
                    )
            for fname in (LOCK, OPEN):
                _ensure_file(tmp, fname, mode)
            st = State()
            Q.write_drop_file(tmp, STATE, st.encode(), sync=False, mode=mode)
            if B.publish_dir(tmp, self.folder):
                return
        except BaseException:
            B.remove_tree(tmp)
            raise
        B.remove_tree(tmp)  # someone else created it first: use theirs

    def _check_existing(self) -> tuple[int, SecurityAttributes]:
        dfd = B.open_dir(self.folder)  # AccessDenied for another user's private clipboard
        try:
            here = B.fstat_id(dfd)
        finally:
            B.close_fd(dfd)
        rec = Q.read_drop_file(os.path.join(self.folder, RECORD), RECORD_LIMIT)
        if rec.data is None:
            if "Permission" in rec.problem or "denied" in rec.problem:
                raise W.AccessDenied(f"{self.display}: access denied")
            raise W.AccessDenied(f"{self.display}: its record {rec.problem}")
        if rec.uid != here.uid:
            raise W.AccessDenied(f"{self.display}: record and folder owners differ; refusing a squatted name")
        try:
            d = msgpack.unpackb(rec.data, raw=False)
            owner = int(d["owner"])
            sec = SecurityAttributes.from_record(d.get("security") or {})
        except (ValueError, KeyError, TypeError, msgpack.UnpackException, W.WinIPCError):
            raise W.InvalidData(f"{self.display}: malformed record") from None
        if owner != here.uid:
            raise W.AccessDenied(f"{self.display}: record claims another owner; refusing a squatted name")
        self.owner_uid, self.security = owner, sec
        self.require(Access.READ)
        return owner, sec

    def require(self, wanted: Access) -> None:
        """Raise AccessDenied unless the calling user has ``wanted`` on this clipboard."""
        if self.name is None:
            return
        me = B.uid()
        if me == 0 and self.owner_uid == 0:
            return
        if not self.security.check(self.owner_uid, me, B.gid(), wanted):
            raise W.AccessDenied(f"{self.display}: access denied (needs {wanted!r})")

    # ----------------------------------------------------------------- open lock

    @property
    def is_open_here(self) -> bool:
        return self._open_fd >= 0

    def try_open(self) -> bool:
        """Take the open lock without waiting; False when another handle holds it."""
        fd = B.open_file_readwrite(os.path.join(self.folder, OPEN))
        try:
            if not B.lock_byte(fd, 0, wait=False):
                B.close_fd(fd)
                return False
        except BaseException:
            B.close_fd(fd)
            raise
        self._open_fd = fd
        return True

    def release_open(self) -> None:
        fd, self._open_fd = self._open_fd, -1
        if fd >= 0:
            B.unlock_byte(fd, 0)
            B.close_fd(fd)

    def open_held(self) -> bool:
        """True when some handle (ours or another process's) has the clipboard open."""
        if self._open_fd >= 0:
            return True
        return B.file_is_held(os.path.join(self.folder, OPEN))

    # ----------------------------------------------------------------- state

    def load(self) -> State:
        """The state (call with ``lock`` held for a consistent read-modify-write)."""
        got = Q.read_drop_file(os.path.join(self.folder, STATE), STATE_LIMIT)
        if got.data is None:
            if got.problem == "gone":
                return State()
            raise W.AccessDenied(f"{self.display}: the state file {got.problem}")
        return State.decode(got.data, self.folder)

    def save(self, state: State) -> None:
        """Replace the state atomically, then remove data files it no longer names."""
        self._clear_tmp(STATE)
        Q.write_drop_file(self.folder, STATE, state.encode(), sync=False, mode=self.file_mode)
        keep = {n for _f, n in state.formats if n}
        for entry in B.list_dir(self.folder):
            if entry.startswith((DATA_PREFIX, ".tmp-" + DATA_PREFIX)) and entry not in keep:
                Q.remove_entry(os.path.join(self.folder, entry))

    def _clear_tmp(self, name: str) -> None:
        Q.remove_entry(os.path.join(self.folder, ".tmp-" + name))

    def write_data(self, data: bytes) -> str:
        """Write one format's bytes completely to a new data file; returns its name."""
        if len(data) > MAX_DATA:
            raise W.InvalidParameter(f"data is {len(data)} bytes; the limit is {MAX_DATA}")
        name = DATA_PREFIX + secrets.token_hex(8)
        Q.write_drop_file(self.folder, name, data, sync=False, mode=self.file_mode)
        return name

    def read_data(self, name: str) -> bytes | None:
        got = Q.read_drop_file(os.path.join(self.folder, name), MAX_DATA)
        return got.data

    def close(self) -> None:
        self.release_open()
        self.lock.close()
