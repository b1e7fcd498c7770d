"""Shared sections: typed data every process attaching by name sees (DLL shared data).

On Windows a DLL can put global variables in a section marked shared
(``#pragma data_seg(".shared")`` + ``/SECTION:.shared,RWS``): every process that loads
the DLL sees the same variables. Here a :class:`SharedSection` is a named memory-backed
mapping laid out as::

    offset  size  field
    0       8     magic b"WIPCSECT"
    8       4     header version (1), little-endian
    12      4     header size (64)
    16      8     sizeof(StructType)
    24      4     pid of the lock's holder, 0 when free (detects an abandoned lock)
    28      4     reserved, 0
    32      32    SHA-256 of the structure's layout (field names, offsets, sizes, types)
    64      ...   the structure, zero-filled at creation

The first process to attach creates it (header written before the name becomes
visible, so nobody sees it half-made); later ones check the layout fingerprint, so a
process declaring different ``_fields_`` gets a clear error instead of garbage.

The lock is an open-file-description write lock on byte 1 of the section's data file
(byte 0 carries the holders' shared locks): the kernel releases it if its holder dies,
and the next holder learns that the lock was abandoned, as WAIT_ABANDONED tells on Windows.
Unlike Windows' shared sections (readable and writable by every process that loads the
DLL, whoever runs it), a section is its owner's only unless ``security`` opens it.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._core.security import SecurityAttributes
from winipc.mapping._mapping import FILE_MAP_ALL_ACCESS, PAGE_READWRITE, FileMapping, kernel_name
from winipc.mapping._view import MappedView

MAGIC = b"WIPCSECT"
VERSION = 1
HEADER_SIZE = 64
LOCK_BYTE = 1
_HEADER = struct.Struct("<8sIIQII32s")
_OWNER = struct.Struct("<I")
_OWNER_OFFSET = 24
#: ctypes type codes of fixed-size values (no pointers, no Python objects)
_PLAIN_CODES = frozenset("cbBhHiIlLqQfdg?u")

_S = TypeVar("_S", bound=ctypes.Structure)


def layout_of(struct_type: type[ctypes.Structure]) -> str:
    """A canonical description of a structure's layout (what the fingerprint hashes).

    Raises:
        InvalidParameter: not a ctypes.Structure, or a field holds a pointer or a
            Python object (meaningless in another process).
    """
    if not (isinstance(struct_type, type) and issubclass(struct_type, ctypes.Structure)):
        raise W.InvalidParameter(f"struct_type must be a ctypes.Structure subclass, not {struct_type!r}")
    if ctypes.sizeof(struct_type) == 0:
        raise W.InvalidParameter(f"{struct_type.__name__} has no fields (_fields_ is empty)")
    return _describe(struct_type, struct_type.__name__, 0)


def _describe(t: Any, where: str, depth: int) -> str:
    if depth > 32:
        raise W.InvalidParameter(f"{where}: structure nested too deeply")
    if isinstance(t, type) and issubclass(t, (ctypes.Structure, ctypes.Union)):
        kind = "union" if issubclass(t, ctypes.Union) else "struct"
        if issubclass(t, ctypes.BigEndianStructure):
            kind += "-be"
        elif issubclass(t, ctypes.LittleEndianStructure):
            kind += "-le"
        parts = []
        for spec in getattr(t, "_fields_", ()):
            fname, ftype = spec[0], spec[1]
            bits = f":{spec[2]}" if len(spec) > 2 else ""
            cf = getattr(t, fname)
            parts.append(f"{fname}@{cf.offset}+{cf.size}{bits}={_describe(ftype, f'{where}.{fname}', depth + 1)}")
        return f"{kind}[{ctypes.sizeof(t)}/{ctypes.alignment(t)}]{{{';'.join(parts)}}}"
    if isinstance(t, type) and issubclass(t, ctypes.Array):
        return f"{_describe(t._type_, where + '[]', depth + 1)}*{t._length_}"
    code = getattr(t, "_type_", None)
    if isinstance(t, type) and issubclass(t, ctypes._SimpleCData) and code in _PLAIN_CODES:
        return f"{code}{ctypes.sizeof(t)}"
    raise W.InvalidParameter(
        f"field {where} has type {getattr(t, '__name__', t)!r}: a shared section holds only "
        "integers, floats, chars, fixed-size arrays and nested structures (no pointers or "
        "Python objects, which mean nothing in another process)"
    )


def _fingerprint(struct_type: type[ctypes.Structure]) -> bytes:
    return hashlib.sha256(layout_of(struct_type).encode()).digest()


class SharedSection(Generic[_S]):
    """A named block of typed data shared by every process that attaches it.

    Attributes:
        name: the canonical name (``Local\\\\x``).
        data: an instance of the structure type laid over the shared memory: reading
            and assigning its fields reads and writes the shared bytes (no copy).
        created: True in the process that created the section.
        struct_type: the ``ctypes.Structure`` subclass given to :meth:`attach`.

    Single fields of up to 8 bytes are read and written whole on the platforms winipc
    runs on, but nothing orders them between processes: hold :meth:`lock` around any
    read-modify-write and any update of several fields.
    """

    def __init__(self, mapping: FileMapping, view: MappedView, struct_type: type[_S]) -> None:
        self._mapping = mapping
        self._view: MappedView | None = view
        self.struct_type = struct_type
        self.name = mapping.name
        self.created = not mapping.already_exists
        self._data: _S | None = struct_type.from_buffer(view, HEADER_SIZE)
        self._thread_lock = threading.Lock()

    @classmethod
    def attach(
        cls, name: str, struct_type: type[_S], security: SecurityAttributes | None = None
    ) -> SharedSection[_S]:
        """Attach the section ``name``, creating it zero-filled if nobody has it.

        Args:
            name: ``Global\\\\x``, ``Local\\\\x`` or ``x`` (kernel-object namespace).
            struct_type: a ``ctypes.Structure`` subclass whose ``_fields_`` are integers,
                floats, chars, fixed-size arrays or nested structures.
            security: who else may attach; owner only by default (used at creation).

        Raises:
            InvalidParameter: ``struct_type`` is not a plain structure, or the section
                exists with another layout (the message names both).
            InvalidHandle: (6) the name belongs to a kernel object of another type.
            AccessDenied: (5) the name is squatted or another user's object has it.
        """
        fingerprint = _fingerprint(struct_type)
        size = ctypes.sizeof(struct_type)
        header = _HEADER.pack(MAGIC, VERSION, HEADER_SIZE, size, 0, 0, fingerprint)
        oname = kernel_name(name)
        sec = security if security is not None else SecurityAttributes()
        extra = {"section": {"layout": fingerprint.hex(), "struct": struct_type.__name__, "size": size}}
        mapping = FileMapping._create_named(oname, HEADER_SIZE + size, PAGE_READWRITE, sec, extra, header)
        return cls._finish(mapping, struct_type, fingerprint)

    @classmethod
    def open(cls, name: str, struct_type: type[_S]) -> SharedSection[_S]:
        """Attach an existing section only, whoever made it, if its security lets us.

        Raises:
            FileNotFound: (2) no live section has the name.
            AccessDenied: (5) its security refuses us read and write.
            InvalidParameter, InvalidHandle: as for :meth:`attach`.
        """
        fingerprint = _fingerprint(struct_type)
        mapping = FileMapping.open(name, FILE_MAP_ALL_ACCESS)
        return cls._finish(mapping, struct_type, fingerprint)

    @classmethod
    def _finish(cls, mapping: FileMapping, struct_type: type[_S], fingerprint: bytes) -> SharedSection[_S]:
        try:
            ref = mapping._ref
            section = ref.record.attrs.get("section") if ref is not None else None
            if not isinstance(section, dict):
                raise W.InvalidParameter(f"{mapping.name} is a plain file mapping, not a shared section")
            if section.get("layout") != fingerprint.hex():
                raise W.InvalidParameter(
                    f"{mapping.name} was created with a different layout of its structure "
                    f"({section.get('struct')!r}, {section.get('size')} bytes) than struct_type "
                    f"{struct_type.__name__!r} ({ctypes.sizeof(struct_type)} bytes): every "
                    "process must declare the same _fields_"
                )
            if not mapping.writable:
                raise W.AccessDenied(f"{mapping.name}: a shared section needs read-write access")
            view = mapping.map_view()
        except BaseException:
            mapping.close()
            raise
        try:
            magic, version, hsize, ssize, _pid, _res, fp = _HEADER.unpack_from(view, 0)
            if (magic, version, hsize, ssize, fp) != (MAGIC, VERSION, HEADER_SIZE, ctypes.sizeof(struct_type), fingerprint):
                raise W.InvalidData(f"{mapping.name}: the section header is damaged")
            return cls(mapping, view, struct_type)
        except BaseException:
            view.close()
            mapping.close()
            raise

    # ------------------------------------------------------------------ data
    @property
    def data(self) -> _S:
        """The structure over the shared memory (see the class docstring)."""
        if self._data is None:
            raise W.InvalidHandle("the shared section is closed")
        return self._data

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._data is None

    # ------------------------------------------------------------------ lock
    @contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[bool]:
        """Hold the section's lock for a block: ``with section.lock() as abandoned: ...``.

        One holder at a time across every process and thread attached to the section;
        the kernel releases it if the holder dies. Not reentrant.

        Args:
            timeout: seconds to wait; None waits forever (blocked in the kernel). With a
                timeout the lock is polled, sleeping 0.1 ms growing to 5 ms between tries.

        Yields:
            True when the previous holder died holding the lock (Windows'
            WAIT_ABANDONED): the data may be half-updated.

        Raises:
            WaitTimeout: (258) not acquired within ``timeout``.
            InvalidHandle: the section is closed.
        """
        abandoned = self._acquire(timeout)
        try:
            yield abandoned
        finally:
            self._release()

    def _acquire(self, timeout: float | None) -> bool:
        view = self._view
        if view is None or self._data is None:
            raise W.InvalidHandle("the shared section is closed")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise W.InvalidParameter(f"timeout must be seconds >= 0 or None, not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise W.WaitTimeout(f"{self.name}: lock not acquired within {timeout} s")
        try:
            fd = self._mapping.fileno()
            if deadline is None:
                B.lock_byte(fd, LOCK_BYTE, wait=True)
            else:
                pause = 0.0001
                while not B.lock_byte(fd, LOCK_BYTE, wait=False):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise W.WaitTimeout(f"{self.name}: lock not acquired within {timeout} s")
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, 0.005)
            (previous,) = _OWNER.unpack_from(view, _OWNER_OFFSET)
            _OWNER.pack_into(view, _OWNER_OFFSET, B.pid())
            return bool(previous != 0)
        except BaseException:
            self._thread_lock.release()
            raise

    def _release(self) -> None:
        try:
            if self._view is not None:
                _OWNER.pack_into(self._view, _OWNER_OFFSET, 0)
                B.unlock_byte(self._mapping.fileno(), LOCK_BYTE)
        finally:
            self._thread_lock.release()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Detach (the last process to detach removes the section). Closing twice is harmless.

        ``data`` objects kept from before stay readable (the memory stays mapped while
        they live) but are no longer shared with anyone once the section is gone.
        """
        view, self._view = self._view, None
        self._data = None
        if view is not None:
            view.close()
        self._mapping.close()

    def __enter__(self) -> SharedSection[_S]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{ctypes.sizeof(self.struct_type)} bytes"
        return f"<SharedSection {self.name} {self.struct_type.__name__} {state}>"
