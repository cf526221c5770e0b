"""Copy-aware greedy decoding: most of a correction is a copy of the answer, so guess it from there.

Each step, every row proposes draft tokens from its own answer (prompt lookup: continue where the
last copied token came from, or re-anchor on the last generated n-gram), or, when it is not
copying, from corrections already written (DraftMemory: refusals and boilerplate repeat), and one
forward pass verifies all drafts of all rows at once. A row keeps the longest prefix of its draft
that equals the model's own argmax, plus the model's next token, so the output is exactly greedy
decoding. (copy_bias > 0 or copy_min_prob > 0 switch to a conservative editor that also keeps a
draft token close enough to the model's choice; that is a different decoding rule, off by default.)

Why by hand: transformers' `generate(prompt_lookup_num_tokens=...)` (5.23) refuses batches
("assisted generate is only supported for batch_size = 1"), and per-example decoding is what
makes plain generate slow. Rows accept different numbers of tokens each step, so the batch is
ragged; we keep one rectangular KV cache and mask the rejected draft slots out of the attention
(holes), with explicit per-row position ids so RoPE positions stay those of a compact sequence.
This is exact for RoPE / absolute-position decoders (Llama, Qwen, Gemma, Mistral...) while the
sequence fits the sliding window, if any. Encoder-decoders (T5's relative bias and BART's learned
positions are computed from cache slots, where holes would shift them) instead re-run the short
decoder on the compact, right-padded sequence every step; the encoder runs once.

Where the time goes on a CPU: the first pass of a batch (prompts + drafts) costs about what one
teacher-forced pass over prompt + answer does, and most rows that keep their answer finish in it.
What remains is the rows that rewrite: a few per batch, for many nearly empty passes. So (causal
models) the rows still writing after their batch's first pass join one shared batch with those of
earlier batches (their caches left-padded with masked slots to one width), and all draft slots of a
pass have one width, chosen so that at most about half of them are padding (_draft_width).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch


@dataclass
class Decoded:
    tokens: list[int]  # generated ids, EOS excluded
    finished: bool  # True: stopped at EOS; False: ran into the token limit (truncated)


class DraftMemory:
    """Corrections already written, indexed by n-gram: the second draft source (retrieval drafting,
    as in REST). Aligner corrections repeat themselves (refusals, boilerplate), so once one row has
    written "I can not help with that.", later rows verify that whole span in one pass. Drafts are
    only guesses: verification keeps the output exactly greedy whatever this holds."""

    def __init__(self, ngram: int = 3, span: int = 16, max_keys: int = 200_000):
        self.ngram, self.span, self.max_keys = ngram, span, max_keys
        self.table: dict[tuple, list[int]] = {}

    def add(self, tokens: list[int]) -> None:
        spans: dict[tuple, list[int]] = {}
        for i in range(1, len(tokens)):
            for n in range(1, min(self.ngram, i) + 1):  # within one text the first occurrence wins
                spans.setdefault(tuple(tokens[i - n:i]), tokens[i:i + self.span])
        for key, span in spans.items():  # across texts the latest wins: recent text is likelier
            if key in self.table or len(self.table) < self.max_keys:
                self.table[key] = span

    def lookup(self, gen: list[int]) -> list[int]:
        for n in range(min(self.ngram, len(gen)), 0, -1):
            hit = self.table.get(tuple(gen[-n:]))
            if hit:
                return hit
        return []


@dataclass
class _Row:
    source: list[int]  # the answer's tokens (+ EOS): where drafts come from
    limit: int
    eos: frozenset
    gen: list[int] = field(default_factory=list)
    ptr: int | None = 0  # index in `source` of the token we expect next, None after a divergence
    anchor: int = 0  # last position copied from: re-anchoring prefers matches after it
    skip_guess: int | None = None  # after one substituted token, guess the copy resumes one further
    k: int | None = None  # current draft length: full while copying, short after a miss (see accept)
    memory: DraftMemory | None = None
    guessing: bool = False  # the current pointer is a substitution guess
    _last_guess: int | None = None
    done: bool = False
    finished: bool = False

    def draft(self, k: int, ngram: int) -> tuple[list[int], int]:
        """(up to k draft tokens, how many of them are worth a padded slot of their own: all while copying,
        2 after a miss). The pass pads every row to one width, so the rest fill slots other rows paid for."""
        room = self.limit - len(self.gen) - 1  # the verifying pass adds one token of its own
        self.k = k if self.k is None else min(self.k, k)
        k = min(k, room)
        if k <= 0:
            return [], 0
        tokens = (self._reanchor(ngram) if self.ptr is None else self.source[self.ptr:])[:k]
        return tokens, min(self.k, len(tokens))

    def _match(self, ngram: int, min_n: int) -> int | None:
        """Where in the answer the last generated n-gram (longest first) continues, or None."""
        src, gen = self.source, self.gen
        for n in range(min(ngram, len(gen)), min_n - 1, -1):
            tail = gen[-n:]
            hits = [i + n for i in range(len(src) - n + 1) if src[i:i + n] == tail and i + n < len(src)]
            if hits:
                after = [h for h in hits if h >= self.anchor]
                return after[0] if after else hits[0]
        return None

    def _reanchor(self, ngram: int) -> list[int]:
        """Drafts after a divergence, most to least reliable: the answer where the last 2+ tokens
        occur in it; the answer one token on (a substitution, tried once); an earlier correction
        that wrote the same n-gram; the answer where the last token occurs."""
        self.guessing = False
        for pos in (self._match(ngram, 2), self._pop_skip_guess()):
            if pos is not None:
                self.ptr, self.guessing = pos, pos == self._last_guess
                return self.source[pos:]
        if self.memory is not None:
            hit = self.memory.lookup(self.gen)
            if hit:
                return hit
        pos = self._match(1, 1)
        if pos is not None:
            self.ptr = pos
            return self.source[pos:]
        return []

    def _pop_skip_guess(self) -> int | None:
        guess, self.skip_guess = self.skip_guess, None
        self._last_guess = guess
        return guess

    def accept(self, drafted: list[int], n_accepted: int, bonus: int) -> None:
        new = drafted[:n_accepted] + [bonus]
        # Draft length adapts per row: on a CPU every padded draft slot costs compute, so a row that
        # is rewriting (drafts rejected) asks for 2 slots; one that is copying doubles back up.
        if drafted and self.k is not None:  # (drafts may run past k into slots other rows paid for)
            self.k = self.k * 2 if n_accepted >= min(self.k, len(drafted)) else 2
        if self.ptr is not None:
            self.ptr += n_accepted
            self.anchor = self.ptr
            if self.ptr < len(self.source) and self.source[self.ptr] == bonus:
                self.ptr += 1
                self.skip_guess = None
            else:  # the model wrote something else: maybe a one-token substitution (guessed once)
                failed_guess = self.guessing and n_accepted == 0
                self.skip_guess = self.ptr + 1 if self.ptr + 1 < len(self.source) and not failed_guess else None
                self.ptr = None
        self.guessing = False
        for t in new:
            if t in self.eos:
                self.done = self.finished = True
                if self.memory is not None:
                    self.memory.add(self.gen + [t])
                return
            self.gen.append(t)
            if len(self.gen) >= self.limit:
                self.done = True
                if self.memory is not None:
                    self.memory.add(self.gen)
                return


def eos_ids(generation_eos, tokenizer_eos: int | None) -> frozenset:
    """The ids that end a correction: generation_config's EOS (an id or a list) and the tokenizer's."""
    ids = [] if generation_eos is None else ([generation_eos] if isinstance(generation_eos, int) else
                                            list(generation_eos))
    if tokenizer_eos is not None:
        ids.append(tokenizer_eos)
    if not ids:
        raise ValueError("no EOS token: set tokenizer.eos_token or generation_config.eos_token_id")
    return frozenset(ids)


def _eos_set(model, tokenizer_eos: int | None) -> frozenset:
    return eos_ids(getattr(model.generation_config, "eos_token_id", None), tokenizer_eos)


def _accepted(drafts: torch.Tensor, lengths: torch.Tensor, logits: torch.Tensor,
              copy_bias: float = 0.0, copy_min_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(accepted draft tokens per row, argmax per position).

    A draft token is accepted if it is the argmax (exact greedy, the default), or, for a
    conservative editor that keeps the answer's wording unless the model clearly wants a change:
    - copy_bias > 0: if its log-prob is within `copy_bias` nats of the argmax;
    - copy_min_prob > 0: if the model gives it at least this probability (Medusa's "typical
      acceptance" with a fixed threshold). Unlike the margin, this still edits when the model is
      sure the answer's token is wrong but unsure what replaces it (e.g. it must answer in one
      word and spreads its mass over several candidate words).
    """
    pred = logits.argmax(dim=-1)
    d = drafts.shape[1]
    if d == 0:
        return torch.zeros(drafts.shape[0], dtype=torch.long, device=drafts.device), pred
    valid = torch.arange(d, device=drafts.device)[None, :] < lengths[:, None]
    ok = drafts == pred[:, :d]
    if copy_bias > 0 or copy_min_prob > 0:
        logp = logits[:, :d].float().log_softmax(dim=-1)
        draft_logp = logp.gather(-1, drafts[..., None])[..., 0]
        if copy_bias > 0:
            ok |= logp.max(dim=-1).values - draft_logp <= copy_bias
        if copy_min_prob > 0:
            ok |= draft_logp >= math.log(copy_min_prob)
    ok &= valid
    return ok.long().cumprod(dim=1).sum(dim=1), pred


