"""Interfaces and implementations the RPC tests serve from another process."""

from __future__ import annotations

import dataclasses
import enum
import os
import threading
import time
from typing import Any

import numpy as np

from winipc import rpc


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


@dataclasses.dataclass
class Point:
    x: float
    y: float
    tag: str = ""


@dataclasses.dataclass
class Shape:
    name: str
    points: list[Point]
    color: Color
    weights: dict[str, float] | None = None


TYPES_UUID = "5b1f6c2a-8d3e-4f7a-9b0c-1d2e3f405061"


@rpc.interface(uuid=TYPES_UUID, version=(1, 2))
class Types:
    def echo_bool(self, v: bool) -> bool: ...
    def echo_int(self, v: int) -> int: ...
    def echo_i8(self, v: rpc.Int8) -> rpc.Int8: ...
    def echo_u32(self, v: rpc.UInt32) -> rpc.UInt32: ...
    def echo_float(self, v: float) -> float: ...
    def echo_str(self, v: str) -> str: ...
    def echo_bytes(self, v: bytes) -> bytes: ...
    def echo_none(self, v: None) -> None: ...
    def echo_list(self, v: list[int]) -> list[int]: ...
    def echo_dict(self, v: dict[str, list[float]]) -> dict[str, list[float]]: ...
    def echo_tuple(self, v: tuple[int, str, bytes]) -> tuple[int, str, bytes]: ...
    def echo_vartuple(self, v: tuple[int, ...]) -> tuple[int, ...]: ...
    def echo_enum(self, c: Color, m: Mode) -> tuple[Color, Mode]: ...
    def echo_struct(self, s: Shape) -> Shape: ...
    def echo_optional(self, v: Point | None) -> Point | None: ...
    def echo_array(self, a: np.ndarray) -> np.ndarray: ...
    def divmod(self, a: int, b: int) -> tuple[int, int]: ...
    def size(self, data: bytes) -> int: ...
    def fail(self, kind: str) -> None: ...
    def slow(self, seconds: float) -> str: ...
    def whoami(self) -> dict[str, Any]: ...


