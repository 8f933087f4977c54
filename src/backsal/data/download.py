"""Checksummed downloads and safe archive extraction for the paper's data and weights.

Every file the workflow fetches (PASCAL VOC 2007 test, COCO 2014 val, TorchRay's difficult-flag
files and converted Caffe models, torchvision's ImageNet weights) goes through
:func:`ensure_file`:

* the body is streamed into a hidden temporary file beside the target, hashed on the way;
* a transfer that ends early (connection dropped, fewer bytes than ``Content-Length`` or than the
  expected size, process killed) never produces the final name: the temporary file is removed, or,
  after a kill, left under a name no reader looks at and cleaned up by the next attempt;
* the digest is compared with the published one (sha256; md5 or sha1 where only those are
  published; a git blob id ``sha1(b"blob <size>\\0" + content)`` for files pinned by a git commit);
  only a verified file is renamed (atomically) to its final name;
* a mismatch raises :class:`ChecksumError` naming the file, both digests and what to do, and the
  bad file is removed;
* when no URL answers (offline machine, server down) :class:`DownloadError` says where to download
  the file by hand and where to put it.

:func:`extract_archive` unpacks tar and zip archives, refusing members that would land outside the
destination (absolute paths, ``..``, links pointing out), and writes a completion marker only after
the whole archive is in place, so a half-extracted tree is redone on the next call.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

from tqdm.auto import tqdm

from backsal.provenance import file_digest, new_hasher

__all__ = [
    "Checksum",
    "ChecksumError",
    "DownloadError",
    "Resource",
    "ResourceError",
    "UnsafeArchiveError",
    "default_root",
    "download_file",
    "ensure_file",
    "extract_archive",
    "local_file",
    "localize",
    "verify_file",
]

log = logging.getLogger(__name__)

Algorithm = Literal["sha256", "sha1", "md5", "git-blob"]

_CHUNK = 1 << 20
_MIN_PREFIX = 8  # torch.hub's convention: at least 8 hex digits of a sha256 in a file name
_HEX_LENGTH = {"sha256": 64, "sha1": 40, "md5": 32, "git-blob": 40}
_HAS_TAR_FILTER = hasattr(tarfile, "data_filter")  # Python >= 3.11.4 / 3.12
_USER_AGENT = "backsal-downloader/1.0 (python urllib)"


class ResourceError(RuntimeError):
    """Base class of the errors raised while fetching or unpacking a resource."""


class DownloadError(ResourceError):
    """No URL delivered the complete file (offline, server error, truncated transfer)."""


class ChecksumError(ResourceError):
    """A file's digest differs from the published one."""


class UnsafeArchiveError(ResourceError):
    """An archive member would be written outside the extraction folder."""


@dataclass(frozen=True)
class Checksum:
    """A published digest of a file.

    Attributes:
        algorithm: ``sha256``, ``sha1``, ``md5`` or ``git-blob`` (the object id git gives the
            file's content: ``sha1(b"blob <size>\\0" + content)``).
        hexdigest: The digest in hexadecimal; a prefix of at least 8 digits is accepted for the
            digests published only as a prefix (torch.hub file names ``name-<sha256[:8]>.pth``).
    """

    algorithm: Algorithm
    hexdigest: str

    def __post_init__(self) -> None:
        if self.algorithm not in _HEX_LENGTH:
            raise ValueError(
                f"unknown checksum algorithm {self.algorithm!r}; use one of {sorted(_HEX_LENGTH)}"
            )
        digest = self.hexdigest.lower()
        object.__setattr__(self, "hexdigest", digest)
        full = _HEX_LENGTH[self.algorithm]
        if not (_MIN_PREFIX <= len(digest) <= full) or any(
            c not in "0123456789abcdef" for c in digest
        ):
            raise ValueError(
                f"{self.algorithm} digest {self.hexdigest!r} must be {_MIN_PREFIX} to {full} "
                "hexadecimal digits"
            )

    @property
    def is_prefix(self) -> bool:
        """Whether only a prefix of the digest is known (a weaker check)."""
        return len(self.hexdigest) < _HEX_LENGTH[self.algorithm]

    def matches(self, actual: str) -> bool:
        """Whether the full digest ``actual`` agrees with this (possibly prefix) digest."""
        return actual.lower().startswith(self.hexdigest)

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """Parse ``"algorithm:hexdigest"`` (the form :meth:`__str__` writes)."""
        algorithm, sep, digest = text.partition(":")
        if not sep:
            raise ValueError(f"checksum {text!r} must look like 'sha256:<hex digits>'")
        return cls(algorithm, digest)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@dataclass(frozen=True)
