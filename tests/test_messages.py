"""winipc.messages: windows, SendMessage/PostMessage, the message loop and WM_COPYDATA across
real processes (the other side is tests/msg_child.py or a ``python -c`` child)."""

from __future__ import annotations

import json
import mmap
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from winipc import errors as W
from winipc import messages as M
from winipc._backends import os_backend as B
from winipc._core.security import SecurityAttributes
from winipc.sync import Event, wait_any

from conftest import child_env, run_py, wait_line

HERE = Path(__file__).resolve().parent
CHILD = str(HERE / "msg_child.py")
WM_USER = M.WM_USER

_names = iter(range(10**6))


class Child:
    """A msg_child.py process and its window."""

    def __init__(self, mode: str, **opts: str) -> None:
        args = [sys.executable, CHILD, mode, *(f"{k}={v}" for k, v in opts.items())]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=child_env())
        line = wait_line(self.proc, "hwnd ")  # type: ignore[arg-type]
        self.hwnd = int(line.split()[1], 16)

    def report(self, key: str, timeout: float = 10.0) -> Any:
        """The next JSON line holding ``key``."""
        line = wait_line(self.proc, '{"' + key, timeout)  # type: ignore[arg-type]
        return json.loads(line)[key]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdin is not None and self.proc.stdin.closed:
            self.proc.stdin = None
        self.proc.communicate(timeout=10)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for c in made:
        c.stop()


def child(children: list[Child], mode: str = "serve", **opts: str) -> Child:
    c = Child(mode, **opts)
    children.append(c)
    return c


@pytest.fixture
def wclass() -> Iterator[tuple[str, list[tuple[int, int, int, Any]]]]:
    """A fresh window class of this process recording (hwnd, msg, wparam, lparam)."""
    name = f"TestParent{next(_names)}"
    seen: list[tuple[int, int, int, Any]] = []

    def proc(hwnd: int, msg: int, wparam: int, lparam: Any) -> int:
        seen.append((hwnd, msg, wparam, lparam))
        if msg == WM_USER:
            return int(wparam + lparam)
        return M.def_window_proc(hwnd, msg, wparam, lparam)

    M.register_class(name, proc)
    yield name, seen
    for w in M._window.live_windows():
        w.destroy()
    M.unregister_class(name)
    while M.peek_message() is not None:  # leave this thread's queue empty for the next test
        pass


def _exit_code(c: Child, timeout: float = 10.0) -> int:
    return c.proc.wait(timeout)


# --------------------------------------------------------------------------- send / post


def test_send_message_round_trip_and_results_across_processes(children: list[Child]) -> None:
    c = child(children)
    assert M.is_window(c.hwnd)
    assert M.send_message(c.hwnd, WM_USER, 40, 2) == 42
    assert M.send_message(c.hwnd, WM_USER, 1, -5) == -4
    assert M.send_message(c.hwnd, WM_USER, 2**64 - 1, -(2**63)) == 2**63 - 1  # widths kept
    assert M.send_message(c.hwnd, WM_USER + 6) == c.proc.pid
    for size in (0, 5, 64 * 1024, 200_000):  # pointer parameters travel as bytes, big ones in a memfd
        data = random.randbytes(size)
        assert M.send_message(c.hwnd, WM_USER + 4, 0, data) == zlib.crc32(data)
        assert c.report("bytes") == size
    info = M.window_info(c.hwnd)
    assert (info.pid, info.uid, info.class_name, info.message_only) == (c.proc.pid, os.getuid(), "TestChild", False)
    M.post_message(c.hwnd, WM_USER + 3, 0)  # quit
    assert _exit_code(c) == 0
    with pytest.raises(W.InvalidWindowHandle) as ei:  # its window went with it
        M.send_message(c.hwnd, WM_USER, 1, 1)
    assert ei.value.winerror == 1400


def test_posted_messages_keep_their_order_and_wm_quit_gives_the_exit_code(children: list[Child]) -> None:
    c = child(children)
    for i in range(300):
        M.post_message(c.hwnd, WM_USER + 1, i)
    M.post_message(c.hwnd, WM_USER + 2)  # posted too: after the 300 on the same connection
    assert c.report("seen") == list(range(300))
    M.post_message(c.hwnd, WM_USER + 3, 7)
    assert _exit_code(c) == 7


