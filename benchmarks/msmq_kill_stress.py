"""Stress: SIGKILL producers and consumers of a local queue 1,000 times (the suite does 200).

    python benchmarks/msmq_kill_stress.py [--kills 1000] [--seed N]

Runs in a temporary WINIPC_ROOT; exits non-zero on any lost acknowledged send, any
duplicated message or any integrity problem (see tests/msmq_kill.py for the protocol).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="winipc-kill-"))
    os.environ["WINIPC_ROOT"] = str(base / "root")
    (base / "root").mkdir(mode=0o700)
    from msmq_kill import run_kill_cycles

    t = time.monotonic()
    try:
        books = run_kill_cycles(args.kills, base, seed=args.seed)
    except AssertionError as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{books['kills']} kills in {time.monotonic() - t:.1f} s: {books['acknowledged']} acknowledged sends, "
          f"{books['stored']} messages stored, none lost, none duplicated, integrity clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
