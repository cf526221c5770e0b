"""Settings of `lightalign serve`, with safe defaults (loopback only, bounded requests)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lightalign.bounds import at_most
from lightalign.errors import UserError


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"              # loopback only unless the user asks for more
    port: int = 8000
    # Clients must send `Authorization: Bearer <api_key>` when set. repr=False: never printed.
    api_key: str | None = field(default=None, repr=False)
    max_request_bytes: int = 1_000_000   # larger bodies -> 413
    max_messages: int = 256              # more messages -> 400
    max_batch_size: int = 16             # corrections per Aligner call
    max_wait_ms: float = 10.0            # how long the first request of a batch waits for company
    upstream_timeout_s: float = 120.0    # an upstream slower than this -> 504
    default_max_tokens: int = 128        # local upstream: new tokens when the client sets none
    max_tokens_limit: int = 1024         # local upstream: a larger request is clipped to this
    stream_chunk_words: int = 1          # SSE: words per content chunk of the corrected answer
    stream_mode: str = "whole"           # whole | sentence | guided (lightalign.aligner.streaming)
    max_rounds: int = 16                 # guided: upstream restarts per answer, then as "sentence"

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise UserError(f"--port {self.port}: must be between 1 and 65535")
        for name in ("max_request_bytes", "max_messages", "max_batch_size", "default_max_tokens",
                     "max_tokens_limit", "stream_chunk_words"):
            if getattr(self, name) < 1:
                raise UserError(f"serve config: {name} must be >= 1, got {getattr(self, name)}")
        from lightalign.aligner.streaming import check_mode

        check_mode(self.stream_mode)
        if self.max_rounds < 0:
            raise UserError(f"serve config: max_rounds must be >= 0, got {self.max_rounds}")
        if not (0 <= self.max_wait_ms < math.inf and 0 < self.upstream_timeout_s < math.inf):  # NaN fails too
            raise UserError("serve config: max_wait_ms must be >= 0 and upstream_timeout_s > 0 (finite numbers)")
        try:  # far above any sensible setting, below what lets one request or one wait take the server down
            at_most(self, "serve config: ", **CEILINGS)
        except ValueError as e:
            raise UserError(str(e)) from None


# max_tokens_limit is further cut to the local upstream's context length when it loads (serve.backends)
CEILINGS = dict(max_request_bytes=256 * 2**20, max_messages=100_000, max_batch_size=4096,
                default_max_tokens=2**20, max_tokens_limit=2**20, stream_chunk_words=100_000, max_rounds=1000,
                max_wait_ms=60_000, upstream_timeout_s=86_400)

