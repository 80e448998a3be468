"""The combiner: calls that arrive while a batch of their key is decided are decided together
next, in arrival order; each caller gets its own outcome or error, and nobody waits for ever."""

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from service.usecases.batching import Combiner


class Held:
    """Records the batches it decides with `rule`, each after waiting for `gate`."""

    def __init__(self, rule: Callable[[Sequence[int]], list[int | Exception]]) -> None:
        self.rule = rule
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[int]] = []

    def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.entered.set()
        self.gate.wait(10)
        return self.rule(items)


def tens_or_odd(items: Sequence[int]) -> list[int | Exception]:
    return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


def submit_all(combiner: Combiner, decide: Held, items: list[int]) -> dict[int, object]:
    """Submit the first item, and the others, one after another, while the first is decided."""
    outcomes: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            outcomes[i] = combiner.submit("cable", i, decide)
        except Exception as exc:  # noqa: BLE001 - compared below
            outcomes[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in items]
    threads[0].start()
    assert decide.entered.wait(10)
    for t in threads[1:]:
        t.start()
        time.sleep(0.02)  # arrival order; a late thread only makes a batch smaller
    decide.gate.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    return outcomes


def test_calls_that_wait_are_decided_together_in_order_each_with_its_own_outcome() -> None:
    decide = Held(tens_or_odd)
    outcomes = submit_all(Combiner(), decide, [2, 4, 5, 6, 8])

    assert decide.batches[0] == [2]
    assert [i for batch in decide.batches[1:] for i in batch] == [4, 5, 6, 8]  # in arrival order
    assert len(decide.batches) < 5
    assert {i: o for i, o in outcomes.items() if not isinstance(o, Exception)} == {2: 20, 4: 40, 6: 60, 8: 80}
    assert str(outcomes[5]) == "odd 5"  # an item's own error goes to its caller only


def test_a_batch_that_fails_whole_is_decided_again_one_call_at_a_time() -> None:
    def rule(items: Sequence[int]) -> list[int | Exception]:
        if 3 in items:
            raise RuntimeError("3 breaks every batch it is in")
        return list(items)

    decide = Held(rule)
    outcomes = submit_all(Combiner(), decide, [1, 2, 3, 4])

    assert (outcomes[1], outcomes[2], outcomes[4]) == (1, 2, 4)
    assert isinstance(outcomes[3], RuntimeError)
    assert [3] in decide.batches  # the culprit alone
    assert any(len(batch) > 1 and 3 in batch for batch in decide.batches)


def test_keys_are_batched_apart_and_the_combiner_forgets_an_idle_key() -> None:
    combiner = Combiner()
    assert combiner.submit("a", 1, lambda items: [i + 1 for i in items]) == 2
    assert combiner.submit("b", 1, lambda items: [i + 2 for i in items]) == 3
    assert combiner._waiting == {}


def test_a_single_call_gets_its_error_raised_with_its_type() -> None:
    def decide(items: Sequence[int]) -> list[int | Exception]:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        Combiner().submit("a", 1, decide)


def test_an_interrupted_decision_wakes_every_waiting_caller() -> None:
    class Stop(BaseException):
        pass

    gate, entered = threading.Event(), threading.Event()
    outcomes: dict[int, object] = {}

    def decide(items: Sequence[int]) -> list[int | Exception]:
        entered.set()
        gate.wait(10)
        if len(items) > 1:
            raise Stop
        return list(items)

    combiner = Combiner()

    def call(i: int) -> None:
        try:
            outcomes[i] = combiner.submit("k", i, decide)
        except Stop as exc:
            outcomes[i] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=call, args=(i,)) for i in (1, 2)]
    for t in others:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in [first, *others]:
        t.join(10)
    assert not any(t.is_alive() for t in [first, *others])
    assert outcomes[0] == 0
    assert all(isinstance(outcomes[i], Stop) for i in (1, 2))
    assert combiner._waiting == {}
