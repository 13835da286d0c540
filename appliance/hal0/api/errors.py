"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, with the right status."""

from __future__ import annotations

import sqlite3

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class ApiError(Exception):
    """An error a handler raises; rendered by `error_response`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str = "not_found") -> ApiError:
    return ApiError(404, message, param=param, code=code)


def overloaded(message: str, retry_after: int) -> ApiError:
    return ApiError(
        503, message, type="server_error", code="overloaded", headers={"Retry-After": str(retry_after)}
    )


def rate_limited(message: str, retry_after: int, quota: str) -> ApiError:
    """429 in OpenAI's shape: type `tokens` for a token quota, `requests` for the others."""
    kind = "tokens" if quota == "tokens_per_minute" else "requests"
    return ApiError(429, message, type=kind, code="rate_limit_exceeded", headers={"Retry-After": str(retry_after)})


def refused(message: str, code: str, retry_after: int | None = None) -> ApiError:
    """A tool call the policy door refused, as REST says it: 429 for a quota (with Retry-After) or for too
    many calls waiting on a human (come back later), else 403 naming the rule."""
    if retry_after is not None:
        return rate_limited(message, retry_after, "requests_per_minute")
    return ApiError(429 if code == "too_many_pending" else 403, message, code=code)


def unavailable(message: str, retry_after: int = 5) -> ApiError:
    return ApiError(503, message, type="server_error", code="model_unavailable", headers={"Retry-After": str(retry_after)})


async def storage_error(_request: Request, error: Exception) -> Response:
    """SQLite trouble on the state directory, told as what it is: a full disk is 507, a busy
    database 503 (retry); anything else stays a 500 because it is a bug or a broken disk."""
    assert isinstance(error, sqlite3.OperationalError)
    code = getattr(error, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(error):
        return error_response(ApiError(507, f"the state directory's disk is full: {error}; nothing was written",
                                       type="server_error", code="storage_full"))
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(error):
        return error_response(ApiError(503, f"the database is busy: {error}", type="server_error", code="storage_busy",
                                       headers={"Retry-After": "1"}))
    raise error
