"""File mappings and shared sections, with real processes on both ends.

Every test also checks that no /dev/shm file of the names it used is left behind (the
namespace root is checked by conftest).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import winipc
from winipc import SecurityAttributes, pipes
from winipc import errors as W
from winipc._core import namespace
from winipc._core.names import parse
from winipc.cli._map import byte_count, hexdump, map_group
from winipc.mapping import (
    ALLOCATION_GRANULARITY,
    FILE_MAP_COPY,
    FILE_MAP_READ,
    FILE_MAP_WRITE,
    PAGE_READONLY,
    PAGE_READWRITE,
    PAGE_WRITECOPY,
    FileMapping,
    SharedSection,
)
from xuser import USER
from xuser import python_for as _python_for
from xuser import second_user as _second_user

from conftest import SRC, run_py, wait_line

REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
SHM = "/dev/shm"
_NAMES: list[str] = []


def N(name: str) -> str:
    """A name this test uses (its /dev/shm files are checked at the end)."""
    _NAMES.append(name)
    return name


def shm_files(name: str) -> list[str]:
    sid = parse(name).storage_id
    return sorted(f for f in os.listdir(SHM) if f.startswith("winipc.") and f".{sid}." in f)


@pytest.fixture(autouse=True)
def no_shm_left() -> Iterator[None]:
    _NAMES.clear()
    yield
    left = [f for n in _NAMES for f in shm_files(n)]
    assert not left, f"/dev/shm files left behind: {left}"


class Pair(ctypes.Structure):
    _fields_ = [
        ("a", ctypes.c_int64),
        ("b", ctypes.c_int64),
        ("tag", ctypes.c_char * 8),
        ("hist", ctypes.c_uint32 * 4),
        ("ratio", ctypes.c_double),
    ]


PAIR_SRC = """
import ctypes
class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int64), ("b", ctypes.c_int64), ("tag", ctypes.c_char * 8),
                ("hist", ctypes.c_uint32 * 4), ("ratio", ctypes.c_double)]
