"""sha256 of files: the same digest as hashlib's, for every size the mapped reader treats apart."""

import hashlib
import subprocess
import sys

import pytest

from smolconv.core import hashing
from smolconv.core.hashing import BackgroundHash, WrittenFileHash, sha256_file


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


# Writes as llama-quantize does: zeros where the header goes, the data front to back (flushed, with pauses, so
# the hash follows a file still growing), then the header over the zeros.
HEADER_LAST_WRITER = """
import sys, time
path, header = sys.argv[1], bytes.fromhex(sys.argv[2])
with open(path, "wb") as f:
    f.write(bytes(len(header)))
    f.flush()
    for i in range(30):
        f.write(bytes([i]) * 100_003)
        f.flush()
        time.sleep(0.01)
    f.seek(0)
    f.write(header)
"""


@pytest.mark.parametrize("predicted, matched", [
    (b"HEAD" * 8, True),
    (b"FOOT" * 8, False),   # a wrong prediction: the file is hashed again
    (b"HEAD" * 4, False),   # right as far as it goes, but the writer rewrote more: hashed again
], ids=["right", "wrong", "short"])
def test_written_file_hash_follows_a_writer_that_puts_its_header_last(predicted, matched, tmp_path):
    header = b"HEAD" * 8
    path = tmp_path / "out.gguf"
    job = WrittenFileHash(path, predicted)  # before the file exists, as quantize starts it
    subprocess.run([sys.executable, "-c", HEADER_LAST_WRITER, str(path), header.hex()], check=True)
    assert job.finish(header_size=len(header)) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert job.header_matched is matched


def test_written_file_hash_of_a_file_written_between_two_looks(tmp_path):
    """A small file can appear and be complete while the hash waits to look again (a tiny projector did)."""
    import time

    path = tmp_path / "small.gguf"
    job = WrittenFileHash(path, b"HEAD")
    time.sleep(0.05)  # the thread has looked, found nothing, and waits before it looks again
    path.write_bytes(b"HEAD" + b"data" * 10)
    assert job.finish(header_size=4) == hashlib.sha256(b"HEAD" + b"data" * 10).hexdigest()
    assert job.header_matched
