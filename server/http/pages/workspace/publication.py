"""The publication review of the workspace (GS-7, GS-11, GS-14, GS-15): drafts and items in review of the
caller's agency with their deadlines, and one item's public copy with each proposed redaction highlighted.

A page over ``server/domain/publicity`` with the JSON API's roles: the queue takes those of
``publicity.list_items``, the item page those of ``publicity.review_item``, the redaction form those of
``publicity.set_redactions``, returning, publishing and excluding those of the API's transitions, and
the GS-12 withdrawal order those of ``publicity.order_withdrawal``. The domain's rules apply unchanged
(the reviewer is never the author, GS-7), and its refusals are shown as they are, with the API's error
codes; the withdrawal order's form is parsed by the API's own parser (``WithdrawalOrderInput``).
"""

from __future__ import annotations

import functools
from typing import Any

from flask import request, url_for
from flask.typing import ResponseReturnValue

from server.domain.errors import NotFound
from server.domain.publicity import schedules, service
from server.domain.publicity import views as publicity_views
from server.domain.publicity.content import TEXT_FIELDS, redactions_from_mapping
from server.domain.publicity.inputs import OrderSourceKind, WithdrawalOrderInput, plausible_date
from server.domain.publicity.redaction import ExclusionClaim, ExclusionGround
from server.errors import ErrorKind, ZfjlError
from server.http.context import caller
from server.http.pages.workspace.core import audit_view, back, bp, lang, render, workspace_view
from server.http.scope import audit_refusal
from server.infra.db import session_scope

__all__ = [
    "TEXTS",
    "exclude_item",
    "order_withdrawal",
    "publication_item",
    "publication_review",
    "publish_item",
    "return_item",
    "save_redactions",
    "submit_item",
    "withdraw_item",
]

