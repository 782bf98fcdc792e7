"""What an uploaded file really is, from its bytes: the declared Content-Type is only a claim.

Officer photos must be PNG or JPEG with readable dimensions (they are shown on the public verification
page); case attachments must be one of a few evidence types (JL-11). Nothing is decoded beyond the
headers needed to tell the type and the image size, so no image library parses untrusted input here.
"""

from __future__ import annotations

import struct
import zlib
from typing import ClassVar

from server.domain.errors import ServiceError
from server.errors import ErrorKind

__all__ = [
    "ATTACHMENT_TYPES",
    "PHOTO_TYPES",
    "ContentMismatch",
    "UnsupportedMediaType",
    "check_attachment",
    "check_photo",
    "image_size",
    "normalise_type",
    "sniff",
]

PHOTO_TYPES: tuple[str, ...] = ("image/jpeg", "image/png")
# Evidence kinds a case file holds (documents, photos, short clips, typed notes); everything is served
# back as a download, never rendered inline.
ATTACHMENT_TYPES: tuple[str, ...] = (
    "application/pdf",
    "image/jpeg",
    "image/png",
    "video/mp4",
    "audio/mp4",
    "text/plain",
)
# Types written differently by some clients.
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_MAX_SIDE = 20_000
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carrying the image size (not DHT C4, JPG C8, DAC CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_MP4_BRANDS_BOX = b"ftyp"


class UnsupportedMediaType(ServiceError):
    """The declared type is not one this upload accepts (HTTP 415)."""

    code = "unsupported_media_type"
    kind = ErrorKind.INVALID
    status: ClassVar[int] = 415


class ContentMismatch(ServiceError):
    """The bytes are not what the declared type says (HTTP 400)."""

    code = "content_mismatch"
    kind = ErrorKind.INVALID
    status: ClassVar[int] = 400


def normalise_type(content_type: str | None) -> str:
    """``Image/PNG; q=1`` -> ``image/png`` (aliases folded)."""
    base = (content_type or "").split(";")[0].strip().lower()
    return _ALIASES.get(base, base)


def _png_size(data: bytes) -> tuple[int, int] | None:
    # PNG spec §5.3/§11.2.2: the signature, then IHDR first: length 13, type, width, height, ..., CRC.
    if len(data) < 33 or not data.startswith(_PNG_MAGIC) or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        return None
    if zlib.crc32(data[12:29]) != struct.unpack(">I", data[29:33])[0]:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # ITU T.81 Annex B: SOI, then marker segments (FF xx, 2-byte big-endian length) up to a SOFn.
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker in (0xDA, 0xD9):  # scan data or end before any frame header
            return None
        pos += 2 + length
    return None


def image_size(data: bytes, content_type: str) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG from its header, or None if it does not parse as one."""
    size = _png_size(data) if content_type == "image/png" else _jpeg_size(data)
    if size is None or not (0 < size[0] <= _MAX_SIDE and 0 < size[1] <= _MAX_SIDE):
        return None
    return size


def _is_plain_text(data: bytes) -> bool:
    # UTF-8 without NUL or other C0 controls (but tab, LF, CR, FF): text, not a binary in disguise.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 0x20 and c not in "\t\n\r\f" for c in text)


def sniff(data: bytes) -> str | None:
    """The type the bytes show, among the types this server accepts; None if none of them."""
    if data.startswith(_PNG_MAGIC):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    # ISO/IEC 14496-12 §4.3: an MP4 starts with a box of type ftyp (size, then "ftyp").
    if len(data) >= 12 and data[4:8] == _MP4_BRANDS_BOX and struct.unpack(">I", data[:4])[0] >= 8:
        return "video/mp4"
    if _is_plain_text(data):
        return "text/plain"
    return None


def _matches(declared: str, sniffed: str | None) -> bool:
    # audio/mp4 and video/mp4 share the container; the brand does not say which reliably.
    if declared == "audio/mp4":
        return sniffed == "video/mp4"
    return declared == sniffed


def check_photo(data: bytes, content_type: str | None) -> tuple[str, tuple[int, int]]:
    """The photo's normalised type and size; refuses other types and bytes that are not that image."""
    declared = normalise_type(content_type)
    if declared not in PHOTO_TYPES:
        raise UnsupportedMediaType(
            f"照片必须是 JPEG 或 PNG（收到 {declared or '无类型'}）",
            f"photo must be JPEG or PNG (got {declared or 'no type'})",
        )
    if sniff(data) != declared:
        raise ContentMismatch(f"照片内容不是 {declared}", f"the photo's bytes are not {declared}")
    size = image_size(data, declared)
    if size is None:
        raise ContentMismatch(
            "照片无法解析（文件损坏或尺寸无效）", "the photo does not parse (corrupt or invalid size)"
        )
    return declared, size


def check_attachment(data: bytes, content_type: str | None) -> str:
    """The attachment's normalised type; refuses types outside ATTACHMENT_TYPES and mismatched bytes."""
    declared = normalise_type(content_type)
    if declared not in ATTACHMENT_TYPES:
        allowed = ", ".join(ATTACHMENT_TYPES)
        raise UnsupportedMediaType(
            f"不支持的附件类型 {declared or '无类型'}，仅接受：{allowed}",
            f"unsupported attachment type {declared or 'none'}; accepted: {allowed}",
        )
    if not _matches(declared, sniff(data)):
        raise ContentMismatch(
            f"附件内容与声明的类型 {declared} 不符", f"the attachment's bytes are not {declared}"
        )
    if declared in PHOTO_TYPES and image_size(data, declared) is None:
        raise ContentMismatch(
            "图片无法解析（文件损坏或尺寸无效）", "the image does not parse (corrupt or invalid size)"
        )
    return declared
