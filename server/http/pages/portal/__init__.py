"""The public portal (GS-5, GS-8, GS-9, GS-19): published decisions, search, open data, correction
requests, the before-enforcement catalogue (执法前公示), and the evidence ledger's signed checkpoints with
their witnesses' cosignatures (JL-6, JL-23; docs/ledger.md).

Anonymous and server-rendered, zh-CN by default and English with ``?lang=en``; rate-limited per client
network. It shows only what is published and not expired, always from the redacted copy (GS-14); a
withdrawn decision leaves only its withdrawal notice and reason (GS-12).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, make_response, render_template, request
from flask.typing import ResponseReturnValue

from server.domain.errors import NotFound
from server.domain.governance import ledger, ledger_quorum
from server.domain.people.models import Agency
from server.domain.publicity import annual, catalogue_service, schedules
from server.domain.publicity import portal as portal_service
from server.domain.publicity.codes import EnforcementAct
from server.domain.publicity.export import CF_FIELDS, XK_FIELDS, to_csv, to_json
from server.domain.publicity.models import PublicationItem
from server.errors import ErrorKind, ZfjlError
from server.http.context import client_ip
from server.http.errors import ApiError, error_response
from server.http.openapi import api_view
from server.http.rate_limit import RateLimiter, make_limiter
from server.infra.db import session_scope

__all__ = ["TEXT", "bp"]

bp = Blueprint("portal", __name__, url_prefix="/portal")
LIMITER_KEY = "zfjl.portal_limiter"
# A correction request writes to the database and is read by staff: it costs as much as ten page views.
CORRECTION_COST = 10
PER_PAGE = 20

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "行政执法信息公示",
        "search": "查询",
        "party": "当事人名称",
        "document_number": "决定书文号",
        "agency": "执法机关",
        "kind": "执法类别",
        "any": "全部",
        "from": "决定日期自",
        "to": "至",
        "results": "共 {total} 条",
        "none": "没有符合条件的公示信息",
        "decided_on": "决定日期",
        "disclosure_until": "公示截止期",
        "facts": "违法事实 / 主要事实",
        "basis": "依据",
        "conclusion": "决定内容 / 结论",
        "violation_type": "违法行为类型",
        "penalty_kinds": "处罚类别",
        "fine": "罚款金额（万元）",
        "confiscated": "没收金额（万元）",
        "party_category": "相对人类别",
        "uscc": "统一社会信用代码",
        "corrected": "本信息已于 {at} 更正",
        "withdrawn": "本决定已撤回",
        "withdrawn_reason": "撤回理由",
        "withdrawn_at": "撤回时间",
        "prev": "上一页",
        "next": "下一页",
        "correction": "申请更正",
        "correction_hint": "如发现本条信息有误，请说明哪里有误；无需登录。",
        "contact": "联系方式（选填）",
        "send": "提交",
        "received": "更正申请已收到，执法机关核实后处理。",
        "open_data": "开放数据",
        "lang": "English",
        "note": "依据《安徽省行政执法公示办法》公开；涉及个人隐私的内容已依法隐去。",
        "rate_limited": "访问过于频繁，请 {seconds} 秒后再试",
        "not_found": "公示信息不存在或已到期",
        "bad_request": "查询条件有误：{detail}",
        "annual_reports": "年度报告",
        "annual_report": "{agency}{year}年度行政执法数据统计报告",
        "annual_none": "尚无已公布的年度报告",
        "year": "年度",
        "item_name": "项目",
        "value": "数量",
        "not_fed": "本系统尚未采集",
        "not_fed_note": "标注“机关填报”的项目由本机关据其台账填报；"
        "标注“机关尚未填报”或“本系统尚未采集”的项目没有数据，未予统计，不以零代替。",
        "not_entered": "机关尚未填报",
        "entered": "（机关填报）",
        "corrected_badge": "已更正",
        "superseded": "本报告已于 {on} 被更正，不再是现行版本。更正理由：{reason}",
        "current_version": "查看现行版本",
        "correction_of": "本报告为更正版本（第 {revision} 版），更正理由：{reason}",
        "other_versions": "本年度其他版本",
        "version": "第 {revision} 版，公布于 {on}",
        "published_on": "公布日期",
        "csv": "下载 CSV",
        "report_not_found": "年度报告不存在或尚未公布",
        "before": "执法前公示",
        "before_none": "尚无已公示的执法前信息",
        "decisions": "执法结果公示",
        "ledger": "证据账本",
        "ledger_title": "执法记录证据账本",
        "ledger_intro": "每一段存储的执法录像、每一次对证据的访问和每一项治理决定，都是这本账本的一页。"
        "服务器定期"
        "对账本签名（检查点）；上级机关、法院等见证人保存检查点、确认新检查点是旧检查点的追加延续后联署。"
        "任何人都可以用 zfjl-verify 离线核验，无需信任本服务器。",
        "ledger_none": "账本尚无已签名的检查点",
        "checkpoint": "检查点",
        "tree_size": "记录条数（树大小）",
        "root_hash": "根哈希",
        "signed_at": "签名时间（北京时间）",
        "signing_key": "服务器签名密钥",
        "key_id": "密钥编号",
        "cosignatures": "见证人联署",
        "no_cosignatures": "尚无见证人联署",
        "witness": "见证人",
        "cosigned_at": "联署时间（北京时间）",
        "status": "状态",
        "status_valid": "有效",
        "status_duplicate": "重复，不计",
        "status_unknown": "非受信任见证人，不计",
        "status_invalid": "签名无效（伪造或篡改）",
        "quorum_met": "已见证：{got} 个受信任见证人联署，达到法定数 {quorum}",
        "quorum_unmet": "尚未见证：{got} 个受信任见证人联署，法定数为 {quorum}",
        "quorum_forged": "见证无效：有联署签名无法核验（伪造或篡改）",
        "no_witnesses": "本系统尚未配置见证人：检查点只有服务器自己的签名。",
        "policy": "见证规则",
        "policy_text": "检查点须由 {quorum} 个不同的受信任见证人联署，才算已见证。受信任的见证人：",
        "latest_witnessed": "最新的已见证检查点",
        "no_witnessed": "尚无达到见证法定数的检查点",
        "recent": "最近的检查点",
        "older": "更早的检查点",
        "signed_note": "签名文本（含联署）",
        "json": "下载 JSON",
        "how_to_verify": "如何核验",
        "verify_key": "① 通过正式渠道（机关来函、上级机关存档）取得账本公钥并固定保存。"
        "下面显示的公钥仅供比对："
        "与检查点放在一起取得的公钥什么也证明不了。",
        "verify_download": "② 下载检查点（每个检查点旁的“下载 JSON”），以及受信任见证人的公钥（每行一个）。",
        "verify_run": "③ 用独立的核验工具 zfjl-verify 离线核验签名和见证法定数（它不包含服务器的任何代码）：",
        "verify_keep": "④ 保存检查点。以后取得的检查点须是它的追加延续（zfjl-verify consistency）；"
        "否则说明账本历史被改写。",
        "verify_exit": "退出码 0 表示通过，1 表示不通过（附中英文原因）。",
        "bad_before": "before 须为正整数",
    },
    "en": {
        "title": "Administrative enforcement publicity",
        "search": "Search",
        "party": "Party",
        "document_number": "Document number",
        "agency": "Agency",
        "kind": "Kind of act",
        "any": "All",
        "from": "Decided from",
        "to": "to",
        "results": "{total} results",
        "none": "Nothing published matches",
        "decided_on": "Decided on",
        "disclosure_until": "Public until",
        "facts": "Facts",
        "basis": "Legal basis",
        "conclusion": "Decision",
        "violation_type": "Violation",
        "penalty_kinds": "Penalty kinds",
        "fine": "Fine (10,000 yuan)",
        "confiscated": "Confiscated (10,000 yuan)",
        "party_category": "Party category",
        "uscc": "Unified social credit code",
        "corrected": "Corrected on {at}",
        "withdrawn": "This decision has been withdrawn",
        "withdrawn_reason": "Reason",
        "withdrawn_at": "Withdrawn on",
        "prev": "Previous",
        "next": "Next",
        "correction": "Request a correction",
        "correction_hint": "If something here is wrong, say what; no account is needed.",
        "contact": "Contact (optional)",
        "send": "Send",
        "received": "Your request was received; the agency will verify it.",
        "open_data": "Open data",
        "lang": "中文",
        "note": "Published under the Anhui Publicity Measures; personal data is removed as the law requires.",
        "rate_limited": "Too many requests from your network; try again in {seconds} seconds",
        "not_found": "No such published item, or its disclosure has ended",
        "bad_request": "Bad search: {detail}",
        "annual_reports": "Annual reports",
        "annual_report": "{agency}: enforcement statistics report {year}",
        "annual_none": "No annual report has been published yet",
        "year": "Year",
        "item_name": "Item",
        "value": "Figure",
        "not_fed": "not yet recorded by this system",
        "not_fed_note": "Items marked 'entered by the agency' come from the agency's own registers; items "
        "marked 'not yet entered by the agency' or 'not yet recorded by this system' have no figure and "
        "were not counted (no zero stands in for them).",
        "not_entered": "not yet entered by the agency",
        "entered": "(entered by the agency)",
        "corrected_badge": "corrected",
        "superseded": "This report was corrected on {on} and is no longer current. Reason: {reason}",
        "current_version": "See the current report",
        "correction_of": "This is a corrected report (revision {revision}). Reason: {reason}",
        "other_versions": "Other versions of this year's report",
        "version": "revision {revision}, published on {on}",
        "published_on": "Published on",
        "csv": "Download CSV",
        "report_not_found": "No such published annual report",
        "before": "Before enforcement",
        "before_none": "Nothing published before enforcement yet",
        "decisions": "Enforcement decisions",
        "ledger": "Evidence ledger",
        "ledger_title": "Evidence ledger of enforcement records",
        "ledger_intro": "Every stored enforcement recording, every access to evidence and every governance "
        "decision is a leaf of this ledger. The server signs the ledger regularly (a checkpoint); witnesses "
        "such as a superior body or a court keep checkpoints, check that each new one extends the one they "
        "kept, and cosign it. Anyone can verify them offline with zfjl-verify, without trusting this server.",
        "ledger_none": "The ledger has no signed checkpoint yet",
        "checkpoint": "Checkpoint",
        "tree_size": "Records (tree size)",
        "root_hash": "Root hash",
        "signed_at": "Signed at (Beijing time)",
        "signing_key": "Server signing key",
        "key_id": "Key id",
        "cosignatures": "Witness cosignatures",
        "no_cosignatures": "No witness has cosigned it yet",
        "witness": "Witness",
        "cosigned_at": "Cosigned at (Beijing time)",
        "status": "Status",
        "status_valid": "valid",
        "status_duplicate": "repeated, not counted",
        "status_unknown": "not a trusted witness, not counted",
        "status_invalid": "does not verify (forged or altered)",
        "quorum_met": "Witnessed: cosigned by {got} distinct trusted witnesses, quorum {quorum} met",
        "quorum_unmet": "Not yet witnessed: cosigned by {got} of the {quorum} distinct trusted witnesses "
        "needed",
        "quorum_forged": "Not witnessed: a cosignature does not verify (forged or altered)",
        "no_witnesses": "No witness is configured: checkpoints carry only the server's own signature.",
        "policy": "Witness rule",
        "policy_text": "A checkpoint counts as witnessed once {quorum} distinct trusted witnesses "
        "cosigned it. "
        "The trusted witnesses:",
        "latest_witnessed": "Latest witnessed checkpoint",
        "no_witnessed": "No checkpoint has met the witness quorum yet",
        "recent": "Recent checkpoints",
        "older": "Older checkpoints",
        "signed_note": "Signed note (with cosignatures)",
        "json": "Download JSON",
        "how_to_verify": "How to verify",
        "verify_key": "1. Obtain the ledger's public key through an official channel (a letter from the "
        "agency, "
        "the superior body's records) and pin it. The key shown below is for comparison only: a key fetched "
        "next to the checkpoint it is meant to check proves nothing.",
        "verify_download": '2. Download a checkpoint ("Download JSON" next to each) and the trusted '
        "witnesses' keys (one a line).",
        "verify_run": "3. Check the signature and the witness quorum offline with the standalone verifier "
        "zfjl-verify (it contains none of the server's code):",
        "verify_keep": "4. Keep the checkpoint. Any later one must extend it (zfjl-verify consistency); "
        "otherwise the ledger's history was rewritten.",
        "verify_exit": "Exit status 0 means verified, 1 means not (with the reason in Chinese and English).",
        "bad_before": "before must be a positive integer",
    },
}
_KIND_EN = {
    EnforcementAct.PENALTY: "Penalty",
    EnforcementAct.LICENSING: "Licensing",
    EnforcementAct.COERCION: "Coercive measure",
    EnforcementAct.INSPECTION: "Inspection",
    EnforcementAct.LEVY: "Levy or requisition",
    EnforcementAct.OTHER: "Other",
}
_CSP = "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
_SEARCH_QUERY: dict[str, dict[str, Any]] = {
    "party": {"type": "string", "maxLength": 100},
    "document_number": {"type": "string", "maxLength": 128},
    "agency_id": {"type": "integer"},
    "kind": {"enum": [act.value for act in EnforcementAct]},
    "from": {"type": "string", "format": "date"},
    "to": {"type": "string", "format": "date"},
    "page": {"type": "integer", "minimum": 1},
    "lang": {"enum": ["zh", "en"]},
}
_RATE_LIMITED = {429: "请求过于频繁（Retry-After）/ rate limited per client network (Retry-After)"}


def _lang() -> str:
    return "en" if request.args.get("lang", "").lower().startswith("en") else "zh"


def _limiter() -> RateLimiter:
    limiter: RateLimiter | None = current_app.extensions.get(LIMITER_KEY)
    if limiter is None:
        settings = current_app.extensions["zfjl.settings"]
        # The per-network budget of the public credential check: both are anonymous pages. With
        # ZFJL_REDIS_URL the buckets are shared by every API process (and with /verify); else per process.
        limiter = make_limiter(settings.verify_rate_per_minute, settings.redis_url)
        current_app.extensions[LIMITER_KEY] = limiter
    return limiter


def _limited(cost: int = 1, *, as_json: bool = False) -> Response | None:
    """A 429 answer when the client's network is over its budget, else None."""
    retry_after = _limiter().take(client_ip(), cost)
    if not retry_after:
        return None
    zh = TEXT["zh"]["rate_limited"].format(seconds=retry_after)
    en = TEXT["en"]["rate_limited"].format(seconds=retry_after)
    if as_json:
        response = error_response(429, "rate_limited", zh, en)
    else:
        response = _page("portal/message.html", message=zh if _lang() == "zh" else en, status=429)
    response.status_code = 429
    response.headers["Retry-After"] = str(retry_after)
    return response


