"""The endpoint mapper: which bindings serve which interface on this machine.

No daemon: each serving RpcServer holds one machine-wide namespace object of type
``rpc-endpoints`` (``Global\\rpc-epm.<pid>.<n>``) whose record lists its interfaces and
bindings, readable by every user as Windows' endpoint mapper is. It disappears with its
server, also when the server is killed (the namespace's kernel-held locks tell), so a
lookup never returns a dead endpoint (Win32: RpcEpRegister, RpcEpResolveBinding,
RpcMgmtEpEltInqBegin).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from winipc import errors as W
from winipc._core import names, namespace
from winipc._core.security import Access, SecurityAttributes
from winipc.rpc._idl import InterfaceSpec

TYPE = "rpc-endpoints"
_ids = itertools.count(1)


class Registration:
    def __init__(self, ref: namespace.NamedRef) -> None:
        self._ref: namespace.NamedRef | None = ref

    def close(self) -> None:
        if self._ref is not None:
            self._ref.release()
            self._ref = None


def register(specs: Sequence[InterfaceSpec], bindings: Sequence[str], annotation: str = "") -> Registration:
    """Record this server's interfaces and bindings until the registration is closed."""
    oname = names.parse(f"Global\\rpc-epm.{os.getpid()}.{next(_ids)}")
    attrs = {
        "interfaces": [[str(s.uuid), s.version[0], s.version[1], s.name] for s in specs],
        "bindings": list(bindings),
        "annotation": annotation,
    }
    ref, created = namespace.create(oname, TYPE, attrs, SecurityAttributes(allow=[("everyone", Access.QUERY)]))
    if not created:
        ref.release()
        raise W.AlreadyExists(f"{oname.display} exists already")
    return Registration(ref)


@dataclass(frozen=True)
class Entry:
    """One endpoint mapper element: an interface, a binding, the server's pid and uid."""

    uuid: str
    version: tuple[int, int]
    name: str
    binding: str
    pid: int
    uid: int
    annotation: str

    def to_json(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "version": f"{self.version[0]}.{self.version[1]}", "interface": self.name,
                "binding": self.binding, "pid": self.pid, "uid": self.uid, "annotation": self.annotation}


def entries() -> list[Entry]:
    """Every live registration on this machine."""
    out: list[Entry] = []
    for info in namespace.list_objects():
        if info.type != TYPE:
            continue
        if not info.alive:  # a killed server's record: sweep it (another user's stays for `winipc clean`)
            with contextlib.suppress(W.WinIPCError):
                namespace.remove(names.parse(info.name))
            continue
        try:
            _path, rec = namespace.lookup(names.parse(info.name))
        except W.WinIPCError:
            continue  # gone meanwhile, or unreadable
        attrs = rec.attrs
        for iface in attrs.get("interfaces", []):
            for b in attrs.get("bindings", []):
                try:
                    out.append(Entry(str(iface[0]), (int(iface[1]), int(iface[2])), str(iface[3]), str(b),
                                     rec.creator_pid, rec.owner, str(attrs.get("annotation", ""))))
                except (TypeError, ValueError, IndexError):
                    continue
    return out


def resolve(spec: InterfaceSpec, protseq: str | None = None) -> list[Entry]:
    """Bindings of servers that serve ``spec`` (same major, minor at least ours), ncalrpc first."""
    order = {"ncalrpc": 0, "ncacn_np": 1, "ncacn_ip_tcp": 2}
    found = [e for e in entries()
             if e.uuid == str(spec.uuid) and e.version[0] == spec.version[0] and e.version[1] >= spec.version[1]
             and (protseq is None or e.binding.split(":", 1)[0] == protseq)]
    return sorted(found, key=lambda e: order.get(e.binding.split(":", 1)[0], 9))
