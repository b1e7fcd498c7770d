"""winipc.rpc._idl: interface declarations and the type codec (no I/O).

Every value goes the way a call does: encode -> msgpack.packb -> msgpack.unpackb -> decode,
with the out-of-band buffers copied as a transport would deliver them.
"""

import dataclasses
import enum
import json
import typing
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winipc.errors import BadStubData, ContextMismatch
from winipc.rpc._codec import INT_MAX, INT_MIN
from winipc.rpc._idl import (
    EXT_CONTEXT,
    EXT_NDARRAY,
    EXT_OOB,
    MISSING,
    ContextHandle,
    Int8,
    Int16,
    Int32,
    Int64,
    InterfaceSpec,
    MethodSpec,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Width,
    interface,
    interfaces_of,
    oneway,
    spec_of,
)

# -- types used by the tests ----------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


class Mode(enum.Enum):
    READ = "r"
    WRITE = "w"


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclasses.dataclass
class Line:
    a: Point
    b: Point
    tag: str = "line"
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Node:
    value: int
    next: Optional["Node"] = None


@dataclasses.dataclass
class Item:
    name: str
    price: float


@dataclasses.dataclass
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError("n must be positive")


class FileHandle(ContextHandle):
    __slots__ = ()


@interface("5d6c1c3e-0d2b-4f7e-9a34-7d1f0c1b2a10", version=(2, 3))
class Store:
    def put(self, items: list[Item], *, replace: bool = False) -> int: ...
    def get(self, name: str, default: Item | None = None) -> tuple[Item, int]: ...
    def scale(self, p: Point, k: float = 2.0) -> Point: ...
    def raw(self, data: bytes, arr: np.ndarray) -> dict[str, np.ndarray]: ...
    def open(self, path: str, mode: Mode = Mode.READ) -> FileHandle: ...
    def close(self, h: FileHandle) -> None: ...
    @oneway
    def log(self, line: str, level: Int8 = 0) -> None: ...
    def _private(self) -> None: ...


STORE = spec_of(Store)


def method_for(tp: Any) -> MethodSpec:
    """A one-method interface taking and returning ``tp``."""

    def m(self: Any, v: Any) -> Any: ...

    m.__annotations__ = {"v": tp, "return": tp}
    cls = type("One", (), {"m": m})
    return spec_of(interface(uuid.uuid4())(cls)).methods[0]


def transfer(oob: list[memoryview]) -> list[memoryview]:
    """The receiver's copies of the out-of-band buffers (writable, fresh memory)."""
    return [memoryview(bytearray(bytes(m))) for m in oob]


def through_msgpack(wire: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(wire, use_bin_type=True), raw=False, strict_map_key=False)


def roundtrip_args(m: MethodSpec, values: list[Any], use_oob: bool, threshold: int = 16) -> tuple[list[Any], list[memoryview]]:
    oob: list[memoryview] | None = [] if use_oob else None
    wire = m.encode_args(values, oob, oob_threshold=threshold)
    received = transfer(oob or [])
    return m.decode_args(through_msgpack(wire), received), received


def roundtrip(tp: Any, value: Any, use_oob: bool = False, threshold: int = 16) -> Any:
    m = method_for(tp)
    (args, _) = roundtrip_args(m, [value], use_oob, threshold)
    oob: list[memoryview] | None = [] if use_oob else None
    wire = m.encode_result(value, oob, oob_threshold=threshold)
    result = m.decode_result(through_msgpack(wire), transfer(oob or []))
    assert_same(result, args[0])
    return args[0]


def assert_same(a: Any, b: Any) -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)
    else:
        assert a == b
        assert type(a) is type(b)


# -- round trips ----------------------------------------------------------------------------

