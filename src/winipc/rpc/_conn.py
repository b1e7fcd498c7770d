"""One RPC connection's frame traffic, shared by client and server: signing, calls, answers.

A call sends REQUEST and waits for its RESPONSE or FAULT; while it waits, the other side
may call back (REQUEST with the CALLBACK flag), which this side answers in place. A server
answers a client's REQUEST the same way a client answers a callback.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from winipc import errors as W
from winipc._core.security import Access, SecurityAttributes
from winipc._wire import rpc as wire
from winipc.rpc import _fast
from winipc.rpc._common import AuthLevel, Call, ClientInfo, error_of, fault_of, set_current
from winipc.rpc._idl import InterfaceSpec, MethodSpec
from winipc.rpc._transport import Channel

_call_ids = itertools.count(1)


@dataclass
class Registration:
    """An interface a side serves: the implementation's bound methods by opnum."""

    spec: InterfaceSpec
    impl: Any
    funcs: list[Callable[..., Any]]
    is_coro: list[bool]
    security: SecurityAttributes | None = None
    if_callback: Callable[[ClientInfo], bool] | None = None
    min_auth_level: AuthLevel = AuthLevel.NONE
    owner: int = 0

    @classmethod
    def make(cls, spec: InterfaceSpec, impl: Any, **kw: Any) -> Registration:
        funcs = []
        for m in spec.methods:
            fn = getattr(impl, m.name, None)
            if fn is None or getattr(fn, "__func__", None) is getattr(spec.cls, m.name, object()):
                raise W.InvalidParameter(f"{type(impl).__name__} does not implement {spec.name}.{m.name}")
            funcs.append(fn)
        return cls(spec, impl, funcs, [inspect.iscoroutinefunction(f) for f in funcs], **kw)

    def admits(self, client: ClientInfo) -> bool:
        """The per-interface access check (security for local callers, then if_callback)."""
        if client.auth_level < self.min_auth_level:
            return False
        if client.local and client.uid is not None:
            sec = self.security or SecurityAttributes()
            if not sec.check(self.owner, client.uid, client.gid or 0, Access.CONNECT):
                return False
        return self.if_callback is None or bool(self.if_callback(client))

    @functools.cached_property
    def fast_ops(self) -> list[Any]:
        """Per opnum, the method for the C call path (``_fast.op``), or None."""
        return [_fast.op(self, i) for i in range(len(self.funcs))]


