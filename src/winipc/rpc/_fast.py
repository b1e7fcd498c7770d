"""The C call path for plain calls (``winipc._native._rpcfast``), and what it needs from Python.

A *plain* call has only scalar arguments and result (bool, int, float, str, bytes, None,
without a declared width), no out-of-band buffer and no PKT_INTEGRITY MAC, on a local
pipe connection with the shared-memory fast path (ncalrpc, ncacn_np on this machine). The
extension builds, sends and reads such a call's frames and runs the server method
without Python frames of winipc's own; whatever it is not sure of it hands back here
unchanged (docs/rpc.md, "The C call path"). Without the extension (another platform, or
``WINIPC_NO_NATIVE=1``) every call takes the Python path, with the same bytes on the wire.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from winipc._wire import rpc as wire
from winipc.rpc._idl import MethodSpec

if TYPE_CHECKING:
    from winipc.rpc._conn import Conn, Registration
    from winipc.rpc._transport import Channel

native: Any = None
try:
    if os.environ.get("WINIPC_NO_NATIVE", "") in ("", "0"):
        from winipc._native import _rpcfast as native
except ImportError:  # not built here: the Python path only
    native = None

# what Binding._resume is told the C path stopped at (STAGE_* in _rpcfast.c)
SEND_FAILED, RECV_FAILED, UNREAD_ANSWER = 0, 1, 2

# the value types whose wire value is the Python value itself
_SCALARS = (bool, int, float, str, bytes, type(None))
_MAX_PARAMS = 32


class Pool:
    """A binding's idle connections; the extension's ``Pool`` where it is built."""

    def __init__(self) -> None:
        self._idle: list[Any] = []
        self.closed = False

    def take(self) -> Any:
        """The most recently pooled connection, or None (also once closed)."""
        return self._idle.pop() if self._idle and not self.closed else None

    def put(self, conn: Any) -> bool:
        """Pool ``conn``; False when the pool is closed (the caller closes it)."""
        if self.closed:
            return False
        self._idle.append(conn)
        return True

    def put_cold(self, conns: list[Any]) -> bool:
        """Pool ``conns`` behind the others (calls take the warm ones first)."""
        if self.closed:
            return False
        self._idle[:0] = conns
        return True

    def close(self) -> list[Any]:
        """Refuse later puts; return the idle connections (for the caller to close)."""
        self.closed = True
        idle, self._idle = self._idle, []
        return idle

    def __len__(self) -> int:
        return len(self._idle)


def new_pool() -> Any:
    return native.Pool() if native is not None else Pool()


def _plain_kinds(m: MethodSpec) -> list[type] | None:
    simple: list[type] | None = m._simple
    if simple is None or len(simple) > _MAX_PARAMS:
        return None
    return simple


def _result_kind(m: MethodSpec) -> type | None:
    r = m.result
    return r.fast if r.fast in _SCALARS and r.width is None else None


def proxy_method(m: MethodSpec, prefix: bytes, slow: Callable[..., Any]) -> Callable[..., Any]:
    """The proxy's method for ``m``: the C path's when ``m`` is plain, else ``slow``."""
    kinds = _plain_kinds(m)
    result = _result_kind(m)
    if native is None or kinds is None or result is None or any(p.kw_only for p in m.params):
        return slow
    fm: Callable[..., Any] = native.FastMethod(slow, m, prefix, kinds, result, m.oneway)
    return fm


def client(pool: Any, timeout: float | None, resume: Callable[..., Any], oob_threshold: int) -> Any:
    """What a proxy's C methods reach the binding's connections through (None: Python only)."""
    if native is None or not isinstance(pool, native.Pool):
        return None
    return native.Client(pool, None if timeout is None else float(timeout), resume, oob_threshold)


def link(ch: Channel, conn: Conn) -> Any:
    """How the C path sends and receives on a client connection, or None (Python only)."""
    ring = ch.ring() if native is not None and conn.mac_key is None else None
    return None if ring is None else native.Link(ring.send, ring.recv, conn.limit)


def op(reg: Registration, opnum: int) -> Any:
    """The server method ``opnum`` of ``reg`` for the C path, or None."""
    if native is None or reg.is_coro[opnum]:
        return None
    m = reg.spec.methods[opnum]
    kinds = _plain_kinds(m)
    if kinds is None:
        return None
    return native.Op(reg.funcs[opnum], m, kinds, _result_kind(m), m.oneway)


def serve_loop(ch: Channel, conn: Conn, server: Any, current: Any, make_call: Callable[[int], Any]) -> Any:
    """The C loop of one server connection, or None (Python only)."""
    ring = ch.ring() if native is not None and conn.mac_key is None else None
    if ring is None:
        return None
    return native.ServeLoop(ring.send, ring.recv, server, current, make_call, conn.reply, conn.fault, conn.limit,
                            conn.oob_threshold)


def learn(loop: Any, reg: Registration | None, generation: int, if_uuid: bytes, major: int, minor: int,
          opnum: int) -> None:
    """After the Python path ran a call: let ``loop`` run the next ones of that method."""
    if reg is None or opnum >= len(reg.funcs):
        return
    o = reg.fast_ops[opnum]
    if o is not None:
        loop.learn(wire.request_prefix(if_uuid, major, minor, opnum), o, generation)