CASES: list[tuple[Any, Any]] = [
    (bool, True),
    (bool, False),
    (int, 0),
    (int, INT_MIN),
    (int, INT_MAX),
    (Int8, -128),
    (Int8, 127),
    (Int16, -(2**15)),
    (Int32, 2**31 - 1),
    (Int64, -(2**63)),
    (UInt8, 255),
    (UInt16, 0),
    (UInt32, 2**32 - 1),
    (UInt64, 2**64 - 1),
    (float, 1.5),
    (float, float("inf")),
    (str, ""),
    (str, "héllo wörld ✓"),
    (bytes, b""),
    (bytes, b"abc"),
    (bytes, b"x" * 1000),
    (None, None),
    (type(None), None),
    (Any, {"a": [1, 2.5, None, "x", b"y"]}),
    (list[int], [1, 2, 3]),
    (list[int], []),
    (list[Point], [Point(1.0, 2.0), Point(-1.0, 0.5)]),
    (list[list[str]], [["a"], [], ["b", "c"]]),
    (dict[str, int], {"a": 1, "b": 2}),
    (dict[int, list[str]], {1: ["x"], -5: []}),
    (dict[bytes, float], {b"k": 1.0, b"": -2.0}),
    (dict[bool, str], {True: "t", False: "f"}),
    (dict[Color, str], {Color.RED: "r", Color.GREEN: "g"}),
    (dict[Mode, Int8], {Mode.READ: 1}),
    (dict[UInt8, str], {255: "max"}),
    (tuple[int, str], (1, "a")),
    (tuple[()], ()),
    (tuple[int, ...], (1, 2, 3)),
    (tuple[int, ...], ()),
    (tuple[Point, int | None], (Point(0.0, 0.0), None)),
    (Optional[int], None),  # noqa: UP045 -- the typing spelling is supported too
    (Optional[int], 5),  # noqa: UP045
    (int | None, 7),
    (list[str] | None, ["a"]),
    (Color, Color.GREEN),
    (Mode, Mode.WRITE),
    (Perm, Perm.R),
    (Perm, Perm.R | Perm.W),
    (Point, Point(1.0, 2.0)),
    (Line, Line(Point(0.0, 1.0), Point(2.0, 3.0), "t", ["n1", "n2"])),
    (Node, Node(1, Node(2, Node(3)))),
    (typing.NewType("UserId", int), 42),
]


@pytest.mark.parametrize("use_oob", [False, True], ids=["inline", "oob"])
@pytest.mark.parametrize(("tp", "value"), CASES, ids=[f"{i}-{c[0]!r}"[:40] for i, c in enumerate(CASES)])
def test_round_trip(tp: Any, value: Any, use_oob: bool) -> None:
    assert_same(roundtrip(tp, value, use_oob), value)


def test_encode_conversions() -> None:
    assert_same(roundtrip(float, 3), 3.0)
    assert_same(roundtrip(float, np.float64(2.5)), 2.5)
    assert_same(roundtrip(int, Color.RED), 1)
    assert_same(roundtrip(bytes, bytearray(b"ab")), b"ab")
    assert_same(roundtrip(bytes, memoryview(b"abcdef")[::2]), b"ace")
    assert_same(roundtrip(list[int], (1, 2)), [1, 2])
    assert_same(roundtrip(tuple[int, int], [1, 2]), (1, 2))
    assert_same(roundtrip(dict[str, int], typing.cast(Any, dict)(a=1)), {"a": 1})


def test_decode_accepts_int_for_float() -> None:
    m = method_for(float)
    assert m.decode_args([3]) == [3.0]
    assert type(m.decode_args([3])[0]) is float
    assert type(m.decode_result(3)) is float


def test_bytes_out_of_band() -> None:
    m = method_for(bytes)
    big = b"z" * 100
    oob: list[memoryview] = []
    wire = m.encode_args([big], oob, oob_threshold=100)
    assert wire == [msgpack.ExtType(EXT_OOB, b"\x00\x00\x00\x00")]
    assert bytes(oob[0]) == big
    assert m.encode_args([big], [], oob_threshold=101) == [big]
    assert m.encode_args([big], None, oob_threshold=1) == [big]
    assert m.encode_args([bytearray(big)], oob, oob_threshold=100)[0] == msgpack.ExtType(EXT_OOB, b"\x00\x00\x00\x01")
    assert m.decode_args(through_msgpack(wire), transfer(oob)) == [big]
    with pytest.raises(BadStubData, match="out-of-band buffer 0 does not exist"):
        m.decode_args(wire, [])


ARRAYS = [
    np.arange(6, dtype=np.float64).reshape(2, 3),
    np.array(7, dtype=np.int8),
    np.zeros((0, 3), dtype=np.float32),
    np.arange(20, dtype=np.int64)[::3],
    np.arange(12, dtype=">u2").reshape(3, 4).T,
    np.array(["2024-01-01", "2025-06-30"], dtype="datetime64[ns]"),
    np.array([True, False, True]),
    np.array([1 + 2j, 3j], dtype=np.complex128),
    np.array(["ab", "c"], dtype="U2"),
    np.arange(100_000, dtype=np.uint8),
]


