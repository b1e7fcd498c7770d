"""A window in its own process, for tests/test_messages.py.

usage: python msg_child.py MODE [key=value ...]

MODE:
  serve   create a window and pump with run(); the process exits with run()'s code
  hung    create a window and never retrieve a message (until stdin closes)
  gated   create a window, wait for a line on stdin, then serve

options: cls=NAME title=TEXT message_only=1 everyone=1 (everyone gets CONNECT)

It prints ``hwnd <hex>`` once the window exists, then one JSON line per report. Its
window procedure (``serve``):

  WM_USER       returns wparam + lparam
  WM_USER+1     records wparam (posted or sent) and returns 0
  WM_USER+2     prints {"seen": [...]} and returns how many were seen
  WM_USER+3     post_quit_message(wparam)
  WM_USER+4     bytes lparam: returns crc32(lparam), prints {"bytes": len}
  WM_USER+5     sends WM_USER(1, 2) to hwnd ``wparam`` and returns that result + 100
  WM_USER+6     returns the process id
  WM_USER+8     set_title(lparam.decode())
  WM_COPYDATA   prints what it saw, returns crc32(data)
  the message registered as "WinIPC.Test.Registered"  returns 77
  WM_DESTROY    post_quit_message(5)
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from typing import Any

from winipc import messages as M
from winipc._core.security import SecurityAttributes

WM_USER = M.WM_USER


def say(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


def main() -> int:
    mode = sys.argv[1]
    opts = dict(a.split("=", 1) for a in sys.argv[2:])
    seen: list[int] = []
    registered = M.register_window_message("WinIPC.Test.Registered")
    win: M.Window | None = None

    def proc(hwnd: int, msg: int, wparam: int, lparam: Any) -> int | None:
        if msg == WM_USER:
            return int(wparam + lparam)
        if msg == WM_USER + 1:
            seen.append(wparam)
            return 0
        if msg == WM_USER + 2:
            say({"seen": seen})
            return len(seen)
        if msg == WM_USER + 3:
            M.post_quit_message(wparam)
            return 0
        if msg == WM_USER + 4:
            say({"bytes": len(lparam), "type": type(lparam).__name__})
            return zlib.crc32(lparam)
        if msg == WM_USER + 5:
            return M.send_message(wparam, WM_USER, 1, 2) + 100
        if msg == WM_USER + 6:
            return os.getpid()
        if msg == WM_USER + 8:
            assert win is not None
            win.set_title(lparam.decode())
            return 1
        if msg == registered:
            return 77
        if msg == M.WM_COPYDATA:
            cd = lparam
            refused = False
            if cd.data.nbytes:
                try:
                    cd.data[0:1] = b"x"
                except TypeError:
                    refused = True
            crc = zlib.crc32(cd.data)
            say({"copydata": {"len": cd.data.nbytes, "crc": crc, "dwdata": cd.dwdata, "wparam": wparam,
                              "sender_hwnd": cd.sender_hwnd, "sender_pid": cd.sender_pid,
                              "sender_uid": cd.sender_uid, "readonly": cd.data.readonly, "write_refused": refused}})
            return crc
        if msg == M.WM_DESTROY:
            M.post_quit_message(5)
            return 0
        return M.def_window_proc(hwnd, msg, wparam, lparam)

    cls = opts.get("cls", "TestChild")
    M.register_class(cls, proc)
    security = SecurityAttributes(allow={"everyone": "c"}) if opts.get("everyone") == "1" else None
    parent = M.HWND_MESSAGE if opts.get("message_only") == "1" else None
    win = M.create_window(cls, opts.get("title", ""), parent=parent, security=security)
    print(f"hwnd {win.hwnd:x}", flush=True)
    if mode == "hung":
        sys.stdin.read()
        return 0
    if mode == "gated":
        sys.stdin.readline()
    return M.run()


if __name__ == "__main__":
    sys.exit(main())
