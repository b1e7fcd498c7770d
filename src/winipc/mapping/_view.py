"""Views of a file mapping (Win32: MapViewOfFile, FlushViewOfFile, UnmapViewOfFile).

A :class:`MappedView` *is* an :class:`mmap.mmap` (a subclass), so it has the buffer
protocol (``memoryview(view)``, ``numpy.frombuffer(view)``, ``ctypes.c_int.from_buffer``)
and mmap's methods (``view[a:b]``, ``read``, ``write``, ``find``...) with no copy. What it
adds is Windows lifetime (each view holds the named mapping alive on its own),
``FlushViewOfFile`` semantics for :meth:`flush`, and :meth:`ndarray`.
"""

from __future__ import annotations

import importlib
import math
import mmap
import weakref
from typing import Any, TypeGuard

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._core.namespace import NamedRef

#: the kinds of view, as MapViewOfFile's dwDesiredAccess selects them
READ, WRITE, COPY = "read", "write", "copy"
_MMAP_ACCESS = {READ: mmap.ACCESS_READ, WRITE: mmap.ACCESS_WRITE, COPY: mmap.ACCESS_COPY}
#: views still open, closed at interpreter exit (see ``_mapping.close_all``)
LIVE: weakref.WeakSet[MappedView] = weakref.WeakSet()


class MappedView(mmap.mmap):
    """A mapped view of a file mapping (Win32: the address MapViewOfFile returns).

    Made by :meth:`FileMapping.map_view <winipc.mapping.FileMapping.map_view>`, never
    directly. Indexing, slicing and ``memoryview(view)`` reach the shared memory itself.

    Attributes:
        name: the mapping's name (``Local\\\\x``), or None for an unnamed mapping.
        offset: where the view starts in the mapping (bytes, a multiple of 65536).
        access: ``"read"`` (FILE_MAP_READ), ``"write"`` (FILE_MAP_WRITE) or ``"copy"``
            (FILE_MAP_COPY: private copy-on-write, never seen by others nor written back).

    A read-only view is mapped without PROT_WRITE: writing through it raises
    ``TypeError`` (from the buffer: "cannot modify read-only memory"); the memory is
    never changed. ``len(view)`` is its size in bytes.
    """

    name: str | None
    offset: int
    access: str
    _hold: NamedRef | None
    _unmapped: bool

    def __new__(cls, fileno: int, length: int, *, access: int, offset: int) -> MappedView:
        return super().__new__(cls, fileno, length, access=access, offset=offset)

    def _setup(self, hold: NamedRef | None, name: str | None, offset: int, access: str) -> None:
        self._hold = hold
        self.name = name
        self.offset = offset
        self.access = access
        self._unmapped = False

    # ------------------------------------------------------------------ state
    @property
    def closed(self) -> bool:  # type: ignore[override]
        """True once :meth:`close` was called."""
        return getattr(self, "_unmapped", True)

    @property
    def readonly(self) -> bool:
        """True for FILE_MAP_READ views (the buffer is read-only)."""
        return self.access == READ

    def _check_open(self) -> None:
        if self.closed:
            raise W.InvalidHandle("the view is closed (UnmapViewOfFile)")

    def close(self) -> None:
        """Unmap the view (Win32: UnmapViewOfFile). Closing twice is harmless.

        The view's hold on the mapping is dropped at once (the last hold removes a named
        mapping). If memoryviews, arrays or ctypes objects still use the memory, the unmap
        itself waits until they are gone, so they never see freed memory; do not use
        the view after closing it.
        """
        if getattr(self, "_unmapped", True):
            if not super().closed:
                try:
                    super().close()
                except BufferError:
                    pass
            return
        self._unmapped = True
        hold, self._hold = self._hold, None
        try:
            super().close()
        except BufferError:
            pass  # exports still use it: unmapped when the last one is released
        finally:
            if hold is not None:
                hold.release()

    def __enter__(self) -> MappedView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} bytes"
        return f"<MappedView {self.name or '(unnamed)'} +{getattr(self, 'offset', 0)} {getattr(self, 'access', '?')} {state}>"

    # ------------------------------------------------------------------ operations
    def flush(self, offset: int = 0, size: int = 0) -> None:
        """Write dirty pages of the view back to its file (Win32: FlushViewOfFile).

        For a file-backed mapping this is msync(MS_SYNC); for memory-backed mappings and
        read-only or copy-on-write views there is nothing to write and it returns at once.
        Other processes see writes at once, flushed or not.

        Args:
            offset: bytes from the start of the view; rounded down to a page, as Windows does.
            size: bytes to flush; 0 means to the end of the view.

        Raises:
            InvalidHandle: the view is closed.
            InvalidParameter: the range leaves the view (the message names its size).
        """
        self._check_open()
        total = len(self)
        if not _is_int(offset) or not _is_int(size) or offset < 0 or size < 0:
            raise W.InvalidParameter(f"offset and size must be ints >= 0, not {offset!r}, {size!r}")
        if offset > total or offset + size > total:
            raise W.InvalidParameter(f"flush range {offset}+{size} leaves the view of {total} bytes")
        if self.access != WRITE:
            return
        length = (size or total - offset)
        start = offset - offset % mmap.PAGESIZE
        B.sync_map(self, start, length + (offset - start))

    def ndarray(self, dtype: Any, shape: int | tuple[int, ...] | None = None, offset: int = 0) -> Any:
        """A numpy array over the view's memory, without a copy.

        Args:
            dtype: anything ``numpy.dtype`` accepts (``"f8"``, ``numpy.int32``...).
            shape: the array's shape; None for a 1-D array over the rest of the view.
            offset: bytes from the start of the view where the array begins.

        Returns:
            ``numpy.ndarray``; read-only for a read-only view. It keeps the memory
            mapped while it lives.

        Raises:
            NotSupported: numpy is not installed.
            InvalidHandle: the view is closed.
            InvalidParameter: the array does not fit the view (the message names the sizes).
        """
        self._check_open()
        try:
            np: Any = importlib.import_module("numpy")
        except ImportError:
            raise W.NotSupported("view.ndarray() needs numpy, which is not installed") from None
        dt = np.dtype(dtype)
        if not _is_int(offset) or not 0 <= offset <= len(self):
            raise W.InvalidParameter(f"offset must be 0..{len(self)} (the view's size), not {offset!r}")
        if shape is None:
            count = (len(self) - offset) // dt.itemsize
            dims: tuple[int, ...] = (count,)
        else:
            dims = (shape,) if isinstance(shape, int) else tuple(shape)
            if not all(_is_int(d) and d >= 0 for d in dims):
                raise W.InvalidParameter(f"shape must be ints >= 0, not {shape!r}")
            count = math.prod(dims)
        need = count * dt.itemsize
        if offset + need > len(self):
            raise W.InvalidParameter(
                f"an array of shape {dims} of {dt} needs {need} bytes at offset {offset}; "
                f"the view has {len(self)} bytes"
            )
        return np.frombuffer(self, dtype=dt, count=count, offset=offset).reshape(dims)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def map_view(
    fd: int, length: int, offset: int, access: str, hold: NamedRef | None, name: str | None
) -> MappedView:
    """Map ``length`` bytes of ``fd`` from ``offset``; the view owns ``hold`` from then on."""
    try:
        view = B.map_fd(MappedView, fd, length, offset, _MMAP_ACCESS[access])
    except BaseException:
        if hold is not None:
            hold.release()
        raise
    view._setup(hold, name, offset, access)
    if hold is not None:
        LIVE.add(view)
    return view
