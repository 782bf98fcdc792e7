"""Endpoint registry (summary, auth, roles, schemas per view) and the OpenAPI document built from it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from server.domain.accounts.roles import ENDPOINT_ROLES
from server.http.roles import require_roles

__all__ = ["EndpointDoc", "api_view", "bp", "build_openapi"]

F = TypeVar("F", bound=Callable[..., Any])
Auth = Literal["roles", "public", "refresh", "token"]

bp = Blueprint("openapi", __name__)

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "message_en"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string", "description": "简体中文"},
                "message_en": {"type": "string"},
            },
        }
    },
}


@dataclass(frozen=True)
class EndpointDoc:
    """What a view declares about itself."""

    endpoint: str
    summary: str
    auth: Auth
    roles: tuple[str, ...] | None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    responses: dict[int, str] = field(default_factory=dict)
    response_content_type: str = "application/json"
    # Further representations of the 200 answer (content negotiation), type -> schema.
    alternatives: dict[str, dict[str, Any]] = field(default_factory=dict)


def api_view(
    endpoint: str,
    summary: str,
    *,
    auth: Auth = "roles",
    request: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    query: dict[str, dict[str, Any]] | None = None,
    responses: dict[int, str] | None = None,
    response_content_type: str = "application/json",
    alternatives: dict[str, dict[str, Any]] | None = None,
) -> Callable[[F], F]:
    """Declare a view's docs and enforce its auth; roles come from auth.ENDPOINT_ROLES[endpoint]."""

    def decorate(view: F) -> F:
        from flask_jwt_extended import jwt_required

        roles: tuple[str, ...] | None = None
        wrapped: Any = view
        if auth == "roles":
            roles = ENDPOINT_ROLES[endpoint]
            wrapped = require_roles(*roles)(view)
        elif auth == "refresh":
            wrapped = jwt_required(refresh=True)(view)
        elif auth == "token":
            wrapped = jwt_required(verify_type=False)(view)
        wrapped.zfjl_doc = EndpointDoc(
            endpoint=endpoint,
            summary=summary,
            auth=auth,
            roles=roles,
            request=request,
            response=response,
            query=query or {},
            responses=responses or {},
            response_content_type=response_content_type,
            alternatives=alternatives or {},
        )
        return wrapped  # type: ignore[no-any-return]

    return decorate


def _openapi_path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params: list[dict[str, Any]] = []

    def repl(match: re.Match[str]) -> str:
        converter, name = match.group(1), match.group(2)
        # The int converter matches only what an id column holds (server.http.parsing.IdConverter).
        schema: dict[str, Any] = {"type": "string"}
        if converter == "int":
            schema = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
        return "{" + name + "}"

    return re.sub(r"<(?:(\w+):)?(\w+)>", repl, rule), params


def build_openapi(app: Flask) -> dict[str, Any]:
    """OpenAPI 3.1 document of every documented route of ``app``."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        doc: EndpointDoc | None = getattr(view, "zfjl_doc", None)
        if doc is None:
            continue
        path, params = _openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "operationId": rule.endpoint,
                "summary": doc.summary,
                "tags": [rule.endpoint.split(".")[0]],
                "parameters": params
                + [{"name": n, "in": "query", "required": False, "schema": s} for n, s in doc.query.items()],
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {doc.response_content_type: {"schema": doc.response or {"type": "object"}}}
                        | {ct: {"schema": schema} for ct, schema in doc.alternatives.items()},
                    },
                    "default": {
                        "description": "错误 / error",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                },
            }
            for status, text in doc.responses.items():
                op["responses"][str(status)] = {"description": text}
            if doc.request is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": doc.request}},
                }
            if doc.auth != "public":
                op["security"] = [{"bearer": []}]
            if doc.roles is not None:
                op["x-roles"] = list(doc.roles)
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "zfjl 执法全过程记录 API", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": ERROR_SCHEMA},
        },
    }


@bp.get("/openapi.json")
@api_view("openapi.openapi", "OpenAPI 文档 / OpenAPI document", auth="public")
def openapi() -> ResponseReturnValue:
    """Serve the generated OpenAPI document."""
    return jsonify(build_openapi(current_app))
