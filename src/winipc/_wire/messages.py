"""Window-message packets on a window's socket, version 1 (docs/wire/messages.md). No I/O.

A window listens on an AF_UNIX SOCK_SEQPACKET socket; a sender holds one connection per
(sending thread, window). Every packet is one frame, so frames are never split or merged:

* MESSAGE (kind 1 SEND, kind 2 POST), sender -> window: a 60-byte header, then the inline
  payload (pointer parameters carried as bytes, WM_COPYDATA's data). Payloads over
  :data:`INLINE_MAX` travel in a sealed memfd passed with the packet (SCM_RIGHTS); only
  SEND may do that.
* REPLY (kind 3), window -> sender: the LRESULT of the SEND with the same ``seq``, or a
  Win32 status when the call failed.
* REFUSED (kind 4), window -> sender: the peer's credentials lack the CONNECT right; the
  window closes the connection right after.

Every decoder checks lengths against the caps before anything is allocated, and refuses
anything that is not the canonical encoding (reserved bytes, fields that must be zero).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from winipc import errors as W

MAGIC = b"WM"
VERSION = 1

KIND_SEND = 1
KIND_POST = 2
KIND_REPLY = 3
KIND_REFUSED = 4

#: lparam is the 64-bit integer field
PARAM_INT = 0
#: lparam is bytes (a pointer parameter): the payload
PARAM_BYTES = 1
#: WM_COPYDATA: ``dwdata`` and the payload are the COPYDATASTRUCT, wparam the sender's hwnd
PARAM_COPYDATA = 2

WHERE_INLINE = 0
WHERE_FD = 1

#: largest payload carried inside the packet (bytes); larger ones go in a memfd
INLINE_MAX = 64 * 1024
#: largest payload of any message (bytes): WM_COPYDATA and bytes lparams of sent messages
MAX_DATA = 1024 * 1024 * 1024

WM_COPYDATA = 0x004A

#: magic, version, kind, param type, where, reserved, seq, hwnd, msg, wparam, lparam,
#: dwdata, payload length, time
HEADER = struct.Struct("<2sBBBBHIIIQqQQd")
#: magic, version, kind, seq, status, result
REPLY = struct.Struct("<2sBBIIq")
#: magic, version, kind, status
REFUSED = struct.Struct("<2sBBI")

#: the largest packet a receiver must take (bytes)
PACKET_MAX = HEADER.size + INLINE_MAX

U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


@dataclass(frozen=True)
class MessageFrame:
    """A SEND or POST.

    Attributes:
        kind: KIND_SEND or KIND_POST.
        seq: the sender's call number (u32), echoed by the REPLY; 0 for a POST.
        hwnd: the target window (u32).
        msg: the message (UINT).
        wparam: WPARAM, 0..2**64-1 (the sender's hwnd for WM_COPYDATA).
        lparam: LPARAM, signed 64-bit; 0 unless ``ptype`` is PARAM_INT.
        ptype: PARAM_INT, PARAM_BYTES or PARAM_COPYDATA.
        dwdata: COPYDATASTRUCT.dwData (ULONG_PTR); 0 unless PARAM_COPYDATA.
        length: payload bytes.
        in_fd: the payload is in the memfd passed with the packet, not inline.
        time: seconds since the epoch when the sender sent it (``time.time()``).
        payload: the inline payload (``b""`` when ``in_fd``).
    """

    kind: int
    seq: int
    hwnd: int
    msg: int
    wparam: int
    lparam: int = 0
    ptype: int = PARAM_INT
    dwdata: int = 0
    length: int = 0
    in_fd: bool = False
    time: float = 0.0
    payload: bytes = b""


@dataclass(frozen=True)
class ReplyFrame:
    """The answer to the SEND numbered ``seq``: ``status`` 0 and ``result``, or a Win32 code."""

    seq: int
    status: int
    result: int


@dataclass(frozen=True)
class RefusedFrame:
    """The window refused the connection (``status`` = ERROR_ACCESS_DENIED)."""

    status: int


Frame = MessageFrame | ReplyFrame | RefusedFrame


def _check_int(value: int, lo: int, hi: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise W.InvalidParameter(f"{what} must be an integer in {lo}..{hi}, not {value!r}")


def encode_message(f: MessageFrame) -> bytes:
    """The packet for a SEND or POST (header + inline payload).

    Raises:
        InvalidParameter: a field out of its range or inconsistent with the others.
    """
    if f.kind not in (KIND_SEND, KIND_POST):
        raise W.InvalidParameter(f"kind {f.kind} is not SEND or POST")
    _check_int(f.seq, 0, U32, "seq")
    _check_int(f.hwnd, 0, U32, "hwnd")
    _check_int(f.msg, 0, U32, "msg")
    _check_int(f.wparam, 0, U64, "wparam")
    _check_int(f.lparam, I64_MIN, I64_MAX, "lparam")
    _check_int(f.dwdata, 0, U64, "dwdata")
    _check_int(f.length, 0, MAX_DATA, "length")
    if not (math.isfinite(f.time) and f.time >= 0):
        raise W.InvalidParameter(f"time must be finite seconds >= 0, not {f.time!r}")
    _check_consistent(f.kind, f.seq, f.msg, f.lparam, f.ptype, f.dwdata, f.length, f.in_fd, len(f.payload),
                      W.InvalidParameter)
    where = WHERE_FD if f.in_fd else WHERE_INLINE
    head = HEADER.pack(MAGIC, VERSION, f.kind, f.ptype, where, 0, f.seq, f.hwnd, f.msg, f.wparam, f.lparam,
                       f.dwdata, f.length, f.time)
    return head + bytes(f.payload)


def _check_consistent(kind: int, seq: int, msg: int, lparam: int, ptype: int, dwdata: int, length: int,
                      in_fd: bool, inline: int, err: type[W.WinIPCError]) -> None:
    if ptype not in (PARAM_INT, PARAM_BYTES, PARAM_COPYDATA):
        raise err(f"unknown parameter type {ptype}")
    if kind == KIND_POST and seq != 0:
        raise err("a POST carries seq 0")
    if ptype != PARAM_INT and lparam != 0:
        raise err("lparam must be 0 when the parameter is a payload")
    if ptype != PARAM_COPYDATA and dwdata != 0:
        raise err("dwdata must be 0 unless the message is WM_COPYDATA")
    if ptype == PARAM_COPYDATA and (msg != WM_COPYDATA or kind != KIND_SEND):
        raise err("a COPYDATA payload is only for a SEND of WM_COPYDATA (0x4A)")
    if ptype == PARAM_INT and (length != 0 or in_fd):
        raise err("an integer lparam has no payload")
    if in_fd:
        if kind != KIND_SEND:
            raise err("only a SEND may carry its payload in a memfd")
        if length <= INLINE_MAX:
            raise err(f"a memfd payload is over {INLINE_MAX} bytes; {length} goes inline")
        if inline != 0:
            raise err("a memfd packet has no inline payload")
    else:
        if length > INLINE_MAX:
            raise err(f"inline payload of {length} bytes; the maximum is {INLINE_MAX}")
        if inline != length:
            raise err(f"inline payload is {inline} bytes; the header says {length}")


def encode_reply(seq: int, status: int, result: int) -> bytes:
    """The REPLY packet.

    Raises:
        InvalidParameter: ``seq``/``status`` outside u32 or ``result`` outside signed 64-bit.
    """
    _check_int(seq, 0, U32, "seq")
    _check_int(status, 0, U32, "status")
    _check_int(result, I64_MIN, I64_MAX, "result")
    return REPLY.pack(MAGIC, VERSION, KIND_REPLY, seq, status, result)


def encode_refused(status: int = W.ERROR_ACCESS_DENIED) -> bytes:
    """The REFUSED packet."""
    _check_int(status, 1, U32, "status")
    return REFUSED.pack(MAGIC, VERSION, KIND_REFUSED, status)


def decode(data: bytes, nfds: int = 0) -> Frame:
    """Parse one packet; ``nfds`` descriptors arrived with it.

    Raises:
        InvalidData: anything but a canonical version-1 frame (the message says what).
    """
    n = len(data)
    if n < 4:
        raise W.InvalidData(f"packet of {n} bytes is shorter than any frame")
    if n > PACKET_MAX:
        raise W.InvalidData(f"packet of {n} bytes; the maximum is {PACKET_MAX}")
    if data[:2] != MAGIC:
        raise W.InvalidData(f"bad magic {bytes(data[:2])!r}")
    if data[2] != VERSION:
        raise W.InvalidData(f"unknown version {data[2]}")
    kind = data[3]
    if kind == KIND_REPLY:
        if n != REPLY.size or nfds:
            raise W.InvalidData(f"REPLY must be {REPLY.size} bytes without descriptors")
        _m, _v, _k, seq, status, result = REPLY.unpack(data)
        return ReplyFrame(seq, status, result)
    if kind == KIND_REFUSED:
        if n != REFUSED.size or nfds:
            raise W.InvalidData(f"REFUSED must be {REFUSED.size} bytes without descriptors")
        status = REFUSED.unpack(data)[3]
        if status == 0:
            raise W.InvalidData("REFUSED with status 0")
        return RefusedFrame(status)
    if kind not in (KIND_SEND, KIND_POST):
        raise W.InvalidData(f"unknown frame kind {kind}")
    if n < HEADER.size:
        raise W.InvalidData(f"message frame of {n} bytes is shorter than its {HEADER.size}-byte header")
    (_m, _v, _k, ptype, where, reserved, seq, hwnd, msg, wparam, lparam, dwdata, length,
     stamp) = HEADER.unpack_from(data)
    if reserved != 0:
        raise W.InvalidData("reserved header bytes are not zero")
    if where not in (WHERE_INLINE, WHERE_FD):
        raise W.InvalidData(f"unknown payload location {where}")
    if length > MAX_DATA:
        raise W.InvalidData(f"payload of {length} bytes; the maximum is {MAX_DATA}")
    if not (math.isfinite(stamp) and stamp >= 0):
        raise W.InvalidData(f"time {stamp!r} is not finite seconds >= 0")
    in_fd = where == WHERE_FD
    if nfds != (1 if in_fd else 0):
        raise W.InvalidData(f"{nfds} descriptors with a frame that needs {1 if in_fd else 0}")
    _check_consistent(kind, seq, msg, lparam, ptype, dwdata, length, in_fd, n - HEADER.size, W.InvalidData)
    payload = b"" if in_fd else bytes(data[HEADER.size:])
    return MessageFrame(kind, seq, hwnd, msg, wparam, lparam, ptype, dwdata, length, in_fd, stamp, payload)
