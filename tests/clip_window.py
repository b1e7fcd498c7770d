"""A child process with one window that takes part in clipboard tests.

Usage: ``python clip_window.py MODE [FORMAT_NAME]``; prints ``READY <hwnd>`` when set up,
then one line per clipboard message its window gets, and runs its message loop until
``exit`` arrives on stdin (the window is then destroyed and the process exits normally).

Modes:
    delayed   own the clipboard with delayed CF_UNICODETEXT and FORMAT_NAME; render them on
              WM_RENDERFORMAT ("rendered <fmt>") and on WM_RENDERALLFORMATS ("all <fmt>")
    norender  like delayed, but render only on WM_RENDERALLFORMATS
    plain     own the clipboard with the text "from child"
    listener  register as a clipboard format listener
"""

from __future__ import annotations

import sys
import threading

from winipc import clipboard as cb
from winipc import messages as m

mode = sys.argv[1]
custom = cb.register_format(sys.argv[2]) if len(sys.argv) > 2 else 0
delayed = [cb.CF_UNICODETEXT] + ([custom] if custom else [])


def say(*parts: object) -> None:
    print(*parts, flush=True)


def payload(fmt: int, how: str) -> bytes | str:
    return f"{how} {fmt}" if fmt == cb.CF_UNICODETEXT else f"{how} {fmt}".encode()


def proc(hwnd: int, msg: int, wparam: int, lparam: object) -> int | None:
    if msg == m.WM_RENDERFORMAT:
        say("RENDERFORMAT", wparam)
        if mode == "delayed":
            cb.set_data(wparam, payload(wparam, "rendered"))
        return 0
    if msg == m.WM_RENDERALLFORMATS:
        say("RENDERALLFORMATS")
        with cb.opened(hwnd):
            if cb.get_owner() == hwnd:
                for fmt in delayed:
                    cb.set_data(fmt, payload(fmt, "all"))
        return 0
    if msg == m.WM_DESTROYCLIPBOARD:
        say("DESTROYCLIPBOARD")
        return 0
    if msg == m.WM_CLIPBOARDUPDATE:
        say("CLIPBOARDUPDATE", cb.sequence_number())
        return 0
    if msg == m.WM_USER:
        window.destroy()
        m.post_quit_message(0)
        return 0
    return None


m.register_class("WinipcClipTest", proc)
window = m.create_window("WinipcClipTest", f"clip {mode}", parent=m.HWND_MESSAGE)

if mode in ("delayed", "norender"):
    with cb.opened(window):
        cb.empty()
        for fmt in delayed:
            cb.set_data(fmt, None)
elif mode == "plain":
    with cb.opened(window):
        cb.empty()
        cb.set_data(cb.CF_UNICODETEXT, "from child")
elif mode == "listener":
    cb.add_format_listener(window)


def stdin_reader() -> None:
    for line in sys.stdin:
        if line.strip() == "exit":
            break
    m.post_message(window.hwnd, m.WM_USER, 0, 0)


threading.Thread(target=stdin_reader, daemon=True).start()
say("READY", window.hwnd)
m.run()
say("BYE")
