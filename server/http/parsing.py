"""Input checks at the edge: one strict JSON parser, bounded integers in paths, typed query and body fields.

Everything a client sends is checked here, once, before a view or a service sees it, so that ordinary
bad input gets a precise 400 (stable ``code``) instead of crashing deeper down: an integer the
database cannot store, a document nested deeper than any real request, a lone UTF-16 surrogate that
no UTF-8 column can hold, a field of the wrong JSON type.  The rules for fields come from the same
declarations (``api_view(request=…, query=…)``) that generate /openapi.json, so the document and the
behaviour cannot drift apart.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.routing import IntegerConverter, Map

from server.http.errors import ApiError

__all__ = [
    "ID_MAX",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_JSON_DEPTH",
    "IdConverter",
    "StrictJSONProvider",
    "check_body",
    "init_app",
]

# The widest integer column the databases hold (BIGINT, SQLite INTEGER): signed 64-bit.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# Every id in a URL is an ``Integer`` primary key: 32-bit on PostgreSQL (SQLAlchemy binds it with a
# ``::INTEGER`` cast, so a larger value is a DataError there, not an empty result).  Ids above this
# cannot exist on any supported database, so they match no route.
ID_MAX = 2**31 - 1
# No request of this API nests deeper than a few levels; anything deeper is an attack on the parser.
MAX_JSON_DEPTH = 32
_SURROGATES = range(0xD800, 0xE000)


def _bad(code: str, message: str, message_en: str) -> ApiError:
    return ApiError(400, code, message, message_en)


class IdConverter(IntegerConverter):
    """``<int:…>`` bounded to what an id column holds on every database; a larger id matches no route."""

    def __init__(
        self,
        map: Map,
        fixed_digits: int = 0,
        min: int | None = None,
        max: int | None = ID_MAX,
        signed: bool = False,
    ) -> None:
        bound = ID_MAX if max is None or max > ID_MAX else max
        super().__init__(map, fixed_digits, min, bound, signed)


def _parse_int(text: str) -> int:
    # Python's own limit (4300 digits) raises ValueError; anything past 64 bits is refused before that.
    if len(text.lstrip("-")) > 19:
        raise _number_out_of_range()
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise _number_out_of_range()
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _number_out_of_range()
    return value


def _parse_constant(name: str) -> Any:
    raise _bad("invalid_json", f"JSON 不允许 {name}", f"JSON does not allow {name}")


def _number_out_of_range() -> ApiError:
    return _bad(
        "number_out_of_range",
        "数值超出范围（须为 64 位整数或有限小数）",
        "number out of range (must fit a signed 64-bit integer or be a finite number)",
    )


def _check_tree(value: Any, depth: int = 1) -> None:
    """Depth and lone surrogates, over the parsed document (keys included)."""
    if depth > MAX_JSON_DEPTH:
        raise _bad(
            "json_too_deep", f"JSON 嵌套超过 {MAX_JSON_DEPTH} 层", f"JSON nested deeper than {MAX_JSON_DEPTH}"
        )
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_tree(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_tree(item, depth + 1)


def _check_text(text: str) -> None:
    # "\ud800" is valid JSON but not Unicode text: no UTF-8 column, file name or log line can hold it.
    if any(ord(ch) in _SURROGATES for ch in text):
        raise _bad(
            "invalid_unicode",
            "文本含有孤立的代理字符（无效 Unicode）",
            "text contains a lone surrogate (invalid Unicode)",
        )
    # PostgreSQL text cannot hold U+0000, and no field of this API has a use for it.
    if "\x00" in text:
        raise _bad("invalid_unicode", "文本含有 NUL 字符", "text contains a NUL character")


def loads_strict(data: str | bytes | bytearray) -> Any:
    """Parse a request's JSON: UTF-8, finite 64-bit numbers, bounded depth, no lone surrogates, no NUL."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("invalid_json", "JSON 必须是 UTF-8 编码", "JSON must be UTF-8 encoded") from None
    try:
        value = json.loads(
            data, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
        )
    except RecursionError:
        # The C scanner recurses once per level; a deep document exhausts the stack before we can count.
        raise _bad(
            "json_too_deep", f"JSON 嵌套超过 {MAX_JSON_DEPTH} 层", f"JSON nested deeper than {MAX_JSON_DEPTH}"
        ) from None
    except ValueError:
        raise _bad("invalid_json", "请求体不是有效的 JSON", "request body is not valid JSON") from None
    _check_tree(value)
    return value


