"""Gateway errors and their OpenAI-shaped JSON envelope.

```text
GatewayError                      status  code
 ├── BadRequest                   400     bad_request
 ├── Unauthorized                 401     unauthorized
 ├── Forbidden                    403     model_not_allowed
 ├── DlpBlocked                   403     dlp_blocked
 ├── NotFound                     404     not_found
 ├── MethodNotAllowed             405     method_not_allowed
 ├── PayloadTooLarge              413     payload_too_large
 ├── RateLimited                  429     rate_limited
 ├── ProviderError                502     provider_error
 └── ProviderUnavailable          503     provider_unavailable
```
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

__all__ = [
    "BadRequest",
    "DlpBlocked",
    "Forbidden",
    "GatewayError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProviderError",
    "ProviderUnavailable",
    "RateLimited",
    "Unauthorized",
    "error_body",
]


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


class BadRequest(GatewayError):
    status, code, type = 400, "bad_request", "invalid_request_error"


class Unauthorized(GatewayError):
    status, code, type = 401, "unauthorized", "authentication_error"


class Forbidden(GatewayError):
    status, code, type = 403, "model_not_allowed", "permission_error"


class DlpBlocked(GatewayError):
    status, code, type = 403, "dlp_blocked", "permission_error"


class NotFound(GatewayError):
    status, code, type = 404, "not_found", "invalid_request_error"


class MethodNotAllowed(GatewayError):
    status, code, type = 405, "method_not_allowed", "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status, code, type = 413, "payload_too_large", "invalid_request_error"


class RateLimited(GatewayError):
    status, code, type = 429, "rate_limited", "rate_limit_error"


class ProviderError(GatewayError):
    status, code, type = 502, "provider_error", "api_error"


class ProviderUnavailable(GatewayError):
    status, code, type = 503, "provider_unavailable", "service_unavailable_error"


def error_body(message: str, type: str, code: str, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "code": code, "param": param}})
