"""The before-enforcement catalogue in the workspace (GS-9, GS-7): the agency's entries by kind and state
(with their agency, for supervisors who read every agency) and their open update items, a form per kind
to create a draft, the same form to edit a draft or revise a published entry, and the review forms.

Each page takes the roles of the API endpoint it stands for (``catalogue.*`` in ENDPOINT_ROLES); the form
builds the same typed input the API builds (``NewCatalogueEntry``, ``EntryRevision``), so the domain's
precise refusal (``content.ratio_percent: must be …``) is shown on the form, with what was typed kept.
The workflow's rules (the reviewer never the author, nor the reviser of a revision) stay in the domain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import request, url_for
from flask.typing import ResponseReturnValue

from server.domain.errors import NotFound
from server.domain.publicity import catalogue_service
from server.domain.publicity.catalogue import CatalogueKind, ChangeCause, form_fields, public_fields
from server.domain.publicity.inputs import EntryRevision, NewCatalogueEntry
from server.errors import ErrorKind, ZfjlError
from server.http.context import caller
from server.http.pages.workspace.core import audit_view, back, bp, lang, render, workspace_view
from server.infra.db import session_scope

__all__ = [
    "TEXTS",
    "catalogue_correct",
    "catalogue_create",
    "catalogue_edit",
    "catalogue_entry",
    "catalogue_new",
    "catalogue_page",
    "catalogue_publish",
    "catalogue_return",
    "catalogue_revise",
    "catalogue_submit",
    "catalogue_withdraw",
]

TEXTS: dict[str, dict[str, str]] = {
    "zh": {
        "note": "依据《安徽省行政执法公示办法》第九条：执法前公示执法依据、程序、权责清单、随机抽查事项清单、"
        "相对人权利、投诉举报渠道和受委托组织；法律或职责变化后20个工作日内更新（GS-9）。"
        "审核发布人不得为撰写人（GS-7）。",
        "kind": "类别",
        "title": "标题",
        "state": "状态",
        "agency": "机关",
        "open": "查看",
        "none": "尚无目录条目。",
        "new": "新建条目",
        "new_kind": "新建{kind}条目",
        "updates": "待完成的更新事项",
        "no_updates": "没有待完成的更新事项。",
        "due_on": "更新期限",
        "effective_on": "变化生效日",
        "cause": "变化原因",
        "reference": "依据文件",
        "provisional": "暂定（当年节假日安排尚未公布）",
        "overdue": "已逾期",
        "closed": "已完成",
        "closed_late": "逾期完成",
        "change": "变更原因（可选；法律或职责变化时开始计算20个工作日）",
        "cause.": "无",
        "cause.law": "法律、法规、规章或规范性文件制定、修改、废止",
        "cause.duties": "职责调整",
        "cause.other": "其他（更正、完善）",
        "list_hint": "每行一步",
        "required": "必填",
        "create": "保存草稿",
        "submit": "提交审核",
        "publish": "审核发布",
        "return": "退回修改",
        "withdraw": "撤回（不再公示）",
        "reason": "理由",
        "history": "记录",
        "content": "内容",
        "pending": "待审核的修订",
        "portal": "公众查看页",
        "created": "草稿已创建。",
        "submitted": "已提交审核。",
        "published": "已公示。",
        "returned": "已退回修改。",
        "withdrawn": "已撤回。",
        "bad_reason": "须说明理由（不超过2000字）(invalid_request)",
        "state.draft": "草稿",
        "state.in_review": "待审核",
        "state.published": "已公示",
        "state.corrected": "已更正",
        "state.withdrawn": "已撤回",
        "state.expired": "已到期",
        "state.excluded": "不予公开",
        "edit": "修改草稿",
        "edit_title": "修改草稿：{title}",
        "revise": "修订（审核发布前公众仍看到现行内容）",
        "revise_title": "修订已公示条目：{title}",
        "revise_note": "修订保存后待审核；由修订人以外的审核人发布后替换公示内容（GS-7、GS-9）。",
        "save_edit": "保存修改",
        "save_revision": "保存修订，待审核",
        "edited": "草稿已修改。",
        "revised": "修订已保存，待审核发布。",
        "apply": "审核发布修订",
        "applied": "修订已发布。",
        "revised_by": "修订人",
    },
    "en": {
        "note": "Anhui Publicity Measures art. 9: before enforcement the agency publishes its legal basis, "
        "procedures, powers list, random inspection list, the party's rights, complaint channels and "
        "entrusted bodies, and updates them within 20 working days of a change in law or duties (GS-9). "
        "Whoever wrote an entry never publishes it (GS-7).",
        "kind": "Kind",
        "title": "Title",
        "state": "State",
        "agency": "Agency",
        "open": "Open",
        "none": "No catalogue entry yet.",
        "new": "New entry",
        "new_kind": "New entry: {kind}",
        "updates": "Open update items",
        "no_updates": "No open update item.",
        "due_on": "Update due",
        "effective_on": "Change took effect",
        "cause": "Cause",
        "reference": "Reference",
        "provisional": "provisional (that year's holiday schedule is not published yet)",
        "overdue": "overdue",
        "closed": "done",
        "closed_late": "done late",
        "change": "Why (optional; a change in law or duties starts the 20 working days)",
        "cause.": "none",
        "cause.law": "a law, regulation, rule or normative document made, amended or repealed",
        "cause.duties": "the agency's duties changed",
        "cause.other": "other (a correction, an improvement)",
        "list_hint": "one step per line",
        "required": "required",
        "create": "Save the draft",
        "submit": "Submit for review",
        "publish": "Publish",
        "return": "Return for changes",
        "withdraw": "Withdraw (no longer public)",
        "reason": "Reason",
        "history": "History",
        "content": "Content",
        "pending": "Revision awaiting review",
        "portal": "Public page",
        "created": "Draft created.",
        "submitted": "Submitted for review.",
        "published": "Published.",
        "returned": "Returned for changes.",
        "withdrawn": "Withdrawn.",
        "bad_reason": "a reason of at most 2000 characters (invalid_request)",
        "state.draft": "Draft",
        "state.in_review": "In review",
        "state.published": "Published",
        "state.corrected": "Corrected",
        "state.withdrawn": "Withdrawn",
        "state.expired": "Expired",
        "state.excluded": "Not published",
        "edit": "Edit the draft",
        "edit_title": "Edit the draft: {title}",
        "revise": "Revise (the public keeps the current text until the revision is published)",
        "revise_title": "Revise a published entry: {title}",
        "revise_note": "A saved revision awaits review; a reviewer other than its author publishes it in "
        "place of the public text (GS-7, GS-9).",
        "save_edit": "Save the changes",
        "save_revision": "Save the revision for review",
        "edited": "Draft changed.",
        "revised": "Revision saved; it awaits review.",
        "apply": "Publish the revision",
        "applied": "Revision published.",
        "revised_by": "Revised by",
    },
}
_STATUS = {ErrorKind.CONFLICT: 409, ErrorKind.FORBIDDEN: 403}


def _texts() -> dict[str, str]:
    return TEXTS["en" if lang() == "en" else "zh"]


def _refusal(exc: ZfjlError) -> str:
    return f"{exc.message_en if lang() == 'en' else exc.message} ({exc.code})"


def _kinds() -> list[dict[str, str]]:
    return [
        {"value": kind.value, "label": kind.label(lang()), "paragraph": kind.paragraph}
        for kind in CatalogueKind
    ]


@bp.get("/catalogue")
@workspace_view("catalogue.list_entries")
def catalogue_page() -> ResponseReturnValue:
    """The entries of the caller's agency (all for supervisors) by kind, and the open update items."""
    who = caller()
    with session_scope() as session:
        entries = [
            catalogue_service.entry_to_dict(session, e) for e in catalogue_service.list_entries(session, who)
        ]
        titles = {e["id"]: e["title"] for e in entries}
        updates = [
            {**catalogue_service.update_to_dict(u), "title": titles.get(u.entry_id, "")}
            for u in catalogue_service.list_updates(session, who, open_only=True)
        ]
        agencies = catalogue_service.agency_names(
            session, {e["agency_id"] for e in entries} | {u["agency_id"] for u in updates}
        )
        audit_view(session, "catalogue.list", "catalogue_entry", None, count=len(entries))
    by_kind = [{**kind, "entries": [e for e in entries if e["kind"] == kind["value"]]} for kind in _kinds()]
    return render(
        "catalogue.html",
        q=_texts(),
        kinds=by_kind,
        updates=updates,
        count=len(entries),
        # A supervisor or auditor reads every agency's catalogue: each row says whose it is.
        agencies=agencies if who.reads_all else None,
    )


