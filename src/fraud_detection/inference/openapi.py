"""The OpenAPI 3.1 document of the model server (served at ``/openapi.json``).

It covers our own routes (V1 ``:predict``/``:explain``, V2 ``infer``) and the V2 metadata and
health routes. Request schemas are the request models' own JSON schemas: the contract-derived row
model (:func:`~fraud_detection.inference.requests.row_model`), :class:`ScoreParameters` and the V2
envelope, all strict (``additionalProperties: false``), with the decoder's limits. What JSON
Schema cannot say is written in the descriptions: a V2 request carries one tensor per column, all
with the same number of rows; an event time is at most the allowed skew ahead of the server's
clock; a body is at most the byte cap and nested at most the depth limit.

Every status a route gives is documented, with the one error body ``{"error": message}``
(the framework's own 404/405 say ``{"detail": message}``).
"""

from __future__ import annotations

import copy
from typing import Any

from fraud_detection import __version__
from fraud_detection.data.contract import DType
from fraud_detection.inference.requests import _V2_DATATYPES, RequestDecoder, ScoreParameters

_SCHEMAS = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMAS + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_ERRORS = {
    "400": "Malformed request: not JSON, a repeated key, nesting too deep, a V2 tensor of the wrong "
    "name, datatype or shape, or tensors of different lengths.",
    "404": "No such model, or no such version of it.",
    "413": "Body over the byte cap, or more rows than the row limit.",
    "415": "Content-Type is not application/json.",
    "422": "A row, a tensor value or a parameter breaks its schema (the message names the field, "
    "the value and what was expected).",
    "500": "Internal error (the body carries only a request id).",
    "503": "The model is not loaded yet, or the server is shutting down.",
    "504": "The request did not complete within the server's deadline.",
}


def _responses(ok: dict[str, Any], *statuses: str) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    for status in statuses:
        responses[status] = _json(_ref("Error"), _ERRORS[status])
    return responses


def _row_schema(decoder: RequestDecoder) -> dict[str, Any]:
    schema = decoder.row_model.model_json_schema()
    skew = decoder.limits.max_future_skew
    for name, spec in decoder.columns.items():
        if spec.dtype == DType.DATETIME:
            schema["properties"][name].update(
                format="date-time",
                description=(
                    "ISO 8601 date-time; without an offset it is UTC. At most "
                    f"{int(skew.total_seconds())} s after the server's clock, and within years "
                    "1 to 9999 in UTC."
                ),
            )
    schema["description"] = (
        f"One transaction: the request columns of data contract {decoder.contract.name!r}. "
        "Labels and excluded columns are refused."
    )
    return schema


def _tensor_schema(name: str, value: dict[str, Any], datatypes: tuple[str, ...], max_rows: int) -> dict:
    """The V2 input tensor of one column: shape ``[n]`` or ``[n, 1]``, data flat or one value a row."""
    value = {k: v for k, v in value.items() if k not in ("title", "default")}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": name},
            "shape": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2,
                "prefixItems": [{"type": "integer", "minimum": 1, "maximum": max_rows}, {"const": 1}],
                "items": False,
            },
            "datatype": {"enum": list(datatypes)},
            "data": {
                "anyOf": [
                    {"type": "array", "minItems": 1, "maxItems": max_rows, "items": value},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": max_rows,
                        "items": {
                            "type": "array",
                            "prefixItems": [value],
                            "minItems": 1,
                            "maxItems": 1,
                            "items": False,
                        },
                    },
                ],
                "description": "shape[0] values, flat or as one-element lists.",
            },
            "parameters": _nullable({"type": "object"}),
        },
    }


