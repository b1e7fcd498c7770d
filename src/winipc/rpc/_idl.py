"""RPC interfaces declared in Python: the IDL of winipc.rpc (no I/O).

An interface is a class decorated with :func:`interface`: a UUID and a version, as in a
MIDL interface header, and methods whose annotations are the IDL::

    @interface("5d6c1c3e-0d2b-4f7e-9a34-7d1f0c1b2a10", version=(1, 0))
    class Calc:
        def add(self, a: Int32, b: Int32) -> Int64: ...
        @oneway
        def log(self, line: str) -> None: ...

MIDL equivalent::

    [uuid(5d6c1c3e-0d2b-4f7e-9a34-7d1f0c1b2a10), version(1.0)]
    interface Calc {
        hyper add([in] long a, [in] long b);
        [maybe] void log([in, string] char *line);
    }

Parameters are MIDL ``[in]``; a tuple return is how ``[out]`` values come back. Each method
gets an opnum (its position in the class body, 0..n-1), and a :class:`MethodSpec` whose
precompiled codec turns arguments and results into msgpack-ready values and back
(:mod:`winipc.rpc._codec` holds the per-type codec). Declarations that cannot work raise
TypeError when the class is decorated; values that do not fit raise
:class:`winipc.errors.BadStubData` (RPC_X_BAD_STUB_DATA), naming the method, the parameter
and the path inside it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
import uuid as _uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from winipc._wire import rpc as _wire
from winipc.errors import BadStubData
from winipc.rpc._codec import (
    EXT_CONTEXT,
    EXT_NDARRAY,
    EXT_OOB,
    INT_MAX,
    INT_MIN,
    MISSING,
    ContextHandle,
    ContextIn,
    Decoder,
    Encoder,
    FieldSpec,
    IdlBuilder,
    TypeSpec,
    Width,
    _Mismatch,
    check_default,
    compile_type,
    default_idl,
)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

Int8 = Annotated[int, Width(8, True)]
Int16 = Annotated[int, Width(16, True)]
Int32 = Annotated[int, Width(32, True)]
Int64 = Annotated[int, Width(64, True)]
UInt8 = Annotated[int, Width(8, False)]
UInt16 = Annotated[int, Width(16, False)]
UInt32 = Annotated[int, Width(32, False)]
UInt64 = Annotated[int, Width(64, False)]

#: Byte strings at least this long travel out of band when the caller collects buffers.
OOB_THRESHOLD = 65536
_ONEWAY_ATTR = "__rpc_oneway__"
_SPEC_ATTR = "__rpc_interface__"
# Parameter types whose wire value is the Python value itself: the "all simple" fast path.
_SIMPLE = (bool, int, float, str, bytes, type(None))


def oneway(fn: F) -> F:
    """Mark a method one-way: the client sends the call and does not wait for a reply.

    MIDL: ``[maybe]`` (no response, no delivery guarantee). The method must be annotated
    ``-> None``; :func:`interface` checks it.

    Args:
        fn: the method, in the interface class body.

    Returns:
        ``fn`` itself, marked.

    Raises:
        TypeError: ``fn`` is not a function.
    """
    if not inspect.isfunction(fn):
        raise TypeError(f"@oneway applies to a method, not {fn!r}")
    setattr(fn, _ONEWAY_ATTR, True)
    return fn


@dataclasses.dataclass(frozen=True, eq=False)
class ParamSpec:
    """One parameter (MIDL ``[in]``).

    Attributes:
        name: the Python parameter name.
        type: its compiled type.
        default: the default value, or MISSING.
        kw_only: declared after ``*`` (passed by keyword only).
    """

    name: str
    type: TypeSpec
    default: Any = MISSING
    kw_only: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class MethodSpec:
    """One remote procedure: its opnum, parameters and result, and their codec.

    Wire shapes: the arguments are an array in declaration order (``encode_args`` gives a
    list); the result is one value (a tuple result is an array).

    Attributes:
        name: the method name.
        opnum: its position in the interface, 0..n-1 (the RPC procedure number).
        params: the parameters after ``self``, in declaration order.
        result: the return type (kind ``none`` for ``-> None``).
        oneway: ``[maybe]``: no reply is sent.
        interface: the interface name, for messages (``"Calc.add: ..."``).
    """

    name: str
    opnum: int
    params: tuple[ParamSpec, ...]
    result: TypeSpec
    oneway: bool
    interface: str = ""
    _qual: str = dataclasses.field(init=False, repr=False)
    _index: dict[str, int] = dataclasses.field(init=False, repr=False)
    _n_positional: int = dataclasses.field(init=False, repr=False)
    _simple: list[type] | None = dataclasses.field(init=False, repr=False)
    _encoders: tuple[Encoder, ...] = dataclasses.field(init=False, repr=False)
    _decoders: tuple[Decoder, ...] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        # "all parameters are simple scalars": one C-level comparison of the value types
        # against this list decides the fast path (see encode_args/decode_args)
        kinds = [p.type.fast if p.type.fast in _SIMPLE and p.type.width is None else None for p in self.params]
        simple = None if None in kinds else typing.cast("list[type]", kinds)
        setattr_ = object.__setattr__
        setattr_(self, "_qual", f"{self.interface}.{self.name}" if self.interface else self.name)
        setattr_(self, "_index", {p.name: i for i, p in enumerate(self.params)})
        setattr_(self, "_n_positional", sum(not p.kw_only for p in self.params))
        setattr_(self, "_simple", simple)
        setattr_(self, "_encoders", tuple(p.type.encode for p in self.params))
        setattr_(self, "_decoders", tuple(p.type.decode for p in self.params))

    def _bad(self, e: _Mismatch, where: str) -> BadStubData:
        return BadStubData(f"{self._qual}: {where}{''.join(reversed(e.path))}: {e.detail}")

    def bind_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        """Arrange a call's arguments into one list in declaration order, defaults applied.

        Args:
            args: the positional arguments (without ``self``).
            kwargs: the keyword arguments.

        Returns:
            One value per parameter, in declaration order (not yet checked: see encode_args).

        Raises:
            BadStubData: too many positional arguments, an unknown keyword, a parameter
                given twice, or missing required parameters (all named).
        """
        params = self.params
        n = len(args)
        if not kwargs and n == len(params) and n == self._n_positional:
            return list(args)
        if n > self._n_positional:
            raise BadStubData(f"{self._qual}: takes {self._n_positional} positional arguments, {n} given")
        out: list[Any] = [*args, *(MISSING for _ in range(len(params) - n))]
        for key, value in kwargs.items():
            i = self._index.get(key)
            if i is None:
                raise BadStubData(f"{self._qual}: unexpected keyword argument {key!r}")
            if i < n:
                raise BadStubData(f"{self._qual}: got multiple values for argument {key!r}")
            out[i] = value
        missing = []
        for i, p in enumerate(params):
            if out[i] is MISSING:
                if p.default is MISSING:
                    missing.append(repr(p.name))
                else:
                    out[i] = p.default
        if missing:
            raise BadStubData(f"{self._qual}: missing required argument(s) {', '.join(missing)}")
        return out

    def encode_args(
        self, values: list[Any], oob: list[memoryview] | None = None, *, oob_threshold: int = OOB_THRESHOLD
    ) -> list[Any]:
        """Check the arguments against the annotations and turn them into wire values.

        Args:
            values: one value per parameter in declaration order (from bind_args).
            oob: when a list, byte strings and arrays of at least ``oob_threshold`` bytes are
                appended to it as memoryviews and replaced by ``ExtType(EXT_OOB, index)``
                references; when None, everything travels inline.
            oob_threshold: bytes.

        Returns:
            A list ``msgpack.packb(..., use_bin_type=True)`` accepts.

        Raises:
            BadStubData: a value does not fit its annotation, or the wrong number of values.
        """
        simple = self._simple
        v: Any
        if simple is not None and type(values) is list and [*map(type, values)] == simple:
            # the types match; what remains is what msgpack would refuse or send out of band
            for v in values:
                tv = type(v)
                if tv is int:
                    if not INT_MIN <= v <= INT_MAX:
                        break
                elif tv is str:
                    if not v.isascii():  # O(1); non-ASCII text takes the slow path's UTF-8 check
                        break
                elif tv is bytes and oob is not None and len(v) >= oob_threshold:
                    break
            else:
                return [*values]
        if type(values) is not list and not isinstance(values, (list, tuple)):
            raise BadStubData(f"{self._qual}: expected a list of argument values, got {type(values).__name__}")
        if len(values) != len(self.params):
            raise BadStubData(f"{self._qual}: takes {len(self.params)} arguments, {len(values)} given")
        out = []
        i = 0
        encoders = self._encoders
        try:
            # enumerate, not zip: zip(strict=...) takes the slow keyword-call path
            for i, v in enumerate(values):
                out.append(encoders[i](v, oob, oob_threshold))
        except _Mismatch as e:
            raise self._bad(e, f"parameter {self.params[i].name!r}") from e.__cause__
        return out

    def decode_args(
        self, wire: Any, oob: Sequence[memoryview] = (), *, context_in: ContextIn | None = None
    ) -> list[Any]:
        """Check received arguments against the annotations and build the Python values.

        Args:
            wire: what ``msgpack.unpackb(raw=False, strict_map_key=False)`` gave: an array
                with one value per parameter.
            oob: the frame's out-of-band buffers (``ExtType(EXT_OOB, i)`` refers to ``oob[i]``);
                arrays decode as zero-copy views of them.
            context_in: called with the 16 raw bytes of each context handle; its result is
                the argument (default: ``ContextHandle(raw)``). Its exceptions propagate.

        Returns:
            The argument values in declaration order (may be ``wire`` itself).

        Raises:
            BadStubData: the data does not fit the interface; nothing else for any input.
        """
        simple = self._simple
        if type(wire) is list:
            if simple is not None and [*map(type, wire)] == simple:
                return wire  # msgpack gave exactly the Python values: nothing to convert
        elif type(wire) is not tuple:
            raise BadStubData(f"{self._qual}: expected an array of {len(self.params)} arguments, got {type(wire).__name__}")
        if len(wire) != len(self.params):
            raise BadStubData(f"{self._qual}: expected {len(self.params)} arguments, got {len(wire)}")
        out = []
        i = 0
        decoders = self._decoders
        try:
            for i, w in enumerate(wire):
                out.append(decoders[i](w, oob, context_in))
        except _Mismatch as e:
            raise self._bad(e, f"parameter {self.params[i].name!r}") from e.__cause__
        return out

    def encode_result(
        self, value: Any, oob: list[memoryview] | None = None, *, oob_threshold: int = OOB_THRESHOLD
    ) -> Any:
        """Check a return value against the return annotation and turn it into a wire value.

        Args:
            value: what the server method returned.
            oob: as for encode_args.
            oob_threshold: bytes.

        Returns:
            A value ``msgpack.packb`` accepts.

        Raises:
            BadStubData: the value does not fit (named ``result``).
        """
        try:
            return self.result.encode(value, oob, oob_threshold)
        except _Mismatch as e:
            raise self._bad(e, "result") from e.__cause__

    def decode_result(
        self, wire: Any, oob: Sequence[memoryview] = (), *, context_in: ContextIn | None = None
    ) -> Any:
        """Check a received result against the return annotation and build the Python value.

        Args:
            wire: the unpacked result.
            oob: the reply frame's out-of-band buffers.
            context_in: as for decode_args.

        Returns:
            The result value.

        Raises:
            BadStubData: the data does not fit (named ``result``); nothing else for any input.
        """
        try:
            return self.result.decode(wire, oob, context_in)
        except _Mismatch as e:
            raise self._bad(e, "result") from e.__cause__

    def to_idl(self, builder: IdlBuilder) -> dict[str, Any]:
        """This method's entry in the IDL JSON (named types go into ``builder.types``)."""
        params = []
        for p in self.params:
            entry = {"name": p.name, "type": builder.describe(p.type), **default_idl(p.type, p.default)}
            if p.kw_only:
                entry["kw_only"] = True
            params.append(entry)
        return {
            "name": self.name,
            "opnum": self.opnum,
            "oneway": self.oneway,
            "params": params,
            "result": builder.describe(self.result),
        }


