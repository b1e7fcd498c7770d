"""winipc._native._rpcfast's frames against the Python path's (winipc._wire.rpc), in process.

The C call path of winipc.rpc must write exactly the bytes of ``wire.request_frame`` and
``wire.response_frame`` (msgpack.Packer(use_bin_type=True)) and must take only frames the
Python readers (``wire.quick_response``, ``wire.quick_request``) read the same way, handing
back ("not taken": None / False) everything else. Builders are compared byte for byte on
random and edge values; readers and ``ServeLoop.run_one`` are fuzzed with arbitrary and
mutated frames, each value they take checked against the Python reader's. No process, no
ring: ``ServeLoop`` gets fake send/reply/fault callables and a fake server.
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from winipc._wire import rpc as wire
from winipc.rpc import _fast

native: Any = _fast.native
pytestmark = pytest.mark.skipif(native is None, reason="winipc._native._rpcfast is not built (or WINIPC_NO_NATIVE=1)")

NoneType = type(None)
KINDS: tuple[type, ...] = (bool, int, float, str, bytes, NoneType)
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
#: an out-of-band threshold above every bytes value generated here (nothing goes out of band)
BIG = 1 << 20
MAX_PARAMS = 32

EDGE_INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
             -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]
EDGE_FLOATS = [0.0, -0.0, 1.5, -2.5, math.inf, -math.inf, math.nan, -math.nan, 5e-324, 2.2250738585072014e-308,
               1.7976931348623157e308, struct.unpack(">d", bytes.fromhex("7ff0000000000001"))[0],  # a signalling NaN
               struct.unpack(">d", bytes.fromhex("fff8dead0000beef"))[0]]  # a NaN with a payload
#: UTF-8 lengths (bytes) around the msgpack str headers' limits
STR_LENS = [0, 1, 30, 31, 32, 33, 254, 255, 256, 257, 65534, 65535, 65536, 65537]
BYTES_LENS = [0, 1, 254, 255, 256, 257, 65534, 65535, 65536, 65537]
INVALID_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"a\x80b", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80"]


class StrSub(str):
    pass


class IntSub(int):
    pass


class FloatSub(float):
    pass


class BytesSub(bytes):
    pass


# -- helpers ----------------------------------------------------------------------------------


def bits(v: float) -> bytes:
    return struct.pack(">d", v)


def same(a: Any, b: Any) -> bool:
    """The same value of the same type; floats by their bits, any NaN equal to any NaN."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or bits(a) == bits(b)
    return bool(a == b)


def exactly(a: Any, b: Any) -> bool:
    """The same value of the same type; floats by their bits, NaN payloads included."""
    return type(a) is type(b) and (bits(a) == bits(b) if type(a) is float else bool(a == b))


def sized_text(n: int, c: str) -> str:
    """A str whose UTF-8 form is ``n`` bytes long, mostly of the character ``c``."""
    k = len(c.encode())
    return c * (n // k) + "a" * (n % k)


def header(ftype: int, flags: int, call_id: int, body_len: int, *, version: int = wire.VERSION, reserved: int = 0,
           oob_len: int = 0) -> bytes:
    return wire.HEADER.pack(version, ftype, flags, reserved, call_id, body_len, oob_len)


def mutate(raw: bytes, muts: Sequence[tuple[int, int, int]]) -> bytes:
    """``raw`` with each (operation, position, byte) applied: flip, insert, delete, truncate."""
    b = bytearray(raw)
    for op, pos, byte in muts:
        i = pos % (len(b) + 1)
        if op == 0 and b:
            b[i % len(b)] ^= byte
        elif op == 1:
            b.insert(i, byte)
        elif op == 2 and b:
            del b[i % len(b)]
        elif op == 3:
            del b[i:]
    return bytes(b)


# -- strategies: values -----------------------------------------------------------------------

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFF_FFFF)
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(INT_MIN, INT_MAX), st.integers(-300, 300))
floats = st.one_of(
    st.sampled_from(EDGE_FLOATS),
    st.floats(),  # nan and infinities included
    st.binary(min_size=8, max_size=8).map(lambda b: struct.unpack(">d", b)[0]),  # any bits, NaN payloads too
)
chars = st.characters(codec="utf-8")  # no lone surrogates
texts = st.one_of(st.text(chars, max_size=40), st.builds(sized_text, st.sampled_from(STR_LENS), chars))
blobs = st.one_of(st.binary(max_size=40),
                  st.builds(lambda n, b: b * n, st.sampled_from(BYTES_LENS), st.binary(min_size=1, max_size=1)))
VALUES: dict[type, st.SearchStrategy[Any]] = {bool: st.booleans(), int: ints, float: floats, str: texts,
                                               bytes: blobs, NoneType: st.none()}


def _typed(kind: type) -> st.SearchStrategy[tuple[type, Any]]:
    return VALUES[kind].map(lambda v: (kind, v))


#: (kind, value) with type(value) is kind, inside what the C path takes (with threshold BIG)
typed = st.sampled_from(KINDS).flatmap(_typed)
prefixes = st.builds(wire.request_prefix, st.binary(min_size=16, max_size=16), U16, U16, U16)

#: (kind, value) the C path does not take for kind: the Python path converts, names or refuses them
NOT_TAKEN: list[tuple[type, Any]] = [
    (int, 2**64), (int, INT_MIN - 1), (int, 2**100), (int, -(2**100)),
    (int, True), (int, False), (int, IntSub(1)), (int, 1.0), (int, "1"), (int, None),
    (float, 1), (float, 0), (float, True), (float, FloatSub(1.0)), (float, None), (float, "1.0"),
    (bool, 1), (bool, 0), (bool, None), (bool, 1.0),
    (str, "\ud800"), (str, "a\udfffb"), (str, "\udc80" * 40), (str, StrSub("x")), (str, b"x"), (str, None),
    (bytes, BytesSub(b"x")), (bytes, bytearray(b"x")), (bytes, memoryview(b"x")), (bytes, "x"), (bytes, None),
    (NoneType, 0), (NoneType, False), (NoneType, b""), (NoneType, ""),
]


