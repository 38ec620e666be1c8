"""The Open Inference Protocol's (KServe V2 REST) JSON shapes, as Pydantic models.

Names follow the protocol's specification (``$inference_request`` becomes
``InferenceRequest`` and so on) so that people who know the protocol find what
they expect in our OpenAPI document. Validation is strict like ``/predict``:
tensor data must be JSON numbers (no strings, no booleans).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field


def _optional(schema: dict[str, Any]) -> None:
    """Leave ``"default": null`` out of a request field's schema.

    It says nothing a missing ``required`` does not, and openapi-typescript
    reads a default as "always present", making the field mandatory in clients.
    """
    schema.pop("default", None)


#: An optional request field: absent or null.
OPTIONAL: Any = Field(default=None, json_schema_extra=_optional)

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
#: ``null`` is a value not measured, accepted where ``/predict`` accepts it (see
#: ``model.features.MAY_BE_MISSING``); in binary tensors, NaN says the same.
Value = Number | None
#: The protocol allows tensor data flat (row-major) or nested; ours are at most 2-D.
TensorData = list[Value] | list[list[Value]]
Parameters = dict[str, Any]

#: The protocol's datatypes this service reads, each with the NumPy type of its binary
#: tensor data (Triton's extension: little-endian). The one table that the schema, the
#: binary decoder, the range check of JSON data and the model metadata all read, so that
#: none of them can accept or advertise a datatype another refuses. Every numeric type a
#: NumPy array or pandas column can have is here (tritonclient and MLServer's codecs name
#: the datatype after it); BOOL (true/false is no feature's value), BF16 (NumPy has no
#: such type) and BYTES are not.
DATATYPES: Final[Mapping[str, str]] = {
    "FP64": "<f8",
    "FP32": "<f4",
    "FP16": "<f2",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "i1",
    "UINT64": "<u8",
    "UINT32": "<u4",
    "UINT16": "<u2",
    "UINT8": "u1",
}
if TYPE_CHECKING:
    Datatype = str
else:  # Literal["FP64", "FP32", ...]: the schema's enum, and its refusal lists them all
    Datatype = Literal[tuple(DATATYPES)]


class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(description="FP64, FP32, INT64, ... (the protocol's tensor types).")
    shape: list[int] = Field(description="-1 marks a dimension of any size (the batch).")


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: Parameters | None = None


class ServerLiveResponse(BaseModel):
    live: bool


class ServerReadyResponse(BaseModel):
    ready: bool


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool


class InferenceErrorResponse(BaseModel):
    """Every refusal of the protocol's endpoints: one sentence naming the input at fault."""

    error: str


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="'features', or one feature's name (column layout).")
    shape: list[Annotated[int, Field(strict=True, ge=0)]]
    datatype: Datatype
    parameters: Parameters | None = OPTIONAL
    data: TensorData | None = Field(
        default=None,
        description="Row-major values; absent only when sent as binary data "
        "(Triton's binary tensor extension, parameter binary_data_size).",
        json_schema_extra=_optional,
    )


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: Parameters | None = OPTIONAL


class InferenceRequest(BaseModel):
    """``features`` [n, 13] in feature order, or the 13 features as inputs of shape [n]."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = OPTIONAL
    parameters: Parameters | None = OPTIONAL
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = OPTIONAL


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[float] | list[int]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]
