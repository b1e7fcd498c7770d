"""Anonymous and named pipes with Windows semantics.

Server::

    with winipc.pipes.PipeInstance(r"\\\\.\\pipe\\demo", message=True) as inst:
        inst.connect()
        inst.send(inst.recv().upper())

Client::

    with winipc.pipes.connect(r"\\\\.\\pipe\\demo", read_message=True) as pipe:
        print(pipe.transact(b"hello"))

See docs/pipes.md for the mapping to CreateNamedPipe and friends.
"""

from winipc.pipes._anonymous import PipeEnd, create_pipe
from winipc.pipes._async import AsyncPipeConnection
from winipc.pipes._async_server import AsyncPipeServer
from winipc.pipes._connection import PeekResult, PipeConnection
from winipc.pipes._named import (
    DEFAULT_TIMEOUT,
    UNLIMITED_INSTANCES,
    USE_DEFAULT_WAIT,
    OpenMode,
    PipeInstance,
    call_named_pipe,
    connect,
    wait_named_pipe,
)
from winipc.pipes._remote import RemotePeer, pipe_port, set_default_tls

__all__ = [
    "DEFAULT_TIMEOUT",
    "UNLIMITED_INSTANCES",
    "USE_DEFAULT_WAIT",
    "AsyncPipeConnection",
    "AsyncPipeServer",
    "OpenMode",
    "PeekResult",
    "PipeConnection",
    "PipeEnd",
    "PipeInstance",
    "RemotePeer",
    "call_named_pipe",
    "connect",
    "create_pipe",
    "pipe_port",
    "set_default_tls",
    "wait_named_pipe",
]