# -- strategies: wire items (one msgpack item, canonical or not, well-formed or not) -----------

INT_TAGS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
NON_CANONICAL_INTS = [b"\xcd\x00\x01", b"\xcc\x05", b"\xce\x00\x00\x00\x07", b"\xcf" + bytes(8), b"\xd0\x05",
                      b"\xd0\xff", b"\xd1\xff\xff", b"\xd2\x00\x00\x00\x00", b"\xd3" + b"\xff" * 8,
                      b"\xd3\x7f" + b"\xff" * 7, b"\xcf\x80" + bytes(7), b"\xd3\x80" + bytes(7)]


def _raw_item(payload: bytes, form: int, fix: int | None, t8: int, t16: int, t32: int) -> bytes:
    """A str or bin item: the header of ``form`` (0 fix .. 3 32-bit) or the smallest that fits."""
    n = len(payload)
    if form == 0 and fix is not None and n < 32:
        return bytes([fix | n]) + payload
    if form <= 1 and n < 256:
        return bytes([t8, n]) + payload
    if form <= 2 and n < 65536:
        return bytes([t16]) + n.to_bytes(2, "big") + payload
    return bytes([t32]) + n.to_bytes(4, "big") + payload


payloads = st.one_of(st.text(chars, max_size=40).map(str.encode), st.binary(max_size=40),
                     st.sampled_from(INVALID_UTF8))
ENCODINGS: dict[type, st.SearchStrategy[bytes]] = {
    bool: st.sampled_from([b"\xc2", b"\xc3"]),
    NoneType: st.just(b"\xc0"),
    int: st.one_of(
        ints.map(wire.pack),
        st.sampled_from(NON_CANONICAL_INTS),
        st.tuples(st.sampled_from(sorted(INT_TAGS)), st.binary(min_size=8, max_size=8)).map(
            lambda t: bytes([t[0]]) + t[1][:INT_TAGS[t[0]]]),
        st.integers(0, 255).map(lambda b: bytes([b])),  # every one-byte item (fixints among them)
    ),
    float: st.one_of(
        floats.map(wire.pack),  # 0xcb
        st.binary(min_size=4, max_size=4).map(lambda b: b"\xca" + b),  # float 32
        st.floats(width=32).map(lambda f: b"\xca" + struct.pack(">f", f)),
    ),
    str: st.one_of(texts.map(wire.pack),
                   st.builds(lambda p, f: _raw_item(p, f, 0xA0, 0xD9, 0xDA, 0xDB), payloads, st.integers(0, 3))),
    bytes: st.one_of(blobs.map(wire.pack),
                     st.builds(lambda p, f: _raw_item(p, f, None, 0xC4, 0xC5, 0xC6), payloads, st.integers(0, 3))),
}
OTHER_ITEMS = [wire.pack([]), wire.pack([1]), wire.pack({}), wire.pack({"a": 1}), wire.pack([None, []]),
               msgpack.packb(msgpack.ExtType(1, b"x")), msgpack.packb(msgpack.ExtType(5, b"12345678")),
               b"\xc7\x0c\xff" + bytes(12), b"\xc1", b"\xca\x00", b"\xcb\x00\x00",
               b"\xd9", b"\xda\x00", b"\xdb\x00\x00\x00\x05ab", b"\xc4\x03a", b"\xc6\xff\xff\xff\xff",
               b"\xdb\xff\xff\xff\xff", b"\xcf\x00"]
any_item = st.one_of(*ENCODINGS.values(), st.sampled_from(OTHER_ITEMS), st.binary(max_size=12))


def item_for(kind: type) -> st.SearchStrategy[bytes]:
    """Mostly an encoding of a value of ``kind`` (canonical or not), sometimes anything."""
    return rarely(ENCODINGS[kind], any_item)


def rarely(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int = 7) -> st.SearchStrategy[Any]:
    """``common`` about ``odds`` times in ``odds + 1``, else ``rare`` (most fuzzed frames nearly valid)."""
    return st.sampled_from([True] * odds + [False]).flatmap(lambda c: common if c else rare)


array2 = rarely(st.just(b"\x92"), st.sampled_from([b"\xdc\x00\x02", b"\xdd\x00\x00\x00\x02", b"\x91", b"\x93",
                                                   b"\x90", b"\x82", b"\xc0", b""]))
oob_tail = rarely(st.just(b"\x90"), st.sampled_from([b"\xdc\x00\x00", b"\xdd\x00\x00\x00\x00", b"\x91\x00",
                                                     b"\x91\xa0", b"\xc0", b"\x80", b"", b"\x90\x90"]))
trailing = rarely(st.just(b""), st.binary(min_size=1, max_size=4))
mutations = rarely(st.just([]), st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(1, 255)),
                                         min_size=1, max_size=3), odds=2)


@st.composite
def headers(draw: st.DrawFn, ftype: int, flags: int, call_id: int, body_len: int) -> bytes:
    """The right header, or one with one field changed (version, type, flags, reserved, id, lengths)."""
    f = [wire.VERSION, ftype, flags, 0, call_id, body_len, 0]
    broken = draw(st.sampled_from([None, None, None, None, 0, 1, 2, 3, 4, 5, 5, 6]))
    if broken is not None:
        limit = 0xFF if broken < 4 else 0xFFFF_FFFF
        near = [v for v in (f[broken] - 1, f[broken] + 1, 0, limit) if 0 <= v <= limit]
        f[broken] = draw(st.one_of(st.sampled_from(near), st.integers(0, limit)))
    return wire.HEADER.pack(*f)


