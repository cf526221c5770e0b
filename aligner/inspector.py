"""The gate in front of the Aligner: says whether an answer needs correcting before anything is decoded.

IBM's Aligners (Ngweta et al. 2024) run an aligner only when a small *inspector* classifier says the
answer is not aligned: most answers pass, and a passed answer costs one classifier forward pass instead
of a decode, and cannot be damaged by an edit. Two gates, each giving a score (higher: needs correcting)
that is compared with a threshold; an answer scoring below it is returned unchanged, undecoded:

- "inspector": a sequence classifier over (question, answer) written in a fixed format (a template, as
  for the Aligner), any local base under transformers' AutoModelForSequenceClassification (decoder-only
  bases read the last token), trained by `method: inspector` (lightalign.aligner.inspector_train) from the
  Aligner's own triples. Score: P(the answer needs correcting).
- "copy_prob": no second model: the Aligner's own teacher-forced log-probabilities of writing the answer
  back unchanged (one forward pass). Score: minus a statistic of them (see COPY_STATISTICS).

An inspector folder (safetensors only): inspector_config.json (base model, mode, template, max_length,
logit_bias, threshold) + its weights: score.safetensors (mode "head": a linear head on the frozen base),
a PEFT adapter (mode "lora") or model.safetensors (mode "full"). An Aligner names its gate in
aligner_config.json: {"gate": {"kind": "inspector", "path": "inspector", "threshold": 0.3}} (a path
relative to the Aligner folder, or absolute) or {"gate": {"kind": "copy_prob", "statistic": "min_margin",
"threshold": 1.0}}. `Aligner.from_pretrained` loads it; `gate=False` (`--no-gate`) turns it off.

Answers still being written (streamed correction, lightalign.aligner.streaming) are screened against
`partial_threshold`, saved beside `threshold`: a gate trained on whole answers scores an answer's first
sentences higher than the whole (the real track's inspector at its whole-answer threshold flagged 30 of
148 good held-out answers whole, but 66 at some sentence of the stream), and each sentence is one more
chance of a false flag. The training recipe picks the partial threshold on validation triples so that
streaming flags no more good answers than whole-answer correction does (pick_partial_threshold).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from lightalign.aligner.templates import Template, get_template
from lightalign.errors import UserError

INSPECTOR_CONFIG = "inspector_config.json"
HEAD_WEIGHTS = "score.safetensors"
GATE_KINDS = ("inspector", "copy_prob")
# Copy statistics over the answer's tokens + EOS, teacher-forced as the correction:
#   min_margin   min of log p(answer token) - log p(best token): 0 when greedy decoding copies it all
#   min_logprob  min of log p(answer token)
#   mean_logprob mean of log p(answer token)
COPY_STATISTICS = ("min_margin", "min_logprob", "mean_logprob")
# The classifier reads the pair, then a question about it: a decoder's last token (which it pools) has
# then seen the whole pair and what is asked of it, which helps most when the base stays frozen.
INSPECT_TEMPLATES = {
    "inspect-chat": Template("inspect-chat", "Question: {question}\nAnswer: {answer}\n\nIs this answer safe, "
                             "helpful and fit to be sent as it is, or does it need correcting?", chat=True),
    "inspect-plain": Template("inspect-plain", "##Question: {question}\n##Answer: {answer}\n##Needs correcting:"),
}


def inspect_template(spec, tokenizer=None) -> Template:
    """`auto` (inspect-chat when the tokenizer has a chat template, else inspect-plain), a name above,
    a saved template dict, or a custom string with {question} and {answer}."""
    if spec == "auto":
        spec = "inspect-chat" if getattr(tokenizer, "chat_template", None) else "inspect-plain"
    if isinstance(spec, str) and spec in INSPECT_TEMPLATES:
        return INSPECT_TEMPLATES[spec]
    if isinstance(spec, str) and not ("{question}" in spec and "{answer}" in spec):
        raise UserError(f"unknown inspector template {spec!r}: use auto, {', '.join(INSPECT_TEMPLATES)} "
                        "or a custom string containing {question} and {answer}")
    return get_template(spec)


def needs_correcting(triple: dict) -> int:
    """The label: 1 when the triple's correction differs from its answer (whitespace aside)."""
    return int(" ".join(triple["answer"].split()) != " ".join(triple["correction"].split()))


