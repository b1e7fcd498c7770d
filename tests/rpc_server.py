"""An RPC server process for the tests: serves the interfaces of rpc_ifaces until stdin closes.

    python rpc_server.py [--public] [--anonymous] [--key PRINCIPAL:HEX] [--tls CERTFILE:KEYFILE[:CAFILE]] BINDING...

With a CA file, ncacn_np endpoints also take clients from other machines (remote pipes).

Prints one line of JSON: {"bindings": [...], "pid": N}.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rpc_ifaces import AsyncImpl, FilesImpl, PlainImpl, PublicImpl, TypesImpl
from winipc import rpc
from winipc._core.security import SecurityAttributes


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("bindings", nargs="+")
    p.add_argument("--public", action="store_true", help="endpoint open to every local user; Public interface too")
    p.add_argument("--anonymous", action="store_true")
    p.add_argument("--key", action="append", default=[])
    p.add_argument("--tls")
    p.add_argument("--min-level", type=int, default=1)
    p.add_argument("--max-frame", type=int, default=64 * 1024 * 1024)
    a = p.parse_args()
    keys = {k.split(":")[0]: bytes.fromhex(k.split(":")[1]) for k in a.key}
    server = rpc.RpcServer(keys=keys, max_frame=a.max_frame)
    everyone = SecurityAttributes(allow=[("everyone", "c")])
    server.register(TypesImpl(), min_auth_level=a.min_level)
    server.register(FilesImpl())
    server.register(AsyncImpl())
    server.register(PublicImpl(), security=everyone if a.public else None)
    server.register(PlainImpl())
    tls = None
    if a.tls:
        cert, key, *ca = a.tls.split(":")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        if ca:  # client certificates signed by this CA identify callers
            tls.load_verify_locations(ca[0])
            tls.verify_mode = ssl.CERT_OPTIONAL
    np_tls = None
    if a.tls and len(a.tls.split(":")) == 3:  # ncacn_np from other machines: certificates required
        cert, key, ca_file = a.tls.split(":")
        np_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        np_tls.load_cert_chain(cert, key)
        np_tls.load_verify_locations(ca_file)
        np_tls.verify_mode = ssl.CERT_REQUIRED
    out = []
    for b in a.bindings:
        if b.startswith("ncacn_ip_tcp"):
            out.append(server.listen(b, tls=tls, allow_anonymous=a.anonymous))
        elif b.startswith("ncacn_np"):
            out.append(server.listen(b, security=everyone if a.public else None, tls=np_tls))
        else:
            out.append(server.listen(b, security=everyone if a.public else None))
    server.start()
    print(json.dumps({"bindings": out, "pid": os.getpid()}), flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