@pytest.mark.parametrize("use_oob", [False, True], ids=["inline", "oob"])
@pytest.mark.parametrize("arr", ARRAYS, ids=[f"{a.dtype.str}{a.shape}" for a in ARRAYS])
def test_ndarray_round_trip(arr: np.ndarray, use_oob: bool) -> None:
    out = roundtrip(np.ndarray, arr, use_oob)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert np.array_equal(out, arr)


def test_ndarray_decode_is_zero_copy() -> None:
    m = STORE.by_name["raw"]
    arr = np.arange(1000, dtype=np.float64).reshape(10, 100)
    (args, received) = roundtrip_args(m, [b"small", arr], use_oob=True, threshold=1024)
    assert len(received) == 1
    assert args[0] == b"small"
    out = args[1]
    assert out.dtype == np.float64 and out.shape == (10, 100)
    assert np.array_equal(out, arr)
    assert np.shares_memory(out, np.asarray(received[0]))
    # results too: a dict of arrays
    oob: list[memoryview] = []
    wire = m.encode_result({"a": arr, "b": arr[:1, :1]}, oob, oob_threshold=1024)
    received = transfer(oob)
    result = m.decode_result(through_msgpack(wire), received)
    assert np.shares_memory(result["a"], np.asarray(received[0]))
    assert np.array_equal(result["b"], arr[:1, :1])


def test_ndarray_typed_annotation() -> None:
    import numpy.typing as npt

    out = roundtrip(npt.NDArray[np.float64], np.ones(3))
    assert out.dtype == np.float64


def test_ndarray_refused() -> None:
    m = method_for(np.ndarray)
    with pytest.raises(BadStubData, match="dtype object cannot travel"):
        m.encode_args([np.array([object()])])
    with pytest.raises(BadStubData, match="cannot travel"):
        m.encode_args([np.zeros(2, dtype=[("a", "<f8")])])
    with pytest.raises(BadStubData, match=r"expected numpy\.ndarray, got list"):
        m.encode_args([[1.0]])

    def ext(*header: Any) -> list[Any]:
        return [msgpack.ExtType(EXT_NDARRAY, msgpack.packb(list(header), use_bin_type=True))]

    bad = {
        "unsupported ndarray dtype": ext("|O", [1], b"\x00" * 8),
        "needs 16 bytes, got 8": ext("<f8", [2], b"\x00" * 8),
        "malformed ndarray shape": ext("<f8", [-1], b""),
        "malformed ndarray header": [msgpack.ExtType(EXT_NDARRAY, b"\xc1")],
        "buffer 3 does not exist": ext("<f8", [1], 3),
        "ndarray data": ext("<f8", [1], "text"),
    }
    for message, wire in bad.items():
        with pytest.raises(BadStubData, match=message):
            m.decode_args(wire, [memoryview(b"")])


# -- context handles ------------------------------------------------------------------------


def test_context_handle() -> None:
    h = FileHandle(b"\x01" * 16)
    opened, close = STORE.by_name["open"], STORE.by_name["close"]
    wire = close.encode_args([h])
    assert wire == [msgpack.ExtType(EXT_CONTEXT, b"\x01" * 16)]
    (back,) = close.decode_args(through_msgpack(wire))
    assert type(back) is ContextHandle and back == h and back.uuid == h.uuid
    seen: list[bytes] = []

    def context_in(raw: bytes) -> Any:
        seen.append(raw)
        return ("server-state", raw)

    assert close.decode_args(through_msgpack(wire), context_in=context_in) == [("server-state", h.uuid)]
    assert seen == [h.uuid]
    assert opened.decode_result(opened.encode_result(h)) == h

    def unknown(raw: bytes) -> Any:
        raise ContextMismatch("no such context")

    with pytest.raises(ContextMismatch):  # the callback's errors are the caller's to see
        close.decode_args(wire, context_in=unknown)
    with pytest.raises(BadStubData, match="parameter 'h': expected a context handle, got ExtType"):
        close.decode_args([msgpack.ExtType(EXT_CONTEXT, b"\x01" * 15)])
    with pytest.raises(BadStubData, match="expected a context handle, got bytes"):
        close.encode_args([b"\x01" * 16])
    with pytest.raises(ValueError, match="16 bytes"):
        ContextHandle(b"short")


