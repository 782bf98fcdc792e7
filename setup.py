"""Build hook: the project's metadata is in pyproject.toml; this only adds the optional C accelerator.

``zfjl_verify._merkle_c`` hashes the ledger's Merkle tree in bulk with OpenSSL (docs/performance.md,
"Ledger"). It is optional: without a C compiler or OpenSSL's headers the install goes on and
``zfjl_verify.merkle`` uses hashlib, producing the same tree.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "zfjl_verify._merkle_c",
            ["zfjl_verify/_merkle_c.c"],
            libraries=["crypto"],
            optional=True,
        )
    ]
)