class Resource:
    """A downloadable file: where it comes from, what it must hash to, what it is.

    Attributes:
        filename: Name of the file once downloaded.
        urls: Mirrors, tried in order.
        checksum: The published digest the file must match.
        size: Exact size in bytes where published (a truncated transfer is caught before hashing).
        description: What the file is, for messages.
        manual: Extra instructions for downloading by hand (a page to log in to, for example).
    """

    filename: str
    urls: tuple[str, ...]
    checksum: Checksum
    size: int | None = None
    description: str = ""
    manual: str = field(default="", compare=False)


def default_root() -> Path:
    """The resources folder: ``$BACKSAL_RESOURCES`` if set, else ``./resources``."""
    return Path(os.environ.get("BACKSAL_RESOURCES", "resources"))


# --------------------------------------------------------------------------------------------
# digests


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _read_stamp(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(path: Path, checksum: Checksum, digest: str) -> None:
    # Hashing a 6 GB archive takes minutes; the stamp lets later steps trust a file that was
    # verified once and has not changed since (same size and modification time).
    stat = path.stat()
    stamp = {
        "checksum": str(checksum),
        "digest": digest,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    with contextlib.suppress(OSError):  # a read-only folder only costs a rehash next time
        _stamp_path(path).write_text(json.dumps(stamp))


def _stamp_is_valid(path: Path, checksum: Checksum) -> bool:
    stamp = _read_stamp(path)
    if stamp is None:
        return False
    stat = path.stat()
    return (
        stamp.get("checksum") == str(checksum)
        and stamp.get("size") == stat.st_size
        and stamp.get("mtime_ns") == stat.st_mtime_ns
    )


def _mismatch_message(
    path: Path, checksum: Checksum, actual: str, source: str | None, what_to_do: str
) -> str:
    origin = f" downloaded from {source}" if source else ""
    prefix_note = " (a prefix of the expected digest)" if checksum.is_prefix else ""
    return (
        f"checksum mismatch for {path}{origin}: expected {checksum.algorithm} "
        f"{checksum.hexdigest}{prefix_note}, got {actual}. {what_to_do}"
    )


def verify_file(
    path: str | os.PathLike[str],
    checksum: Checksum,
    *,
    size: int | None = None,
    remove_bad: bool = False,
    use_stamp: bool = False,
) -> str | None:
    """Check a file against its published size and digest.

    Args:
        path: The file.
        checksum: The digest it must match.
        size: Its exact size in bytes, if known.
        remove_bad: Delete the file when it does not match.
        use_stamp: Skip hashing when a stamp beside the file records a successful verification
            of this very file (same size and modification time), and write one after success.

    Returns:
        The file's full digest, or ``None`` when a valid stamp made hashing unnecessary.

    Raises:
        ChecksumError: The size or digest differs.
    """
    path = Path(path)
    if use_stamp and _stamp_is_valid(path, checksum):
        return None
    actual_size = path.stat().st_size
    advice = (
        "The file is corrupt or incomplete; it has been removed, run again to download it."
        if remove_bad
        else "Delete it and download it again."
    )
    if size is not None and actual_size != size:
        if remove_bad:
            _remove(path)
        raise ChecksumError(
            f"size mismatch for {path}: expected {size} bytes, found {actual_size}. {advice}"
        )
    actual = file_digest(path, checksum.algorithm)
    if not checksum.matches(actual):
        if remove_bad:
            _remove(path)
        raise ChecksumError(_mismatch_message(path, checksum, actual, None, advice))
    if use_stamp:
        _write_stamp(path, checksum, actual)
    return actual


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(FileNotFoundError):
        _stamp_path(path).unlink()


# --------------------------------------------------------------------------------------------
# downloads


def _manual_instructions(
    urls: Sequence[str], target: Path, checksum: Checksum, size: int | None, manual: str
) -> str:
    size_text = f", {size} bytes" if size is not None else ""
    lines = [
        "To download it by hand, fetch",
        *(f"    {url}" for url in urls),
        f"and save it as {target} ({checksum}{size_text}); then run again.",
    ]
    if manual:
        lines.append(manual)
    return "\n".join(lines)


def _part_prefix(target: Path) -> str:
    return f".{target.name}."


def _clean_stale_parts(target: Path) -> None:
    # Leftovers of a download that was killed: they carry our hidden prefix and .part suffix, so
    # nothing else in the folder is touched.
    for stale in target.parent.glob(f"{_part_prefix(target)}*.part"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _stream_to(
    response: Any,
    handle: IO[bytes],
    hasher: Any,
    *,
    total: int | None,
    progress: bool,
    label: str,
) -> int:
    received = 0
    # read1 returns what has arrived instead of waiting for a full chunk, so the bytes reach the
    # disk (and the progress bar) as they come.
    read = getattr(response, "read1", response.read)
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=not progress,
        leave=False,
    ) as bar:
        while True:
            chunk = read(_CHUNK)
            if not chunk:
                break
            handle.write(chunk)
            if hasher is not None:
                hasher.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


def _fetch_once(
    url: str,
    target: Path,
    checksum: Checksum,
    size: int | None,
    *,
    timeout: float,
    progress: bool,
) -> None:
    """Download ``url`` to ``target``; raise DownloadError or ChecksumError; never leave a bad file."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    except ValueError as error:  # a malformed URL
        raise DownloadError(f"{url!r} is not a URL ({error})") from error
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=_part_prefix(target), suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    header = response.headers.get("Content-Length")
                    announced = int(header) if header is not None and header.isdigit() else None
                    if announced is not None and size is not None and announced != size:
                        raise DownloadError(
                            f"{url} announces {announced} bytes but {target.name} has {size}: "
                            "the server delivers a different file"
                        )
                    expected_total = size if size is not None else announced
                    if checksum.algorithm == "git-blob" and expected_total is None:
                        hasher = None  # hashed from the finished file below
                    else:
                        hasher = new_hasher(checksum.algorithm, expected_total)
                    received = _stream_to(
                        response,
                        handle,
                        hasher,
                        total=expected_total,
                        progress=progress,
                        label=target.name,
                    )
            except ResourceError:
                raise
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as error:
                # URLError: offline or refused; OSError: reset connection, timeout, full disk;
                # ValueError: malformed URL; HTTPException: IncompleteRead of a chunked body.
                raise DownloadError(f"{url}: {_describe(error)}") from error
            # http.client returns b"" when the server closes early even though Content-Length
            # promised more, so the length is checked here, not left to the library.
            if expected_total is not None and received != expected_total:
                raise DownloadError(
                    f"{url}: transfer interrupted after {received} of {expected_total} bytes"
                )
            handle.flush()
            os.fsync(handle.fileno())
        digest = hasher.hexdigest() if hasher is not None else file_digest(tmp, "git-blob")
        if not checksum.matches(digest):
            raise ChecksumError(
                _mismatch_message(
                    target,
                    checksum,
                    digest,
                    url,
                    "The download was removed. Run again to retry; if the mismatch persists the "
                    "server now delivers a different file: check the project's pinned digest.",
                )
            )
        os.replace(tmp, target)
        _write_stamp(target, checksum, digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


_SCHEMES = ("http", "https", "ftp", "file")


def _url_problem(url: str) -> str:
    """Why ``url`` cannot be fetched as written (``""`` if it can be tried)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _SCHEMES or (parts.scheme != "file" and not parts.netloc):
        return (
            f"{url!r} is not a URL: it lacks a scheme such as https:// (write it as "
            f"'https://{url.split('://')[-1]}')"
        )
    return ""


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"unreachable ({error.reason})"
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}"


def download_file(
    urls: str | Sequence[str],
    target: str | os.PathLike[str],
    checksum: Checksum,
    *,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    attempts: int = 2,
    manual: str = "",
) -> Path:
    """Download a file and verify it; the final name appears only once it is verified.

    Args:
        urls: One URL or mirrors tried in order.
        target: Final path of the file; its folder is created.
        checksum: Published digest the file must match.
        size: Exact size in bytes where published.
        progress: Show a tqdm progress bar.
        timeout: Seconds without data before a connection is given up.
        attempts: Tries per URL for transfers that fail (checksum mismatches are not retried on
            the same URL).
        manual: Extra hints for downloading by hand, appended to the offline error.

    Returns:
        ``target``.

    Raises:
        ChecksumError: A mirror delivered a complete file with the wrong digest (it was removed).
        DownloadError: No mirror delivered the complete file.
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("no URL given")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_parts(target)
    failures: list[str] = []
    mismatch: ChecksumError | None = None
    for url in url_list:
        problem = _url_problem(url)
        if problem:  # a mistake in the mirror list: report it, try the next mirror
            failures.append(problem)
            log.warning("skipping a mirror: %s", problem)
            continue
        for attempt in range(1, max(attempts, 1) + 1):
            try:
                _fetch_once(url, target, checksum, size, timeout=timeout, progress=progress)
                return target
            except ChecksumError as error:
                mismatch = error
                failures.append(str(error))
                break  # the same server would deliver the same bytes
            except DownloadError as error:
                failures.append(f"{error} (attempt {attempt})")
                log.warning("download failed: %s", error)
                if isinstance(error.__cause__, urllib.error.HTTPError) and (
                    400 <= error.__cause__.code < 500
                ):
                    break  # a missing file will stay missing
    if mismatch is not None:
        raise mismatch
    raise DownloadError(
        f"could not download {target.name}:\n"
        + "\n".join(f"  - {failure}" for failure in failures)
        + "\nIf this machine is offline or the server is down: "
        + _manual_instructions(url_list, target, checksum, size, manual)
    )


def ensure_file(
    resource: Resource,
    root: str | os.PathLike[str] | None = None,
    *,
    subdir: str = "",
    download: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Return the verified local copy of ``resource``, downloading it if needed.

    A file already in place (downloaded earlier or copied by hand) is verified once; a stamp
    beside it records the verification. A file that fails verification is removed and, if
    ``download`` is true, downloaded again.

    Args:
        resource: What to fetch.
        root: Resources folder (default :func:`default_root`).
        subdir: Folder below ``root`` for the file.
        download: Whether a missing file may be downloaded; if false a missing file is an error
            that says where to put it.
        progress: Show a progress bar while downloading.
        timeout: Seconds without data before a connection is given up.

    Returns:
        Path of the verified file.

    Raises:
        ChecksumError: The file in place (or the download) does not match.
        DownloadError: The file is missing and could not be downloaded.
    """
    folder = Path(root) if root is not None else default_root()
    target = folder / subdir / resource.filename if subdir else folder / resource.filename
    if target.is_file():
        try:
            verify_file(target, resource.checksum, size=resource.size, use_stamp=True)
        except ChecksumError as error:
            if not download:
                raise
            log.warning("%s; removing it and downloading again", error)
            _remove(target)
        else:
            return target
    if not download:
        raise DownloadError(
            f"{resource.description or resource.filename} is missing at {target} and downloads "
            "are disabled. "
            + _manual_instructions(
                resource.urls, target, resource.checksum, resource.size, resource.manual
            )
        )
    log.info("downloading %s to %s", resource.description or resource.filename, target)
    return download_file(
        resource.urls,
        target,
        resource.checksum,
        size=resource.size,
        progress=progress,
        timeout=timeout,
        manual=resource.manual,
    )


# --------------------------------------------------------------------------------------------
# archives


def _marker_path(archive: Path, dest: Path) -> Path:
    return dest / f".{archive.name}.extracted"


def _inside(root: Path, name: str) -> Path:
    """Resolve archive member ``name`` below ``root`` or raise UnsafeArchiveError."""
    if Path(name).is_absolute() or name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path; refusing it")
    resolved = Path(os.path.normpath(root / name))
    if resolved != root and root not in resolved.parents:
        raise UnsafeArchiveError(
            f"archive member {name!r} would be written outside {root}; refusing it"
        )
    return resolved


def _selected(name: str, members: Sequence[str] | None) -> bool:
    if members is None:
        return True
    clean = name.rstrip("/")
    return any(clean == m.rstrip("/") or clean.startswith(m.rstrip("/") + "/") for m in members)


def _extract_tar(archive: Path, into: Path, members: Sequence[str] | None) -> None:
    root = into.resolve()
    with tarfile.open(archive) as tar:
        chosen: list[tarfile.TarInfo] = []
        for info in tar.getmembers():
            if not _selected(info.name, members):
                continue
            _inside(root, info.name)
            if not (info.isfile() or info.isdir() or info.issym() or info.islnk()):
                raise UnsafeArchiveError(
                    f"archive member {info.name!r} is a device or fifo; refusing to extract it"
                )
            if (info.issym() or info.islnk()) and not _HAS_TAR_FILTER:
                # Without the standard library's filter (Python < 3.11.4) links are checked here:
                # a symlink is relative to its folder, a hard link to the archive root.
                base = Path(os.path.normpath(root / info.name)).parent if info.issym() else root
                if Path(info.linkname).is_absolute():
                    raise UnsafeArchiveError(f"link {info.name!r} is absolute; refusing it")
                _inside(root, os.path.relpath(os.path.normpath(base / info.linkname), root))
            chosen.append(info)
        if not _HAS_TAR_FILTER:
            tar.extractall(root, members=chosen)  # members and links checked above
            return
        # The standard library's "data" filter rejects links that point outside the tree and
        # strips permission bits such as setuid; its errors are turned into ours below.
        try:
            tar.extractall(root, members=chosen, filter="data")
        except tarfile.FilterError as error:
            raise UnsafeArchiveError(f"{archive}: {error}; refusing to extract it") from error


def _extract_zip(archive: Path, into: Path, members: Sequence[str] | None) -> None:
    root = into.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if not _selected(info.filename, members):
                continue
            destination = _inside(root, info.filename)
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink, _CHUNK)