def test_sent_messages_are_processed_before_posted_ones(children: list[Child]) -> None:
    c = child(children, "gated")
    M.post_message(c.hwnd, WM_USER + 1, 1)
    M.post_message(c.hwnd, WM_USER + 1, 2)
    # the child does not pump yet: the send times out but stays queued, as on Windows
    with pytest.raises(W.Timeout) as ei:
        M.send_message_timeout(c.hwnd, WM_USER + 1, 99, 0, M.SMTO_NORMAL, 0.3)
    assert ei.value.winerror == 1460
    assert c.proc.stdin is not None
    c.proc.stdin.write("go\n")
    c.proc.stdin.flush()
    M.post_message(c.hwnd, WM_USER + 2)
    assert c.report("seen") == [99, 1, 2]
    M.post_message(c.hwnd, WM_USER + 3, 0)
    assert _exit_code(c) == 0


def test_hung_window_times_out_and_abortifhung_fails_at_once(children: list[Child], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "HUNG_TIMEOUT", 0.5)  # read by the sender
    hung = child(children, "hung")
    idle = child(children)  # pumps, but has nothing to do
    t0 = time.monotonic()
    with pytest.raises(W.Timeout) as ei:
        M.send_message_timeout(hung.hwnd, WM_USER, 1, 2, M.SMTO_NORMAL, 0.5)
    assert ei.value.winerror == 1460
    assert time.monotonic() - t0 >= 0.5  # it waited its time-out
    time.sleep(0.7)  # both have retrieved nothing for longer than HUNG_TIMEOUT
    t1 = time.monotonic()
    with pytest.raises(W.Timeout) as ei:
        M.send_message_timeout(hung.hwnd, WM_USER, 1, 2, M.SMTO_ABORTIFHUNG, 30.0)
    assert ei.value.winerror == 1460
    assert time.monotonic() - t1 < 30.0  # did not wait for the time-out
    # a thread blocked waiting for messages is not hung
    assert M.send_message_timeout(idle.hwnd, WM_USER, 1, 2, M.SMTO_ABORTIFHUNG, 30.0) == 3
    assert hung.proc.stdin is not None
    hung.proc.stdin.close()
    assert _exit_code(hung) == 0
    M.post_message(idle.hwnd, WM_USER + 3, 0)
    assert _exit_code(idle) == 0


def test_a_killed_or_destroyed_window_gives_invalid_window_handle(children: list[Child]) -> None:
    hung = child(children, "hung")
    got: list[BaseException] = []

    def sender() -> None:
        try:
            M.send_message(hung.hwnd, WM_USER, 1, 2)
        except BaseException as exc:
            got.append(exc)

    t = threading.Thread(target=sender)
    t.start()
    time.sleep(0.3)
    hung.proc.send_signal(signal.SIGKILL)
    t.join(10)
    assert not t.is_alive()
    assert isinstance(got[0], W.InvalidWindowHandle) and got[0].winerror == 1400  # died during the call
    hung.proc.wait(10)
    for call in (lambda: M.send_message(hung.hwnd, WM_USER), lambda: M.post_message(hung.hwnd, WM_USER),
                 lambda: M.window_info(hung.hwnd)):
        with pytest.raises(W.InvalidWindowHandle) as ei:
            call()
        assert ei.value.winerror == 1400
    assert not M.is_window(hung.hwnd)
    assert hung.hwnd not in M.enum_windows()

    c = child(children)
    assert M.send_message(c.hwnd, M.WM_CLOSE) == 0  # DefWindowProc destroys it
    with pytest.raises(W.InvalidWindowHandle):
        M.send_message(c.hwnd, WM_USER, 1, 2)
    assert _exit_code(c) == 5  # its WM_DESTROY posted quit(5)
    with pytest.raises(W.InvalidWindowHandle):
        M.send_message(0x12345, WM_USER)  # not a window number at all