def _form(
    kind: CatalogueKind,
    values: Mapping[str, str],
    error: str = "",
    field: str = "",
    status: int = 200,
    entry: Mapping[str, Any] | None = None,
) -> ResponseReturnValue:
    """The entry form: a new draft of ``kind``, or (``entry``) the edit of a draft or revision of a
    published entry."""
    texts = _texts()
    if entry is None:
        heading = texts["new_kind"].format(kind=kind.label(lang()))
    else:
        heading = texts["edit_title" if entry["state"] == "draft" else "revise_title"].format(
            title=entry["title"]
        )
    return render(
        "catalogue_form.html",
        status,
        q=texts,
        heading=heading,
        entry=entry,
        kind={"value": kind.value, "label": kind.label(lang()), "paragraph": kind.paragraph},
        kinds=_kinds(),
        fields=form_fields(kind, lang()),
        causes=["", *(cause.value for cause in ChangeCause)],
        values=values,
        error=error,
        error_field=field,
    )


def _kind_of(value: str | None) -> CatalogueKind:
    try:
        return CatalogueKind(value or CatalogueKind.LEGAL_BASIS.value)
    except ValueError:
        return CatalogueKind.LEGAL_BASIS


@bp.get("/catalogue/new")
@workspace_view("catalogue.create_entry")
def catalogue_new() -> ResponseReturnValue:
    """The empty form of one kind (``?kind=``), its fields those of the kind's content dataclass."""
    return _form(_kind_of(request.args.get("kind")), {})


