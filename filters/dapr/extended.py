"""Custom metadata attributes (`PUT /v1.0/metadata/{key}`, gRPC SetMetadata), capped."""

from __future__ import annotations

from collections.abc import MutableMapping

from filters.dapr.params import printable
from proxy.http.errors import DaprApiError

# daprd keeps these in memory without a limit; every one is echoed by GET /v1.0/metadata, so
# any caller could grow the process (and every metadata answer) at will. Caps for labels:
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 4096
MAX_ATTRIBUTES = 64  # set by callers; the runtime's own (daprRuntimeVersion) not counted
_BUILTIN = frozenset({"daprRuntimeVersion"})

ERR_METADATA = "ERR_MALFORMED_REQUEST"


def set_attribute(extended: MutableMapping[str, str], key: str, value: str) -> None:
    """Set `key` to `value` in `extended`; DaprApiError (400, or 413 for a long value) past
    the caps. Replacing an attribute is always allowed."""
    if not key:
        raise DaprApiError(ERR_METADATA, "metadata key is empty", status=400)
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise DaprApiError(
            ERR_METADATA, f"metadata key longer than {MAX_KEY_BYTES} bytes", status=400
        )
    if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
        raise DaprApiError(
            "ERR_BODY_READ",
            f"metadata value of {printable(key)} longer than {MAX_VALUE_BYTES} bytes",
            status=413,
        )
    custom = sum(1 for name in extended if name not in _BUILTIN)
    if key not in extended and custom >= MAX_ATTRIBUTES:
        raise DaprApiError(
            ERR_METADATA, f"too many metadata attributes (at most {MAX_ATTRIBUTES})", status=400
        )
    extended[key] = value
