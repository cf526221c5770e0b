"""HTTP errors in the OpenAI shape, so OpenAI clients raise their usual typed exceptions."""

from __future__ import annotations


class APIError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with `status`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class UpstreamError(APIError):
    """The upstream model failed: 4xx the client can fix pass through, everything else is 502/504."""

    # statuses that describe the client's own request, so the client should see them as they are
    PASS_THROUGH = {400, 404, 409, 413, 422, 429}

    @classmethod
    def from_status(cls, status: int, message: str, retry_after: str | None = None) -> "UpstreamError":
        headers = {"Retry-After": retry_after} if retry_after else None
        if status in cls.PASS_THROUGH:
            return cls(status, f"upstream: {message}", type="invalid_request_error" if status != 429
                       else "rate_limit_error", code="upstream_rejected", headers=headers)
        # 401/403 from the upstream are *our* key's problem, not the client's: a gateway error
        return cls(502, f"upstream returned HTTP {status}: {message}", type="upstream_error",
                   code="upstream_error", headers=headers)

    @classmethod
    def timeout(cls, seconds: float) -> "UpstreamError":
        return cls(504, f"upstream did not answer within {seconds:g} s", type="upstream_error",
                   code="upstream_timeout")

    @classmethod
    def unreachable(cls, message: str) -> "UpstreamError":
        return cls(502, f"upstream unreachable: {message}", type="upstream_error", code="upstream_unreachable")

