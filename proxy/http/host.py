"""Whether a Host / :authority value is a valid uri-host [":" port]."""

from __future__ import annotations

import ipaddress
import re

# RFC 9110 §7.2 / RFC 3986 §3.2.2: uri-host = IP-literal / IPv4address / reg-name, port = *DIGIT
# (here at most 65535). reg-name is unreserved / sub-delims / pct-encoded characters, which also
# covers IPv4address; an IP-literal's brackets must hold an IPv6 address.
_PORT = (
    rb"(?::(?:[0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
)
_CHARS = rb"[-A-Za-z0-9._~!$&'()*+,;=]*"
_REG_NAME = re.compile(_CHARS + rb"(?:%[0-9A-Fa-f]{2}" + _CHARS + rb")*" + _PORT)
_IP_LITERAL = re.compile(rb"\[([0-9A-Fa-f:.]+)\]" + _PORT)


def valid_host(value: bytes) -> bool:
    """True for uri-host [":" port]; an empty value is valid too (RFC 9112 §3.2)."""
    if _REG_NAME.fullmatch(value) is not None:
        return True
    literal = _IP_LITERAL.fullmatch(value)
    if literal is None:
        return False
    try:
        ipaddress.IPv6Address(literal[1].decode("ascii"))
    except ValueError:
        return False
    return True
