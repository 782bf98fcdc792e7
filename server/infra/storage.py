"""Write-once evidence object stores: a local directory or S3 (SeaweedFS, MinIO, AWS) with Object Lock."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from server.errors import ErrorKind, ZfjlError
from server.infra.fsmode import READ_ONLY_FILE, create_private_file, private_dir
from zfjl_common.fsutil import fsync_dir, size_and_sha256_file

if TYPE_CHECKING:
    from server.infra.config import Settings

__all__ = [
    "ARCHIVE_STORE_KEY",
    "STORE_KEY",
    "LocalObjectStore",
    "ObjectConflict",
    "ObjectIntegrityError",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "StoredObject",
    "make_archive_store",
    "make_object_store",
    "recording_key",
]

# Where create_app keeps the object store in ``app.extensions`` (read by the API and the ingest worker).
STORE_KEY = "zfjl.store"
# Where create_app keeps the archive store, to which archive packages are delivered (JL-18).
ARCHIVE_STORE_KEY = "zfjl.archive_store"

READ_CHUNK = 1024 * 1024
MIN_PART_SIZE = 8 * 1024 * 1024
# Checksum of each upload request (per part): a transport check only, the evidence hash is the file's
# SHA-256 in the metadata. CRC-32 is computed by botocore with zlib (CRC-32C would need awscrt) and is
# accepted by AWS S3, SeaweedFS and MinIO.
TRANSPORT_CHECKSUM = "CRC32"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,511}")


class ObjectConflict(ZfjlError):
    """The key already holds different content; evidence is never overwritten."""

    kind = ErrorKind.CONFLICT
    code = "object_conflict"


class ObjectIntegrityError(ZfjlError):
    """The bytes given to the store do not hash to the declared sha256."""

    kind = ErrorKind.REJECTED
    code = "object_integrity_error"


class ObjectNotFound(ZfjlError):
    """No object under that key."""

    kind = ErrorKind.NOT_FOUND
    code = "object_not_found"


@dataclass(frozen=True)
class StoredObject:
    """Where an object lives and what it is; ``created`` is False when it was already there."""

    key: str
    size: int
    sha256: str
    backend: str
    created: bool


class ObjectStore(Protocol):
    """A write-once blob store; ranges are inclusive like HTTP's."""

    backend: str

    def put_file(self, key: str, path: Path, sha256: str, *, verified: bool = False) -> StoredObject:
        """Store ``path`` under ``key`` unless already there with the same sha256.

        ``verified=True``: the caller has just hashed ``path`` and will never write it again, so the
        store may skip hashing it once more (and the local store may link it instead of copying).
        """
        ...

    def open_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Yield bytes ``start..end`` inclusive."""
        ...

    def size(self, key: str) -> int:
        """Size in bytes of the object."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the key holds an object."""
        ...

    def ping(self) -> bool:
        """Whether the store is reachable and usable."""
        ...


def recording_key(device_id: str, sequence: int, sha256: str) -> str:
    """The object key of a recording segment."""
    return f"recordings/{device_id}/{sequence:010d}-{sha256}.mp4"


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key.split("/") or "//" in key:
        raise ValueError(f"invalid object key {key!r}")
    return key