TEXTS: dict[str, dict[str, str]] = {
    "zh": {
        "note": "依据《行政执法公示办法》：行政处罚、行政许可决定自作出之日起7个工作日内公示（GS-11）；"
        "公示前隐去个人隐私等内容（GS-14），涉及国家秘密、商业秘密、未成年人等的不予公示（GS-15）；"
        "审核人不得为撰写人（GS-7）。",
        "in_review": "待审核",
        "drafts": "草稿",
        "none_in_review": "没有待审核的事项。",
        "none_drafts": "没有草稿。",
        "item": "事项",
        "party": "当事人",
        "document": "文书号",
        "author": "撰写人",
        "due_on": "公示期限",
        "provisional": "临时期限（该年节假日安排未载入）",
        "overdue": "已逾期",
        "state": "状态",
        "state.draft": "草稿",
        "state.in_review": "待审核",
        "state.published": "已公示",
        "state.corrected": "已更正",
        "state.withdrawn": "已撤回",
        "state.expired": "公示期满",
        "state.excluded": "不予公示",
        "open": "审核",
        "source": "原文（拟隐去内容高亮）",
        "preview": "公开副本预览",
        "no_preview": "内容不完整，暂无法生成公开副本。",
        "field.facts": "违法事实",
        "field.basis": "依据",
        "field.conclusion": "处理结果",
        "field.violation_type": "违法行为类型",
        "redactions": "隐去内容",
        "proposed": "拟隐去",
        "undo": "撤销此项隐去（公开原文）",
        "added": "人工增加的隐去",
        "keep": "保留",
        "add": "增加隐去",
        "field": "字段",
        "start": "起始位置（字符，从0起）",
        "end": "结束位置（不含）",
        "reason": "理由",
        "save": "保存隐去决定",
        "saved": "隐去决定已保存",
        "submit": "提交审核",
        "submitted": "已提交审核",
        "return": "退回修改",
        "returned": "已退回草稿",
        "publish": "审核发布",
        "published": "已公示",
        "exclude": "不予公示",
        "excluded": "已决定不予公示",
        "ground": "理由类别",
        "ground.state_secret": "国家秘密",
        "ground.trade_secret": "商业秘密",
        "ground.third_party_privacy": "第三方隐私",
        "ground.security_stability": "国家安全、公共安全、社会稳定",
        "excluded_minor": "案件涉及未成年人，依 GS-15(3) 整体不予公示 (excluded)",
        "bad_reason": "须说明理由（不超过2000字） (invalid_request)",
        "bad_ground": "ground 无效 (invalid_request)",
        "history": "流转记录",
        "withdrawal": "撤回（GS-12）",
        "withdrawal_note": "决定被撤销、确认违法或责令重作的，应在3个工作日内撤回公示（GS-12）。"
        "登记撤回令后，到期前系统告警，直至撤回。",
        "withdrawal_due_on": "撤回期限",
        "withdrawal_overdue": "已逾期未撤回",
        "orders": "撤回令",
        "revoked_on": "撤销、确认违法或责令重作之日（不填为今天）",
        "revoked": "撤销之日",
        "order_source": "来源（可选）：行政复议决定或人民法院裁判",
        "source_kind": "来源类别",
        "source_kind.": "无（如本机关自行撤销）",
        "source_kind.reconsideration": "行政复议决定",
        "source_kind.litigation": "人民法院裁判",
        "source_body": "复议机关或人民法院",
        "source_document": "复议决定书或裁判文书文号",
        "source_decided_on": "作出之日",
        "ordered_by": "登记人",
        "order": "登记撤回令",
        "ordered": "撤回令已登记，撤回期限 {due}",
        "withdraw": "撤回公示（理由将在公示页公开）",
        "withdraw_revoked_on": "撤销之日（已登记撤回令的，不填则沿用其期限）",
        "withdrawn": "已撤回，公示页仅保留撤回说明",
        "published_items": "已公示",
        "none_published": "没有已公示的事项。",
        "published_at": "公示时间",
    },
    "en": {
        "note": "Publicity measures: penalty and licensing decisions are published within 7 working days of "
        "the decision (GS-11); private details are hidden first (GS-14); state or trade secrets and "
        "anything concerning minors are not published (GS-15); the reviewer is never the author (GS-7).",
        "in_review": "In review",
        "drafts": "Drafts",
        "none_in_review": "Nothing is in review.",
        "none_drafts": "No drafts.",
        "item": "Item",
        "party": "Party",
        "document": "Document no.",
        "author": "Author",
        "due_on": "Publish by",
        "provisional": "provisional (that year's holidays are not loaded)",
        "overdue": "overdue",
        "state": "State",
        "state.draft": "Draft",
        "state.in_review": "In review",
        "state.published": "Published",
        "state.corrected": "Corrected",
        "state.withdrawn": "Withdrawn",
        "state.expired": "Disclosure ended",
        "state.excluded": "Not published",
        "open": "Review",
        "source": "Source (proposed redactions highlighted)",
        "preview": "Public copy preview",
        "no_preview": "The content is incomplete; no public copy can be made yet.",
        "field.facts": "Facts",
        "field.basis": "Legal basis",
        "field.conclusion": "Outcome",
        "field.violation_type": "Violation",
        "redactions": "Redactions",
        "proposed": "proposed",
        "undo": "Undo this redaction (publish the original)",
        "added": "Redactions added by hand",
        "keep": "keep",
        "add": "Add a redaction",
        "field": "Field",
        "start": "Start (character, from 0)",
        "end": "End (exclusive)",
        "reason": "Reason",
        "save": "Save redaction decisions",
        "saved": "Redaction decisions saved",
        "submit": "Submit for review",
        "submitted": "Submitted for review",
        "return": "Return to draft",
        "returned": "Returned to draft",
        "publish": "Approve and publish",
        "published": "Published",
        "exclude": "Do not publish",
        "excluded": "Excluded from publication",
        "ground": "Ground",
        "ground.state_secret": "state secret",
        "ground.trade_secret": "trade secret",
        "ground.third_party_privacy": "third-party privacy",
        "ground.security_stability": "national or public security, social stability",
        "excluded_minor": "the case involves a minor and is excluded from publication (GS-15(3)) (excluded)",
        "bad_reason": "a reason of at most 2000 characters (invalid_request)",
        "bad_ground": "unknown exclusion ground (invalid_request)",
        "history": "History",
        "withdrawal": "Withdrawal (GS-12)",
        "withdrawal_note": "A decision revoked, found illegal or ordered redone comes off the portal within "
        "3 working days (GS-12). Once the order is recorded, alerts warn before the deadline until it is "
        "withdrawn.",
        "withdrawal_due_on": "Withdraw by",
        "withdrawal_overdue": "withdrawal overdue",
        "orders": "Withdrawal orders",
        "revoked_on": "Revoked, found illegal or ordered redone on (today if empty)",
        "revoked": "Revoked on",
        "order_source": "Source (optional): a reconsideration decision or a court judgment",
        "source_kind": "Kind of record",
        "source_kind.": "none (e.g. the agency revoked it itself)",
        "source_kind.reconsideration": "reconsideration decision",
        "source_kind.litigation": "court judgment",
        "source_body": "Reconsideration body or court",
        "source_document": "Document number",
        "source_decided_on": "Made on",
        "ordered_by": "Recorded by",
        "order": "Record the withdrawal order",
        "ordered": "Withdrawal order recorded; withdraw by {due}",
        "withdraw": "Withdraw from the portal (the reason is public)",
        "withdraw_revoked_on": "Revoked on (after an order, leave empty to keep its deadline)",
        "withdrawn": "Withdrawn; the portal keeps only the withdrawal notice",
        "published_items": "Published",
        "none_published": "Nothing is published.",
        "published_at": "Published",
    },
}
# GS-15: the grounds a reviewer may claim; a minor is excluded by the domain itself, never by hand.
GROUNDS: tuple[str, ...] = tuple(g.value for g in ExclusionGround if g is not ExclusionGround.MINOR)