"""


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


# --------------------------------------------------------------------------- create / open


def test_create_open_already_exists_across_processes() -> None:
    name = N("Local\\wm-basic")
    child = run_py(
        """
        import sys
        from winipc.mapping import FileMapping
        m = FileMapping.create(sys.argv[1], 200_000)
        v = m.map_view()
        v[0:5] = b"hello"
        print("ready", m.already_exists, m.size, flush=True)
        sys.stdin.readline()
        print("child sees", bytes(v[70_000:70_005]).decode(), flush=True)
        """,
        name,
        stdin=subprocess.PIPE,
    )
    try:
        assert wait_line(child, "ready") == "ready False 200000"
        again = FileMapping.create("local\\WM-BASIC", 10, PAGE_READONLY)  # case-insensitive
        assert again.already_exists and again.size == 200_000 and again.protect == PAGE_READWRITE
        with again, FileMapping.open(name) as opened, opened.map_view(65536) as view:
            assert not opened.already_exists and opened.name == "Local\\wm-basic"
            assert bytes(again.map_view(0, 5)) == b"hello"
            view[70_000 - 65536 : 70_005 - 65536] = b"world"  # written here, read there
            assert child.stdin is not None
            child.stdin.write("\n")
            child.stdin.flush()
            assert wait_line(child, "child sees") == "child sees world"
            assert len(shm_files(name)) == 1
            child.wait(10)
            assert bytes(again.map_view()[0:5]) == b"hello"  # we still hold it
    finally:
        _stop(child)
    with pytest.raises(W.FileNotFound) as info:
        FileMapping.open(name)
    assert info.value.winerror == 2


def test_type_clash_is_invalid_handle(tmp_path: Path) -> None:
    name = N("wm-clash")
    ref, created = namespace.create(parse(name), "event", {}, SecurityAttributes())
    try:
        assert created
        (tmp_path / "f").write_bytes(b"x" * 100)
        for attempt in (
            lambda: FileMapping.create(name, 4096),
            lambda: FileMapping.open(name),
            lambda: FileMapping.from_file(tmp_path / "f", name=name),
            lambda: SharedSection.attach(name, Pair),
        ):
            with pytest.raises(W.InvalidHandle) as info:
                attempt()
            assert info.value.winerror == 6
    finally:
        ref.release()


def test_argument_errors_name_the_limit() -> None:
    with pytest.raises(W.InvalidParameter, match="size must be 1"):
        FileMapping.create(N("wm-args"), 0)
    with pytest.raises(W.InvalidParameter, match="protect"):
        FileMapping.create(N("wm-args"), 10, 0x40)
    with pytest.raises(W.InvalidName):
        FileMapping.create("\\\\.\\pipe\\wm-args", 10)
    with FileMapping.create(N("wm-args"), 3 * ALLOCATION_GRANULARITY) as m:
        with pytest.raises(W.InvalidParameter, match="access"):
            m.map_view(access=0)
        with pytest.raises(W.MappedAlignment) as info:
            m.map_view(4096)
        assert info.value.winerror == 1132
        with pytest.raises(W.InvalidParameter, match="196608 bytes"):
            m.map_view(ALLOCATION_GRANULARITY, 2 * ALLOCATION_GRANULARITY + 1)
        with pytest.raises(W.InvalidParameter, match="196608 bytes"):
            m.map_view(3 * ALLOCATION_GRANULARITY)
        with m.map_view(2 * ALLOCATION_GRANULARITY) as tail:
            assert len(tail) == ALLOCATION_GRANULARITY and tail.offset == 2 * ALLOCATION_GRANULARITY
            with pytest.raises(W.InvalidParameter):
                tail.flush(10, ALLOCATION_GRANULARITY)
            tail.flush(10, 20)
    with pytest.raises(W.InvalidHandle):
        m.map_view()
    view = FileMapping.create(None, 10).map_view()
    view.close()
    with pytest.raises(W.InvalidHandle):
        view.flush()


# --------------------------------------------------------------------------- views


def test_read_only_view_cannot_be_written_and_the_os_enforces_it() -> None:
    name = N("wm-readonly")
    with FileMapping.create(name, 1 << 16) as m, m.map_view() as rw:
        rw[0:4] = b"KEEP"
        with m.map_view(access=FILE_MAP_READ) as ro:
            assert ro.readonly and memoryview(ro).readonly
            with pytest.raises(TypeError):
                memoryview(ro)[0] = 0x58
            with pytest.raises(TypeError):
                ro[0:4] = b"XXXX"
        with FileMapping.open(name, FILE_MAP_READ) as reader:
            with pytest.raises(W.AccessDenied) as info:
                reader.map_view(access=FILE_MAP_WRITE)
            assert info.value.winerror == 5
        # a process that bypasses Python's check and stores through the pointer faults
        child = run_py(
            """
            import ctypes, sys
            from winipc.mapping import FileMapping, FILE_MAP_READ
            v = FileMapping.open(sys.argv[1], FILE_MAP_READ).map_view()
            class Py_buffer(ctypes.Structure):
                _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                            ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                            ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                            ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                            ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                            ("internal", ctypes.c_void_p)]
            pb = Py_buffer()
            get = ctypes.pythonapi.PyObject_GetBuffer
            get.argtypes = [ctypes.py_object, ctypes.POINTER(Py_buffer), ctypes.c_int]
            assert get(v, ctypes.byref(pb), 0) == 0 and pb.readonly == 1
            print("storing", flush=True)
            ctypes.memset(pb.buf, 0x58, 4)
            print("stored", flush=True)
            """,
            name,
        )
        out, err = child.communicate(timeout=20)
        assert out.split() == ["storing"], err
        assert child.returncode in (-signal.SIGSEGV, -signal.SIGBUS), err
        assert rw[0:4] == b"KEEP"


def test_read_only_mapping_allows_read_and_copy_views_only() -> None:
    with FileMapping.create(N("wm-pro"), 4096, PAGE_READONLY) as m:
        assert not m.writable
        with pytest.raises(W.AccessDenied, match="PAGE_READONLY"):
            m.map_view(access=FILE_MAP_WRITE)
        with m.map_view() as default_view:
            assert default_view.readonly
        with m.map_view(access=FILE_MAP_COPY) as private:
            private[0:3] = b"abc"  # a private copy
            assert private[0:3] == b"abc"
        with m.map_view(access=FILE_MAP_READ) as view:
            assert view[0:3] == b"\0\0\0"


def test_views_keep_the_mapping_alive_after_every_handle_closes() -> None:
    name = N("wm-alive")
    child = run_py(
        """
        import sys
        from winipc.mapping import FileMapping
        m = FileMapping.create(sys.argv[1], 1 << 16)
        v = m.map_view()
        m.close()                      # only the view holds it now
        v[0:4] = b"DATA"
        print("ready", flush=True)
        sys.stdin.readline()
        v.close()
        print("closed", flush=True)
        sys.stdin.readline()
        """,
        name,
        stdin=subprocess.PIPE,
    )
    try:
        wait_line(child, "ready")
        (info,) = [o for o in namespace.list_objects() if o.name == "Local\\wm-alive"]
        assert info.type == "mapping" and info.handles == 1
        with FileMapping.open(name, FILE_MAP_READ) as m:
            view = m.map_view()
        assert view[0:4] == b"DATA"  # our view alone holds it now
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()
        wait_line(child, "closed")
        (info,) = [o for o in namespace.list_objects() if o.name == "Local\\wm-alive"]
        assert info.handles == 1
        assert len(shm_files(name)) == 1
        view.close()
        assert namespace.list_objects() == [] and shm_files(name) == []
    finally:
        _stop(child)


def test_kill_loop_reclaims_object_and_shm_file() -> None:
    """A holder SIGKILLed 20 times: nothing survives it, nothing of it is adopted."""
    name = N("wm-killed")
    code = """
        import sys
        from winipc.mapping import FileMapping
        m = FileMapping.create(sys.argv[1], 1 << 20)
        v = m.map_view()
        v[0:4] = b"DEAD"
        if sys.argv[2] == "view":
            m.close()
        print("ready", flush=True)
        sys.stdin.readline()
    """
    for i in range(20):
        child = run_py(code, name, "view" if i % 2 else "handle", stdin=subprocess.PIPE)
        try:
            wait_line(child, "ready")
            assert len(shm_files(name)) == 1
        finally:
            _stop(child)
        if i % 4 == 0:
            removed = namespace.clean()
            assert [r.name for r in removed] == ["Local\\wm-killed"]
            assert shm_files(name) == []
        else:
            with FileMapping.create(name, 4096) as m, m.map_view() as v:
                assert not m.already_exists and m.size == 4096 and v[0:4] == b"\0\0\0\0"
                assert len(shm_files(name)) == 1  # the dead one's file went with it
        assert namespace.list_objects() == [] and shm_files(name) == []


# --------------------------------------------------------------------------- files


def test_from_file_maps_the_file_and_others_open_it_by_name(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789" * 10)
    name = N("wm-file")
    with FileMapping.from_file(path, name=name) as m:
        assert m.size == 100 and m.file == str(path.resolve())
        with m.map_view() as v:
            v[0:5] = b"HELLO"
            v.flush()
        assert path.read_bytes()[:5] == b"HELLO"
        child = run_py(
            """
            import sys
            from winipc.mapping import FileMapping
            with FileMapping.open(sys.argv[1]) as m, m.map_view() as v:
                print("child", m.size, bytes(v[0:10]).decode(), flush=True)
                v[95:100] = b"WORLD"
            """,
            name,
        )
        out, err = child.communicate(timeout=20)
        assert out.strip() == "child 100 HELLO56789", err
    assert path.read_bytes()[95:] == b"WORLD"
    # size 0 of an empty file, growing read-only files: refused; read-write grows the file
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(W.InvalidParameter, match="empty"):
        FileMapping.from_file(empty)
    with pytest.raises(W.InvalidParameter, match="only PAGE_READWRITE"):
        FileMapping.from_file(path, 200, PAGE_READONLY)
    with FileMapping.from_file(empty, 70_000) as grown:
        assert grown.size == 70_000
    assert empty.stat().st_size == 70_000
    with pytest.raises(W.FileNotFound):
        FileMapping.from_file(tmp_path / "missing")
    with open(path, "rb") as fh, FileMapping.from_file(fh.fileno(), protect=PAGE_READONLY) as byfd:
        assert byfd.map_view()[0:5] == b"HELLO"


def test_copy_on_write_does_not_change_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cow.bin"
    path.write_bytes(b"original" * 8192)
    os.chmod(path, 0o400)  # read-only is enough for PAGE_WRITECOPY
    with FileMapping.from_file(path, protect=PAGE_WRITECOPY) as m:
        with pytest.raises(W.AccessDenied):
            m.map_view(access=FILE_MAP_WRITE)
        with m.map_view(access=FILE_MAP_COPY) as private, m.map_view(access=FILE_MAP_READ) as shared:
            private[0:8] = b"CHANGED!"
            private.flush()
            assert private[0:8] == b"CHANGED!"
            assert shared[0:8] == b"original"
    assert path.read_bytes() == b"original" * 8192


# --------------------------------------------------------------------------- handles


def test_unnamed_mapping_inherited_by_a_child() -> None:
    m = FileMapping.create(None, 1 << 16)
    assert m.name is None
    with m, m.map_view() as v:
        v[0:5] = b"hello"
        code = (
            "import sys, winipc, winipc.mapping\n"
            "m = winipc.inherited_handle(int(sys.argv[1]))\n"
            "v = m.map_view()\n"
            "assert bytes(v[0:5]) == b'hello'\n"
            "v[5:10] = b'world'\n"
            "print('child', m.size, flush=True)\n"
        )
        env = dict(os.environ, PYTHONPATH=SRC)
        proc = winipc.spawn(
            [sys.executable, "-c", code, str(int(m))], inherit=[m], stdout=subprocess.PIPE, env=env
        )
        out, _ = proc.popen.communicate(timeout=20)
        assert out.decode().strip() == "child 65536"
        assert v[0:10] == b"helloworld"


def test_named_mapping_inherited_keeps_it_alive_in_the_child() -> None:
    name = N("wm-inherit")
    m = FileMapping.create(name, 4096)
    m.map_view()[0:3] = b"abc"
    code = (
        "import sys, winipc, winipc.mapping\n"
        "m = winipc.inherited_handle(int(sys.argv[1]))\n"
        "print('ready', m.name, flush=True)\n"
        "sys.stdin.readline()\n"
        "print('child', bytes(m.map_view()[0:3]).decode(), flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = winipc.spawn(
        [sys.executable, "-c", code, str(int(m))], inherit=[m],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
    )
    try:
        assert proc.popen.stdout is not None and proc.popen.stdin is not None
        assert proc.popen.stdout.readline().decode().strip() == "ready Local\\wm-inherit"
        (info,) = namespace.list_objects()
        assert info.handles == 2  # the child took its own hold
        m.close()
        (info,) = namespace.list_objects()
        assert info.handles == 1
        proc.popen.stdin.write(b"\n")
        proc.popen.stdin.flush()
        assert proc.popen.stdout.readline().decode().strip() == "child abc"
        proc.wait(20)
    finally:
        proc.kill()
        proc.popen.communicate()
    assert namespace.list_objects() == []


def test_duplicated_over_a_pipe() -> None:
    pipe = "\\\\.\\pipe\\wm-dup"
    with pipes.PipeInstance(pipe) as inst, FileMapping.create(None, 4096) as m:
        m.map_view()[0:4] = b"DUPL"
        child = run_py(
            """
            import sys
            import winipc.mapping
            from winipc import pipes
            with pipes.connect(sys.argv[1]) as c:
                m = c.recv_handle(timeout=10)
                v = m.map_view()
                print("child", bytes(v[0:4]).decode(), flush=True)
                v[4:8] = b"ICAT"
                c.write(b"k")
            """,
            pipe,
        )
        inst.connect(timeout=10)
        inst.send_handle(m)
        assert inst.read(1, timeout=20) == b"k"
        out, err = child.communicate(timeout=20)
        assert out.strip() == "child DUPL", err
        assert m.map_view()[0:8] == b"DUPLICAT"


# --------------------------------------------------------------------------- shared sections


def test_shared_section_locked_updates_under_contention() -> None:
    name = N("wm-section")
    code = PAIR_SRC + """