def openapi_document(decoder: RequestDecoder, model_name: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the server's scoring, metadata and health routes."""
    limits = decoder.limits
    row = _row_schema(decoder)
    parameters = ScoreParameters.model_json_schema()
    names = list(decoder.columns)
    tensors = {
        f"Tensor_{name}": _tensor_schema(
            name, copy.deepcopy(row["properties"][name]), _V2_DATATYPES[spec.dtype], limits.max_rows
        )
        for name, spec in decoder.columns.items()
    }
    schemas: dict[str, Any] = {
        "TransactionRow": row,
        "ScoreParameters": parameters,
        "V1Request": {
            "type": "object",
            "additionalProperties": False,
            "required": ["instances"],
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": limits.max_rows,
                    "items": _ref("TransactionRow"),
                },
                "parameters": _nullable(_ref("ScoreParameters")),
            },
        },
        "Prediction": {
            "type": "object",
            "required": ["transaction_id", "fraud_probability", "decision", "degraded"],
            "properties": {
                "transaction_id": {"type": "integer"},
                "fraud_probability": {"type": "number", "minimum": 0, "maximum": 1},
                "decision": {"enum": [0, 1]},
                "degraded": {"type": "boolean"},
                "degraded_reasons": {"type": "array", "items": {"type": "string"}},
                "reasons": {"type": "array", "items": {"type": "object"}},
            },
        },
        "V1Response": {
            "type": "object",
            "required": ["predictions", "model_name", "model_version", "threshold", "request_id"],
            "properties": {
                "predictions": {"type": "array", "minItems": 1, "items": _ref("Prediction")},
                "model_name": {"const": model_name},
                "model_version": {"type": "string"},
                "threshold": {"type": "number"},
                "request_id": {"type": "string"},
            },
        },
        **tensors,
        "V2Request": {
            "type": "object",
            "additionalProperties": False,
            "required": ["inputs"],
            "description": (
                f"One input tensor per column of {names} (each at most once; "
                f"{[n for n in names if n in decoder.required]} required), all with the same number "
                f"of rows, 1 to {limits.max_rows}."
            ),
            "properties": {
                "id": _nullable({"type": "string", "maxLength": 128}),
                "parameters": _nullable(_ref("ScoreParameters")),
                "inputs": {
                    "type": "array",
                    "minItems": len(decoder.required),
                    "maxItems": len(names),
                    "items": {"oneOf": [_ref(name) for name in tensors]},
                    "allOf": [  # each column once, the required ones always
                        {
                            "contains": {"required": ["name"], "properties": {"name": {"const": name}}},
                            "minContains": 1 if name in decoder.required else 0,
                            "maxContains": 1,
                        }
                        for name in names
                    ],
                },
                "outputs": _nullable({"type": "array", "items": {"type": "object"}}),
            },
        },
        "V2Output": {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "datatype": {"type": "string"},
                "data": {"type": "array"},
            },
        },
        "V2Response": {
            "type": "object",
            "required": ["model_name", "model_version", "id", "outputs"],
            "properties": {
                "model_name": {"const": model_name},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": _ref("V2Output")},
            },
        },
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
            "anyOf": [{"required": ["error"]}, {"required": ["detail"]}],
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"const": model_name},
                "versions": _nullable({"type": "array", "items": {"type": "string"}}),
                "platform": {"type": "string"},
                "inputs": {"type": "array"},
                "outputs": {"type": "array"},
            },
        },
        "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"const": model_name}, "ready": {"type": "boolean"}},
        },
    }
    model = {
        "name": "model_name",
        "in": "path",
        "required": True,
        "description": "The served model.",
        "schema": {"type": "string", "enum": [model_name]},
    }
    version = {
        "name": "model_version",
        "in": "path",
        "required": True,
        "description": "The served model version (its `model_version` in any response).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    }
    body_note = (
        f" The body is at most {limits.max_body_bytes} bytes, nested at most {limits.max_depth} "
        "levels, and repeats no key."
    )

    def scoring(summary: str, request: str, response: str, params: list[dict[str, Any]]) -> dict:
        return {
            "post": {
                "summary": summary,
                "operationId": summary.lower().replace(" ", "_").replace("(", "").replace(")", ""),
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "description": "The transactions to score." + body_note,
                    "content": {"application/json": {"schema": _ref(request)}},
                },
                "responses": _responses(
                    _json(_ref(response), "Scores, one per transaction, in request order."),
                    *("400", "404", "413", "415", "422", "500", "503", "504"),
                ),
            }
        }

    def probe(summary: str, schema: str, params: list[dict[str, Any]], *statuses: str) -> dict:
        return {
            "get": {
                "summary": summary,
                "operationId": summary.lower().replace(" ", "_"),
                "parameters": params,
                "responses": _responses(_json(_ref(schema), summary), *statuses),
            }
        }

    paths = {
        "/v1/models/{model_name}:predict": scoring("V1 predict", "V1Request", "V1Response", [model]),
        "/v1/models/{model_name}:explain": scoring("V1 explain", "V1Request", "V1Response", [model]),
        "/v2/models/{model_name}/infer": scoring("V2 infer", "V2Request", "V2Response", [model]),
        "/v2/models/{model_name}/versions/{model_version}/infer": scoring(
            "V2 infer (version)", "V2Request", "V2Response", [model, version]
        ),
        "/v2": probe("Server metadata", "ServerMetadata", []),
        "/v2/health/live": probe("Server live", "Live", []),
        "/v2/health/ready": probe("Server ready", "Ready", [], "503"),
        "/v2/models/{model_name}": probe("Model metadata", "ModelMetadata", [model], "404"),
        "/v2/models/{model_name}/ready": probe("Model ready", "ModelReady", [model], "404", "503"),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Fraud detection model server",
            "version": __version__,
            "description": (
                f"Scoring of card transactions by model {model_name!r} over the V1 and V2 (Open "
                f"Inference Protocol) inference protocols. Requests follow data contract "
                f"{decoder.contract.name!r}."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas},
        "x-limits": {
            "max_body_bytes": limits.max_body_bytes,
            "max_rows": limits.max_rows,
            "max_depth": limits.max_depth,
        },
    }