@dataclasses.dataclass(frozen=True, eq=False)
class InterfaceSpec:
    """An interface: MIDL's ``[uuid(...), version(major.minor)] interface Name { ... }``.

    Attributes:
        uuid: the interface UUID.
        version: (major, minor), each 0..65535. A client binds to a server interface with
            the same UUID and major version and a minor version at least its own.
        name: the interface name (the class name unless given).
        cls: the decorated class.
        methods: the methods, by opnum.
        by_name: the methods, by name.
    """

    uuid: _uuid.UUID
    version: tuple[int, int]
    name: str
    cls: type
    methods: tuple[MethodSpec, ...]
    by_name: Mapping[str, MethodSpec]

    def key(self) -> tuple[bytes, int]:
        """``(uuid.bytes, major)``: what a server looks interfaces up by."""
        return (self.uuid.bytes, self.version[0])

    @functools.cached_property
    def request_prefixes(self) -> tuple[bytes, ...]:
        """Each method's fixed start of a REQUEST body, by opnum (see ``_wire.rpc.request_prefix``)."""
        u, (major, minor) = self.uuid.bytes, self.version
        return tuple(_wire.request_prefix(u, major, minor, m.opnum) for m in self.methods)

    def to_idl(self) -> dict[str, Any]:
        """The language-neutral description, JSON-able (``json.dumps`` takes it as is).

        Returns:
            ``{"idl": 1, "name", "uuid", "version": [major, minor], "methods": [...],
            "types": {name: struct or enum}}``; see docs of ``winipc rpc idl``.
        """
        builder = IdlBuilder()
        methods = [m.to_idl(builder) for m in self.methods]
        return {
            "idl": 1,
            "name": self.name,
            "uuid": str(self.uuid),
            "version": list(self.version),
            "methods": methods,
            "types": builder.types,
        }


