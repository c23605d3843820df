"""Dapr message classes for the gRPC tests, found through the service descriptors.

The SDK moved the request/response classes out of dapr_pb2 into per-API modules over time; the
descriptors find them wherever the installed version generated them.
"""

from __future__ import annotations

from dapr.proto.runtime.v1 import appcallback_pb2, dapr_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

DAPR = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"]
APP_CALLBACK = appcallback_pb2.DESCRIPTOR.services_by_name["AppCallback"]


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def input_of(method: MethodDescriptor) -> type[Message]:
    return message_factory.GetMessageClass(method.input_type)


def output_of(method: MethodDescriptor) -> type[Message]:
    return message_factory.GetMessageClass(method.output_type)


GET_STATE = DAPR.methods_by_name["GetState"]
GetStateRequest = input_of(GET_STATE)
GetStateResponse = output_of(GET_STATE)

ON_INVOKE = APP_CALLBACK.methods_by_name["OnInvoke"]
InvokeRequest = input_of(ON_INVOKE)
InvokeResponse = output_of(ON_INVOKE)
