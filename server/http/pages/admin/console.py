"""Device admin console ``/admin/`` (issue #5): server-rendered pages over the fleet service layer.

The session is a JWT in an HttpOnly, SameSite=Strict, Secure cookie scoped to ``/admin``, read **only**
by page views (``server/http/pages/common``, shared with the evidence workspace, which has its own
cookie scoped to ``/workspace``): the JSON API stays bearer-header only, so a
browser's cookie never authorises an ``/api/`` call. POST forms carry the token's ``csrf`` claim in a
hidden field (flask-jwt-extended's double-submit check, ``JWT_CSRF_CHECK_FORM``); the login form has its
own pre-session token. Who may see or do what is ``ENDPOINT_ROLES`` of the matching fleet API endpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from protocol.fleet import CONFIG_FIELDS, CommandKind
from server.domain.accounts import service as auth_service
from server.domain.accounts.models import User
from server.domain.accounts.roles import ENDPOINT_ROLES
from server.domain.audit import write_audit
from server.domain.base import utcnow
from server.domain.errors import Invalid, ServiceError
from server.domain.fleet import alerts as alert_service
from server.domain.fleet import assignments as assignment_service
from server.domain.fleet import commands as command_service
from server.domain.fleet import config as config_service
from server.domain.fleet import overview as overview_service
from server.domain.fleet import rollouts as rollout_service
from server.domain.fleet import service as fleet_service
from server.domain.fleet.broker_accounts import sync_broker
from server.domain.fleet.devices import device_to_dict, get_device
from server.domain.fleet.models import DEVICE_STATUSES, DeviceAlert, DeviceProfile, SerialAllowlistEntry
from server.domain.fleet.rollout_models import Rollout
from server.domain.fleet.telemetry_models import DeviceHealthSample
from server.domain.people.models import Officer
from server.http.context import client_ip
from server.http.pages.common.session import (
    Area,
    configure_cookie_sessions,
    issue_token,
    new_login_token,
    read_session,
    revoke_session,
    slid_token,
)
from server.http.pages.common.web import choose_lang, lang_url, remember_lang, secure_headers
from server.infra.config import Settings
from server.infra.db import session_scope

__all__ = ["BULK_COMMANDS", "PAGE_SIZE", "TEXT", "bp", "svg_chart"]

bp = Blueprint("admin_console", __name__, url_prefix="/admin")

PAGE_SIZE = 50
SESSION_COOKIE = "zfjl_console"
LOGIN_CSRF_COOKIE = "zfjl_console_login"
FLASH_COOKIE = "zfjl_console_flash"
LANG_COOKIE = "zfjl_console_lang"
# The console's cookies (session, login CSRF, flash, language), all with Path=/admin.
AREA = Area(prefix="/admin", cookie_prefix="zfjl_console")
# Commands an admin may send to many devices at once; rotate_credentials is per device (device page).
BULK_COMMANDS = (CommandKind.SYNC_CLOCK.value, CommandKind.UPLOAD_NOW.value, CommandKind.LOCATE.value)
DEVICE_COMMANDS = (*BULK_COMMANDS, CommandKind.ROTATE_CREDENTIALS.value)
_ROLE_ENTER = "fleet.list_devices"
_CHART_WINDOW = timedelta(hours=24)
_CHART_CIRCLES_MAX = 300
# (name, is an integer, minimum, maximum) of each desired-configuration field, for the forms.
_CONFIG_INPUTS = [(name, kind is int, low, high) for name, (kind, low, high) in CONFIG_FIELDS.items()]

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "执法记录仪管理控制台",
        "login": "登录",
        "logout": "退出",
        "username": "用户名",
        "password": "密码",
        "devices": "设备",
        "alerts": "告警",
        "lang": "English",
        "filter": "筛选",
        "reset": "清除",
        "status": "状态",
        "group": "分组",
        "any": "全部",
        "presence": "在线",
        "online": "在线",
        "offline": "离线",
        "min_backlog": "积压 ≥ 小时",
        "max_battery": "电量 ≤ %",
        "device_id": "设备编号",
        "serial": "序列号",
        "model": "型号",
        "officer": "领用人",
        "last_seen": "最后在线",
        "battery": "电量",
        "free": "剩余存储",
        "backlog": "最早待传",
        "open_alerts": "未关闭告警",
        "total": "共 {n} 台",
        "page": "第 {p} / {n} 页",
        "prev": "上一页",
        "next": "下一页",
        "selected": "对选中设备",
        "select_all": "全选",
        "assign": "领用给",
        "set_config": "设置配置",
        "send_command": "下发命令",
        "apply": "执行",
        "none": "无",
        "read_only": "只读：你的角色只能查看",
        "identity": "设备信息",
        "fingerprint": "公钥指纹",
        "agent_version": "代理版本",
        "capabilities": "设备能力（JL-13）",
        "registered": "注册时间",
        "health": "近 24 小时健康状况",
        "chart_battery": "电量 %",
        "chart_free": "剩余存储 GiB",
        "chart_backlog": "最早待传录像等待小时（JL-17：24 小时）",
        "no_samples": "近 24 小时无健康上报",
        "assignments": "领用记录",
        "checked_out": "领用时间",
        "checked_in": "归还时间",
        "by": "操作人",
        "check_out": "领用",
        "check_in": "归还",
        "recent_alerts": "告警（未关闭与最近）",
        "kind": "类型",
        "severity": "级别",
        "message": "内容",
        "raised": "发生时间",
        "cleared": "关闭时间",
        "commands": "命令",
        "state": "状态",
        "created": "创建时间",
        "expires": "过期时间",
        "result": "结果",
        "config": "配置（期望 / 已发布 / 设备上报）",
        "desired": "期望",
        "reported": "设备上报",
        "published": "已发布版本",
        "in_sync": "已同步",
        "not_in_sync": "未同步",
        "actions": "操作",
        "revoke": "吊销设备",
        "revoke_confirm": "确认吊销：设备将立即失去代理访问权限，已存证据仍可验证（JL-19）。",
        "revoke_check": "我确认要吊销该设备",
        "reason": "原因",
        "lost": "丢失",
        "retired": "报废",
        "rotate": "签发新 MQTT 密码",
        "rotate_note": "新密码只显示这一次，请写入设备的 agent.toml；旧密码在代理下次重载时失效。",
        "new_password": "新密码",
        "back": "返回",
        "no_alerts": "没有未关闭的告警",
        "error": "出错了",
        "forbidden": "你的角色不能进入设备管理控制台",
        "forbidden_action": "你的角色不能执行此操作",
        "csrf": "表单已过期，请重新打开页面后再提交",
        "login_failed": "用户名或密码错误",
        "locked": "登录失败次数过多，请稍后再试",
        "done": "已完成 {ok}/{n} 台",
        "nothing_selected": "没有选中设备",
        "no_settings": "没有填写任何配置项",
        "bad_number": "{name} 必须是整数",
        "sync_clock": "校时",
        "upload_now": "立即上传",
        "locate": "定位",
        "rotate_credentials": "轮换凭据（设备端生成）",
        "provisioned": "已注册",
        "active": "使用中",
        "provisioning": "设备注册",
        "pending_requests": "待审批的注册申请",
        "no_pending": "没有待审批的申请",
        "approve": "批准",
        "refuse": "拒绝",
        "allowlist": "序列号白名单（持名单内序列号的设备无需审批即可注册）",
        "allowlist_add": "添加序列号",
        "serials_hint": "每行一个或用逗号分隔",
        "used_by": "已被设备使用",
        "added": "添加时间",
        "allowlist_added": "新增 {n} 个序列号",
        "allowlist_remove": "移除",
        "groups": "分组",
        "members": "设备数",
        "no_groups": "还没有分组（在设备能力中设置分组）",
        "group_config": "设置分组的期望配置（新版本替换该分组原有配置，设备自身配置逐项优先）",
        "group_config_set": "分组 {group} 的期望配置已设为版本 {version}",
        "allowlist_removed": "已从白名单移除 {serial}",
        "rollouts": "升级",
        "bundles": "已登记的升级包",
        "no_bundles": "没有已登记的升级包",
        "name": "名称",
        "version": "版本",
        "uploaded": "登记时间",
        "rollout_list": "升级任务",
        "no_rollouts": "没有升级任务",
        "start_rollout": "对一个分组开始分批升级",
        "bundle": "升级包",
        "batch_size": "每批台数",
        "batch_percent": "每批百分比",
        "threshold": "成功率阈值 %",
        "batch": "批次",
        "halted": "已暂停",
        "rollout_started": "已创建升级任务 {id}",
    },
    "en": {
        "title": "Recorder admin console",
        "login": "Log in",
        "logout": "Log out",
        "username": "Username",
        "password": "Password",
        "devices": "Devices",
        "alerts": "Alerts",
        "lang": "中文",
        "filter": "Filter",
        "reset": "Clear",
        "status": "Status",
        "group": "Group",
        "any": "Any",
        "presence": "Online",
        "online": "online",
        "offline": "offline",
        "min_backlog": "Backlog ≥ h",
        "max_battery": "Battery ≤ %",
        "device_id": "Device",
        "serial": "Serial",
        "model": "Model",
        "officer": "Officer",
        "last_seen": "Last seen",
        "battery": "Battery",
        "free": "Free storage",
        "backlog": "Oldest pending",
        "open_alerts": "Open alerts",
        "total": "{n} devices",
        "page": "Page {p} of {n}",
        "prev": "Previous",
        "next": "Next",
        "selected": "Selected devices",
        "select_all": "Select all",
        "assign": "Check out to",
        "set_config": "Set configuration",
        "send_command": "Send command",
        "apply": "Apply",
        "none": "none",
        "read_only": "Read-only: your role may only look",
        "identity": "Identity",
        "fingerprint": "Key fingerprint",
        "agent_version": "Agent version",
        "capabilities": "Capabilities (JL-13)",
        "registered": "Registered",
        "health": "Health, last 24 h",
        "chart_battery": "Battery %",
        "chart_free": "Free storage GiB",
        "chart_backlog": "Oldest pending recording, hours (JL-17: 24 h)",
        "no_samples": "No health reports in the last 24 h",
        "assignments": "Assignments",
        "checked_out": "Checked out",
        "checked_in": "Checked in",
        "by": "By",
        "check_out": "Check out",
        "check_in": "Check in",
        "recent_alerts": "Alerts (open and recent)",
        "kind": "Kind",
        "severity": "Severity",
        "message": "Message",
        "raised": "Raised",
        "cleared": "Cleared",
        "commands": "Commands",
        "state": "State",
        "created": "Created",
        "expires": "Expires",
        "result": "Result",
        "config": "Configuration (desired / published / reported)",
        "desired": "Desired",
        "reported": "Reported",
        "published": "Published version",
        "in_sync": "in sync",
        "not_in_sync": "not in sync",
        "actions": "Actions",
        "revoke": "Revoke device",
        "revoke_confirm": "Confirm revocation: the device loses broker access at once; its stored evidence "
        "still verifies (JL-19).",
        "revoke_check": "I confirm revoking this device",
        "reason": "Reason",
        "lost": "lost",
        "retired": "retired",
        "rotate": "Issue a new MQTT password",
        "rotate_note": "The new password is shown this once: write it into the device's agent.toml. The old "
        "one stops working at the broker's next reload.",
        "new_password": "New password",
        "back": "Back",
        "no_alerts": "No open alerts",
        "error": "Something went wrong",
        "forbidden": "Your role may not enter the device console",
        "forbidden_action": "Your role may not do this",
        "csrf": "The form has expired: reload the page and submit again",
        "login_failed": "Invalid username or password",
        "locked": "Too many failed logins: try again later",
        "done": "Done for {ok} of {n} devices",
        "nothing_selected": "No device selected",
        "no_settings": "No setting was filled in",
        "bad_number": "{name} must be an integer",
        "sync_clock": "sync clock",
        "upload_now": "upload now",
        "locate": "locate",
        "rotate_credentials": "rotate credentials (made on the device)",
        "provisioned": "provisioned",
        "active": "active",
        "provisioning": "Provisioning",
        "pending_requests": "Pending provisioning requests",
        "no_pending": "No request is waiting",
        "approve": "Approve",
        "refuse": "Refuse",
        "allowlist": "Serial allow-list (a device presenting a listed serial joins without approval)",
        "allowlist_add": "Add serials",
        "serials_hint": "one per line or comma separated",
        "used_by": "Used by device",
        "added": "Added",
        "allowlist_added": "{n} new serial(s) added",
        "allowlist_remove": "Remove",
        "groups": "Groups",
        "members": "Devices",
        "no_groups": "No group yet (a device's group is set in its profile)",
        "group_config": "Set a group's desired configuration (a new version replaces the group's; a "
        "device's own settings still win key by key)",
        "group_config_set": "Group {group}: desired configuration is now version {version}",
        "allowlist_removed": "{serial} removed from the allow-list",
        "rollouts": "Updates",
        "bundles": "Registered update bundles",
        "no_bundles": "No bundle registered",
        "name": "Name",
        "version": "Version",
        "uploaded": "Registered",
        "rollout_list": "Rollouts",
        "no_rollouts": "No rollout yet",
        "start_rollout": "Start a staged rollout for a group",
        "bundle": "Bundle",
        "batch_size": "Devices per batch",
        "batch_percent": "Percent per batch",
        "threshold": "Success threshold %",
        "batch": "Batch",
        "halted": "halted",
        "rollout_started": "Rollout {id} created",
    },
}


@bp.record_once
def _configure(state: Any) -> None:
    """Cookie settings of the console session (only cookie-located JWTs, i.e. only this blueprint)."""
    app: Flask = state.app
    configure_cookie_sessions(app)
    # set_access_cookies / unset_access_cookies of the console write the cookie with this path.
    app.config["JWT_ACCESS_COOKIE_PATH"] = AREA.prefix


# -- request helpers -------------------------------------------------------------------------------


def _settings() -> Settings:
    settings: Settings = current_app.extensions["zfjl.settings"]
    return settings


def _lang() -> str:
    """``?lang=`` (remembered in a cookie), else Accept-Language, else Simplified Chinese."""
    return choose_lang(LANG_COOKIE)


def _t() -> dict[str, str]:
    return TEXT[_lang()]


def _may(endpoint: str) -> bool:
    """Whether the session's role may do what the fleet API endpoint of that name does."""
    role = g.console_user["role"]
    return bool(role == "system_admin" or role in ENDPOINT_ROLES[endpoint])


