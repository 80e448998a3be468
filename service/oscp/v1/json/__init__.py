"""The JSON variant of OSCP 1.0: `POST /oscp/1.0/json/<Operation>`, same messages as SOAP, JSON bodies.

A pure codec (no web framework): the HTTP view and the outbound client call `JsonCodec`.
"""

from service.oscp.v1.json.codec import CONTENT_TYPE, HTTP_STATUS, SCHEMA_DIALECT, JsonCodec, message_schema

__all__ = ["CONTENT_TYPE", "HTTP_STATUS", "SCHEMA_DIALECT", "JsonCodec", "message_schema"]
