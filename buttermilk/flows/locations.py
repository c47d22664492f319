"""Where a file or text source's files are: local paths and globs, or any fsspec URL.

A local path (no ``PROTOCOL://``) is found with :mod:`glob` (``**`` recursive) and opened
with :func:`open`; a URL (``gs://``, ``s3://``, ``https://``, ``file://``, ``memory://``)
through :mod:`fsspec`, imported only then, globbed where its filesystem can list. The
protocol's package is an optional extra named in the error when it is missing.
Credentials come the way each library takes them (environment, application default
credentials); a password written in a URL (``https://USER:PASSWORD@host/...``) is shown
as ``***`` in messages, records' ``uri`` and snapshots.

An http(s) server gets ``timeout`` seconds to connect and to send each part of its
answer. What a server answered decides the error: 404 is "file not found" and 401/403
"access refused" (a DataSourceError, exit 2); a 5xx answer, a failed TLS handshake, no
answer in time or an unreachable host is a SourceUnavailableError (exit 1). A file over
one fsspec block from a server that ignores ``Range`` (``python -m http.server``) is read
as a stream; any other failure of a library to open or read a file is one DataSourceError
naming the source and the URL (:mod:`buttermilk.flows.location_errors`).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from buttermilk.errors import (
    ButtermilkError,
    DataSourceError,
    MissingPackageError,
    one_line,
)
from buttermilk.flows.location_errors import (
    from_transport,
    is_read_failure,
    opening_error,
    read_error,
    scrub,
    shown_url,
)
from buttermilk.flows.source_models import DEFAULT_TIMEOUT

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
SPOOL_BYTES = 16 * 1024 * 1024


def is_url(path: str) -> bool:
    return _URL.match(path) is not None


@dataclass(frozen=True)
class Location:
    """One file of a source: ``name`` in messages (the path or URL), ``relative`` to the
    glob's fixed folder (a text source's record id)."""

    name: str
    relative: str
    fs: Any  # an fsspec filesystem, or None for a local file
    path: str
    timeout: float = DEFAULT_TIMEOUT

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """The file as a binary stream. A failure to get its bytes, while opening it or
        while the caller reads it (a connection cut mid-file, a 5xx answer to a later
        range request, no answer in time), is one DataSourceError or
        SourceUnavailableError naming the file (see the module)."""
        try:
            fh: IO[bytes] = (
                open(self.path, "rb")  # noqa: SIM115 (closed below, after the yield)
                if self.fs is None
                else _without_ranges(self.fs, self.path, self.fs.open(self.path))
            )
        except ButtermilkError:
            raise
        except Exception as exc:  # any library's failure to open it: one line naming it
            raise read_error(self.name, exc, self.timeout, self.path) from None
        with fh:
            try:
                head, rewound = _rewind(fh)
                if rewound:
                    yield fh
                    return
                # A stream that cannot seek (HTTP read as it comes): the readers look at a
                # file's start, then read it from the start again, and find a bad byte's
                # line by reading it once more; a spooled copy (on disk past 16 MB) can.
                with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
                    spool.write(head)
                    shutil.copyfileobj(fh, spool)
                    spool.seek(0)
                    yield spool
            except Exception as exc:  # raised here, or by the caller reading the file
                if not (is_read_failure(exc) or from_transport(exc)):
                    raise
                raise read_error(self.name, exc, self.timeout, self.path) from None


def _without_ranges(fs: Any, path: str, fh: Any) -> Any:
    """``fh``, or the file opened again as a stream (read once from its start) when it is
    fsspec's HTTP file over one block from a server that ignores ``Range`` (as
    ``python -m http.server`` does): read by blocks, its second block would fail."""
    fetch = getattr(fh, "_fetch_range", None)
    size, block = getattr(fh, "size", None), getattr(fh, "blocksize", None)
    if type(fh).__name__ != "HTTPFile" or fetch is None or not size or not block:
        return fh
    if size <= block:
        return fh
    try:
        fetch(1, 2)  # the file's second byte: a server with ranges sends that alone
    except ValueError as exc:
        if "range requests" not in str(exc):
            raise
        fh.close()
        return fs.open(path, block_size=0)
    return fh


def _rewind(fh: IO[bytes]) -> tuple[bytes, bool]:
    """Whether ``fh`` can go back to its start (then it is there), and what was read to
    find out (a stream's first byte; some claim to seek and refuse when asked)."""
    try:
        head = fh.read(1)
    except OSError:
        return b"", False
    try:
        fh.seek(0)
    except (OSError, ValueError):
        return head, False
    return b"", True


def fixed_part(pattern: str) -> str:
    """The folder of a glob before its first wildcard (``corpus/**/*.txt`` -> ``corpus``);
    a plain path's own folder."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def _relative(path: str, folder: str) -> str:
    if not folder:
        return path.lstrip("/")
    return path[len(folder) :].lstrip("/") if path.startswith(folder) else path


def filesystem(name: str, url: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path in it (an http(s) one waits
    ``timeout`` seconds to connect and for each read); a missing package or an unknown
    protocol is one DataSourceError naming the source."""
    protocol = _URL.match(url)
    assert protocol is not None
    scheme = protocol.group(1).lower()
    try:
        import fsspec
    except ImportError:  # a dependency, but an install may lack it
        raise MissingPackageError(
            f"data source {name!r}: {url!r} needs fsspec: pip install fsspec"
        ) from None
    options: dict[str, Any] = {}
    if scheme in ("http", "https"):
        import aiohttp  # fsspec's http filesystem needs it

        options["client_kwargs"] = {
            "timeout": aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout)
        }
    try:
        return fsspec.core.url_to_fs(url, **options)  # type: ignore[no-any-return]
    except ValueError as exc:  # an unknown protocol, a URL its filesystem cannot parse
        raise DataSourceError(
            f"data source {name!r}: {shown_url(url)!r}: {scrub(one_line(str(exc)), url)}"
        ) from None
    except Exception as exc:  # a package missing; a host refusing; a library not loading
        raise opening_error(name, url, exc, timeout) from None


