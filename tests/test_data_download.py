"""Downloads against a local HTTP server, checksums and safe archive extraction."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from _http_server import Route, serve
from backsal.data import download
from backsal.data.download import (
    Checksum,
    ChecksumError,
    DownloadError,
    Resource,
    ResourceError,
    UnsafeArchiveError,
    download_file,
    ensure_file,
    extract_archive,
    file_digest,
    verify_file,
)

BODY = bytes(range(256)) * 1000  # 256 kB, several read chunks
SHA256 = Checksum("sha256", hashlib.sha256(BODY).hexdigest())


@pytest.fixture
def server():
    with serve() as running:
        yield running


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".part"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------ checksums


def test_git_blob_id_matches_git_definition(tmp_path):
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello\n")
    # `printf 'hello\n' | git hash-object --stdin`
    assert file_digest(path, "git-blob") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_checksum_validation_and_prefix():
    with pytest.raises(ValueError, match="hexadecimal"):
        Checksum("sha256", "xyz12345")
    with pytest.raises(ValueError, match="8 to 64"):
        Checksum("sha256", "abc")
    with pytest.raises(ValueError, match="unknown checksum algorithm"):
        Checksum("crc32", "deadbeef")  # type: ignore[arg-type]
    prefix = Checksum("sha256", SHA256.hexdigest[:8].upper())
    assert prefix.is_prefix and prefix.matches(SHA256.hexdigest)
    assert not prefix.matches("0" * 64)
    assert Checksum.parse(str(SHA256)) == SHA256


def test_verify_file_reports_and_removes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(BODY)
    assert verify_file(path, SHA256, size=len(BODY)) == SHA256.hexdigest
    md5 = Checksum("md5", hashlib.md5(b"other").hexdigest())
    with pytest.raises(ChecksumError) as info:
        verify_file(path, md5, remove_bad=True)
    message = str(info.value)
    assert str(path) in message and md5.hexdigest in message
    assert hashlib.md5(BODY).hexdigest() in message
    assert not path.exists()


# ------------------------------------------------------------------------------ downloads


def test_good_download(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY)
    target = tmp_path / "sub" / "f.bin"
    assert download_file(server.url("/f.bin"), target, SHA256, size=len(BODY), progress=False)
    assert target.read_bytes() == BODY
    assert _parts(target.parent) == []


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "git-blob"])
def test_other_digests(server, tmp_path, algorithm):
    server.routes["/f.bin"] = Route(BODY, content_length=algorithm != "git-blob")
    reference = tmp_path / "ref.bin"
    reference.write_bytes(BODY)
    checksum = Checksum(algorithm, file_digest(reference, algorithm))
    target = tmp_path / "f.bin"
    download_file(server.url("/f.bin"), target, checksum, progress=False)
    assert target.read_bytes() == BODY


def test_checksum_mismatch_removes_file_and_explains(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY)
    wrong = Checksum("sha256", "0" * 64)
    target = tmp_path / "f.bin"
    with pytest.raises(ChecksumError) as info:
        download_file(server.url("/f.bin"), target, wrong, progress=False)
    message = str(info.value)
    assert str(target) in message and "0" * 64 in message and SHA256.hexdigest in message
    assert "removed" in message and "Run again" in message
    assert not target.exists() and _parts(tmp_path) == []
    assert server.hits["/f.bin"] == 1  # a mismatch is not retried on the same server


def test_server_closing_early_is_not_complete(server, tmp_path):
    # Content-Length announces the whole body, half of it arrives, the connection closes.
    server.routes["/f.bin"] = Route(BODY, send_bytes=len(BODY) // 2)
    target = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as info:
        download_file(server.url("/f.bin"), target, SHA256, progress=False, attempts=2)
    assert f"{len(BODY) // 2} of {len(BODY)} bytes" in str(info.value)
    assert server.hits["/f.bin"] == 2
    assert not target.exists() and _parts(tmp_path) == []


def test_truncated_without_content_length_caught_by_expected_size(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY, send_bytes=1000, content_length=False)
    target = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="interrupted after 1000"):
        download_file(server.url("/f.bin"), target, SHA256, size=len(BODY), progress=False)
    assert not target.exists()


def test_truncated_without_any_length_caught_by_checksum(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY, send_bytes=1000, content_length=False)
    target = tmp_path / "f.bin"
    with pytest.raises(ChecksumError):
        download_file(server.url("/f.bin"), target, SHA256, progress=False)
    assert not target.exists()


def test_broken_chunked_transfer(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY, chunked=True, send_bytes=5000)
    target = tmp_path / "f.bin"
    with pytest.raises(DownloadError):
        download_file(server.url("/f.bin"), target, SHA256, progress=False, attempts=1)
    assert not target.exists() and _parts(tmp_path) == []


def test_mirror_fallback(server, tmp_path):
    server.routes["/good.bin"] = Route(BODY)
    target = tmp_path / "f.bin"
    download_file(
        [server.url("/missing.bin"), server.url("/good.bin")], target, SHA256, progress=False
    )
    assert target.read_bytes() == BODY
    assert server.hits["/missing.bin"] == 1  # a 404 is not retried


def test_offline_error_says_what_to_do(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/VOCtest.tar"
    target = tmp_path / "voc" / "VOCtest.tar"
    with pytest.raises(DownloadError) as info:
        download_file(url, target, SHA256, size=123, progress=False, manual="Or ask a friend.")
    message = str(info.value)
    assert "unreachable" in message and url in message
    assert str(target) in message and str(SHA256) in message and "123 bytes" in message
    assert "Or ask a friend." in message


def test_killed_download_leaves_no_final_file(server, tmp_path):
    # The server sends a third of the file and then hangs; the downloading process is killed.
    server.routes["/slow.bin"] = Route(BODY, send_bytes=len(BODY) // 3, stall_after=30)
    target = tmp_path / "f.bin"
    script = textwrap.dedent(
        f"""
        from backsal.data.download import Checksum, download_file
        download_file({server.url("/slow.bin")!r}, {str(target)!r},
                      Checksum("sha256", {SHA256.hexdigest!r}), progress=False)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    process = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            parts = _parts(tmp_path)
            if parts and parts[0].stat().st_size >= len(BODY) // 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never started")
    finally:
        process.kill()
        process.wait()
    assert not target.exists()
    assert _parts(tmp_path)  # the partial file is hidden under a temporary name
    server.routes["/slow.bin"] = Route(BODY)
    download_file(server.url("/slow.bin"), target, SHA256, progress=False)
    assert target.read_bytes() == BODY
    assert _parts(tmp_path) == []  # the stale part was cleaned up


