"""File mapping objects (Win32: CreateFileMapping, OpenFileMapping, MapViewOfFile).

A *named* memory-backed mapping is a namespace object of type ``"mapping"`` whose bytes
live in a file of /dev/shm (``winipc.<uid>.<storage id>.<random>``) that the object's
record lists under ``attrs["shm_files"]``, so the namespace removes it with the object:
last handle or view closed, a dead leftover reclaimed, ``winipc rm`` / ``winipc clean``.
Every process that has the file open holds a shared lock on it (``hold_shared``) so that
``winipc clean`` can tell orphans from files in use. Each handle and each view holds its
own lock byte of the object (a :class:`~winipc._core.namespace.NamedRef`): the mapping
lives while any handle or view is open, in any process.

An *unnamed* mapping is a sealed memfd: it needs no namespace entry and lives as long
as a descriptor or a view of it does; it crosses processes by inheritance
(``winipc.spawn(inherit=[m])``) or duplication (``PipeConnection.send_handle``).

A *file-backed* mapping maps a regular file as it is; named, its record keeps the file's
path and identity (device, inode) so that openers map the very same file.
"""

from __future__ import annotations

import atexit
import enum
import os
import sys
import weakref
from typing import Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._core import namespace
from winipc._core.handles import Handle
from winipc._core.names import ObjectName, parse
from winipc._core.namespace import NamedRef, ObjectRecord
from winipc._core.security import Access, SecurityAttributes
from winipc.mapping._backing import NewShm, check_rights, extra_hold, is_int, open_data
from winipc.mapping._view import COPY, LIVE, READ, WRITE, MappedView, map_view

# --------------------------------------------------------------------------- Win32 constants
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
PAGE_WRITECOPY = 0x08
FILE_MAP_COPY = 0x0001
FILE_MAP_WRITE = 0x0002
FILE_MAP_READ = 0x0004
FILE_MAP_EXECUTE = 0x0020
FILE_MAP_ALL_ACCESS = 0x000F001F

#: View offsets must be multiples of this (bytes). Linux would accept any multiple of the
#: page size (4096), but Windows' granularity is 64 KiB: keeping Windows' value means
#: code written against winipc ports to Windows unchanged.
ALLOCATION_GRANULARITY = 65536

#: the record type of mappings in the kernel-object namespace
TYPE = "mapping"
MAX_SIZE = sys.maxsize


class Protect(enum.IntEnum):
    """Page protection of a mapping (``flProtect`` of CreateFileMapping)."""

    READONLY = PAGE_READONLY
    READWRITE = PAGE_READWRITE
    WRITECOPY = PAGE_WRITECOPY


class MapAccess(enum.IntFlag):
    """Access to a mapping or a view (``FILE_MAP_*``)."""

    COPY = FILE_MAP_COPY
    WRITE = FILE_MAP_WRITE
    READ = FILE_MAP_READ
    ALL_ACCESS = FILE_MAP_ALL_ACCESS


_PROTECT_NAMES = {PAGE_READONLY: "PAGE_READONLY", PAGE_READWRITE: "PAGE_READWRITE", PAGE_WRITECOPY: "PAGE_WRITECOPY"}



def _check_protect(protect: object) -> int:
    if not is_int(protect) or int(protect) not in _PROTECT_NAMES:
        raise W.InvalidParameter(
            f"protect must be PAGE_READONLY (2), PAGE_READWRITE (4) or PAGE_WRITECOPY (8), not {protect!r}"
        )
    return int(protect)


def _check_access(access: object, what: str = "access") -> int:
    if not is_int(access) or int(access) <= 0 or int(access) & ~(FILE_MAP_ALL_ACCESS | FILE_MAP_EXECUTE):
        raise W.InvalidParameter(
            f"{what} must be FILE_MAP_READ, FILE_MAP_WRITE, FILE_MAP_COPY or FILE_MAP_ALL_ACCESS, not {access!r}"
        )
    if int(access) & FILE_MAP_EXECUTE:
        raise W.NotSupported("FILE_MAP_EXECUTE: executable views are not supported")
    return int(access)


def _view_kind(access: int) -> str:
    """MapViewOfFile's choice: exactly FILE_MAP_COPY is copy-on-write, else write, else read."""
    if access == FILE_MAP_COPY:
        return COPY
    if access & FILE_MAP_WRITE:
        return WRITE
    if access & FILE_MAP_READ:
        return READ
    raise W.InvalidParameter(f"view access {access:#x} grants neither read nor write")


def _check_size(size: object, what: str = "size", *, zero_ok: bool = False) -> int:
    low = 0 if zero_ok else 1
    if not is_int(size) or not low <= int(size) <= MAX_SIZE:
        raise W.InvalidParameter(f"{what} must be {low}..{MAX_SIZE} bytes, not {size!r}")
    return int(size)


