"""Which backend targets the in-loop client can reach: one plaintext TCP address."""

from __future__ import annotations

from typing import NamedTuple

_GRPCIO_SCHEMES = ("dns:", "unix:", "unix-abstract:", "vsock:", "xds:")


class Address(NamedTuple):
    """Where to connect, and the :authority of the calls."""

    host: str
    port: int
    authority: str


def parse_target(target: str) -> Address | None:
    """The address of `host:port`, `ipv4:a.b.c.d:port`, `ipv6:[::1]:port` or `[::1]:port`;
    None for what only grpcio reaches (`dns:`, `unix:`, a list of addresses, no port)."""
    rest = target
    if rest.startswith(_GRPCIO_SCHEMES):
        return None
    if rest.startswith(("ipv4:", "ipv6:")):
        rest = rest[5:]
    elif ":" in rest.split("]")[0] and not rest.startswith("["):
        scheme = rest.split(":", 1)[0]
        if not scheme.replace(".", "").replace("-", "").isalnum() or not rest.split(":", 1)[1].isdigit():
            return None  # a scheme such as dns: or unix:
    if "," in rest or "/" in rest:
        return None
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]:")
        authority = f"[{host}]:{port}"
    else:
        host, _, port = rest.rpartition(":")
        authority = rest
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return Address(host, int(port), authority)