class Conn:
    """Frame traffic on one channel, with the MAC state of PKT_INTEGRITY."""

    def __init__(self, channel: Channel, *, is_server: bool, oob_threshold: int = 65536) -> None:
        self.ch = channel
        self.is_server = is_server
        self.oob_threshold = oob_threshold
        self.mac_key: bytes | None = None
        self._send_seq = 0
        self._recv_seq = 0
        self._send_dir = 1 if is_server else 0
        self.loop: asyncio.AbstractEventLoop | None = None  # where coroutine methods run
        self.limit = channel.max_frame  # the peer's cap, once BIND / BIND_ACK told it

    # ------------------------------------------------------------- frames
    def send(self, ftype: int, flags: int, call_id: int, body: bytes, oob: list[memoryview] | None = None) -> None:
        total = wire.HEADER_SIZE + len(body) + (sum(len(b) for b in oob) if oob else 0) + wire.MAC_SIZE
        if total > self.limit:
            raise W.ProtocolError(f"an RPC frame of {total} bytes is over the peer's limit of {self.limit} bytes")
        if self.mac_key is None:
            self.ch.send(wire.frame_parts(ftype, flags, call_id, body, oob))
            return
        prefix = wire.mac_prefix(self._send_dir, self._send_seq)
        self._send_seq += 1
        self.ch.send(wire.frame_parts(ftype, flags, call_id, body, oob, self.mac_key, prefix))

    def recv(self, timeout: float | None = None) -> wire.Frame:
        return self.frame(self.ch.recv_raw(timeout))

    def frame(self, raw: bytes | bytearray | memoryview) -> wire.Frame:
        """A received frame's bytes, checked (header, and MAC under PKT_INTEGRITY)."""
        frame = wire.parse_frame(raw, self.ch.max_frame)
        if self.mac_key is not None:
            prefix = wire.mac_prefix(1 - self._send_dir, self._recv_seq)
            self._recv_seq += 1
            if not wire.check_mac(frame, self.mac_key, prefix):
                self.ch.close()
                raise W.SecurityPackageError("an RPC frame failed its integrity check (PKT_INTEGRITY): "
                                             "altered, replayed or unsigned; the connection is closed")
        return frame

    # ------------------------------------------------------------- calls
    def invoke(self, spec: InterfaceSpec, m: MethodSpec, values: list[Any], *, callback: bool = False,
               timeout: float | None = None, context_in: Callable[[bytes], Any] | None = None,
               answer: Callable[[wire.Frame], None] | None = None) -> Any:
        """Send a call and wait for its result (``answer`` serves calls coming back meanwhile)."""
        oob: list[memoryview] = []
        args = m.encode_args(values, oob, oob_threshold=self.oob_threshold)
        call_id = next(_call_ids) & 0xFFFF_FFFF
        flags = (wire.CALLBACK if callback else 0) | (wire.ONEWAY if m.oneway else 0)
        plain = not oob and self.mac_key is None
        if plain:
            data = wire.request_frame(spec.request_prefixes[m.opnum], flags, call_id, args)
            if len(data) + wire.MAC_SIZE > self.limit:
                raise W.ProtocolError(f"an RPC frame of {len(data) + wire.MAC_SIZE} bytes is over the peer's "
                                      f"limit of {self.limit} bytes")
            self.ch.send_frame(data)
        else:
            body = wire.request_body(spec.uuid.bytes, spec.version[0], spec.version[1], m.opnum, args,
                                     [len(b) for b in oob])
            self.send(wire.REQUEST, flags, call_id, body, oob)
        if m.oneway:
            return None
        return self.await_result(m, flags, call_id, plain, timeout, context_in, answer)

    def await_result(self, m: MethodSpec, flags: int, call_id: int, plain: bool, timeout: float | None,
                     context_in: Callable[[bytes], Any] | None, answer: Callable[[wire.Frame], None] | None,
                     raw: bytes | bytearray | memoryview | None = None) -> Any:
        """Wait for the answer to a sent call (``raw``: its first frame, received already)."""
        callback = bool(flags & wire.CALLBACK)
        while True:
            if raw is None:
                raw = self.ch.recv_raw(timeout)
            if plain:
                got = wire.quick_response(raw, flags & wire.CALLBACK, call_id)
                if got is not None:
                    return m.decode_result(got[0], (), context_in=context_in)
            frame = self.frame(raw)
            raw = None
            h = frame.header
            if h.type == wire.REQUEST and bool(h.flags & wire.CALLBACK) != callback and answer is not None:
                answer(frame)
                continue
            if h.call_id != call_id or bool(h.flags & wire.CALLBACK) != callback:
                raise W.ProtocolError(f"RPC frame type {h.type:#x} for call {h.call_id} while waiting for {call_id}")
            if h.type == wire.RESPONSE:
                result, res_oob = wire.parse_response(frame)
                return m.decode_result(result, res_oob, context_in=context_in)
            if h.type == wire.FAULT:
                status, type_name, message = wire.parse_status(frame.body, "FAULT")
                if h.flags & wire.DID_NOT_EXECUTE and status == W.RPC_S_CALL_FAILED:
                    status = W.RPC_S_CALL_FAILED_DNE
                raise error_of(status, type_name, message)
            raise W.ProtocolError(f"unexpected RPC frame type {h.type:#x} during a call")

    def fault(self, call_id: int, flags: int, exc: BaseException, executed: bool) -> None:
        status, type_name, message = fault_of(exc)
        out = flags & wire.CALLBACK | (0 if executed else wire.DID_NOT_EXECUTE)
        self.send(wire.FAULT, out, call_id, wire.status_body(status, type_name, message))

    def answer(self, frame: wire.Frame, lookup: Callable[[bytes, int, int], Registration],
               make_call: Callable[[int], Call | None], context_in: Callable[[bytes], Any] | None) -> None:
        """Run one REQUEST frame and send its RESPONSE or FAULT (none for [oneway])."""
        h = frame.header
        try:
            req = wire.parse_request(frame)
        except W.WinIPCError as exc:
            if not h.flags & wire.ONEWAY:
                self.fault(h.call_id, h.flags, exc, executed=False)
            return
        self.run_request(h.flags, h.call_id, req.if_uuid, req.major, req.minor, req.opnum, req.args, req.oob,
                         lookup, make_call, context_in)

    def run_request(self, flags: int, call_id: int, if_uuid: bytes, major: int, minor: int, opnum: int,
                    wire_args: Any, oob_in: list[memoryview] | tuple[()],
                    lookup: Callable[[bytes, int, int], Registration], make_call: Callable[[int], Call | None],
                    context_in: Callable[[bytes], Any] | None) -> None:
        """Run one parsed REQUEST (see :meth:`answer`) and send its RESPONSE or FAULT."""
        oneway = bool(flags & wire.ONEWAY)
        try:
            reg = lookup(if_uuid, major, minor)
            if opnum >= len(reg.funcs):
                raise W.ProcnumOutOfRange(f"{reg.spec.name} has {len(reg.funcs)} methods; opnum {opnum} is not one")
            m = reg.spec.methods[opnum]
            if m.oneway != oneway:
                raise W.BadStubData(f"{reg.spec.name}.{m.name}: the [oneway] attribute differs between client and server")
            args = m.decode_args(wire_args, oob_in, context_in=context_in)
        except W.WinIPCError as exc:
            if not oneway:
                self.fault(call_id, flags, exc, executed=False)
            return
        set_current((make_call, call_id))  # the Call object only if the method asks (current_call)
        try:
            if reg.is_coro[opnum]:
                if self.loop is None:
                    raise W.NotSupported(f"{reg.spec.name}.{m.name} is a coroutine; serve it with an event loop")
                result = asyncio.run_coroutine_threadsafe(reg.funcs[opnum](*args), self.loop).result()
            else:
                result = reg.funcs[opnum](*args)
        except Exception as exc:
            if not oneway:
                self.fault(call_id, flags, exc, executed=True)
            return
        finally:
            set_current(None)
        if not oneway:
            self.reply(m, flags, call_id, result)

    def reply(self, m: MethodSpec, flags: int, call_id: int, result: Any) -> None:
        """Send the RESPONSE to call ``call_id`` (a FAULT when ``result`` does not fit the method)."""
        try:
            oob: list[memoryview] = []
            res = m.encode_result(result, oob, oob_threshold=self.oob_threshold)
            if not oob and self.mac_key is None:
                data = wire.response_frame(flags & wire.CALLBACK, call_id, res)
                if len(data) + wire.MAC_SIZE <= self.limit:
                    self.ch.send_frame(data)
                    return
            body = wire.response_body(res, [len(b) for b in oob])
        except W.WinIPCError as exc:
            self.fault(call_id, flags, exc, executed=True)
            return
        self.send(wire.RESPONSE, flags & wire.CALLBACK, call_id, body, oob)