# ------------------------------------------------------------------------------ ensure_file


def test_ensure_file_verifies_existing_and_replaces_bad(server, tmp_path):
    server.routes["/f.bin"] = Route(BODY)
    resource = Resource("f.bin", (server.url("/f.bin"),), SHA256, size=len(BODY))
    path = ensure_file(resource, tmp_path, subdir="x", progress=False)
    assert path == tmp_path / "x" / "f.bin" and server.hits["/f.bin"] == 1
    assert ensure_file(resource, tmp_path, subdir="x", progress=False) == path
    assert server.hits["/f.bin"] == 1  # verified copy reused
    path.write_bytes(b"corrupted by hand" + BODY[17:])  # same size, different content
    ensure_file(resource, tmp_path, subdir="x", progress=False)
    assert path.read_bytes() == BODY and server.hits["/f.bin"] == 2


def test_ensure_file_without_download(tmp_path):
    resource = Resource(
        "f.bin", ("http://example.invalid/f.bin",), SHA256, description="the test file"
    )
    with pytest.raises(DownloadError) as info:
        ensure_file(resource, tmp_path, download=False)
    assert "the test file is missing" in str(info.value)
    assert "http://example.invalid/f.bin" in str(info.value)
    (tmp_path / "f.bin").write_bytes(b"wrong")
    with pytest.raises(ChecksumError):
        ensure_file(resource, tmp_path, download=False)
    (tmp_path / "f.bin").write_bytes(BODY)  # placed by hand
    assert ensure_file(resource, tmp_path, download=False).read_bytes() == BODY


