"""`request_log:` of a kind Model or kind Application document, one parser for both.

    request_log:
      sample_rate: 0.1                  # share of calls (a model) or requests (an application), default 1.0
      file: {dir: logs/, max_bytes: 67108864, max_files: 10, max_record_bytes: 4194304}
      cloudevents: {url: http://collector:8080/, timeout_s: 5, retries: 3, max_event_bytes: 4194304}

At least one sink. `retries` and `timeout_s` are capped (MAX_RETRIES, MAX_TIMEOUT_S): one call
holds one sender of the sink for at most (retries + 1) attempts of timeout_s each. A relative
`dir` is relative to the gateway's working directory (kept resolved: one directory, one
writer); whether it lies inside the config directory is checked with the whole directory
(`directory.py`), as the parser does not know where that is.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from gateway.manifests.types import CloudEventsSpec, FileSinkSpec, RequestLogSpec
from modelfolder import ConfigError, Fields

_FIELDS = frozenset({"sample_rate", "file", "cloudevents"})
_FILE_FIELDS = frozenset({"dir", "max_bytes", "max_files", "max_record_bytes"})
_CLOUDEVENTS_FIELDS = frozenset({"url", "timeout_s", "retries", "max_event_bytes"})
MAX_RETRIES = 10
MAX_TIMEOUT_S = 60.0


def parse_request_log(fields: Fields) -> RequestLogSpec:
    """The `request_log:` mapping of `fields` (the document's fields), checked."""
    if fields.mapping.get("request_log") is None:  # `request_log:` written with nothing under it
        raise fields.error("request_log", "is empty: give it a sink (`file: {dir: ...}` or `cloudevents: {url: ...}`)")
    log = fields.nested("request_log")
    log.reject_unknown(_FIELDS)
    sample_rate = log.optional("sample_rate", float, 1.0)
    if not 0.0 <= sample_rate <= 1.0:  # NaN fails too
        raise log.error("sample_rate", f"must be between 0.0 and 1.0, got {sample_rate}")
    if "file" not in log.mapping and "cloudevents" not in log.mapping:
        raise ConfigError("request_log: needs a sink: `file: {dir: ...}`, `cloudevents: {url: ...}` or both",
                          log.where())
    file = _file(log.nested("file")) if "file" in log.mapping else None
    cloudevents = _cloudevents(log.nested("cloudevents")) if "cloudevents" in log.mapping else None
    return RequestLogSpec(sample_rate, file, cloudevents, fields.where("request_log"))


def _file(fields: Fields) -> FileSinkSpec:
    fields.reject_unknown(_FILE_FIELDS)
    text = fields.required("dir", str)
    if not text.strip():
        raise fields.error("dir", "must not be empty")
    default = FileSinkSpec(Path())
    limits = {key: _positive(fields, key, getattr(default, key)) for key in ("max_bytes", "max_files",
                                                                              "max_record_bytes")}
    if limits["max_record_bytes"] > limits["max_bytes"]:
        if "max_record_bytes" not in fields.mapping:  # name what the user wrote
            raise fields.error("max_bytes", f"{limits['max_bytes']} is less than max_record_bytes "
                               f"({limits['max_record_bytes']}, the default): a record must fit in one file")
        raise fields.error("max_record_bytes", f"{limits['max_record_bytes']} is more than max_bytes "
                           f"({limits['max_bytes']}): a record must fit in one file")
    return FileSinkSpec(Path(text).expanduser().resolve(), **limits)


def _cloudevents(fields: Fields) -> CloudEventsSpec:
    fields.reject_unknown(_CLOUDEVENTS_FIELDS)
    url = fields.required("url", str)
    if not url.startswith(("http://", "https://")) or not _has_host(url):
        raise fields.error("url", f"{redacted_url(url)!r} is not an http:// or https:// URL with a host")
    default = CloudEventsSpec(url)
    timeout_s = fields.optional("timeout_s", float, default.timeout_s)
    if not 0 < timeout_s <= MAX_TIMEOUT_S or math.isinf(timeout_s):
        raise fields.error("timeout_s", f"must be a number greater than 0 and at most {MAX_TIMEOUT_S:g}, "
                           f"got {timeout_s}")
    retries = fields.optional("retries", int, default.retries)
    if not 0 <= retries <= MAX_RETRIES:
        raise fields.error("retries", f"must be between 0 and {MAX_RETRIES}, got {retries}")
    return CloudEventsSpec(url, timeout_s, retries, _positive(fields, "max_event_bytes", default.max_event_bytes))


def _has_host(url: str) -> bool:
    """`url` parses, with a host and no space or control character (which httpx would send
    percent-encoded, to fail at every call)."""
    if any(not c.isprintable() or c.isspace() for c in url):
        return False
    try:
        _ = urlsplit(url).port  # a port that is not a number raises
        return bool(httpx.URL(url).host)
    except (httpx.InvalidURL, ValueError):
        return False


def redacted_url(url: str) -> str:
    """`url` as it may be shown (health, metric labels, logs, `gateway check`): userinfo dropped
    and the query's values replaced by `…`, as either may carry a credential."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not a URL one can take apart: show none of it
        return "<invalid URL>"
    if ":" in host:  # an IPv6 address: bracketed again
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    query = "&".join(f"{pair.split('=', 1)[0]}=…" for pair in parts.query.split("&") if pair) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _positive(fields: Fields, key: str, default: int) -> int:
    value = fields.optional(key, int, default)
    if value < 1:
        raise fields.error(key, f"must be at least 1, got {value}")
    return value


def request_log_text(spec: RequestLogSpec) -> str:
    """`spec` as `gateway check` prints it: `request log: sample 0.1 to file DIR (...), cloudevents URL`."""
    sinks = []
    if spec.file is not None:
        file = spec.file
        sinks.append(f"file {file.dir} ({file.max_files} files of {file.max_bytes} bytes, records up to "
                     f"{file.max_record_bytes})")
    if spec.cloudevents is not None:
        sinks.append(f"cloudevents {redacted_url(spec.cloudevents.url)}")
    return f"request log: sample {spec.sample_rate:g} to {', '.join(sinks)}"