@st.composite
def response_frames(draw: st.DrawFn) -> tuple[bytes, int, int, type]:
    """(raw, flags, call_id, kind) to ask read_response: mostly nearly valid RESPONSE frames."""
    kind = draw(st.sampled_from(KINDS))
    flags = draw(st.sampled_from([0, wire.CALLBACK]))
    call_id = draw(U32)
    body = draw(array2) + draw(item_for(kind)) + draw(oob_tail) + draw(trailing)
    raw = mutate(draw(headers(wire.RESPONSE, flags, call_id, len(body))) + body, draw(mutations))
    ask_flags = draw(rarely(st.just(flags), st.sampled_from([0, wire.CALLBACK, wire.ONEWAY, 0xFF])))
    ask_id = draw(rarely(st.just(call_id), U32))
    return raw, ask_flags, ask_id, kind


# -- ServeLoop harness ------------------------------------------------------------------------


class FakeServer:
    def __init__(self) -> None:
        self._generation = 0


class Method:
    """Stands for the MethodSpec: only reply() receives it."""


class Harness:
    """A ServeLoop with recording fakes for send, make_call, reply and fault."""

    def __init__(self, *, limit: int = wire.MAX_FRAME_DEFAULT, oob_threshold: int = BIG,
                 send: Callable[[bytes], Any] | None = None) -> None:
        self.sent: list[bytes] = []
        self.replies: list[tuple[Any, int, int, Any]] = []
        self.faults: list[tuple[int, int, BaseException, bool]] = []
        self.server = FakeServer()
        self.current = threading.local()
        self.make_call = self._make_call  # one bound method: current.call holds this very object
        self.loop = native.ServeLoop(send or self.sent.append, self._recv, self.server, self.current, self.make_call,
                                     self._reply, self._fault, limit, oob_threshold)

    def _recv(self) -> bytes:
        raise AssertionError("run_one does not receive")

    def _make_call(self, call_id: int) -> Any:
        return ("call", call_id)

    def _reply(self, method: Any, flags: int, call_id: int, result: Any) -> None:
        self.replies.append((method, flags, call_id, result))

    def _fault(self, call_id: int, flags: int, exc: BaseException, executed: bool) -> None:
        self.faults.append((call_id, flags, exc, executed))


class Impl:
    """A server method: records its arguments and the thread's current call, returns or raises."""

    def __init__(self, h: Harness, result: Any = None, exc: BaseException | None = None) -> None:
        self.h = h
        self.result = result
        self.exc = exc
        self.calls: list[tuple[tuple[Any, ...], Any]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append((args, getattr(self.h.current, "call", "unset")))
        if self.exc is not None:
            raise self.exc
        return self.result


def op_for(impl: Impl, method: Any, kinds: Sequence[type], result: type | None, oneway: bool) -> Any:
    return native.Op(impl, method, list(kinds), result, oneway)


# -- 1. request_frame -------------------------------------------------------------------------

P0 = wire.request_prefix(bytes(range(16)), 1, 0, 3)


@settings(max_examples=300, deadline=None)
@given(prefix=prefixes, flags=st.integers(0, 255), call_id=U32, params=st.lists(typed, max_size=20))
@example(prefix=P0, flags=0, call_id=0, params=[(int, i) for i in range(15)])
@example(prefix=P0, flags=1, call_id=0xFFFF_FFFF, params=[(int, i) for i in range(16)])
@example(prefix=P0, flags=4, call_id=7, params=[(str, "é" * i) for i in range(17)])
def test_request_frame_is_the_python_paths(prefix: bytes, flags: int, call_id: int,
                                           params: list[tuple[type, Any]]) -> None:
    kinds = [k for k, _ in params]
    values = [v for _, v in params]
    assert native.request_frame(prefix, flags, call_id, values, kinds, BIG) == wire.request_frame(
        prefix, flags, call_id, values)


def edge_values() -> list[tuple[type, Any]]:
    out: list[tuple[type, Any]] = [(int, v) for v in EDGE_INTS] + [(float, v) for v in EDGE_FLOATS]
    out += [(str, sized_text(n, c)) for n in STR_LENS for c in ("a", "é", "€", "😀")]
    out += [(bytes, bytes([n % 251]) * n) for n in BYTES_LENS]
    out += [(bool, True), (bool, False), (NoneType, None), (str, "\x00"), (bytes, b"")]
    return out


EDGES = edge_values()


def _edge_id(kv: tuple[type, Any]) -> str:
    k, v = kv
    if k in (str, bytes):
        return f"{k.__name__}-len{len(v)}-{v[:1]!r}"
    return f"{k.__name__}-{bits(v).hex() if k is float else v!r}"


@pytest.mark.parametrize("kv", EDGES, ids=[_edge_id(kv) for kv in EDGES])
def test_edge_values_everywhere(kv: tuple[type, Any]) -> None:
    """Each edge value alone and after 15 others (array16 header), as argument and result."""
    kind, value = kv
    for n_before in (0, 15):
        kinds = [int] * n_before + [kind]
        values = [*range(n_before), value]
        assert native.request_frame(P0, 0, 9, values, kinds, BIG) == wire.request_frame(P0, 0, 9, values)
    for flags in (0, wire.CALLBACK):
        raw = wire.response_frame(flags, 9, value)
        assert native.response_frame(flags, 9, value, kind, BIG) == raw
        got = native.read_response(raw, flags, 9, kind)
        assert got is not None and exactly(got[0], value)
    h = Harness()
    impl = Impl(h, result=value)
    h.loop.learn(P0, op_for(impl, Method(), [kind], kind, False), 0)
    assert h.loop.run_one(wire.request_frame(P0, 0, 9, [value])) is True
    assert len(impl.calls) == 1 and exactly(impl.calls[0][0][0], value)
    assert h.sent == [wire.response_frame(0, 9, value)]


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 20, MAX_PARAMS])
def test_parameter_counts(n: int) -> None:
    """The arguments' array header: fixarray below 16 items, array16 from 16 on; up to 32 parameters."""
    values: list[Any] = [i * 1000 for i in range(n)]
    raw = wire.request_frame(P0, 0, 1, values)
    assert native.request_frame(P0, 0, 1, values, [int] * n, BIG) == raw
    h = Harness()
    impl = Impl(h, result=n)
    h.loop.learn(P0, op_for(impl, Method(), [int] * n, int, False), 0)
    assert h.loop.run_one(raw) is True
    assert impl.calls == [(tuple(values), (h.make_call, 1))]
    assert h.sent == [wire.response_frame(0, 1, n)]


