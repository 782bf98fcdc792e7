"""Server settings: embedded defaults, then ``ZFJL_*`` environment variables, then explicit overrides."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from server.errors import ErrorKind, ZfjlError
from server.infra.fsmode import PRIVATE_FILE, private_dir, tighten
from zfjl_verify.errors import VerifyError
from zfjl_verify.suite import DEFAULT_SUITE, SUITES, get_suite

__all__ = [
    "ENV_PREFIX",
    "SERVER_ROLES",
    "ConfigError",
    "Settings",
    "load_settings",
    "redact_url",
    "split_nats_urls",
    "url_without_credentials",
]

ENV_PREFIX = "ZFJL_"
# Variables of the test harness, CI and the other tools share the prefix but are not server settings.
_IGNORED_ENV_PREFIXES = ("ZFJL_TEST_", "ZFJL_AGENT_", "ZFJL_FW_")
_IGNORED_ENV_NAMES = frozenset({"ZFJL_REQUIRE_ALL"})
GIB = 1024**3
MIB = 1024**2


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***`` (for logs)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>" if "@" in url else url
    if password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()


def url_without_credentials(url: str) -> str:
    """``url`` without any ``user:password@`` part (what devices may be told)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class ConfigError(ZfjlError, ValueError):
    """A setting is unknown or has an invalid value (message in Chinese and English)."""

    kind = ErrorKind.INVALID
    code = "config_error"


