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

    def draft(self, k: int, ngram: int) -> list[int]:
        room = self.limit - len(self.gen) - 1  # the verifying pass adds one token of its own
        self.k = k if self.k is None else min(self.k, k)
        k = min(self.k, room)
        if k <= 0:
            return []
        if self.ptr is None:
            return self._reanchor(ngram)[:k]
        return self.source[self.ptr:self.ptr + k]

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
        # is rewriting (drafts rejected) proposes 2 tokens; one that is copying doubles back up.
        if drafted and self.k is not None:
            self.k = self.k * 2 if n_accepted == len(drafted) else 2
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


def _eos_set(model, tokenizer_eos: int | None) -> frozenset:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer_eos is not None:
        ids.append(tokenizer_eos)
    if not ids:
        raise ValueError("no EOS token: set tokenizer.eos_token or generation_config.eos_token_id")
    return frozenset(ids)


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


def _forward_params(model) -> set:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _cache_kwarg(params: set) -> str:
    """transformers >= 5.24 names the KV cache argument `cache` (`past_key_values` warns, and goes in
    5.40); older releases only know `past_key_values`."""
    return "cache" if "cache" in params else "past_key_values"


@torch.inference_mode()
def copy_greedy_causal(model, prompts: list[list[int]], sources: list[list[int]], *, pad_token_id: int,
                       eos_token_id: int | None, max_new_tokens: int, num_draft: int = 16,
                       ngram: int = 3, copy_bias: float = 0.0, copy_min_prob: float = 0.0,
                       memory: DraftMemory | None = None) -> list[Decoded]:
    """Greedy continuation of each prompt (token ids), drafting from `sources` (and from `memory`:
    pass one DraftMemory to successive calls so later batches reuse earlier corrections)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    eos = _eos_set(model, eos_token_id)
    first_eos = min(eos) if eos_token_id is None else eos_token_id
    memory = DraftMemory(ngram) if memory is None else memory
    rows = [_Row(list(src) + [first_eos], max_new_tokens, eos, memory=memory) for src in sources]
    if max_new_tokens <= 0 or not prompts:
        return [Decoded([], False) for _ in prompts]

    width = max(len(p) for p in prompts)
    feed = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
    feed_mask = torch.zeros_like(feed)
    for i, p in enumerate(prompts):  # left padding: every prompt ends in the last column
        feed[i, width - len(p):] = torch.tensor(p, dtype=torch.long, device=device)
        feed_mask[i, width - len(p):] = 1
    feed_pos = (feed_mask.cumsum(-1) - 1).clamp(min=0)
    next_pos = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)  # first draft's position
    mask = None  # attention mask over everything already in the cache
    cache = DynamicCache(config=model.config)
    params = _forward_params(model)
    keep_kw, cache_kw = "logits_to_keep" in params, _cache_kwarg(params)
    active = list(range(len(prompts)))

    while active:
        drafted = [rows[i].draft(num_draft, ngram) for i in active]
        drafts, lengths = _pad_drafts(drafted, pad_token_id, device)
        d = drafts.shape[1]
        step_ids = torch.cat([feed, drafts], dim=1)
        step_mask = torch.cat([feed_mask, torch.ones_like(drafts)], dim=1)
        full_mask = step_mask if mask is None else torch.cat([mask, step_mask], dim=1)
        positions = torch.cat([feed_pos, next_pos[:, None] + torch.arange(d, device=device)[None, :]], dim=1)
        kwargs = {cache_kw: cache, **({"logits_to_keep": d + 1} if keep_kw else {})}
        out = model(input_ids=step_ids, attention_mask=full_mask, position_ids=positions, use_cache=True,
                    **kwargs)
        n_acc, pred = _accepted(drafts, lengths, out.logits[:, -(d + 1):], copy_bias, copy_min_prob)
        bonus = pred.gather(1, n_acc[:, None])[:, 0]
        if d:  # rejected draft slots stay in the cache as holes nobody attends to ...
            full_mask[:, -d:] = (torch.arange(d, device=device)[None, :] < n_acc[:, None]).to(full_mask.dtype)
            unused = d - int(n_acc.max())
            if unused:  # ... except the trailing slots no row accepted: those are dropped
                cache.crop(-unused)
                full_mask = full_mask[:, :-unused]
        mask = full_mask
        for i, dr, n, b in zip(active, drafted, n_acc.tolist(), bonus.tolist()):
            rows[i].accept(dr, n, b)
        feed, feed_mask = bonus[:, None], torch.ones_like(bonus[:, None])
        feed_pos = (next_pos + n_acc)[:, None]
        next_pos = next_pos + n_acc + 1
        keep = [r for r, i in enumerate(active) if not rows[i].done]
        if len(keep) < len(active):
            active = [active[r] for r in keep]
            if not active:
                break
            idx = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(idx)
            mask, feed, feed_mask, feed_pos, next_pos = (mask[idx], feed[idx], feed_mask[idx], feed_pos[idx],
                                                         next_pos[idx])
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
        drafted = [rows[i].draft(num_draft, ngram) for i in active]
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