# -- integer widths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "low", "high"),
    [
        (Int8, -128, 127),
        (Int16, -(2**15), 2**15 - 1),
        (Int32, -(2**31), 2**31 - 1),
        (Int64, -(2**63), 2**63 - 1),
        (UInt8, 0, 255),
        (UInt16, 0, 2**16 - 1),
        (UInt32, 0, 2**32 - 1),
        (UInt64, 0, 2**64 - 1),
        (int, INT_MIN, INT_MAX),
    ],
)
def test_widths_checked_on_both_ends(tp: Any, low: int, high: int) -> None:
    m = method_for(tp)
    assert m.decode_args(m.encode_args([low])) == [low]
    assert m.decode_args(m.encode_args([high])) == [high]
    for bad in (low - 1, high + 1):
        with pytest.raises(BadStubData, match=r"One.m: parameter 'v': "):
            m.encode_args([bad])
        with pytest.raises(BadStubData, match=r"One.m: result: "):
            m.encode_result(bad)
        if INT_MIN <= bad <= INT_MAX:  # what msgpack can carry must still be range-checked
            with pytest.raises(BadStubData, match=r"out of range"):
                m.decode_args(through_msgpack([bad]))
            with pytest.raises(BadStubData, match=r"out of range"):
                m.decode_result(through_msgpack(bad))


def test_bool_is_not_int_and_int_is_not_bool() -> None:
    mi, mb = method_for(int), method_for(bool)
    with pytest.raises(BadStubData, match="expected int, got bool"):
        mi.encode_args([True])
    with pytest.raises(BadStubData, match="expected int, got bool"):
        mi.decode_args([True])
    with pytest.raises(BadStubData, match="expected bool, got int"):
        mb.encode_args([1])
    with pytest.raises(BadStubData, match="expected bool, got int"):
        mb.decode_args([1])
    with pytest.raises(BadStubData, match="expected Int8, got bool"):
        method_for(Int8).decode_args([False])


# -- mismatches name method, parameter and path ----------------------------------------------


def test_mismatch_messages() -> None:
    put, get, scale = STORE.by_name["put"], STORE.by_name["get"], STORE.by_name["scale"]
    items = [Item("a", 1.0)] * 3 + [Item("d", typing.cast(Any, "cheap"))]
    with pytest.raises(BadStubData, match=r"^\[WinError 1783 RPC_X_BAD_STUB_DATA\] Store.put: parameter 'items'\[3\].price: expected float, got str$"):
        put.encode_args([items, False])
    wire = [[{"name": "a", "price": 1.0}] * 3 + [{"name": "d", "price": "cheap"}], False]
    with pytest.raises(BadStubData, match=r"Store.put: parameter 'items'\[3\].price: expected float, got str$"):
        put.decode_args(wire)
    with pytest.raises(BadStubData, match=r"Store.put: parameter 'items'\[0\]: Item is missing field 'price'"):
        put.decode_args([[{"name": "a"}], False])
    with pytest.raises(BadStubData, match=r"Store.put: parameter 'items'\[0\]: Item has no field 'color'"):
        put.decode_args([[{"name": "a", "price": 1.0, "color": 3}], False])
    with pytest.raises(BadStubData, match=r"Store.put: parameter 'replace': expected bool, got NoneType"):
        put.decode_args([[], None])
    with pytest.raises(BadStubData, match=r"Store.put: expected 2 arguments, got 1"):
        put.decode_args([[]])
    with pytest.raises(BadStubData, match=r"Store.put: expected an array of 2 arguments, got dict"):
        put.decode_args({})
    with pytest.raises(BadStubData, match=r"Store.get: result\[0\].name: expected str, got int"):
        get.decode_result([{"name": 1, "price": 1.0}, 1])
    with pytest.raises(BadStubData, match=r"Store.get: result: expected a tuple of 2, got 3 items"):
        get.decode_result([{"name": "a", "price": 1.0}, 1, 2])
    with pytest.raises(BadStubData, match=r"Store.scale: parameter 'p': expected Point, got dict"):
        scale.encode_args([{"x": 1.0, "y": 2.0}, 2.0])
    m = method_for(dict[Color, list[int]])
    with pytest.raises(BadStubData, match=r"parameter 'v'<key 3>: 3 is not a value of Color"):
        m.decode_args([{3: []}])
    with pytest.raises(BadStubData, match=r"parameter 'v'\[1\]\[2\]: expected int, got str"):
        m.decode_args([{1: [1, 2, "x"]}])
    with pytest.raises(BadStubData, match=r"parameter 'v'<key 'RED'>: expected Color, got str"):
        m.encode_args([{"RED": [1]}])
    with pytest.raises(BadStubData, match=r"Positive\(...\) refused the fields: ValueError: n must be positive"):
        method_for(Positive).decode_args([{"n": 0}])
    with pytest.raises(BadStubData, match="'wat' is not a value of Mode"):
        method_for(Mode).decode_args(["wat"])
    with pytest.raises(BadStubData, match="not valid UTF-8"):
        method_for(str).encode_args(["\ud800"])
    with pytest.raises(BadStubData, match="is too large for a float"):
        method_for(float).encode_args([10**400])


