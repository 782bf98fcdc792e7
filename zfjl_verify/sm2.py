"""SM2 signatures with SM3 (GB/T 32918.2, GM/T 0003.2): the primitive of the ``sm3-sm2`` seal (JL-6).

``cryptography`` cannot load an SM2 key, so the curve arithmetic comes from ``gmssl`` (pure Python, BSD,
optional: ``pip install 'zfjl[sm]'``), imported only when an SM2 function is called; without it the call
raises :class:`Sm2Unavailable`. This module computes what ``gmssl`` leaves to its caller: the signer's
``Z_A`` (SM3 over the distinguishing identifier, the curve and the public key) and ``e = SM3(Z_A ‖ M)``,
the range checks on ``r`` and ``s`` and the check that a public key lies on the curve. It is checked
against the published examples (GM/T 0003.5 annex on its example curve; sm2p256v1) in
tests/zfjl_verify/test_sm2.py.

Not constant-time (pure-Python big integers): fit for verifying anywhere, and for signing on a server
whose timing an attacker cannot measure finely; a hardware signer (密码机) is the assessed way to sign.
"""

from __future__ import annotations

import hashlib
import importlib
import secrets
from dataclasses import dataclass
from typing import Any

from zfjl_verify.errors import VerifyError

__all__ = [
    "DEFAULT_ID",
    "SM2P256V1",
    "Sm2Curve",
    "Sm2Unavailable",
    "generate",
    "public_key",
    "sign",
    "verify",
]

# GB/T 35276-2017: the default distinguishing identifier when the parties agreed on none.
DEFAULT_ID = b"1234567812345678"


class Sm2Unavailable(VerifyError):
    """SM2 needs the optional ``gmssl`` package, which is not installed."""

    code = "sm2_unavailable"


@dataclass(frozen=True)
class Sm2Curve:
    """Curve parameters as 64-hex-digit strings (the form ``gmssl`` takes)."""

    p: str
    a: str
    b: str
    n: str
    gx: str
    gy: str

    def table(self) -> dict[str, str]:
        """The ``ecc_table`` of ``gmssl``."""
        return {"p": self.p, "a": self.a, "b": self.b, "n": self.n, "g": self.gx + self.gy}

    def contains(self, point: bytes) -> bool:
        """Whether the 64-byte ``x ‖ y`` is a point of the curve."""
        if len(point) != 64:
            return False
        p = int(self.p, 16)
        x, y = int.from_bytes(point[:32], "big"), int.from_bytes(point[32:], "big")
        if not (0 <= x < p and 0 <= y < p):
            return False
        return (y * y - (x * x * x + int(self.a, 16) * x + int(self.b, 16))) % p == 0


# GB/T 32918.5-2017: the recommended curve.
SM2P256V1 = Sm2Curve(
    p="FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF",
    a="FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC",
    b="28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93",
    n="FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123",
    gx="32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7",
    gy="BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0",
)


def _crypt(private: int | None, public: bytes | None, curve: Sm2Curve) -> Any:
    """A ``gmssl`` CryptSM2 object (untyped: the package has no annotations)."""
    try:
        module = importlib.import_module("gmssl.sm2")
    except ImportError:
        raise Sm2Unavailable(
            "SM2 需要可选依赖 gmssl（pip install 'zfjl[sm]'）",
            "SM2 needs the optional gmssl package (pip install 'zfjl[sm]')",
        ) from None
    return module.CryptSM2(
        private_key=f"{private:064x}" if private is not None else "",
        public_key=public.hex() if public is not None else "",
        ecc_table=curve.table(),
    )


def public_key(private: int, curve: Sm2Curve = SM2P256V1) -> bytes:
    """The public key ``x ‖ y`` (64 bytes) of the private scalar ``private``."""
    crypt = _crypt(private, None, curve)
    return bytes.fromhex(str(crypt._kg(private, curve.gx + curve.gy)))


def generate(curve: Sm2Curve = SM2P256V1) -> int:
    """A new private scalar in [1, n − 2] (GB/T 32918.1 §6.1)."""
    return secrets.randbelow(int(curve.n, 16) - 2) + 1


def _e(message: bytes, public: bytes, ident: bytes, curve: Sm2Curve) -> bytes:
    """``e = SM3(Z_A ‖ M)`` with ``Z_A = SM3(ENTL_A ‖ ID_A ‖ a ‖ b ‖ x_G ‖ y_G ‖ x_A ‖ y_A)``.

    GB/T 32918.2 §5.5 and §6.1 A1–A2.
    """
    header = (len(ident) * 8).to_bytes(2, "big") + ident
    params = bytes.fromhex(curve.a + curve.b + curve.gx + curve.gy)
    z = hashlib.new("sm3", header + params + public).digest()
    return hashlib.new("sm3", z + message).digest()


def sign(
    private: int,
    message: bytes,
    *,
    ident: bytes = DEFAULT_ID,
    curve: Sm2Curve = SM2P256V1,
    nonce: int | None = None,
) -> bytes:
    """The signature ``r ‖ s`` (64 bytes) of ``message``; ``nonce`` only for the published test vectors."""
    public = public_key(private, curve)
    crypt = _crypt(private, public, curve)
    e = _e(message, public, ident, curve)
    n = int(curve.n, 16)
    while True:
        k = nonce if nonce is not None else secrets.randbelow(n - 1) + 1
        signature = crypt.sign(e, f"{k:064x}")
        if signature is not None:
            return bytes.fromhex(str(signature))
        if nonce is not None:
            raise ValueError("this nonce gives r = 0, r + k = n or s = 0; a signer draws another")


def verify(
    public: bytes, message: bytes, signature: bytes, *, ident: bytes = DEFAULT_ID, curve: Sm2Curve = SM2P256V1
) -> bool:
    """Whether ``signature`` (``r ‖ s``) is the SM2 signature of ``message`` by ``public`` (``x ‖ y``)."""
    n = int(curve.n, 16)
    if len(signature) != 64 or not curve.contains(public):
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (1 <= r < n and 1 <= s < n):  # GB/T 32918.2 §7.1 B1, B2
        return False
    crypt = _crypt(None, public, curve)
    return bool(crypt.verify(signature.hex(), _e(message, public, ident, curve)))