def _pad_drafts(drafts: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    d = max((len(x) for x in drafts), default=0)
    t = torch.tensor([x + [pad] * (d - len(x)) for x in drafts], dtype=torch.long, device=device)
    return t.view(len(drafts), d), torch.tensor([len(x) for x in drafts], dtype=torch.long, device=device)


def _draft_width(wanted: list[int], slack: int = 32) -> int:
    """Draft slots per row for one pass. Every row gets the same number and a padded slot costs as much
    compute as a used one, so widen only while the rows that want the extra slots fill at least half of
    them (or they are few: `slack` slots are cheap next to a pass's fixed cost)."""
    width = 0
    for d in sorted(set(wanted)):
        filled = sum(min(n, d) - min(n, width) for n in wanted)
        if 2 * filled + slack < len(wanted) * (d - width):
            break
        width = d
    return width


def _drafts(rows: list[_Row], num_draft: int, ngram: int) -> list[list[int]]:
    """Each row's draft for the next pass, all cut to one width (see _draft_width)."""
    proposed = [row.draft(num_draft, ngram) for row in rows]
    width = _draft_width([wanted for _, wanted in proposed])
    return [tokens[:width] for tokens, _ in proposed]


def _forward_params(model) -> set:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _cache_kwarg(params: set) -> str:
    """transformers >= 5.24 names the KV cache argument `cache` (`past_key_values` warns, and goes in
    5.40); older releases only know `past_key_values`."""
    return "cache" if "cache" in params else "past_key_values"


class _Batch:
    """Rows that go through the model together: one rectangular KV cache, its attention mask over the cached
    slots (rejected draft slots are holes), and what each row feeds next: its prompt at first (left-padded,
    so every prompt ends in the last column), then the token the last pass chose."""

    def __init__(self, rows: list[int], cache, mask, feed, feed_mask, feed_pos, next_pos):
        self.rows, self.cache, self.mask = rows, cache, mask
        self.feed, self.feed_mask, self.feed_pos, self.next_pos = feed, feed_mask, feed_pos, next_pos

    @classmethod
    def start(cls, model, rows: list[int], prompts: list[list[int]], pad_token_id: int, device) -> "_Batch":
        from transformers import DynamicCache

        width = max(len(p) for p in prompts)
        feed = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
        feed_mask = torch.zeros_like(feed)
        for i, p in enumerate(prompts):
            feed[i, width - len(p):] = torch.tensor(p, dtype=torch.long, device=device)
            feed_mask[i, width - len(p):] = 1
        feed_pos = (feed_mask.cumsum(-1) - 1).clamp(min=0)
        next_pos = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)  # first draft's
        return cls(rows, DynamicCache(config=model.config), None, feed, feed_mask, feed_pos, next_pos)

    def step(self, run: "_Run") -> None:
        """One pass verifying every row's draft; rows that finish leave the batch."""
        device, rows = self.feed.device, run.rows
        drafted = _drafts([rows[i] for i in self.rows], run.num_draft, run.ngram)
        drafts, lengths = _pad_drafts(drafted, run.pad_token_id, device)
        d = drafts.shape[1]
        step_ids = torch.cat([self.feed, drafts], dim=1)
        step_mask = torch.cat([self.feed_mask, torch.ones_like(drafts)], dim=1)
        full_mask = step_mask if self.mask is None else torch.cat([self.mask, step_mask], dim=1)
        positions = torch.cat([self.feed_pos, self.next_pos[:, None] + torch.arange(d, device=device)[None, :]], 1)
        kwargs = {run.cache_kw: self.cache, **({"logits_to_keep": d + 1} if run.keep_kw else {})}
        out = run.model(input_ids=step_ids, attention_mask=full_mask, position_ids=positions, use_cache=True,
                        **kwargs)
        n_acc, pred = _accepted(drafts, lengths, out.logits[:, -(d + 1):], run.copy_bias, run.copy_min_prob)
        bonus = pred.gather(1, n_acc[:, None])[:, 0]
        if d:  # rejected draft slots stay in the cache as holes nobody attends to ...
            full_mask[:, -d:] = (torch.arange(d, device=device)[None, :] < n_acc[:, None]).to(full_mask.dtype)
            unused = d - int(n_acc.max())
            if unused:  # ... except the trailing slots no row accepted: those are dropped
                self.cache.crop(-unused)
                full_mask = full_mask[:, :-unused]
        self.mask = full_mask
        for i, dr, n, b in zip(self.rows, drafted, n_acc.tolist(), bonus.tolist()):
            rows[i].accept(dr, n, b)
        self.feed, self.feed_mask = bonus[:, None], torch.ones_like(bonus[:, None])
        self.feed_pos = (self.next_pos + n_acc)[:, None]
        self.next_pos = self.next_pos + n_acc + 1
        keep = [r for r, i in enumerate(self.rows) if not rows[i].done]
        if len(keep) < len(self.rows):
            self.rows = [self.rows[r] for r in keep]
            if self.rows:
                idx = torch.tensor(keep, dtype=torch.long, device=device)
                self.cache.batch_select_indices(idx)
                self.mask, self.feed, self.feed_mask, self.feed_pos, self.next_pos = (
                    self.mask[idx], self.feed[idx], self.feed_mask[idx], self.feed_pos[idx], self.next_pos[idx])
                self._trim()

    def join(self, other: "_Batch") -> "_Batch":
        """Both batches as one, each cache left-padded with masked slots to the longer one. Positions are
        explicit, so a row's RoPE positions do not depend on where its slots sit."""
        width = max(self.mask.shape[1], other.mask.shape[1])

        def left_pad(t, dim):
            if t.shape[dim] == width:
                return t
            shape = list(t.shape)
            shape[dim] = width - t.shape[dim]
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([left_pad(mine.keys, -2), left_pad(theirs.keys, -2)])
            mine.values = torch.cat([left_pad(mine.values, -2), left_pad(theirs.values, -2)])
        self.rows = self.rows + other.rows
        self.mask = torch.cat([left_pad(self.mask, 1), left_pad(other.mask, 1)])
        self.feed, self.feed_mask, self.feed_pos, self.next_pos = (
            torch.cat([a, b]) for a, b in ((self.feed, other.feed), (self.feed_mask, other.feed_mask),
                                           (self.feed_pos, other.feed_pos), (self.next_pos, other.next_pos)))
        self._trim()
        return self

    def _trim(self) -> None:
        """Drop the leading slots no remaining row attends to (left padding of rows that have left)."""
        start = int(self.mask.any(0).int().argmax())
        if start and _joinable(self.cache):
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., start:, :], layer.values[..., start:, :]
            self.mask = self.mask[:, start:]