import sys
from winipc.mapping import SharedSection
s = SharedSection.attach(sys.argv[1], Pair)
print("attached", s.created, flush=True)
sys.stdin.readline()
d = s.data
for i in range(2000):
    with s.lock() as abandoned:
        assert not abandoned
        a, b = d.a, d.b
        d.a = a + 1
        d.hist[i % 4] += 1
        d.b = b + 1
print("done", flush=True)
s.close()
"""
    with SharedSection.attach(name, Pair) as section:
        assert section.created and section.data.a == 0 and section.data.tag == b""
        section.data.tag = b"shared"
        workers = [run_py(code, name, stdin=subprocess.PIPE) for _ in range(2)]
        try:
            for w in workers:
                assert wait_line(w, "attached") == "attached False"
            for w in workers:
                assert w.stdin is not None
                w.stdin.write("go\n")
                w.stdin.flush()
            for w in workers:
                wait_line(w, "done", timeout=30)
        finally:
            for w in workers:
                _stop(w)
        with section.lock():
            assert section.data.a == 4000 and section.data.b == 4000
            assert sum(section.data.hist) == 4000 and section.data.tag == b"shared"
    assert namespace.list_objects() == []


def test_shared_section_abandoned_lock_timeout_and_layout_check() -> None:
    name = N("wm-abandon")
    holder = run_py(
        PAIR_SRC
        + """
