"""One JSON error shape for every failure: ``{"error": {"code", "message" (zh-CN), "message_en"}}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from server.errors import HTTP_STATUS, ErrorKind, ZfjlError
from server.infra.db import register_database_errors

__all__ = ["ApiError", "error_response", "register_error_handlers"]

log = logging.getLogger(__name__)

# Chinese and English texts for the HTTP errors Werkzeug raises itself.
_HTTP_TEXT: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "请求格式错误", "bad request"),
    401: ("unauthorized", "需要登录", "authentication required"),
    403: ("forbidden", "没有权限", "forbidden"),
    404: ("not_found", "资源不存在", "not found"),
    405: ("method_not_allowed", "不支持该请求方法", "method not allowed"),
    413: ("payload_too_large", "请求体过大", "payload too large"),
    415: ("unsupported_media_type", "不支持的内容类型", "unsupported media type"),
    416: ("range_not_satisfiable", "请求的范围无效", "range not satisfiable"),
}


class ApiError(ZfjlError):
    """An error only the web edge knows (a bad header, a missing body): its HTTP status given directly."""

    def __init__(
        self, status: int, code: str, message: str, message_en: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, message_en)
        self.status = status
        self.code = code  # type: ignore[misc]  # an instance's own code, where subclasses of the root name theirs
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, message_en: str, headers: dict[str, str] | None = None
) -> Response:
    """Build the JSON error response."""
    response = jsonify({"error": {"code": code, "message": message, "message_en": message_en}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code, zh, en = _HTTP_TEXT.get(status, ("http_error", "请求失败", exc.name.lower()))
    response = error_response(status, code, zh, en)
    if status == 405 and exc.response is None:
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def register_error_handlers(app: Flask) -> None:
    """Turn ApiError, every other error of the root (status by kind), HTTP errors and crashes into JSON."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.message_en, exc.headers)

    @app.errorhandler(ZfjlError)
    def _server_error(exc: ZfjlError) -> Response:
        if exc.kind is ErrorKind.INTERNAL:
            log.error("internal error %s: %s", exc.code, exc.message_en)
        return error_response(HTTP_STATUS[exc.kind], exc.code, exc.message, exc.message_en)

    # A constraint or a value the database refused: a 4xx in the same shape (server/infra/db.py).
    register_database_errors(app, error_response)

    @app.errorhandler(HTTPException)
    def _werkzeug_error(exc: HTTPException) -> Response:
        return _http_error(exc)

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Any:
        # Last resort only: every known kind of bad input is refused earlier with a 4xx and its own code
        # (server.http.parsing); the fuzz test fails on any 500 this handler produces.
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        log.exception("unhandled error")
        return error_response(500, "internal_error", "服务器内部错误", "internal server error")
