"""What alignment costs.

Adapters change the base's weights in effect, so their cost is the alignment tax: per-token NLL of
held-out capability text, base vs base + adapter (same weights, adapter switched off and on).
The Aligner leaves the base untouched, so its cost is measured on the answers instead: how often it
edits, whether it leaves already-good answers alone (do-no-harm), and how often it falls back.
"""

from __future__ import annotations

import re


def doc_nll(model, tokenizer, texts: list[str], batch_size: int = 8, max_length: int = 512) -> tuple[list, list]:
    """Per-document (summed NLL in nats, number of predicted tokens). Documents are encoded as in
    pre-training: BOS + text (+ EOS when the tokenizer does not add it)."""
    import torch

    device = next(model.parameters()).device
    sums, counts = [], []
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chunk = texts[start:start + batch_size]
                ids = [tokenizer(t, add_special_tokens=True)["input_ids"][: max_length - 1] for t in chunk]
                if tokenizer.eos_token_id is not None:
                    ids = [x if x and x[-1] == tokenizer.eos_token_id else x + [tokenizer.eos_token_id] for x in ids]
                width = max(len(x) for x in ids)
                pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
                input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)
                mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
                logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)
                target = input_ids[:, 1:]
                nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
                sums.extend(float(v) for v in nll.sum(dim=1).cpu())
                counts.extend(int(v) for v in mask[:, 1:].sum(dim=1).cpu())
    finally:
        tokenizer.padding_side = old_side
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