class TypesImpl(Types):
    def echo_bool(self, v): return v
    def echo_int(self, v): return v
    def echo_i8(self, v): return v
    def echo_u32(self, v): return v
    def echo_float(self, v): return v
    def echo_str(self, v): return v
    def echo_bytes(self, v): return v
    def echo_none(self, v): return v
    def echo_list(self, v): return v
    def echo_dict(self, v): return v
    def echo_tuple(self, v): return v
    def echo_vartuple(self, v): return v
    def echo_enum(self, c, m): return (c, m)
    def echo_struct(self, s): return s
    def echo_optional(self, v): return v
    def echo_array(self, a): return a * 2
    def divmod(self, a, b): return divmod(a, b)
    def size(self, data): return len(data)

    def fail(self, kind):
        if kind == "zero":
            return 1 // 0  # type: ignore[func-returns-value]
        if kind == "denied":
            from winipc import errors
            raise errors.AccessDenied("the implementation said no")
        if kind == "badresult":
            return "not none"  # the result does not fit "-> None"
        return None

    def slow(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if rpc.current_call().cancelled:
                return "cancelled"
            time.sleep(0.01)
        return "done"

    def whoami(self):
        c = rpc.current_call().client
        return {"uid": c.uid, "pid": c.pid, "principal": c.principal, "local": c.local,
                "level": int(c.auth_level), "server_pid": os.getpid()}


# the same interface as the client may (mis)declare it
@rpc.interface(uuid=TYPES_UUID, version=(1, 2))
class TypesWrong:
    def echo_bool(self, v: str) -> bool: ...


@rpc.interface(uuid=TYPES_UUID, version=(1, 9))
class TypesNewerMinor:
    def echo_bool(self, v: bool) -> bool: ...


@rpc.interface(uuid=TYPES_UUID, version=(2, 0))
class TypesV2:
    def echo_bool(self, v: bool) -> bool: ...


@rpc.interface(uuid=TYPES_UUID, version=(1, 0))
class TypesTooMany:
    def m0(self) -> None: ...
    def m1(self) -> None: ...
    def m2(self) -> None: ...
    def m3(self) -> None: ...
    def m4(self) -> None: ...
    def m5(self) -> None: ...
    def m6(self) -> None: ...
    def m7(self) -> None: ...
    def m8(self) -> None: ...
    def m9(self) -> None: ...
    def m10(self) -> None: ...
    def m11(self) -> None: ...
    def m12(self) -> None: ...
    def m13(self) -> None: ...
    def m14(self) -> None: ...
    def m15(self) -> None: ...
    def m16(self) -> None: ...
    def m17(self) -> None: ...
    def m18(self) -> None: ...
    def m19(self) -> None: ...
    def m20(self) -> None: ...
    def m21(self) -> None: ...
    def m22(self) -> None: ...
    def m23(self) -> None: ...


@rpc.interface(uuid="7c4d2e1f-0a9b-4c8d-8e7f-6a5b4c3d2e1f", version=(1, 0))
class Files:
    def open(self, name: str) -> rpc.ContextHandle: ...
    def append(self, h: rpc.ContextHandle, data: str) -> int: ...
    def close(self, h: rpc.ContextHandle) -> str: ...
    def hold(self, h: rpc.ContextHandle, seconds: float) -> None: ...
    def rundowns(self) -> list[str]: ...
    @rpc.oneway
    def note(self, text: str) -> None: ...
    def notes(self) -> list[str]: ...
    def ask_client(self, question: str) -> str: ...


@rpc.interface(uuid="9e8d7c6b-5a49-4837-a625-140312f0e1d2", version=(1, 0))
class Asker:
    def answer(self, question: str) -> str: ...


class FilesImpl(Files):
    def __init__(self) -> None:
        self._rundowns: list[str] = []
        self._notes: list[str] = []
        self._lock = threading.Lock()

    def open(self, name):
        return rpc.new_context([name], rundown=self._rundown)

    def _rundown(self, value):
        with self._lock:
            self._rundowns.append(value[0])

    def append(self, h, data):
        h.value.append(data)
        return len(h.value) - 1

    def close(self, h):
        h.close()
        return "+".join(h.value[1:])

    def hold(self, h, seconds):
        time.sleep(seconds)

    def rundowns(self):
        with self._lock:
            return list(self._rundowns)

    def note(self, text):
        with self._lock:
            self._notes.append(text)

    def notes(self):
        with self._lock:
            return list(self._notes)

    def ask_client(self, question):
        return "client says: " + rpc.current_call().callback(Asker).answer(question)


@rpc.interface(uuid="3a2b1c0d-9e8f-4a7b-b6c5-d4e3f2a1b0c9", version=(1, 0))
class Public:
    def hello(self) -> str: ...


class PublicImpl(Public):
    def hello(self):
        return "hello"


@rpc.interface(uuid="1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9", version=(1, 0))
class AsyncIface:
    def later(self, seconds: float, text: str) -> str: ...


class AsyncImpl(AsyncIface):
    async def later(self, seconds, text):
        import asyncio
        await asyncio.sleep(seconds)
        return text.upper()


@rpc.interface(uuid="3b1f6c2a-8d4e-4f5a-9b6c-7d8e9fa0b1c2", version=(1, 0))
class Plain:
    """Scalar methods only: the ones the C call path (rpc/_fast.py) runs."""

    def caller(self) -> str: ...
    def mix(self, b: bool, i: int, f: float, s: str, data: bytes, n: None) -> str: ...
    def echo_float(self, v: float) -> float: ...
    def wrong(self) -> int: ...
    def big(self) -> int: ...
    def sleep(self, seconds: float) -> str: ...
    def die(self) -> None: ...
    @rpc.oneway
    def count(self, n: int) -> None: ...
    def counted(self) -> int: ...


class PlainImpl(Plain):
    def __init__(self) -> None:
        self._counted = 0

    def caller(self):
        import sys
        return sys._getframe(1).f_code.co_name  # "run": the C loop called; "run_request": Python did

    def mix(self, b, i, f, s, data, n):
        return repr((type(b).__name__, b, type(i).__name__, i, type(f).__name__, f, s, len(data), data[:4], n))

    def echo_float(self, v):
        return v

    def wrong(self):
        return "not an int"

    def big(self):
        return 2 ** 64  # one past what msgpack carries

    def sleep(self, seconds):
        time.sleep(seconds)
        return "done"

    def die(self):
        os._exit(3)

    def count(self, n):
        self._counted += n

    def counted(self):
        return self._counted
