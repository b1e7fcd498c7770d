"""Window-message wire format v1 (docs/wire/messages.md): round trips, layout, caps, fuzz."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winipc import errors as W
from winipc._wire import messages as M

u32 = st.integers(0, M.U32)
u64 = st.integers(0, M.U64)
i64 = st.integers(M.I64_MIN, M.I64_MAX)
times = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)


@st.composite
def frames(draw: st.DrawFn) -> M.MessageFrame:
    kind = draw(st.sampled_from([M.KIND_SEND, M.KIND_POST]))
    seq = draw(u32) if kind == M.KIND_SEND else 0
    ptypes = [M.PARAM_INT, M.PARAM_BYTES] + ([M.PARAM_COPYDATA] if kind == M.KIND_SEND else [])
    ptype = draw(st.sampled_from(ptypes))
    hwnd, wparam, stamp = draw(u32), draw(u64), draw(times)
    if ptype == M.PARAM_INT:
        return M.MessageFrame(kind, seq, hwnd, draw(u32), wparam, draw(i64), time=stamp)
    msg = M.WM_COPYDATA if ptype == M.PARAM_COPYDATA else draw(u32)
    dwdata = draw(u64) if ptype == M.PARAM_COPYDATA else 0
    if kind == M.KIND_SEND and draw(st.booleans()):  # payload in a memfd: only its length travels
        length = draw(st.integers(M.INLINE_MAX + 1, M.MAX_DATA))
        return M.MessageFrame(kind, seq, hwnd, msg, wparam, 0, ptype, dwdata, length, True, stamp)
    payload = draw(st.binary(max_size=300))
    return M.MessageFrame(kind, seq, hwnd, msg, wparam, 0, ptype, dwdata, len(payload), False, stamp, payload)


@given(frames())
def test_message_frames_round_trip_and_are_canonical(f: M.MessageFrame) -> None:
    data = M.encode_message(f)
    back = M.decode(data, 1 if f.in_fd else 0)
    assert back == f
    assert isinstance(back, M.MessageFrame)
    assert M.encode_message(back) == data


@given(u32, u32, i64)
def test_replies_round_trip(seq: int, status: int, result: int) -> None:
    data = M.encode_reply(seq, status, result)
    assert len(data) == M.REPLY.size == 20
    assert M.decode(data) == M.ReplyFrame(seq, status, result)


def test_refused_round_trips_and_layout_is_fixed() -> None:
    assert M.decode(M.encode_refused()) == M.RefusedFrame(5)
    assert M.HEADER.size == 60 and M.REFUSED.size == 8
    data = M.encode_message(M.MessageFrame(M.KIND_SEND, 7, 0x10002, 0x400, 1, -1, time=1.5))
    assert data[:4] == b"WM\x01\x01"
    assert struct.unpack_from("<III", data, 8) == (7, 0x10002, 0x400)
    assert struct.unpack_from("<Qq", data, 20) == (1, -1)
    assert struct.unpack_from("<d", data, 52) == (1.5,)


@given(st.binary(max_size=200), st.integers(0, 2))
def test_random_bytes_only_ever_raise_invalid_data(data: bytes, nfds: int) -> None:
    try:
        M.decode(data, nfds)
    except W.InvalidData:
        pass


@given(frames(), st.data())
def test_truncated_or_extended_frames_are_refused(f: M.MessageFrame, data: st.DataObject) -> None:
    raw = M.encode_message(f)
    nfds = 1 if f.in_fd else 0
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(W.InvalidData):
        M.decode(raw[:cut], nfds)
    with pytest.raises(W.InvalidData):
        M.decode(raw + b"\0", nfds)
    with pytest.raises(W.InvalidData):  # a descriptor too many or missing
        M.decode(raw, 1 - nfds)


def _header(**over: object) -> bytes:
    fields: dict[str, object] = {"magic": b"WM", "version": 1, "kind": M.KIND_SEND, "ptype": M.PARAM_INT,
                                 "where": M.WHERE_INLINE, "reserved": 0, "seq": 1, "hwnd": 0x10000, "msg": 0x400,
                                 "wparam": 0, "lparam": 0, "dwdata": 0, "length": 0, "time": 0.0}
    fields.update(over)
    return M.HEADER.pack(*fields.values())


@pytest.mark.parametrize(
    ("over", "payload", "nfds", "why"),
    [
        ({"magic": b"XX"}, b"", 0, "magic"),
        ({"version": 2}, b"", 0, "version"),
        ({"kind": 9}, b"", 0, "kind"),
        ({"reserved": 1}, b"", 0, "reserved"),
        ({"where": 2}, b"", 0, "location"),
        ({"ptype": 7}, b"", 0, "parameter type"),
        ({"time": float("nan")}, b"", 0, "time"),
        ({"time": -1.0}, b"", 0, "time"),
        ({"kind": M.KIND_POST, "seq": 3}, b"", 0, "seq 0"),
        ({"ptype": M.PARAM_BYTES, "lparam": 5, "length": 1}, b"x", 0, "lparam must be 0"),
        ({"dwdata": 1}, b"", 0, "dwdata"),
        ({"ptype": M.PARAM_COPYDATA, "msg": 0x400, "length": 1}, b"x", 0, "WM_COPYDATA"),
        ({"ptype": M.PARAM_COPYDATA, "msg": M.WM_COPYDATA, "kind": M.KIND_POST, "seq": 0, "length": 1}, b"x", 0,
         "WM_COPYDATA"),
        ({"length": 3}, b"abc", 0, "no payload"),
        ({"ptype": M.PARAM_BYTES, "length": 4}, b"abc", 0, "header says"),
        ({"ptype": M.PARAM_BYTES, "length": M.MAX_DATA + 1, "where": M.WHERE_FD}, b"", 1, "maximum"),
        ({"ptype": M.PARAM_BYTES, "length": 100, "where": M.WHERE_FD}, b"", 1, "goes inline"),
        ({"ptype": M.PARAM_BYTES, "length": M.INLINE_MAX + 1, "where": M.WHERE_FD, "kind": M.KIND_POST, "seq": 0},
         b"", 1, "only a SEND"),
        ({"ptype": M.PARAM_BYTES, "length": M.INLINE_MAX + 1}, b"", 0, "maximum is"),
    ],
)
def test_malformed_frames_say_what_is_wrong(over: dict[str, object], payload: bytes, nfds: int, why: str) -> None:
    with pytest.raises(W.InvalidData, match=why):
        M.decode(_header(**over) + payload, nfds)


def test_caps_are_checked_before_anything_is_allocated() -> None:
    # a header announcing 1 GiB + 1 inline, or a packet over the largest one, fails on its numbers
    with pytest.raises(W.InvalidData, match="maximum"):
        M.decode(_header(ptype=M.PARAM_BYTES, length=M.MAX_DATA + 1), 0)
    with pytest.raises(W.InvalidData, match="maximum"):
        M.decode(b"WM\x01\x01" + bytes(M.PACKET_MAX), 0)
    with pytest.raises(W.InvalidData, match="REPLY"):
        M.decode(M.encode_reply(1, 0, 0) + b"\0")
    with pytest.raises(W.InvalidData, match="status 0"):
        M.decode(M.REFUSED.pack(b"WM", 1, M.KIND_REFUSED, 0))


def test_encoder_refuses_out_of_range_fields() -> None:
    for f, arg in (
        (M.MessageFrame(M.KIND_SEND, 1, 0, 2**32, 0), "msg"),
        (M.MessageFrame(M.KIND_SEND, 1, 0, 0, -1), "wparam"),
        (M.MessageFrame(M.KIND_SEND, 1, 0, 0, 0, 2**63), "lparam"),
        (M.MessageFrame(M.KIND_SEND, 1, 0, 0, 0, time=float("inf")), "time"),
        (M.MessageFrame(M.KIND_REPLY, 1, 0, 0, 0), "kind"),
    ):
        with pytest.raises(W.InvalidParameter, match=arg):
            M.encode_message(f)
    with pytest.raises(W.InvalidParameter, match="result"):
        M.encode_reply(1, 0, 2**63)
