"""Context handles: server state that lives while the client holds it ([context_handle]).

A server method creates one with :func:`new_context` and returns it; the client gets an
opaque :class:`ClientContextHandle` and passes it back as an argument, where the server
method receives the :class:`ServerContextHandle` again (``.value`` is its state). The
handle belongs to the client's association (the connections of one binding): when the
last of them closes — the client closed its binding, or died — every handle still open
is run down (the rundown callback gets ``value``), as Windows calls a context handle's
rundown routine.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from winipc import errors as W
from winipc.rpc._common import current_call
from winipc.rpc._idl import ContextHandle

log = logging.getLogger("winipc.rpc")


class ServerContextHandle(ContextHandle):
    """A context handle on the server: ``value`` is the state it stands for."""

    __slots__ = ("__weakref__", "_assoc", "rundown", "value")

    def __init__(self, uuid: bytes, value: Any, rundown: Callable[[Any], None] | None, assoc: Association) -> None:
        super().__init__(uuid)
        self.value = value
        self.rundown = rundown
        self._assoc = assoc

    @property
    def closed(self) -> bool:
        return self.uuid not in self._assoc.handles

    def close(self) -> None:
        """Destroy the handle without its rundown (the method that closes it calls this).

        The client's later use of it raises ContextMismatch.
        """
        self._assoc.handles.pop(self.uuid, None)


class ClientContextHandle(ContextHandle):
    """A context handle as the client holds it: opaque, valid on the binding that got it."""

    __slots__ = ("binding",)

    def __init__(self, uuid: bytes, binding: Any) -> None:
        super().__init__(uuid)
        self.binding = binding

    def __repr__(self) -> str:
        return f"<ClientContextHandle {self.uuid.hex()}>"


class Association:
    """The connections one client binding opened to this server, and their context handles."""

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.connections = 0
        self.handles: dict[bytes, ServerContextHandle] = {}

    def resolve(self, raw: bytes) -> ServerContextHandle:
        h = self.handles.get(raw)
        if h is None:
            raise W.ContextMismatch("the context handle is not open on this server (closed, run down, "
                                    "or another binding's)")
        return h

    def run_down(self) -> None:
        handles, self.handles = list(self.handles.values()), {}
        for h in handles:
            if h.rundown is not None:
                try:
                    h.rundown(h.value)
                except Exception:  # a rundown routine's failure must not stop the others
                    log.exception("context handle rundown raised")


class Associations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[Any, ...], Association] = {}

    def join(self, key: tuple[Any, ...]) -> Association:
        with self._lock:
            a = self._by_key.get(key)
            if a is None:
                a = self._by_key[key] = Association(key)
            a.connections += 1
            return a

    def leave(self, a: Association) -> None:
        with self._lock:
            a.connections -= 1
            if a.connections > 0:
                return
            self._by_key.pop(a.key, None)
        a.run_down()

    def run_down_all(self) -> None:
        with self._lock:
            items, self._by_key = list(self._by_key.values()), {}
        for a in items:
            a.run_down()


def new_context(value: Any, rundown: Callable[[Any], None] | None = None) -> ServerContextHandle:
    """Create a context handle for the calling client (inside a server method).

    Args:
        value: the state the handle stands for.
        rundown: called with ``value`` if the client goes away while holding the handle.

    Returns:
        The handle; return it (or put it in the result) to give it to the client.

    Raises:
        InvalidHandle: called outside a server method.
    """
    assoc: Association = current_call().association
    h = ServerContextHandle(os.urandom(16), value, rundown, assoc)
    assoc.handles[h.uuid] = h
    return h
