"""RPC frames, version 1 (specified in docs/wire/rpc.md). No I/O.

Every frame is a 16-byte little-endian header, a msgpack body, the out-of-band buffers
(their lengths are listed in the body) and, when the ``SIGNED`` flag is set, a 32-byte
HMAC-SHA256 trailer::

    0  u8   version (1)        4  u32  call id
    1  u8   type               8  u32  body length (bytes)
    2  u8   flags             12  u32  out-of-band length (bytes, all buffers together)
    3  u8   reserved (0)

On a stream (TCP, TLS) frames follow each other; on a message-type pipe each frame is one
message. :class:`FrameDecoder` turns stream bytes into :class:`Frame` objects and
:func:`parse_frame` checks one whole frame; both cap every length against the limit
before allocating and raise :class:`winipc.errors.ProtocolError` on malformed input, and
nothing else. Body shapes (msgpack arrays and maps) are checked by the ``*_body``
functions below, which raise ProtocolError too.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from dataclasses import dataclass
from typing import Any

import msgpack

from winipc.errors import ProtocolError

VERSION = 1
HEADER = struct.Struct("<BBBBIII")
HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack
MAC_SIZE = 32
#: default cap of one frame (bytes, header to trailer); a BIND may lower it
MAX_FRAME_DEFAULT = 256 * 1024 * 1024
MAX_FRAME_LIMIT = 0xFFFF_FFFF
MAX_CONTROL_BODY = 64 * 1024  # BIND, FAULT, CANCEL bodies are small

# frame types
BIND = 1
BIND_ACK = 2
BIND_NAK = 3
AUTH3 = 5
REQUEST = 0x10
RESPONSE = 0x11
FAULT = 0x12
CANCEL = 0x13
TYPES = frozenset({BIND, BIND_ACK, BIND_NAK, AUTH3, REQUEST, RESPONSE, FAULT, CANCEL})

# flags
ONEWAY = 0x01  # REQUEST: no RESPONSE follows
SIGNED = 0x02  # a MAC trailer follows
CALLBACK = 0x04  # a call from server to client (and its answer), during a client's call
DID_NOT_EXECUTE = 0x08  # FAULT: the method did not run
FLAGS_MASK = ONEWAY | SIGNED | CALLBACK | DID_NOT_EXECUTE

# authentication levels (RPC_C_AUTHN_LEVEL_*)
AUTHN_LEVEL_NONE = 1
AUTHN_LEVEL_CONNECT = 2
AUTHN_LEVEL_PKT_INTEGRITY = 5
AUTHN_LEVEL_PKT_PRIVACY = 6
AUTHN_LEVELS = frozenset({AUTHN_LEVEL_NONE, AUTHN_LEVEL_CONNECT, AUTHN_LEVEL_PKT_INTEGRITY, AUTHN_LEVEL_PKT_PRIVACY})

NONCE_SIZE = 16
_tls = threading.local()


def _packb(value: Any) -> bytes:
    """msgpack with one Packer per thread (creating one per call costs 3x the packing)."""
    try:
        pack = _tls.pack
    except AttributeError:
        pack = _tls.pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
    return pack(value)  # type: ignore[no-any-return]


_unpackb = msgpack.unpackb


class Header:
    """A frame's header fields; ``total`` is the whole frame's length in bytes."""

    __slots__ = ("body_len", "call_id", "flags", "oob_len", "total", "type")

    def __init__(self, type: int, flags: int, call_id: int, body_len: int, oob_len: int) -> None:
        self.type = type
        self.flags = flags
        self.call_id = call_id
        self.body_len = body_len
        self.oob_len = oob_len
        self.total = HEADER_SIZE + body_len + oob_len + (MAC_SIZE if flags & SIGNED else 0)


class Frame:
    """One whole frame: its header and its bytes (header included: the MAC covers it)."""

    __slots__ = ("header", "raw")

    def __init__(self, header: Header, raw: memoryview) -> None:
        self.header = header
        self.raw = raw

    @property
    def body(self) -> memoryview:
        return self.raw[HEADER_SIZE:HEADER_SIZE + self.header.body_len]

    @property
    def oob(self) -> memoryview:
        start = HEADER_SIZE + self.header.body_len
        return self.raw[start:start + self.header.oob_len]

    @property
    def signed_part(self) -> memoryview:
        return self.raw[:HEADER_SIZE + self.header.body_len + self.header.oob_len]

    @property
    def mac(self) -> memoryview:
        return self.raw[self.header.total - MAC_SIZE:self.header.total]


def parse_header(raw: bytes | bytearray | memoryview, max_frame: int) -> Header:
    """Check a 16-byte header; lengths against ``max_frame`` (bytes)."""
    version, ftype, flags, reserved, call_id, body_len, oob_len = _unpack_header(raw)
    if version == VERSION and ftype in (REQUEST, RESPONSE) and not reserved and not flags & ~FLAGS_MASK:
        header = Header(ftype, flags, call_id, body_len, oob_len)  # the common case, checked at once
        if header.total > max_frame:
            raise ProtocolError(f"peer announced a {header.total}-byte RPC frame; the limit is {max_frame}")
        return header
    if version != VERSION:
        raise ProtocolError(f"RPC frame version {version}; this side speaks {VERSION}")
    if ftype not in TYPES:
        raise ProtocolError(f"unknown RPC frame type {ftype:#x}")
    if flags & ~FLAGS_MASK or reserved:
        raise ProtocolError(f"reserved bits set in an RPC frame (flags {flags:#x}, reserved {reserved})")
    header = Header(ftype, flags, call_id, body_len, oob_len)
    if header.total > max_frame:
        raise ProtocolError(f"peer announced a {header.total}-byte RPC frame; the limit is {max_frame}")
    if ftype not in (REQUEST, RESPONSE) and (oob_len or body_len > MAX_CONTROL_BODY):
        raise ProtocolError(f"RPC frame type {ftype:#x} with {body_len}+{oob_len} bytes is too long")
    return header


def parse_frame(raw: bytes | bytearray | memoryview, max_frame: int = MAX_FRAME_DEFAULT) -> Frame:
    """One whole frame (a pipe message): header checked, length exact."""
    view = memoryview(raw)
    if len(view) < HEADER_SIZE:
        raise ProtocolError(f"RPC frame of {len(view)} bytes is shorter than its header")
    header = parse_header(view, max_frame)
    if header.total != len(view):
        raise ProtocolError(f"RPC frame header says {header.total} bytes, the message has {len(view)}")
    return Frame(header, view)


class FrameDecoder:
    """Stream decoder: ``feed(data)`` then ``next_frame()`` until it returns None."""

    def __init__(self, max_frame: int = MAX_FRAME_DEFAULT) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._need: Header | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    @property
    def wanted(self) -> int:
        """Bytes still missing for the frame in progress (at least 1 when nothing is buffered)."""
        if self._need is None:
            return max(HEADER_SIZE - len(self._buf), 1)
        return max(self._need.total - len(self._buf), 1)

    @property
    def in_frame(self) -> bool:
        return bool(self._buf)

    def next_frame(self) -> Frame | None:
        if self._need is None:
            if len(self._buf) < HEADER_SIZE:
                return None
            self._need = parse_header(self._buf, self._max)
        total = self._need.total
        if len(self._buf) < total:
            return None
        header, self._need = self._need, None
        if len(self._buf) == total:
            raw, self._buf = self._buf, bytearray()
        else:
            raw = self._buf[:total]
            del self._buf[:total]
        return Frame(header, memoryview(raw))


# ------------------------------------------------------------------------ encoding


def frame_parts(ftype: int, flags: int, call_id: int, body: bytes,
                oob: list[memoryview] | None = None, mac_key: bytes | None = None,
                mac_prefix: bytes = b"") -> list[bytes | memoryview]:
    """The pieces of one frame, to be written in order (gathered, no copy of ``oob``).

    With ``mac_key`` the SIGNED flag is set and the trailer is HMAC-SHA256(mac_key,
    mac_prefix + frame); ``mac_prefix`` is the direction byte and sequence number.
    """
    oob_len = sum(len(b) for b in oob) if oob else 0
    if mac_key is not None:
        flags |= SIGNED
    head = HEADER.pack(VERSION, ftype, flags, 0, call_id, len(body), oob_len)
    parts: list[bytes | memoryview] = [head, body]
    if oob:
        parts.extend(oob)
    if mac_key is not None:
        mac = hmac.new(mac_key, mac_prefix, hashlib.sha256)
        for p in parts:
            mac.update(p)
        parts.append(mac.digest())
    return parts


def mac_prefix(direction: int, seq: int) -> bytes:
    """What a frame's MAC covers before the frame: direction (0 client->server, 1 back), sequence."""
    return struct.pack("<BQ", direction, seq)