def test_a_thread_sending_keeps_processing_messages_sent_to_it(children: list[Child], wclass: Any) -> None:
    name, seen = wclass
    me = M.create_window(name, "parent")
    c = child(children)
    # the child's procedure sends back to our window while we wait for its answer
    assert M.send_message(c.hwnd, WM_USER + 5, me.hwnd) == 103
    assert (me.hwnd, WM_USER, 1, 2) in seen
    M.post_message(c.hwnd, WM_USER + 3, 0)
    assert _exit_code(c) == 0


# --------------------------------------------------------------------------- finding


def test_find_window_find_window_ex_and_enum_windows(children: list[Child]) -> None:
    top = child(children, cls="Finder", title="Top One")
    hidden = child(children, cls="Finder", title="Hidden", message_only="1")
    assert M.find_window("finder", "TOP ONE") == top.hwnd  # case-insensitive
    assert M.find_window(None, "top one") == top.hwnd
    assert M.find_window("Finder", None) == top.hwnd
    assert M.find_window("Finder", "Hidden") is None  # message-only: not found by FindWindow
    assert M.find_window("NoSuchClass") is None
    assert M.find_window_ex(M.HWND_MESSAGE, None, "FINDER", None) == hidden.hwnd
    assert M.find_window_ex(M.HWND_MESSAGE, hidden.hwnd, "Finder", None) is None  # nothing after it
    assert M.find_window_ex(None, None, "Finder", None) == top.hwnd
    windows = M.enum_windows()
    assert top.hwnd in windows and hidden.hwnd not in windows
    assert M.window_info(hidden.hwnd).message_only
    assert M.send_message(top.hwnd, WM_USER + 8, 0, b"Renamed Now") == 1
    assert M.find_window(None, "renamed now") == top.hwnd
    assert M.find_window(None, "Top One") is None
    assert M.window_info(top.hwnd).title == "Renamed Now"
    for c in (top, hidden):
        M.post_message(c.hwnd, WM_USER + 3, 0)
        assert _exit_code(c) == 0


def test_broadcast_reaches_top_level_windows_only(children: list[Child], wclass: Any) -> None:
    name, seen = wclass
    mine = M.create_window(name, "mine")
    top = child(children)
    hidden = child(children, message_only="1")
    M.post_message(M.HWND_BROADCAST, WM_USER + 1, 4242)
    assert M.send_message(M.HWND_BROADCAST, WM_USER + 1, 4343) == 0
    assert M.send_message_timeout(M.HWND_BROADCAST, WM_USER + 1, 4444, 0, M.SMTO_NORMAL, 5.0) == 0
    assert (mine.hwnd, WM_USER + 1, 4343, 0) in seen  # our own window, called directly
    M.pump_waiting_messages()
    assert (mine.hwnd, WM_USER + 1, 4242, 0) in seen
    M.post_message(top.hwnd, WM_USER + 2)
    assert sorted(top.report("seen")) == [4242, 4343, 4444]
    M.post_message(hidden.hwnd, WM_USER + 2)
    assert hidden.report("seen") == []
    for c in (top, hidden):
        M.post_message(c.hwnd, WM_USER + 3, 0)
        assert _exit_code(c) == 0


def test_register_window_message_agrees_across_processes(children: list[Child]) -> None:
    msg = M.register_window_message("WinIPC.Test.Registered")
    assert 0xC000 <= msg <= 0xFFFF
    assert M.register_window_message("winipc.test.REGISTERED") == msg
    assert M.register_window_message("WinIPC.Test.Other") != msg
    p = run_py("from winipc import messages as M; print(M.register_window_message('winipc.test.registered'))")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert int(out) == msg
    c = child(children)  # registered the same name at start; answers 77 to it
    assert M.send_message(c.hwnd, msg) == 77
    M.post_message(c.hwnd, WM_USER + 3, 0)
    assert _exit_code(c) == 0