def test_kinds_are_checked() -> None:
    with pytest.raises(ValueError):
        native.request_frame(P0, 0, 1, [1] * (MAX_PARAMS + 1), [int] * (MAX_PARAMS + 1), BIG)
    with pytest.raises(ValueError):
        native.Op(lambda: None, None, [int] * (MAX_PARAMS + 1), int, False)
    for bad in (list, object, IntSub, StrSub, None, 1):
        with pytest.raises(ValueError):
            native.request_frame(P0, 0, 1, [1], [bad], BIG)
        with pytest.raises(ValueError):
            native.response_frame(0, 1, 1, bad, BIG)
        with pytest.raises(ValueError):
            native.read_response(wire.response_frame(0, 1, 1), 0, 1, bad)
    with pytest.raises(ValueError):
        native.request_frame(P0, 0, 1, [1, 2], [int], BIG)


@settings(max_examples=200, deadline=None)
@given(prefix=prefixes, call_id=U32, params=st.lists(typed, max_size=8), bad=st.sampled_from(NOT_TAKEN),
       where=st.integers(0, 8), threshold=st.sampled_from([BIG, 65536, 1, 0]))
def test_request_frame_does_not_take_other_values(prefix: bytes, call_id: int, params: list[tuple[type, Any]],
                                                  bad: tuple[type, Any], where: int, threshold: int) -> None:
    params.insert(where % (len(params) + 1), bad)
    kinds = [k for k, _ in params]
    values = [v for _, v in params]
    assert native.request_frame(prefix, 0, call_id, values, kinds, threshold) is None


@settings(max_examples=200, deadline=None)
@given(n=st.one_of(st.integers(0, 70000), st.sampled_from(BYTES_LENS)), threshold=st.integers(0, 70000),
       extra=st.booleans())
@example(n=65535, threshold=65536, extra=False)
@example(n=65536, threshold=65536, extra=False)
@example(n=0, threshold=0, extra=True)
@example(n=0, threshold=1, extra=True)
def test_bytes_at_the_threshold_are_not_taken(n: int, threshold: int, extra: bool) -> None:
    """bytes of at least oob_threshold travel out of band in Python: the C path leaves them."""
    value = b"\x07" * n
    values: list[Any] = [1, value] if extra else [value]
    kinds: list[type] = [int, bytes] if extra else [bytes]
    got = native.request_frame(P0, 0, 3, values, kinds, threshold)
    res = native.response_frame(0, 3, value, bytes, threshold)
    if n < threshold:
        assert got == wire.request_frame(P0, 0, 3, values)
        assert res == wire.response_frame(0, 3, value)
    else:
        assert got is None
        assert res is None


# -- 2. response_frame ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(flags=st.sampled_from([0, wire.CALLBACK]), call_id=U32, kv=typed)
def test_response_frame_is_the_python_paths(flags: int, call_id: int, kv: tuple[type, Any]) -> None:
    kind, value = kv
    assert native.response_frame(flags, call_id, value, kind, BIG) == wire.response_frame(flags, call_id, value)


@settings(max_examples=100, deadline=None)
@given(flags=st.sampled_from([0, wire.CALLBACK]), call_id=U32, bad=st.sampled_from(NOT_TAKEN))
def test_response_frame_does_not_take_other_values(flags: int, call_id: int, bad: tuple[type, Any]) -> None:
    kind, value = bad
    assert native.response_frame(flags, call_id, value, kind, BIG) is None


