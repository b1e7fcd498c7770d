"""The machine-wide atom table (RegisterWindowMessage / RegisterClipboardFormat ids)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from winipc import errors as W
from winipc._core import atoms

from conftest import child_env

ADD = "import sys; from winipc._core import atoms; print(*[atoms.add(n) for n in sys.argv[1:]])"


def _in_child(*names: str) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", ADD, *names], env=child_env(), capture_output=True, text=True,
        timeout=30, check=True,
    )
    return [int(x) for x in out.stdout.split()]


def test_same_id_in_every_process_case_insensitive() -> None:
    mine = atoms.add("WinIPC_Test_Message")
    assert atoms.MIN_ATOM <= mine <= atoms.MAX_ATOM
    assert _in_child("winipc_test_message", "WINIPC_TEST_MESSAGE") == [mine, mine]
    assert atoms.add("winipc_TEST_message") == mine
    assert atoms.name_of(mine) == "WinIPC_Test_Message"  # the first spelling stays
    assert atoms.find("WINIPC_test_MESSAGE") == mine


def test_distinct_strings_get_distinct_ids() -> None:
    names = [f"msg-{i}" for i in range(300)]
    ids = [atoms.add(n) for n in names]
    assert len(set(ids)) == len(names)
    assert _in_child(*names[:50]) == ids[:50]
    assert [atoms.name_of(a) for a in ids] == names


def test_a_taken_candidate_sends_the_search_on(winipc_root: Path) -> None:
    name = "collide-me"
    first = atoms._candidates(name)[0]
    folder = winipc_root / "atoms"
    folder.mkdir(mode=0o1777, exist_ok=True)
    (folder / f"{first:04x}").write_text("someone-else")
    got = atoms.add(name)
    assert got == atoms._candidates(name)[1]
    assert atoms.name_of(first) == "someone-else"
    assert _in_child(name) == [got]


def test_concurrent_registration_agrees() -> None:
    names = [f"race-{i}" for i in range(40)]
    procs = [
        subprocess.Popen([sys.executable, "-c", ADD, *names], env=child_env(),
                         stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] == outs[2] == outs[3]
    assert len(set(outs[0])) == len(names)


def test_table_is_sticky_and_entries_readable(winipc_root: Path) -> None:
    atom = atoms.add("modes")
    folder = winipc_root / "atoms"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o1777
    entry = folder / f"{atom:04x}"
    assert stat.S_IMODE(entry.stat().st_mode) == 0o644
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp.")]


@pytest.mark.parametrize("bad", ["", "x" * 256, "a\0b", 5, None])
def test_bad_names(bad: object) -> None:
    with pytest.raises(W.InvalidParameter) as e:
        atoms.add(bad)  # type: ignore[arg-type]
    assert e.value.winerror == 87 and "name" in str(e.value)


@pytest.mark.parametrize("bad", [0, 0xBFFF, 0x10000, True, "0xc000"])
def test_bad_atoms(bad: object) -> None:
    with pytest.raises(W.InvalidParameter):
        atoms.name_of(bad)  # type: ignore[arg-type]


def test_unknown_atom_and_find() -> None:
    assert atoms.find("never-added") is None
    free = atoms._candidates("never-added")[0]
    with pytest.raises(W.InvalidParameter, match="not in the atom table"):
        atoms.name_of(free)
    assert os.path.isdir(os.path.join(os.environ["WINIPC_ROOT"], "atoms"))