def _parse_int(minimum: int, maximum: int | None = None) -> Callable[[str, Any], int]:
    def parse(name: str, value: Any) -> int:
        try:
            number = int(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or number < minimum or (maximum is not None and number > maximum):
            bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(
                f"配置 {name} 必须是整数 {bound} / {name} must be an integer {bound}, got {value!r}"
            )
        return number

    return parse


def _parse_witness_keys(name: str, value: Any) -> str:
    """Comma-separated cosigner vkeys (zfjl-verify witness prints its own in ``witness.pub``)."""
    from zfjl_verify import CosignerKey, VerifyError

    text = _parse_str(name, value)
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            CosignerKey.parse(item)
        except VerifyError as exc:
            raise ConfigError(
                f"配置 {name} 中的见证人公钥无效：{exc.message} / {name}: {exc.message_en}"
            ) from None
    return text


def _check_witness_quorum(values: dict[str, Any]) -> None:
    """A quorum no configured set of witnesses can meet would leave every checkpoint unwitnessed for ever."""
    from zfjl_verify import CosignerKey

    keys = [part.strip() for part in values["ledger_witness_keys"].split(",") if part.strip()]
    witnesses = len({CosignerKey.parse(key).name for key in keys})
    if keys and values["ledger_witness_quorum"] > witnesses:
        raise ConfigError(
            f"ZFJL_LEDGER_WITNESS_QUORUM 不能大于见证人数 {witnesses} / ZFJL_LEDGER_WITNESS_QUORUM must not "
            f"exceed the {witnesses} distinct witnesses of ZFJL_LEDGER_WITNESS_KEYS"
        )


def _parse_str(name: str, value: Any) -> str:
    if not isinstance(value, str | Path):
        raise ConfigError(f"配置 {name} 必须是字符串 / {name} must be a string, got {value!r}")
    return str(value).strip()


def _parse_choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        text = _parse_str(name, value).lower()
        if text not in choices:
            raise ConfigError(
                f"配置 {name} 只能取 {', '.join(choices)} / "
                f"{name} must be one of {', '.join(choices)}, got {value!r}"
            )
        return text

    return parse


def _parse_suite(name: str, value: Any) -> str:
    """A registered crypto suite this machine can compute (SM3 needs OpenSSL 3), checked at start-up."""
    text = _parse_choice(*sorted(SUITES))(name, value)
    try:
        get_suite(text).check_available()
    except VerifyError as exc:
        raise ConfigError(f"配置 {name}：{exc.message} / {name}: {exc.message_en}") from None
    return text


SERVER_ROLES = ("api", "ingest", "workers")
"""What one ``zfjl-server run`` process may do: the HTTP API, the MQTT ingest (with the fleet pushes
when ``workers`` runs elsewhere), the background loops (scrubber, ledger, housekeeping, fleet pushes)."""


def _parse_roles(name: str, value: Any) -> str:
    text = _parse_str(name, value).lower()
    roles = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [role for role in roles if role not in SERVER_ROLES]
    if not roles or unknown:
        raise ConfigError(
            f"配置 {name} 只能是 {', '.join(SERVER_ROLES)} 的组合 / "
            f"{name} must combine {', '.join(SERVER_ROLES)}, got {value!r}"
        )
    return ",".join(role for role in SERVER_ROLES if role in roles)  # canonical order, no repeats


def _parse_url(*schemes: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        text = _parse_str(name, value)
        if text and urlsplit(text).scheme.split("+")[0] not in schemes:
            raise ConfigError(
                f"配置 {name} 必须是 {'/'.join(schemes)} 地址 / "
                f"{name} must be a {'/'.join(schemes)} URL, got {text!r}"
            )
        return text

    return parse


NATS_SCHEMES = ("nats", "tls")


def split_nats_urls(text: str) -> list[str]:
    """The URLs of a comma-separated ``ZFJL_INGEST_NATS_URL`` (the nodes of one cluster)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_nats_urls(name: str, value: Any) -> str:
    """Empty, or comma-separated ``nats://`` / ``tls://`` URLs with a host (one scheme for all)."""
    text = _parse_str(name, value)
    urls = split_nats_urls(text)
    schemes = set()
    for url in urls:
        try:
            parts = urlsplit(url)
            ok = parts.scheme in NATS_SCHEMES and bool(parts.hostname) and parts.path in ("", "/")
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            ok = False
        if not ok:
            # The URL may carry a password: never echo it into a log or an error page.
            raise ConfigError(
                f"配置 {name} 必须是逗号分隔的 nats:// 或 tls:// 地址 / {name} must be comma-separated "
                f"nats://[user:password@]host:port or tls:// URLs, got {redact_url(url)!r}"
            )
        schemes.add(parts.scheme)
    if len(schemes) > 1:
        raise ConfigError(
            f"配置 {name} 不能混用 nats:// 和 tls:// / {name} must not mix nats:// and tls:// URLs"
        )
    logins = {(p.username, p.password) for p in map(urlsplit, urls) if p.username is not None}
    if len(logins) > 1:
        raise ConfigError(
            f"配置 {name} 的各节点须使用同一账号 / {name}: every node URL must carry the same login (or none)"
        )
    return ",".join(urls)


def _parse_queue_group(name: str, value: Any) -> str:
    """A NATS queue group name: 1–64 of ``[A-Za-z0-9_-]`` (no whitespace, dots or wildcards)."""
    text = _parse_str(name, value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", text):
        raise ConfigError(
            f"配置 {name} 必须是 1–64 个字母、数字、_ 或 - / {name} must be 1–64 of A-Z a-z 0-9 _ -, "
            f"got {value!r}"
        )
    return text


@dataclass(frozen=True)
class _Option:
    name: str
    default: str
    help: str
    parse: Callable[[str, Any], Any]

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


# Defaults are text so describe() can show them exactly as an operator would type them.
_OPTIONS: tuple[_Option, ...] = (
    _Option(
        "data_dir",
        "./var",
        "数据目录 / data directory (database, staging, objects, JWT secret, ingest key, MQTT login)",
        _parse_str,
    ),
    _Option(
        "database_url",
        "sqlite:///<data_dir>/zfjl.db",
        "数据库地址 / SQLAlchemy database URL",
        _parse_url("sqlite", "postgresql"),
    ),
    _Option(
        "object_store",
        "local",
        "证据存储后端 / evidence object store: local | s3",
        _parse_choice("local", "s3"),
    ),
    _Option("object_dir", "<data_dir>/objects", "本地对象目录 / local object store directory", _parse_str),
    _Option("staging_dir", "<data_dir>/staging", "上传暂存目录 / staging directory for uploads", _parse_str),
    _Option("s3_endpoint", "", "S3 端点 / S3 endpoint URL", _parse_url("http", "https")),
    _Option("s3_bucket", "zfjl-evidence", "S3 存储桶 / S3 bucket", _parse_str),
    _Option("s3_access_key", "", "S3 访问密钥 / S3 access key id", _parse_str),
    _Option("s3_secret_key", "", "S3 秘密密钥 / S3 secret access key", _parse_str),
    _Option("s3_region", "us-east-1", "S3 区域 / S3 region", _parse_str),
    _Option(
        "retention_days",
        "184",
        "证据对象锁定天数 (不少于六个月) / evidence Object Lock days (six months: 184 days covers any six "
        "calendar months)",
        _parse_int(1, 36500),
    ),
    _Option(
        "mqtt_url",
        "",
        "MQTT 代理地址，空为内置代理 / MQTT broker URL, empty = embedded broker",
        _parse_url("mqtt", "mqtts", "tcp", "ssl", "ws", "wss"),
    ),
    _Option(
        "mqtt_embedded_port",
        "1883",
        "内置代理端口 (被占用时自动换端口) / embedded broker port (a free one if taken)",
        _parse_int(0, 65535),
    ),
    _Option(
        "mqtt_share_group", "zfjl-ingest", "MQTT 共享订阅组 / MQTT shared-subscription group", _parse_str
    ),
    _Option(
        "mqtt_ca_file",
        "",
        "mqtts 代理的 CA 证书文件，空为系统 CA / CA bundle for an mqtts broker, empty = the system's CAs",
        _parse_str,
    ),
    _Option(
        "ingest_nats_url",
        "",
        "入库进程直接从 NATS 集群消费 (队列组)，逗号分隔的 nats:// 或 tls:// 地址，空为经 MQTT 入库 / "
        "ingest workers consume core NATS as one queue group: comma-separated nats://user:pass@host:port "
        "(or tls://, CA from ZFJL_MQTT_CA_FILE) of the cluster's nodes; empty = ingest over MQTT. Needs "
        "ZFJL_MQTT_URL (the devices' broker, fleet pushes)",
        _parse_nats_urls,
    ),
    _Option(
        "ingest_nats_queue",
        "zfjl-ingest",
        "NATS 入库队列组名 / NATS queue group of the ingest workers",
        _parse_queue_group,
    ),
    _Option(
        "mqtt_advertised_urls",
        "",
        "注册时告知设备的代理地址 (逗号分隔)，空为 ZFJL_MQTT_URL (去掉账号) 或内置代理的实际端口 / "
        "broker URL(s) provisioning gives devices (comma-separated); empty = ZFJL_MQTT_URL without "
        "its login, or the embedded broker's actual port",
        _parse_str,
    ),
    _Option(
        "ingest_key",
        "<generated in data_dir/ingest-key>",
        "应答签名私钥 (Ed25519，32 字节的 base64) / ingest key signing every ack (base64 of 32 raw "
        "Ed25519 bytes)",
        _parse_str,
    ),
    _Option(
        "ingest_extra_public_keys",
        "",
        "注册时额外下发的应答公钥 (逗号分隔，用于轮换) / extra ingest public keys provisioning pins "
        "(comma-separated base64; key rotation)",
        _parse_str,
    ),
    _Option(
        "jwt_secret", "<generated in data_dir/jwt-secret>", "JWT 签名密钥 / JWT signing secret", _parse_str
    ),
    _Option("http_host", "127.0.0.1", "HTTP 监听地址 / HTTP listen address", _parse_str),
    _Option("http_port", "8080", "HTTP 端口 / HTTP port", _parse_int(0, 65535)),
    _Option("ingest_workers", "1", "入库工作线程数 / ingest worker count", _parse_int(1, 64)),
    _Option(
        "ingest_processes",
        "1",
        "入库进程数 (大于 1 时需外部代理支持 $share) / ingest worker processes "
        "(more than 1 needs an external broker with $share)",
        _parse_int(1, 64),
    ),
    _Option(
        "roles",
        "api,ingest,workers",
        "本进程承担的角色 (api, ingest, workers，逗号分隔) / roles of this process "
        "(api, ingest, workers; comma-separated)",
        _parse_roles,
    ),
    _Option(
        "max_segment_bytes", str(2 * GIB), "单段最大字节数 / maximum segment size in bytes", _parse_int(1)
    ),
    _Option(
        "max_chunk_bytes", str(MIB), "单块最大字节数 / maximum upload chunk size in bytes", _parse_int(1)
    ),
    _Option(
        "staging_quota_bytes",
        str(4 * GIB),
        "每台设备暂存配额 (字节，超出时设备稍后重试) / "
        "per-device staging quota in bytes (beyond it the device retries later)",
        _parse_int(1),
    ),
    _Option(
        "staging_abandon_hours",
        "6",
        "未完成上传闲置多少小时后清除暂存字节 (保留签名清单) / hours without activity before an unfinished "
        "upload's staged bytes are cleaned (its signed manifest is kept)",
        _parse_int(1, 24 * 14),
    ),
    _Option("public_url", "", "对外访问地址 / public base URL of this server", _parse_url("http", "https")),
    _Option(
        "broker_acl_dir",
        "",
        "代理密码/ACL 文件目录，空为不生成 / directory for the generated Mosquitto password and ACL files",
        _parse_str,
    ),
    _Option(
        "broker_pid_file",
        "",
        "代理 PID 文件 (变更后发 SIGHUP) / broker pid file, SIGHUP on change",
        _parse_str,
    ),
    _Option(
        "fleet_offline_alert_minutes",
        "120",
        "设备离线告警分钟数 / minutes offline before an alert",
        _parse_int(1, 100_000),
    ),
    _Option(
        "fleet_min_checkout_battery_pct",
        "50",
        "领用最低电量 / minimum battery percent to check a device out",
        _parse_int(0, 100),
    ),
    _Option(
        "verify_rate_per_minute",
        "30",
        "公开核验页每个网段每分钟请求数 (/24, /48；按证号查询计 2 次) / "
        "public /verify requests per minute per client network (/24, /48; ?cert= counts 2)",
        _parse_int(1, 100_000),
    ),
    _Option(
        "trusted_proxy_hops",
        "0",
        "可信反向代理层数 (按 X-Forwarded-For/-Proto 取客户端地址)，0 为直连 / reverse proxies in front of "
        "the server whose X-Forwarded-For/-Proto are trusted for the client address; 0 = clients connect "
        "directly (the headers are ignored)",
        _parse_int(0, 5),
    ),
    _Option(
        "redis_url",
        "",
        "Redis 地址 (多个 API 进程共享核验限流)，空为进程内限流 / Redis URL shared by several API "
        "processes for the /verify rate limit; empty = per-process limiter",
        _parse_url("redis", "rediss", "unix"),
    ),
    _Option(
        "log_format",
        "text",
        "日志格式: text 或 json (每行一个 JSON 对象) / log format: text | json (one JSON object per line)",
        _parse_choice("text", "json"),
    ),
    _Option(
        "metrics_token",
        "",
        "/metrics 的 Bearer 令牌，空为只允许本机访问 / bearer token for /metrics; empty = loopback "
        "clients only",
        _parse_str,
    ),
    _Option(
        "scrub_bytes_per_s",
        str(8 * MIB),
        "后台证据校验速率上限 (字节/秒，0 为关闭) / background evidence scrub rate in bytes/s, 0 = off",
        _parse_int(0),
    ),
    _Option(
        "scrub_pause_s",
        "3600",
        "两轮后台校验之间的间隔秒数 / seconds between background scrub passes",
        _parse_int(1, 30 * 86400),
    ),
    _Option(
        "agency_keys_dir",
        "<data_dir>/agency-keys",
        "各机关电子印章私钥目录 (agency-<id>.key，首次使用时生成) / directory of each agency's seal key "
        "(agency-<id>.key, generated on first use)",
        _parse_str,
    ),
    _Option(
        "crypto_suite",
        DEFAULT_SUITE,
        "档案包与导出包的密码套件：sha256-ed25519，sm3-ed25519 (另加 SM3 清单，GB/T 39786)，或 sm3-sm2 "
        "(再以 SM2 印章，需 gmssl) / crypto suite of archive and export packages: sha256-ed25519, "
        "sm3-ed25519 (adds SM3 manifests), or sm3-sm2 (and an SM2 seal; needs gmssl)",
        _parse_suite,
    ),
    _Option(
        "archive_interval_s",
        "3600",
        "自动归档的轮询间隔秒数 (0 为关闭) / seconds between rounds of the archiving job, 0 = off",
        _parse_int(0, 86400),
    ),
    _Option(
        "archive_delay_hours",
        "48",
        "办结后等待多少小时再自动归档 (留给迟到的上传) / hours after an act ends before the job archives "
        "it (late uploads still arrive)",
        _parse_int(0, 24 * 20),
    ),
    _Option(
        "archive_bucket",
        "zfjl-archive",
        "档案包送交的 S3 存储桶 (ZFJL_OBJECT_STORE=s3 时) / S3 bucket archive packages are delivered to "
        "(with ZFJL_OBJECT_STORE=s3)",
        _parse_str,
    ),
    _Option(
        "archive_prefix",
        "packages/",
        "档案包在档案存储中的前缀 / key prefix of delivered archive packages",
        _parse_str,
    ),
    _Option(
        "archive_dir",
        "<data_dir>/archive",
        "档案包送交的本地目录 (本地存储时) / local directory archive packages are delivered to "
        "(with ZFJL_OBJECT_STORE=local)",
        _parse_str,
    ),
    _Option(
        "publicity_sweep_interval_s",
        "900",
        "公示、撤回、归档期限告警与公示期满下架的检查间隔秒数 / seconds between passes that raise "
        "publication, withdrawal and archive deadline alerts and take items past their disclosure period "
        "off the portal",
        _parse_int(10, 86400),
    ),
    _Option(
        "lease_ttl_s",
        "30",
        "后台单例任务租约时长秒数 (持有者每三分之一时长续约；持有进程死亡后他进程在此时长后接管) / seconds a "
        "singleton background job's lease lasts (renewed every third of it; another process takes over "
        "this long after the holder dies)",
        _parse_int(2, 3600),
    ),
    _Option(
        "ledger_witness_keys",
        "",
        "受信任的见证人公钥 (逗号分隔)：接受其联署签名并计入见证法定数，空为不接受 / trusted witness keys "
        "(comma-separated vkeys): their cosignatures of ledger checkpoints are accepted and count towards "
        "the quorum; empty = none",
        _parse_witness_keys,
    ),
    _Option(
        "ledger_witness_quorum",
        "1",
        "检查点须由多少个不同的受信任见证人联署才算已见证 (不超过见证人数) / how many distinct witnesses of "
        "ZFJL_LEDGER_WITNESS_KEYS must cosign a checkpoint before it counts as witnessed (at most their "
        "number)",
        _parse_int(1, 100),
    ),
)
_BY_NAME = {option.name: option for option in _OPTIONS}
_BY_ENV = {option.env: option for option in _OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Validated, immutable server settings."""

    data_dir: Path
    database_url: str
    object_store: str
    object_dir: Path
    staging_dir: Path
    s3_endpoint: str
    s3_bucket: str
    s3_access_key: str
    s3_secret_key: str
    s3_region: str
    retention_days: int
    mqtt_url: str
    mqtt_embedded_port: int
    mqtt_share_group: str
    mqtt_ca_file: str
    ingest_nats_url: str
    ingest_nats_queue: str
    mqtt_advertised_urls: str
    ingest_key: str
    ingest_extra_public_keys: str
    jwt_secret: str
    http_host: str
    http_port: int
    ingest_workers: int
    ingest_processes: int
    roles: str
    max_segment_bytes: int
    max_chunk_bytes: int
    staging_quota_bytes: int
    staging_abandon_hours: int
    public_url: str
    broker_acl_dir: str
    broker_pid_file: str
    fleet_offline_alert_minutes: int
    fleet_min_checkout_battery_pct: int
    verify_rate_per_minute: int
    trusted_proxy_hops: int
    redis_url: str
    log_format: str
    metrics_token: str
    scrub_bytes_per_s: int
    scrub_pause_s: int
    agency_keys_dir: Path
    crypto_suite: str
    archive_interval_s: int
    archive_delay_hours: int
    archive_bucket: str
    archive_prefix: str
    archive_dir: Path
    publicity_sweep_interval_s: int
    lease_ttl_s: int
    ledger_witness_keys: str
    ledger_witness_quorum: int

    def has_role(self, role: str) -> bool:
        """Whether this process runs ``role`` (one of :data:`SERVER_ROLES`)."""
        return role in self.roles.split(",")

    @staticmethod
    def describe() -> list[tuple[str, str, str, str]]:
        """(name, env var, default, help) for every setting, for docs generated from code."""
        return [(o.name, o.env, o.default, o.help) for o in _OPTIONS]

    def safe_dict(self) -> dict[str, Any]:
        """Settings as plain values with secrets masked, for logs and diagnostics."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in {"jwt_secret", "s3_secret_key", "ingest_key", "metrics_token"} and value:
                value = "***"
            elif f.name == "ingest_nats_url":
                value = ",".join(redact_url(url) for url in split_nats_urls(value))  # each node's login
            elif isinstance(value, str) and "://" in value:
                value = redact_url(value)  # ZFJL_MQTT_URL, ZFJL_DATABASE_URL may carry a password
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def _jwt_secret_from_file(data_dir: Path) -> str:
    """Read or create the persistent JWT secret so tokens survive restarts without configuration."""
    path = data_dir / "jwt-secret"
    tighten(path, PRIVATE_FILE)
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    private_dir(data_dir)
    secret = secrets.token_urlsafe(48)
    try:
        # O_EXCL: two processes starting at once must not each write a different secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret + "\n")
    return secret


def _check_ingest_keys(values: dict[str, Any], data_dir: Path) -> None:
    """Resolve the ingest key (generated once into the data folder) and check every key given."""
    from server.infra.ingest_key import generate_ingest_key_file, parse_private_key

    if not values.get("ingest_key"):
        values["ingest_key"] = generate_ingest_key_file(data_dir)
    try:
        parse_private_key(values["ingest_key"])
    except ValueError:
        raise ConfigError(
            "ZFJL_INGEST_KEY 必须是 32 字节 Ed25519 私钥的 base64 / "
            "ZFJL_INGEST_KEY must be base64 of a 32-byte Ed25519 private key"
        ) from None
    from protocol.downlink import decode_public_key

    for text in values.get("ingest_extra_public_keys", "").replace("\n", ",").split(","):
        if text.strip():
            try:
                decode_public_key(text.strip())
            except ValueError:
                raise ConfigError(
                    f"ZFJL_INGEST_EXTRA_PUBLIC_KEYS 含无效公钥 / not an Ed25519 public key: {text.strip()!r}"
                ) from None
    for url in values.get("mqtt_advertised_urls", "").split(","):
        if url.strip() and urlsplit(url.strip()).scheme not in ("mqtt", "mqtts"):
            raise ConfigError(
                f"ZFJL_MQTT_ADVERTISED_URLS 只能是 mqtt/mqtts 地址 / must be mqtt(s):// URLs: {url!r}"
            )


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Merge defaults, ``ZFJL_*`` env vars and overrides (keys: field names or env names) into Settings."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for key, value in env.items():
        if (
            not key.startswith(ENV_PREFIX)
            or key.startswith(_IGNORED_ENV_PREFIXES)
            or key in _IGNORED_ENV_NAMES
        ):
            continue
        option = _BY_ENV.get(key)
        if option is None:
            raise ConfigError(f"未知的环境变量 {key} / unknown environment variable {key}")
        raw[option.name] = value
    for key, value in (overrides or {}).items():
        option = _BY_NAME.get(key) or _BY_ENV.get(key)
        if option is None:
            raise ConfigError(f"未知的配置项 {key} / unknown setting {key}")
        raw[option.name] = value

    values: dict[str, Any] = {}
    for option in _OPTIONS:
        if option.name in raw:
            values[option.name] = option.parse(option.env, raw[option.name])
        elif "<" not in option.default:
            values[option.name] = option.parse(option.env, option.default)

    data_dir = Path(values["data_dir"] or ".").expanduser().resolve()
    values["data_dir"] = data_dir
    values["object_dir"] = Path(values.get("object_dir") or data_dir / "objects").expanduser().resolve()
    values["staging_dir"] = Path(values.get("staging_dir") or data_dir / "staging").expanduser().resolve()
    values["agency_keys_dir"] = (
        Path(values.get("agency_keys_dir") or data_dir / "agency-keys").expanduser().resolve()
    )
    values["archive_dir"] = Path(values.get("archive_dir") or data_dir / "archive").expanduser().resolve()
    if not values.get("database_url"):
        values["database_url"] = f"sqlite:///{data_dir / 'zfjl.db'}"
    if values["staging_quota_bytes"] < values["max_segment_bytes"]:
        # A segment larger than the quota could never be staged: the device would retry it for ever.
        raise ConfigError(
            "ZFJL_STAGING_QUOTA_BYTES 不能小于 ZFJL_MAX_SEGMENT_BYTES / "
            "ZFJL_STAGING_QUOTA_BYTES must not be smaller than ZFJL_MAX_SEGMENT_BYTES"
        )
    if values["object_store"] == "s3" and not (values["s3_endpoint"] and values["s3_bucket"]):
        raise ConfigError(
            "使用 S3 存储时必须设置 ZFJL_S3_ENDPOINT 和 ZFJL_S3_BUCKET / "
            "ZFJL_OBJECT_STORE=s3 needs ZFJL_S3_ENDPOINT and ZFJL_S3_BUCKET"
        )
    prefix = values["archive_prefix"]
    if prefix and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*/", prefix):
        raise ConfigError(
            "ZFJL_ARCHIVE_PREFIX 须为以 / 结尾的对象路径 (如 packages/) / "
            "ZFJL_ARCHIVE_PREFIX must be an object path ending in / (e.g. packages/)"
        )
    if values["ingest_nats_url"] and not values["mqtt_url"]:
        # Devices speak MQTT to the cluster's MQTT listener; the embedded broker is not on NATS.
        raise ConfigError(
            "ZFJL_INGEST_NATS_URL 需要同时设置 ZFJL_MQTT_URL (NATS 的 MQTT 监听地址) / "
            "ZFJL_INGEST_NATS_URL needs ZFJL_MQTT_URL (the cluster's MQTT listener the devices use)"
        )
    _check_witness_quorum(values)
    _check_ingest_keys(values, data_dir)
    if not values.get("jwt_secret"):
        values["jwt_secret"] = _jwt_secret_from_file(data_dir)
    elif len(values["jwt_secret"]) < 16:
        raise ConfigError("ZFJL_JWT_SECRET 至少 16 个字符 / ZFJL_JWT_SECRET must be at least 16 characters")
    return Settings(**values)