def _flash(response: BaseResponse, category: str, message: str) -> BaseResponse:
    """Carry one message to the next page (a signed, HttpOnly cookie scoped to the console)."""
    return AREA.flash(response, category, message)


def _take_flash() -> tuple[str, str] | None:
    return AREA.take_flash()


def _secure_headers(response: Response) -> Response:
    return secure_headers(response)


def _render(template: str, status: int = 200, **context: Any) -> Response:
    """A console page with the shared context (texts, user, CSRF value, flash) and strict headers."""
    lang = _lang()
    flash = _take_flash()
    user = getattr(g, "console_user", None)
    html = render_template(
        f"admin/{template}",
        t=TEXT[lang],
        lang=lang,
        user=user,
        csrf=getattr(g, "console_csrf", ""),
        flash=flash,
        lang_url=_lang_url("zh" if lang == "en" else "en"),
        fmt=_Format(),
        **context,
    )
    response = _secure_headers(make_response(html, status))
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return response


def _lang_url(lang: str) -> str:
    return lang_url(lang)


def _redirect_back(fallback: str, category: str, message: str) -> BaseResponse:
    """303 to the form's ``next`` (console pages only, so no open redirect) with a flash message."""
    target = request.form.get("next", "")
    if not (target.startswith("/admin/") and not target.startswith("//")):
        target = fallback
    return _flash(redirect(target, 303), category, message)