def test_bad_stub_data_is_type_and_value_error() -> None:
    with pytest.raises(TypeError):
        method_for(int).decode_args(["x"])
    with pytest.raises(ValueError):
        method_for(int).decode_args(["x"])


# -- declarations -----------------------------------------------------------------------------


def declare(body: dict[str, Any], **kw: Any) -> InterfaceSpec:
    return spec_of(interface(uuid.uuid4(), **kw)(type("Bad", (), body)))


def fn(annotations: dict[str, Any], *, params: str = "self, v", decorate: Callable[[Any], Any] | None = None) -> Any:
    ns: dict[str, Any] = {}
    exec(f"def m({params}): ...", ns)
    f = ns["m"]
    f.__annotations__ = annotations
    return decorate(f) if decorate else f


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: fn({"return": int}), r"Bad.m: parameter 'v' has no annotation"),
        (lambda: fn({"v": int}), r"Bad.m: the return has no annotation"),
        (lambda: fn({"v": Callable[[], int], "return": None}), r"Bad.m: parameter 'v': unsupported annotation"),
        (lambda: fn({"v": typing.Union[int, str], "return": None}), r"a Union may only be Optional"),  # noqa: UP007
        (lambda: fn({"v": int | str, "return": None}), r"a Union may only be Optional"),
        (lambda: fn({"v": object, "return": None}), r"unsupported annotation object"),
        (lambda: fn({"v": list, "return": None}), r"give its item types"),
        (lambda: fn({"v": typing.Tuple, "return": None}), r"use tuple\[A, B\]"),  # noqa: UP006
        (lambda: fn({"v": int, "return": typing.Literal[1]}), r"Bad.m: result: unsupported annotation"),
        (lambda: fn({"v": dict[float, int], "return": None}), r"unsupported dict key float"),
        (lambda: fn({"v": dict[Point, int], "return": None}), r"unsupported dict key Point"),
        (lambda: fn({"v": typing.Annotated[float, Width(8, True)], "return": None}), r"Width applies to one plain int"),
        (lambda: fn({"v": "Undefined", "return": None}), r"Bad.m: cannot resolve its annotations"),
        (lambda: fn({"v": int, "return": None}, params="self, *v"), r"\*v is not supported"),
        (lambda: fn({"v": int, "return": None}, params="self, **v"), r"\*v is not supported"),
        (lambda: fn({"v": int, "return": None}, params="self, v, /"), r"positional-only"),
        (lambda: fn({"return": None}, params=""), r"takes self first"),
        (lambda: fn({"v": int, "return": None}, params="self, v='x'"), r"default of parameter 'v': expected int, got str"),
        (lambda: fn({"v": Int8, "return": None}, params="self, v=300"), r"default of parameter 'v': 300 is out of range for Int8"),
        (lambda: fn({"v": int, "return": int}, decorate=oneway), r"Bad.m: a @oneway method returns nothing"),
        (lambda: staticmethod(fn({"v": int, "return": None})), r"Bad.m: interface members are plain methods, not staticmethod"),
        (lambda: property(fn({"v": int, "return": None})), r"not property"),
    ],
)
def test_bad_declarations(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        declare({"m": make()})


class BadEnum(enum.Enum):
    A = (1, 2)


class MixedEnum(enum.Enum):
    A = 1
    B = "b"


@dataclasses.dataclass
class HasCallable:
    f: Callable[[], None]


@dataclasses.dataclass
class HasInitVar:
    x: int
    extra: dataclasses.InitVar[int]


@pytest.mark.parametrize(
    ("tp", "message"),
    [
        (BadEnum, "member values must be all int or all str"),
        (MixedEnum, "member values must be all int or all str"),
        (HasCallable, "dataclass HasCallable: field 'f': unsupported annotation"),
        (HasInitVar, "__init__ needs 'extra'"),
    ],
)
def test_bad_named_types(tp: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        method_for(tp)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("not-a-uuid",), {}, "is not a UUID"),
        ((uuid.uuid4(),), {"version": (1,)}, "version must be"),
        ((uuid.uuid4(),), {"version": (65536, 0)}, "version must be"),
        ((uuid.uuid4(),), {"version": (1, -1)}, "version must be"),
        ((uuid.uuid4(),), {"name": ""}, "name must be"),
    ],
)
def test_bad_interface_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        interface(*args, **kwargs)