# -- 3. read_response -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(flags=st.sampled_from([0, wire.CALLBACK]), call_id=U32, kv=typed, kind=st.sampled_from(KINDS))
def test_read_response_of_python_frames(flags: int, call_id: int, kv: tuple[type, Any], kind: type) -> None:
    """The value of the Python path's RESPONSE when it is exactly of ``kind``, else None (Python converts)."""
    value = kv[1]
    raw = wire.response_frame(flags, call_id, value)
    q = wire.quick_response(raw, flags, call_id)
    assert q is not None
    got = native.read_response(raw, flags, call_id, kind)
    if type(value) is kind:
        assert got is not None and type(got) is tuple and len(got) == 1
        assert exactly(got[0], value) and exactly(got[0], q[0])
    else:
        assert got is None
    # another call's answer, or the answer to a call with other flags, is not this call's
    assert native.read_response(raw, flags ^ wire.CALLBACK, call_id, kind) is None
    assert native.read_response(raw, flags, call_id ^ 1, kind) is None
    assert native.read_response(raw + b"\x00", flags, call_id, kind) is None
    assert native.read_response(raw[:-1], flags, call_id, kind) is None
    # a body that is not [result, []]: the Python reader refuses it whole
    body = raw[wire.HEADER_SIZE:]
    for other in (body + b"\x90", body + b"\x00", body[:-1] + b"\x91\x00", body[:-1] + b"\xc0\x90",
                  body[:-1] + b"\xc0", body[:-1] + b"\x80", b"\x93" + body[1:] + b"\xc0", b"\x91" + body[1:],
                  b"\x93" + body[1:]):
        framed = header(wire.RESPONSE, flags, call_id, len(other)) + other
        assert wire.quick_response(framed, flags, call_id) is None
        assert native.read_response(framed, flags, call_id, kind) is None
    # nor a header other than a plain RESPONSE's
    for framed in (header(wire.RESPONSE, flags, call_id, len(body), version=2) + body,
                   header(wire.RESPONSE, flags, call_id, len(body), reserved=1) + body,
                   header(wire.RESPONSE, flags, call_id, len(body), oob_len=1) + body + b"\x00",
                   header(wire.RESPONSE, flags, call_id, len(body), oob_len=1) + body,  # (and short of it)
                   header(wire.RESPONSE, flags | wire.SIGNED, call_id, len(body)) + body + bytes(wire.MAC_SIZE),
                   header(wire.REQUEST, flags, call_id, len(body)) + body,
                   header(wire.FAULT, flags, call_id, len(body)) + body):
        assert wire.quick_response(framed, flags, call_id) is None
        assert native.read_response(framed, flags, call_id, kind) is None


def check_read_response(raw: bytes, flags: int, call_id: int, kind: type) -> Any:
    """read_response must not raise; what it takes, quick_response reads as the same value of ``kind``."""
    got = native.read_response(raw, flags, call_id, kind)
    if got is not None:
        assert type(got) is tuple and len(got) == 1
        assert type(got[0]) is kind
        q = wire.quick_response(raw, flags, call_id)
        assert q is not None, f"C took a frame the Python path does not read: {raw.hex()}"
        assert len(q) == 2 and q[1] == []
        assert type(q[0]) is kind and same(q[0], got[0]), (q[0], got[0], raw.hex())
    return got


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=response_frames())
@example(frame=(header(wire.RESPONSE, 0, 1, 4) + b"\x92\xcd\x00\x01\x90"[:4], 0, 1, int))
@example(frame=(header(wire.RESPONSE, 0, 1, 5) + b"\x92\xcd\x00\x01\x90", 0, 1, int))
@example(frame=(header(wire.RESPONSE, 0, 1, 7) + b"\x92\xca\x3f\xc0\x00\x00\x90", 0, 1, float))
@example(frame=(header(wire.RESPONSE, 0, 1, 7) + b"\x92\xca\x7f\x80\x00\x01\x90", 0, 1, float))
@example(frame=(header(wire.RESPONSE, 0, 1, 6) + b"\x92\xa2\xc3\x28\x90", 0, 1, str))
@example(frame=(header(wire.RESPONSE, 0, 1, 7) + b"\x92\xa3\xed\xa0\x80\x90", 0, 1, str))
@example(frame=(header(wire.RESPONSE, 0, 1, 4) + b"\x92\xc3\x90\x00", 0, 1, bool))
@example(frame=(header(wire.RESPONSE, 0, 1, 5) + b"\x92\xc4\x05\x90", 0, 1, bytes))
@example(frame=(header(wire.RESPONSE, 0, 1, 6) + b"\xdc\x00\x02\xc0\x90", 0, 1, NoneType))
@example(frame=(header(wire.RESPONSE, 0, 1, 3, oob_len=1) + b"\x92\xc0\x90\x00", 0, 1, NoneType))
@example(frame=(header(wire.RESPONSE, 2, 1, 3) + b"\x92\xc0\x90" + bytes(32), 2, 1, NoneType))
def test_read_response_fuzz(frame: tuple[bytes, int, int, type]) -> None:
    check_read_response(*frame)


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=64), flags=st.sampled_from([0, wire.CALLBACK]), call_id=st.sampled_from([0, 1, 0x92]),
       kind=st.sampled_from(KINDS), framed=st.booleans())
def test_read_response_arbitrary_bytes(raw: bytes, flags: int, call_id: int, kind: type, framed: bool) -> None:
    if framed:  # a correct header around arbitrary bytes
        raw = header(wire.RESPONSE, flags, call_id, len(raw)) + raw
    check_read_response(raw, flags, call_id, kind)


def test_read_response_takes_what_python_reads_alike() -> None:
    """Encodings the Python path reads as the kind: non-canonical ints, float 32, wide str/bin headers."""
    cases: list[tuple[bytes, type, Any]] = [
        (b"\xcd\x00\x01", int, 1), (b"\xd3" + b"\xff" * 8, int, -1), (b"\xcf" + b"\xff" * 8, int, 2**64 - 1),
        (b"\xd0\x05", int, 5), (b"\xca\x3f\xc0\x00\x00", float, 1.5), (b"\xca\x3f\x80\x00\x01", float, 1 + 2**-23),
        (b"\xca\xff\x7f\xff\xff", float, -3.4028234663852886e38), (b"\xca\x00\x00\x00\x01", float, 2**-149),
        (b"\xca\x80\x00\x00\x00", float, -0.0), (b"\xdb\x00\x00\x00\x01a", str, "a"),
        (b"\xc6\x00\x00\x00\x01a", bytes, b"a"), (b"\xd9\x00", str, ""),
    ]
    for item, kind, value in cases:
        body = b"\x92" + item + b"\x90"
        raw = header(wire.RESPONSE, 0, 5, len(body)) + body
        got = check_read_response(raw, 0, 5, kind)
        assert got is not None and exactly(got[0], value), item.hex()
    # and leaves what the Python path reads otherwise (bool/int, int/float) or not at all
    for item, kind in [(b"\xc3", int), (b"\x01", float), (b"\x01", bool), (b"\xc4\x00", str), (b"\xa0", bytes),
                       (b"\xa2\xc3\x28", str), (b"\xa3\xed\xa0\x80", str), (b"\xc0", int)]:
        body = b"\x92" + item + b"\x90"
        raw = header(wire.RESPONSE, 0, 5, len(body)) + body
        assert native.read_response(raw, 0, 5, kind) is None, item.hex()


