"""The RPC type codec: Python annotations compiled into checked msgpack encoders and decoders.

A :class:`TypeSpec` is what one annotation compiles to, once, at interface declaration time:
a pair of plain functions (``encode``, ``decode``) plus the description ``to_idl`` prints.
Encoding checks a Python value against the annotation and returns something
``msgpack.packb(x, use_bin_type=True)`` accepts; decoding checks what
``msgpack.unpackb(raw, raw=False, strict_map_key=False)`` produced and builds the Python
value. No I/O happens here. The MIDL equivalents are the NDR stubs MIDL generates from an
``.idl`` file (Win32: NdrClientCall2 / NdrServerCall2).

Three msgpack extension types carry what msgpack has no type for::

    EXT_CONTEXT (1)  16 raw bytes: a context handle's UUID        MIDL [context_handle]
    EXT_OOB     (2)  struct ">I": index into the frame's out-of-band buffer list
    EXT_NDARRAY (3)  msgpack [dtype.str, [shape...], payload]; payload = bytes inline,
                     or an int index into the out-of-band buffers; C order

Supported annotations and their wire forms::

    bool                      bool (an int is refused, and a bool is refused for int)
    int                       int in -2**63..2**64-1 (what msgpack carries); encode accepts
                              int subclasses (IntEnum members) and sends a plain int
    Int8 .. UInt64            int, range-checked on encode and on decode (MIDL [range])
    float                     float; an int is accepted and converted on both ends
    str                       str (encode refuses text that is not valid UTF-8)
    bytes                     bin; encode takes bytes, bytearray or memoryview; decode gives
                              bytes. At least ``oob_threshold`` bytes travel out of band
                              (EXT_OOB) when the caller collects buffers
    None                      nil
    list[T]                   array; encode takes a list or tuple
    dict[K, V]                map; K is str, int (any width), bytes, bool or an Enum; keys
                              always travel inline
    tuple[A, B], tuple[T, ...] array, length checked; decode gives a tuple
    Optional[T], T | None     nil or T
    Any                       passed through unchecked both ways: the value must be one
                              msgpack packs natively; no ExtType is made for it (bytes stay
                              inline, arrays and handles are not converted), and whatever
                              the peer sent, ExtTypes included, is handed over as is
    enum.Enum subclass        the member's value (all int or all str); decode gives the
                              member, an unknown value is refused (Flag: combinations too)
    dataclass                 map {field: value} of the init fields; decode refuses unknown
                              keys and missing required ones, and calls the class (its
                              __post_init__ refusing the data is BadStubData)
    numpy.ndarray, NDArray[…] EXT_NDARRAY, C order; object and structured dtypes refused;
                              decode is zero-copy over inline bytes or the oob buffer (the
                              dtype parameter of NDArray is not checked)
    ContextHandle (subclass)  EXT_CONTEXT; decode gives ``context_in(raw)`` if given, else
                              ``ContextHandle(raw)``; encode takes any ContextHandle

Bad values raise :class:`winipc.errors.BadStubData` (RPC_X_BAD_STUB_DATA), and nothing
else, whatever the decoder is fed. Inside the codec a :class:`_Mismatch` (a BadStubData)
collects the path to the offending value as it unwinds; :mod:`winipc.rpc._idl` turns it into
the final message naming the method and the parameter.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import re
import struct
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Union

import msgpack

from winipc.errors import BadStubData, InvalidParameter

EXT_CONTEXT = 1
EXT_OOB = 2
EXT_NDARRAY = 3

#: The integers msgpack can carry: int64 and uint64 together.
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1

_OOB_INDEX = struct.Struct(">I")
_ExtType = msgpack.ExtType
# dtype.str spellings an ndarray may travel as: byte order, kind, item size, datetime unit
_DTYPE_STR = re.compile(r"[<>|=][biufcSUVmM]\d{1,9}(\[\d{0,9}[A-Za-z]{1,3}\])?")

ContextIn = Callable[[bytes], Any]
Encoder = Callable[[Any, "list[memoryview] | None", int], Any]
Decoder = Callable[[Any, Sequence[memoryview], "ContextIn | None"], Any]


class _MissingType(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


#: Marks a parameter or field without a default.
MISSING = _MissingType.MISSING


class _Mismatch(BadStubData):
    """A value that does not fit; ``path`` gathers segments innermost first."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.path: list[str] = []