def _error(status: int, message: str) -> Response:
    return _render("error.html", status, message=message)


class _Format:
    """Display helpers for the templates."""

    def when(self, value: datetime | str | None) -> str:
        """Local date and time, to the minute."""
        if value is None:
            return "—"
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.astimezone().strftime("%Y-%m-%d %H:%M")

    def size(self, value: int | None) -> str:
        """Bytes as GiB or MiB."""
        if value is None:
            return "—"
        if value >= 1024**3:
            return f"{value / 1024**3:.1f} GiB"
        return f"{value // 1024**2} MiB"

    def hours(self, seconds: float | None) -> str:
        """An age in hours."""
        return "—" if seconds is None else f"{seconds / 3600:.1f} h"

    def overdue(self, seconds: float | None) -> bool:
        """Whether a backlog age is at the JL-17 warning threshold (20 h of the 24 h limit)."""
        return seconds is not None and seconds >= alert_service.BACKLOG_ALERT_S


# -- the session -----------------------------------------------------------------------------------


def console_view(endpoint: str = _ROLE_ENTER) -> Callable[[Callable[..., ResponseReturnValue]], Any]:
    """Decorator: a valid console cookie (CSRF-checked on POST) of an active user whose role may call
    the fleet API endpoint ``endpoint``; the token slides forward while the admin works."""

    def decorate(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            outcome, user, claims = read_session()
            if outcome == "csrf":
                return _error(400, _t()["csrf"])
            if outcome == "login" or user is None:
                return _to_login()
            g.console_user = user
            g.console_csrf = claims.get("csrf", "")
            if not _may(_ROLE_ENTER):
                return _error(403, _t()["forbidden"])
            if not _may(endpoint):
                return _error(403, _t()["forbidden_action"])
            _slide(claims)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _to_login() -> BaseResponse:
    target = request.full_path if request.method == "GET" else ""
    response = redirect(url_for("admin_console.login_form", next=target or None), 303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


def _slide(claims: dict[str, Any]) -> None:
    """Past half its life, replace the session token (role re-read, same CSRF value so open forms work)."""
    token = slid_token(claims, g.console_user)
    if token is not None:
        g.console_new_token = token  # installed by _after


@bp.after_request
def _after(response: Response) -> Response:
    """Install a slid session token and remember an explicit ``?lang=``."""
    from flask_jwt_extended import set_access_cookies

    token = g.pop("console_new_token", None)
    if token is not None:
        set_access_cookies(response, token)
    remember_lang(response, LANG_COOKIE, AREA.prefix)
    return response


@bp.errorhandler(ServiceError)
def _service_error(exc: ServiceError) -> Response:
    """A service refusal on a page (an unknown device, say) as an HTML page, not JSON."""
    status = {"not_found": 404, "conflict": 409, "forbidden": 403}.get(exc.kind, 400)
    return _error(status, _message(exc))


def _audit(session: Session, action: str, target_id: str | None, detail: dict[str, Any]) -> None:
    """Record a page view of device data, like the API's list/view audit."""
    write_audit(
        session,
        actor=str(g.console_user["id"]),
        action=action,
        target_type="device",
        target_id=target_id,
        detail={"via": "console"} | detail,
        client_ip=client_ip(),
    )


# -- login -----------------------------------------------------------------------------------------


@bp.get("/")
def index() -> ResponseReturnValue:
    """The console starts at the device list."""
    return redirect(url_for("admin_console.devices"), 303)


@bp.get("/login")
def login_form() -> ResponseReturnValue:
    """The login form, with a pre-session CSRF token (double-submit cookie)."""
    token = new_login_token()
    response = _render("login.html", login_csrf=token, next=request.args.get("next", ""), error=None)
    AREA.new_login_csrf(response, token)
    return response


@bp.post("/login")
def login() -> ResponseReturnValue:
    """Check the password (``authenticate``: lockout, audit) and open a console session for fleet roles."""
    from flask_jwt_extended import set_access_cookies

    t = _t()
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not AREA.login_csrf_ok():
        return _error(400, t["csrf"])

    def again(status: int, message: str) -> Response:
        return _render(
            "login.html", status, login_csrf=expected, next=request.form.get("next", ""), error=message
        )

    try:
        with session_scope() as session:
            user = auth_service.authenticate(
                session,
                request.form.get("username", ""),
                request.form.get("password", ""),
                client_ip=client_ip(),
            )
            claims, identity, role = auth_service.token_claims(user), str(user.id), user.role
    except auth_service.LoginThrottled as exc:
        response = again(429, t["locked"])
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except auth_service.InvalidCredentials:
        return again(401, t["login_failed"])
    if role != "system_admin" and role not in ENDPOINT_ROLES[_ROLE_ENTER]:
        return again(403, t["forbidden"])
    target = request.form.get("next", "")
    if not (target.startswith("/admin/") and not target.startswith("//")) or target.startswith(
        "/admin/login"
    ):
        target = url_for("admin_console.devices")
    redirected = cast(Response, redirect(target, 303))  # flask's redirect builds the app's response class
    set_access_cookies(redirected, issue_token(identity, claims))
    redirected.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin")
    return redirected


@bp.post("/logout")
@console_view()
def logout() -> ResponseReturnValue:
    """Revoke the session token and drop the cookie."""
    from flask_jwt_extended import get_jwt, unset_access_cookies

    revoke_session(get_jwt())
    g.pop("console_new_token", None)
    response = redirect(url_for("admin_console.login_form"), 303)
    unset_access_cookies(cast(Response, response))  # flask's redirect builds the app's response class
    return response


# -- the device list -------------------------------------------------------------------------------


def _list_filters() -> dict[str, Any]:
    """The list's filters from the query string (malformed numbers are ignored)."""
    presence = request.args.get("presence") or None
    return {
        "status": request.args.get("status") or None,
        "group": request.args.get("group") or None,
        "presence": presence if presence in ("online", "offline") else None,
        "min_backlog_age_h": request.args.get("min_backlog_age_h", type=float),
        "max_battery_pct": request.args.get("max_battery_pct", type=int),
    }


def _user_labels(session: Session, user_ids: set[int]) -> dict[int, str]:
    """``username（officer name）`` of each user id, in two queries."""
    if not user_ids:
        return {}
    labels = {
        uid: name
        for uid, name in session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
    }
    for uid, name in session.execute(
        select(Officer.user_id, Officer.name).where(Officer.user_id.in_(user_ids))
    ):
        if uid is not None:
            labels[uid] = f"{name}（{labels.get(uid, uid)}）"
    return labels


def _officer_choices(session: Session) -> list[tuple[int, str]]:
    """Active officer and auxiliary accounts a device can be checked out to."""
    ids = set(
        session.scalars(
            select(User.id).where(User.active.is_(True), User.role.in_(("officer", "auxiliary"))).limit(1000)
        )
    )
    labels = _user_labels(session, ids)
    return sorted(labels.items(), key=lambda item: item[1])


def _last_seen(row: dict[str, Any]) -> str | None:
    seen = [v for v in (row["presence_at"], row["health_at"]) if v]
    return max(seen, key=datetime.fromisoformat) if seen else None


@bp.get("/devices")
@console_view()
def devices() -> ResponseReturnValue:
    """The fleet, filtered and paginated, with bulk actions for device admins."""
    filters = _list_filters()
    page = max(request.args.get("page", 1, type=int), 1)
    with session_scope() as session:
        rows = overview_service.list_overview(session, **filters)
        pages = max((len(rows) + PAGE_SIZE - 1) // PAGE_SIZE, 1)
        page = min(page, pages)
        shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        for row in shown:
            row["last_seen"] = _last_seen(row)
        labels = _user_labels(session, {r["assigned_to"] for r in shown if r["assigned_to"] is not None})
        groups = sorted(g_ for g_ in session.scalars(select(DeviceProfile.group_name).distinct()) if g_)
        officers = _officer_choices(session) if _may("fleet.check_out") else []
        _audit(
            session,
            "device.list",
            None,
            {
                "filters": {k: v for k, v in filters.items() if v is not None},
                "page": page,
                "count": len(rows),
            },
        )
    query = {k: v for k, v in request.args.items() if k not in ("page", "lang") and v}
    return _render(
        "devices.html",
        rows=shown,
        total=len(rows),
        page=page,
        pages=pages,
        filters=filters,
        groups=groups,
        labels=labels,
        officers=officers,
        statuses=DEVICE_STATUSES,
        bulk_commands=BULK_COMMANDS,
        config_fields=_CONFIG_INPUTS,
        page_url=lambda p: url_for("admin_console.devices", **cast(dict[str, Any], query | {"page": p})),
        here=request.full_path,
        can_bulk=_may("fleet.check_out") or _may("fleet.set_config") or _may("fleet.create_command"),
        can={e: _may(f"fleet.{e}") for e in ("check_out", "set_config", "create_command")},
    )


def _config_settings(form: Any) -> dict[str, Any]:
    """The filled-in configuration fields of a form (``cfg_<name>``); integers parsed here,
    ranges checked by the service (protocol.fleet.validate_config)."""
    t = _t()
    settings: dict[str, Any] = {}
    for name, (kind, _low, _high) in CONFIG_FIELDS.items():
        value = str(form.get(f"cfg_{name}", "")).strip()
        if not value:
            continue
        if kind is int:
            try:
                settings[name] = int(value)
            except ValueError:
                raise Invalid(t["bad_number"].format(name=name), f"{name} must be an integer") from None
        else:
            settings[name] = value
    if not settings:
        raise Invalid(TEXT["zh"]["no_settings"], TEXT["en"]["no_settings"])
    return settings


def _message(exc: ServiceError) -> str:
    return exc.message_en if _lang() == "en" else exc.message


def _apply(device_id: str, action: str, form: Any) -> None:
    """One console action on one device, through the same service calls as the fleet API."""
    actor = str(g.console_user["id"])
    with session_scope() as session:
        if action == "assign":
            try:
                user_id = int(form.get("user_id", ""))
            except ValueError:
                raise Invalid("请选择领用人", "choose an officer") from None
            assignment_service.check_out(
                session,
                device_id,
                user_id,
                min_battery_pct=_settings().fleet_min_checkout_battery_pct,
                actor=actor,
            )
        elif action == "check_in":
            assignment_service.check_in(session, device_id, actor=actor)
        elif action == "config":
            config_service.set_desired(
                session, scope="device", target=device_id, settings=_config_settings(form), actor=actor
            )
        elif action == "command":
            kind = str(form.get("kind", ""))
            if kind not in DEVICE_COMMANDS:
                raise Invalid(f"未知命令 {kind}", f"unknown command {kind}")
            command_service.create_command(
                session, device_id, kind, ttl=command_service.DEFAULT_TTL, actor=actor
            )
        else:
            raise Invalid("未知操作", "unknown action")


_ACTION_ENDPOINT = {
    "assign": "fleet.check_out",
    "check_in": "fleet.check_in",
    "config": "fleet.set_config",
    "command": "fleet.create_command",
}


@bp.post("/devices/bulk")
@console_view()
def bulk() -> ResponseReturnValue:
    """Assign, configure or command the selected devices; each device succeeds or fails on its own."""
    t = _t()
    action = request.form.get("action", "")
    endpoint = _ACTION_ENDPOINT.get(action)
    if endpoint is None:
        return _error(400, "unknown action")
    if not _may(endpoint):
        return _error(403, t["forbidden_action"])
    selected = list(dict.fromkeys(request.form.getlist("device")))
    fallback = url_for("admin_console.devices")
    if not selected:
        return _redirect_back(fallback, "error", t["nothing_selected"])
    failures: list[str] = []
    for device_id in selected:
        try:
            _apply(device_id, action, request.form)
        except ServiceError as exc:
            failures.append(f"{device_id}：{_message(exc)}")
    message = t["done"].format(ok=len(selected) - len(failures), n=len(selected))
    if failures:
        message += "；" + "；".join(failures[:10]) + ("…" if len(failures) > 10 else "")
    return _redirect_back(fallback, "error" if failures else "ok", message)


# -- one device ------------------------------------------------------------------------------------


def svg_chart(
    samples: list[tuple[datetime, float]],
    *,
    series: str,
    label: str,
    start: datetime,
    end: datetime,
    y_max: float,
    thresholds: tuple[tuple[float, str], ...] = (),
) -> Markup:
    """A line chart as inline SVG (no script, no external resource): one circle per sample."""
    width, height, left, right, top, bottom = 640, 170, 44, 10, 18, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    span = (end - start).total_seconds() or 1.0
    y_max = y_max or 1.0

    def x(at: datetime) -> float:
        return left + plot_w * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    def y(value: float) -> float:
        return top + plot_h * (1 - min(max(value / y_max, 0.0), 1.0))

    parts = [
        f'<svg class="chart" data-series="{series}" data-points="{len(samples)}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
        f'<text x="{left}" y="12" class="chart-label">{escape(label)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"/>',
        f'<text x="{left - 4}" y="{top + 4}" class="tick" text-anchor="end">{y_max:g}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" class="tick" text-anchor="end">0</text>',
        f'<text x="{left}" y="{height - 4}" class="tick">{start.astimezone():%H:%M}</text>',
        f'<text x="{left + plot_w}" y="{height - 4}" class="tick" text-anchor="end">'
        f"{end.astimezone():%H:%M}</text>",
    ]
    for value, name in thresholds:
        if 0 <= value <= y_max:
            parts.append(
                f'<line x1="{left}" y1="{y(value):.1f}" x2="{left + plot_w}" y2="{y(value):.1f}" '
                f'class="threshold"/><text x="{left + plot_w - 2}" y="{y(value) - 3:.1f}" class="tick" '
                f'text-anchor="end">{escape(name)}</text>'
            )
    if samples:
        points = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in samples)
        parts.append(f'<polyline points="{points}" class="line"/>')
        if len(samples) <= _CHART_CIRCLES_MAX:
            parts.extend(
                f'<circle cx="{x(at):.1f}" cy="{y(v):.1f}" r="2.5" class="point"/>' for at, v in samples
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _charts(session: Session, device_id: str, now: datetime) -> list[Markup]:
    """Battery, free storage and backlog age over the last 24 h, from ``device_health`` samples."""
    t = _t()
    start = now - _CHART_WINDOW
    samples = list(
        session.scalars(
            select(DeviceHealthSample)
            .where(DeviceHealthSample.device_id == device_id, DeviceHealthSample.at >= start)
            .order_by(DeviceHealthSample.at, DeviceHealthSample.id)
        )
    )
    battery = [(s.at, float(s.battery_pct)) for s in samples if s.battery_pct is not None]
    free = [(s.at, s.free_bytes / 1024**3) for s in samples if s.free_bytes is not None]
    backlog = [(s.at, (s.oldest_pending_age_s or 0.0) / 3600) for s in samples]
    free_max = max([v for _, v in free] + [alert_service.LOW_STORAGE_BYTES / 1024**3]) * 1.1
    return [
        svg_chart(battery, series="battery", label=t["chart_battery"], start=start, end=now, y_max=100),
        svg_chart(
            free,
            series="free_storage",
            label=t["chart_free"],
            start=start,
            end=now,
            y_max=round(free_max, 1),
            thresholds=((alert_service.LOW_STORAGE_BYTES / 1024**3, "2 GiB"),),
        ),
        svg_chart(
            backlog,
            series="backlog_age",
            label=t["chart_backlog"],
            start=start,
            end=now,
            y_max=max([24.0] + [v for _, v in backlog]),
            # JL-17: stored within 24 h; the alert fires at 20 h.
            thresholds=((alert_service.BACKLOG_ALERT_S / 3600, "20 h"), (24.0, "24 h")),
        ),
    ]


@bp.get("/devices/<device_id>")
@console_view()
def device(device_id: str) -> ResponseReturnValue:
    """Identity, presence, 24 h health charts, assignments, alerts, commands, configuration, actions."""
    now = utcnow()
    with session_scope() as session:
        row = get_device(session, device_id)
        identity = device_to_dict(row)
        overview = overview_service.device_overview(session, row)
        overview["last_seen"] = _last_seen(overview)
        charts = _charts(session, device_id, now)
        assignments = assignment_service.assignment_history(session, device_id)[:20]
        history = [assignment_service.assignment_to_dict(a) for a in assignments]
        alerts = [
            alert_service.alert_to_dict(a)
            for a in session.scalars(
                select(DeviceAlert)
                .where(DeviceAlert.device_id == device_id)
                .order_by(DeviceAlert.cleared_at.is_not(None), DeviceAlert.raised_at.desc())
                .limit(30)
            )
        ]
        commands = [
            command_service.command_to_dict(c) for c in command_service.list_commands(session, device_id)
        ]
        shadow = config_service.shadow(session, device_id)
        labels = _user_labels(session, {a["user_id"] for a in history})
        officers = _officer_choices(session) if _may("fleet.check_out") else []
        _audit(session, "device.view", device_id, {})
    return _render(
        "device.html",
        identity=identity,
        d=overview,
        charts=charts,
        history=history,
        alerts=alerts,
        commands=commands,
        shadow=shadow,
        labels=labels,
        officers=officers,
        device_commands=DEVICE_COMMANDS,
        config_fields=_CONFIG_INPUTS,
        here=url_for("admin_console.device", device_id=device_id),
        can={
            e: _may(f"fleet.{e}")
            for e in ("check_out", "check_in", "set_config", "create_command", "revoke", "rotate_credentials")
        },
    )


@bp.post("/devices/<device_id>/action")
@console_view()
def device_action(device_id: str) -> ResponseReturnValue:
    """Check out, check in, set configuration or send a command (the device page's forms)."""
    t = _t()
    action = request.form.get("action", "")
    endpoint = _ACTION_ENDPOINT.get(action)
    if endpoint is None:
        return _error(400, "unknown action")
    if not _may(endpoint):
        return _error(403, t["forbidden_action"])
    back = url_for("admin_console.device", device_id=device_id)
    try:
        _apply(device_id, action, request.form)
    except ServiceError as exc:
        return _redirect_back(back, "error", _message(exc))
    return _redirect_back(back, "ok", t["done"].format(ok=1, n=1))


def _sync_broker() -> None:
    """Regenerate the broker's password and ACL files after a committed registry change (as the API)."""
    with session_scope() as session:
        sync_broker(session, _settings())


@bp.get("/devices/<device_id>/revoke")
@console_view("fleet.revoke")
def revoke_form(device_id: str) -> ResponseReturnValue:
    """The confirm step before a revocation."""
    with session_scope() as session:
        identity = device_to_dict(get_device(session, device_id))
    return _render("revoke.html", identity=identity)


@bp.post("/devices/<device_id>/revoke")
@console_view("fleet.revoke")
def revoke(device_id: str) -> ResponseReturnValue:
    """Revoke (lost/retired) once confirmed; the device's stored evidence stays verifiable."""
    t = _t()
    if request.form.get("confirm") != "yes":
        return redirect(url_for("admin_console.revoke_form", device_id=device_id), 303)
    back = url_for("admin_console.device", device_id=device_id)
    try:
        with session_scope() as session:
            fleet_service.revoke_device(
                session,
                device_id,
                status=request.form.get("status", "lost"),
                reason=request.form.get("reason", "")[:255],
                actor=str(g.console_user["id"]),
            )
    except ServiceError as exc:
        return _flash(redirect(back, 303), "error", _message(exc))
    _sync_broker()
    return _flash(redirect(back, 303), "ok", t["done"].format(ok=1, n=1))


@bp.post("/devices/<device_id>/credentials")
@console_view("fleet.rotate_credentials")
def rotate_credentials(device_id: str) -> ResponseReturnValue:
    """A new MQTT password, shown on this response only (never stored in clear, never flashed)."""
    with session_scope() as session:
        issued = fleet_service.issue_credential(
            session, device_id, actor=str(g.console_user["id"]), reason="rotated"
        )
    _sync_broker()
    return _render("credential.html", issued=issued)


# -- alerts ----------------------------------------------------------------------------------------


@bp.get("/alerts")
@console_view("fleet.alerts")
def alerts() -> ResponseReturnValue:
    """Open alerts across the fleet, critical first."""
    with session_scope() as session:
        rows = [alert_service.alert_to_dict(a) for a in alert_service.open_alerts(session)]
        _audit(session, "device.alerts", None, {"count": len(rows)})
    return _render("alerts.html", rows=rows)


# -- provisioning ----------------------------------------------------------------------------------

_ALLOWLIST_SHOWN = 500
_ROLLOUTS_SHOWN = 50


@bp.get("/provisioning")
@console_view("fleet.pending_requests")
def provisioning() -> ResponseReturnValue:
    """Pending provisioning requests (approve / refuse) and the serial allow-list."""
    with session_scope() as session:
        requests = [
            {
                "request_id": r.id,
                "device_id": r.device_id,
                "serial": r.serial,
                "model": r.model,
                "created_at": r.created_at,
            }
            for r in fleet_service.pending_requests(session)
        ]
        allowlist = [
            {"serial": e.serial, "model": e.model, "added_at": e.added_at, "used_by": e.used_by_device}
            for e in session.scalars(
                select(SerialAllowlistEntry)
                .order_by(SerialAllowlistEntry.added_at.desc())
                .limit(_ALLOWLIST_SHOWN)
            )
        ]
        _audit(session, "device.provisioning_view", None, {"pending": len(requests)})
    return _render(
        "provisioning.html",
        requests=requests,
        allowlist=allowlist,
        may_decide=_may("fleet.decide_request"),
        may_allow=_may("fleet.allowlist_add"),
        may_remove=_may("fleet.allowlist_remove"),
    )


@bp.post("/provisioning/<int:request_id>/<decision>")
@console_view("fleet.decide_request")
def decide_request(request_id: int, decision: str) -> ResponseReturnValue:
    """Approve or refuse one pending request (the same service calls as the API)."""
    back = url_for("admin_console.provisioning")
    actor = str(g.console_user["id"])
    try:
        with session_scope() as session:
            if decision == "approve":
                req = fleet_service.approve_request(session, request_id, actor=actor)
                # reject_request audits itself; approval is recorded here, with the request it decided.
                _audit(session, "device.provision_approve", req.device_id, {"request_id": request_id})
            elif decision == "reject":
                fleet_service.reject_request(session, request_id, actor=actor)
            else:
                return _error(404, "unknown decision")
    except ServiceError as exc:
        return _redirect_back(back, "error", _message(exc))
    return _redirect_back(back, "ok", _t()["done"].format(ok=1, n=1))


@bp.post("/allowlist")
@console_view("fleet.allowlist_add")
def allowlist_add() -> ResponseReturnValue:
    """Add serials (one per line or comma separated) to the allow-list."""
    back = url_for("admin_console.provisioning")
    serials = [part for part in request.form.get("serials", "").replace(",", "\n").split() if part]
    if not serials:
        return _redirect_back(back, "error", _t()["no_settings"])
    try:
        with session_scope() as session:
            added = fleet_service.add_allowed_serials(
                session,
                serials,
                model=request.form.get("model", "").strip()[:128],
                actor=str(g.console_user["id"]),
            )
    except ServiceError as exc:
        return _redirect_back(back, "error", _message(exc))
    return _redirect_back(back, "ok", _t()["allowlist_added"].format(n=added))


@bp.post("/allowlist/remove")
@console_view("fleet.allowlist_remove")
def allowlist_remove() -> ResponseReturnValue:
    """Take one unused serial off the allow-list (a used one stays as its device's record)."""
    back = url_for("admin_console.provisioning")
    try:
        with session_scope() as session:
            entry = fleet_service.remove_allowed_serial(
                session, request.form.get("serial", ""), actor=str(g.console_user["id"])
            )
    except ServiceError as exc:
        return _redirect_back(back, "error", _message(exc))
    return _redirect_back(back, "ok", _t()["allowlist_removed"].format(serial=entry.serial))


# -- groups ----------------------------------------------------------------------------------------


@bp.get("/groups")
@console_view()
def groups() -> ResponseReturnValue:
    """Device groups with member counts and desired configuration; the form to set a group's."""
    with session_scope() as session:
        rows = config_service.group_overview(session)
        _audit(session, "device.groups_view", None, {"groups": len(rows)})
    return _render("groups.html", rows=rows, config_fields=_CONFIG_INPUTS, may_set=_may("fleet.set_config"))


@bp.post("/groups/config")
@console_view("fleet.set_config")
def group_config() -> ResponseReturnValue:
    """A new desired config version for a group (the same service call as PUT /config/group/{name})."""
    back = url_for("admin_console.groups")
    try:
        with session_scope() as session:
            row = config_service.set_desired(
                session,
                scope="group",
                target=request.form.get("group", "").strip(),
                settings=_config_settings(request.form),
                actor=str(g.console_user["id"]),
            )
            message = _t()["group_config_set"].format(group=row.target, version=row.id)
    except ServiceError as exc:
        return _redirect_back(back, "error", _message(exc))
    return _redirect_back(back, "ok", message)


# -- rollouts --------------------------------------------------------------------------------------


def _optional_int(form: Any, name: str) -> int | None:
    raw = str(form.get(name, "")).strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise Invalid(f"{name} 必须是整数", f"{name} must be an integer") from None


@bp.get("/rollouts")
@console_view("rollouts.list_bundles")
def rollouts() -> ResponseReturnValue:
    """Registered bundles, recent rollouts with per-device results, and the form to start one."""
    may_see_rollouts = _may("rollouts.get_rollout")
    with session_scope() as session:
        bundles = [rollout_service.bundle_to_dict(row) for row in rollout_service.list_bundles(session)]
        rows: list[dict[str, Any]] = []
        if may_see_rollouts:
            for rollout in session.scalars(
                select(Rollout).order_by(Rollout.id.desc()).limit(_ROLLOUTS_SHOWN)
            ):
                rollout_service.advance(session, rollout)  # as GET /api/v1/fleet/rollouts/{id} does
                rows.append(rollout_service.rollout_to_dict(session, rollout))
        groups = sorted(
            {name for name in session.scalars(select(DeviceProfile.group_name).distinct()) if name}
        )
        _audit(session, "device.rollouts_view", None, {"bundles": len(bundles), "rollouts": len(rows)})
    return _render(
        "rollouts.html",
        bundles=bundles,
        rollouts=rows,
        groups=groups,
        may_start=_may("rollouts.create_rollout"),
    )


@bp.post("/rollouts")
@console_view("rollouts.create_rollout")
def start_rollout() -> ResponseReturnValue:
    """Start a staged rollout of a bundle to a group (rollout_service.create_rollout's rules)."""
    back = url_for("admin_console.rollouts")
    form = request.form
    try:
        threshold = _optional_int(form, "success_threshold_pct")  # the API's default: 100 %
        with session_scope() as session:
            rollout = rollout_service.create_rollout(
                session,
                bundle_id=form.get("bundle_id", ""),
                group=form.get("group", ""),
                base_url=_settings().public_url or request.host_url,
                actor=str(g.console_user["id"]),
                batch_size=_optional_int(form, "batch_size"),
                batch_percent=_optional_int(form, "batch_percent"),
                success_threshold_pct=100 if threshold is None else threshold,
            )
            rollout_id = rollout.id
    except ServiceError as exc:
        return _redirect_back(back, "error", _message(exc))
    return _redirect_back(back, "ok", _t()["rollout_started"].format(id=rollout_id))