def _texts() -> dict[str, str]:
    return TEXTS["en" if lang() == "en" else "zh"]


def _refusal(exc: ZfjlError) -> str:
    """A domain refusal in the page language with its code, as the API answers it."""
    text = exc.message_en if lang() == "en" else exc.message
    return f"{text} ({exc.code})"


@bp.get("/publication-review")
@workspace_view("publicity.list_items")
def publication_review() -> ResponseReturnValue:
    """Items in review and drafts of the caller's agency, by deadline (GS-11); overdue ones marked."""
    who = caller()
    with session_scope() as session:
        in_review, drafts, published, corrected = (
            [publicity_views.item_to_dict(i) for i in publicity_views.list_items(session, who, state=state)]
            for state in ("in_review", "draft", "published", "corrected")
        )
        audit_view(
            session,
            "publicity.review_list",
            "publication_item",
            None,
            in_review=len(in_review),
            drafts=len(drafts),
            published=len(published) + len(corrected),
        )
    # Published items, newest first: where a GS-12 withdrawal order is recorded; ordered ones first.
    public = sorted(published + corrected, key=lambda i: (i["withdrawal_due_on"] is None, -i["id"]))
    return render(
        "publication_review.html",
        q=_texts(),
        in_review=_by_deadline(in_review),
        drafts=_by_deadline(drafts),
        published=public,
    )


