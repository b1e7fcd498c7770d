"""Handles: the one thing every winipc object is.

A :class:`Handle` closes once (``close()``, a ``with`` block, or garbage collection),
says whether it is ``closed``, and raises ``ERROR_INVALID_HANDLE`` when used after.
Its integer value (``int(h)``) is its descriptor, which is what a child started with
:func:`winipc.spawn` sees too.

A handle kind that can cross a process boundary implements :meth:`Handle._export`
(descriptors + a JSON-able description) and :meth:`Handle._import`; inheritance and
duplication (DuplicateHandle) both go through that pair.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from typing import Any, ClassVar

from winipc import errors as W

_KINDS: dict[str, type[Handle]] = {}
_close_lock = threading.Lock()
INHERIT_ENV = "WINIPC_INHERITED_HANDLES"


class Handle:
    """Base of every winipc handle (Win32: HANDLE, CloseHandle)."""

    kind: ClassVar[str] = ""
    _closed: bool = True

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            _KINDS[cls.kind] = cls

    # subclasses set self._closed = False once open
    @property
    def closed(self) -> bool:
        """True once the handle is closed."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise W.InvalidHandle(f"{type(self).__name__} is closed")

    def close(self) -> None:
        """Close the handle (Win32: CloseHandle). Closing twice is harmless."""
        with _close_lock:  # two threads closing at once must not both release
            if self._closed:
                return
            self._closed = True
        self._close()

    def _close(self) -> None:
        """Release the OS resources; called once."""

    def fileno(self) -> int:
        """The descriptor behind the handle.

        Raises:
            InvalidHandle: the handle is closed.
        """
        self._check_open()
        return self._fileno()

    def _fileno(self) -> int:
        raise W.NotSupported(f"{type(self).__name__} has no descriptor")

    def __int__(self) -> int:
        return self.fileno()

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ transfer
    def _export(self) -> tuple[list[int], dict[str, Any]]:
        """Descriptors and description needed to rebuild this handle elsewhere."""
        raise W.NotSupported(f"a {type(self).__name__} cannot be inherited or duplicated")

    @classmethod
    def _import(cls, fds: list[int], meta: dict[str, Any]) -> Handle:
        raise W.NotSupported(f"a {cls.__name__} cannot be received")


def export_handle(h: Handle) -> tuple[list[int], dict[str, Any]]:
    h._check_open()
    fds, meta = h._export()
    return fds, {"kind": h.kind, "module": type(h).__module__, "meta": meta, "nfds": len(fds)}


def _kind_class(kind: str, module: Any) -> type[Handle]:
    """The class of a handle kind, importing its winipc module if nobody has yet."""
    cls = _KINDS.get(kind)
    if cls is None and isinstance(module, str) and module.startswith("winipc.") and module.isascii():
        importlib.import_module(module)  # only winipc's own modules: the peer names it
        cls = _KINDS.get(kind)
    if cls is None:
        raise KeyError(f"unknown handle kind {kind!r}")
    return cls


def import_handle(fds: list[int], desc: Any) -> Handle:
    """Rebuild a handle from descriptors and the description :func:`export_handle` made.

    Raises:
        InvalidData: the description is malformed or names an unknown kind, or the
            descriptor count does not match (the descriptors are then closed).
    """
    try:
        if not isinstance(desc, dict):
            raise TypeError("description is not a map")
        kind = desc["kind"]
        meta = desc["meta"]
        if not isinstance(kind, str) or not isinstance(meta, dict):
            raise TypeError("kind or meta of the wrong type")
        cls = _kind_class(kind, desc.get("module"))
        if desc.get("nfds") != len(fds):
            raise ValueError(f"expected {desc.get('nfds')} descriptors, got {len(fds)}")
    except (KeyError, TypeError, ValueError, ImportError) as exc:
        _close_all(fds)
        raise W.InvalidData(f"bad handle description: {exc}") from None
    try:
        return cls._import(fds, meta)  # owns the descriptors once it returns
    except W.WinIPCError:
        _close_all(fds)
        raise
    except Exception as exc:
        _close_all(fds)
        raise W.InvalidData(f"cannot rebuild a {kind} handle: {exc}") from None


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


_inherited_lock = threading.Lock()
_inherited: dict[int, Handle] | None = None
_failed: dict[int, W.WinIPCError] = {}


def inherited_handle(value: int) -> Handle:
    """The handle a parent passed to this process with ``spawn(inherit=[...])``.

    Args:
        value: the parent's ``int(handle)``, which is also its value here.

    Raises:
        InvalidHandle: no handle of that value was inherited.
    """
    global _inherited
    with _inherited_lock:
        if _inherited is None:
            _inherited = {}
            try:
                table = json.loads(os.environ.get(INHERIT_ENV, "[]"))
            except ValueError:
                table = []
            for desc in table if isinstance(table, list) else []:
                fds = desc.get("fds") if isinstance(desc, dict) else None
                if not isinstance(fds, list) or not fds:
                    continue
                try:
                    _inherited[int(fds[0])] = import_handle([int(f) for f in fds], desc)
                except W.WinIPCError as exc:
                    _failed[int(fds[0])] = exc
        h = _inherited.get(value)
    if h is None:
        if value in _failed:
            raise W.InvalidHandle(
                f"the handle with value {value} was inherited but cannot be rebuilt: {_failed[value]}"
            )
        raise W.InvalidHandle(f"no handle with value {value} was inherited by this process")
    return h
