"""What alignment costs.

Adapters change the base's weights in effect, so their cost is the alignment tax: per-token NLL of
held-out capability text, base vs base + adapter (same weights, adapter switched off and on),
measured by `doc_nll`, the one NLL function of the project.
The Aligner leaves the base untouched, so its cost is measured on the answers instead: how often it
edits, whether it leaves already-good answers alone (do-no-harm), and how often it falls back.
"""

from __future__ import annotations

import re


def encode_document(tokenizer, text: str, max_length: int = 512) -> list[int]:
    """A document as pre-training saw it: BOS + text + EOS, cut to the first `max_length` tokens.

    BOS is the tokenizer's own (added by `add_special_tokens`, or prepended when the tokenizer has a
    BOS token it does not add); a tokenizer without one starts at the text, whose first token is then
    context only. EOS is appended unless the tokenizer already ends with it. A document longer than
    `max_length` keeps its first `max_length` tokens and no EOS (it did not end there)."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    if eos is not None and (not ids or ids[-1] != eos):
        ids = ids + [eos]
    return ids[:max_length]


def doc_nll(model, tokenizer, texts: list[str], batch_size: int = 8, max_length: int = 512) -> tuple[list, list]:
    """Per-document (summed NLL in nats, number of predicted tokens), documents encoded by
    `encode_document`. Every token after the first is predicted from the ones before it; pads are
    excluded from both the sum and the count. The alignment tax is sum(NLL) / sum(tokens)."""
    import torch

    device = next(model.parameters()).device
    sums, counts = [], []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            ids = [encode_document(tokenizer, t, max_length) for t in texts[start:start + batch_size]]
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            target = input_ids[:, 1:]
            nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
            sums.extend(float(v) for v in nll.sum(dim=1).cpu())
            counts.extend(int(v) for v in mask[:, 1:].sum(dim=1).cpu())
    return sums, counts


def nll_summary(sums: list[float], counts: list[int]) -> dict:
    import math

    total = sum(counts)
    nll = sum(sums) / total if total else None
    return {"nll": nll, "ppl": math.exp(nll) if nll is not None else None, "tokens": total, "docs": len(sums)}


def paired_delta_ci(base: tuple[list, list], other: tuple[list, list], n_boot: int = 1000, seed: int = 0) -> dict:
    """Difference in per-token NLL (other - base), with a bootstrap interval over documents (paired:
    the same resampled documents for both)."""
    import numpy as np

    bs, bc = np.asarray(base[0]), np.asarray(base[1], dtype=float)
    os_, oc = np.asarray(other[0]), np.asarray(other[1], dtype=float)
    delta = os_.sum() / oc.sum() - bs.sum() / bc.sum()
    if n_boot <= 0 or len(bs) < 2:
        return {"delta": float(delta), "lo": float(delta), "hi": float(delta)}
    idx = np.random.default_rng(seed).integers(0, len(bs), size=(n_boot, len(bs)))
    d = os_[idx].sum(1) / oc[idx].sum(1) - bs[idx].sum(1) / bc[idx].sum(1)
    lo, hi = np.quantile(d, [0.025, 0.975])
    return {"delta": float(delta), "lo": float(lo), "hi": float(hi)}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", (text or "").strip())


def aligner_edit_metrics(triples: list[dict], corrections: list[dict]) -> dict:
    """On held-out (question, answer, correction) triples and the Aligner's outputs:
    - edit_rate:   share of all answers the Aligner changed
    - do_no_harm:  share of already-good answers (answer == correction) returned unchanged
    - fix_rate:    share of answers that needed fixing whose output equals the reference correction
    - fixed_edit_rate: share of answers that needed fixing that the Aligner changed at all
    - fallback_rate: share where the Aligner fell back to the original answer (e.g. unusable output)"""
    good = [i for i, t in enumerate(triples) if _norm(t["answer"]) == _norm(t["correction"])]
    bad = [i for i, t in enumerate(triples) if _norm(t["answer"]) != _norm(t["correction"])]
    changed = [_norm(c["text"]) != _norm(t["answer"]) for t, c in zip(triples, corrections)]

    def share(idx, pred):
        return sum(pred(i) for i in idx) / len(idx) if idx else None

    return {
        "n": len(triples), "n_good": len(good), "n_bad": len(bad),
        "edit_rate": share(range(len(triples)), lambda i: changed[i]),
        "do_no_harm": share(good, lambda i: not changed[i]),
        "fix_rate": share(bad, lambda i: _norm(corrections[i]["text"]) == _norm(triples[i]["correction"])),
        "fixed_edit_rate": share(bad, lambda i: changed[i]),
        "fallback_rate": share(range(len(triples)), lambda i: bool(corrections[i].get("fallback"))),
    }