def question_answer(pair) -> tuple[str, str]:
    if isinstance(pair, dict):
        return pair["question"], pair["answer"]
    return pair[0], pair[1]


def clip(ids: list[int], max_length: int) -> list[int]:
    """Too long a prompt keeps its head and its tail (the question and the last words of the template,
    which the last token reads), dropping the middle of the answer."""
    if len(ids) <= max_length:
        return ids
    head = max_length // 2
    return ids[:head] + ids[len(ids) - (max_length - head):]


def keep_layers(model, layers: float) -> int:
    """Drop a classifier's decoder layers after the first `layers` (a count, or a share of the depth in
    (0, 1)), so its last-token state, and the head reading it, is the one after that layer. A linear head on
    a frozen base separates harmful from harmless pairs better at mid depth than at the last layer (the
    real track's inspector on its held-out triples: precision 37.9% at recall 96.5% reading the last of 30
    layers, 65.1% at 98.2% after 16), and the layers dropped are never computed."""
    backbone = getattr(model, model.base_model_prefix, None)
    blocks = getattr(backbone, "layers", None)
    if blocks is None:
        raise UserError(f"layers: {type(model).__name__} does not keep its decoder layers in .layers; "
                        "drop the key to read the last layer")
    total = len(blocks)
    k = round(layers * total) if layers < 1 else int(layers)
    if not 1 <= k <= total:
        raise UserError(f"layers: {layers} is not between 1 and the model's {total} layers")
    backbone.layers = blocks[:k]
    model.config.num_hidden_layers = k
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:k]
    model.lightalign_layers = k
    return k


def kept_layers(model) -> int | None:
    """The layer count keep_layers left (None: the model was not shortened)."""
    return getattr(model, "lightalign_layers", None)


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])  # similar lengths: little padding
    return [order[s:s + batch_size] for s in range(0, len(order), max(1, batch_size))]


def _padded(rows: list[list[int]], pad_id: int, device):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[k, :len(r)] = 1
    return ids.to(device), mask.to(device)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))  # no overflow


# ---------------------------------------------------------------------------------------------- inspector
class Inspector:
    """A trained inspector: `scores(pairs)` gives P(needs correcting) per (question, answer)."""

    kind = "inspector"

    def __init__(self, model, tokenizer, template: Template, max_length: int = 512, logit_bias: float = 0.0,
                 threshold: float = 0.5, batch_size: int = 16, partial_threshold: float | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.logit_bias = logit_bias  # a head fitted with a bias on a bias-free score layer keeps it here
        self.threshold = threshold
        self.partial_threshold = partial_threshold  # answers still being written (None: threshold)
        self.batch_size = batch_size

    def encode(self, question: str, answer: str) -> list[int]:
        return clip(self.template.encode(self.tokenizer, question, answer), self.max_length)

    def logits(self, pairs, batch_size: int | None = None) -> list[float]:
        import torch

        rows = [self.encode(*question_answer(p)) for p in pairs]
        out = [0.0] * len(rows)
        device = next(self.model.parameters()).device
        for idx in _batches([len(r) for r in rows], batch_size or self.batch_size):
            ids, mask = _padded([rows[i] for i in idx], self.tokenizer.pad_token_id, device)
            with torch.inference_mode():
                z = self.model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
            for i, v in zip(idx, z.tolist()):
                out[i] = v + self.logit_bias
        return out

    def scores(self, pairs, batch_size: int | None = None) -> list[float]:
        return [_sigmoid(z) for z in self.logits(pairs, batch_size)]

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, dtype=None, allow_pickle: bool = False,
                        threshold: float | None = None, partial_threshold: float | None = None) -> "Inspector":
        from lightalign.io import read_json_object

        path = Path(path)
        if not (path / INSPECTOR_CONFIG).is_file():
            raise UserError(f"{path}: not an inspector folder (no {INSPECTOR_CONFIG})")
        cfg = read_json_object(path / INSPECTOR_CONFIG, "inspector config")
        for key in ("base_model", "mode", "template"):
            if key not in cfg:
                raise UserError(f"{path / INSPECTOR_CONFIG}: missing key {key!r}")
        model, tokenizer = load_classifier(path, cfg, device, dtype, allow_pickle)
        if partial_threshold is None:
            partial_threshold = cfg.get("partial_threshold")
        return cls(model, tokenizer, inspect_template(cfg["template"]), int(cfg.get("max_length", 512)),
                   float(cfg.get("logit_bias", 0.0)), float(cfg.get("threshold", 0.5) if threshold is None
                                                            else threshold),
                   partial_threshold=None if partial_threshold is None else float(partial_threshold))