def test_message_queue_is_waitable_with_an_event(wclass: Any) -> None:
    name, _seen = wclass
    me = M.create_window(name, "waiter")
    q = M.message_queue()
    with Event() as ev:
        assert wait_any([q, ev], 0) is None
        p = run_py(f"from winipc import messages as M; M.post_message({me.hwnd}, {WM_USER + 1}, 11, b'hi')")
        assert wait_any([q, ev], 10) == 0
        m = M.get_message(timeout=5)
        assert (m.hwnd, m.message, m.wparam, m.lparam) == (me.hwnd, WM_USER + 1, 11, b"hi")
        assert (m.sender_pid, m.sender_uid) == (p.pid, os.getuid())
        assert wait_any([q, ev], 0) is None
        ev.set()
        assert wait_any([q, ev], 5) == 1
        _out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err


# --------------------------------------------------------------------------- WM_COPYDATA


def test_send_copydata_sizes_identity_and_read_only_view(children: list[Child], wclass: Any) -> None:
    name, _seen = wclass
    me = M.create_window(name, "sender")
    c = child(children)
    for size in (0, 1, 64 * 1024, 64 * 1024 + 1, 64 * 1024 * 1024):
        data = random.randbytes(size)
        crc = zlib.crc32(data)
        assert M.send_copydata(c.hwnd, size + 3, data, sender=me, timeout=30) == crc
        seen = c.report("copydata", 30)
        assert seen == {"len": size, "crc": crc, "dwdata": size + 3, "wparam": me.hwnd, "sender_hwnd": me.hwnd,
                        "sender_pid": os.getpid(), "sender_uid": os.getuid(), "readonly": True,
                        "write_refused": size > 0}, size
    big = mmap.mmap(-1, M.MAX_COPYDATA + 1)  # not touched: refused before it is read
    try:
        with pytest.raises(W.InvalidParameter, match="data"):
            M.send_copydata(c.hwnd, 0, big)
    finally:
        big.close()
    with pytest.raises(W.InvalidParameter, match="dwdata"):
        M.send_copydata(c.hwnd, -1, b"x")
    M.post_message(c.hwnd, WM_USER + 3, 0)
    assert _exit_code(c) == 0


def test_copydata_to_a_window_of_the_same_thread_is_called_directly(wclass: Any) -> None:
    name, seen = wclass
    me = M.create_window(name, "self")
    assert M.send_copydata(me, 9, bytearray(b"abc"), sender=me) == 0
    hwnd, msg, wparam, cd = seen[-1]
    assert (hwnd, msg, wparam, cd.dwdata, cd.sender_pid) == (me.hwnd, M.WM_COPYDATA, me.hwnd, 9, os.getpid())
    with pytest.raises(ValueError):  # released after the call, as the data is only valid during it
        bytes(cd.data)


# --------------------------------------------------------------------------- arguments, classes, threads


def test_integer_ranges_are_checked(wclass: Any) -> None:
    name, _seen = wclass
    me = M.create_window(name, "ranges")
    for kwargs, arg in (
        ({"msg": -1}, "msg"), ({"msg": 2**32}, "msg"), ({"wparam": -1}, "wparam"), ({"wparam": 2**64}, "wparam"),
        ({"lparam": 2**63}, "lparam"), ({"lparam": -(2**63) - 1}, "lparam"), ({"lparam": "text"}, "lparam"),
        ({"msg": True}, "msg"),
    ):
        args: dict[str, Any] = {"msg": WM_USER, "wparam": 0, "lparam": 0, **kwargs}
        with pytest.raises(W.InvalidParameter, match=arg) as ei:
            M.send_message(me, args["msg"], args["wparam"], args["lparam"])
        assert ei.value.winerror == 87
        with pytest.raises(W.InvalidParameter, match=arg):
            M.post_message(me, args["msg"], args["wparam"], args["lparam"])
    with pytest.raises(W.InvalidParameter, match="lparam"):
        M.post_message(me, WM_USER, 0, bytes(M.MAX_POSTED_BYTES + 1))
    with pytest.raises(W.InvalidParameter, match="flags"):
        M.send_message_timeout(me, WM_USER, 0, 0, 0x4000, 1.0)
    with pytest.raises(W.InvalidParameter, match="timeout"):
        M.send_message_timeout(me, WM_USER, 0, 0, M.SMTO_NORMAL, -1)
    with pytest.raises(W.InvalidParameter, match="exit_code"):
        M.post_quit_message(2**31)
    assert M.send_message(me, WM_USER, 2**64 - 1, -(2**63)) == 2**63 - 1  # the limits themselves pass
    me.wndproc = lambda h, m, w, lp: 2**63
    with pytest.raises(W.InvalidParameter, match="LRESULT"):
        M.send_message(me, WM_USER)


