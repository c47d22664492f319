"""Where a file or text source's files are: local paths and globs, or any fsspec URL.

A local path (no ``PROTOCOL://``) is found with :mod:`glob` (``**`` recursive) and opened
with :func:`open`; a URL (``gs://``, ``s3://``, ``https://``, ``file://``, ``memory://``)
through :mod:`fsspec`, imported only then, globbed where its filesystem can list. The
protocol's package is an optional extra named in the error when it is missing.
Credentials come the way each library takes them (environment, application default
credentials); none are stored.
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

from buttermilk.errors import DataSourceError, MissingPackageError, SourceUnavailableError

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
EXTRAS = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}
"""Protocol -> the extra of buttermilk-batch that installs its package."""
SPOOL_BYTES = 16 * 1024 * 1024
_CONNECTION_ERRORS = ("ClientConnectorError", "ClientConnectorDNSError", "ConnectionError")


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

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """The file as a binary stream. Raises DataSourceError (SourceUnavailableError
        when its host cannot be reached)."""
        try:
            fh: IO[bytes] = (
                open(self.path, "rb")  # noqa: SIM115 (closed below, after the yield)
                if self.fs is None
                else self.fs.open(self.path)
            )
        except OSError as exc:
            raise _read_error(self.name, exc) from None
        with fh:
            head, rewound = _rewind(fh)
            if rewound:
                yield fh
                return
            # A stream that cannot seek (HTTP read as it comes): the readers look at a
            # file's start, then read it from the start again, and find a bad byte's line
            # by reading it once more; a spooled copy (on disk past 16 MB) can seek.
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
                try:
                    spool.write(head)
                    shutil.copyfileobj(fh, spool)
                except OSError as exc:
                    raise _read_error(self.name, exc) from None
                spool.seek(0)
                yield spool


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


def _read_error(name: str, exc: OSError) -> DataSourceError | SourceUnavailableError:
    cause = exc.__cause__ or exc.__context__
    if cause is not None and type(cause).__name__ in _CONNECTION_ERRORS:
        return SourceUnavailableError(f"{name}: cannot reach its host ({cause})")
    if isinstance(exc, FileNotFoundError):
        return DataSourceError(f"{name}: file not found")
    return DataSourceError(f"{name}: cannot read it ({exc.strerror or exc})")


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


def filesystem(name: str, url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path in it; a missing package or an
    unknown protocol is one DataSourceError naming the source."""
    protocol = _URL.match(url)
    assert protocol is not None
    scheme = protocol.group(1).lower()
    try:
        import fsspec
    except ImportError:  # a dependency, but an install may lack it
        raise MissingPackageError(
            f"data source {name!r}: {url!r} needs fsspec: pip install fsspec"
        ) from None
    try:
        return fsspec.core.url_to_fs(url)  # type: ignore[no-any-return]
    except ImportError as exc:
        extra = EXTRAS.get(scheme)
        how = f"pip install 'buttermilk-batch[{extra}]'" if extra else str(exc)
        raise MissingPackageError(
            f"data source {name!r}: {scheme}:// needs a package that is not installed: {how}"
        ) from None
    except ValueError as exc:
        raise DataSourceError(f"data source {name!r}: {url!r}: {exc}") from None


def resolve(name: str, path: str) -> list[Location]:
    """The files of ``path`` (a path, URL or glob), in a stable order; an error when there
    are none."""
    if not is_url(path):
        return _local(name, path)
    fs, inner = filesystem(name, path)
    folder = fixed_part(inner)
    try:
        if glob.has_magic(inner):
            found = sorted(p for p in fs.glob(inner) if fs.isfile(p))
            if not found:
                raise DataSourceError(f"data source {name!r}: no file matches {path!r}")
        else:
            fs.info(inner)  # raises for a file that is not there
            found = [inner]
    except OSError as exc:
        raise _read_error(f"data source {name!r}: {path}", exc) from None
    names = [path] if found == [inner] else [fs.unstrip_protocol(p) for p in found]
    return [
        Location(name=shown, relative=_relative(p, folder), fs=fs, path=p)
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
            raise DataSourceError(f"data source {name!r}: file not found: {path}")
    return [
        Location(
            name=str(p),
            relative=os.path.relpath(p, folder or ".").replace(os.sep, "/"),
            fs=None,
            path=str(p),
        )
        for p in paths
    ]