# -- 4. ServeLoop.run_one ---------------------------------------------------------------------


def fits(value: Any, kind: type | None, oob_threshold: int = BIG) -> bool:
    """Whether ``value`` travels inline as exactly ``kind`` (what the C path may send itself)."""
    if kind is None or type(value) is not kind:
        return False
    v: Any = value  # (mypy narrows a type() check on Any to object)
    if kind is int:
        return bool(INT_MIN <= v <= INT_MAX)
    if kind is str:
        try:
            v.encode()
        except UnicodeEncodeError:
            return False
    return not (kind is bytes and len(v) >= oob_threshold)


@settings(max_examples=300, deadline=None)
@given(prefix=prefixes, call_id=U32, params=st.lists(typed, max_size=20), oneway=st.booleans(),
       result=st.one_of(typed, st.sampled_from(NOT_TAKEN)), rkind=st.sampled_from([*KINDS, None]),
       same_kind=st.booleans())
def test_run_one_runs_python_requests(prefix: bytes, call_id: int, params: list[tuple[type, Any]], oneway: bool,
                                      result: tuple[type, Any], rkind: type | None, same_kind: bool) -> None:
    """A learnt method's request: run with the decoded arguments, its RESPONSE sent (or reply() called)."""
    kinds = [k for k, _ in params]
    values = [v for _, v in params]
    result_kind = result[0] if same_kind else rkind
    value = result[1]
    h = Harness()
    method = Method()
    impl = Impl(h, result=value)
    h.loop.learn(prefix, op_for(impl, method, kinds, result_kind, oneway), 0)
    flags = wire.ONEWAY if oneway else 0
    assert h.loop.run_one(wire.request_frame(prefix, flags, call_id, values)) is True
    assert len(impl.calls) == 1
    args, during = impl.calls[0]
    assert len(args) == len(values) and all(exactly(a, v) for a, v in zip(args, values, strict=True))
    assert during == (h.make_call, call_id) and during[0] is h.make_call
    assert h.current.call is None
    assert h.loop.calls == 1
    assert h.faults == []
    # bodies that are not [uuid, major, minor, opnum, args, []] with these args: not taken
    body = wire.request_frame(prefix, flags, call_id, values)[wire.HEADER_SIZE:]
    others = [body + b"\x90", body + b"\x00", body[:-1] + b"\x91\x00", body[:-1] + b"\xc0", body[:-1] + b"\x80"]
    at = len(prefix)  # the arguments' array header
    if len(values) < 15:
        others.append(body[:at] + bytes([body[at] + 1]) + body[at + 1:])
    if 0 < len(values) < 16:
        others.append(body[:at] + bytes([body[at] - 1]) + body[at + 1:])
    framed = [header(wire.REQUEST, flags, call_id, len(other)) + other for other in others]
    framed += [header(wire.REQUEST, flags, call_id, len(body), version=2) + body,
               header(wire.REQUEST, flags, call_id, len(body), reserved=1) + body,
               header(wire.REQUEST, flags, call_id, len(body), oob_len=1) + body + b"\x00",
               header(wire.REQUEST, flags, call_id, len(body), oob_len=1) + body,
               header(wire.RESPONSE, flags, call_id, len(body)) + body]
    for raw in framed:
        assert wire.quick_request(raw) is None
        assert h.loop.run_one(raw) is False
    assert len(impl.calls) == 1
    if oneway:
        assert h.sent == [] and h.replies == []
    elif fits(value, result_kind):
        assert h.sent == [wire.response_frame(0, call_id, value)]
        assert h.replies == []
    else:
        assert h.sent == []
        assert len(h.replies) == 1
        m, f, cid, res = h.replies[0]
        assert m is method and f == flags and cid == call_id and res is value


@settings(max_examples=200, deadline=None)
@given(prefix=prefixes, call_id=U32, params=st.lists(typed, max_size=6), kinds=st.lists(st.sampled_from(KINDS),
       max_size=6))
def test_run_one_takes_only_arguments_of_the_kinds(prefix: bytes, call_id: int, params: list[tuple[type, Any]],
                                                   kinds: list[type]) -> None:
    """Taken exactly when every argument on the wire is of its parameter's type (else Python converts)."""
    values = [v for _, v in params]
    h = Harness()
    impl = Impl(h, result=None)
    h.loop.learn(prefix, op_for(impl, Method(), kinds, NoneType, False), 0)
    fits = len(values) == len(kinds) and all(type(v) is k for v, k in zip(values, kinds, strict=False))
    assert h.loop.run_one(wire.request_frame(prefix, 0, call_id, values)) is fits
    if fits:
        assert h.sent == [wire.response_frame(0, call_id, None)]
    else:
        assert impl.calls == [] and h.sent == [] and h.replies == [] and h.faults == []
        assert getattr(h.current, "call", "unset") == "unset"


