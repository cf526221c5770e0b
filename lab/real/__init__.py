"""The real track: SmolLM2-135M-Instruct aligned on real prompts, end to end on a CPU (`lightalign lab --real`).

sources (packaged model and prompt sets) -> data (splits, refusals, JSONL) -> track (cached stages:
model, data, answers, adapters, aligner, weak2strong, report). Like the mini-lab, it only calls what a
user can call: the recipes under recipes/smollm2/, `lightalign.training`, the Aligner and `lightalign eval`.
"""
