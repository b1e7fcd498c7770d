"""Remote procedure calls with the Windows RPC model: interfaces, string bindings, context handles.

Declare an interface (the class is the IDL), implement it, serve it, call it::

    from winipc import rpc

    @rpc.interface(uuid="0a6f3f4e-6a57-4b8e-9c39-3f2b8e9d1c20", version=(1, 0))
    class Calc:
        def add(self, a: rpc.Int32, b: rpc.Int32) -> int: ...

    class CalcImpl(Calc):
        def add(self, a, b):
            return a + b

    with rpc.RpcServer() as server:          # in the server process
        server.register(CalcImpl())
        server.listen("ncalrpc:[calc]")
        server.serve_forever()

    with rpc.bind("ncalrpc:[calc]") as b:     # in a client process
        print(b.client(Calc).add(2, 3))

See docs/rpc.md for the mapping to MIDL and the RPC runtime, docs/wire/rpc.md for the bytes.
"""

from winipc.rpc._binding import StringBinding, compose
from winipc.rpc._client import Binding, CallFuture, Proxy, bind, bind_interface
from winipc.rpc._common import AuthInfo, AuthLevel, Call, ClientInfo, current_call
from winipc.rpc._context import ClientContextHandle, ServerContextHandle, new_context
from winipc.rpc._epm import Entry as EndpointEntry
from winipc.rpc._epm import entries as endpoint_entries
from winipc.rpc._idl import (
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
    interface,
    oneway,
    spec_of,
)
from winipc.rpc._server import RpcServer

__all__ = [
    "AuthInfo",
    "AuthLevel",
    "Binding",
    "Call",
    "CallFuture",
    "ClientContextHandle",
    "ClientInfo",
    "ContextHandle",
    "EndpointEntry",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "InterfaceSpec",
    "MethodSpec",
    "Proxy",
    "RpcServer",
    "ServerContextHandle",
    "StringBinding",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "bind",
    "bind_interface",
    "compose",
    "current_call",
    "endpoint_entries",
    "interface",
    "new_context",
    "oneway",
    "spec_of",
]