import sys, time
from winipc.mapping import SharedSection
s = SharedSection.attach(sys.argv[1], Pair)
with s.lock():
    s.data.a = 7
    print("locked", flush=True)
    time.sleep(60)
""",
        name,
    )
    try:
        wait_line(holder, "locked")
        section = SharedSection.attach(name, Pair)
        with section:
            assert not section.created
            with pytest.raises(W.WaitTimeout) as info, section.lock(timeout=0.2):
                pass
            assert info.value.winerror == 258
            holder.kill()
            holder.wait(10)
            with section.lock(timeout=10) as abandoned:
                assert abandoned and section.data.a == 7
            with section.lock() as abandoned:
                assert not abandoned

            class Other(ctypes.Structure):
                _fields_ = [("a", ctypes.c_int32), ("b", ctypes.c_int64)]

            with pytest.raises(W.InvalidParameter, match="different layout"):
                SharedSection.attach(name, Other)
    finally:
        _stop(holder)
    with (
        FileMapping.create(N("wm-plain"), 100) as plain,
        pytest.raises(W.InvalidParameter, match="plain file mapping"),
    ):
        SharedSection.attach(plain.name or "", Pair)

    class WithPointer(ctypes.Structure):
        _fields_ = [("p", ctypes.c_char_p)]

    with pytest.raises(W.InvalidParameter, match="pointers"):
        SharedSection.attach(N("wm-pointer"), WithPointer)


# --------------------------------------------------------------------------- numpy


def test_ndarray_without_a_copy() -> None:
    try:
        import numpy as np
    except ImportError:
        if REQUIRE:
            pytest.fail("numpy is required (WINIPC_REQUIRE_ALL)")
        pytest.skip("numpy is not installed")
    with FileMapping.create(N("wm-numpy"), 1 << 16) as m, m.map_view() as v:
        arr = v.ndarray(np.float64, (16, 16))
        arr[3, 4] = 2.5
        assert np.frombuffer(v, np.float64, 1, (3 * 16 + 4) * 8)[0] == 2.5
        with pytest.raises(W.InvalidParameter, match="65536 bytes"):
            v.ndarray(np.float64, (100, 100))
        del arr
        with m.map_view(access=FILE_MAP_READ) as ro:
            frozen = ro.ndarray("f8")
            assert frozen.shape == (8192,) and frozen[3 * 16 + 4] == 2.5
            with pytest.raises(ValueError):
                frozen[0] = 1.0
            del frozen


# --------------------------------------------------------------------------- second user


def _as_user(user: pwd.struct_passwd, code: str, root: Path, src: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"WINIPC_ROOT": str(root), "PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [_python_for(user), "-c", code, *args], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        env=env, capture_output=True, text=True, timeout=30, cwd="/",
    )


PROBE = r"""
import os, sys
from winipc import errors as W
from winipc.mapping import FileMapping, FILE_MAP_READ, FILE_MAP_WRITE
name, shm = sys.argv[1], sys.argv[2]
for access, label in ((FILE_MAP_READ, "read"), (FILE_MAP_WRITE, "write")):
    try:
        with FileMapping.open(name, access) as m:
            print(label, bytes(m.map_view(access=access)[0:6]).decode())
    except W.AccessDenied as e:
        print(label, "denied", e.winerror)
