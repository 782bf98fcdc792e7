"""SM2 with SM3 (JL-6) against published examples: the primitive of the ``sm3-sm2`` seal."""

from __future__ import annotations

import sys

import pytest

from zfjl_verify import sm2

# GM/T 0003.5-2012 annex (GB/T 32918 example): the 256-bit example curve over Fp.
EXAMPLE = sm2.Sm2Curve(
    p="8542D69E4C044F18E8B92435BF6FF7DE457283915C45517D722EDB8B08F1DFC3",
    a="787968B4FA32C3FD2417842E73BBFEFF2F3C848B6831D7E0EC65228B3937E498",
    b="63E4C6D3B23B0C849CF84241484BFE48F61D59A5B16BA06E6E12D1DA27C5249A",
    n="8542D69E4C044F18E8B92435BF6FF7DD297720630485628D5AE74EE7C32E79B7",
    gx="421DEBD61B62EAB6746434EBC3CC315E32220B3BADD50BDC4C4E6C147FEDD43D",
    gy="0680512BCBB42C07D47349D2153B70C4E5D7FDFCBFA36EA1A85841B9E46E09A2",
)


@pytest.mark.parametrize(
    ("curve", "ident", "message", "private", "nonce", "public_x", "signature"),
    [
        (  # GM/T 0003.5 annex: its e is B524F552…, public key 0AE4C779…
            EXAMPLE, b"ALICE123@YAHOO.COM", b"message digest",
            "128B2FA8BD433C6C068C8D803DFF79792A519A55171B1B650C23661D15897263",
            "6CB28D99385C175C94F94E934817663FC176D925DD72B727260DBAAE1FB2F96F",
            "0AE4C7798AA0F119471BEE11825BE46202BB79E2A5844495E97C04FF4DF2548A",
            "40F1EC59F793D9F49E09DCEF49130D4194F79FB1EED2CAA55BACDB49C4E755D1"
            "6FC6DAC32C5D5CF10C77DFB20F7C2EB667A457872FB09EC56327A67EC7DEEBE7",
        ),
        (  # the recommended curve sm2p256v1 (the BouncyCastle SM2Signer test vector)
            sm2.SM2P256V1, b"sm2test@example.com", b"hi chappy",
            "110E7973206F68C19EE5F7328C036F26911C8C73B4E4F36AE3291097F8984FFC",
            "3174C6FFC3C279D2422F3FC0A9F3E574674A4490FE45A5325CAF7D3EC4C8F96C",
            None,
            "05890B9077B92E47B17A1FF42A814280E556AFD92B4A98B9670BF8B1A274C2FA"
            "E3ABBB8DB2B6ECD9B24ECCEA7F679FB9A4B1DB52F4AA985E443AD73237FA1993",
        ),
    ],
)  # fmt: skip
def test_jl6_sm2_reproduces_the_published_signatures(
    curve: sm2.Sm2Curve,
    ident: bytes,
    message: bytes,
    private: str,
    nonce: str,
    public_x: str | None,
    signature: str,
) -> None:
    d = int(private, 16)
    public = sm2.public_key(d, curve)
    assert curve.contains(public)
    if public_x is not None:
        assert public[:32].hex().upper() == public_x
    made = sm2.sign(d, message, ident=ident, curve=curve, nonce=int(nonce, 16))
    assert made.hex().upper() == signature
    assert sm2.verify(public, message, made, ident=ident, curve=curve)
    assert not sm2.verify(public, message + b".", made, ident=ident, curve=curve)
    assert not sm2.verify(public, message, made, ident=b"someone else", curve=curve)


def test_jl6_sm2_refuses_out_of_range_signatures_and_off_curve_keys() -> None:
    d = sm2.generate()
    public = sm2.public_key(d)
    made = sm2.sign(d, b"zfjl")  # a random nonce
    assert sm2.verify(public, b"zfjl", made)
    n = int(sm2.SM2P256V1.n, 16)
    zero_r = bytes(32) + made[32:]
    big_s = made[:32] + n.to_bytes(32, "big")
    assert not sm2.verify(public, b"zfjl", zero_r)
    assert not sm2.verify(public, b"zfjl", big_s)
    assert not sm2.verify(public, b"zfjl", made[:63])
    off_curve = public[:63] + bytes([public[63] ^ 1])
    assert not sm2.verify(off_curve, b"zfjl", made)


def test_jl6_without_gmssl_sm2_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gmssl.sm2", None)  # as if the optional package were not installed
    with pytest.raises(sm2.Sm2Unavailable) as caught:
        sm2.public_key(1)
    assert caught.value.code == "sm2_unavailable"
    assert "pip install 'zfjl[sm]'" in caught.value.message_en
