"""The one place where errors become HTTP responses: status, ``{"code", "message"}``, header."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from registry.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidAdapter,
    InvalidSpec,
    NotFound,
    RangeNotSatisfiable,
    RateLimited,
    RegistryError,
    TimedOut,
    TooLarge,
    Unauthorized,
    Unreachable,
)

STATUS: dict[type[RegistryError], int] = {
    InvalidSpec: 400,
    IntegrityError: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidAdapter: 422,
    Unreachable: 503,
    RateLimited: 429,
    TooLarge: 413,
    TimedOut: 408,
    RangeNotSatisfiable: 416,
}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"X-Error-Code": code}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="stance"'
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def status_of(exc: RegistryError) -> int:
    return next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)


def install(app: FastAPI) -> None:
    """Register the handlers; routes raise domain errors and never build error bodies."""

    @app.exception_handler(RegistryError)
    async def _registry_error(_: Request, exc: RegistryError) -> JSONResponse:
        response = error_response(status_of(exc), exc.code, exc.message)
        if isinstance(exc, RangeNotSatisfiable):
            response.headers["Content-Range"] = f"bytes */{exc.size}"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "bad_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))