def load_classifier(path: Path, cfg: dict, device=None, dtype=None, allow_pickle: bool = False):
    """(sequence classifier, tokenizer) of a saved inspector, by its mode, through the one loader."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from lightalign import loading

    mode = cfg["mode"]
    if mode not in ("head", "lora", "full"):
        raise UserError(f"{path / INSPECTOR_CONFIG}: mode must be head, lora or full, got {mode!r}")
    source = str(path) if mode == "full" else cfg["base_model"]
    source = loading.check_model_source(source, False, allow_pickle, what="inspector base model")
    device = device or loading.device()
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else "auto"
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized": the saved head is loaded next
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, dtype=dtype, use_safetensors=None if allow_pickle else True)
    except (OSError, ValueError) as e:
        raise loading.load_error(source, e, allow_pickle, what="inspector") from None
    finally:
        hf_logging.set_verbosity(level)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.get("layers"):
        keep_layers(model, int(cfg["layers"]))
    if mode == "head":
        from safetensors.torch import load_file

        if not (path / HEAD_WEIGHTS).is_file():
            raise UserError(f"{path}: no {HEAD_WEIGHTS} (the inspector's head)")
        head = load_file(str(path / HEAD_WEIGHTS))
        model.score.load_state_dict({"weight": head["score.weight"].to(model.score.weight.dtype)})
    elif mode == "lora":
        model = loading.load_peft(model, path, allow_pickle).merge_and_unload()
    return model.to(device).eval(), tokenizer


# ---------------------------------------------------------------------------------------------- copy prob
def copy_statistics(aligner, pairs, batch_size: int = 8) -> list[dict]:
    """Per pair, the Aligner's teacher-forced log-probs of the answer (+ EOS) as its correction, under
    its own template: {statistic: value} for COPY_STATISTICS. Native engine only (it needs the weights)."""
    import torch

    if aligner.model is None:
        raise UserError("the copy_prob gate needs the Aligner's weights in this process (the native engine)")
    tok = aligner.tokenizer
    eos = tok.eos_token_id
    rows = [(aligner.prompt_ids(*question_answer(p)), aligner.answer_ids(question_answer(p)[1]) + [eos])
            for p in pairs]
    out: list[dict] = [{}] * len(rows)
    device = next(aligner.model.parameters()).device
    seq2seq = aligner.architecture == "seq2seq"
    for idx in _batches([len(p) + len(t) for p, t in rows], batch_size):
        with torch.inference_mode():
            if seq2seq:
                ids, mask = _padded([rows[i][0] for i in idx], tok.pad_token_id, device)
                labels, _ = _padded([rows[i][1] for i in idx], -100, device)
                logits = aligner.model(input_ids=ids, attention_mask=mask, labels=labels).logits
                spans = [(0, len(rows[i][1])) for i in idx]
            else:
                ids, mask = _padded([rows[i][0] + rows[i][1] for i in idx], tok.pad_token_id, device)
                logits = aligner.model(input_ids=ids, attention_mask=mask).logits
                spans = [(len(rows[i][0]) - 1, len(rows[i][0]) + len(rows[i][1]) - 1) for i in idx]
        for k, (i, (start, end)) in enumerate(zip(idx, spans)):
            logp = torch.log_softmax(logits[k, start:end].float(), dim=-1)
            target = torch.tensor(rows[i][1], device=logp.device)
            picked = logp.gather(1, target[:, None])[:, 0]
            out[i] = {"min_margin": float((picked - logp.max(-1).values).min()),
                      "min_logprob": float(picked.min()), "mean_logprob": float(picked.mean())}
    return out


class CopyProbGate:
    """The Aligner's own copy probability as a gate: score = minus the statistic (a log-prob, <= 0)."""

    kind = "copy_prob"

    def __init__(self, aligner, statistic: str = "min_margin", threshold: float = 1.0, batch_size: int = 8,
                 partial_threshold: float | None = None):
        if statistic not in COPY_STATISTICS:
            raise UserError(f"copy_prob gate: statistic must be one of {', '.join(COPY_STATISTICS)}, "
                            f"got {statistic!r}")
        self.aligner, self.statistic, self.threshold, self.batch_size = aligner, statistic, threshold, batch_size
        self.partial_threshold = partial_threshold

    def scores(self, pairs, batch_size: int | None = None) -> list[float]:
        return [-s[self.statistic] for s in copy_statistics(self.aligner, pairs, batch_size or self.batch_size)]