def test_window_classes_and_thread_ownership(wclass: Any) -> None:
    name, seen = wclass
    with pytest.raises(W.ClassAlreadyExists) as e1:
        M.register_class(name.upper())
    assert e1.value.winerror == 1410
    with pytest.raises(W.ClassDoesNotExist) as e2:
        M.create_window("NoSuchClass")
    assert e2.value.winerror == 1407
    with pytest.raises(W.ClassDoesNotExist) as e3:
        M.unregister_class("NoSuchClass")
    assert e3.value.winerror == 1411
    win = M.create_window(name, "owned")
    assert seen[0] == (win.hwnd, M.WM_CREATE, 0, 0)
    with pytest.raises(W.ClassHasWindows) as e4:
        M.unregister_class(name)
    assert e4.value.winerror == 1412
    errors: list[BaseException] = []
    quit_msg: list[M.Message] = []

    def other() -> None:
        try:
            win.destroy()
        except BaseException as exc:
            errors.append(exc)
        M.post_quit_message(4)  # a thread without windows still has a loop
        quit_msg.append(M.get_message(timeout=5))

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert isinstance(errors[0], W.AccessDenied)
    assert (quit_msg[0].message, quit_msg[0].wparam, quit_msg[0].hwnd) == (M.WM_QUIT, 4, 0)
    assert M.is_window(win)
    win.destroy()
    assert seen[-1] == (win.hwnd, M.WM_DESTROY, 0, 0)
    assert not M.is_window(win.hwnd) and win.closed
    win.destroy()  # twice is harmless


def test_peek_filters_noremove_and_quit(wclass: Any) -> None:
    name, seen = wclass
    a = M.create_window(name, "a")
    b = M.create_window(name, "b")
    M.post_message(a, WM_USER + 10, 1)
    M.post_message(b, WM_USER + 20, 2)
    M.post_quit_message(-2)
    m = M.peek_message(b, remove=M.PM_NOREMOVE)
    assert m is not None and (m.hwnd, m.wparam) == (b.hwnd, 2)
    m = M.peek_message(None, WM_USER + 20, WM_USER + 30)
    assert m is not None and m.message == WM_USER + 20
    assert M.peek_message(b) is None  # taken; WM_QUIT is not returned for a window filter
    assert M.dispatch_message(M.get_message(timeout=1)) == 0
    assert seen[-1] == (a.hwnd, WM_USER + 10, 1, 0)
    assert M.run(timeout=1) == -2  # WM_QUIT last, with the exit code
    with pytest.raises(W.WaitTimeout):
        M.get_message(timeout=0.05)
    assert not M.translate_message(m)


def test_destroy_hooks_run_and_windows_go_at_exit() -> None:
    p = run_py("""
        from winipc import messages as M
        def proc(h, m, w, l):
            if m == M.WM_DESTROY:
                print("destroy", hex(h), flush=True)
            return 0
        M.register_class("Exiting", proc)
        M.add_destroy_hook(lambda h: print("hook", hex(h), flush=True))
        w = M.create_window("Exiting", "bye")
        print("hwnd", hex(w.hwnd), flush=True)
    """)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    lines = out.split()
    hwnd = lines[1]
    assert lines[2:] == ["hook", hwnd, "destroy", hwnd]  # the hook first, then WM_DESTROY
    assert not M.is_window(int(hwnd, 16))


# --------------------------------------------------------------------------- a second OS user


