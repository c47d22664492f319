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
answer in time or an unreachable host is a SourceUnavailableError (exit 1).
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
from buttermilk.flows.source_models import DEFAULT_TIMEOUT

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
EXTRAS = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}
"""Protocol -> the extra of buttermilk-batch that installs its package."""
SPOOL_BYTES = 16 * 1024 * 1024
_CONNECTION_ERRORS = ("ClientConnectorError", "ClientConnectorDNSError", "ConnectionError")
_TLS_ERRORS = ("ClientConnectorCertificateError", "ClientConnectorSSLError", "ClientSSLError")
_RECEIVED = re.compile(r"received \d+ of \d+ bytes")  # in aiohttp's ContentLengthError
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@:]*):([^/@]*)@")


def is_url(path: str) -> bool:
    return _URL.match(path) is not None


def _password(url: str) -> str | None:
    found = _USERINFO.match(url)
    return found.group(3) if found and found.group(3) else None


def shown_url(url: str) -> str:
    """``url`` with its password (``USER:PASSWORD@``) as ``***``; any other text as it is."""
    return _USERINFO.sub(r"\1\2:***@", url, count=1) if _password(url) else url


def scrub(text: str, url: str) -> str:
    """``text`` (a message) without the password of ``url``."""
    password = _password(url)
    text = text.replace(url, shown_url(url))
    return text.replace(password, "***") if password else text


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
                else self.fs.open(self.path)
            )
        except Exception as exc:
            if not is_read_failure(exc):
                raise
            raise _read_error(self.name, exc, self.timeout, self.path) from None
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
                if not is_read_failure(exc):
                    raise
                raise _read_error(self.name, exc, self.timeout, self.path) from None


def is_read_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure to get a file's bytes: an OSError (a local disk, a
    timeout) or an HTTP client's error (aiohttp's are not OSErrors: a connection cut
    before the file's end, a 5xx answer to a range request)."""
    return isinstance(exc, OSError) or any("ClientError" in _names(cause) for cause in _causes(exc))


def is_transport_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the connection to a file's server (as opposed to
    bad bytes in the file): a reader lets it pass for :meth:`Location.open` to name."""
    for cause in _causes(exc):
        names = _names(cause)
        if "ClientError" in names or "ConnectionError" in names:
            return True
        if isinstance(cause, TimeoutError) or "ServerTimeoutError" in names:
            return True
    return False


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


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from, in turn."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _names(exc: BaseException) -> set[str]:
    return {kind.__name__ for kind in type(exc).__mro__}


def _read_error(
    name: str, exc: BaseException, timeout: float = DEFAULT_TIMEOUT, url: str = ""
) -> DataSourceError | SourceUnavailableError:
    """One error for ``exc``, told apart by what the server answered (see the module)."""
    for cause in _causes(exc):
        names = _names(cause)
        said = scrub(" ".join(str(cause).split()), url) if url else " ".join(str(cause).split())
        if names & set(_TLS_ERRORS) or "SSLError" in names:
            return SourceUnavailableError(f"{name}: TLS failed ({said})")
        status = getattr(cause, "status", None)
        if "ClientResponseError" in names and isinstance(status, int):
            if status == 404:
                return DataSourceError(f"{name}: file not found")
            if status in (401, 403):
                return DataSourceError(
                    f"{name}: access refused (HTTP {status}); check the URL's credentials"
                )
            if status >= 500:
                return SourceUnavailableError(f"{name}: the server answered {status}")
            return DataSourceError(f"{name}: the server answered {status}")
        if isinstance(cause, TimeoutError) or "ServerTimeoutError" in names:
            return SourceUnavailableError(
                f"{name}: no answer within {timeout:g} s (the source's timeout)"
            )
        if names & set(_CONNECTION_ERRORS) and cause is not exc:
            return SourceUnavailableError(f"{name}: cannot reach its host ({said})")
        if "ClientPayloadError" in names:  # fewer bytes came than the server announced
            counted = _RECEIVED.search(said)
            return SourceUnavailableError(
                f"{name}: the connection broke before the whole file arrived "
                f"({counted.group(0) if counted else said})"
            )
        if "ClientError" in names:  # aiohttp's others: a connection reset or closed
            return SourceUnavailableError(f"{name}: the connection failed ({said})")
    if isinstance(exc, FileNotFoundError):
        return DataSourceError(f"{name}: file not found")
    said = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return DataSourceError(f"{name}: cannot read it ({scrub(said, url) if url else said})")


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
    except ImportError as exc:
        extra = EXTRAS.get(scheme)
        how = f"pip install 'buttermilk-batch[{extra}]'" if extra else str(exc)
        raise MissingPackageError(
            f"data source {name!r}: {scheme}:// needs a package that is not installed: {how}"
        ) from None
    except ValueError as exc:
        raise DataSourceError(
            f"data source {name!r}: {shown_url(url)!r}: {scrub(str(exc), url)}"
        ) from None


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
        raise _read_error(f"data source {name!r}: {shown_url(path)}", exc, timeout, path) from None
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
