"""The domain's exception tree. Each transport maps these to its wire format in one table."""


class GridcapError(Exception):
    """Base of every error the service raises on purpose. `message` says what to fix."""

    code = "InternalError"

    def __init__(self, message: str, *, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


class InvalidInput(GridcapError):
    """The input is well-formed but breaks a rule (misaligned block, negative capacity, ...)."""

    code = "InvalidRequest"


class NotFound(GridcapError):
    code = "NotFound"


class UnknownCable(NotFound):
    code = "UnknownCable"


class UnknownCpo(NotFound):
    code = "UnknownCpo"


class NotSubscribed(GridcapError):
    """The CPO has no subscription to the cable it addressed."""

    code = "NotSubscribed"


class Conflict(GridcapError):
    """The request clashes with the current state (duplicate id, infeasible minimums, ...)."""

    code = "Conflict"


class NotAuthorized(GridcapError):
    code = "NotAuthorized"


class InvariantViolation(GridcapError):
    """A rule would break a safety invariant; the transaction is rolled back. Always a bug."""

    code = "InternalError"
