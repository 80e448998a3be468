"""One function per user intent; each is a transaction. REST, OSCP, jobs and the CLI share them."""

from service.usecases.context import Context, build_context

__all__ = ["Context", "build_context"]
