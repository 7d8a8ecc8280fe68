"""Why the services refuse a request: one exception type per reason, with the field at fault.

The services raise these and know nothing of HTTP; ``http_errors`` maps each type to its status and
OpenAI error body in one table.
"""


class Refused(Exception):
    """A request the service will not serve: a message for the user, the request field at fault
    (``param``) and a machine-readable ``code``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class InvalidRequest(Refused):
    """The request asks for what the model or the server's limits do not allow."""


class ModelNotFound(Refused):
    """No model of that name is served here."""


class TooLarge(Refused):
    """Too many inputs, or an input over the length limit."""


class Busy(Refused):
    """The model's queue is full; the client should retry shortly."""

    def __init__(self, why: object):
        super().__init__(f"the server is busy: {why}; retry shortly", code="queue_full")


class NotReady(Refused):
    """The models are still loading."""