def check_mac(frame: Frame, key: bytes, prefix: bytes) -> bool:
    if not frame.header.flags & SIGNED:
        return False
    mac = hmac.new(key, prefix, hashlib.sha256)
    mac.update(frame.signed_part)
    return hmac.compare_digest(mac.digest(), bytes(frame.mac))


def session_key(key: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """The per-connection key both sides derive from the shared key (bytes) and the nonces."""
    return hmac.new(key, b"winipc-rpc-1" + client_nonce + server_nonce, hashlib.sha256).digest()


def proof(skey: bytes, who: bytes) -> bytes:
    """What a side sends to show it holds the session key (``who`` is b"server" or b"client")."""
    return hmac.new(skey, b"proof:" + who, hashlib.sha256).digest()


def pack(value: Any) -> bytes:
    return _packb(value)


def unpack(body: bytes | memoryview) -> Any:
    """A msgpack body; any failure is a ProtocolError (lengths inside are capped by the body)."""
    try:
        return _unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several types for bad input
        raise ProtocolError(f"RPC frame body is not valid msgpack: {exc}") from None


# ------------------------------------------------------------------------ bodies


@dataclass(frozen=True, slots=True)
class Bind:
    assoc: bytes  # 16 random bytes naming the client's association (its connections share context handles)
    auth_level: int
    principal: str | None
    nonce: bytes | None
    max_frame: int
    callbacks: list[tuple[bytes, int, int]]  # interfaces the client serves for callbacks (uuid, major, minor)


def bind_body(b: Bind) -> bytes:
    return pack({"assoc": b.assoc, "auth": b.auth_level, "principal": b.principal, "nonce": b.nonce,
                 "max_frame": b.max_frame, "callbacks": [list(c) for c in b.callbacks]})


def _field(d: dict[Any, Any], key: str, typ: type, what: str) -> Any:
    value = d.get(key)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ProtocolError(f"{what}: field {key!r} is missing or of the wrong type")
    return value


def _uuid_triple(item: Any, what: str) -> tuple[bytes, int, int]:
    if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], bytes) or len(item[0]) != 16
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF for v in item[1:])):
        raise ProtocolError(f"{what}: an interface must be [uuid (16 bytes), major, minor]")
    return item[0], item[1], item[2]


