"""Every refusal as an OpenAI-style error body with a 4xx status, in one place.

Service refusals map by type (``REFUSALS``); validation errors and malformed JSON are 400; Starlette's
own errors (an unknown path 404, a wrong method 405) keep their status.
"""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lmforge.serving.errors import Busy, InvalidRequest, ModelNotFound, NotReady, Refused, TooLarge

# service refusal -> (HTTP status, OpenAI error type, headers)
REFUSALS: dict[type[Refused], tuple[int, str, dict | None]] = {
    InvalidRequest: (400, "invalid_request_error", None),
    ModelNotFound: (404, "invalid_request_error", None),
    TooLarge: (413, "invalid_request_error", None),
    Busy: (429, "rate_limit_error", {"Retry-After": "1"}),
    NotReady: (503, "unavailable", None),
    Refused: (400, "invalid_request_error", None),
}
_BRANCHES = {"str", "int", "float", "bool", "list", "dict", "none"}


def error_response(
    status: int, message: str, kind: str = "invalid_request_error", param=None, code=None, headers=None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def field_of(loc) -> str:
    """A validation error's field path, without the union branch names pydantic puts in it."""
    parts = [str(x) for x in loc if x != "body" and not (isinstance(x, str) and ("[" in x or x in _BRANCHES))]
    return ".".join(parts) or "body"


async def refused(request: Request, exc: Refused) -> JSONResponse:
    status, kind, headers = next(REFUSALS[cls] for cls in type(exc).__mro__ if cls in REFUSALS)
    return error_response(status, exc.message, kind, exc.param, exc.code, headers)


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "the body is not valid JSON", code="invalid_json")
    where = field_of(errors[0].get("loc", ())) if errors else "body"
    # a union ("a string or a list") fails once per branch: say all of them
    reasons = list(dict.fromkeys(e.get("msg", "invalid") for e in errors if field_of(e.get("loc", ())) == where))
    return error_response(400, f"'{where}': {' or '.join(reasons)}", param=where)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), kind, headers=getattr(exc, "headers", None))


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
