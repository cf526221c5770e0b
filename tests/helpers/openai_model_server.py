"""A real OpenAI-compatible chat-completions (and completions) server for tests: it serves an actual transformers
model (e.g. a mini-lab model) on 127.0.0.1 through the standard library's HTTP server.

    with ModelServer(model_dir, name="lab-base") as server:
        url = server.url  # http://127.0.0.1:PORT/v1
        ... POST {url}/chat/completions {"model": "lab-base", "messages": [...], "max_tokens": 32}

Replies are the model's greedy generation (lightalign.generation.generate_chat), so a test can
check that what came over HTTP is what the model says locally. Unknown model names get a 404 and
malformed requests a 400, with OpenAI-style {"error": {"message": ...}} bodies, as vLLM does.
Shared by the aligner, eval and serve tests.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class ModelServer:
    def __init__(self, model_dir: str | Path, name: str = "lab", host: str = "127.0.0.1", port: int = 0,
                 max_tokens_cap: int = 64):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name, self.max_tokens_cap = name, max_tokens_cap
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True,
                                                          dtype=torch.float32).eval()
        self.lock = threading.Lock()  # one model: one generation at a time
        self.requests = 0
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "ModelServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def complete(self, body: dict) -> tuple[int, dict]:
        from lightalign.generation import generate_chat

        if body.get("model") != self.name:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                   "type": "NotFoundError", "code": 404}}
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
            return 400, {"error": {"message": "messages must end with a user message", "type": "BadRequestError"}}
        system = next((m["content"] for m in messages if m.get("role") == "system"), None)
        max_tokens = min(int(body.get("max_tokens") or self.max_tokens_cap), self.max_tokens_cap)
        with self.lock:
            self.requests += 1
            reply = generate_chat(self.model, self.tokenizer, [messages[-1]["content"]], system=system,
                                  max_new_tokens=max_tokens)[0]
        return 200, {"id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
                     "model": self.name, "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": reply}}]}

    def text_complete(self, body: dict) -> tuple[int, dict]:
        """`/v1/completions` as vLLM answers it: a prompt of text or token ids, greedy, `stop_token_ids`
        and `return_token_ids` honoured (the latter only when asked, so a text-only reply can be tested)."""
        import torch

        if body.get("model") != self.name:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
        prompt = body.get("prompt")
        ids = self.tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else prompt
        if not (isinstance(ids, list) and ids and all(isinstance(t, int) for t in ids)):
            return 400, {"error": {"message": "prompt must be text or a list of token ids"}}
        stop = set(body.get("stop_token_ids") or []) | {self.tokenizer.eos_token_id}
        max_tokens = min(int(body.get("max_tokens") or 16), self.max_tokens_cap)
        with self.lock, torch.inference_mode():
            self.requests += 1
            x = torch.tensor([ids])
            gen = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                      max_new_tokens=max_tokens, eos_token_id=sorted(stop),
                                      pad_token_id=self.tokenizer.pad_token_id)[0, len(ids):].tolist()
        cut = next((k for k, t in enumerate(gen) if t in stop), None)
        out = gen[:cut + 1] if cut is not None else gen
        choice = {"index": 0, "text": self.tokenizer.decode(out, skip_special_tokens=True),
                  "finish_reason": "stop" if cut is not None else "length"}
        if body.get("return_token_ids"):
            choice["token_ids"] = out
        return 200, {"id": f"cmpl-{self.requests}", "object": "text_completion", "created": int(time.time()),
                     "model": self.name, "choices": [choice]}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": server.name, "object": "model"}]})
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                route = {"/v1/chat/completions": server.complete, "/v1/completions": server.text_complete}
                if self.path.rstrip("/") not in route:
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                except json.JSONDecodeError:
                    return self._send(400, {"error": {"message": "body is not JSON"}})
                try:
                    status, payload = route[self.path.rstrip("/")](body)
                except Exception as e:  # noqa: BLE001 - a server reports, it does not die
                    status, payload = 500, {"error": {"message": f"{type(e).__name__}: {e}"}}
                self._send(status, payload)

        return Handler