def parse_bind(body: memoryview | bytes) -> Bind:
    d = unpack(body)
    if not isinstance(d, dict):
        raise ProtocolError("BIND body must be a map")
    assoc = _field(d, "assoc", bytes, "BIND")
    level = _field(d, "auth", int, "BIND")
    if len(assoc) != 16 or level not in AUTHN_LEVELS:
        raise ProtocolError("BIND: assoc must be 16 bytes and auth a known level (1, 2, 5, 6)")
    principal = d.get("principal")
    nonce = d.get("nonce")
    if principal is not None and (not isinstance(principal, str) or len(principal) > 256):
        raise ProtocolError("BIND: principal must be a string of at most 256 characters")
    if nonce is not None and (not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE):
        raise ProtocolError(f"BIND: nonce must be {NONCE_SIZE} bytes")
    max_frame = _field(d, "max_frame", int, "BIND")
    if not HEADER_SIZE <= max_frame <= MAX_FRAME_LIMIT:
        raise ProtocolError(f"BIND: max_frame {max_frame} outside {HEADER_SIZE}..{MAX_FRAME_LIMIT}")
    cbs = d.get("callbacks", [])
    if not isinstance(cbs, list) or len(cbs) > 64:
        raise ProtocolError("BIND: callbacks must be a list of at most 64 interfaces")
    return Bind(assoc, level, principal, nonce, max_frame, [_uuid_triple(c, "BIND") for c in cbs])