def resolve(name: str, path: str, timeout: float = DEFAULT_TIMEOUT) -> list[Location]:
    """The files of ``path`` (a path, URL or glob), in a stable order; an error when there
    are none. Raises DataSourceError, or SourceUnavailableError (see the module)."""
    if not is_url(path):
        return _local(name, path)
    fs, inner = filesystem(name, path, timeout)
    folder = fixed_part(inner)
    try:
        if glob.has_magic(inner):
            found = sorted(p for p in fs.glob(inner) if fs.isfile(p))
            if not found:
                raise DataSourceError(f"data source {name!r}: no file matches {shown_url(path)!r}")
        else:
            fs.info(inner)  # raises for a file that is not there
            found = [inner]
    except OSError as exc:
        raise read_error(f"data source {name!r}: {shown_url(path)}", exc, timeout, path) from None
    names = [path] if found == [inner] else [fs.unstrip_protocol(p) for p in found]
    return [
        Location(
            name=shown_url(shown), relative=_relative(p, folder), fs=fs, path=p, timeout=timeout
        )
        for shown, p in zip(names, found, strict=True)
    ]


def _local(name: str, path: str) -> list[Location]:
    pattern = str(Path(path).expanduser())
    folder = fixed_part(pattern)
    if glob.has_magic(pattern):
        paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not paths:
            raise DataSourceError(f"data source {name!r}: no file matches {path!r}")
    else:
        paths = [Path(pattern)]
        if not paths[0].is_file():
            raise DataSourceError(f"data source {name!r}: {path}: file not found")
    return [
        Location(
            name=str(p),
            relative=os.path.relpath(p, folder or ".").replace(os.sep, "/"),
            fs=None,
            path=str(p),
        )
        for p in paths
    ]
