"""RPC frames, version 1 (docs/wire/rpc.md): fuzzing the decoders, round trips, MACs, corpus,
and the document's worked examples checked against the code and a running server.

Every decoder in winipc._wire.rpc must return or raise winipc.errors.ProtocolError,
whatever it is fed, and nothing else.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winipc import rpc
from winipc._wire import rpc as w
from winipc.errors import ProtocolError

DOC = Path(__file__).resolve().parents[1] / "docs" / "wire" / "rpc.md"
CORPUS = Path(__file__).parent / "corpus" / "rpc_wire"
CORPUS_FILES = sorted(CORPUS.glob("*.bin"))
#: the key and MAC prefix of the corpus's signed frames
CORPUS_KEY = bytes(range(32))
CORPUS_PREFIX = w.mac_prefix(0, 0)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ExtType = msgpack.ExtType
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1


# -- helpers --------------------------------------------------------------------------------


def join(parts: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(p) for p in parts)


def make_frame(ftype: int, body: bytes, oob: Sequence[bytes] = (), *, flags: int = 0, call_id: int = 1) -> w.Frame:
    return w.parse_frame(join(w.frame_parts(ftype, flags, call_id, body, [memoryview(b) for b in oob])))


def fields(h: w.Header) -> tuple[int, int, int, int, int, int]:
    """A header's fields, to compare two headers."""
    return h.type, h.flags, h.call_id, h.body_len, h.oob_len, h.total


def chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """``data`` split at the given positions (taken modulo its length, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        yield data[a:b]


def parse_body(frame: w.Frame) -> Any:
    """The body parser for the frame's type (what the client and server call)."""
    t = frame.header.type
    if t == w.BIND:
        return w.parse_bind(frame.body)
    if t == w.BIND_ACK:
        return w.parse_bind_ack(frame.body)
    if t in (w.BIND_NAK, w.FAULT):
        return w.parse_status(frame.body, "status")
    if t == w.AUTH3:
        return w.parse_auth3(frame.body)
    if t == w.REQUEST:
        return w.parse_request(frame)
    if t == w.RESPONSE:
        return w.parse_response(frame)
    assert t == w.CANCEL
    return w.unpack(frame.body)


def reencode(frame: w.Frame, parsed: Any, mac_key: bytes | None = None, prefix: bytes = b"") -> bytes:
    """The frame built again from what the parsers returned."""
    h = frame.header
    oob: list[memoryview] = []
    if h.type == w.BIND:
        body = w.bind_body(parsed)
    elif h.type == w.BIND_ACK:
        body = w.bind_ack_body(parsed)
    elif h.type in (w.BIND_NAK, w.FAULT):
        body = w.status_body(*parsed)
    elif h.type == w.AUTH3:
        body = w.pack(parsed)
    elif h.type == w.REQUEST:
        oob = parsed.oob
        body = w.request_body(parsed.if_uuid, parsed.major, parsed.minor, parsed.opnum, parsed.args,
                              [len(b) for b in oob])
    elif h.type == w.RESPONSE:
        result, oob = parsed
        body = w.response_body(result, [len(b) for b in oob])
    else:
        body = w.pack(parsed)
    return join(w.frame_parts(h.type, h.flags & ~w.SIGNED, h.call_id, body, oob, mac_key, prefix))


def only_protocol_errors(fn: Callable[[], Any]) -> Any:
    """Call fn; a ProtocolError is fine (returns None), any other exception fails the test."""
    try:
        return fn()
    except ProtocolError:
        return None


def drain(dec: w.FrameDecoder) -> tuple[list[w.Frame], bool]:
    """Every frame the decoder has; True when it stopped on a ProtocolError."""
    frames: list[w.Frame] = []
    while True:
        try:
            f = dec.next_frame()
        except ProtocolError:
            return frames, True
        if f is None:
            return frames, False
        frames.append(f)


# -- strategies -----------------------------------------------------------------------------

ints = st.integers(INT_MIN, INT_MAX)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
exts = st.builds(ExtType, st.integers(0, 127), st.binary(max_size=20))  # negative codes: raw bytes below
leaves = st.none() | st.booleans() | ints | st.floats() | st.text(max_size=20) | st.binary(max_size=40) | exts
keys = st.none() | st.booleans() | ints | st.text(max_size=10) | st.binary(max_size=10)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=25,
)