def _tname(v: Any) -> str:
    if type(v) is _ExtType:
        return f"ExtType({v.code})"
    return type(v).__name__


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _expected(what: str, v: Any) -> _Mismatch:
    return _Mismatch(f"expected {what}, got {_tname(v)}")


@dataclasses.dataclass(frozen=True)
class Width:
    """The fixed width of an integer (MIDL ``small``/``short``/``long``/``hyper``, signed or not).

    Used as ``Annotated[int, Width(32, True)]``; values outside the range are refused on
    both ends with BadStubData, as MIDL's ``[range]`` attribute refuses them.

    Attributes:
        bits: 1..64.
        signed: two's complement when true, else unsigned.

    Raises:
        TypeError: bits outside 1..64 or a non-bool ``signed``.
    """

    bits: int
    signed: bool

    def __post_init__(self) -> None:
        if type(self.bits) is not int or not 1 <= self.bits <= 64 or type(self.signed) is not bool:
            raise TypeError(f"Width(bits, signed) needs bits in 1..64 and a bool; got {self!r}")

    @property
    def low(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def high(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def name(self) -> str:
        return f"{'Int' if self.signed else 'UInt'}{self.bits}"


class ContextHandle:
    """Base class of context handles (MIDL ``[context_handle]``): server state named by a UUID.

    The server and client modules subclass it. On the wire it is ``ExtType(EXT_CONTEXT, uuid)``.
    Two handles are equal when their UUIDs are.

    Args:
        uuid: exactly 16 bytes.

    Raises:
        InvalidParameter: ``uuid`` is not 16 bytes.
    """

    __slots__ = ("uuid",)

    def __init__(self, uuid: bytes) -> None:
        if not isinstance(uuid, (bytes, bytearray, memoryview)) or len(uuid) != 16:
            raise InvalidParameter(f"a context handle's uuid is 16 bytes, got {_short(uuid)}")
        self.uuid = bytes(uuid)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uuid.hex()})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ContextHandle):
            return self.uuid == other.uuid
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.uuid)


@dataclasses.dataclass(frozen=True, eq=False)
class FieldSpec:
    """One field of a struct (a dataclass): its wire key, type, default (or MISSING), factory."""

    name: str
    type: TypeSpec
    default: Any = MISSING
    factory: Callable[[], Any] | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.factory is None


@dataclasses.dataclass(frozen=True, eq=False)
class TypeSpec:
    """One annotation, compiled.

    Attributes:
        kind: ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``none``, ``any``, ``list``,
            ``map``, ``tuple``, ``optional``, ``enum``, ``struct``, ``ndarray`` or
            ``context_handle``.
        annotation: the annotation it was compiled from.
        encode: ``encode(value, oob, oob_threshold) -> wire``; raises BadStubData.
        decode: ``decode(wire, oob, context_in) -> value``; raises BadStubData.
        items: the element types: (T,) for list/variadic tuple/optional, (K, V) for map,
            the items of a fixed tuple.
        variadic: ``tuple[T, ...]``.
        width: the integer width, or None.
        cls: the enum, dataclass or ContextHandle class.
        fields: a struct's fields (filled after creation so types may refer to themselves).
        fast: a wire type decoded unchanged (``type(w) is fast`` means ``w`` is the value).
    """

    kind: str
    annotation: Any
    encode: Encoder = dataclasses.field(repr=False)
    decode: Decoder = dataclasses.field(repr=False)
    items: tuple[TypeSpec, ...] = ()
    variadic: bool = False
    width: Width | None = None
    cls: type | None = None
    fields: tuple[FieldSpec, ...] = ()
    fast: type | None = None


# -- scalars ------------------------------------------------------------------------------


def _enc_bool(v: Any, oob: list[memoryview] | None, th: int) -> Any:
    if type(v) is bool:
        return v
    raise _expected("bool", v)


