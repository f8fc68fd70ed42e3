"""User-facing errors: every message names the field and the offending value."""

from __future__ import annotations


class RequestError(ValueError):
    """A request (or option) that cannot be planned, with the field path that is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[RequestError], tuple[str, str]]:
        """Picklable as itself (solver processes send it back to the service)."""
        return type(self), (self.field, self.message)


class PlanFormatError(ValueError):
    """A plan document that is not a well-formed `meshcast.plan/v1`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[PlanFormatError], tuple[str, str]]:
        return type(self), (self.field, self.message)