def packed(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return strategy.map(lambda v: msgpack.packb(v, use_bin_type=True))


def either(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the right kind, sometimes anything."""
    return good | good | values


uuid_like = either(st.binary(min_size=16, max_size=16)) | st.binary(max_size=20)
iface_triples = st.lists(st.tuples(uuid_like, either(u16), either(u16)).map(list), max_size=4)
bind_maps = st.fixed_dictionaries({}, optional={
    "assoc": uuid_like,
    "auth": either(st.sampled_from([1, 2, 5, 6]) | ints),
    "principal": either(st.none() | st.text(max_size=300)),
    "nonce": either(st.none() | st.binary(min_size=16, max_size=16)),
    "max_frame": either(st.integers(0, 1 << 33)),
    "callbacks": either(iface_triples),
    "other": values,
})
bind_ack_maps = st.fixed_dictionaries({}, optional={
    "max_frame": either(st.integers(0, 1 << 33)),
    "nonce": either(st.none() | st.binary(min_size=15, max_size=17)),
    "proof": either(st.none() | st.binary(min_size=31, max_size=33)),
    "pid": either(ints),
})
status_lists = st.lists(either(ints | st.text(max_size=10)), max_size=4)
oob_lens = st.lists(either(st.integers(-2, 12)), max_size=6)
request_lists = st.tuples(uuid_like, either(st.integers(-1, 0x10000)), either(st.integers(-1, 0x10000)),
                          either(st.integers(-1, 0x10000)), values, either(oob_lens)).map(list)
response_lists = st.tuples(values, either(oob_lens)).map(list)
request_lists_short = st.lists(values, max_size=8)


def bodies(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Bytes for a body: msgpack of a near-valid shape, of anything, or random bytes."""
    return packed(shaped) | packed(values) | st.binary(max_size=64)


@st.composite
def valid_frames(draw: st.DrawFn) -> tuple[int, int, int, bytes, list[bytes], bytes | None, bytes]:
    """(type, flags, call id, body, oob buffers, mac key or None, mac prefix)."""
    ftype = draw(st.sampled_from(sorted(w.TYPES)))
    flags = draw(st.integers(0, w.FLAGS_MASK)) & ~w.SIGNED
    data = (w.REQUEST, w.RESPONSE)
    body = draw(st.binary(max_size=200 if ftype in data else 100))
    oob = draw(st.lists(st.binary(max_size=50), max_size=4)) if ftype in data else []
    key = draw(st.none() | st.binary(min_size=32, max_size=32))
    prefix = w.mac_prefix(draw(st.integers(0, 1)), draw(st.integers(0, (1 << 64) - 1)))
    return ftype, flags, draw(u32), body, oob, key, prefix


@st.composite
def header_then_junk(draw: st.DrawFn) -> bytes:
    """A 16-byte header with plausible fields (small lengths), then random bytes."""
    head = w.HEADER.pack(
        draw(st.sampled_from([1, 1, 1, 0, 2])),
        draw(st.sampled_from(sorted(w.TYPES)) | st.integers(0, 255)),
        draw(st.integers(0, w.FLAGS_MASK) | st.integers(0, 255)),
        draw(st.sampled_from([0, 0, 0, 1])),
        draw(u32),
        draw(st.integers(0, 80) | u32),
        draw(st.integers(0, 40) | u32),
    )
    return head + draw(st.binary(max_size=200))


streams = st.binary(max_size=300) | header_then_junk() | st.lists(header_then_junk(), max_size=3).map(b"".join)


# -- decoders on arbitrary input ------------------------------------------------------------


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 400), max_size=8), max_frame=st.sampled_from(
    [w.HEADER_SIZE, 64, 4096, w.MAX_FRAME_DEFAULT]))
def test_frame_decoder_on_arbitrary_bytes(data: bytes, cuts: list[int], max_frame: int) -> None:
    dec = w.FrameDecoder(max_frame)
    frames: list[w.Frame] = []
    failed = False
    for chunk in chunks(data, cuts):
        dec.feed(chunk)
        got, failed = drain(dec)
        frames += got
        if failed:
            break
        assert dec.wanted >= 1
    for f in frames:
        # what the stream decoder accepts, the message decoder accepts the same way
        assert len(f.raw) == f.header.total <= max_frame
        assert fields(w.parse_frame(bytes(f.raw), max_frame).header) == fields(f.header)
        only_protocol_errors(partial(parse_body, f))
    if not failed:
        assert sum(len(f.raw) for f in frames) <= len(data)


@FUZZ
@given(data=streams, max_frame=st.sampled_from([w.HEADER_SIZE, 1024, w.MAX_FRAME_DEFAULT]))
def test_parse_frame_on_arbitrary_bytes(data: bytes, max_frame: int) -> None:
    frame = only_protocol_errors(lambda: w.parse_frame(data, max_frame))
    if frame is not None:
        assert frame.header.total == len(data) <= max_frame
        assert bytes(frame.raw) == data
        only_protocol_errors(lambda: parse_body(frame))


@FUZZ
@given(body=bodies(bind_maps))
def test_parse_bind_on_arbitrary_input(body: bytes) -> None:
    b = only_protocol_errors(lambda: w.parse_bind(body))
    if b is not None:
        assert len(b.assoc) == 16 and b.auth_level in w.AUTHN_LEVELS
        assert w.HEADER_SIZE <= b.max_frame <= w.MAX_FRAME_LIMIT
        assert all(len(u) == 16 for u, _, _ in b.callbacks)


