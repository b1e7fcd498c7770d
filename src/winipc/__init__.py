"""winipc: the Windows interprocess-communication catalogue for Python on Linux and macOS.

The main classes are re-exported here; each mechanism has its own module
(:mod:`winipc.pipes`, ...), errors are in :mod:`winipc.errors`, and the pywin32-shaped
face is :mod:`winipc.win32`.
"""

from winipc import errors
from winipc._backends.posix import PeerCredentials
from winipc._core.handles import Handle, inherited_handle
from winipc._core.security import Access, SecurityAttributes
from winipc._core.spawn import Process, spawn
from winipc.mapping import FileMapping, MappedView, SharedSection
from winipc.pipes import (
    AsyncPipeConnection,
    AsyncPipeServer,
    OpenMode,
    PipeConnection,
    PipeEnd,
    PipeInstance,
    call_named_pipe,
    connect,
    create_pipe,
    wait_named_pipe,
)
from winipc.sync import (
    Event,
    Mutex,
    Semaphore,
    WaitableTimer,
    open_process,
    wait_all,
    wait_any,
)

__version__ = "0.1.0"

__all__ = [
    "Access",
    "AsyncPipeConnection",
    "AsyncPipeServer",
    "Event",
    "FileMapping",
    "Handle",
    "MappedView",
    "Mutex",
    "OpenMode",
    "PeerCredentials",
    "PipeConnection",
    "PipeEnd",
    "PipeInstance",
    "Process",
    "SecurityAttributes",
    "Semaphore",
    "SharedSection",
    "WaitableTimer",
    "__version__",
    "call_named_pipe",
    "connect",
    "create_pipe",
    "errors",
    "inherited_handle",
    "open_process",
    "spawn",
    "wait_all",
    "wait_any",
    "wait_named_pipe",
]