def test_width_validation() -> None:
    with pytest.raises(TypeError):
        Width(0, True)
    with pytest.raises(TypeError):
        Width(65, False)
    assert (Width(12, False).low, Width(12, False).high) == (0, 4095)


def test_declaration_shape() -> None:
    assert STORE.uuid == uuid.UUID("5d6c1c3e-0d2b-4f7e-9a34-7d1f0c1b2a10")
    assert STORE.version == (2, 3)
    assert STORE.key() == (STORE.uuid.bytes, 2)
    assert STORE.name == "Store" and STORE.cls is Store
    assert [m.name for m in STORE.methods] == ["put", "get", "scale", "raw", "open", "close", "log"]
    assert [m.opnum for m in STORE.methods] == list(range(7))
    assert all(STORE.by_name[m.name] is m for m in STORE.methods)
    put = STORE.by_name["put"]
    assert [(p.name, p.default, p.kw_only) for p in put.params] == [("items", MISSING, False), ("replace", False, True)]
    assert Store.__rpc_interface__ is STORE  # type: ignore[attr-defined]
    named: type = interface(str(uuid.uuid4()), name="Other")(type("X", (), {}))
    assert spec_of(named).name == "Other" and spec_of(named).methods == ()


def test_oneway() -> None:
    log = STORE.by_name["log"]
    assert log.oneway and log.result.kind == "none"
    assert not STORE.by_name["close"].oneway
    assert log.encode_result(None) is None
    with pytest.raises(BadStubData, match=r"Store\.log: result: expected None, got int"):
        log.encode_result(1)
    with pytest.raises(TypeError, match="applies to a method"):
        oneway(typing.cast(Any, 5))


def test_spec_of() -> None:
    class Impl(Store):
        pass

    assert spec_of(Store) is STORE
    assert spec_of(Impl) is STORE
    assert spec_of(Impl()) is STORE
    assert interfaces_of(Impl) == [STORE]
    with pytest.raises(TypeError, match="is not an RPC interface"):
        spec_of(Item)
    with pytest.raises(TypeError, match="is not an RPC interface"):
        spec_of(3)

    @interface(uuid.uuid4())
    class Other:
        def ping(self) -> None: ...

    class Both(Impl, Other):
        pass

    assert interfaces_of(Both) == [STORE, spec_of(Other)]
    with pytest.raises(TypeError, match=r"several interfaces \(Store, Other\); pass the interface explicitly"):
        spec_of(Both())

    @interface(uuid.uuid4())
    class Derived(Store):  # an interface that derives from another: its own spec wins
        def extra(self) -> None: ...

    assert [m.name for m in spec_of(Derived).methods] == ["extra"]


# -- bind_args ----------------------------------------------------------------------------------


def test_bind_args() -> None:
    put, get, log = STORE.by_name["put"], STORE.by_name["get"], STORE.by_name["log"]
    items = [Item("a", 1.0)]
    assert put.bind_args((items,), {}) == [items, False]
    assert put.bind_args((), {"items": items, "replace": True}) == [items, True]
    assert get.bind_args(("a",), {}) == ["a", None]
    assert get.bind_args(("a", items[0]), {}) == ["a", items[0]]
    assert get.bind_args((), {"default": items[0], "name": "b"}) == ["b", items[0]]
    assert log.bind_args(("x", 3), {}) == ["x", 3]
    with pytest.raises(BadStubData, match=r"Store.put: takes 1 positional arguments, 2 given"):
        put.bind_args((items, True), {})
    with pytest.raises(BadStubData, match=r"Store.put: unexpected keyword argument 'colour'"):
        put.bind_args((items,), {"colour": 1})
    with pytest.raises(BadStubData, match=r"Store.get: got multiple values for argument 'name'"):
        get.bind_args(("a",), {"name": "b"})
    with pytest.raises(BadStubData, match=r"Store.get: missing required argument\(s\) 'name'"):
        get.bind_args((), {})
    with pytest.raises(BadStubData, match=r"Store.put: missing required argument\(s\) 'items'"):
        put.bind_args((), {"replace": True})
    with pytest.raises(BadStubData, match=r"Store.log: takes 2 arguments, 1 given"):
        log.encode_args(["x"])


# -- IDL JSON -------------------------------------------------------------------------------------