@FUZZ
@given(body=bodies(bind_ack_maps))
def test_parse_bind_ack_on_arbitrary_input(body: bytes) -> None:
    a = only_protocol_errors(lambda: w.parse_bind_ack(body))
    if a is not None:
        assert a.nonce is None or len(a.nonce) == w.NONCE_SIZE
        assert a.proof is None or len(a.proof) == w.MAC_SIZE
        assert type(a.server_pid) is int


@FUZZ
@given(body=bodies(status_lists))
def test_parse_status_on_arbitrary_input(body: bytes) -> None:
    s = only_protocol_errors(lambda: w.parse_status(body, "FAULT"))
    if s is not None:
        assert [type(x) for x in s] == [int, str, str]


@FUZZ
@given(body=bodies(either(st.binary(min_size=31, max_size=33))))
def test_parse_auth3_on_arbitrary_input(body: bytes) -> None:
    proof = only_protocol_errors(lambda: w.parse_auth3(body))
    assert proof is None or (type(proof) is bytes and len(proof) == w.MAC_SIZE)


@FUZZ
@given(body=bodies(request_lists | request_lists_short), oob=st.lists(st.binary(max_size=8), max_size=3))
def test_parse_request_on_arbitrary_input(body: bytes, oob: list[bytes]) -> None:
    frame = make_frame(w.REQUEST, body, oob)
    r = only_protocol_errors(lambda: w.parse_request(frame))
    if r is not None:
        assert len(r.if_uuid) == 16 and all(0 <= v <= 0xFFFF for v in (r.major, r.minor, r.opnum))
        assert b"".join(bytes(b) for b in r.oob) == b"".join(oob)


@FUZZ
@given(body=bodies(response_lists), oob=st.lists(st.binary(max_size=8), max_size=3))
def test_parse_response_on_arbitrary_input(body: bytes, oob: list[bytes]) -> None:
    frame = make_frame(w.RESPONSE, body, oob)
    r = only_protocol_errors(lambda: w.parse_response(frame))
    if r is not None:
        assert b"".join(bytes(b) for b in r[1]) == b"".join(oob)


@pytest.mark.parametrize("body", [
    b"\xdd\xff\xff\xff\xff",  # array of 2^32-1 elements, 5 bytes long
    b"\xdf\xff\xff\xff\xff",  # map of 2^32-1 pairs
    b"\xc6\xff\xff\xff\xff",  # bin of 4 GiB
    b"\xdb\xff\xff\xff\xff",  # str of 4 GiB
    b"\x96" + b"\xdd\x7f\xff\xff\xff" * 6,  # nested huge arrays
    b"\x91" * 5000 + b"\xc0",  # nesting deeper than the decoder's stack
    b"\x81\x91\x01\x01",  # a map with an array key (unhashable)
    b"\xd6\xff\x00\x00\x00\x01\x00",  # a timestamp then trailing data
    b"\xc7\x03\xff\x00\x00\x00",  # a timestamp of a length msgpack refuses
    b"\xc1",  # the reserved byte
    b"",
])
def test_msgpack_bombs_are_protocol_errors(body: bytes) -> None:
    for parse in (w.parse_bind, w.parse_bind_ack, w.parse_auth3, lambda b: w.parse_status(b, "FAULT"),
                  lambda b: w.parse_request(make_frame(w.REQUEST, b)),
                  lambda b: w.parse_response(make_frame(w.RESPONSE, b))):
        with pytest.raises(ProtocolError):
            parse(body)


# -- round trips ----------------------------------------------------------------------------