def _by_deadline(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earliest GS-11 deadline first, so what is overdue or nearly so heads the queue."""
    return sorted(items, key=lambda i: (i["due_on"], i["id"]))


def _runs(source: str, findings: list[dict[str, Any]], added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The source cut into runs marked ``proposed``, ``undone``, ``added`` or plain (GS-14 highlight)."""
    marks: list[str] = [""] * len(source)
    for finding in findings:
        state = "undone" if finding["undone"] else "proposed"
        for index in range(max(0, finding["start"]), min(len(source), finding["end"])):
            if marks[index] != "proposed":
                marks[index] = state
    for span in added:
        for index in range(max(0, span["start"]), min(len(source), span["end"])):
            marks[index] = "added"
    runs: list[dict[str, Any]] = []
    for index, char in enumerate(source):
        if runs and runs[-1]["mark"] == marks[index]:
            runs[-1]["text"] += char
        else:
            runs.append({"mark": marks[index], "text": char, "start": index})
    return runs


@bp.get("/publication-review/<int:item_id>")
@workspace_view("publicity.review_item")
def publication_item(item_id: int) -> ResponseReturnValue:
    """One item: the source with its proposed redactions highlighted, the decisions, the public preview."""
    return _item_page(item_id)


def _item_page(
    item_id: int, *, order_values: dict[str, str] | None = None, order_error: str = "", status: int = 200
) -> ResponseReturnValue:
    """The item page; a refused withdrawal order shows again with its error and what was typed."""
    who = caller()
    with audit_refusal("publicity.review", "publication_item", item_id), session_scope() as session:
        review = publicity_views.review_view(session, who, item_id)
        item = service.get_item(session, who, item_id)
        history = [
            {"action": h.action, "actor": h.actor, "at": h.at, "reason": h.reason}
            for h in publicity_views.history_of(session, item)
        ]
        orders = [
            publicity_views.order_to_dict(o) for o in publicity_views.withdrawal_orders_of(session, item)
        ]
        audit_view(session, "publicity.review", "publication_item", item_id, state=review["item"]["state"])
    fields = {
        name: {**field, "runs": _runs(field["source"], field["findings"], field["added"])}
        for name, field in review["fields"].items()
    }
    shown = review["item"]
    # GS-12: a published item past its ordered withdrawal deadline is late, as the alerts say.
    withdrawal_overdue = (
        shown["state"] in ("published", "corrected")
        and shown["withdrawal_due_on"] is not None
        and shown["withdrawal_due_on"] < schedules.today_in_china().isoformat()
    )
    return render(
        "publication_item.html",
        status,
        q=_texts(),
        item=shown,
        fields=fields,
        preview=review["preview"],
        text_fields=TEXT_FIELDS,
        grounds=GROUNDS,
        history=history,
        orders=orders,
        withdrawal_overdue=withdrawal_overdue,
        source_kinds=["", *(kind.value for kind in OrderSourceKind)],
        order_values=order_values or {},
        order_error=order_error,
        me=who.user_id,
    )


def _number(text: str) -> int | str:
    """A form number as an int when it is one; otherwise the text, which the domain refuses by name."""
    value = text.strip()
    digits = value[1:] if value.startswith("-") else value
    return int(value) if digits.isdigit() and len(digits) < 12 else value


def _decisions_from_form() -> dict[str, Any]:
    """The API's JSON body of ``PUT …/redactions`` built from the form, so the domain parses it alike."""
    form = request.form
    body: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        if f"present:{name}" not in form:
            continue
        added = []
        for kept in form.getlist(f"added:{name}"):
            start, _, rest = kept.partition(":")
            end, _, reason = rest.partition(":")
            added.append({"start": _number(start), "end": _number(end), "reason": reason})
        body[name] = {"undone": form.getlist(f"undone:{name}"), "added": added}
    new_start, new_end = form.get("new_start", ""), form.get("new_end", "")
    new_reason = form.get("new_reason", "")
    if new_start.strip() or new_end.strip() or new_reason.strip():
        name = form.get("new_field", "")
        entry = body.setdefault(name, {"undone": [], "added": []})
        entry["added"].append({"start": _number(new_start), "end": _number(new_end), "reason": new_reason})
    return body


def _back(item_id: int, category: str, message: str) -> ResponseReturnValue:
    return back(url_for("workspace.publication_item", item_id=item_id), category, message)


@bp.post("/publication-review/<int:item_id>/redactions")
@workspace_view("publicity.set_redactions")
def save_redactions(item_id: int) -> ResponseReturnValue:
    """Accept or undo each proposed redaction and add some by hand (GS-14), with the API's errors."""
    try:
        decisions = redactions_from_mapping(_decisions_from_form())
        with session_scope() as session:
            service.set_redactions(session, caller(), item_id, decisions)
    except NotFound:
        raise
    except ZfjlError as exc:
        return _back(item_id, "error", _refusal(exc))
    return _back(item_id, "ok", _texts()["saved"])


def _reason() -> str | None:
    reason = request.form.get("reason", "").strip()
    return reason if reason and len(reason) <= 2000 else None


def _transition(item_id: int, action: Any, done: str, *args: Any) -> ResponseReturnValue:
    """Run one workflow step of the domain; its refusal (GS-7: the author never reviews) is shown as is."""
    try:
        with session_scope() as session:
            item = action(session, caller(), item_id, *args)
            state = item.state
    except NotFound:
        raise
    except ZfjlError as exc:
        return _back(item_id, "error", _refusal(exc))
    if state == "excluded" and done != "excluded":
        # GS-15(3): a minor's case is excluded instead of submitted or published; the exclusion is
        # committed and the step asked for did not happen, which the reviewer must see.
        return _back(item_id, "error", _texts()["excluded_minor"])
    return _back(item_id, "ok", _texts()[done])


@bp.post("/publication-review/<int:item_id>/submit")
@workspace_view("publicity.submit_item")
def submit_item(item_id: int) -> ResponseReturnValue:
    """Draft → in review; incomplete national fields are the domain's precise error (GS-7)."""
    return _transition(item_id, service.submit, "submitted")


@bp.post("/publication-review/<int:item_id>/return")
@workspace_view("publicity.return_item")
def return_item(item_id: int) -> ResponseReturnValue:
    """In review → draft, with a reason."""
    reason = _reason()
    if reason is None:
        with session_scope() as session:
            service.get_item(session, caller(), item_id)  # another agency's item reads as missing first
        return _back(item_id, "error", _texts()["bad_reason"])
    return _transition(item_id, service.return_to_draft, "returned", reason)


@bp.post("/publication-review/<int:item_id>/publish")
@workspace_view("publicity.publish_item")
def publish_item(item_id: int) -> ResponseReturnValue:
    """In review → published by someone other than the author (GS-7), with its redacted copy (GS-14)."""
    return _transition(item_id, service.publish, "published")


@bp.post("/publication-review/<int:item_id>/exclude")
@workspace_view("publicity.exclude_item")
def exclude_item(item_id: int) -> ResponseReturnValue:
    """Not published on a GS-15 ground, with the reason supervisors will read."""
    reason = _reason()
    ground = request.form.get("ground", "")
    if reason is None or ground not in GROUNDS:
        with session_scope() as session:
            service.get_item(session, caller(), item_id)
        return _back(item_id, "error", _texts()["bad_reason" if reason is None else "bad_ground"])
    claim = ExclusionClaim(ground=ExclusionGround(ground), reviewer=caller().user_id, reason=reason)
    return _transition(item_id, service.exclude, "excluded", claim)


_SOURCE_FIELDS = ("kind", "body", "document_number", "decided_on")
_STATUS = {ErrorKind.CONFLICT: 409, ErrorKind.FORBIDDEN: 403}


def _order_body(form: Any) -> dict[str, Any]:
    """The API's JSON body of ``POST …/withdrawal-order`` from the form: ``source`` only when any of its
    fields is filled, so a half-filled source is refused by name rather than dropped."""
    body: dict[str, Any] = {
        "reason": form.get("reason", ""),
        "revoked_on": form.get("revoked_on", "").strip(),
    }
    source = {name: form.get(f"source.{name}", "").strip() for name in _SOURCE_FIELDS}
    if any(source.values()):
        body["source"] = source
    return body


@bp.post("/publication-review/<int:item_id>/withdrawal-order")
@workspace_view("publicity.order_withdrawal")
def order_withdrawal(item_id: int) -> ResponseReturnValue:
    """GS-12: record that a published decision must be withdrawn within 3 working days, and the
    reconsideration decision or judgment the order comes from; the deadline is alerted until it is."""
    values = {key: value for key, value in request.form.items() if key != "csrf_token"}
    try:
        order = WithdrawalOrderInput.from_json(_order_body(request.form), today=schedules.today_in_china())
        with session_scope() as session:
            item = service.order_withdrawal(
                session, caller(), item_id, order.reason, revoked_on=order.revoked_on, source=order.source
            )
            due = item.withdrawal_due_on
    except NotFound:
        raise
    except ZfjlError as exc:
        # Another agency's item reads as missing before any refusal of the input is shown.
        return _item_page(
            item_id, order_values=values, order_error=_refusal(exc), status=_STATUS.get(exc.kind, 400)
        )
    return _back(item_id, "ok", _texts()["ordered"].format(due=due.isoformat() if due else ""))


@bp.post("/publication-review/<int:item_id>/withdraw")
@workspace_view("publicity.withdraw_item")
def withdraw_item(item_id: int) -> ResponseReturnValue:
    """Published → withdrawn with a public reason (GS-12); the deadline runs from ``revoked_on``, or stays
    the one an order set, else from today."""
    reason = _reason()
    refusal = None if reason is not None else _texts()["bad_reason"]
    revoked_on = None
    try:
        revoked_on = plausible_date(
            request.form.get("revoked_on", "").strip(),
            "revoked_on",
            "决定被撤销之日",
            "the day it was revoked",
        )
    except ZfjlError as exc:
        refusal = refusal or _refusal(exc)
    if reason is None or refusal is not None:
        with session_scope() as session:
            service.get_item(session, caller(), item_id)  # another agency's item reads as missing first
        return _back(item_id, "error", refusal or "")
    return _transition(
        item_id, functools.partial(service.withdraw, revoked_on=revoked_on), "withdrawn", reason
    )