def _body(kind: CatalogueKind, form: Mapping[str, str]) -> dict[str, Any]:
    """The API's body from the form: a list field is one item a line, a days field a whole number."""
    content: dict[str, Any] = {}
    for spec in form_fields(kind):
        raw = form.get(f"content.{spec.name}", "")
        if spec.kind == "list":
            content[spec.name] = [line.strip() for line in raw.splitlines() if line.strip()]
        elif spec.kind == "days":
            text = raw.strip()
            # A non-number goes to the domain as typed, so its refusal names the field.
            content[spec.name] = int(text) if text.isdigit() and len(text) < 6 else (text or None)
        else:
            content[spec.name] = raw
    body: dict[str, Any] = {"kind": kind.value, "content": content}
    cause = form.get("change.cause", "")
    if cause:
        body["change"] = {
            "cause": cause,
            "effective_on": form.get("change.effective_on", "").strip(),
            "reference": form.get("change.reference", ""),
        }
    return body


@bp.post("/catalogue")
@workspace_view("catalogue.create_entry")
def catalogue_create() -> ResponseReturnValue:
    """A draft of the caller's agency; a refusal re-shows the form with the domain's message and the input."""
    who = caller()
    form = request.form
    values = {key: value for key, value in form.items() if key != "csrf_token"}
    try:
        kind: CatalogueKind | None = CatalogueKind(form.get("kind", ""))
    except ValueError:
        kind = None
    try:
        # An unknown kind goes to the domain as typed: its refusal lists the kinds.
        body = _body(kind, form) if kind is not None else {"kind": form.get("kind", "")}
        data = NewCatalogueEntry.from_json(body, default_agency=who.agency_id)
        with session_scope() as session:
            entry_id = catalogue_service.create_entry(session, who, data).id
    except NotFound:
        raise
    except ZfjlError as exc:
        field = getattr(exc, "field", None) or ("kind" if kind is None else "")
        shown = kind or CatalogueKind.LEGAL_BASIS
        return _form(shown, values, _refusal(exc), field, _STATUS.get(exc.kind, 400))
    return back(url_for("workspace.catalogue_entry", entry_id=entry_id), "ok", _texts()["created"])


@bp.get("/catalogue/<int:entry_id>")
@workspace_view("catalogue.get_entry")
def catalogue_entry(entry_id: int) -> ResponseReturnValue:
    """One entry: its content as the portal shows it, update items, history, the forms its state allows."""
    with session_scope() as session:
        found = catalogue_service.get_entry(session, caller(), entry_id)
        entry = catalogue_service.entry_to_dict(session, found, history=True)
        audit_view(session, "catalogue.read", "catalogue_entry", entry_id, state=found.state)
    kind = CatalogueKind(entry["kind"])
    return render(
        "catalogue_entry.html",
        q=_texts(),
        entry=entry,
        kind_label=kind.label(lang()),
        rows=public_fields(kind, entry["content"] or {}, lang()),
        pending=public_fields(kind, entry["pending"], lang()) if entry["pending"] else [],
        me=caller().user_id,
    )


def _transition(
    entry_id: int, action: Callable[..., object], done: str, *args: object
) -> ResponseReturnValue:
    target = url_for("workspace.catalogue_entry", entry_id=entry_id)
    try:
        with session_scope() as session:
            action(session, caller(), entry_id, *args)
    except NotFound:
        raise
    except ZfjlError as exc:
        return back(target, "error", _refusal(exc))
    return back(target, "ok", _texts()[done])


def _reason_or_refusal(entry_id: int) -> str | None:
    """The form's reason; None (after checking the entry is the caller's to see) when it is missing."""
    reason = request.form.get("reason", "").strip()
    if reason and len(reason) <= 2000:
        return reason
    with session_scope() as session:
        catalogue_service.get_entry(session, caller(), entry_id)  # another agency's reads as missing first
    return None