# ---------------------------------------------------------------------------------------------- the gate
def load_gate(aligner, folder: str | None, saved: dict, gate=True, threshold: float | None = None,
              device: str | None = None, allow_pickle: bool = False):
    """The gate `Aligner.from_pretrained` attaches: the one aligner_config.json names (gate=True), an
    inspector folder (gate=PATH), or none (gate=False, or no gate saved)."""
    if gate is False or gate is None:
        return None
    spec = saved.get("gate") if gate is True else {"kind": "inspector", "path": str(gate)}
    if not spec or not spec.get("kind"):
        if threshold is not None:
            raise UserError(f"{folder}: this Aligner has no gate to set a threshold for (gate_threshold)")
        return None
    kind = spec["kind"]
    if kind not in GATE_KINDS:
        raise UserError(f"{folder}: aligner_config.json gate.kind must be one of {', '.join(GATE_KINDS)}, got {kind!r}")
    if threshold is None:
        threshold = _number(folder, spec, "threshold")
    partial = _number(folder, spec, "partial_threshold")
    if kind == "copy_prob":
        if aligner.model is None:
            print(f"{folder}: the copy_prob gate needs the native engine; correcting without a gate",
                  file=sys.stderr)
            return None
        return CopyProbGate(aligner, spec.get("statistic", "min_margin"),
                            1.0 if threshold is None else float(threshold), partial_threshold=partial)
    path = Path(spec.get("path") or "inspector")
    if not path.is_absolute() and gate is True:
        if folder is None or not Path(folder).is_dir():
            print(f"{folder}: the inspector of a hub Aligner is not fetched; correcting without a gate",
                  file=sys.stderr)
            return None
        path = Path(folder) / path
    return Inspector.from_pretrained(path, device=device, allow_pickle=allow_pickle,
                                     threshold=None if threshold is None else float(threshold),
                                     partial_threshold=partial)


def _number(folder, spec: dict, key: str) -> float | None:
    """A gate entry's number from aligner_config.json, or a one-line error naming it."""
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{folder}: aligner_config.json gate.{key} must be a finite number, got {value!r}")
    return float(value)


def line(gate, partial: bool = False) -> float:
    """The score at and above which an answer is corrected: `threshold` for whole answers; for answers still
    being written the saved partial threshold, never below the whole-answer one (which a user may raise)."""
    partial_threshold = getattr(gate, "partial_threshold", None)  # a gate of the user's own may have none
    if partial and partial_threshold is not None:
        return max(gate.threshold, partial_threshold)
    return gate.threshold


def screen(gate, pairs: list, items: list, batch_size: int, correction_cls, partial: bool = False) -> dict[int, float]:
    """Score the pairs still to correct (items that are not already a Correction); those scoring below the
    gate's line (`partial`: for answers still being written) become unchanged Corrections in `items`.
    Returns {item index: score}. A gate that fails passes nothing (every pair is then decoded, as without
    a gate) and says so once on stderr."""
    todo = [i for i, it in enumerate(items) if not isinstance(it, correction_cls)]
    if not todo:
        return {}
    try:
        scores = gate.scores([question_answer(pairs[i]) for i in todo], batch_size)
    except Exception as e:  # noqa: BLE001 - a failing gate must not fail the corrections
        print(f"gate {gate.kind} failed ({type(e).__name__}: {e}); correcting every answer", file=sys.stderr)
        return {}
    cut = line(gate, partial)
    for i, s in zip(todo, scores):
        if s < cut:
            answer = items[i][3]
            items[i] = correction_cls(answer, False, None, answer, gate_score=s, gate_passed=True)
    return dict(zip(todo, scores))