class LocalObjectStore:
    """Objects as read-only files under a root directory, written atomically and never replaced."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_file(self, key: str, path: Path, sha256: str, *, verified: bool = False) -> StoredObject:
        """Copy ``path`` in via tmp + fsync + hard link (link never replaces an existing file)."""
        target = self._path(key)
        if target.exists():
            return self._existing(key, target, sha256)
        private_dir(target.parent)
        tmp = target.parent / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        if verified:
            adopted = self._adopt(key, Path(path), tmp, target, sha256)
            if adopted is not None:
                return adopted
        digest = hashlib.sha256()
        size = 0
        try:
            with Path(path).open("rb") as src, os.fdopen(create_private_file(tmp), "wb") as dst:
                while chunk := src.read(READ_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            if digest.hexdigest() != sha256:
                raise ObjectIntegrityError(f"{path} does not hash to {sha256}")
            os.chmod(tmp, READ_ONLY_FILE)
            try:
                # link() fails if the target appeared meanwhile, where rename() would silently replace it.
                os.link(tmp, target)
            except FileExistsError:
                return self._existing(key, target, sha256)
            fsync_dir(target.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredObject(key=key, size=size, sha256=sha256, backend=self.backend, created=True)

    def _adopt(self, key: str, path: Path, tmp: Path, target: Path, sha256: str) -> StoredObject | None:
        """Link a verified, fsynced file in without copying it; None if it is on another filesystem."""
        try:
            os.link(path, tmp)
        except OSError:
            return None  # e.g. EXDEV: staging on another filesystem; copy instead
        try:
            os.chmod(tmp, READ_ONLY_FILE)
            size = tmp.stat().st_size
            try:
                os.link(tmp, target)
            except FileExistsError:
                return self._existing(key, target, sha256)
            fsync_dir(target.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredObject(key=key, size=size, sha256=sha256, backend=self.backend, created=True)

    def _existing(self, key: str, target: Path, sha256: str) -> StoredObject:
        size, actual = size_and_sha256_file(target)
        if actual != sha256:
            raise ObjectConflict(f"object {key} exists with different content")
        return StoredObject(key=key, size=size, sha256=sha256, backend=self.backend, created=False)

    def open_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Yield the inclusive byte range from the file."""
        path = self._path(key)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        return self._iter(fh, start, end)

    @staticmethod
    def _iter(fh: Any, start: int, end: int) -> Iterator[bytes]:
        with fh:
            fh.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = fh.read(min(READ_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    def size(self, key: str) -> int:
        """File size of the object."""
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        """Whether the file exists."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the object for good; only an approved JL-19 disposal calls this (ObjectNotFound if gone)."""
        target = self._path(key)
        try:
            target.unlink()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        fsync_dir(target.parent)

    def extend_retention(self, key: str, until: datetime | None) -> bool:
        """A directory has no retention lock to extend: the database's retention rules are the only guard."""
        return False

    def sweep_temp_files(self, pid: int) -> int:
        """Remove the temporary files a dead process ``pid`` left half-way through ``put_file``.

        A process killed between writing its ``.NAME.PID.RANDOM.tmp`` and linking it leaves it behind;
        the segment itself is stored again by whoever finishes the transfer. Only files named with
        ``pid`` are touched, so puts of live processes are safe. The number removed.
        """
        removed = 0
        for tmp in self.root.rglob(f".*.{int(pid)}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
        return removed

    def ping(self) -> bool:
        """Whether the root directory exists (or can be created) and is writable."""
        try:
            private_dir(self.root)
        except OSError:
            return False
        return os.access(self.root, os.W_OK)


def _client_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


_MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class S3ObjectStore:
    """Objects in an S3 bucket; with Object Lock each version is held in COMPLIANCE mode for the retention."""

    backend = "s3"

    def __init__(self, client: Any, bucket: str, retention_days: int, part_size: int = MIN_PART_SIZE) -> None:
        self.client = client
        self.bucket = bucket
        self.retention_days = retention_days
        self.part_size = max(part_size, MIN_PART_SIZE)
        self._object_lock: bool | None = None

    def ensure_bucket(self) -> None:
        """Create the bucket with Object Lock enabled when it does not exist."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            if _client_error_code(exc) not in _MISSING_CODES:
                raise
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "ObjectLockEnabledForBucket": True}
        region = self.client.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self.client.create_bucket(**kwargs)
        self._object_lock = None

    def object_lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock (cached after the first answer)."""
        if self._object_lock is None:
            try:
                cfg = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = cfg.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except Exception as exc:
                if (
                    "ObjectLockConfigurationNotFound" not in _client_error_code(exc)
                    and _client_error_code(exc) not in _MISSING_CODES
                ):
                    raise
                enabled = False
            self._object_lock = enabled
        return self._object_lock

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=_check_key(key))
        except Exception as exc:
            if _client_error_code(exc) in _MISSING_CODES:
                return None
            raise
        return head

    def put_file(self, key: str, path: Path, sha256: str, *, verified: bool = False) -> StoredObject:
        """Upload unless present: multipart above part size, CRC-32 checksums, locked if the bucket is.

        The file's SHA-256 (verified against the signed manifest before this call, or here when not
        ``verified``) goes into the object's metadata, where the idempotency check and the scrub read
        it. Each request carries a CRC-32 of its bytes so the store refuses a part damaged in transit
        (and because S3 wants a checksum on every write to an Object Lock bucket): a SHA-256 here
        would be a second SHA-256 pass over every byte for no more than that transport check, and
        the multipart composite of per-part checksums is not the file's hash either way.
        """
        from boto3.s3.transfer import TransferConfig

        head = self._head(key)
        if head is not None:
            return self._existing(key, head, sha256)
        if verified:
            size = Path(path).stat().st_size
        else:
            size, actual = size_and_sha256_file(Path(path))
            if actual != sha256:
                raise ObjectIntegrityError(f"{path} does not hash to {sha256}")
        extra: dict[str, Any] = {
            "ChecksumAlgorithm": TRANSPORT_CHECKSUM,
            # The composite multipart checksum is not the file's sha256, so keep the real one in metadata.
            "Metadata": {"sha256": sha256},
            "ContentType": "application/octet-stream",
        }
        if self.object_lock_enabled():
            extra["ObjectLockMode"] = "COMPLIANCE"
            extra["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.retention_days)
        config = TransferConfig(
            multipart_threshold=self.part_size, multipart_chunksize=self.part_size, use_threads=False
        )
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=config)
        return StoredObject(key=key, size=size, sha256=sha256, backend=self.backend, created=True)

    def _existing(self, key: str, head: dict[str, Any], sha256: str) -> StoredObject:
        stored = head.get("Metadata", {}).get("sha256")
        if stored != sha256:
            raise ObjectConflict(f"object {key} exists with different content")
        return StoredObject(
            key=key, size=int(head["ContentLength"]), sha256=sha256, backend=self.backend, created=False
        )

    def open_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Yield the inclusive byte range via a ranged GET."""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=_check_key(key), Range=f"bytes={start}-{end}"
            )
        except Exception as exc:
            if _client_error_code(exc) in _MISSING_CODES:
                raise ObjectNotFound(key) from None
            raise
        return self._iter(response["Body"])

    @staticmethod
    def _iter(body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def size(self, key: str) -> int:
        """ContentLength of the object."""
        head = self._head(key)
        if head is None:
            raise ObjectNotFound(key)
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        """Whether HEAD finds the object."""
        return self._head(key) is not None

    def extend_retention(self, key: str, until: datetime | None) -> bool:
        """Lengthen the Object Lock of every version of ``key`` to ``until``; ``None`` (permanent, open case,
        legal hold) sets the object's legal hold. COMPLIANCE retention can only grow, so an earlier date
        than the one set is left alone. False when the bucket has no Object Lock (JL-19)."""
        if not self.object_lock_enabled():
            return False
        for version_id in self._versions(key):
            if until is None:
                self.client.put_object_legal_hold(
                    Bucket=self.bucket, Key=key, VersionId=version_id, LegalHold={"Status": "ON"}
                )
                continue
            current = self.client.get_object_retention(Bucket=self.bucket, Key=key, VersionId=version_id)
            held = current.get("Retention", {}).get("RetainUntilDate")
            if held is None or held < until:
                self.client.put_object_retention(
                    Bucket=self.bucket,
                    Key=key,
                    VersionId=version_id,
                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
                )
        return True

    def delete(self, key: str) -> None:
        """Remove every version of the object (JL-19 disposal only): the legal hold is lifted first; a
        COMPLIANCE retention still running makes the store refuse, and the disposal fails with it."""
        versions = self._versions(key)
        if not versions:
            raise ObjectNotFound(key)
        for version_id in versions:
            if self.object_lock_enabled():
                self.client.put_object_legal_hold(
                    Bucket=self.bucket, Key=key, VersionId=version_id, LegalHold={"Status": "OFF"}
                )
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            except Exception as exc:
                if _client_error_code(exc) in ("AccessDenied", "InvalidRequest"):
                    raise ObjectConflict(f"object {key} is still locked by the store's retention") from exc
                raise

    def _versions(self, key: str) -> list[str]:
        """Every version id (and delete marker) of exactly ``key``."""
        answer = self.client.list_object_versions(Bucket=self.bucket, Prefix=_check_key(key))
        found = [v for v in answer.get("Versions", []) + answer.get("DeleteMarkers", []) if v["Key"] == key]
        return [str(v["VersionId"]) for v in found]

    def ping(self) -> bool:
        """Whether the bucket answers HEAD."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception:
            return False
        return True

    @staticmethod
    def checksum_b64(sha256: str) -> str:
        """The base64 form S3 uses for a single-part ChecksumSHA256."""
        return base64.b64encode(bytes.fromhex(sha256)).decode("ascii")


def make_s3_client(endpoint: str, access_key: str, secret_key: str, region: str) -> Any:
    """A boto3 S3 client for an S3-compatible endpoint (path-style; no network I/O on creation)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint or None,
        aws_access_key_id=access_key or None,
        aws_secret_access_key=secret_key or None,
        region_name=region or "us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            # Only send checksums we ask for: S3-compatible stores vary in CRC support.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def make_object_store(settings: Settings) -> ObjectStore:
    """The object store the settings name (no network I/O; call ensure_bucket() at service start)."""
    if settings.object_store == "s3":
        client = make_s3_client(
            settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_region
        )
        return S3ObjectStore(client, settings.s3_bucket, settings.retention_days)
    return LocalObjectStore(settings.object_dir)


def make_archive_store(settings: Settings) -> ObjectStore:
    """Where archive packages are delivered (JL-18): a separate bucket on S3, a local folder otherwise.

    The archive bucket gets the same Object Lock retention as evidence; call ensure_bucket() at start.
    """
    if settings.object_store == "s3":
        client = make_s3_client(
            settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_region
        )
        return S3ObjectStore(client, settings.archive_bucket, settings.retention_days)
    return LocalObjectStore(settings.archive_dir)
