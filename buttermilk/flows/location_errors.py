"""How a file or text source's failures read: one line naming the source and the file's
path or URL (its password as ``***``), told apart by what the server answered (see
:mod:`buttermilk.flows.locations`), with at most :data:`MESSAGE_CHARS` of the library's
own text."""

from __future__ import annotations

import re
from collections.abc import Iterator

from buttermilk.errors import (
    ButtermilkError,
    DataSourceError,
    MissingPackageError,
    SourceUnavailableError,
    one_line,
)
from buttermilk.flows.source_models import DEFAULT_TIMEOUT

MESSAGE_CHARS = 300  # of a library's message quoted in ours
EXTRAS = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}
"""Protocol -> the extra of buttermilk-batch that installs its package."""
_CONNECTION_ERRORS = ("ClientConnectorError", "ClientConnectorDNSError", "ConnectionError")
_TLS_ERRORS = ("ClientConnectorCertificateError", "ClientConnectorSSLError", "ClientSSLError")
_RECEIVED = re.compile(r"received \d+ of \d+ bytes")  # in aiohttp's ContentLengthError
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@:]*):([^/@]*)@")
# Modules whose errors, raised while a caller reads a file, are the file's transport failing
_TRANSPORTS = ("fsspec", "aiohttp", "gcsfs", "s3fs", "adlfs", "paramiko", "pyarrow.fs", "ftplib")


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


def read_error(
    name: str, exc: BaseException, timeout: float = DEFAULT_TIMEOUT, url: str = ""
) -> DataSourceError | SourceUnavailableError:
    """One error for ``exc``, told apart by what the server answered (see the module)."""
    for cause in _causes(exc):
        names = _names(cause)
        said = _said(cause, url)
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
    said = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    return DataSourceError(f"{name}: cannot read it ({_said(said, url)})")


def _said(text: BaseException | str, url: str) -> str:
    """A library's message on one line, cut short, without the password of ``url``."""
    said = one_line(str(text) or type(text).__name__, MESSAGE_CHARS)
    return scrub(said, url) if url else said


def from_transport(exc: BaseException) -> bool:
    """Whether ``exc`` (not one of ours) was raised inside a filesystem's or an HTTP
    client's code (fsspec's "server does not support range requests", say)."""
    if isinstance(exc, ButtermilkError):
        return False
    trace = exc.__traceback__
    while trace is not None:
        module = str(trace.tb_frame.f_globals.get("__name__", ""))
        if module.startswith(_TRANSPORTS):
            return True
        trace = trace.tb_next
    return False


def opening_error(
    name: str, url: str, exc: BaseException, timeout: float = DEFAULT_TIMEOUT
) -> DataSourceError | SourceUnavailableError:
    """One error for a filesystem that failed to start for ``url`` (its package missing,
    its host refusing the connection, a library it loads missing): ``data source 'NAME':
    URL: ...``."""
    scheme = url.split("://", 1)[0].lower()
    if isinstance(exc, ImportError):
        module = next((c.name for c in _causes(exc) if isinstance(c, ImportError) and c.name), None)
        extra = EXTRAS.get(scheme)
        if extra:
            how = f"pip install 'buttermilk-batch[{extra}]'"
        elif module:
            how = f"pip install {module.split('.')[0]}"
        else:
            how = _said(exc, url)
        return MissingPackageError(
            f"data source {name!r}: {shown_url(url)} needs a package that is not installed: {how}"
        )
    where = f"data source {name!r}: {shown_url(url)}"
    if any(isinstance(c, ConnectionError | TimeoutError) for c in _causes(exc)):
        return SourceUnavailableError(f"{where}: cannot reach its host ({_said(exc, url)})")
    error = read_error(where, exc, timeout, url)
    if isinstance(exc, FileNotFoundError) or "cannot read it" not in str(error):
        return error
    return DataSourceError(f"{where}: cannot open it ({_said(exc, url)})")