@interface("0a6f3f4e-6a57-4b8e-9c39-3f2b8e9d1c20", version=(1, 2))
class Calc:
    def add(self, a: Int32, b: Int32 = 1) -> float: ...
    def center(self, pts: list[Point], color: Color = Color.RED) -> Point | None: ...
    def tags(self, m: dict[str, tuple[int, ...]], shape: tuple[UInt8, bytes] = (1, b"x")) -> Any: ...
    def arr(self, a: np.ndarray, h: ContextHandle) -> Line: ...
    @oneway
    def ping(self, mode: Mode = Mode.READ) -> None: ...


EXPECTED_IDL = {
    "idl": 1,
    "name": "Calc",
    "uuid": "0a6f3f4e-6a57-4b8e-9c39-3f2b8e9d1c20",
    "version": [1, 2],
    "methods": [
        {
            "name": "add", "opnum": 0, "oneway": False,
            "params": [
                {"name": "a", "type": {"kind": "int", "bits": 32, "signed": True}},
                {"name": "b", "type": {"kind": "int", "bits": 32, "signed": True}, "default": 1},
            ],
            "result": {"kind": "float"},
        },
        {
            "name": "center", "opnum": 1, "oneway": False,
            "params": [
                {"name": "pts", "type": {"kind": "list", "items": {"kind": "ref", "name": "Point"}}},
                {"name": "color", "type": {"kind": "ref", "name": "Color"}, "default": 1},
            ],
            "result": {"kind": "optional", "inner": {"kind": "ref", "name": "Point"}},
        },
        {
            "name": "tags", "opnum": 2, "oneway": False,
            "params": [
                {
                    "name": "m",
                    "type": {"kind": "map", "keys": {"kind": "str"},
                             "values": {"kind": "tuple", "items": {"kind": "int"}, "variadic": True}},
                },
                {
                    "name": "shape",
                    "type": {"kind": "tuple", "items": [{"kind": "int", "bits": 8, "signed": False}, {"kind": "bytes"}]},
                    "has_default": True,
                },
            ],
            "result": {"kind": "any"},
        },
        {
            "name": "arr", "opnum": 3, "oneway": False,
            "params": [
                {"name": "a", "type": {"kind": "ndarray"}},
                {"name": "h", "type": {"kind": "context_handle"}},
            ],
            "result": {"kind": "ref", "name": "Line"},
        },
        {
            "name": "ping", "opnum": 4, "oneway": True,
            "params": [{"name": "mode", "type": {"kind": "ref", "name": "Mode"}, "default": "r"}],
            "result": {"kind": "none"},
        },
    ],
    "types": {
        "Point": {"kind": "struct", "fields": [
            {"name": "x", "type": {"kind": "float"}},
            {"name": "y", "type": {"kind": "float"}},
        ]},
        "Color": {"kind": "enum", "base": "int", "members": {"RED": 1, "GREEN": 2}},
        "Line": {"kind": "struct", "fields": [
            {"name": "a", "type": {"kind": "ref", "name": "Point"}},
            {"name": "b", "type": {"kind": "ref", "name": "Point"}},
            {"name": "tag", "type": {"kind": "str"}, "default": "line"},
            {"name": "notes", "type": {"kind": "list", "items": {"kind": "str"}}, "has_default": True},
        ]},
        "Mode": {"kind": "enum", "base": "str", "members": {"READ": "r", "WRITE": "w"}},
    },
}


def test_idl_json() -> None:
    idl = spec_of(Calc).to_idl()
    assert idl == EXPECTED_IDL
    assert json.loads(json.dumps(idl)) == EXPECTED_IDL


def test_idl_json_store_and_recursive_types() -> None:
    store = json.loads(json.dumps(STORE.to_idl()))
    assert store["methods"][0]["params"][1] == {"name": "replace", "type": {"kind": "bool"}, "default": False, "kw_only": True}
    assert store["methods"][1]["params"][1]["default"] is None
    rec = spec_of(interface(uuid.uuid4())(type("N", (), {"m": fn({"v": Node, "return": dict[Perm, Node]})}))).to_idl()
    assert rec["types"]["Node"] == {"kind": "struct", "fields": [
        {"name": "value", "type": {"kind": "int"}},
        {"name": "next", "type": {"kind": "optional", "inner": {"kind": "ref", "name": "Node"}}, "default": None},
    ]}
    assert rec["types"]["Perm"] == {"kind": "enum", "base": "int", "members": {"R": 4, "W": 2, "X": 1}, "flag": True}


# -- properties -----------------------------------------------------------------------------------