def _method_spec(iname: str, name: str, opnum: int, fn: Callable[..., Any]) -> MethodSpec:
    where = f"{iname}.{name}"
    try:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as e:  # NameError for an unresolvable string annotation, and others
        raise TypeError(f"{where}: cannot resolve its annotations ({type(e).__name__}: {e})") from e
    plist = list(sig.parameters.values())
    if not plist or plist[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"{where}: an interface method takes self first")
    params = []
    for p in plist[1:]:
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"{where}: parameter {p.name!r} is positional-only; RPC parameters have names")
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"{where}: *{p.name} is not supported; declare each parameter")
        if p.name not in hints:
            raise TypeError(f"{where}: parameter {p.name!r} has no annotation")
        try:
            spec = compile_type(hints[p.name])
        except TypeError as e:
            raise TypeError(f"{where}: parameter {p.name!r}: {e}") from None
        default = MISSING if p.default is inspect.Parameter.empty else p.default
        if default is not MISSING:
            check_default(spec, default, f"{where}: default of parameter {p.name!r}")
        params.append(ParamSpec(p.name, spec, default, p.kind is inspect.Parameter.KEYWORD_ONLY))
    if "return" not in hints:
        raise TypeError(f"{where}: the return has no annotation (use -> None)")
    try:
        result = compile_type(hints["return"])
    except TypeError as e:
        raise TypeError(f"{where}: result: {e}") from None
    is_oneway = bool(getattr(fn, _ONEWAY_ATTR, False))
    if is_oneway and result.kind != "none":
        raise TypeError(f"{where}: a @oneway method returns nothing; annotate it -> None")
    return MethodSpec(name, opnum, tuple(params), result, is_oneway, iname)


