"""The shared file helpers: one hash and one directory fsync for the agent, the server and the tools."""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

import pytest

from zfjl_common.fsutil import (
    HASH_CHUNK_BYTES,
    chunk_count,
    fsync_dir,
    sha256_fd,
    sha256_file,
    size_and_sha256_file,
    size_sha256_and_chunk_digests,
)

ROOT = Path(__file__).resolve().parents[2]

# Functions that hash bytes while doing something else with them (copying into the store, extracting a
# bundle member): not "hash a file", so they keep their own loop.
_HASH_WHILE_COPYING = {
    ("server/infra/storage.py", "put_file"),
    ("firmware_tools/bundle.py", "_hash_member"),
}


def test_jl6_the_hash_of_a_multi_chunk_file_is_its_sha256(tmp_path: Path) -> None:
    """A file bigger than one read chunk hashes to the same digest the server verifies (JL-6)."""
    data = os.urandom(HASH_CHUNK_BYTES * 2 + 17)
    path = tmp_path / "segment.mp4"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert size_and_sha256_file(path) == (len(data), expected)


@pytest.mark.parametrize(
    ("size", "chunk_bytes"),
    [
        (0, 1000),  # an empty file has no chunks
        (1, 1000),
        (3000, 1000),  # exactly on the grid
        (HASH_CHUNK_BYTES * 2 + 17, 256 * 1024),  # a read holds several chunks
        (HASH_CHUNK_BYTES * 2 + 17, 300_000),  # a chunk size that does not divide a read
        (HASH_CHUNK_BYTES + 5, HASH_CHUNK_BYTES),  # the largest chunk the server takes
    ],
)
def test_one_read_gives_the_file_hash_and_each_chunk_hash(
    tmp_path: Path, size: int, chunk_bytes: int
) -> None:
    """The seal's one pass yields what the manifest signs and what each chunk's topic names."""
    data = os.urandom(size)
    path = tmp_path / "segment.mp4"
    path.write_bytes(data)
    got_size, whole, digests = size_sha256_and_chunk_digests(path, chunk_bytes)
    assert (got_size, whole) == (size, hashlib.sha256(data).hexdigest())
    assert digests == [
        hashlib.sha256(data[i : i + chunk_bytes]).digest() for i in range(0, size, chunk_bytes)
    ]
    assert len(digests) == chunk_count(size, chunk_bytes)


def test_the_seal_reads_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both hashes are fed from the same buffer: every byte is read from the file one time."""
    data = os.urandom(HASH_CHUNK_BYTES * 3 + 1)
    path = tmp_path / "segment.mp4"
    path.write_bytes(data)
    read_bytes: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object) -> object:
        stream = real_open(self, *args, **kwargs)  # type: ignore[call-overload]
        real_read = stream.read

        def read(n: int = -1) -> bytes:
            block: bytes = real_read(n)
            read_bytes.append(len(block))
            return block

        stream.read = read
        return stream

    monkeypatch.setattr(Path, "open", counting_open)
    size_sha256_and_chunk_digests(path, 256 * 1024)
    assert sum(read_bytes) == len(data)


def test_hashing_a_descriptor_leaves_its_offset_alone(tmp_path: Path) -> None:
    """The uploader hashes the fd it then sends from: the hash must not move the read position."""
    data = b"evidence" * 1000
    path = tmp_path / "segment.mp4"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 5, os.SEEK_SET)
        assert sha256_fd(fd) == (len(data), hashlib.sha256(data).hexdigest())
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5
    finally:
        os.close(fd)


def test_fsync_dir_syncs_a_directory_and_refuses_a_file(tmp_path: Path) -> None:
    """A file passed by mistake fails loudly rather than silently syncing the wrong entry."""
    fsync_dir(tmp_path)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")


def _functions_hashing_files(source: Path) -> list[str]:
    """Functions that build ``hashlib.sha256()`` and read a file in a loop in the same body."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
        empty_sha = any(ast.unparse(c.func) == "hashlib.sha256" and not c.args for c in calls)
        reads = any(isinstance(c.func, ast.Attribute) and c.func.attr in {"read", "pread"} for c in calls)
        loops = any(isinstance(n, ast.While | ast.For) for n in ast.walk(node))
        if empty_sha and reads and loops:
            found.append(node.name)
    return found


def test_only_one_module_hashes_a_file_in_chunks() -> None:
    """Agent, server and tools share one file hash, so what the agent signs is what the server checks."""
    copies = []
    for package in ("edge_agent", "server", "firmware_tools", "protocol"):
        for source in sorted((ROOT / package).rglob("*.py")):
            relative = source.relative_to(ROOT).as_posix()
            for name in _functions_hashing_files(source):
                if (relative, name) not in _HASH_WHILE_COPYING:
                    copies.append(f"{relative}::{name}")
    assert copies == []