for flags, label in ((os.O_RDONLY, "file-read"), (os.O_RDWR, "file-write")):
    try:
        os.close(os.open(shm, flags))
        print(label, "opened")
    except PermissionError:
        print(label, "denied")
"""


def test_second_user_refused_on_an_owner_only_mapping(shared_root: tuple[Path, Path]) -> None:
    user = _second_user()
    root, src = shared_root
    name = N("Global\\wm-guarded")
    with FileMapping.create(name, 4096) as m, m.map_view() as v:
        v[0:6] = b"SECRET"
        (shm,) = shm_files(name)
        out = _as_user(user, PROBE, root, src, name, os.path.join(SHM, shm))
    assert out.stdout.split("\n")[:4] == [
        "read denied 5", "write denied 5", "file-read denied", "file-write denied"
    ], out.stderr


def test_second_user_allowed_to_read_only(shared_root: tuple[Path, Path]) -> None:
    user = _second_user()
    root, src = shared_root
    name = N("Global\\wm-readers")
    sec = SecurityAttributes(allow=[(f"user:{USER}", "r")])
    with FileMapping.create(name, 4096, security=sec) as m, m.map_view() as v:
        v[0:6] = b"PUBLIC"
        (shm,) = shm_files(name)
        out = _as_user(user, PROBE, root, src, name, os.path.join(SHM, shm))
    assert out.stdout.split("\n")[:4] == [
        "read PUBLIC", "write denied 5", "file-read opened", "file-write denied"
    ], out.stderr


SQUAT = r"""
import fcntl, json, os, struct, sys
d, shm = sys.argv[1], sys.argv[2]
os.mkdir(d, 0o755)
open(shm, "wb").write(b"\0" * 4096)
os.chmod(shm, 0o666)
rec = {"v": 1, "type": "mapping", "name": "wm-squat", "owner": os.getuid(),
       "creator_pid": os.getpid(), "created": 0,
       "attrs": {"backing": "memory", "size": 4096, "protect": 4,
                 "shm_files": [os.path.basename(shm)]},
       "security": {"allow": [["everyone", -1, 15]], "deny": []}}