def kernel_name(name: str) -> ObjectName:
    """Parse a kernel-object name (``Global\\x``, ``Local\\x``, ``x``)."""
    return parse(name, family="kernel")


# --------------------------------------------------------------------------- the handle


class FileMapping(Handle):
    """A file mapping object (Win32: the HANDLE CreateFileMapping returns).

    Make one with :meth:`create`, :meth:`from_file` or :meth:`open`; map views of it
    with :meth:`map_view`. ``int(mapping)`` is its descriptor (what a child started with
    ``winipc.spawn(inherit=[mapping])`` passes to ``winipc.inherited_handle``).

    Attributes:
        name: the canonical name (``Local\\\\x``), or None when unnamed.
        size: the mapping's size in bytes (views cannot reach beyond it).
        protect: PAGE_READONLY, PAGE_READWRITE or PAGE_WRITECOPY (of the object).
        writable: True when this handle may map FILE_MAP_WRITE views.
        already_exists: True when :meth:`create` found the name taken by a live mapping
            and opened it (GetLastError() == ERROR_ALREADY_EXISTS, 183).
        file: the mapped file's path for a file-backed mapping, else None.
    """

    kind = "file-mapping"

    def __init__(
        self,
        fd: int,
        *,
        size: int,
        protect: int,
        writable: bool,
        ref: NamedRef | None,
        already_exists: bool = False,
        file: str | None = None,
    ) -> None:
        self._fd = fd
        self._ref = ref
        self.size = size
        self.protect = protect
        self.writable = writable and protect == PAGE_READWRITE
        self.already_exists = already_exists
        self.file = file
        self.name = ref.name.display if ref is not None else None
        self._closed = False
        if ref is not None:
            _LIVE_HANDLES.add(self)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def create(
        cls,
        name: str | None,
        size: int,
        protect: int = PAGE_READWRITE,
        *,
        security: SecurityAttributes | None = None,
    ) -> FileMapping:
        """Create a memory-backed mapping of ``size`` zero bytes, or open the live one of that name.

        Win32: CreateFileMapping(INVALID_HANDLE_VALUE, ...). When a live mapping has the
        name, it is opened instead: ``already_exists`` is True and ``size`` and
        ``protect`` are ignored (the existing mapping's apply).

        Args:
            name: ``Global\\\\x``, ``Local\\\\x`` or ``x``; None for an unnamed mapping.
            size: bytes, >= 1.
            protect: PAGE_READWRITE (default), PAGE_READONLY or PAGE_WRITECOPY.
            security: who else may open it; owner only by default.

        Raises:
            InvalidName: a bad name.
            InvalidParameter: a bad size or protection (the message names the limit).
            InvalidHandle: (6) the name belongs to a kernel object of another type.
            AccessDenied: (5) the name is squatted, or held by another user's object
                (creating never adopts a foreign object; use :meth:`open` for that).
        """
        size = _check_size(size)
        protect = _check_protect(protect)
        sec = security if security is not None else SecurityAttributes()
        if name is None:
            fd = B.memfd(size, "winipc-mapping")
            return cls(fd, size=size, protect=protect, writable=True, ref=None)
        return cls._create_named(kernel_name(name), size, protect, sec, {}, b"")

    @classmethod
    def _create_named(
        cls,
        oname: ObjectName,
        size: int,
        protect: int,
        sec: SecurityAttributes,
        extra: dict[str, Any],
        header: bytes,
    ) -> FileMapping:
        fname = namespace.shm_file_name(B.uid(), oname.storage_id)
        attrs = {"backing": "memory", "size": size, "protect": protect, "shm_files": [fname], **extra}
        data = NewShm(fname, size, sec, header)
        try:
            ref, created = namespace.create(oname, TYPE, attrs, sec, populate=data)
        except BaseException:
            data.discard()
            raise
        if created:
            return cls(data.fd, size=size, protect=protect, writable=True, ref=ref)
        data.discard()
        return cls._join(ref, oname)

    @classmethod
    def _join(cls, ref: NamedRef, oname: ObjectName) -> FileMapping:
        """CreateFileMapping on a live name: open it with the access its protection gives."""
        try:
            rec = ref.record
            if rec.type != TYPE:
                raise W.InvalidHandle(f"{oname.display} is a {rec.type}, not a file mapping")
            if rec.owner != B.uid():
                raise W.AccessDenied(
                    f"{oname.display} exists and belongs to uid {rec.owner}; create never adopts "
                    "another user's object (use FileMapping.open to use it deliberately)"
                )
            protect = _check_protect(rec.attrs.get("protect"))
            writable = protect == PAGE_READWRITE
            check_rights(rec, oname, Access.READ | (Access.WRITE if writable else Access(0)))
            fd = open_data(rec, oname, writable)
        except BaseException:
            ref.release()
            raise
        return cls(
            fd,
            size=int(rec.attrs["size"]),
            protect=protect,
            writable=writable,
            ref=ref,
            already_exists=True,
            file=rec.attrs.get("file"),
        )

    @classmethod
    def from_file(
        cls,
        file: str | os.PathLike[str] | int,
        size: int = 0,
        protect: int = PAGE_READWRITE,
        *,
        name: str | None = None,
        security: SecurityAttributes | None = None,
    ) -> FileMapping:
        """Map a regular file (Win32: CreateFileMapping(hFile, ...)).

        Args:
            file: the file's path, or an open descriptor (duplicated; yours stays open).
            size: bytes; 0 means the file's size. Larger than the file grows it (zeros)
                with PAGE_READWRITE; with other protections that is an error.
            protect: PAGE_READWRITE (file opened read-write), PAGE_READONLY or
                PAGE_WRITECOPY (file opened read-only; FILE_MAP_COPY views change only a
                private copy, never the file).
            name: a kernel-object name so that others open it with :meth:`open`; needs
                ``file`` to be a path. A live mapping of that name is opened instead
                (``already_exists``) and ``file`` is not used.
            security: who else may open it by name (their own file access applies too).

        Raises:
            FileNotFound, AccessDenied: the file cannot be opened with that protection.
            InvalidParameter: an empty file with ``size`` 0, a size beyond the file that
                the protection cannot grow it to, or a named mapping of a descriptor.
            InvalidHandle: (6) the name belongs to a kernel object of another type.
        """
        protect = _check_protect(protect)
        size = _check_size(size, zero_ok=True)
        writable = protect == PAGE_READWRITE
        if isinstance(file, int):
            if name is not None:
                raise W.InvalidParameter("a named file mapping needs the file's path, not a descriptor")
            fd = B.dup_fd(file)
            path: str | None = None
        else:
            path = os.path.realpath(os.fspath(file))
            fd, _fid = B.open_backing_file(path, writable)
        try:
            fsize = B.file_size(fd)
            if size == 0:
                if fsize == 0:
                    raise W.InvalidParameter(f"{path or 'the file'} is empty: give a size > 0 to map it")
                size = fsize
            elif size > fsize:
                if not writable:
                    raise W.InvalidParameter(
                        f"size {size} exceeds the file's {fsize} bytes; only PAGE_READWRITE can grow the file"
                    )
                B.grow_file(fd, size)
            if name is None:
                return cls(fd, size=size, protect=protect, writable=writable, ref=None, file=path)
            assert path is not None
            fid = B.fstat_id(fd)
            oname = kernel_name(name)
            sec = security if security is not None else SecurityAttributes()
            attrs = {"backing": "file", "size": size, "protect": protect, "file": path, "dev": fid.dev, "ino": fid.ino}
            ref, created = namespace.create(oname, TYPE, attrs, sec)
        except BaseException:
            B.close_fd(fd)
            raise
        if created:
            return cls(fd, size=size, protect=protect, writable=writable, ref=ref, file=path)
        B.close_fd(fd)
        return cls._join(ref, oname)

    @classmethod
    def open(cls, name: str, access: int = FILE_MAP_ALL_ACCESS) -> FileMapping:
        """Open a live named mapping (Win32: OpenFileMapping).

        Args:
            name: ``Global\\\\x``, ``Local\\\\x`` or ``x``.
            access: FILE_MAP_ALL_ACCESS (default), FILE_MAP_WRITE (read and write),
                FILE_MAP_READ or FILE_MAP_COPY (read; copy-on-write views).

        Raises:
            FileNotFound: (2) no live object has the name.
            InvalidHandle: (6) the name belongs to a kernel object of another type.
            AccessDenied: (5) its security or its file's mode refuses the access.
        """
        access = _check_access(access)
        oname = kernel_name(name)
        ref = namespace.open_existing(oname)
        try:
            rec = ref.record
            if rec.type != TYPE:
                raise W.InvalidHandle(f"{oname.display} is a {rec.type}, not a file mapping")
            protect = _check_protect(rec.attrs.get("protect"))
            wants_write = bool(access & FILE_MAP_WRITE)
            check_rights(rec, oname, Access.READ | (Access.WRITE if wants_write else Access(0)))
            writable = wants_write and protect == PAGE_READWRITE
            fd = open_data(rec, oname, writable)
        except BaseException:
            ref.release()
            raise
        return cls(
            fd,
            size=int(rec.attrs["size"]),
            protect=protect,
            writable=writable,
            ref=ref,
            file=rec.attrs.get("file"),
        )

    # ------------------------------------------------------------------ views
    def map_view(self, offset: int = 0, size: int = 0, access: int | None = None) -> MappedView:
        """Map a view of the mapping into this process (Win32: MapViewOfFile).

        Args:
            offset: bytes from the start of the mapping; a multiple of
                :data:`ALLOCATION_GRANULARITY` (65536).
            size: bytes; 0 maps from ``offset`` to the end of the mapping.
            access: FILE_MAP_WRITE / FILE_MAP_ALL_ACCESS (read-write), FILE_MAP_READ
                (read-only, enforced by the OS), FILE_MAP_COPY (private copy-on-write).
                None: read-write when this handle may write, else read-only.

        Returns:
            The :class:`MappedView`; it keeps the mapping alive until it is closed.

        Raises:
            InvalidHandle: (6) the handle is closed.
            MappedAlignment: (1132) ``offset`` is not a multiple of 65536.
            InvalidParameter: (87) the view would end past the mapping (the message
                names its size), or a bad argument.
            AccessDenied: (5) a write view of a read-only mapping or through a
                read-only handle.
        """
        self._check_open()
        if access is None:
            kind = WRITE if self.writable else READ
        else:
            kind = _view_kind(_check_access(access))
        if kind == WRITE and not self.writable:
            why = (
                f"the mapping is {_PROTECT_NAMES[self.protect]}"
                if self.protect != PAGE_READWRITE
                else "this handle was opened without FILE_MAP_WRITE"
            )
            raise W.AccessDenied(f"{self.name or 'mapping'}: no write view: {why}")
        if not is_int(offset) or offset < 0:
            raise W.InvalidParameter(f"offset must be an int >= 0, not {offset!r}")
        size = _check_size(size, zero_ok=True)
        if offset % ALLOCATION_GRANULARITY:
            raise W.MappedAlignment(
                f"offset {offset} is not a multiple of the allocation granularity "
                f"({ALLOCATION_GRANULARITY} bytes)"
            )
        if offset >= self.size or offset + size > self.size:
            raise W.InvalidParameter(
                f"a view of {size or 'the rest'} bytes at offset {offset} ends past the "
                f"mapping's {self.size} bytes"
            )
        length = size or self.size - offset
        hold = extra_hold(self._ref) if self._ref is not None else None
        return map_view(self._fd, length, offset, kind, hold, self.name)

    # ------------------------------------------------------------------ handle
    def _fileno(self) -> int:
        return self._fd

    def _close(self) -> None:
        B.close_fd(self._fd)
        self._fd = -1
        if self._ref is not None:
            self._ref.release()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.size} bytes"
        return f"<FileMapping {self.name or '(unnamed)'} {_PROTECT_NAMES.get(self.protect, '?')} {state}>"

    def _export(self) -> tuple[list[int], dict[str, Any]]:
        meta: dict[str, Any] = {
            "size": self.size,
            "protect": self.protect,
            "writable": self.writable,
            "file": self.file,
        }
        fds = [self._fd]
        if self._ref is not None:
            fds.append(self._ref.fd)
            meta.update(
                raw=self._ref.name.raw,
                root=self._ref.root,
                path=self._ref.path,
                record=self._ref.record.encode().decode(),
            )
        return fds, meta

    @classmethod
    def _import(cls, fds: list[int], meta: dict[str, Any]) -> FileMapping:
        size = _check_size(meta["size"])
        protect = _check_protect(meta["protect"])
        file = meta.get("file")
        ref = None
        if len(fds) == 2:
            oname = kernel_name(str(meta["raw"]))
            record = ObjectRecord.decode(str(meta["record"]).encode(), "an inherited handle")
            try:  # our own lock byte, so that handle counts stay true
                own = B.reopen_fd(fds[1], writable=True)
                mine = True
            except W.WinIPCError:
                own, mine = fds[1], False  # share the sender's (another user's process)
            try:
                ref = NamedRef(oname, str(meta["root"]), str(meta["path"]), own, record)
            except BaseException:
                if mine:
                    B.close_fd(own)
                raise
            if mine:
                B.close_fd(fds[1])
        elif len(fds) != 1:
            raise ValueError(f"a file mapping travels with 1 or 2 descriptors, not {len(fds)}")
        return cls(
            fds[0],
            size=size,
            protect=protect,
            writable=bool(meta["writable"]),
            ref=ref,
            file=file if isinstance(file, str) else None,
        )


_LIVE_HANDLES: weakref.WeakSet[FileMapping] = weakref.WeakSet()


@atexit.register
def close_all() -> None:
    """Close the named mappings' views and handles still open when the interpreter exits.

    The kernel drops a dying process's holds anyway, but only closing them here removes
    a mapping (and frees its memory in /dev/shm) when this process held the last one;
    otherwise a dead leftover waits for the next create, open or ``winipc clean``.
    """
    for view in list(LIVE):
        try:
            view.close()
        except Exception:
            pass
    for handle in list(_LIVE_HANDLES):
        try:
            handle.close()
        except Exception:
            pass