@pytest.mark.parametrize("oneway", [False, True])
def test_run_one_raising_method(oneway: bool) -> None:
    h = Harness()
    exc = ValueError("boom")
    impl = Impl(h, exc=exc)
    h.loop.learn(P0, op_for(impl, Method(), [int], int, oneway), 0)
    flags = wire.ONEWAY if oneway else 0
    assert h.loop.run_one(wire.request_frame(P0, flags, 77, [5])) is True
    assert impl.calls == [((5,), (h.make_call, 77))]
    assert h.current.call is None
    assert h.sent == [] and h.replies == []
    if oneway:
        assert h.faults == []  # the Python path sends nothing for a [oneway] method either
    else:
        assert len(h.faults) == 1
        cid, f, got, executed = h.faults[0]
        assert (cid, f, executed) == (77, 0, True) and got is exc


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_run_one_base_exceptions_propagate(exc_type: type[BaseException]) -> None:
    h = Harness()
    impl = Impl(h, exc=exc_type())
    h.loop.learn(P0, op_for(impl, Method(), [], int, False), 0)
    with pytest.raises(exc_type):
        h.loop.run_one(wire.request_frame(P0, 0, 1, []))
    assert h.current.call is None
    assert h.sent == [] and h.replies == [] and h.faults == []


def test_run_one_forgets_on_a_new_generation() -> None:
    h = Harness()
    impl = Impl(h, result=1)
    op = op_for(impl, Method(), [int], int, False)
    other = wire.request_prefix(bytes(16), 2, 0, 0)
    raw = wire.request_frame(P0, 0, 1, [2])
    raw_other = wire.request_frame(other, 0, 1, [2])
    assert h.loop.run_one(raw) is False  # nothing learnt yet
    h.loop.learn(P0, op, 0)
    h.loop.learn(other, op, 0)
    assert h.loop.run_one(raw) is True
    h.server._generation = 1
    assert h.loop.run_one(raw) is False
    assert h.loop.run_one(raw) is False
    h.server._generation = 0  # what was learnt for generation 0 is gone, not merely hidden
    assert h.loop.run_one(raw) is False
    h.server._generation = 1
    h.loop.learn(P0, op, 1)
    assert h.loop.run_one(raw) is True
    assert h.loop.run_one(raw_other) is False  # learnt for the old generation only
    h.loop.learn(other, op, 0)  # learnt for a generation the server has left: cleared at the next call
    assert h.loop.run_one(raw_other) is False
    assert h.loop.run_one(raw) is False
    assert len(impl.calls) == 2 and len(h.sent) == 2


@pytest.mark.parametrize("op_oneway", [False, True])
@pytest.mark.parametrize("flags", [0, wire.ONEWAY, wire.CALLBACK, wire.CALLBACK | wire.ONEWAY, wire.SIGNED,
                                   wire.DID_NOT_EXECUTE, 0x10, 0x80])
def test_run_one_flags(op_oneway: bool, flags: int) -> None:
    """ONEWAY must match the method's [oneway]; callbacks and any other flag go to the Python path."""
    h = Harness()
    impl = Impl(h, result=1)
    h.loop.learn(P0, op_for(impl, Method(), [int], int, op_oneway), 0)
    taken = flags == (wire.ONEWAY if op_oneway else 0)
    assert h.loop.run_one(wire.request_frame(P0, flags, 1, [2])) is taken
    assert len(impl.calls) == int(taken)
    if not taken:
        assert h.sent == [] and h.replies == [] and h.faults == []


def test_run_one_result_over_the_limit_or_out_of_band_goes_to_reply() -> None:
    value = "x" * 100
    frame = wire.response_frame(0, 4, value)
    for limit, sent in [(len(frame) + wire.MAC_SIZE, True), (len(frame) + wire.MAC_SIZE - 1, False)]:
        h = Harness(limit=limit)
        h.loop.learn(P0, op_for(Impl(h, result=value), Method(), [], str, False), 0)
        assert h.loop.run_one(wire.request_frame(P0, 0, 4, [])) is True
        assert h.sent == ([frame] if sent else [])
        assert len(h.replies) == int(not sent)
    for n, sent in [(99, True), (100, False)]:
        h = Harness(oob_threshold=100)
        h.loop.learn(P0, op_for(Impl(h, result=b"y" * n), Method(), [], bytes, False), 0)
        assert h.loop.run_one(wire.request_frame(P0, 0, 4, [])) is True
        assert h.sent == ([wire.response_frame(0, 4, b"y" * n)] if sent else [])
        assert len(h.replies) == int(not sent)


def test_run_one_failed_send_goes_to_reply() -> None:
    """A send that raises: reply() sends again through the pipe (which raises what is wrong)."""
    attempts: list[bytes] = []

    def send(frame: bytes) -> None:
        attempts.append(frame)
        raise OSError("ring closed")

    h = Harness(send=send)
    h.loop.learn(P0, op_for(Impl(h, result=3), Method(), [], int, False), 0)
    assert h.loop.run_one(wire.request_frame(P0, 0, 4, [])) is True
    assert attempts == [wire.response_frame(0, 4, 3)]
    assert [r[1:] for r in h.replies] == [(0, 4, 3)]



@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_run_one_interrupted_send_propagates(exc_type: type[BaseException]) -> None:
    """KeyboardInterrupt while the ring's send waits is raised, as the Python path raises it."""

    def send(frame: bytes) -> None:
        raise exc_type()

    h = Harness(send=send)
    h.loop.learn(P0, op_for(Impl(h, result=7), Method(), [], int, False), 0)
    with pytest.raises(exc_type):
        h.loop.run_one(wire.request_frame(P0, 0, 1, []))
    assert h.replies == [] and h.faults == []
    assert h.current.call is None