@dataclass(frozen=True, slots=True)
class BindAck:
    max_frame: int
    nonce: bytes | None
    proof: bytes | None
    server_pid: int


def bind_ack_body(a: BindAck) -> bytes:
    return pack({"max_frame": a.max_frame, "nonce": a.nonce, "proof": a.proof, "pid": a.server_pid})


def parse_bind_ack(body: memoryview | bytes) -> BindAck:
    d = unpack(body)
    if not isinstance(d, dict):
        raise ProtocolError("BIND_ACK body must be a map")
    max_frame = _field(d, "max_frame", int, "BIND_ACK")
    if not HEADER_SIZE <= max_frame <= MAX_FRAME_LIMIT:
        raise ProtocolError(f"BIND_ACK: max_frame {max_frame} outside {HEADER_SIZE}..{MAX_FRAME_LIMIT}")
    nonce, prf, pid = d.get("nonce"), d.get("proof"), d.get("pid", 0)
    if nonce is not None and (not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE):
        raise ProtocolError(f"BIND_ACK: nonce must be {NONCE_SIZE} bytes")
    if prf is not None and (not isinstance(prf, bytes) or len(prf) != MAC_SIZE):
        raise ProtocolError(f"BIND_ACK: proof must be {MAC_SIZE} bytes")
    if not isinstance(pid, int) or isinstance(pid, bool):
        raise ProtocolError("BIND_ACK: pid must be an integer")
    return BindAck(max_frame, nonce, prf, pid)


def status_body(status: int, type_name: str, message: str) -> bytes:
    """Body of BIND_NAK and FAULT: [status, exception type name, message]."""
    return pack([status, type_name[:200], message[:4000]])


def parse_status(body: memoryview | bytes, what: str) -> tuple[int, str, str]:
    d = unpack(body)
    if (not isinstance(d, list) or len(d) != 3 or not isinstance(d[0], int) or isinstance(d[0], bool)
            or not isinstance(d[1], str) or not isinstance(d[2], str)):
        raise ProtocolError(f"{what} body must be [status, type name, message]")
    return d[0], d[1], d[2]


def parse_auth3(body: memoryview | bytes) -> bytes:
    d = unpack(body)
    if not isinstance(d, bytes) or len(d) != MAC_SIZE:
        raise ProtocolError(f"AUTH3 body must be {MAC_SIZE} bytes of proof")
    return d


def request_body(if_uuid: bytes, major: int, minor: int, opnum: int, args: list[Any], oob_lens: list[int]) -> bytes:
    return _packb([if_uuid, major, minor, opnum, args, oob_lens])


# A call with no out-of-band buffer on a connection without MAC is the common case: its
# frames are built in one piece and read without Header/Frame objects (the same bytes as
# the general path; tests/test_wire_rpc.py holds the two to each other).
_ARRAY6, _ARRAY2, _NO_OOB = b"\x96", b"\x92", b"\x90"


def request_prefix(if_uuid: bytes, major: int, minor: int, opnum: int) -> bytes:
    """The fixed start of a method's REQUEST body: the array header and its first four items."""
    return _ARRAY6 + _packb(if_uuid) + _packb(major) + _packb(minor) + _packb(opnum)


def request_frame(prefix: bytes, flags: int, call_id: int, args: list[Any]) -> bytes:
    """A whole unsigned REQUEST frame without out-of-band buffers (``prefix`` from :func:`request_prefix`)."""
    body = prefix + _packb(args) + _NO_OOB
    return _pack_header(VERSION, REQUEST, flags, 0, call_id, len(body), 0) + body


def response_frame(flags: int, call_id: int, result: Any) -> bytes:
    """A whole unsigned RESPONSE frame without out-of-band buffers."""
    body = _ARRAY2 + _packb(result) + _NO_OOB
    return _pack_header(VERSION, RESPONSE, flags, 0, call_id, len(body), 0) + body