# ------------------------------------------------------------------------------ archives


def _tar(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_extract_tar_with_marker_and_redo(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"top/a.txt": b"A", "top/sub/b.txt": b"B"})
    dest = tmp_path / "out"
    extract_archive(archive, dest, progress=False)
    assert (dest / "top" / "sub" / "b.txt").read_bytes() == b"B"
    assert (dest / ".a.tar.gz.extracted").is_file()
    (dest / "top" / "a.txt").write_bytes(b"changed")
    extract_archive(archive, dest, progress=False)  # marker present: nothing redone
    assert (dest / "top" / "a.txt").read_bytes() == b"changed"
    # an interrupted extraction leaves no marker: the next call redoes it
    (dest / ".a.tar.gz.extracted").unlink()
    (dest / "top" / "sub" / "b.txt").unlink()
    extract_archive(archive, dest, progress=False)
    assert (dest / "top" / "a.txt").read_bytes() == b"A"
    assert (dest / "top" / "sub" / "b.txt").read_bytes() == b"B"
    assert [p.name for p in dest.iterdir() if ".tmp-" in p.name] == []


def test_extract_truncated_archive_leaves_no_marker(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {f"top/{i}.bin": os.urandom(20000) for i in range(5)})
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    dest = tmp_path / "out"
    with pytest.raises(ResourceError, match="corrupt or truncated"):
        extract_archive(archive, dest, progress=False)
    assert not (dest / ".a.tar.gz.extracted").exists()
    assert list(dest.iterdir()) == []  # scratch folder removed, nothing merged


@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "/tmp/evil.txt"])
def test_extract_tar_refuses_path_traversal(tmp_path, name):
    archive = _tar(tmp_path / "a.tar.gz", {"ok.txt": b"ok", name: b"evil"})
    dest = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        extract_archive(archive, dest, progress=False)
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert not (dest / "ok.txt").exists()


@pytest.mark.parametrize("stdlib_filter", [True, False])
def test_extract_tar_refuses_link_out_of_tree(tmp_path, monkeypatch, stdlib_filter):
    monkeypatch.setattr(download, "_HAS_TAR_FILTER", stdlib_filter and download._HAS_TAR_FILTER)
    archive = _tar(
        tmp_path / "a.tar.gz", {"top/a.txt": b"A"}, links={"top/escape": "../../../etc/passwd"}
    )
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "out", progress=False)
    inside = _tar(tmp_path / "b.tar.gz", {"top/a.txt": b"A"}, links={"top/alias": "a.txt"})
    extract_archive(inside, tmp_path / "out2", progress=False)
    assert (tmp_path / "out2" / "top" / "alias").read_bytes() == b"A"


def test_extract_zip_members_and_traversal(tmp_path):
    good = tmp_path / "ann.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("annotations/instances_val2014.json", b"{}")
        zf.writestr("annotations/captions_val2014.json", b"[]")
    dest = tmp_path / "out"
    extract_archive(good, dest, members=["annotations/instances_val2014.json"], progress=False)
    assert (dest / "annotations" / "instances_val2014.json").read_bytes() == b"{}"
    assert not (dest / "annotations" / "captions_val2014.json").exists()
    with pytest.raises(ResourceError, match="does not contain"):
        extract_archive(good, tmp_path / "o2", members=["annotations/nope.json"], progress=False)

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil.txt", b"evil")
    with pytest.raises(UnsafeArchiveError):
        extract_archive(bad, tmp_path / "o3", progress=False)
    assert not (tmp_path / "evil.txt").exists()


def test_extract_rejects_non_archive(tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(ResourceError, match="neither a tar nor a zip"):
        extract_archive(path, tmp_path / "out", progress=False)
