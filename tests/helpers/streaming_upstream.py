"""A streaming chat server that misbehaves on purpose, for the serve streaming tests.

- "endless": streams "Sentence N." every `interval` seconds until the client hangs up, and records
  when it noticed (`hung_up`, a threading.Event, set the moment its stream is cancelled);
- "break": streams two sentences, then drops the connection mid-stream (an error after the first byte).
"""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse


class MisbehavingStream:
    def __init__(self, mode: str = "endless", interval: float = 0.2):
        self.mode, self.interval = mode, interval
        self.hung_up = threading.Event()
        self.started = threading.Event()
        app = FastAPI()

        def event(delta: dict) -> str:
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "misbehaving",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            return f"data: {json.dumps(chunk)}\n\n"

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            async def events():
                self.started.set()
                try:
                    yield event({"role": "assistant", "content": ""})
                    n = 0
                    while True:
                        n += 1
                        yield event({"content": f"{' ' if n > 1 else ''}Sentence {n} is here."})
                        if self.mode == "break" and n == 2:
                            raise RuntimeError("upstream broke mid-stream")
                        await asyncio.sleep(self.interval)
                except asyncio.CancelledError:
                    self.hung_up.set()
                    raise

            return StreamingResponse(events(), media_type="text/event-stream")

        self.app = app