def _quick_body(raw: bytes | bytearray | memoryview, ftype: int, flags_ok: int) -> tuple[int, int, Any] | None:
    """``(flags, call_id, unpacked body)`` of an unsigned ``ftype`` frame without
    out-of-band bytes whose flags are within ``flags_ok``; None for anything else."""
    if len(raw) < HEADER_SIZE:
        return None
    version, got_type, flags, reserved, call_id, body_len, oob_len = _unpack_header(raw)
    if (version != VERSION or got_type != ftype or reserved or oob_len or flags & ~flags_ok
            or HEADER_SIZE + body_len != len(raw)):
        return None
    try:
        return flags, call_id, _unpackb(raw[HEADER_SIZE:], raw=False, strict_map_key=False, use_list=True)
    except Exception:
        return None


def quick_request(raw: bytes | bytearray | memoryview) -> tuple[int, int, list[Any]] | None:
    """``(flags, call_id, [uuid, major, minor, opnum, args, []])`` of a plain REQUEST frame.

    None when the frame is anything else (signed, out-of-band buffers, another type, or
    not well-formed): :func:`parse_frame` and :func:`parse_request` then decide.
    """
    q = _quick_body(raw, REQUEST, ONEWAY | CALLBACK)
    if q is not None and type(d := q[2]) is list and len(d) == 6:
        u, major, minor, opnum, _args, lens = d
        if (type(u) is bytes and len(u) == 16 and type(major) is int and type(minor) is int and type(opnum) is int
                and 0 <= major <= 0xFFFF and 0 <= minor <= 0xFFFF and 0 <= opnum <= 0xFFFF
                and type(lens) is list and not lens):
            return q
    return None


def quick_response(raw: bytes | bytearray | memoryview, flags: int, call_id: int) -> list[Any] | None:
    """``[result, []]`` of the plain RESPONSE to call ``call_id`` with ``flags``, else None
    (then :func:`parse_frame` and :func:`parse_response` decide)."""
    q = _quick_body(raw, RESPONSE, CALLBACK)
    if (q is not None and q[0] == flags and q[1] == call_id and type(d := q[2]) is list and len(d) == 2
            and type(d[1]) is list and not d[1]):
        return d
    return None


@dataclass(slots=True)
class Request:
    if_uuid: bytes
    major: int
    minor: int
    opnum: int
    args: Any  # checked by the interface's stubs
    oob: list[memoryview]


def split_oob(oob: memoryview, lens: Any, what: str) -> list[memoryview]:
    if not isinstance(lens, list) or len(lens) > 65536:
        raise ProtocolError(f"{what}: out-of-band lengths must be a list")
    out = []
    pos = 0
    for n in lens:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or pos + n > len(oob):
            raise ProtocolError(f"{what}: out-of-band lengths do not add up to the frame's {len(oob)} bytes")
        out.append(oob[pos:pos + n])
        pos += n
    if pos != len(oob):
        raise ProtocolError(f"{what}: out-of-band lengths do not add up to the frame's {len(oob)} bytes")
    return out


def _u16(v: Any) -> bool:
    return type(v) is int and 0 <= v <= 0xFFFF


def parse_request(frame: Frame) -> Request:
    d = unpack(frame.body)
    if (type(d) is not list or len(d) != 6 or type(d[0]) is not bytes or len(d[0]) != 16
            or not (_u16(d[1]) and _u16(d[2]) and _u16(d[3]))):
        raise ProtocolError("REQUEST body must be [interface uuid (16 bytes), major, minor, opnum, args, oob lengths]")
    oob = split_oob(frame.oob, d[5], "REQUEST") if type(d[5]) is not list or d[5] or frame.header.oob_len else []
    return Request(d[0], d[1], d[2], d[3], d[4], oob)


def response_body(result: Any, oob_lens: list[int]) -> bytes:
    return _packb([result, oob_lens])


def parse_response(frame: Frame) -> tuple[Any, list[memoryview]]:
    d = unpack(frame.body)
    if type(d) is not list or len(d) != 2:
        raise ProtocolError("RESPONSE body must be [result, oob lengths]")
    lens = d[1]
    return d[0], split_oob(frame.oob, lens, "RESPONSE") if type(lens) is not list or lens or frame.header.oob_len else []