# -- 4'. run_one fuzz -------------------------------------------------------------------------


@st.composite
def op_specs(draw: st.DrawFn, opnum: int) -> tuple[bytes, list[type], bool, type | None, Any]:
    """(prefix, kinds, oneway, result kind, the method's result)."""
    prefix = wire.request_prefix(bytes(16), 1, 0, opnum)
    kinds = draw(rarely(st.lists(st.sampled_from(KINDS), max_size=5),
                        st.lists(st.sampled_from(KINDS), min_size=14, max_size=18)))
    oneway = draw(rarely(st.just(False), st.just(True)))
    rkind = draw(st.sampled_from([*KINDS, None]))
    result = draw(typed)[1] if rkind is None else draw(rarely(VALUES[rkind], typed.map(lambda kv: kv[1])))
    return prefix, kinds, oneway, rkind, result


@st.composite
def serve_cases(draw: st.DrawFn) -> tuple[list[tuple[bytes, list[type], bool, type | None, Any]], bytes]:
    """Learnt methods and one frame: mostly a nearly valid REQUEST to one of them."""
    ops = [draw(op_specs(i)) for i in range(draw(st.integers(1, 3)))]
    prefix, kinds, oneway, _, _ = ops[draw(st.integers(0, len(ops) - 1))]
    prefix = draw(rarely(st.just(prefix), st.one_of(
        prefixes, st.just(b"\x96\xc4\x10" + bytes(16) + b"\x01\x00\xcd\x00\x00"),  # opnum 0, not canonical
        st.binary(max_size=24))))
    n = max(0, len(kinds) + draw(rarely(st.just(0), st.sampled_from([-1, 1]))))
    count = draw(rarely(st.just(bytes([0x90 | n]) if 0 <= n < 16 else b"\xdc" + n.to_bytes(2, "big")),
                        st.sampled_from([b"\xdc" + n.to_bytes(2, "big"), b"\xdd" + n.to_bytes(4, "big"),
                                         b"\x90", b"\xc0"])))
    items = b"".join(draw(item_for(kinds[i] if i < len(kinds) else int)) for i in range(n))
    body = prefix + count + items + draw(oob_tail) + draw(trailing)
    flags = draw(rarely(st.just(wire.ONEWAY if oneway else 0), st.sampled_from(
        [0, wire.ONEWAY, wire.CALLBACK, wire.CALLBACK | wire.ONEWAY, wire.SIGNED])))
    call_id = draw(U32)
    raw = mutate(draw(headers(wire.REQUEST, flags, call_id, len(body))) + body, draw(mutations))
    return ops, raw


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=serve_cases())
def test_run_one_fuzz(case: tuple[list[tuple[bytes, list[type], bool, type | None, Any]], bytes]) -> None:
    """run_one never raises; what it takes quick_request reads with the same arguments, exactly typed."""
    specs, raw = case
    h = Harness()
    method = Method()
    impls: dict[bytes, Impl] = {}
    for prefix, kinds, oneway, rkind, result in specs:
        impls[prefix] = impl = Impl(h, result=result)
        h.loop.learn(prefix, op_for(impl, method, kinds, rkind, oneway), 0)
    taken = h.loop.run_one(raw)
    ran = [(p, c) for p, i in impls.items() for c in i.calls]
    if not taken:
        assert ran == [] and h.sent == [] and h.replies == [] and h.faults == []
        return
    q = wire.quick_request(raw)
    assert q is not None, f"C took a REQUEST the Python path does not read: {raw.hex()}"
    flags, call_id, d = q
    assert not flags & wire.CALLBACK
    prefix = wire.request_prefix(d[0], d[1], d[2], d[3])
    assert raw[wire.HEADER_SIZE:wire.HEADER_SIZE + len(prefix)] == prefix
    spec = next(s for s in specs if s[0] == prefix)
    _, kinds, oneway, rkind, result = spec
    assert bool(flags & wire.ONEWAY) == oneway
    assert len(ran) == 1 and ran[0][0] == prefix
    args, during = ran[0][1]
    assert during == (h.make_call, call_id)
    assert len(d[4]) == len(kinds) == len(args)
    for want, got, kind in zip(d[4], args, kinds, strict=True):
        assert type(want) is kind and type(got) is kind and same(want, got), (want, got, raw.hex())
    assert h.current.call is None
    if oneway:
        assert h.sent == [] and h.replies == []
    elif rkind is not None and type(result) is rkind:
        assert h.sent == [wire.response_frame(0, call_id, result)]
    else:
        assert h.sent == [] and len(h.replies) == 1 and h.replies[0][3] is result


P1 = wire.request_prefix(bytes(range(16)), 1, 0, 4)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=48), flags=st.sampled_from([0, wire.ONEWAY]), prefix=st.sampled_from([P0, P1]),
       framed=st.booleans())
def test_run_one_arbitrary_bytes(body: bytes, flags: int, prefix: bytes, framed: bool) -> None:
    """Arbitrary bytes, alone or after a right header and a learnt prefix."""
    h = Harness()
    impl = Impl(h, result=None)
    h.loop.learn(P0, op_for(impl, Method(), [], NoneType, False), 0)
    h.loop.learn(P1, op_for(impl, Method(), [bytes], NoneType, True), 0)
    raw = header(wire.REQUEST, flags, 3, len(prefix) + len(body)) + prefix + body if framed else body
    if h.loop.run_one(raw):
        q = wire.quick_request(raw)
        assert q is not None and not q[0] & wire.CALLBACK
        assert len(impl.calls) == 1
        assert all(exactly(a, b) for a, b in zip(impl.calls[0][0], q[2][4], strict=True))
    else:
        assert impl.calls == []