def _page(template: str, *, status: int = 200, **context: Any) -> Response:
    lang = _lang()
    # Kinds of act by their slug, in the page's language (the stored copy carries the Chinese label).
    kind_labels = {act.value: act.label if lang == "zh" else _KIND_EN[act] for act in EnforcementAct}
    response = make_response(
        render_template(template, t=TEXT[lang], lang=lang, kind_labels=kind_labels, **context), status
    )
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


class _BadQuery(ZfjlError):
    """A search filter the portal cannot use: shown on the page with its reason, never a 500."""

    kind = ErrorKind.INVALID
    code = "bad_query"

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(zh, en)
        self.zh, self.en = zh, en


def _query() -> portal_service.PortalQuery:
    """The search filters of the request; a bad one is a precise error, never a 500."""
    args = request.args

    def day(key: str) -> date | None:
        raw = args.get(key, "").strip()
        if not raw:
            return None
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise _BadQuery(f"{key} 须为 YYYY-MM-DD 日期", f"{key} must be a YYYY-MM-DD date") from None

    def number(key: str, default: int | None) -> int | None:
        raw = args.get(key, "").strip()
        if not raw:
            return default
        if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) < 2**31:
            raise _BadQuery(f"{key} 须为正整数", f"{key} must be a positive integer")
        return int(raw)

    kind_raw = args.get("kind", "").strip()
    try:
        kind = EnforcementAct(kind_raw) if kind_raw else None
    except ValueError:
        raise _BadQuery("kind 无效", "kind is not a kind of act") from None
    page = number("page", 1) or 1
    return portal_service.PortalQuery(
        party=args.get("party", "")[:100],
        document_number=args.get("document_number", "")[:128],
        agency_id=number("agency_id", None),
        act_kind=kind,
        decided_from=day("from"),
        decided_to=day("to"),
        page=min(page, 100_000),
        per_page=PER_PAGE,
    )


