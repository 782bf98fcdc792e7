"""The agency's electronic seal over an archive or export package (JL-18, JL-20).

A package's ``zfjl-seal.note`` is a tag file: a C2SP signed note, signed with the agency's own Ed25519
key (``zfjl-agency-<id>``), whose text names the bag and the digests of its tag manifests::

    zfjl.package-seal/1
    agency 12
    bag zfjl-case-12-20261128T110006Z
    sha256 <hex> tagmanifest-sha256.txt
    sha512 <hex> tagmanifest-sha512.txt

A package made under another crypto suite (zfjl_verify/suite.py) names it on a line after ``bag`` and
lists one tag-manifest digest per algorithm of the suite (``suite sm3-ed25519`` … ``sm3 <hex>
tagmanifest-sm3.txt``); the default suite writes no ``suite`` line, so its seals are unchanged. Under
``sm3-sm2`` the signature line is SM2 by the agency's SM2 key (zfjl_verify/sm2_note.py).

The tag manifests cover ``bagit.txt``, ``bag-info.txt`` and the payload manifests, which cover every
payload file: one signature binds every byte of the package to the agency. Without the seal a forger
who recomputes every BagIt manifest passes a BagIt validator; with it, they need the agency's key. The
seal itself is not listed in a tag manifest (it signs them; RFC 8493 allows unlisted tag files).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zfjl_verify.note import NoteKey, NoteVerifier
from zfjl_verify.suite import DEFAULT_SUITE, SUITES, SealKey, Suite, get_suite

__all__ = [
    "SEAL_FILE",
    "SEAL_FORMAT",
    "SealText",
    "agency_key_name",
    "agency_verifier",
    "parse_seal_text",
    "seal_suite_name",
    "seal_text",
    "sign_seal",
]

SEAL_FILE = "zfjl-seal.note"
SEAL_FORMAT = "zfjl.package-seal/1"


def agency_key_name(agency_id: int) -> str:
    """The name an agency's seal key signs under (and a verifier pins it by)."""
    return f"zfjl-agency-{agency_id}"


@dataclass(frozen=True, kw_only=True)
class SealText:
    """What a seal states: whose, which bag, under which suite, the digest of each tag manifest."""

    agency_id: int
    bag_name: str
    suite: str
    digests: dict[str, str]


def seal_text(agency_id: int, bag_name: str, digests: dict[str, str], suite: Suite | None = None) -> str:
    """The text an agency signs over a bag."""
    suite = suite or get_suite(DEFAULT_SUITE)
    lines = [SEAL_FORMAT, f"agency {agency_id}", f"bag {bag_name}"]
    if suite.name != DEFAULT_SUITE:
        lines.append(f"suite {suite.name}")
    lines += [f"{alg} {digests[alg]} tagmanifest-{alg}.txt" for alg in suite.digests]
    return "\n".join(lines) + "\n"


def sign_seal(
    agency_id: int,
    bag_name: str,
    digests: dict[str, str],
    private_key: SealKey,
    suite: Suite | None = None,
) -> str:
    """The signed seal note of a bag, signed by the suite's seal scheme."""
    suite = suite or get_suite(DEFAULT_SUITE)
    text = seal_text(agency_id, bag_name, digests, suite)
    return suite.seal.sign(text, agency_key_name(agency_id), private_key)


def agency_verifier(agency_id: int, private_key: SealKey) -> NoteKey:
    """The public half of an agency's seal key (Ed25519 or SM2), as a verifier pins it."""
    if isinstance(private_key, Ed25519PrivateKey):
        return NoteVerifier.from_private_key(agency_key_name(agency_id), private_key)
    return get_suite("sm3-sm2").seal.verifier(agency_key_name(agency_id), private_key)


def seal_suite_name(sealed: bytes) -> str:
    """The suite a seal names, read before its signature is checked (it says which scheme to check with).

    Only a hint: the suite line is part of the signed text, and :func:`parse_seal_text` reads it again
    from the verified text, so a forged line cannot survive the signature check.
    """
    lines = sealed.decode("utf-8", "replace").split("\n")
    if len(lines) > 3 and lines[3].startswith("suite "):
        return lines[3][len("suite ") :]
    return DEFAULT_SUITE


def parse_seal_text(text: str) -> SealText | None:
    """The statement of a verified seal text, or None if it is not one of ours (or names no known suite)."""
    lines = text.rstrip("\n").split("\n")
    if len(lines) < 3 or lines[0] != SEAL_FORMAT:
        return None
    agency, _, agency_id = lines[1].partition(" ")
    bag, _, bag_name = lines[2].partition(" ")
    if agency != "agency" or not agency_id.isdigit() or bag != "bag" or not bag_name:
        return None
    rest = lines[3:]
    suite_name = DEFAULT_SUITE
    if rest and rest[0].startswith("suite "):
        suite_name = rest.pop(0)[len("suite ") :]
        if suite_name == DEFAULT_SUITE:
            return None  # the default suite is never named: one text per statement
    suite = SUITES.get(suite_name)
    if suite is None or len(rest) != len(suite.digests):
        return None
    digests: dict[str, str] = {}
    for line, alg in zip(rest, suite.digests, strict=True):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != alg or parts[2] != f"tagmanifest-{alg}.txt":
            return None
        digests[alg] = parts[1].lower()
    return SealText(agency_id=int(agency_id), bag_name=bag_name, suite=suite.name, digests=digests)