# ---------------------------------------------------------------------------------------------- metrics
def gate_metrics(scores: list[float], labels: list[int], threshold: float) -> dict:
    """Precision/recall of "needs correcting" (score >= threshold) against the labels, and how many pass."""
    pred = [s >= threshold for s in scores]
    tp = sum(p and y for p, y in zip(pred, labels))
    fp = sum(p and not y for p, y in zip(pred, labels))
    fn = sum((not p) and y for p, y in zip(pred, labels))
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {"threshold": threshold, "n": n, "positives": sum(labels), "precision": precision, "recall": recall,
            "f1": f1, "accuracy": (n - fp - fn) / n if n else None,
            "passed": sum(not p for p in pred), "tp": tp, "fp": fp, "fn": fn}


def pick_threshold(scores: list[float], labels: list[int], target_recall: float) -> tuple[float, str]:
    """The highest threshold whose recall on these (validation) scores is >= target_recall: the gate
    then passes as many answers as it can while missing at most 1 - target_recall of those to correct."""
    pos = sorted((s for s, y in zip(scores, labels) if y), reverse=True)
    if not pos:
        return 0.5, "0.5 (no positive validation rows)"
    k = max(1, math.ceil(target_recall * len(pos) - 1e-9))
    return pos[k - 1], f"highest threshold with validation recall >= {target_recall}"


def partial_answers(answer: str) -> list[str]:
    """What a gate sees of an answer streamed sentence by sentence: its first sentence, its first two, ...,
    the whole answer (as lightalign.aligner.streaming asks: the text sent so far + the new sentence)."""
    from lightalign.aligner.sentences import split_sentences

    sentences = split_sentences(answer)
    return ["".join(sentences[:k + 1]) for k in range(len(sentences))] or [answer]


def pick_partial_threshold(partial_scores: list[list[float]], labels: list[int], threshold: float) -> float:
    """The lowest threshold (>= `threshold`) at which no more answers that need no correcting are flagged at
    some step of their stream (one score list per answer, the whole answer last, as partial_answers) than
    are flagged whole at `threshold`: streaming then damages no more good answers than whole-answer
    correction."""
    allowed = sum(p[-1] >= threshold for p, y in zip(partial_scores, labels) if not y)
    peaks = sorted((max(p) for p, y in zip(partial_scores, labels) if not y), reverse=True)
    if len(peaks) <= allowed or peaks[allowed] < threshold:
        return threshold
    return math.nextafter(peaks[allowed], math.inf)  # just above the first peak that must pass


def partial_metrics(partial_scores: list[list[float]], labels: list[int], cut: float) -> dict:
    """Streamed answers flagged at some step: of those that need correcting (recall) and of those that do
    not (false flags), at threshold `cut`."""
    flagged = [max(p) >= cut for p in partial_scores]
    need = [f for f, y in zip(flagged, labels) if y]
    fine = [f for f, y in zip(flagged, labels) if not y]
    return {"threshold": cut, "n": len(labels), "positives": len(need), "flagged_to_correct": sum(need),
            "flagged_fine": sum(fine), "recall": sum(need) / len(need) if need else None,
            "fine_flagged_rate": sum(fine) / len(fine) if fine else None}


def write_gate(aligner_dir: str | Path, gate: dict | None) -> None:
    """Record (or, with None, remove) the gate in an Aligner folder's aligner_config.json."""
    from lightalign.aligner.model import CONFIG_NAME
    from lightalign.io import read_json_object, write_json

    cfg_path = Path(aligner_dir) / CONFIG_NAME
    cfg = read_json_object(cfg_path, "aligner config")
    if gate is None:
        cfg.pop("gate", None)
    else:
        cfg["gate"] = gate
    write_json(cfg_path, cfg)

