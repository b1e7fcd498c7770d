"""The data behind named mappings: /dev/shm files, their permissions, holds, checks."""

from __future__ import annotations

import os
from typing import TypeGuard

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._core.names import ObjectName
from winipc._core.namespace import NamedRef, ObjectRecord
from winipc._core.security import Access, SecurityAttributes


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- security


def apply_security(fd: int, sec: SecurityAttributes, owner: int) -> None:
    """Open a data file to the principals ``sec`` allows (owner only when it allows none).

    With POSIX ACLs each allowed user or group gets exactly r (READ) or rw (WRITE); a deny
    entry takes its rights away from that principal. Without ACLs the mode is widened to
    what the most-allowed principal may do (0644 or 0666), and winipc's own check at open
    time keeps out the others that use winipc.
    """
    if not sec.opens_to_others:
        return
    users: dict[int, int] = {}
    groups: dict[int, int] = {}
    other = 0

    def bits(rights: Access) -> int:
        return (6 if rights & Access.WRITE else 0) | (4 if rights & Access.READ else 0)

    for ace in sec.allow:
        if ace.kind == "uid" and ace.ident != owner:
            users[ace.ident] = users.get(ace.ident, 0) | bits(ace.rights)
        elif ace.kind == "gid":
            groups[ace.ident] = groups.get(ace.ident, 0) | bits(ace.rights)
        elif ace.kind == "everyone":
            other |= bits(ace.rights)
    for ace in sec.deny:
        take = (6 if ace.rights & Access.READ else 0) | (2 if ace.rights & Access.WRITE else 0)
        if ace.kind == "uid" and ace.ident != owner:
            users[ace.ident] = users.get(ace.ident, other) & ~take
        elif ace.kind == "gid":
            groups[ace.ident] = groups.get(ace.ident, other) & ~take
        elif ace.kind == "everyone":
            other &= ~take
            users = {u: p & ~take for u, p in users.items()}
            groups = {g: p & ~take for g, p in groups.items()}
    if not B.set_file_acl(fd, users, groups, other):
        widest = other
        for p in (*users.values(), *groups.values()):
            widest |= p
        B.chmod_fd(fd, 0o600 | widest << 3 | widest)


def check_rights(rec: ObjectRecord, name: ObjectName, wanted: Access) -> None:
    """Refuse us (AccessDenied) unless the mapping's security grants ``wanted``."""
    sec = rec.security_attributes
    if not sec.check(rec.owner, B.uid(), B.gid(), wanted):
        what = "read and write" if wanted & Access.WRITE else "read"
        raise W.AccessDenied(f"{name.display}: its security does not let uid {B.uid()} {what} it")


# --------------------------------------------------------------------------- helpers


class NewShm:
    """The populate step of a new named mapping: its /dev/shm file, made once."""

    def __init__(self, fname: str, size: int, sec: SecurityAttributes, header: bytes) -> None:
        self.fname = fname
        self.size = size
        self.sec = sec
        self.header = header
        self.fd = -1

    def __call__(self, _tmpdir: str) -> None:
        if self.fd >= 0:
            return  # a retry of create(): the file is made already
        fd = B.create_shm_file(self.fname, 0o600, self.size)
        try:
            B.hold_shared(fd)
            apply_security(fd, self.sec, B.uid())
            if self.header:
                B.pwrite(fd, self.header, 0)
        except BaseException:
            B.close_fd(fd)
            self._unlink()
            raise
        self.fd = fd

    def _unlink(self) -> None:
        shm = B.shm_dir()
        if shm is not None:
            B.unlink_owned(os.path.join(shm, self.fname), B.uid())

    def discard(self) -> None:
        if self.fd >= 0:
            B.close_fd(self.fd)
            self.fd = -1
            self._unlink()


def extra_hold(ref: NamedRef) -> NamedRef | None:
    """Another hold on the object ``ref`` holds (for a view): its own lock byte.

    Made from ``ref``'s descriptor (a new open file description via /proc, else a
    duplicate that shares ``ref``'s lock), so it never depends on the name still
    pointing at the same object.
    """
    try:
        fd = B.reopen_fd(ref.fd, writable=True)
    except W.WinIPCError:
        try:
            fd = B.dup_fd(ref.fd)
        except W.WinIPCError:
            return None
    try:
        hold = NamedRef(ref.name, ref.root, ref.path, fd, ref.record)
    except BaseException:
        B.close_fd(fd)
        raise
    hold._dir_id = ref._dir_id
    return hold


def open_data(rec: ObjectRecord, name: ObjectName, writable: bool) -> int:
    """Open the data behind an existing named mapping, checked against its record."""
    attrs = rec.attrs
    size = attrs.get("size")
    if not is_int(size) or size <= 0:
        raise W.InvalidData(f"{name.display}: malformed mapping record (size {size!r})")
    if attrs.get("backing") == "memory":
        files = attrs.get("shm_files")
        fname = files[0] if isinstance(files, list) and len(files) == 1 else None
        prefix = f"winipc.{rec.owner}.{name.storage_id}."
        if not isinstance(fname, str) or not fname.startswith(prefix) or "/" in fname:
            raise W.InvalidData(f"{name.display}: malformed mapping record (data file {fname!r})")
        fd = B.open_shm_file(fname, rec.owner, writable)
        try:
            B.hold_shared(fd)
        except BaseException:
            B.close_fd(fd)
            raise
    elif attrs.get("backing") == "file":
        path, dev, ino = attrs.get("file"), attrs.get("dev"), attrs.get("ino")
        if not isinstance(path, str) or not is_int(dev) or not is_int(ino):
            raise W.InvalidData(f"{name.display}: malformed mapping record (file {path!r})")
        fd, fid = B.open_backing_file(path, writable)
        if (fid.dev, fid.ino) != (dev, ino):
            B.close_fd(fd)
            raise W.AccessDenied(f"{name.display}: the file {path} was replaced since the mapping was made")
    else:
        raise W.InvalidData(f"{name.display}: unknown mapping backing {attrs.get('backing')!r}")
    if B.file_size(fd) < size:
        B.close_fd(fd)
        raise W.InvalidData(f"{name.display}: its data is shorter than its {size} bytes (truncated by someone)")
    return fd