def test_a_second_user_cannot_send_to_an_owner_only_window(shared_root: tuple[Path, Path], wclass: Any) -> None:
    import xuser

    user = xuser.second_user()
    _root, src = shared_root
    try:
        import msgpack

        shutil.copytree(os.path.dirname(msgpack.__file__), src / "msgpack")
    except ImportError:
        pass
    name, seen = wclass
    private = M.create_window(name, "private")
    shared = M.create_window(name, "shared", security=SecurityAttributes(allow={f"user:{xuser.USER}": "c"}))
    query_only = M.create_window(name, "query only", security=SecurityAttributes(allow={f"user:{xuser.USER}": "q"}))
    code = f"""
import json, os, socket, time
from winipc import errors as W, messages as M
from winipc._wire import messages as wire
out = {{}}
out["find_private"] = M.find_window(None, "private")
out["find_shared"] = M.find_window(None, "shared")
for key, h in (("private", {private.hwnd}), ("query", {query_only.hwnd})):
    try:
        M.send_message(h, {WM_USER}, 1, 2)
        out[key] = "sent"
    except W.WinIPCError as e:
        out[key] = e.winerror
out["shared"] = M.send_message({shared.hwnd}, {WM_USER}, 20, 22)
M.post_message({shared.hwnd}, {WM_USER + 1}, 5)
# the window itself checks the peer: bypass our own check and speak the wire directly
path, rec = M._queue.lookup({query_only.hwnd})
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(os.path.join(path, "wnd.sock"))
try:
    s.send(wire.encode_message(wire.MessageFrame(wire.KIND_SEND, 1, {query_only.hwnd}, {WM_USER}, 3, 4)))
except (BrokenPipeError, ConnectionResetError):
    pass  # refused and closed already; its REFUSED waits for us
s.settimeout(20)
for _ in range(2):
    try:
        out["raw"] = type(wire.decode(s.recv(100))).__name__
        break
    except ConnectionResetError:
        continue
print(json.dumps(out))
"""
    env = {"WINIPC_ROOT": os.environ["WINIPC_ROOT"], "PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([xuser.python_for(user), "-c", code], user=user.pw_uid, group=user.pw_gid,
                            extra_groups=[], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd="/")
    q = M.message_queue()
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:  # our windows answer while it runs
        M.pump_waiting_messages()
        wait_any([q], 0.05)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    res = json.loads(out)
    assert res == {"find_private": None, "find_shared": shared.hwnd, "private": 5, "query": 5, "shared": 42,
                   "raw": "RefusedFrame"}, res
    M.pump_waiting_messages()
    assert (shared.hwnd, WM_USER + 1, 5, 0) in seen
    assert not any(h == private.hwnd and m >= WM_USER for h, m, _w, _l in seen)
    assert not any(h == query_only.hwnd and m >= WM_USER for h, m, _w, _l in seen)


def test_unsealed_copydata_memory_is_refused_by_the_receiver(children: list[Child]) -> None:
    import socket

    from winipc._wire import messages as wire

    c = child(children)
    path, _rec = M._queue.lookup(c.hwnd)
    size = wire.INLINE_MAX + 10
    fd = os.memfd_create("unsealed", os.MFD_CLOEXEC)  # writable by the sender while the receiver reads
    s = B.connect_unix(os.path.join(path, "wnd.sock"), socket.SOCK_SEQPACKET)
    try:
        os.ftruncate(fd, size)
        frame = wire.MessageFrame(wire.KIND_SEND, 9, c.hwnd, M.WM_COPYDATA, 0, 0, wire.PARAM_COPYDATA, 1, size, True,
                                  time.time())
        socket.send_fds(s, [wire.encode_message(frame)], [fd])
        s.settimeout(10)
        reply = wire.decode(s.recv(100))
        assert reply == wire.ReplyFrame(9, W.ERROR_INVALID_DATA, 0)  # refused before the procedure ran
    finally:
        s.close()
        os.close(fd)
    assert M.send_copydata(c.hwnd, 1, b"z" * size, timeout=10) == zlib.crc32(b"z" * size)  # the sealed way works
    assert c.report("copydata")["len"] == size  # and is the first WM_COPYDATA it saw
    M.post_message(c.hwnd, WM_USER + 3, 0)
    assert _exit_code(c) == 0