ext_types = st.builds(
    msgpack.ExtType,
    st.sampled_from([EXT_CONTEXT, EXT_OOB, EXT_NDARRAY, 0, 127]),
    st.one_of(
        st.binary(max_size=20),
        st.sampled_from([b"\x00" * 4, b"\x00\x00\x00\x01", b"\x01" * 16]),
        st.builds(
            lambda h: msgpack.packb(h, use_bin_type=True),
            st.lists(st.one_of(st.sampled_from(["<f8", "|u1", "|O", "<M8[ns]", "|V0", ">i4", "x"]),
                               st.lists(st.integers(-2, 2**40), max_size=4),
                               st.binary(max_size=16), st.integers(-1, 3)), max_size=4),
        ),
    ),
)
msgpack_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(INT_MIN, INT_MAX), st.floats(), st.text(max_size=8),
    st.binary(max_size=8), ext_types,
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 3), st.binary(max_size=3), st.sampled_from(["x", "y", "name", "price", "a", "b"])), inner, max_size=5),
    ),
    max_leaves=20,
)
FUZZ_METHODS = [*STORE.methods, *spec_of(Calc).methods, *(method_for(tp) for tp in (Node, Line, dict[Color, Perm], tuple[int, bytes | None], dict[bytes, list[float]], UInt16, Mode))]
FUZZ_OOB = [memoryview(b"\x00" * 16), memoryview(bytearray(8))]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FUZZ_METHODS), msgpack_values, st.booleans())
def test_decode_gives_a_value_or_bad_stub_data(m: MethodSpec, wire: Any, packed: bool) -> None:
    if packed:
        wire = through_msgpack(wire)
    for decode in (m.decode_args, m.decode_result):
        try:
            decode(wire, FUZZ_OOB)
        except BadStubData:
            pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FUZZ_METHODS), st.lists(msgpack_values, min_size=1, max_size=4))
def test_decode_args_arrays_of_the_right_length(m: MethodSpec, values: list[Any]) -> None:
    wire = (values * len(m.params))[: len(m.params)] if values else []
    try:
        m.decode_args(wire, FUZZ_OOB)
    except BadStubData:
        pass


Shape = tuple[Any, st.SearchStrategy[Any]]
leaves: st.SearchStrategy[Shape] = st.sampled_from([
    (int, st.integers(INT_MIN, INT_MAX)),
    (Int16, st.integers(-(2**15), 2**15 - 1)),
    (str, st.text(max_size=10)),
    (bytes, st.binary(max_size=40)),
    (float, st.floats(allow_nan=False)),
    (bool, st.booleans()),
    (Color, st.sampled_from(Color)),
    (Point, st.builds(Point, st.floats(allow_nan=False), st.floats(allow_nan=False))),
])


def extend(inner: st.SearchStrategy[Shape]) -> st.SearchStrategy[Shape]:
    return st.one_of(
        inner.map(lambda s: (list[s[0]], st.lists(s[1], max_size=4))),  # type: ignore[valid-type]
        inner.map(lambda s: (dict[str, s[0]], st.dictionaries(st.text(max_size=4), s[1], max_size=4))),  # type: ignore[valid-type]
        inner.map(lambda s: (tuple[s[0], ...], st.lists(s[1], max_size=4).map(tuple))),  # type: ignore[valid-type]
        inner.map(lambda s: (Optional[s[0]], st.one_of(st.none(), s[1]))),  # noqa: UP045
        st.tuples(inner, inner).map(lambda ab: (tuple[ab[0][0], ab[1][0]], st.tuples(ab[0][1], ab[1][1]))),  # type: ignore[misc]
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(leaves, extend, max_leaves=6), st.data(), st.booleans())
def test_nested_round_trip(shape: Shape, data: st.DataObject, use_oob: bool) -> None:
    tp, values = shape
    value = data.draw(values)
    assert roundtrip(tp, value, use_oob) == value


# -- corpus ---------------------------------------------------------------------------------------

CORPUS = Path(__file__).parent / "corpus" / "rpc_codec"
CORPUS_FILES = sorted(CORPUS.glob("*.msgpack"))


def test_corpus_is_present() -> None:
    assert len(CORPUS_FILES) >= 8


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_replay(path: Path) -> None:
    """``<interface>.<method>--<what>.msgpack``: argument arrays each method must refuse."""
    target = path.name.split("--", 1)[0]
    iface, method = target.split(".")
    spec = {"Store": STORE, "Calc": spec_of(Calc)}[iface]
    wire = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    with pytest.raises(BadStubData, match=rf"^\[WinError 1783 RPC_X_BAD_STUB_DATA\] {iface}.{method}: "):
        spec.by_name[method].decode_args(wire, [memoryview(b"\x00" * 8)])