def _summary(item: PublicationItem) -> dict[str, Any]:
    """The public fields of an item (its redacted copy), for the list and the open-data API."""
    copy = dict(item.published or {})
    copy.pop("record", None)
    copy.pop("record_table", None)
    copy["id"] = item.id
    copy["state"] = item.state
    copy["corrected_at"] = item.corrected_at.isoformat() if item.corrected_at else None
    return copy


@bp.app_template_filter("portal_page")
def _page_link(args: Any, page: int) -> str:
    """The query string of the same search on another page."""
    pairs = [(key, value) for key, value in args.items(multi=True) if key != "page"]
    return urlencode([*pairs, ("page", str(page))])


def _agencies() -> list[dict[str, Any]]:
    with session_scope() as session:
        return [{"id": a.id, "name": a.name} for a in session.query(Agency).order_by(Agency.name)]


@bp.get("/")
@api_view(
    "portal.index",
    "公示查询页（公开）/ the public search page (anonymous)",
    auth="public",
    query=_SEARCH_QUERY,
    response_content_type="text/html",
    responses={400: "查询条件有误 / bad search", **_RATE_LIMITED},
)
def index() -> ResponseReturnValue:
    """Published decisions, newest first, with search and paging."""
    if (refused := _limited()) is not None:
        return refused
    try:
        query = _query()
    except _BadQuery as bad:
        detail = bad.zh if _lang() == "zh" else bad.en
        return _page(
            "portal/message.html", message=TEXT[_lang()]["bad_request"].format(detail=detail), status=400
        )
    with session_scope() as session:
        items, total = portal_service.portal_search(session, query)
        rows = [_summary(item) for item in items]
    return _page(
        "portal/index.html",
        rows=rows,
        total=total,
        total_label=f"{portal_service.COUNT_CAP}+" if total > portal_service.COUNT_CAP else str(total),
        query=query,
        args=request.args,
        agencies=_agencies(),
        kinds=[(act.value, act.label if _lang() == "zh" else _KIND_EN[act]) for act in EnforcementAct],
        pages=max(1, -(-min(total, portal_service.COUNT_CAP) // PER_PAGE)),
    )


@bp.get("/before-enforcement")
@api_view(
    "portal.before_enforcement",
    "执法前公示（公开）：各机关的执法依据、程序、清单、权利、投诉渠道、受委托组织 / before-enforcement "
    "catalogue per agency (anonymous) — GS-9",
    auth="public",
    query={"agency_id": {"type": "integer"}, "lang": {"enum": ["zh", "en"]}},
    response_content_type="text/html",
    responses={400: "agency_id 有误 / bad agency_id", **_RATE_LIMITED},
)
def before_enforcement() -> ResponseReturnValue:
    """The published entries of every agency (or one), grouped by kind; never a draft or a revision."""
    if (refused := _limited()) is not None:
        return refused
    raw = request.args.get("agency_id", "").strip()
    if raw and (not raw.isascii() or not raw.isdigit() or not 0 < int(raw) < 2**31):
        message = TEXT[_lang()]["bad_request"].format(
            detail="agency_id 须为正整数" if _lang() == "zh" else "agency_id must be a positive integer"
        )
        return _page("portal/message.html", message=message, status=400)
    agency_id = int(raw) if raw else None
    with session_scope() as session:
        agencies = catalogue_service.portal_catalogue(session, agency_id=agency_id, lang=_lang())
    return _page("portal/before.html", catalogue=agencies, agencies=_agencies(), selected=agency_id)


@bp.get("/items/<int:item_id>")
@api_view(
    "portal.item",
    "公示详情页（公开；撤回的仅显示撤回说明）/ one published decision (a withdrawn one: its notice)",
    auth="public",
    query={"lang": {"enum": ["zh", "en"]}},
    response_content_type="text/html",
    responses={404: "不存在或已到期 / not published or expired", **_RATE_LIMITED},
)
def item(item_id: int) -> ResponseReturnValue:
    """The redacted decision, when it was corrected, and the correction request form."""
    if (refused := _limited()) is not None:
        return refused
    with session_scope() as session:
        try:
            found = portal_service.portal_item(session, item_id)
        except NotFound:
            return _page("portal/message.html", message=TEXT[_lang()]["not_found"], status=404)
        withdrawn = found.state == "withdrawn"
        context: dict[str, Any] = {
            "item": _summary(found) if not withdrawn else None,
            "withdrawn": withdrawn,
            "item_id": found.id,
            "notice": {
                "document_number": found.document_number,
                "reason": found.withdrawal_reason,
                "at": found.withdrawn_at.date().isoformat() if found.withdrawn_at else "",
            },
            "received": request.args.get("received") == "1",
        }
    return _page("portal/item.html", **context)


@bp.post("/items/<int:item_id>/corrections")
@api_view(
    "portal.request_correction",
    "提交更正申请（公开，无需登录）/ request a correction (anonymous) — GS-19",
    auth="public",
    response_content_type="text/html",
    responses={
        303: "已收到 / received",
        400: "内容为空或过长 / empty or too long",
        404: "不存在 / no such item",
        **_RATE_LIMITED,
    },
)
def request_correction(item_id: int) -> ResponseReturnValue:
    """Keep the request for the agency to verify (GS-19); answer with the item page."""
    if (refused := _limited(CORRECTION_COST)) is not None:
        return refused
    text = request.form.get("text", "")
    contact = request.form.get("contact", "")
    with session_scope() as session:
        try:
            portal_service.request_correction(session, item_id, text, contact[:200])
        except NotFound:
            return _page("portal/message.html", message=TEXT[_lang()]["not_found"], status=404)
        except ZfjlError as error:
            message = error.message if _lang() == "zh" else error.message_en
            return _page("portal/message.html", message=message, status=400)
    lang = "&lang=en" if _lang() == "en" else ""
    response = make_response("", 303)
    response.headers["Location"] = f"/portal/items/{item_id}?received=1{lang}"
    return response


@bp.get("/open-data/decisions.json")
@api_view(
    "portal.open_data_search",
    "开放数据：公示决定查询（JSON）/ open data: search published decisions (JSON) — GS-8",
    auth="public",
    query=_SEARCH_QUERY,
    response={
        "type": "object",
        "properties": {
            "total": {"type": "integer", "description": "至多计到 10001 / counted up to 10001"},
            "total_capped": {"type": "boolean", "description": "total 超过 10000 / more than 10000 match"},
            "items": {"type": "array"},
        },
    },
    responses={400: "查询条件有误 / bad search", **_RATE_LIMITED},
)
def open_data_search() -> ResponseReturnValue:
    """The same search as the page, as JSON."""
    if (refused := _limited(as_json=True)) is not None:
        return refused
    try:
        query = _query()
    except _BadQuery as bad:
        raise ApiError(400, "invalid_request", bad.zh, bad.en) from None
    with session_scope() as session:
        items, total = portal_service.portal_search(session, query)
        return jsonify(
            total=total,
            total_capped=total > portal_service.COUNT_CAP,
            page=query.page,
            per_page=query.per_page,
            items=[_summary(i) for i in items],
        )


@bp.get("/open-data/<table>.<fmt>")
@api_view(
    "portal.open_data_export",
    "开放数据：双公示字段导出（CF 行政处罚 / XK 行政许可；csv 或 json）/ open data in the 双公示 codes",
    auth="public",
    query={"agency_id": {"type": "integer"}},
    response={"type": "array", "items": {"type": "object"}},
    alternatives={"text/csv": {"type": "string"}},
    responses={404: "table 须为 CF 或 XK，格式 csv 或 json / unknown table or format", **_RATE_LIMITED},
)
def open_data_export(table: str, fmt: str) -> ResponseReturnValue:
    """Every published, unexpired record of one national table."""
    if table not in ("CF", "XK") or fmt not in ("csv", "json"):
        raise ApiError(404, "not_found", "没有该数据集", "no such data set")
    # An export reads many rows: it costs as much as ten page views.
    if (refused := _limited(10, as_json=True)) is not None:
        return refused
    agency_raw = request.args.get("agency_id", "")
    agency_id = (
        int(agency_raw) if agency_raw.isascii() and agency_raw.isdigit() and len(agency_raw) < 10 else None
    )
    with session_scope() as session:
        records = portal_service.export_records(session, table, agency_id=agency_id)
    if fmt == "csv":
        return Response(
            "\ufeff" + to_csv(records, CF_FIELDS if table == "CF" else XK_FIELDS),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{table}.csv"'},
        )
    return Response(to_json(records), mimetype="application/json")


# -- annual reports (GS-17): the published ones, each as a printable page and as CSV -------------------


@bp.get("/annual-reports")
@api_view(
    "portal.annual_reports",
    "已公布的年度报告（公开）/ the published annual reports (anonymous) — GS-17",
    auth="public",
    query={"lang": {"enum": ["zh", "en"]}},
    response_content_type="text/html",
    responses=_RATE_LIMITED,
)
def annual_reports() -> ResponseReturnValue:
    """Every published annual report, newest year first; drafts and reports in review are not listed."""
    if (refused := _limited()) is not None:
        return refused
    with session_scope() as session:
        rows = [
            {
                "id": report.id,
                "year": report.year,
                "agency": name,
                "published_on": _day(report.published_at),
                "corrected": report.revision > 1,
            }
            for report, name in annual.published_reports(session)
        ]
    return _page("portal/annual_reports.html", rows=rows)


def _day(at: Any) -> str:
    return at.astimezone(schedules.CHINA).date().isoformat() if at is not None else ""


@bp.get("/annual-reports/<int:report_id>")
@api_view(
    "portal.annual_report",
    "年度报告（公开，可打印）/ one published annual report (printable) — GS-17",
    auth="public",
    query={"lang": {"enum": ["zh", "en"]}},
    response_content_type="text/html",
    responses={404: "不存在或未公布 / not published", **_RATE_LIMITED},
)
def annual_report(report_id: int) -> ResponseReturnValue:
    """The report's figures by section; lines without a figure say so. A superseded report (GS-19) stays
    readable, says why and when it was corrected and links to the current one."""
    if (refused := _limited()) is not None:
        return refused
    with session_scope() as session:
        try:
            found = annual.public_report(session, report_id)
        except NotFound:
            return _page("portal/message.html", message=TEXT[_lang()]["report_not_found"], status=404)
        report = annual.report_to_dict(session, found)
        versions = [
            {"id": r.id, "revision": r.revision, "published_on": _day(r.published_at)}
            for r in annual.revisions_of(session, found)
            if r.id != found.id
        ]
    return _page(
        "portal/annual_report.html",
        report=report,
        published_on=_day(found.published_at),
        superseded_on=_day(found.superseded_at),
        versions=versions,
    )


@bp.get("/annual-reports/<int:report_id>.csv")
@api_view(
    "portal.annual_report_csv",
    "年度报告 CSV（公开，UTF-8 BOM）/ one published annual report as CSV — GS-17",
    auth="public",
    response_content_type="text/csv",
    responses={404: "不存在或未公布 / not published", **_RATE_LIMITED},
)
def annual_report_csv(report_id: int) -> ResponseReturnValue:
    """The same lines as the staff export; only a published report."""
    if (refused := _limited(CORRECTION_COST)) is not None:
        return refused
    with session_scope() as session:
        try:
            report = annual.report_to_dict(session, annual.public_report(session, report_id))
        except NotFound:
            return _page("portal/message.html", message=TEXT[_lang()]["report_not_found"], status=404)
    name = f"annual-report-{report['agency_id']}-{report['year']}.csv"
    return Response(
        annual.to_csv(report),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# -- the evidence ledger (JL-6, JL-23): signed checkpoints, their cosignatures, the witness quorum -------

LEDGER_PAGE_SIZE = 10
_STATUS_TEXT = {
    "valid": "status_valid",
    "duplicate": "status_duplicate",
    "unknown": "status_unknown",
    "invalid": "status_invalid",
}


def _beijing(moment: datetime) -> str:
    return moment.astimezone(schedules.CHINA).strftime("%Y-%m-%d %H:%M:%S")


def _note_key_id(note: str) -> str:
    """The key id on the checkpoint's own signature line, in hex (what a verifier matches its key by)."""
    origin = note.split("\n", 1)[0]
    for line in note.rsplit("\n\n", 1)[-1].splitlines():
        name, _, blob = line.removeprefix("— ").partition(" ")
        if name == origin:
            try:
                return base64.b64decode(blob, validate=True)[:4].hex()
            except (ValueError, binascii.Error):
                return ""
    return ""


def _ledger_checkpoint(judged: ledger_quorum.WitnessedCheckpoint) -> dict[str, Any]:
    """What the page shows of one checkpoint and its cosignatures."""
    row, verdict = judged.checkpoint, judged.verdict
    lines = [check.line for check in verdict.checks]
    return {
        "size": row.tree_size,
        "origin": row.origin,
        "root_hash": base64.b64encode(bytes(row.root_hash)).decode("ascii"),
        "signed_at": _beijing(row.signed_at),
        "signed_at_iso": row.signed_at.isoformat(),
        "key_id": _note_key_id(row.note),
        "note": row.note + "".join(f"{line}\n" for line in lines),
        "met": verdict.met,
        "forged": bool(verdict.forged),
        "got": len(verdict.witnessed_by),
        "quorum": verdict.quorum,
        "cosignatures": [
            {
                "witness": check.witness,
                "key_id": f"{check.key_id:08x}" if check.key_id is not None else "",
                "at": _beijing(datetime.fromtimestamp(check.timestamp, tz=UTC))
                if check.timestamp is not None
                else "",
                "status": check.status.value,
                "status_key": _STATUS_TEXT[check.status.value],
            }
            for check in verdict.checks
        ],
    }


@bp.get("/ledger")
@api_view(
    "portal.ledger",
    "证据账本公示页（公开）：已签名的检查点、见证人联署、见证法定数、核验方法 / the evidence ledger's "
    "signed checkpoints, witness cosignatures, quorum and how to verify them (anonymous) — JL-6, JL-23",
    auth="public",
    query={"before": {"type": "integer", "minimum": 1}, "lang": {"enum": ["zh", "en"]}},
    response_content_type="text/html",
    responses={400: "before 有误 / bad before", **_RATE_LIMITED},
)
def ledger_page() -> ResponseReturnValue:
    """The latest checkpoints with their cosignatures, the latest witnessed one, and how to check them."""
    if (refused := _limited()) is not None:
        return refused
    raw = request.args.get("before", "").strip()
    if raw and (not raw.isascii() or not raw.isdigit() or not 0 < int(raw) < 2**62):
        message = TEXT[_lang()]["bad_request"].format(detail=TEXT[_lang()]["bad_before"])
        return _page("portal/message.html", message=message, status=400)
    before = int(raw) if raw else None
    settings = current_app.extensions["zfjl.settings"]
    policy = ledger_quorum.WitnessPolicy.from_settings(settings)
    verifier = ledger.LedgerSigner.from_ingest_key(settings.ingest_key).verifier
    with session_scope() as session:
        recent, more = ledger_quorum.recent_checkpoints(
            session, policy, limit=LEDGER_PAGE_SIZE, before=before
        )
        witnessed = ledger_quorum.latest_witnessed(session, policy) if before is None else None
        checkpoints = [_ledger_checkpoint(judged) for judged in recent]
        latest_witnessed = _ledger_checkpoint(witnessed) if witnessed is not None else None
    return _page(
        "portal/ledger.html",
        checkpoints=checkpoints,
        older=checkpoints[-1]["size"] if more else None,
        latest_witnessed=latest_witnessed,
        paged=before is not None,
        policy={
            "quorum": policy.quorum,
            "witnesses": [key.encode() for key in policy.witnesses],
            "configured": bool(policy.witnesses),
        },
        verifier_key=verifier.encode(),
        verifier_key_id=f"{verifier.key_id:08x}",
    )