@FUZZ
@given(frames=st.lists(valid_frames(), min_size=1, max_size=4), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_frames_round_trip_through_the_stream_decoder(
        frames: list[tuple[int, int, int, bytes, list[bytes], bytes | None, bytes]], cuts: list[int]) -> None:
    stream = b""
    for ftype, flags, call_id, body, oob, key, prefix in frames:
        stream += join(w.frame_parts(ftype, flags, call_id, body, [memoryview(b) for b in oob], key, prefix))
    dec = w.FrameDecoder()
    got: list[w.Frame] = []
    for chunk in chunks(stream, cuts):
        dec.feed(chunk)
        more, failed = drain(dec)
        assert not failed
        got += more
    assert not dec.in_frame
    assert len(got) == len(frames)
    for f, (ftype, flags, call_id, body, oob, key, prefix) in zip(got, frames, strict=True):
        signed = w.SIGNED if key is not None else 0
        assert fields(f.header) == fields(w.Header(ftype, flags | signed, call_id, len(body), sum(map(len, oob))))
        assert bytes(f.body) == body and bytes(f.oob) == b"".join(oob)
        assert fields(w.parse_frame(bytes(f.raw)).header) == fields(f.header)
        if key is not None:
            assert w.check_mac(f, key, prefix)
            assert not w.check_mac(f, key, prefix[:1] + bytes([prefix[1] ^ 1]) + prefix[2:])
        else:
            assert not w.check_mac(f, bytes(32), prefix)


@FUZZ
@given(assoc=st.binary(min_size=16, max_size=16), level=st.sampled_from(sorted(w.AUTHN_LEVELS)),
       principal=st.none() | st.text(max_size=256), nonce=st.none() | st.binary(min_size=16, max_size=16),
       max_frame=st.integers(w.HEADER_SIZE, w.MAX_FRAME_LIMIT),
       callbacks=st.lists(st.tuples(st.binary(min_size=16, max_size=16), u16, u16), max_size=64))
def test_bind_round_trips(assoc: bytes, level: int, principal: str | None, nonce: bytes | None, max_frame: int,
                          callbacks: list[tuple[bytes, int, int]]) -> None:
    b = w.Bind(assoc, level, principal, nonce, max_frame, callbacks)
    assert w.parse_bind(w.bind_body(b)) == b


@FUZZ
@given(max_frame=st.integers(w.HEADER_SIZE, w.MAX_FRAME_LIMIT), nonce=st.none() | st.binary(min_size=16, max_size=16),
       proof=st.none() | st.binary(min_size=32, max_size=32), pid=ints)
def test_bind_ack_round_trips(max_frame: int, nonce: bytes | None, proof: bytes | None, pid: int) -> None:
    a = w.BindAck(max_frame, nonce, proof, pid)
    assert w.parse_bind_ack(w.bind_ack_body(a)) == a


@FUZZ
@given(status=ints, type_name=st.text(max_size=300), message=st.text(max_size=5000))
def test_status_round_trips_truncated(status: int, type_name: str, message: str) -> None:
    assert w.parse_status(w.status_body(status, type_name, message), "FAULT") == (status, type_name[:200], message[:4000])


@FUZZ
@given(uuid=st.binary(min_size=16, max_size=16), major=u16, minor=u16, opnum=u16, args=st.lists(values, max_size=5),
       oob=st.lists(st.binary(max_size=30), max_size=5), result=values)
def test_request_and_response_round_trip(uuid: bytes, major: int, minor: int, opnum: int, args: list[Any],
                                         oob: list[bytes], result: Any) -> None:
    lens = [len(b) for b in oob]
    r = w.parse_request(make_frame(w.REQUEST, w.request_body(uuid, major, minor, opnum, args, lens), oob))
    assert (r.if_uuid, r.major, r.minor, r.opnum) == (uuid, major, minor, opnum)
    assert [bytes(b) for b in r.oob] == oob
    assert msgpack.packb(r.args, use_bin_type=True) == msgpack.packb(args, use_bin_type=True)
    res, res_oob = w.parse_response(make_frame(w.RESPONSE, w.response_body(result, lens), oob))
    assert [bytes(b) for b in res_oob] == oob
    assert msgpack.packb(res, use_bin_type=True) == msgpack.packb(result, use_bin_type=True)


# -- the plain-call fast path ----------------------------------------------------------------
# Calls without out-of-band buffers or MAC build and read frames in one piece
# (request_frame / response_frame / quick_request / quick_response): the same bytes as the
# general path, and on any input either the general parsers' answer or None (general path).


@FUZZ
@given(uuid=st.binary(min_size=16, max_size=16), major=u16, minor=u16, opnum=u16, args=st.lists(values, max_size=5),
       result=values, flags=st.sampled_from([0, w.ONEWAY, w.CALLBACK]), call_id=u32)
def test_plain_frames_are_the_general_path_bytes(uuid: bytes, major: int, minor: int, opnum: int, args: list[Any],
                                                result: Any, flags: int, call_id: int) -> None:
    req = w.request_frame(w.request_prefix(uuid, major, minor, opnum), flags, call_id, args)
    assert req == join(w.frame_parts(w.REQUEST, flags, call_id, w.request_body(uuid, major, minor, opnum, args, [])))
    q = w.quick_request(req)
    assert q is not None and q[:2] == (flags, call_id)
    assert msgpack.packb(q[2], use_bin_type=True) == msgpack.packb([uuid, major, minor, opnum, args, []],
                                                                    use_bin_type=True)
    res = w.response_frame(flags & w.CALLBACK, call_id, result)
    assert res == join(w.frame_parts(w.RESPONSE, flags & w.CALLBACK, call_id, w.response_body(result, [])))
    got = w.quick_response(res, flags & w.CALLBACK, call_id)
    assert got is not None and msgpack.packb(got[0], use_bin_type=True) == msgpack.packb(result, use_bin_type=True)
    assert w.quick_response(res, flags & w.CALLBACK, call_id ^ 1) is None  # another call's answer
    assert w.quick_response(res, w.CALLBACK - (flags & w.CALLBACK), call_id) is None  # a callback's
    assert w.quick_request(res) is None and w.quick_response(req, flags, call_id) is None


def _relabel(raw: bytes, body_len: int) -> bytes:
    """``raw`` with its header's body length replaced."""
    fields = list(w.HEADER.unpack_from(raw))
    fields[5] = body_len
    return w.HEADER.pack(*fields) + raw[w.HEADER_SIZE:]


_PLAIN_REQ = w.request_frame(w.request_prefix(bytes(16), 1, 0, 2), 0, 3, [5])
_PLAIN_RES = w.response_frame(0, 3, 5)
#: near misses the fast path must leave to the general one: lengths that do not add up,
#: out-of-band lengths without buffers, a call id, flags or a type it does not take
NEAR_MISSES = [
    _relabel(_PLAIN_REQ, len(_PLAIN_REQ) - w.HEADER_SIZE + 1), _relabel(_PLAIN_REQ, len(_PLAIN_REQ) - w.HEADER_SIZE - 1),
    _relabel(_PLAIN_RES, len(_PLAIN_RES) - w.HEADER_SIZE + 1), _relabel(_PLAIN_RES, len(_PLAIN_RES) - w.HEADER_SIZE - 1),
    join(w.frame_parts(w.REQUEST, 0, 3, w.request_body(bytes(16), 1, 0, 2, [5], [0]))),
    join(w.frame_parts(w.REQUEST, 0, 3, w.request_body(bytes(16), 1, 0, 2, [5], [2]))),
    join(w.frame_parts(w.RESPONSE, 0, 3, w.response_body(5, [0]))),
    join(w.frame_parts(w.REQUEST, w.DID_NOT_EXECUTE, 3, w.request_body(bytes(16), 1, 0, 2, [5], []))),
    join(w.frame_parts(w.REQUEST, 0, 3, w.request_body(bytes(15), 1, 0, 2, [5], []))),
    join(w.frame_parts(w.REQUEST, 0, 3, w.request_body(bytes(16), 1, 0x10000, 2, [5], []))),
    join(w.frame_parts(w.REQUEST, 0, 3, w.request_body(bytes(16), 1, 0, 2, [5], [], ), [memoryview(b"x")], b"k" * 32)),
    _PLAIN_RES[:-1], _PLAIN_REQ + b"\x00",
]


@pytest.mark.parametrize("raw", NEAR_MISSES, ids=range(len(NEAR_MISSES)))
def test_the_fast_path_leaves_near_misses_to_the_general_one(raw: bytes) -> None:
    assert w.quick_request(raw) is None and w.quick_response(raw, 0, 3) is None
    assert w.quick_request(_PLAIN_REQ) is not None and w.quick_response(_PLAIN_RES, 0, 3) == [5, []]


def general_request(raw: bytes) -> Any:
    """What parse_frame + parse_request make of ``raw`` (None: a ProtocolError)."""
    try:
        frame = w.parse_frame(raw)
        r = w.parse_request(frame)
    except ProtocolError:
        return None
    return frame.header, r


@FUZZ
@given(raw=streams | st.builds(lambda body, oob, flags: join(w.frame_parts(w.REQUEST, flags, 3, body, oob)),
                               bodies(request_lists | request_lists_short),
                               st.lists(st.binary(max_size=8).map(memoryview), max_size=2),
                               st.sampled_from([0, w.ONEWAY, w.CALLBACK, w.ONEWAY | w.CALLBACK, w.DID_NOT_EXECUTE])))
def test_quick_request_agrees_with_the_general_parsers(raw: bytes) -> None:
    q = w.quick_request(raw)
    if q is None:
        return  # the general path decides, and is fuzzed above
    general = general_request(raw)
    assert general is not None, "the fast path accepted a frame the general path refuses"
    h, r = general
    flags, call_id, d = q
    assert (flags, call_id) == (h.flags, h.call_id) and not r.oob
    assert (d[0], d[1], d[2], d[3]) == (r.if_uuid, r.major, r.minor, r.opnum)
    assert msgpack.packb(d[4], use_bin_type=True) == msgpack.packb(r.args, use_bin_type=True)


@FUZZ
@given(raw=streams | st.builds(lambda body, oob: join(w.frame_parts(w.RESPONSE, 0, 3, body, oob)),
                               bodies(response_lists), st.lists(st.binary(max_size=8).map(memoryview), max_size=2)))
def test_quick_response_agrees_with_the_general_parsers(raw: bytes) -> None:
    for flags, call_id in ((0, 3), (w.CALLBACK, 3)):
        got = w.quick_response(raw, flags, call_id)
        if got is None:
            continue
        frame = w.parse_frame(raw)  # raises (fails the test) if the fast path took a bad frame
        assert (frame.header.type, frame.header.flags, frame.header.call_id) == (w.RESPONSE, flags, call_id)
        result, oob = w.parse_response(frame)
        assert not oob and msgpack.packb(got[0], use_bin_type=True) == msgpack.packb(result, use_bin_type=True)


# -- MACs -----------------------------------------------------------------------------------


def signed_frame(body: bytes = b"\x92\x05\x90", oob: Sequence[bytes] = (),
                 key: bytes = CORPUS_KEY, prefix: bytes = CORPUS_PREFIX, ftype: int = w.RESPONSE) -> bytes:
    return join(w.frame_parts(ftype, 0, 7, body, [memoryview(b) for b in oob], key, prefix))


def flip_is_caught(raw: bytes, bit: int, key: bytes, prefix: bytes) -> bool:
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    try:
        frame = w.parse_frame(bytes(flipped))
    except ProtocolError:
        return True
    return not w.check_mac(frame, key, prefix)


def test_every_single_bit_flip_of_a_signed_frame_is_caught() -> None:
    raw = signed_frame(b"\x92\xa5hello\x91\x05", [b"oob!"], ftype=w.RESPONSE)
    assert w.check_mac(w.parse_frame(raw), CORPUS_KEY, CORPUS_PREFIX)
    missed = [bit for bit in range(len(raw) * 8) if not flip_is_caught(raw, bit, CORPUS_KEY, CORPUS_PREFIX)]
    assert missed == []


@FUZZ
@given(frame=valid_frames(), key=st.binary(min_size=32, max_size=32), bit=st.integers(0, 1 << 20))
def test_a_single_bit_flip_anywhere_fails_the_mac(
        frame: tuple[int, int, int, bytes, list[bytes], bytes | None, bytes], key: bytes, bit: int) -> None:
    ftype, flags, call_id, body, oob, _, prefix = frame
    raw = join(w.frame_parts(ftype, flags, call_id, body, [memoryview(b) for b in oob], key, prefix))
    assert w.check_mac(w.parse_frame(raw), key, prefix)
    assert flip_is_caught(raw, bit % (len(raw) * 8), key, prefix)


def test_the_mac_binds_key_direction_and_sequence() -> None:
    raw = signed_frame(prefix=w.mac_prefix(0, 5))
    f = w.parse_frame(raw)
    assert w.check_mac(f, CORPUS_KEY, w.mac_prefix(0, 5))
    assert not w.check_mac(f, CORPUS_KEY, w.mac_prefix(1, 5))  # reflected to its sender
    assert not w.check_mac(f, CORPUS_KEY, w.mac_prefix(0, 4))  # replayed or reordered
    assert not w.check_mac(f, CORPUS_KEY, w.mac_prefix(0, 6))
    assert not w.check_mac(f, bytes(32), w.mac_prefix(0, 5))
    # a frame without the SIGNED flag never passes, whatever follows it
    unsigned = w.parse_frame(join(w.frame_parts(w.RESPONSE, 0, 7, b"\x92\x05\x90")))
    assert not w.check_mac(unsigned, CORPUS_KEY, w.mac_prefix(0, 5))
    # stripping the trailer and the flag leaves a well-formed but unsigned frame
    stripped = bytearray(raw[:-w.MAC_SIZE])
    stripped[2] &= ~w.SIGNED
    assert not w.check_mac(w.parse_frame(bytes(stripped)), CORPUS_KEY, w.mac_prefix(0, 5))


# -- corpus ---------------------------------------------------------------------------------


def test_corpus_is_present() -> None:
    kinds = {p.name.split("-", 1)[0] for p in CORPUS_FILES}
    assert kinds == {"ok", "bad"}, [p.name for p in CORPUS_FILES]
    assert len(CORPUS_FILES) >= 12
    names = {p.name for p in CORPUS_FILES}
    # one valid frame of each type
    assert {"ok-bind.bin", "ok-bind-ack.bin", "ok-bind-nak.bin", "ok-auth3.bin", "ok-request-add.bin",
            "ok-response-add.bin", "ok-fault-dne.bin", "ok-cancel.bin"} <= names


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_replay(path: Path) -> None:
    """``ok-*``: a stream of valid frames; each body parses and re-encodes byte for byte.
    ``bad-*``: as one pipe message, the frame or its body raises ProtocolError; as a stream,
    the decoder raises, a body does not parse, or the stream ends inside a frame."""
    data = path.read_bytes()
    dec = w.FrameDecoder()
    dec.feed(data)
    frames, failed = drain(dec)
    signed = "-signed" in path.name
    key, prefix = (CORPUS_KEY, CORPUS_PREFIX) if signed else (None, b"")
    if path.name.startswith("ok-"):
        assert not failed and not dec.in_frame and frames
        if len(frames) == 1:
            assert fields(w.parse_frame(data).header) == fields(frames[0].header)
        for f in frames:
            assert reencode(f, parse_body(f), key, prefix) == bytes(f.raw)
            assert w.check_mac(f, CORPUS_KEY, CORPUS_PREFIX) == signed
        return
    assert path.name.startswith("bad-")
    with pytest.raises(ProtocolError):
        parse_body(w.parse_frame(data))
    if data:
        stream_ok = not failed and not dec.in_frame
        for f in frames:
            try:
                parse_body(f)
            except ProtocolError:
                stream_ok = False
        assert not stream_ok


# -- the worked examples of docs/wire/rpc.md ------------------------------------------------


@rpc.interface(uuid="0a6f3f4e-6a57-4b8e-9c39-3f2b8e9d1c20", version=(1, 0))
class Calc:
    def ping(self) -> None: ...

    def add(self, a: rpc.Int32, b: rpc.Int32) -> int:
        raise NotImplementedError

    def size(self, data: bytes) -> int:
        raise NotImplementedError


class CalcImpl(Calc):
    def ping(self) -> None:
        return None

    def add(self, a: int, b: int) -> int:
        return a + b

    def size(self, data: bytes) -> int:
        return len(data)


SPEC = rpc.spec_of(Calc)
UUID = SPEC.uuid.bytes
DOC_KEY = bytes(range(32))
DOC_CLIENT_NONCE = b"\x11" * 16
DOC_SERVER_NONCE = b"\x22" * 16
DOC_SKEY = w.session_key(DOC_KEY, DOC_CLIENT_NONCE, DOC_SERVER_NONCE)
_HEX_LINE = re.compile(r"^ *((?:[0-9a-f]{2} )*[0-9a-f]{2})(?: {2,}\S.*)?$")


def doc_frames() -> dict[str, bytes]:
    """Each ``<!-- frame: name -->`` block of the document: its annotated hex, which must
    equal the one-line hex under it."""
    text = DOC.read_text()
    out = {}
    pattern = r"<!-- frame: (\w+) -->\n```\n(.*?)```\n(\d+) bytes: `([0-9a-f]+)`"
    for m in re.finditer(pattern, text, re.S):
        annotated = b""
        for line in m.group(2).splitlines():
            lm = _HEX_LINE.match(line)
            assert lm, f"{m.group(1)}: not a hex line: {line!r}"
            annotated += bytes.fromhex(lm.group(1))
        whole = bytes.fromhex(m.group(4))
        assert annotated == whole and len(whole) == int(m.group(3)), m.group(1)
        out[m.group(1)] = whole
    return out


def expected_doc_frames() -> dict[str, bytes]:
    """The same frames, built by the code."""
    ping, add, size = (SPEC.by_name[n] for n in ("ping", "add", "size"))
    oob: list[memoryview] = []
    size_args = size.encode_args([b"hello world"], oob, oob_threshold=4)
    assoc = bytes(range(16))

    def request(call_id: int, opnum: int, args: list[Any], oob: list[memoryview] = [],  # noqa: B006
                key: bytes | None = None) -> bytes:
        body = w.request_body(UUID, 1, 0, opnum, args, [len(b) for b in oob])
        return join(w.frame_parts(w.REQUEST, 0, call_id, body, oob, key, w.mac_prefix(0, 0)))

    def response(call_id: int, result: Any, key: bytes | None = None) -> bytes:
        return join(w.frame_parts(w.RESPONSE, 0, call_id, w.response_body(result, []), None, key, w.mac_prefix(1, 0)))

    return {
        "bind": join(w.frame_parts(w.BIND, 0, 0, w.bind_body(w.Bind(assoc, 1, None, None, 65536, [])))),
        "bind_ack": join(w.frame_parts(w.BIND_ACK, 0, 0, w.bind_ack_body(w.BindAck(65536, None, None, 4242)))),
        "request_ping": request(1, ping.opnum, ping.encode_args([])),
        "response_ping": response(1, ping.encode_result(None)),
        "request_add": request(2, add.opnum, add.encode_args([2, 3])),
        "response_add": response(2, add.encode_result(5)),
        "request_add_bad": request(4, add.opnum, ["x", 3]),
        "fault_add_bad": join(w.frame_parts(w.FAULT, w.DID_NOT_EXECUTE, 4, w.status_body(
            1783, "BadStubData", "Calc.add: parameter 'a': expected Int32, got str"))),
        "request_size_oob": request(3, size.opnum, size_args, oob),
        "response_size_oob": response(3, 11),
        "bind_key": join(w.frame_parts(w.BIND, 0, 0, w.bind_body(
            w.Bind(assoc, 5, "alice", DOC_CLIENT_NONCE, 65536, [])))),
        "bind_ack_key": join(w.frame_parts(w.BIND_ACK, 0, 0, w.bind_ack_body(
            w.BindAck(65536, DOC_SERVER_NONCE, w.proof(DOC_SKEY, b"server"), 4242)))),
        "auth3": join(w.frame_parts(w.AUTH3, 0, 0, w.pack(w.proof(DOC_SKEY, b"client")))),
        "request_add_signed": request(2, add.opnum, [2, 3], key=DOC_SKEY),
        "response_add_signed": response(2, 5, key=DOC_SKEY),
        "cancel": join(w.frame_parts(w.CANCEL, 0, 0, w.pack([]))),
    }


def test_doc_examples_are_what_the_code_produces() -> None:
    documented = doc_frames()
    expected = expected_doc_frames()
    assert sorted(documented) == sorted(expected)
    for name, raw in expected.items():
        assert documented[name] == raw, name
    text = DOC.read_text()
    assert f"session key  = {DOC_SKEY.hex()}" in text
    assert f"server proof = {w.proof(DOC_SKEY, b'server').hex()}" in text
    assert f"client proof = {w.proof(DOC_SKEY, b'client').hex()}" in text
    assert re.sub(r"\s", "", text).count(re.sub(r"\s", "", _idl_json())) == 1


def _idl_json() -> str:
    import json

    return json.dumps(SPEC.to_idl(), indent=2)


class RawClient:
    """A TCP connection that speaks frames, nothing more."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.dec = w.FrameDecoder()

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def recv(self) -> w.Frame:
        while True:
            f = self.dec.next_frame()
            if f is not None:
                return f
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            self.dec.feed(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def calc_server() -> Iterator[int]:
    server = rpc.RpcServer(register_endpoints=False, keys={"alice": DOC_KEY})
    server.register(CalcImpl())
    binding = server.listen("ncacn_ip_tcp:127.0.0.1[0]", allow_anonymous=True)
    server.start()
    try:
        yield int(binding.rsplit("[", 1)[1].rstrip("]"))
    finally:
        server.stop()


def test_doc_examples_against_a_running_server(calc_server: int) -> None:
    ex = doc_frames()
    c = RawClient(calc_server)
    try:
        c.send(ex["bind"])
        ack = c.recv()
        assert ack.header.type == w.BIND_ACK
        assert w.parse_bind_ack(ack.body) == w.BindAck(65536, None, None, os.getpid())
        for req, res in (("request_ping", "response_ping"), ("request_add", "response_add"),
                         ("request_add_bad", "fault_add_bad"), ("request_size_oob", "response_size_oob")):
            c.send(ex[req])
            assert bytes(c.recv().raw) == ex[res], req
        c.send(ex["cancel"])  # nothing in progress: ignored
        c.send(ex["request_add"])
        assert bytes(c.recv().raw) == ex["response_add"]
    finally:
        c.close()


def test_doc_key_handshake_against_a_running_server(calc_server: int) -> None:
    """The documented BIND with a key, then the proofs and signed frames computed as the
    document says (the server's nonce is its own, so the bytes differ from the example)."""
    ex = doc_frames()
    c = RawClient(calc_server)
    try:
        c.send(ex["bind_key"])
        ack = w.parse_bind_ack(c.recv().body)
        assert ack.nonce is not None and ack.proof is not None
        skey = w.session_key(DOC_KEY, DOC_CLIENT_NONCE, ack.nonce)
        assert ack.proof == w.proof(skey, b"server")
        c.send(join(w.frame_parts(w.AUTH3, 0, 0, w.pack(w.proof(skey, b"client")))))
        for seq, (a, b) in enumerate(((2, 3), (40, 2))):
            body = w.request_body(UUID, 1, 0, SPEC.by_name["add"].opnum, [a, b], [])
            c.send(join(w.frame_parts(w.REQUEST, 0, 10 + seq, body, None, skey, w.mac_prefix(0, seq))))
            f = c.recv()
            assert f.header.flags & w.SIGNED and w.check_mac(f, skey, w.mac_prefix(1, seq))
            assert w.parse_response(f)[0] == a + b
        # an unsigned frame now: the server closes the connection without an answer
        c.send(ex["request_add"])
        c.sock.settimeout(30)
        assert c.sock.recv(100) == b""
    finally:
        c.close()


def test_a_running_server_survives_the_bad_corpus(calc_server: int) -> None:
    """Each bad input after a good BIND: the server drops or faults that connection only."""
    ex = doc_frames()
    for path in CORPUS_FILES:
        c = RawClient(calc_server)
        try:
            c.send(ex["bind"])
            assert c.recv().header.type == w.BIND_ACK
            c.send(path.read_bytes())
        finally:
            c.close()
    c = RawClient(calc_server)
    try:
        c.send(ex["bind"])
        c.recv()
        c.send(ex["request_add"])
        assert bytes(c.recv().raw) == ex["response_add"]
    finally:
        c.close()


@pytest.mark.parametrize("lens", [None, 0, False, "", b"", {}])
def test_oob_lengths_must_be_an_array_even_when_empty(lens: Any) -> None:
    with pytest.raises(ProtocolError):
        w.parse_request(make_frame(w.REQUEST, w.pack([UUID, 1, 0, 1, [], lens])))
    with pytest.raises(ProtocolError):
        w.parse_response(make_frame(w.RESPONSE, w.pack([5, lens])))