def _dec_bool(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
    if type(w) is bool:
        return w
    raise _expected("bool", w)


def _as_int(v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    raise _expected("int", v)


def _enc_int(v: Any, oob: list[memoryview] | None, th: int) -> Any:
    v = _as_int(v)
    if INT_MIN <= v <= INT_MAX:
        return v
    raise _Mismatch(f"{v} is outside the integers msgpack carries ({INT_MIN}..{INT_MAX})")


def _dec_int(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
    if type(w) is int:
        return w
    raise _expected("int", w)


def _width_codec(width: Width) -> tuple[Encoder, Decoder]:
    low, high, name = width.low, width.high, width.name

    def check(v: int) -> int:
        if low <= v <= high:
            return v
        raise _Mismatch(f"{v} is out of range for {name} ({low}..{high})")

    def enc(v: Any, oob: list[memoryview] | None, th: int) -> Any:
        return check(_as_int(v))

    def dec(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
        if type(w) is int:
            return check(w)
        raise _expected(name, w)

    return enc, dec


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except OverflowError:
        raise _Mismatch(f"{_short(v)} is too large for a float") from None


def _enc_float(v: Any, oob: list[memoryview] | None, th: int) -> Any:
    if type(v) is float:
        return v
    if isinstance(v, (float, int)) and not isinstance(v, bool):
        return _to_float(v)
    raise _expected("float", v)


def _dec_float(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
    if type(w) is float:
        return w
    if type(w) is int:
        return _to_float(w)
    raise _expected("float", w)


def _enc_str(v: Any, oob: list[memoryview] | None, th: int) -> Any:
    if type(v) is not str:
        if not isinstance(v, str):
            raise _expected("str", v)
        v = str.__str__(v)
    if not v.isascii():  # O(1) in CPython; only non-ASCII text pays for the UTF-8 check
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _Mismatch(f"str is not valid UTF-8 text ({e.reason} at {e.start})") from None
    return v


def _dec_str(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
    if type(w) is str:
        return w
    raise _expected("str", w)


def _enc_bytes(v: Any, oob: list[memoryview] | None, th: int) -> Any:
    if type(v) is bytes:
        if oob is None or len(v) < th:
            return v
        mv = memoryview(v)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        mv = memoryview(v)
        if oob is None or mv.nbytes < th:
            return mv.tobytes()
        if not mv.c_contiguous:
            mv = memoryview(mv.tobytes())
        mv = mv.cast("B")
    else:
        raise _expected("bytes", v)
    oob.append(mv)
    return _ExtType(EXT_OOB, _OOB_INDEX.pack(len(oob) - 1))


def _oob_buffer(data: Any, oob: Sequence[memoryview]) -> memoryview:
    if type(data) is not bytes or len(data) != 4:
        raise _Mismatch("malformed out-of-band reference")
    index: int = _OOB_INDEX.unpack(data)[0]
    if index >= len(oob):
        raise _Mismatch(f"out-of-band buffer {index} does not exist (the frame has {len(oob)})")
    return oob[index]


def _dec_bytes(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
    if type(w) is bytes:
        return w
    if type(w) is _ExtType and w.code == EXT_OOB:
        return bytes(_oob_buffer(w.data, oob))
    raise _expected("bytes", w)


def _enc_none(v: Any, oob: list[memoryview] | None, th: int) -> Any:
    if v is None:
        return None
    raise _expected("None", v)


def _dec_none(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
    if w is None:
        return None
    raise _expected("None", w)


def _enc_any(v: Any, oob: list[memoryview] | None, th: int) -> Any:
    return v


def _dec_any(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
    return w


def _enc_context(v: Any, oob: list[memoryview] | None, th: int) -> Any:
    if isinstance(v, ContextHandle):
        return _ExtType(EXT_CONTEXT, v.uuid)
    raise _expected("a context handle", v)


def _dec_context(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
    if type(w) is _ExtType and w.code == EXT_CONTEXT and len(w.data) == 16:
        return ContextHandle(w.data) if ci is None else ci(w.data)
    raise _expected("a context handle", w)


_NoneType = type(None)
_SCALARS: dict[Any, TypeSpec] = {
    bool: TypeSpec("bool", bool, _enc_bool, _dec_bool, fast=bool),
    int: TypeSpec("int", int, _enc_int, _dec_int, fast=int),
    float: TypeSpec("float", float, _enc_float, _dec_float, fast=float),
    str: TypeSpec("str", str, _enc_str, _dec_str, fast=str),
    bytes: TypeSpec("bytes", bytes, _enc_bytes, _dec_bytes, fast=bytes),
    _NoneType: TypeSpec("none", None, _enc_none, _dec_none, fast=_NoneType),
    Any: TypeSpec("any", Any, _enc_any, _dec_any),
}
_SCALARS[None] = _SCALARS[_NoneType]
_CONTEXT = TypeSpec("context_handle", ContextHandle, _enc_context, _dec_context, cls=ContextHandle)
_MAP_KEY_KINDS = ("str", "int", "bytes", "bool", "enum")
# values of these exact types are their own wire form (int, str and bytes still need checks)
_PASS_ON_ENCODE = (bool, float, _NoneType)


# -- containers ---------------------------------------------------------------------------


def _list_codec(item: TypeSpec, as_tuple: bool) -> tuple[Encoder, Decoder]:
    ienc, idec, fast = item.encode, item.decode, item.fast
    what = "a tuple" if as_tuple else "a list"

    def enc(v: Any, oob: list[memoryview] | None, th: int) -> Any:
        if not isinstance(v, (list, tuple)):
            raise _expected(what, v)
        out = []
        i = 0
        try:
            for x in v:
                out.append(ienc(x, oob, th))
                i += 1
        except _Mismatch as e:
            e.path.append(f"[{i}]")
            raise
        return out

    def dec(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
        if type(w) is not list and type(w) is not tuple:
            raise _expected(what, w)
        if fast is not None:
            for x in w:
                if type(x) is not fast:
                    break
            else:
                return tuple(w) if as_tuple else w if type(w) is list else list(w)
        out = []
        i = 0
        try:
            for x in w:
                out.append(idec(x, oob, ci))
                i += 1
        except _Mismatch as e:
            e.path.append(f"[{i}]")
            raise
        return tuple(out) if as_tuple else out

    return enc, dec


def _tuple_codec(items: tuple[TypeSpec, ...]) -> tuple[Encoder, Decoder]:
    encs = [t.encode for t in items]
    decs = [t.decode for t in items]
    n = len(items)

    def enc(v: Any, oob: list[memoryview] | None, th: int) -> Any:
        if not isinstance(v, (list, tuple)):
            raise _expected(f"a tuple of {n}", v)
        if len(v) != n:
            raise _Mismatch(f"expected a tuple of {n}, got {len(v)} items")
        out = []
        i = 0
        try:
            for i, x in enumerate(v):  # not zip(strict=...): a slow keyword call
                out.append(encs[i](x, oob, th))
        except _Mismatch as m:
            m.path.append(f"[{i}]")
            raise
        return out

    def dec(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
        if type(w) is not list and type(w) is not tuple:
            raise _expected(f"a tuple of {n}", w)
        if len(w) != n:
            raise _Mismatch(f"expected a tuple of {n}, got {len(w)} items")
        out = []
        i = 0
        try:
            for i, x in enumerate(w):
                out.append(decs[i](x, oob, ci))
        except _Mismatch as m:
            m.path.append(f"[{i}]")
            raise
        return tuple(out)

    return enc, dec


def _map_codec(key: TypeSpec, value: TypeSpec) -> tuple[Encoder, Decoder]:
    kenc, kdec, venc, vdec = key.encode, key.decode, value.encode, value.decode

    def enc(v: Any, oob: list[memoryview] | None, th: int) -> Any:
        if type(v) is not dict and not isinstance(v, Mapping):
            raise _expected("a dict", v)
        out = {}
        for k, x in v.items():
            try:
                wk = kenc(k, None, th)  # keys always travel inline
            except _Mismatch as m:
                m.path.append(f"<key {_short(k)}>")
                raise
            try:
                out[wk] = venc(x, oob, th)
            except _Mismatch as m:
                m.path.append(f"[{_short(k)}]")
                raise
        return out

    def dec(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
        if type(w) is not dict:
            raise _expected("a map", w)
        out = {}
        for k, x in w.items():
            try:
                pk = kdec(k, (), None)
            except _Mismatch as m:
                m.path.append(f"<key {_short(k)}>")
                raise
            try:
                out[pk] = vdec(x, oob, ci)
            except _Mismatch as m:
                m.path.append(f"[{_short(k)}]")
                raise
        return out

    return enc, dec


def _optional_codec(inner: TypeSpec) -> tuple[Encoder, Decoder]:
    ienc, idec = inner.encode, inner.decode

    def enc(v: Any, oob: list[memoryview] | None, th: int) -> Any:
        return None if v is None else ienc(v, oob, th)

    def dec(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
        return None if w is None else idec(w, oob, ci)

    return enc, dec


# -- named types: enums and structs -------------------------------------------------------

_NAMED: dict[type, TypeSpec] = {}


def _enum_spec(cls: type[enum.Enum]) -> TypeSpec:
    members = list(cls)
    values = [m.value for m in members]
    if all(type(x) is int for x in values):
        base: type = int
        bad = [x for x in values if not INT_MIN <= x <= INT_MAX]
        if bad:
            raise TypeError(f"enum {cls.__qualname__}: value {bad[0]} does not fit msgpack")
    elif all(type(x) is str for x in values):
        base = str
    else:
        raise TypeError(f"enum {cls.__qualname__}: member values must be all int or all str")
    by_value = {m.value: m for m in members}
    is_flag = issubclass(cls, enum.Flag)
    qual = cls.__qualname__

    def enc(v: Any, oob: list[memoryview] | None, th: int) -> Any:
        if isinstance(v, cls):
            return v.value
        raise _expected(qual, v)

    def dec(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
        if type(w) is not base:
            raise _expected(f"{qual} ({base.__name__})", w)
        member = by_value.get(w)
        if member is not None:
            return member
        if is_flag:
            try:
                return cls(w)
            except ValueError:
                pass
        raise _Mismatch(f"{_short(w)} is not a value of {qual}")

    return TypeSpec("enum", cls, enc, dec, cls=cls)


def _struct_spec(cls: type) -> TypeSpec:
    qual = cls.__qualname__
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as e:
        raise TypeError(f"dataclass {qual}: cannot resolve its annotations ({e})") from e
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    try:
        init_params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        init_params = []
    for p in init_params:
        if p.name not in names and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"dataclass {qual}: __init__ needs {p.name!r}, which is not a field the wire carries")
    cell = _StructRows()
    spec = TypeSpec("struct", cls, *_struct_codec(cls, cell, names), cls=cls)
    _NAMED[cls] = spec  # before compiling the fields, so a field may refer back to cls
    try:
        specs = []
        for f in fields:
            try:
                ft = compile_type(hints[f.name])
            except TypeError as e:
                raise TypeError(f"dataclass {qual}: field {f.name!r}: {e}") from None
            default: Any = MISSING
            factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
            if f.default is not dataclasses.MISSING:
                default = f.default
                check_default(ft, default, f"dataclass {qual}: default of field {f.name!r}")
            field_spec = FieldSpec(f.name, ft, default, factory)
            specs.append(field_spec)
            efast = ft.fast if ft.fast in _PASS_ON_ENCODE else None
            cell.rows.append((f.name, ft.encode, ft.decode, efast, ft.fast, field_spec.required))
    except BaseException:
        del _NAMED[cls]
        raise
    if all(row[4] is not None for row in cell.rows):
        cell.fast_names = [row[0] for row in cell.rows]
        cell.fast_types = [row[4] for row in cell.rows]
    object.__setattr__(spec, "fields", tuple(specs))
    return spec


class _StructRows:
    """A dataclass's fields as its codec reads them; filled in after the codec is made.

    ``rows``: (name, encode, decode, type passed unchanged on encode, type passed unchanged
    on decode, required). When every field decodes unchanged, ``fast_names``/``fast_types``
    let a map in field order with exactly those value types go straight to the constructor.
    """

    __slots__ = ("fast_names", "fast_types", "rows")

    def __init__(self) -> None:
        self.rows: list[tuple[str, Encoder, Decoder, type | None, type | None, bool]] = []
        self.fast_names: list[str] | None = None
        self.fast_types: list[type | None] = []


def _struct_codec(cls: type, cell: _StructRows, names: set[str]) -> tuple[Encoder, Decoder]:
    qual = cls.__qualname__
    rows = cell.rows

    def enc(v: Any, oob: list[memoryview] | None, th: int) -> Any:
        if not isinstance(v, cls):
            raise _expected(qual, v)
        out = {}
        name = ""
        try:
            for name, fenc, _, efast, _, _ in rows:
                x = getattr(v, name)
                out[name] = x if type(x) is efast else fenc(x, oob, th)
        except _Mismatch as m:
            m.path.append(f".{name}")
            raise
        except AttributeError:
            raise _Mismatch(f"{qual} instance has no field {name!r} set") from None
        return out

    def dec(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
        if type(w) is not dict:
            raise _expected(f"a map ({qual})", w)
        if cell.fast_names is not None and [*map(type, w.values())] == cell.fast_types and [*w] == cell.fast_names:
            kwargs = w  # what we sent: every field present, in order, already its Python value
        else:
            kwargs = _struct_kwargs(w, oob, ci)
        try:
            return cls(**kwargs)
        except Exception as e:  # a __post_init__ that validates: the data does not fit
            raise _Mismatch(f"{qual}(...) refused the fields: {type(e).__name__}: {e}") from e

    def _struct_kwargs(w: dict[Any, Any], oob: Sequence[memoryview], ci: ContextIn | None) -> dict[str, Any]:
        kwargs = {}
        name = ""
        get = w.get
        try:
            for name, _, fdec, _, fast, required in rows:
                x = get(name, MISSING)
                if x is MISSING:
                    if required:
                        raise _Mismatch(f"{qual} is missing field {name!r}")
                    continue
                kwargs[name] = x if type(x) is fast else fdec(x, oob, ci)
        except _Mismatch as m:
            if name in w:
                m.path.append(f".{name}")
            raise
        if len(kwargs) != len(w):
            unknown = [_short(k) for k in w if k not in names]
            raise _Mismatch(f"{qual} has no field {', '.join(unknown)}")
        return kwargs

    return enc, dec


# -- numpy --------------------------------------------------------------------------------


def _ndarray_spec(annotation: Any, np: Any) -> TypeSpec:
    ndarray = np.ndarray

    def enc(v: Any, oob: list[memoryview] | None, th: int) -> Any:
        if not isinstance(v, ndarray):
            raise _expected("numpy.ndarray", v)
        dt = v.dtype
        if dt.hasobject or dt.fields is not None or dt.subdtype is not None:
            raise _Mismatch(f"ndarray dtype {dt} cannot travel (object, structured or subarray)")
        if not v.flags.c_contiguous:
            v = v.copy(order="C")
        payload: Any
        if oob is not None and v.nbytes >= th:
            oob.append(memoryview(v.reshape(-1).view(np.uint8)))
            payload = len(oob) - 1
        else:
            payload = v.tobytes()
        return _ExtType(EXT_NDARRAY, msgpack.packb([dt.str, list(v.shape), payload], use_bin_type=True))

    def dec(w: Any, oob: Sequence[memoryview], ci: ContextIn | None) -> Any:
        if type(w) is not _ExtType or w.code != EXT_NDARRAY:
            raise _expected("an ndarray", w)
        try:
            head = msgpack.unpackb(w.data, raw=False, strict_map_key=False, use_list=True)
        except Exception:  # msgpack's errors are many kinds of ValueError, TypeError, ...
            raise _Mismatch("malformed ndarray header") from None
        if type(head) is not list or len(head) != 3:
            raise _Mismatch("malformed ndarray header")
        dstr, shape, payload = head
        if type(dstr) is not str or not _DTYPE_STR.fullmatch(dstr):
            raise _Mismatch(f"unsupported ndarray dtype {_short(dstr)}")
        if type(shape) is not list or len(shape) > 32 or any(type(d) is not int or d < 0 for d in shape):
            raise _Mismatch(f"malformed ndarray shape {_short(shape)}")
        try:
            dt = np.dtype(dstr)
        except Exception:
            raise _Mismatch(f"unsupported ndarray dtype {dstr!r}") from None
        if dt.hasobject or dt.fields is not None or dt.itemsize == 0:
            raise _Mismatch(f"unsupported ndarray dtype {dstr!r}")
        if type(payload) is bytes:
            buf: Any = payload
        elif type(payload) is int:
            if not 0 <= payload < len(oob):
                raise _Mismatch(f"out-of-band buffer {payload} does not exist (the frame has {len(oob)})")
            buf = oob[payload]
        else:
            raise _expected("ndarray data (bytes or a buffer index)", payload)
        count = math.prod(shape)
        size = memoryview(buf).nbytes
        if count * dt.itemsize != size:
            raise _Mismatch(f"ndarray of shape {tuple(shape)} and dtype {dstr} needs {count * dt.itemsize} bytes, got {size}")
        try:
            return np.frombuffer(buf, dtype=dt, count=count).reshape(shape)
        except Exception as e:
            raise _Mismatch(f"numpy refused the array: {e}") from None

    return TypeSpec("ndarray", annotation, enc, dec)


# -- compiling annotations ----------------------------------------------------------------


def _name_of(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp)


def compile_type(tp: Any) -> TypeSpec:
    """Compile an annotation into a TypeSpec.

    Args:
        tp: a resolved annotation (as ``typing.get_type_hints(include_extras=True)`` gives it).

    Returns:
        The TypeSpec; enums and dataclasses are compiled once and shared.

    Raises:
        TypeError: the annotation is not a supported type; the message names it.
    """
    try:
        scalar = _SCALARS.get(tp)
    except TypeError:  # an unhashable annotation: not a scalar
        scalar = None
    if scalar is not None:
        return scalar
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        widths = [m for m in tp.__metadata__ if isinstance(m, Width)]
        if not widths:
            return compile_type(args[0])
        if len(widths) > 1 or args[0] is not int:
            raise TypeError(f"Width applies to one plain int, not {_name_of(args[0])}")
        enc, dec = _width_codec(widths[0])
        return TypeSpec("int", tp, enc, dec, width=widths[0])
    if isinstance(tp, typing.NewType):
        return compile_type(tp.__supertype__)
    if origin is Union or origin is types.UnionType:
        inner = [a for a in args if a is not _NoneType]
        if len(inner) != 1 or len(args) != 2:
            raise TypeError(f"unsupported annotation {tp!r}: a Union may only be Optional[T]")
        spec = compile_type(inner[0])
        return TypeSpec("optional", tp, *_optional_codec(spec), items=(spec,))
    if origin is list or origin is tuple or origin is dict:
        return _compile_container(tp, origin, args)
    np = sys.modules.get("numpy")
    if np is not None and (tp is np.ndarray or origin is np.ndarray):
        return _ndarray_spec(tp, np)
    if isinstance(tp, type):
        if issubclass(tp, ContextHandle):
            return _CONTEXT
        if tp in (list, tuple, dict):
            raise TypeError(f"unsupported annotation {tp.__name__}: give its item types ({tp.__name__}[...])")
        if issubclass(tp, enum.Enum) or dataclasses.is_dataclass(tp):
            named = _NAMED.get(tp)
            if named is None:
                named = _enum_spec(tp) if issubclass(tp, enum.Enum) else _struct_spec(tp)
                _NAMED[tp] = named
            return named
    raise TypeError(f"unsupported annotation {_name_of(tp)}")


def _compile_container(tp: Any, origin: Any, args: tuple[Any, ...]) -> TypeSpec:
    if origin is list:
        if len(args) != 1:
            raise TypeError(f"unsupported annotation {tp!r}: use list[T]")
        item = compile_type(args[0])
        return TypeSpec("list", tp, *_list_codec(item, False), items=(item,))
    if origin is dict:
        if len(args) != 2:
            raise TypeError(f"unsupported annotation {tp!r}: use dict[K, V]")
        key, value = compile_type(args[0]), compile_type(args[1])
        if key.kind not in _MAP_KEY_KINDS:
            raise TypeError(f"unsupported dict key {_name_of(args[0])}: keys are str, int, bytes, bool or an Enum")
        return TypeSpec("map", tp, *_map_codec(key, value), items=(key, value))
    if len(args) == 2 and args[1] is Ellipsis:
        item = compile_type(args[0])
        return TypeSpec("tuple", tp, *_list_codec(item, True), items=(item,), variadic=True)
    if tp is typing.Tuple:  # noqa: UP006 -- the bare alias, not tuple[()]
        raise TypeError(f"unsupported annotation {tp!r}: use tuple[A, B] or tuple[T, ...]")
    items = tuple(compile_type(a) for a in args if not (type(a) is tuple and a == ()))
    return TypeSpec("tuple", tp, *_tuple_codec(items), items=items)


def check_default(spec: TypeSpec, value: Any, where: str) -> None:
    """Raise TypeError (naming ``where``) when a declared default does not fit its type."""
    try:
        spec.encode(value, None, INT_MAX)
    except _Mismatch as e:
        raise TypeError(f"{where}{''.join(reversed(e.path))}: {e.detail}") from None


# -- IDL description ----------------------------------------------------------------------


def _jsonable(x: Any) -> bool:
    t = type(x)
    if x is None or t is bool or t is int or t is str:
        return True
    if t is float:
        return math.isfinite(x)
    if t is list:
        return all(_jsonable(i) for i in x)
    if t is dict:
        return all(type(k) is str and _jsonable(v) for k, v in x.items())
    return False


def default_idl(spec: TypeSpec, value: Any, *, opaque: bool = False) -> dict[str, Any]:
    """The IDL keys for a default: ``{}`` for none (MISSING), ``{"default": wire}`` when its wire
    form is JSON, else ``{"has_default": True}`` (also when ``opaque``: a default factory)."""
    if value is MISSING and not opaque:
        return {}
    if not opaque:
        try:
            wire = spec.encode(value, None, INT_MAX)
        except BadStubData:
            return {"has_default": True}
        if _jsonable(wire):
            return {"default": wire}
    return {"has_default": True}


class IdlBuilder:
    """Describes TypeSpecs as JSON-able dicts, collecting structs and enums in ``types``."""

    def __init__(self) -> None:
        self.types: dict[str, Any] = {}
        self._names: dict[type, str] = {}

    def describe(self, spec: TypeSpec) -> dict[str, Any]:
        kind = spec.kind
        if kind == "int" and spec.width is not None:
            return {"kind": "int", "bits": spec.width.bits, "signed": spec.width.signed}
        if kind in ("list", "optional") or (kind == "tuple" and spec.variadic):
            key = "inner" if kind == "optional" else "items"
            out: dict[str, Any] = {"kind": kind, key: self.describe(spec.items[0])}
            if spec.variadic:
                out["variadic"] = True
            return out
        if kind == "map":
            return {"kind": "map", "keys": self.describe(spec.items[0]), "values": self.describe(spec.items[1])}
        if kind == "tuple":
            return {"kind": "tuple", "items": [self.describe(i) for i in spec.items]}
        if kind in ("enum", "struct"):
            assert spec.cls is not None
            return {"kind": "ref", "name": self._name(spec)}
        return {"kind": kind}

    def _name(self, spec: TypeSpec) -> str:
        cls = spec.cls
        assert cls is not None
        name = self._names.get(cls)
        if name is not None:
            return name
        name = cls.__qualname__
        if name in self.types:
            name = f"{cls.__module__}.{cls.__qualname__}"
        self._names[cls] = name
        self.types[name] = {}  # reserve the name before describing fields (recursion)
        if spec.kind == "enum":
            members = list(typing.cast("type[enum.Enum]", cls))
            body: dict[str, Any] = {
                "kind": "enum",
                "base": "int" if members and type(members[0].value) is int else "str",
                "members": {m.name: m.value for m in members},
            }
            if issubclass(cls, enum.Flag):
                body["flag"] = True
        else:
            body = {
                "kind": "struct",
                "fields": [
                    {
                        "name": f.name,
                        "type": self.describe(f.type),
                        **default_idl(f.type, f.default, opaque=f.factory is not None),
                    }
                    for f in spec.fields
                ],
            }
        self.types[name] = body
        return name


__all__ = [
    "EXT_CONTEXT",
    "EXT_NDARRAY",
    "EXT_OOB",
    "INT_MAX",
    "INT_MIN",
    "MISSING",
    "ContextHandle",
    "ContextIn",
    "Decoder",
    "Encoder",
    "FieldSpec",
    "IdlBuilder",
    "TypeSpec",
    "Width",
    "check_default",
    "compile_type",
    "default_idl",
]
