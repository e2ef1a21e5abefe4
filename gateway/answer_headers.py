"""Headers every answer carries from what its request context learned: the variants that
served it (`x-gateway-variants: s1:1, s2:1`) and where its time went (`Server-Timing`, W3C:
`name;dur=MILLISECONDS;desc="..."`, which browsers' developer tools and curl -v show)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from gateway.dataplane import RequestContext

VARIANTS_HEADER = b"x-gateway-variants"
SERVER_TIMING_HEADER = b"server-timing"


class Timing(NamedTuple):
    """One step of a request: its Server-Timing name, how long it took, what it was."""

    name: str
    seconds: float
    description: str = ""


def answer_headers(context: RequestContext) -> list[tuple[bytes, bytes]]:
    """The headers the context's answer gets (none when it learned nothing)."""
    headers = []
    if context.served:
        headers.append((VARIANTS_HEADER, ", ".join(context.served).encode()))
    if context.timings:
        headers.append((SERVER_TIMING_HEADER, server_timing(context.timings).encode()))
    return headers


def server_timing(timings: list[Timing]) -> str:
    """The Server-Timing value of `timings`, durations in milliseconds."""
    return ", ".join(["%s;dur=%.3f" % (name, seconds * 1000) if not description  # noqa: UP031 (the faster)
                      else '%s;dur=%.3f;desc="%s"' % (name, seconds * 1000, _quoted(description))  # noqa: UP031
                      for name, seconds, description in timings])


def _quoted(text: str) -> str:
    """`text` inside a quoted-string (RFC 9110): backslash and double quote escaped."""
    if '"' in text or "\\" in text:
        return text.replace("\\", "\\\\").replace('"', '\\"')
    return text