def _merge_tree(source: Path, dest: Path) -> list[str]:
    """Move every entry of ``source`` into ``dest`` (merging folders); return top-level names."""
    top_level = []
    for entry in sorted(source.iterdir()):
        top_level.append(entry.name)
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if target.exists() and not target.is_dir():
                target.unlink()
            target.mkdir(exist_ok=True)
            _merge_tree(entry, target)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
    return top_level


def _archive_kind(archive: Path) -> str:
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise ResourceError(
        f"{archive} is neither a tar nor a zip archive (corrupt or incomplete download?); "
        "delete it and download it again"
    )


def extract_archive(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    members: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Extract a tar or zip archive into ``dest``, safely and resumably.

    The archive is unpacked into a hidden temporary folder inside ``dest``, its entries are then
    moved into ``dest`` (merging with folders already there), and only then a marker file
    ``dest/.<archive name>.extracted`` is written. A call that finds the marker does nothing; a
    call after an interrupted extraction (no marker) starts over.

    Args:
        archive: The ``.tar``, ``.tar.gz``, ``.tgz`` or ``.zip`` file.
        dest: Folder to extract into (created).
        members: Only extract these member paths (or folders, with everything below them).
        progress: Log what is extracted.

    Returns:
        ``dest``.

    Raises:
        UnsafeArchiveError: A member would land outside ``dest`` or is a special file.
        ResourceError: The file is not a readable archive.
    """
    archive = Path(archive)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    marker = _marker_path(archive, dest)
    wanted = sorted(members) if members is not None else None
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except ValueError:
            recorded = {}
        if recorded.get("members") == wanted and recorded.get("size") == archive.stat().st_size:
            return dest
    marker.unlink(missing_ok=True)
    kind = _archive_kind(archive)
    for stale in dest.glob(f".{archive.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(dir=dest, prefix=f".{archive.name}.tmp-"))
    try:
        if progress:
            log.info("extracting %s into %s", archive, dest)
        try:
            if kind == "zip":
                _extract_zip(archive, scratch, members)
            else:
                _extract_tar(archive, scratch, members)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
            raise ResourceError(
                f"{archive} is corrupt or truncated ({error}); delete it and download it again"
            ) from error
        if members is not None:
            missing = [m for m in members if not (scratch / m).exists()]
            if missing:
                raise ResourceError(f"{archive} does not contain {missing}")
        top_level = _merge_tree(scratch, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    marker.write_text(
        json.dumps(
            {
                "archive": archive.name,
                "size": archive.stat().st_size,
                "members": wanted,
                "top_level": top_level,
            }
        )
    )
    return dest


# --------------------------------------------------------------------------------------------
# copies users already have: a mirror, a local file, checksums of files that are not the
# published ones


def localize(
    resource: Resource,
    mirror: str | os.PathLike[str] | None = None,
    checksums: Mapping[str, str] | None = None,
) -> Resource:
    """``resource`` with a mirror tried first and, where given, another expected checksum.

    Args:
        resource: A published file.
        mirror: A folder (a local copy) or a base URL (a caching proxy) holding the file under its
            published name, ``<mirror>/<filename>``; tried before the official URLs.
        checksums: File name -> ``"<algorithm>:<hex>"`` for copies that are not the published
            file (your own fine-tuned weights, the rehearsal's stand-ins).
    """
    urls = resource.urls
    if mirror:
        text = str(mirror)
        if "://" in text:
            first = text.rstrip("/") + "/" + resource.filename
        else:
            first = (Path(text).expanduser().resolve() / resource.filename).as_uri()
        urls = (first, *(u for u in urls if u != first))
    checksum, size = resource.checksum, resource.size
    if checksums and resource.filename in checksums:
        # another file: the published size does not apply to it either
        checksum, size = Checksum.parse(checksums[resource.filename]), None
    return replace(resource, urls=urls, checksum=checksum, size=size)


def local_file(path: str | os.PathLike[str], resource: Resource, *, key: str = "") -> Path:
    """Verify a copy of ``resource`` the user placed at ``path``; nothing is downloaded.

    Args:
        path: The copy.
        resource: What it must be (its checksum; see :func:`localize` for other copies).
        key: The config key that named ``path``, for messages.

    Raises:
        FileNotFoundError: Nothing at ``path``.
        ChecksumError: The copy differs from the published file.
    """
    path = Path(path).expanduser()
    where = f" ({key})" if key else ""
    if not path.is_file():
        raise FileNotFoundError(
            f"{resource.description or resource.filename}: no file at {path}{where}. Point it at "
            f"your copy of {resource.filename}, or remove it to download from "
            f"{', '.join(resource.urls) or 'its publisher'}."
        )
    try:
        verify_file(path, resource.checksum, size=resource.size, use_stamp=True)
    except ChecksumError as error:
        raise ChecksumError(
            f"{error}\n{path}{where} is not {resource.filename} as published. If it is your own "
            f"copy on purpose, set checksums: {{{resource.filename}: <algorithm>:<hex>}} in the "
            "config."
        ) from error
    return path