open(os.path.join(d, "record"), "w").write(json.dumps(rec))
h = open(os.path.join(d, "holders"), "w")
fcntl.fcntl(h.fileno(), fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 1, 1, 0))
print("squatting", flush=True)
sys.stdin.readline()
"""


def test_pre_created_foreign_object_is_refused(shared_root: tuple[Path, Path]) -> None:
    user = _second_user()
    root, src = shared_root
    name = N("Global\\wm-squat")
    sid = parse(name).storage_id
    path = root / sid
    shm = os.path.join(SHM, f"winipc.{user.pw_uid}.{sid}.0123456789abcdef")
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [_python_for(user), "-c", SQUAT, str(path), shm], user=user.pw_uid, group=user.pw_gid,
        extra_groups=[], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "squatting"
        with pytest.raises(W.AccessDenied, match="never adopts"):
            FileMapping.create(name, 4096)
        with pytest.raises(W.AccessDenied, match="never adopts"):
            SharedSection.attach(name, Pair)
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()
        shutil.rmtree(path, ignore_errors=True)
        if os.path.exists(shm):
            os.unlink(shm)


# --------------------------------------------------------------------------- command line, bench


def test_cli_create_hold_dump_write() -> None:
    name = N("wm-cli")
    runner = CliRunner()
    result = runner.invoke(map_group, ["create", name, "4K"])
    assert result.exit_code == 0 and "--hold" in result.output
    holder = run_py("from winipc.cli._map import map_group; map_group()", "create", name, "128K", "--hold")
    try:
        assert wait_line(holder, "holding") == "holding Local\\wm-cli 131072"
        result = runner.invoke(map_group, ["write", name, "hello world", "--offset", "70000"])
        assert result.exit_code == 0, result.output
        result = runner.invoke(map_group, ["write", name, "00 ff", "--hex"])
        assert result.exit_code == 0, result.output
        result = runner.invoke(map_group, ["dump", name, "--offset", "69998", "--length", "16"])
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [
            "0001116e  00 00 68 65 6c 6c 6f 20  77 6f 72 6c 64 00 00 00  |..hello world...|",
            "0001117e",
        ]
        head = runner.invoke(map_group, ["dump", name, "--length", "48"]).stdout.splitlines()
        assert head == [
            "00000000  00 ff 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|",
            "00000010  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|",
            "*",
            "00000030",
        ]
        result = runner.invoke(map_group, ["write", name, "x", "--offset", "1M"])
        assert result.exit_code == 2 and "131072 bytes" in result.output
        holder.send_signal(signal.SIGTERM)
        _out, err = holder.communicate(timeout=10)
        assert holder.returncode == 0, err
    finally:
        _stop(holder)
    result = runner.invoke(map_group, ["dump", name])
    assert result.exit_code == 1 and "ERROR_FILE_NOT_FOUND" in result.output
    assert byte_count("0x10") == 16 and byte_count("2MiB") == 2 << 20
    assert list(hexdump(b"")) == ["00000000"]


def test_bench_mapping_against_memcpy() -> None:
    from winipc.bench import registry
    from winipc.bench.report import build_document
    from winipc.bench.runner import QUICK, Runner

    before = {s.name for s in registry.all_scenarios()}
    from winipc.bench import scenarios_mapping

    try:
        budget = dataclasses.replace(QUICK, round_bytes=4 << 20)
        run = Runner([scenarios_mapping.MAPPING, scenarios_mapping.MEMCPY], budget=budget).run()
        doc = build_document(run, registry.all_scenarios())
        assert doc["verified"] is True
        cells = {(r["scenario"], r["metric"]) for r in doc["results"]}
        assert {s for s, _ in cells} == {"winipc-mapping", "memcpy-limit"}
        assert {m for s, m in cells if s == "winipc-mapping"} == {"tput-64k", "tput-1m"}
        # the limit also measures tput-16m, kept for the scenarios that carry 16 MiB units
        assert {m for s, m in cells if s == "memcpy-limit"} == {"tput-64k", "tput-1m", "tput-16m"}
        for r in doc["results"]:
            assert r["figures"]["rate"]["value"] > 0
            rate = r["figures"]["rate"]
            assert rate["limit"] == "memcpy-limit" and rate["ratio_to_limit"] > 0
    finally:
        for s in (scenarios_mapping.MAPPING, scenarios_mapping.MEMCPY):
            if s.name not in before:
                registry.unregister(s.name)


def test_bench_memcpy_limit_survives_many_rounds() -> None:
    """Each round's acknowledgement from the worker is read: 400 rounds on one
    connection (more than a socket holds of unread one-byte writes, about 280) end."""
    from winipc.bench import registry
    from winipc.bench.report import build_document
    from winipc.bench.runner import QUICK, Runner

    before = {s.name for s in registry.all_scenarios()}
    from winipc.bench import scenarios_mapping

    try:
        budget = dataclasses.replace(
            QUICK, round_bytes=64 << 10, tput_seconds=0.0, tput_min_rounds=400, tput_max_rounds=400
        )
        metric = registry.metric("tput-64k")
        run = Runner(
            [scenarios_mapping.MEMCPY], budget=budget, metrics=[metric], placement="same-core"
        ).run()
        doc = build_document(run, registry.all_scenarios())
        assert doc["verified"] is True
        [result] = doc["results"]
        assert result["scenario"] == "memcpy-limit" and result["figures"]["rate"]["value"] > 0
    finally:
        if scenarios_mapping.MEMCPY.name not in before:
            registry.unregister(scenarios_mapping.MEMCPY.name)
