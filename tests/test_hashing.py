"""sha256 of files: the same digest as hashlib's, for every size the mapped reader treats apart."""

import hashlib

import pytest

from smolconv import hashing
from smolconv.hashing import BackgroundHash, sha256_file


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 1024 * 1024 + 17])
def test_sha256_file_matches_hashlib(size, tmp_path, monkeypatch):
    # A 1 MiB chunk makes the last case cross three chunk boundaries and end mid-chunk.
    monkeypatch.setattr(hashing, "_CHUNK", 1024 * 1024)
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_background_hash_gives_the_digest_and_the_stat_it_started_from(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"gguf" * 1000)
    job = BackgroundHash(path)
    assert job.result() == hashlib.sha256(b"gguf" * 1000).hexdigest()
    assert (job.size, job.mtime_ns) == (4000, path.stat().st_mtime_ns)


def test_background_hash_hands_its_error_to_the_caller(tmp_path):
    job = BackgroundHash(tmp_path)  # stat works on a folder; opening it on the thread fails
    with pytest.raises(IsADirectoryError):
        job.result()