@dataclass
class _Run:
    """What every pass of one copy_greedy_causal call shares."""
    model: object
    rows: list[_Row]
    num_draft: int
    ngram: int
    copy_bias: float
    copy_min_prob: float
    pad_token_id: int
    cache_kw: str
    keep_kw: bool


def _joinable(cache) -> bool:
    """Only plain growing caches can be padded and stacked (not sliding-window, quantized, ... layers)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)


@torch.inference_mode()
def copy_greedy_causal(model, prompts: list[list[int]], sources: list[list[int]], *, pad_token_id: int,
                       eos_token_id: int | None, max_new_tokens: int | list[int], num_draft: int = 16,
                       ngram: int = 3, copy_bias: float = 0.0, copy_min_prob: float = 0.0,
                       memory: DraftMemory | None = None, batch_size: int | None = None) -> list[Decoded]:
    """Greedy continuation of each prompt (token ids), drafting from `sources` (and from `memory`:
    pass one DraftMemory to successive calls so later batches reuse earlier corrections).
    `max_new_tokens` is one limit for all rows or one per row.

    With `batch_size`, prompts take their first pass `batch_size` at a time, in the order given (sort
    them by length), and the rows still writing after it go on in one shared batch with the unfinished
    rows of earlier groups: the few long rewrites of each group share their passes instead of each group
    paying its own tail of nearly empty ones. Without it, all prompts are one group."""
    device = next(model.parameters()).device
    eos = _eos_set(model, eos_token_id)
    first_eos = min(eos) if eos_token_id is None else eos_token_id
    memory = DraftMemory(ngram) if memory is None else memory
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(limits) != len(prompts) or len(sources) != len(prompts):
        raise ValueError("prompts, sources and per-row max_new_tokens differ in length")
    rows = [_Row(list(src) + [first_eos], limit, eos, memory=memory) for src, limit in zip(sources, limits)]
    todo = [i for i, limit in enumerate(limits) if limit > 0]
    params = _forward_params(model)
    run = _Run(model, rows, num_draft, ngram, copy_bias, copy_min_prob, pad_token_id, _cache_kwarg(params),
               "logits_to_keep" in params)
    size = max(1, batch_size or len(todo))
    pool = None  # the rows still writing, from every group started so far
    for s in range(0, len(todo), size):
        group = todo[s:s + size]
        batch = _Batch.start(model, group, [prompts[i] for i in group], pad_token_id, device)
        batch.step(run)
        if not batch.rows:
            continue
        if pool is None or not pool.rows:
            pool = batch
        elif _joinable(pool.cache) and _joinable(batch.cache):
            pool.join(batch)
        else:  # caches that cannot be stacked: the earlier rows finish first
            while pool.rows:
                pool.step(run)
            pool = batch
        pool.step(run)
    while pool is not None and pool.rows:
        pool.step(run)
    return [Decoded(r.gen, r.finished) for r in rows]


@torch.inference_mode()
def copy_greedy_seq2seq(model, prompts: list[list[int]], sources: list[list[int]], *, pad_token_id: int,
                        eos_token_id: int | None, max_new_tokens: int, num_draft: int = 16,
                        ngram: int = 3, copy_bias: float = 0.0, copy_min_prob: float = 0.0,
                        memory: DraftMemory | None = None) -> list[Decoded]:
    """The encoder-decoder version: encode once, re-run the decoder on compact sequences each step."""
    from transformers.modeling_outputs import BaseModelOutput

    device = next(model.parameters()).device
    eos = _eos_set(model, eos_token_id)
    first_eos = min(eos) if eos_token_id is None else eos_token_id
    gen_cfg = model.generation_config
    start = gen_cfg.decoder_start_token_id
    start = model.config.decoder_start_token_id if start is None else start
    if isinstance(start, list):
        start = start[0]
    if start is None:
        raise ValueError("the model has no decoder_start_token_id")
    forced_bos = getattr(gen_cfg, "forced_bos_token_id", None)  # BART-style checkpoints force it first
    memory = DraftMemory(ngram) if memory is None else memory
    rows = [_Row(list(src) + [first_eos], max_new_tokens, eos, memory=memory) for src in sources]
    if max_new_tokens <= 0 or not prompts:
        return [Decoded([], False) for _ in prompts]
    if forced_bos is not None:
        for r in rows:  # forced, so not a copy: the draft pointer stays at the answer's start
            r.gen.append(forced_bos)

    width = max(len(p) for p in prompts)
    enc_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
    enc_mask = torch.zeros_like(enc_ids)
    for i, p in enumerate(prompts):
        enc_ids[i, :len(p)] = torch.tensor(p, dtype=torch.long, device=device)
        enc_mask[i, :len(p)] = 1
    hidden = model.get_encoder()(input_ids=enc_ids, attention_mask=enc_mask).last_hidden_state
    active = [i for i, r in enumerate(rows) if not r.done]

    while active:
        idx = torch.tensor(active, dtype=torch.long, device=device)
        drafted = _drafts([rows[i] for i in active], num_draft, ngram)
        drafts, lengths = _pad_drafts(drafted, pad_token_id, device)
        seqs = [[start] + rows[i].gen + drafted[r] for r, i in enumerate(active)]
        t = max(len(s) for s in seqs)
        dec = torch.full((len(seqs), t), pad_token_id, dtype=torch.long, device=device)
        dec_mask = torch.zeros_like(dec)
        for r, s in enumerate(seqs):
            dec[r, :len(s)] = torch.tensor(s, dtype=torch.long, device=device)
            dec_mask[r, :len(s)] = 1
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[idx]), attention_mask=enc_mask[idx],
                    decoder_input_ids=dec, decoder_attention_mask=dec_mask, use_cache=False)
        first = torch.tensor([len(rows[i].gen) for i in active], device=device)  # logits predicting gen[len]
        cols = (first[:, None] + torch.arange(drafts.shape[1] + 1, device=device)[None, :]).clamp(max=t - 1)
        logits = out.logits.gather(1, cols[..., None].expand(-1, -1, out.logits.shape[-1]))
        n_acc, pred = _accepted(drafts, lengths, logits, copy_bias, copy_min_prob)
        bonus = pred.gather(1, n_acc[:, None])[:, 0]
        for i, dr, n, b in zip(active, drafted, n_acc.tolist(), bonus.tolist()):
            rows[i].accept(dr, n, b)
        active = [i for i in active if not rows[i].done]
    return [Decoded(r.gen, r.finished) for r in rows]
