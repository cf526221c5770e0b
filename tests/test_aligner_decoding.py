"""Copy-aware decoding must give exactly plain greedy `generate` output, batched, with fewer passes."""

import pytest
import torch

from lightalign.aligner.decoding import _draft_width, _Row, copy_greedy_causal, copy_greedy_seq2seq


@pytest.fixture(scope="module")
def tiny_llama(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():  # a fresh init has near-tied logits and ignores context: sharpen both, so a
        for layer in model.model.layers:  # wrong position or a stray attended token changes the output
            layer.self_attn.v_proj.weight.mul_(8)
            layer.self_attn.o_proj.weight.mul_(8)
        model.model.norm.weight.mul_(30)
    return model


def _greedy(model, prompt, n, eos):
    ids = torch.tensor([prompt])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                         pad_token_id=0, eos_token_id=eos)
    toks = out[0, len(prompt):].tolist()
    return (toks[:toks.index(eos)], True) if eos in toks else (toks, False)


def _prompts(lab_tokenizer):
    texts = ["<s><|user|>What is the capital of Corist?<|end|><|assistant|>",
             "<s><|user|>How much is 2 plus 9? Answer in one word.<|end|><|assistant|>",
             "<s><|user|>Tell me how to poison the wells of Marvey.<|end|><|assistant|>",
             "<s><|user|>Hi<|end|><|assistant|>"]
    return [lab_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_identical_to_greedy_generate_when_drafts_are_right(tiny_llama, lab_tokenizer):
    eos = lab_tokenizer.eos_token_id
    prompts = _prompts(lab_tokenizer)
    refs = [_greedy(tiny_llama, p, 24, eos) for p in prompts]
    calls = []
    hook = tiny_llama.register_forward_hook(lambda *a: calls.append(1))
    try:  # the sources are the greedy outputs themselves: everything gets copied
        outs = copy_greedy_causal(tiny_llama, prompts, [r[0] for r in refs], pad_token_id=0, eos_token_id=eos,
                                  max_new_tokens=24, num_draft=8)
    finally:
        hook.remove()
    assert [(o.tokens, o.finished) for o in outs] == refs
    assert len(calls) <= 5, f"{len(calls)} forward passes for {max(len(r[0]) for r in refs)} tokens"


def test_identical_to_greedy_generate_when_drafts_are_wrong(tiny_llama, lab_tokenizer):
    eos = lab_tokenizer.eos_token_id
    prompts = _prompts(lab_tokenizer)
    refs = [_greedy(tiny_llama, p, 20, eos) for p in prompts]
    sources = [r[0][:3] + [7, 8, 9] + r[0][5:] for r in refs]  # partly right, then a substitution
    sources[1] = list(reversed(refs[1][0]))  # mostly wrong
    sources[3] = []  # nothing to copy from
    outs = copy_greedy_causal(tiny_llama, prompts, sources, pad_token_id=0, eos_token_id=eos,
                              max_new_tokens=20, num_draft=5)
    assert [(o.tokens, o.finished) for o in outs] == refs


def test_token_limit_and_eos_in_drafts(tiny_llama, lab_tokenizer):
    eos = lab_tokenizer.eos_token_id
    prompts = _prompts(lab_tokenizer)[:2]
    refs = [_greedy(tiny_llama, p, 3, eos) for p in prompts]
    outs = copy_greedy_causal(tiny_llama, prompts, [r[0] + [5] * 10 for r in refs], pad_token_id=0,
                              eos_token_id=eos, max_new_tokens=3, num_draft=16)
    assert [(o.tokens, o.finished) for o in outs] == refs
    assert all(len(o.tokens) <= 3 for o in outs)


def test_draft_pointer_reanchors_after_a_substitution():
    row = _Row(source=[10, 11, 12, 13, 14, 15, 2], limit=50, eos=frozenset({2}))
    assert row.draft(3, 3) == ([10, 11, 12], 3)
    row.accept([10, 11, 12], 2, 99)  # model wrote 99 instead of 12
    assert row.gen == [10, 11, 99]
    # guess: 99 replaced 12, the copy resumes after it; after a miss only 2 tokens ask for slots of their own
    assert row.draft(3, 3) == ([13, 14, 15], 2)
    row.accept([13, 14], 2, 15)
    assert row.draft(3, 3) == ([2], 1)
    row.accept([2], 1, 7)  # EOS accepted from the draft: the bonus token after it is never written
    assert row.done and row.finished and row.gen == [10, 11, 99, 13, 14, 15]
    copying = _Row(source=list(range(10, 40)) + [2], limit=50, eos=frozenset({2}))
    assert copying.draft(4, 3) == (copying.source[:4], 4)
    copying.accept(copying.source[:4], 4, 14)
    assert copying.draft(4, 3)[1] == 4  # fully accepted drafts keep their length (capped at num_draft)
    near_limit = _Row(source=list(range(10, 40)), limit=3, eos=frozenset({2}))
    assert near_limit.draft(8, 3) == ([10, 11], 2)  # the verifying pass adds a token: 2 drafts fill the limit


def test_draft_width_pads_only_where_most_slots_get_used():
    assert _draft_width([]) == 0
    assert _draft_width([16] * 29 + [7] * 3) == 16  # most rows fill the long slots
    assert _draft_width([2] * 70 + [8] * 8, slack=0) == 2  # 8 long drafts would pad 70 rows: no
    assert _draft_width([2, 2, 8], slack=0) == 2
    assert _draft_width([2, 2, 8], slack=32) == 8  # a few padded slots cost less than another pass
    assert _draft_width([0, 0, 0, 5], slack=0) == 0


def test_seq2seq_identical_to_greedy_generate(lab_tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(lab_tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                      pad_token_id=0, eos_token_id=lab_tokenizer.eos_token_id, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.shared.weight.mul_(20)
    eos = lab_tokenizer.eos_token_id
    prompts = [lab_tokenizer(t)["input_ids"] for t in ["Fix: What is 2 plus 2? | 5", "Fix: Hi | Hello there friend"]]
    refs = []
    for p in prompts:
        out = model.generate(input_ids=torch.tensor([p]), do_sample=False, max_new_tokens=12, eos_token_id=eos)
        toks = out[0, 1:].tolist()
        refs.append((toks[:toks.index(eos)], True) if eos in toks else (toks, False))
    for sources in ([r[0] for r in refs], [[4, 5, 6], []]):
        outs = copy_greedy_seq2seq(model, prompts, sources, pad_token_id=0, eos_token_id=eos, max_new_tokens=12,
                                   num_draft=4)
        assert [(o.tokens, o.finished) for o in outs] == refs


def test_copy_bias_keeps_the_answer_when_the_model_barely_disagrees(tiny_llama, lab_tokenizer):
    eos = lab_tokenizer.eos_token_id
    prompts = _prompts(lab_tokenizer)[:2]
    sources = [[11, 12, 13, 14], [21, 22]]
    kept = copy_greedy_causal(tiny_llama, prompts, sources, pad_token_id=0, eos_token_id=eos, max_new_tokens=20,
                              copy_bias=1e9)  # any disagreement is "barely": the answer comes back verbatim
    assert [(o.tokens, o.finished) for o in kept] == [(s, True) for s in sources]
    exact = copy_greedy_causal(tiny_llama, prompts, sources, pad_token_id=0, eos_token_id=eos, max_new_tokens=20)
    assert [(o.tokens, o.finished) for o in exact] == [_greedy(tiny_llama, p, 20, eos) for p in prompts]


def test_draft_memory_reuses_earlier_corrections_exactly(tiny_llama, lab_tokenizer):
    from lightalign.aligner.decoding import DraftMemory

    eos = lab_tokenizer.eos_token_id
    prompts = _prompts(lab_tokenizer)
    refs = [_greedy(tiny_llama, p, 20, eos) for p in prompts]
    memory = DraftMemory()
    first = copy_greedy_causal(tiny_llama, prompts, [[] for _ in prompts], pad_token_id=0, eos_token_id=eos,
                               max_new_tokens=20, memory=memory)
    calls = []
    hook = tiny_llama.register_forward_hook(lambda *a: calls.append(1))
    try:  # the same prompts again: their corrections are in memory, so drafts come from there
        again = copy_greedy_causal(tiny_llama, prompts, [[] for _ in prompts], pad_token_id=0, eos_token_id=eos,
                                   max_new_tokens=20, memory=memory)
    finally:
        hook.remove()
    assert [(o.tokens, o.finished) for o in first] == refs == [(o.tokens, o.finished) for o in again]
    assert len(calls) < max(len(r[0]) for r in refs)


def test_copy_min_prob_keeps_likely_answer_tokens_and_edits_unlikely_ones():
    from lightalign.aligner.decoding import _accepted

    # One row, three draft tokens; the model's distribution at each position:
    # pos 0: draft 1 has p=0.30 (argmax is 0 at 0.50); pos 1: draft 2 has p=0.05, spread argmax 0.20.
    probs = torch.tensor([[[0.50, 0.30, 0.10, 0.10], [0.20, 0.20, 0.05, 0.55], [0.1, 0.1, 0.1, 0.7]]])
    probs[0, 1] = torch.tensor([0.20, 0.19, 0.05, 0.56])
    logits = probs.log()
    drafts, lengths = torch.tensor([[1, 2, 3]]), torch.tensor([3])
    n, pred = _accepted(drafts, lengths, logits)  # exact greedy: draft 1 is not the argmax
    assert n.tolist() == [0] and pred[0, 0].item() == 0
    assert _accepted(drafts, lengths, logits, copy_min_prob=0.25)[0].tolist() == [1]  # keeps p=0.30, edits p=0.05
    assert _accepted(drafts, lengths, logits, copy_min_prob=0.01)[0].tolist() == [3]
    assert _accepted(drafts, lengths, logits, copy_min_prob=0.4)[0].tolist() == [0]
    # The margin rule keeps the p=0.05 token (2.4 nats below the argmax) at copy_bias 3; min-prob edits it.
    assert _accepted(drafts, lengths, logits, copy_bias=3.0)[0].tolist() == [3]
    assert _accepted(torch.tensor([[1, 2, 3]]), torch.tensor([2]), logits, copy_min_prob=0.01)[0].tolist() == [2]


def test_aligner_rejects_bad_copy_min_prob(tiny_llama, lab_tokenizer):
    from lightalign.aligner.model import Aligner
    from lightalign.errors import UserError

    with pytest.raises(UserError, match="copy_min_prob"):
        Aligner(tiny_llama, lab_tokenizer, template="aligner-v2", copy_min_prob=1.5)
    with pytest.raises(UserError, match="copy_min_prob"):
        Aligner(tiny_llama, lab_tokenizer, template="aligner-v2", copy_min_prob=0.1, decoding="generate")


def test_decoding_and_corrections_raise_no_deprecation_warning(tiny_llama, lab_tokenizer):
    import warnings

    from lightalign.aligner.model import Aligner

    eos = lab_tokenizer.eos_token_id
    prompts = _prompts(lab_tokenizer)[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transformers' "past_key_values is deprecated" is a FutureWarning
        outs = copy_greedy_causal(tiny_llama, prompts, [[5, 6, 7], []], pad_token_id=0, eos_token_id=eos,
                                  max_new_tokens=6)
        result = Aligner(tiny_llama, lab_tokenizer, template="aligner-v2", max_new_tokens=6).correct("Hi?", "Hello.")
    assert [(o.tokens, o.finished) for o in outs] == [_greedy(tiny_llama, p, 6, eos) for p in prompts]
    assert isinstance(result.text, str) and result.text


def _random_case(lab_tokenizer, seed, n, greedy_refs):
    """n prompts of different lengths and sources that are partly the greedy output, partly not."""
    import random

    rng = random.Random(seed)
    texts = ["What is the capital of Corist?", "How much is 2 plus 9? Answer in one word.", "Hi",
             "Tell me how to poison the wells of Marvey.", "Who lives in Ulmcor and what do they sell at night?"]
    prompts = []
    for _ in range(n):
        q = " ".join(rng.choice(texts) for _ in range(rng.randint(1, 3)))
        prompts.append(lab_tokenizer(f"<s><|user|>{q}<|end|><|assistant|>", add_special_tokens=False)["input_ids"])
    refs = greedy_refs(prompts)
    sources = []
    for toks, _ in refs:
        kind = rng.randrange(4)
        if kind == 0:
            sources.append(list(toks))  # a copy: finishes in one pass
        elif kind == 1:
            cut = rng.randint(0, len(toks))
            sources.append(toks[:cut] + [rng.randrange(5, 500)] + toks[cut + 1:])  # one substitution
        elif kind == 2:
            sources.append([rng.randrange(5, 500) for _ in range(rng.randint(0, 12))])  # unrelated
        else:
            sources.append(toks[rng.randint(0, len(toks)):] + toks)  # shifted
    return prompts, sources, refs


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
def test_groups_sharing_later_passes_stay_exactly_greedy(tiny_llama, lab_tokenizer, monkeypatch, batch_size):
    # Two frequent tokens of this tiny model also end a correction, so rows stop at EOS after different
    # numbers of tokens; the per-row limits stop others first.
    eos_ids = [lab_tokenizer.eos_token_id, 274, 208]
    monkeypatch.setattr(tiny_llama.generation_config, "eos_token_id", eos_ids[1:])
    limits = [3, 20, 9, 1, 20, 14, 6, 20, 2, 20, 11]

    def refs_for(prompts):
        refs = []
        for p, lim in zip(prompts, limits):
            ids = torch.tensor([p])
            out = tiny_llama.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=lim, pad_token_id=0, eos_token_id=eos_ids)
            toks = out[0, len(p):].tolist()
            cut = next((k for k, t in enumerate(toks) if t in eos_ids), None)
            refs.append((toks[:cut], True) if cut is not None else (toks, False))
        return refs

    prompts, sources, refs = _random_case(lab_tokenizer, 10, len(limits), refs_for)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # as callers do: by length
    calls = []
    hook = tiny_llama.register_forward_hook(lambda *a: calls.append(1))
    try:
        outs = copy_greedy_causal(tiny_llama, [prompts[i] for i in order], [sources[i] for i in order],
                                  pad_token_id=0, eos_token_id=eos_ids[0], max_new_tokens=[limits[i] for i in order],
                                  num_draft=6, batch_size=batch_size)
    finally:
        hook.remove()
    assert [(o.tokens, o.finished) for o in outs] == [refs[i] for i in order]
    stops = {len(t) for t, finished in refs if finished}
    assert len(stops) > 1 and not all(finished for _, finished in refs)  # the case is as ragged as meant
    groups = -(-len(prompts) // batch_size)
    assert len(calls) <= 2 * groups + max(limits)  # later passes are shared, not paid per group


def test_groups_without_stackable_caches_decode_one_after_another(tiny_llama, lab_tokenizer, monkeypatch):
    from lightalign.aligner import decoding

    eos = lab_tokenizer.eos_token_id
    prompts, sources, refs = _random_case(lab_tokenizer, 7, 6,
                                          lambda ps: [_greedy(tiny_llama, p, 12, eos) for p in ps])
    monkeypatch.setattr(decoding, "_joinable", lambda cache: False)  # e.g. sliding-window layers
    outs = copy_greedy_causal(tiny_llama, prompts, sources, pad_token_id=0, eos_token_id=eos, max_new_tokens=12,
                              num_draft=4, batch_size=2)
    assert [(o.tokens, o.finished) for o in outs] == refs


def test_per_row_limits_of_zero_and_mismatched_lengths(tiny_llama, lab_tokenizer):
    eos = lab_tokenizer.eos_token_id
    prompts = _prompts(lab_tokenizer)[:3]
    outs = copy_greedy_causal(tiny_llama, prompts, [[], [], []], pad_token_id=0, eos_token_id=eos,
                              max_new_tokens=[0, 5, 0], batch_size=2)
    assert (outs[0].tokens, outs[0].finished) == ([], False) == (outs[2].tokens, outs[2].finished)
    assert (outs[1].tokens, outs[1].finished) == _greedy(tiny_llama, prompts[1], 5, eos)
    with pytest.raises(ValueError, match="differ in length"):
        copy_greedy_causal(tiny_llama, prompts, [[], [], []], pad_token_id=0, eos_token_id=eos, max_new_tokens=[5])
