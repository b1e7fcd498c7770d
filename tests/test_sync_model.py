"""Semaphores and events against a reference model, operated from two processes at random.

Each step runs in this process or in a long-lived worker process (chosen by hypothesis)
on objects both hold; every result (previous counts, TooManyPosts, wait(0), is_set,
wait_any's index) is compared with a plain Python model, and the counts and states
are checked from this process after every step.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from test_sync_helpers import Worker, leftovers
from winipc import errors as W
from winipc.sync import Event, Semaphore, wait_all, wait_any

WHO = st.sampled_from(["here", "there"])
_names = itertools.count()


@dataclass
class SemModel:
    count: int
    maximum: int


@dataclass
class EvModel:
    signaled: bool
    manual: bool


def _outcome(fn: Any) -> Any:
    """A result or the winerror it raised, so both sides compare alike."""
    try:
        return ("ok", fn())
    except W.WinIPCError as exc:
        return ("err", exc.winerror)


class SyncMachine(RuleBasedStateMachine):
    worker: Worker  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.here: dict[str, Any] = {}
        self.model: dict[str, Any] = {}

    @initialize(
        s0=st.tuples(st.integers(1, 4), st.integers(0, 4)),
        s1=st.tuples(st.integers(1, 2), st.integers(0, 2)),
        e0=st.booleans(),
        e1=st.booleans(),
    )
    def create(self, s0: tuple[int, int], s1: tuple[int, int], e0: bool, e1: bool) -> None:
        run = next(_names)
        specs = [
            ("s0", "Semaphore", [min(s0[1], s0[0]), s0[0]], {}),
            ("s1", "Semaphore", [min(s1[1], s1[0]), s1[0]], {}),
            ("e0", "Event", [], {"manual_reset": True, "initial_state": e0}),
            ("e1", "Event", [], {"manual_reset": False, "initial_state": e1}),
        ]
        for key, cls, args, kw in specs:
            name = rf"Local\model-{run}-{key}"
            obj: Any = Semaphore(name, *args) if cls == "Semaphore" else Event(name, **kw)
            self.here[key] = obj
            self.worker.call("open", cls=cls, id=key, args=[name])
            if cls == "Semaphore":
                self.model[key] = SemModel(args[0], args[1])
            else:
                self.model[key] = EvModel(kw["initial_state"], kw["manual_reset"])

    def teardown(self) -> None:
        for key, obj in self.here.items():
            obj.close()
            try:
                self.worker.call("close", id=key)
            except Exception:
                pass

    # ------------------------------------------------------------------ running a step
    def _do(self, who: str, key: str, method: str, *args: Any) -> Any:
        if who == "here":
            return _outcome(lambda: getattr(self.here[key], method)(*args))
        reply = self.worker.ask("call", id=key, method=method, args=list(args))
        return ("err", reply["winerror"]) if "err" in reply else ("ok", reply["ok"])

    def _take(self, key: str) -> bool:
        """The model of one wait(0) on ``key``."""
        m = self.model[key]
        if isinstance(m, SemModel):
            if m.count:
                m.count -= 1
                return True
            return False
        if m.signaled:
            if not m.manual:
                m.signaled = False
            return True
        return False

    def _signaled(self, key: str) -> bool:
        m = self.model[key]
        return m.count > 0 if isinstance(m, SemModel) else m.signaled

    # ------------------------------------------------------------------ semaphores
    @rule(who=WHO, key=st.sampled_from(["s0", "s1"]), n=st.integers(1, 4))
    def release(self, who: str, key: str, n: int) -> None:
        m = self.model[key]
        got = self._do(who, key, "release", n)
        if m.count + n > m.maximum:
            assert got == ("err", 298), got  # TooManyPosts, count unchanged
        else:
            assert got == ("ok", m.count), got  # the previous count
            m.count += n

    @rule(who=WHO, key=st.sampled_from(["s0", "s1", "e0", "e1"]))
    def wait0(self, who: str, key: str) -> None:
        assert self._do(who, key, "wait", 0) == ("ok", self._take(key))

    # ------------------------------------------------------------------ events
    @rule(who=WHO, key=st.sampled_from(["e0", "e1"]))
    def set(self, who: str, key: str) -> None:
        assert self._do(who, key, "set") == ("ok", None)
        self.model[key].signaled = True

    @rule(who=WHO, key=st.sampled_from(["e0", "e1"]))
    def reset(self, who: str, key: str) -> None:
        assert self._do(who, key, "reset") == ("ok", None)
        self.model[key].signaled = False

    @rule(who=WHO, key=st.sampled_from(["e0", "e1"]))
    def pulse(self, who: str, key: str) -> None:
        assert self._do(who, key, "pulse") == ("ok", None)  # nobody waits: just reset
        self.model[key].signaled = False

    @rule(who=WHO, key=st.sampled_from(["e0", "e1"]))
    def is_set(self, who: str, key: str) -> None:
        assert self._do(who, key, "is_set") == ("ok", self.model[key].signaled)

    # ------------------------------------------------------------------ multiple objects
    @rule(who=WHO, keys=st.permutations(["s0", "e1", "s1", "e0"]).map(lambda p: p[:3]))
    def wait_any0(self, who: str, keys: list[str]) -> None:
        expect = next((i for i, k in enumerate(keys) if self._signaled(k)), None)
        if who == "here":
            got = wait_any([self.here[k] for k in keys], 0)
        else:
            got = self.worker.call("wait_any", ids=list(keys), timeout=0)
        assert got == expect
        if expect is not None:
            self._take(keys[expect])  # only that one changes

    @rule(who=WHO, keys=st.permutations(["s0", "e1", "s1", "e0"]).map(lambda p: p[:2]))
    def wait_all0(self, who: str, keys: list[str]) -> None:
        expect = all(self._signaled(k) for k in keys)
        if who == "here":
            got = wait_all([self.here[k] for k in keys], 0)
        else:
            got = self.worker.call("wait_all", ids=list(keys), timeout=0)
        assert got is expect
        if expect:
            for k in keys:
                self._take(k)

    # ------------------------------------------------------------------ checked after every step
    @invariant()
    def states_match(self) -> None:
        for key, m in self.model.items():
            obj = self.here.get(key)
            if obj is None:
                continue
            if isinstance(m, SemModel):
                assert obj.count == m.count, (key, obj.count, m)
            else:
                assert obj.is_set() is m.signaled, (key, m)


def test_semaphores_and_events_match_the_model_across_processes() -> None:
    with Worker() as w:
        SyncMachine.worker = w
        run_state_machine_as_test(
            SyncMachine,
            # no shrinking: each shrink step starts objects in two processes, and a failure
            # would take minutes to minimise; the failing steps are printed all the same
            settings=settings(
                max_examples=30,
                stateful_step_count=25,
                deadline=None,
                phases=(Phase.explicit, Phase.reuse, Phase.generate),
            ),
        )
    assert leftovers() == []