@bp.post("/catalogue/<int:entry_id>/submit")
@workspace_view("catalogue.submit_entry")
def catalogue_submit(entry_id: int) -> ResponseReturnValue:
    """Draft → in review."""
    return _transition(entry_id, catalogue_service.submit_entry, "submitted")


@bp.post("/catalogue/<int:entry_id>/return")
@workspace_view("catalogue.return_entry")
def catalogue_return(entry_id: int) -> ResponseReturnValue:
    """In review → draft, with a reason."""
    reason = _reason_or_refusal(entry_id)
    if reason is None:
        return back(url_for("workspace.catalogue_entry", entry_id=entry_id), "error", _texts()["bad_reason"])
    return _transition(entry_id, catalogue_service.return_entry, "returned", reason)


@bp.post("/catalogue/<int:entry_id>/publish")
@workspace_view("catalogue.publish_entry")
def catalogue_publish(entry_id: int) -> ResponseReturnValue:
    """In review → published by someone other than the author (GS-7); closes its update items (GS-9)."""
    return _transition(entry_id, catalogue_service.publish_entry, "published")


@bp.post("/catalogue/<int:entry_id>/withdraw")
@workspace_view("catalogue.withdraw_entry")
def catalogue_withdraw(entry_id: int) -> ResponseReturnValue:
    """Published → withdrawn, with a reason; the entry leaves the portal."""
    reason = _reason_or_refusal(entry_id)
    if reason is None:
        return back(url_for("workspace.catalogue_entry", entry_id=entry_id), "error", _texts()["bad_reason"])
    return _transition(entry_id, catalogue_service.withdraw_entry, "withdrawn", reason)


def _values(kind: CatalogueKind, content: Mapping[str, Any]) -> dict[str, str]:
    """Stored content as the form shows it: a list one item a line, a number as its digits."""
    values: dict[str, str] = {}
    for spec in form_fields(kind):
        value = content.get(spec.name)
        if value is None:
            continue
        values[f"content.{spec.name}"] = (
            "\n".join(str(line) for line in value) if isinstance(value, list) else str(value)
        )
    return values


def _editable(entry_id: int, *, audit: bool = False) -> tuple[dict[str, Any], CatalogueKind]:
    """The entry as the caller may see it (another agency's reads as missing); ``audit`` the read like the
    entry's page does when the form shows its content."""
    with session_scope() as session:
        found = catalogue_service.get_entry(session, caller(), entry_id)
        entry = catalogue_service.entry_to_dict(session, found)
        if audit:
            audit_view(session, "catalogue.read", "catalogue_entry", entry_id, state=found.state, form="edit")
    return entry, CatalogueKind(entry["kind"])


@bp.get("/catalogue/<int:entry_id>/edit")
@workspace_view("catalogue.revise_entry")
def catalogue_edit(entry_id: int) -> ResponseReturnValue:
    """The form filled with a draft's content, or with a published entry's revision (pending, else its
    current content)."""
    entry, kind = _editable(entry_id, audit=True)
    return _form(kind, _values(kind, entry["pending"] or entry["content"] or {}), entry=entry)


@bp.post("/catalogue/<int:entry_id>/edit")
@workspace_view("catalogue.revise_entry")
def catalogue_revise(entry_id: int) -> ResponseReturnValue:
    """Edit a draft, or store a revision of a published entry for review (``PUT …/entries/{id}``); a
    change in law or duties opens its 20-working-day update item (GS-9)."""
    entry, kind = _editable(entry_id)
    form = request.form
    values = {key: value for key, value in form.items() if key != "csrf_token"}
    try:
        data = EntryRevision.from_json(_body(kind, form))
        with session_scope() as session:
            state = catalogue_service.revise_entry(session, caller(), entry_id, data).state
    except NotFound:
        raise
    except ZfjlError as exc:
        return _form(
            kind, values, _refusal(exc), getattr(exc, "field", None) or "", _STATUS.get(exc.kind, 400), entry
        )
    done = "edited" if state == "draft" else "revised"
    return back(url_for("workspace.catalogue_entry", entry_id=entry_id), "ok", _texts()[done])


@bp.post("/catalogue/<int:entry_id>/correct")
@workspace_view("catalogue.apply_revision")
def catalogue_correct(entry_id: int) -> ResponseReturnValue:
    """Published → corrected with the pending revision, by a reviewer other than the reviser, with a
    reason; its update items are closed (GS-9)."""
    reason = _reason_or_refusal(entry_id)
    if reason is None:
        return back(url_for("workspace.catalogue_entry", entry_id=entry_id), "error", _texts()["bad_reason"])
    return _transition(entry_id, catalogue_service.apply_revision, "applied", reason)