def interface(
    uuid: str | _uuid.UUID, version: tuple[int, int] = (1, 0), *, name: str | None = None
) -> Callable[[type[T]], type[T]]:
    """Declare a class as an RPC interface (MIDL ``[uuid(...), version(...)] interface``).

    The public methods defined in the class body, in definition order, are the procedures
    (opnum 0..n-1); every parameter and the return must be annotated with supported types
    (see :mod:`winipc.rpc._codec`). Defaults are allowed (the client fills them in);
    keyword-only parameters are allowed; ``*args``, ``**kwargs`` and positional-only
    parameters are not. The InterfaceSpec is stored on the class as ``__rpc_interface__``.

    Args:
        uuid: the interface UUID (string or uuid.UUID).
        version: (major, minor), each 0..65535.
        name: the interface name; default the class name.

    Returns:
        The class decorator; it returns the class itself.

    Raises:
        TypeError: a bad UUID or version, or (when decorating) a method that cannot be
            marshalled, naming the method and the parameter.
    """
    try:
        iid = uuid if isinstance(uuid, _uuid.UUID) else _uuid.UUID(uuid)
    except (TypeError, ValueError, AttributeError) as e:
        raise TypeError(f"interface uuid {uuid!r} is not a UUID ({e})") from None
    if (
        not isinstance(version, tuple)
        or len(version) != 2
        or not all(type(v) is int and 0 <= v <= 0xFFFF for v in version)
    ):
        raise TypeError(f"interface version must be (major, minor), each 0..65535, not {version!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"interface name must be a non-empty str, not {name!r}")

    def decorate(cls: type[T]) -> type[T]:
        if not isinstance(cls, type):
            raise TypeError(f"@interface decorates a class, not {cls!r}")
        iname = name or cls.__name__
        methods: list[MethodSpec] = []
        for attr, obj in vars(cls).items():
            if attr.startswith("_"):
                continue
            if isinstance(obj, (staticmethod, classmethod, property)):
                raise TypeError(f"{iname}.{attr}: interface members are plain methods, not {type(obj).__name__}")
            if inspect.isfunction(obj):
                methods.append(_method_spec(iname, attr, len(methods), obj))
        spec = InterfaceSpec(
            iid, (version[0], version[1]), iname, cls, tuple(methods),
            types.MappingProxyType({m.name: m for m in methods}),
        )
        setattr(cls, _SPEC_ATTR, spec)
        return cls

    return decorate


def interfaces_of(obj: type | object) -> list[InterfaceSpec]:
    """The interfaces a class (or an instance's class) declares or derives from, MRO order."""
    cls = obj if isinstance(obj, type) else type(obj)
    found = []
    for klass in cls.__mro__:
        spec = vars(klass).get(_SPEC_ATTR)
        if isinstance(spec, InterfaceSpec) and spec not in found:
            found.append(spec)
    return found


def spec_of(obj: type | object) -> InterfaceSpec:
    """The InterfaceSpec of an interface class, of its implementation, or of an instance.

    Args:
        obj: the interface class, a subclass of it (the implementation), or an instance.

    Returns:
        The interface's spec. An interface class's own spec wins over those it derives from.

    Raises:
        TypeError: ``obj`` relates to no interface, or to several (pass the interface itself).
    """
    cls = obj if isinstance(obj, type) else type(obj)
    own = vars(cls).get(_SPEC_ATTR)
    if isinstance(own, InterfaceSpec):
        return own
    found = interfaces_of(cls)
    if not found:
        raise TypeError(f"{cls.__qualname__} is not an RPC interface (decorate it with @interface)")
    if len(found) > 1:
        names = ", ".join(s.name for s in found)
        raise TypeError(f"{cls.__qualname__} implements several interfaces ({names}); pass the interface explicitly")
    return found[0]


__all__ = [
    "EXT_CONTEXT",
    "EXT_NDARRAY",
    "EXT_OOB",
    "MISSING",
    "OOB_THRESHOLD",
    "ContextHandle",
    "FieldSpec",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "InterfaceSpec",
    "MethodSpec",
    "ParamSpec",
    "TypeSpec",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "Width",
    "interface",
    "interfaces_of",
    "oneway",
    "spec_of",
]
