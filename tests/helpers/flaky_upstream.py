"""An upstream chat server that fails on purpose, for the serve tests."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class FlakyUpstream:
    """A real HTTP server that fails on purpose, to check how upstream failures reach the client."""

    def __init__(self):
        import asyncio

        self.seen_auth = []
        self.mode = "ok"
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            self.seen_auth.append(request.headers.get("authorization"))
            if self.mode == "slow":
                await asyncio.sleep(3)
            if self.mode == "hang":
                await asyncio.sleep(600)
            status = {"ok": 200, "slow": 200, "hang": 200, "500": 500, "429": 429, "401": 401, "400": 400}[self.mode]
            if status != 200:
                return JSONResponse({"error": {"message": f"failure {status}"}}, status_code=status,
                                    headers={"Retry-After": "7"} if status == 429 else None)
            return {"id": "x", "object": "chat.completion", "created": 0, "model": "flaky",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris is nice."},
                                 "finish_reason": "stop"}]}

        self.app = app
