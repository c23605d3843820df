"""The state API's errors: Dapr's error codes with their HTTP status and gRPC code."""

from __future__ import annotations

from filters.state.store import ETagInvalid, ETagMismatch, StateError
from proxy.grpc.status import GrpcError, StatusCode
from proxy.http.errors import DaprApiError

ERR_MALFORMED_REQUEST = "ERR_MALFORMED_REQUEST"


class StateApiError(DaprApiError):
    """A DaprApiError that also knows the gRPC code daprd answers the same failure with."""

    def __init__(
        self, error_code: str, message: str, *, status: int, grpc_code: StatusCode
    ) -> None:
        super().__init__(error_code, message, status=status)
        self.grpc_code = grpc_code

    def as_grpc(self) -> GrpcError:
        return GrpcError(self.grpc_code, self.message)


def not_configured() -> StateApiError:
    return StateApiError(
        "ERR_STATE_STORE_NOT_CONFIGURED",
        "state store is not configured",
        status=500,
        grpc_code=StatusCode.FAILED_PRECONDITION,
    )


def not_found(store: str) -> StateApiError:
    return StateApiError(
        "ERR_STATE_STORE_NOT_FOUND",
        f"state store {store} is not found",
        status=400,
        grpc_code=StatusCode.INVALID_ARGUMENT,
    )


def malformed(message: str) -> StateApiError:
    return StateApiError(
        ERR_MALFORMED_REQUEST, message, status=400, grpc_code=StatusCode.INVALID_ARGUMENT
    )


def unsupported_operation(operation: str) -> StateApiError:
    return StateApiError(
        "ERR_NOT_SUPPORTED_STATE_OPERATION",
        f"operation type {operation} not supported",
        status=400,
        grpc_code=StatusCode.UNIMPLEMENTED,
    )


def not_supported(store: str, what: str) -> StateApiError:
    return StateApiError(
        "ERR_STATE_STORE_NOT_SUPPORTED",
        f"state store {store} doesn't support {what}",
        status=500,
        grpc_code=StatusCode.UNIMPLEMENTED,
    )


def store_failure(error_code: str, message: str, err: StateError) -> StateApiError:
    """A store's failure as daprd reports it: an etag mismatch is 409 / ABORTED and an invalid
    etag 400 / INVALID_ARGUMENT for saves and deletes; anything else 500 / INTERNAL."""
    if error_code in ("ERR_STATE_SAVE", "ERR_STATE_DELETE"):
        if isinstance(err, ETagMismatch):
            return StateApiError(error_code, message, status=409, grpc_code=StatusCode.ABORTED)
        if isinstance(err, ETagInvalid):
            return StateApiError(
                error_code, message, status=400, grpc_code=StatusCode.INVALID_ARGUMENT
            )
    return StateApiError(error_code, message, status=500, grpc_code=StatusCode.INTERNAL)
