"""Decisions on one cable that arrive together are made together.

Every decision on a cable takes the cable's write lock, reads the cable's book, writes and
commits. Under load most of that is the same for every caller. `Combiner.submit` lets calls
that arrive while a batch of their key is being decided wait for the next batch, which one of
them then decides for all, in arrival order, in one transaction: one lock, one read of the book,
one commit. Each call still gets its own answer, or its own error.
"""

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Decides a batch: one outcome per item, in order; an item that fails alone is its exception.
Decide = Callable[[Sequence[T]], Sequence[R | Exception]]


@dataclass(eq=False)
class _Call(Generic[T, R]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    outcome: R | BaseException | None = None
    batch: "list[_Call[T, R]] | None" = None  # set when this call is handed the next batch to decide

    def result(self) -> R:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome  # type: ignore[return-value]


class Combiner:
    """Batches concurrent calls per key; one per process and database (it lives on the Context)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[Hashable, list[_Call[Any, Any]]] = {}  # a key is here while a batch of it is decided

    def submit(self, key: Hashable, item: T, decide: Decide[T, R]) -> R:
        """Decide `item` with the others of `key` that wait with it; returns its outcome or raises
        its error. `decide` must be the same decision for every item of a key."""
        call: _Call[T, R] = _Call(item)
        with self._lock:
            waiting = self._waiting.get(key)
            if waiting is None:
                self._waiting[key] = []
                batch = [call]
            else:
                waiting.append(call)
        if waiting is not None:
            call.done.wait()
            if call.batch is None:
                return call.result()
            batch = call.batch
        try:
            _decide(batch, decide)
        finally:
            self._hand_on(key)
        return call.result()

    def _hand_on(self, key: Hashable) -> None:
        """The calls that arrived meanwhile become the next batch, decided by the first of them."""
        with self._lock:
            waiting = self._waiting[key]
            if not waiting:
                del self._waiting[key]
                return
            self._waiting[key] = []
            waiting[0].batch = waiting
        waiting[0].done.set()


def _decide(batch: "list[_Call[T, R]]", decide: Decide[T, R]) -> None:
    """Give every call of the batch its outcome. A batch that fails as a whole (a bug, a database
    error: its transaction rolled back) is decided again one call at a time, so that a failure
    stays with the call that caused it."""
    outcomes: Sequence[R | BaseException]
    try:
        try:
            outcomes = _checked(decide([c.item for c in batch]), len(batch))
        except Exception as exc:  # noqa: BLE001 - each caller gets its error raised
            outcomes = [exc] if len(batch) == 1 else [_alone(c.item, decide) for c in batch]
    except BaseException as exc:  # interrupted: nobody may wait for ever
        outcomes = [exc] * len(batch)
        raise
    finally:
        for c, outcome in zip(batch, outcomes, strict=True):
            c.outcome = outcome
            c.done.set()


def _alone(item: T, decide: Decide[T, R]) -> R | Exception:
    try:
        return _checked(decide([item]), 1)[0]
    except Exception as exc:  # noqa: BLE001 - its caller gets it raised
        return exc


def _checked(outcomes: Sequence[R | Exception], expected: int) -> Sequence[R | Exception]:
    if len(outcomes) != expected:
        raise RuntimeError(f"a batch of {expected} was decided into {len(outcomes)} outcomes")
    return outcomes
