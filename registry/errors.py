"""Domain errors: the only exceptions the service, stores and loader raise on purpose.

    RegistryError (code)
    ├── InvalidSpec(ValueError)        bad_spec        a bad name, version, alias or spec
    ├── InvalidAdapter(ValueError)     invalid_adapter an adapter folder or file that we refuse
    ├── NotFound(LookupError)          not_found       no such adapter, version, alias or blob
    ├── Conflict                       conflict        a version re-published with other content
    ├── IntegrityError                 integrity       bytes that do not match their digest
    ├── Forbidden                      forbidden       a valid caller without the right scope
    ├── Unauthorized                   unauthorized    no caller, or an unknown one
    ├── Unreachable(ConnectionError)   unreachable     the registry or a store cannot be reached
    ├── RateLimited                    rate_limited    too many failed authentications
    ├── TooLarge(ValueError)           too_large       a body or blob over its size limit
    ├── TimedOut                       timeout         a request that did not arrive in time
    └── RangeNotSatisfiable            range_not_satisfiable   a byte range outside the blob

Every edge maps these in one place: the HTTP API to a status and ``{"code", "message"}``, the
HTTP client back to the same class, the CLI to exit 1 and one ``error:`` line.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every registry error; ``code`` is stable and shared by CLI, HTTP and Python."""

    code = "registry_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSpec(RegistryError, ValueError):
    code = "bad_spec"


class InvalidAdapter(RegistryError, ValueError):
    code = "invalid_adapter"


class NotFound(RegistryError, LookupError):
    code = "not_found"


class Conflict(RegistryError):
    code = "conflict"


class IntegrityError(RegistryError):
    code = "integrity"


class Forbidden(RegistryError):
    code = "forbidden"


class Unauthorized(RegistryError):
    code = "unauthorized"


class Unreachable(RegistryError, ConnectionError):
    code = "unreachable"


class RateLimited(RegistryError):
    code = "rate_limited"


class TooLarge(RegistryError, ValueError):
    code = "too_large"


class TimedOut(RegistryError):
    code = "timeout"


class RangeNotSatisfiable(RegistryError):
    code = "range_not_satisfiable"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


ERRORS_BY_CODE: dict[str, type[RegistryError]] = {
    cls.code: cls
    for cls in (
        RegistryError,
        InvalidSpec,
        InvalidAdapter,
        NotFound,
        Conflict,
        IntegrityError,
        Forbidden,
        Unauthorized,
        Unreachable,
        RateLimited,
        TooLarge,
        TimedOut,
        RangeNotSatisfiable,
    )
}