class StrictJSONProvider(DefaultJSONProvider):
    """The app's JSON provider: responses as Flask does them, request bodies through ``loads_strict``."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Strict parse; errors are ApiError 400 with a precise code (not ValueError, so never silenced)."""
        if kwargs:
            return super().loads(s, **kwargs)
        return loads_strict(s)


# --- typed fields, from the declarations that also build /openapi.json ------------------------------

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}
_TYPE_ZH = {
    "string": "字符串",
    "integer": "整数",
    "number": "数字",
    "boolean": "布尔值",
    "object": "对象",
    "array": "数组",
    "null": "null",
}


def _type_ok(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _JSON_TYPES.get(name, (object,)))


def check_value(value: Any, schema: dict[str, Any], where: str) -> None:
    """Check ``value`` against the subset of JSON Schema the views declare; ApiError 400 naming ``where``."""
    declared = schema.get("type")
    if declared is not None:
        names = [declared] if isinstance(declared, str) else list(declared)
        if not any(_type_ok(value, n) for n in names):
            zh = "或".join(_TYPE_ZH.get(n, n) for n in names)
            en = " or ".join(names)
            raise _bad("invalid_field", f"字段 {where} 必须是{zh}", f"field {where} must be {en}")
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(map(str, schema["enum"]))
        raise _bad(
            "invalid_field", f"字段 {where} 必须是 {allowed} 之一", f"field {where} must be one of {allowed}"
        )
    if "const" in schema and value != schema["const"]:
        raise _bad("invalid_field", f"字段 {where} 的值无效", f"field {where} has an invalid value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            raise _bad(
                "invalid_field",
                f"字段 {where} 超出范围 [{low}, {high}]",
                f"field {where} out of range [{low}, {high}]",
            )
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        raise _bad(
            "invalid_field",
            f"字段 {where} 过长（最多 {schema['maxLength']} 个字符）",
            f"field {where} is too long (at most {schema['maxLength']} characters)",
        )
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value and isinstance(sub, dict):
                check_value(value[key], sub, key if where == "body" else f"{where}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            check_value(item, schema["items"], f"{where}[{index}]")


def _current_doc() -> Any:
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, "zfjl_doc", None)


def check_body(body: Any) -> None:
    """Check a parsed JSON body against the current view's declared request schema (if any)."""
    doc = _current_doc()
    if doc is not None and isinstance(doc.request, dict) and doc.request.get("type") == "object":
        check_value(body, doc.request, "body")


def _check_query() -> None:
    """Before each documented view: declared integer and number query parameters are what they say.

    Only numbers (and NUL in any declared parameter): a view that reads a string or an enum leniently
    (``?lang=en-US`` on a page) keeps doing so.
    """
    doc = _current_doc()
    if doc is None:
        return
    for name, schema in doc.query.items():
        raw = request.args.get(name)
        if raw is None or raw == "":
            continue
        _check_text(raw)
        declared = schema.get("type")
        value: Any = raw
        if declared == "integer":
            try:
                value = _parse_int(raw.strip())
            except (ValueError, ApiError):
                raise _bad(
                    "invalid_query",
                    f"参数 {name} 必须是 64 位整数",
                    f"query parameter {name} must be a 64-bit integer",
                ) from None
        elif declared == "number":
            try:
                value = _parse_float(raw.strip())
            except (ValueError, ApiError):
                raise _bad(
                    "invalid_query",
                    f"参数 {name} 必须是有限数字",
                    f"query parameter {name} must be a finite number",
                ) from None
        else:
            continue
        try:
            check_value(value, {k: v for k, v in schema.items() if k in ("minimum", "maximum")}, name)
        except ApiError as exc:
            raise ApiError(400, "invalid_query", exc.message, exc.message_en) from None


def init_app(app: Flask) -> None:
    """Install the strict JSON provider, the bounded ``int`` converter and the query check (before routes)."""
    app.json_provider_class = StrictJSONProvider
    app.json = StrictJSONProvider(app)
    app.url_map.converters["int"] = IdConverter
    app.before_request(_check_query)
