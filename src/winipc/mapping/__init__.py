"""File mappings and shared sections with Windows semantics.

Memory shared by name between processes::

    from winipc.mapping import FileMapping, FILE_MAP_READ

    m = FileMapping.create("Local\\\\frames", 1 << 20)          # CreateFileMapping
    with m.map_view() as view:                                  # MapViewOfFile
        view[0:5] = b"hello"

    other = FileMapping.open("Local\\\\frames", FILE_MAP_READ)  # OpenFileMapping (elsewhere)
    print(other.map_view()[0:5])

Typed data every process sees (a DLL's shared section)::

    class Counters(ctypes.Structure):
        _fields_ = [("hits", ctypes.c_uint64), ("misses", ctypes.c_uint64)]

    with SharedSection.attach("Local\\\\stats", Counters) as s, s.lock():
        s.data.hits += 1

See docs/mapping.md for the mapping to Win32 and the departures.
"""

from winipc.mapping._mapping import (
    ALLOCATION_GRANULARITY,
    FILE_MAP_ALL_ACCESS,
    FILE_MAP_COPY,
    FILE_MAP_READ,
    FILE_MAP_WRITE,
    PAGE_READONLY,
    PAGE_READWRITE,
    PAGE_WRITECOPY,
    FileMapping,
    MapAccess,
    Protect,
)
from winipc.mapping._section import SharedSection
from winipc.mapping._view import MappedView

__all__ = [
    "ALLOCATION_GRANULARITY",
    "FILE_MAP_ALL_ACCESS",
    "FILE_MAP_COPY",
    "FILE_MAP_READ",
    "FILE_MAP_WRITE",
    "PAGE_READONLY",
    "PAGE_READWRITE",
    "PAGE_WRITECOPY",
    "FileMapping",
    "MapAccess",
    "MappedView",
    "Protect",
    "SharedSection",
]
