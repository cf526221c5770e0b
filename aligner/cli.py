"""`lightalign correct`: post-edit answers with an Aligner, JSONL in -> JSONL out.

    lightalign correct --aligner runs/minilab/aligner --in answers.jsonl --out corrected.jsonl
    cat answers.jsonl | lightalign correct --aligner PATH --in - --out -
    lightalign correct --aligner PATH --in questions.jsonl --upstream-url http://127.0.0.1:8000/v1 \
        --upstream-name my-model --out corrected.jsonl            # ask an upstream model first
    lightalign correct --in corrected.jsonl --dpo-out dpo.jsonl --sft-out sft.jsonl   # weak-to-strong data

Each input line is {"question", "answer"} (plus an optional "id" and any other fields, kept). Each
output line adds "correction", "changed" and "fallback" (why the answer was kept, or null). A bad
record becomes a flagged output line ("error"), never a crash. Re-running with the same --out
skips records already written (by id, or by line number without ids), so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = "Correct answers with an Aligner (JSONL in/out, '-' for stdin/stdout, resumable)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aligner", help="Aligner folder or hub id (omit to only convert --in to --sft-out/--dpo-out)")
    p.add_argument("--template", help="prompt template name or custom string (default: the Aligner's own)")
    p.add_argument("--in", dest="in_path", default="-", help="input JSONL ('-' = stdin)")
    p.add_argument("--out", default="-", help="output JSONL ('-' = stdout); an existing file is resumed")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, help="limit per correction (default: the Aligner's)")
    p.add_argument("--question-field", default="question")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--id-field", default="id")
    up = p.add_argument_group("upstream (for records without an answer)")
    up.add_argument("--upstream-model", help="local transformers model folder or hub id")
    up.add_argument("--upstream-adapter", help="LoRA adapter folder for --upstream-model")
    up.add_argument("--upstream-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    up.add_argument("--upstream-name", default="default", help="model name sent to --upstream-url")
    up.add_argument("--upstream-file", help="JSONL of pre-generated {question, answer} rows")
    up.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    up.add_argument("--retries", type=int, default=2)
    up.add_argument("--system", help="system prompt for the upstream model")
    w2s = p.add_argument_group("weak-to-strong datasets (from all records in --out, or --in without --aligner)")
    w2s.add_argument("--sft-out", help="write {prompt, completion} rows (completion = correction)")
    w2s.add_argument("--dpo-out", help="write {prompt, chosen, rejected} rows (chosen = correction, rejected = answer)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true", help="run model code from the checkpoint (off by default)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle .bin weights (off: safetensors only)")
    p.add_argument("--no-progress", action="store_true")


def _parse_lines(stream, name: str):
    """(lineno, record or error message) for each non-blank line; a bad line is reported, not fatal."""
    for lineno, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield lineno, f"{name}:{lineno}: invalid JSON: {e.msg} (column {e.colno})"
            continue
        if not isinstance(row, dict):
            yield lineno, f"{name}:{lineno}: expected a JSON object, got {type(row).__name__}"
            continue
        yield lineno, row


def _key(rec_or_err, lineno: int, id_field: str) -> str:
    if isinstance(rec_or_err, dict) and rec_or_err.get(id_field) is not None:
        return json.dumps(rec_or_err[id_field])
    return json.dumps(f"line-{lineno}")


def _done_ids(path: str, id_field: str) -> tuple[set, list[dict]]:
    """Ids already in --out. A half-written last line (killed mid-write) is cut off, to be redone."""
    done, records = set(), []
    if path == "-" or not os.path.exists(path):
        return done, records
    with open(path, "rb+") as f:
        data = f.read()
        good_end = data.rfind(b"\n") + 1
        if good_end < len(data):
            f.truncate(good_end)
    for line in data[:good_end].decode("utf-8").splitlines():
        if line.strip():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
                done.add(json.dumps(rec.get(id_field)))
    return done, records


def _upstream(args):
    from lightalign.aligner import connectors

    chosen = [x for x in (args.upstream_model, args.upstream_url, args.upstream_file) if x]
    if len(chosen) > 1:
        from lightalign.errors import UserError

        raise UserError("give only one of --upstream-model, --upstream-url, --upstream-file")
    if args.upstream_model:
        return connectors.LocalModelUpstream(args.upstream_model, adapter=args.upstream_adapter, system=args.system,
                                             trust_remote_code=args.trust_remote_code,
                                             allow_pickle=args.allow_pickle, device=args.device)
    if args.upstream_url:
        return connectors.OpenAICompatibleUpstream(args.upstream_url, args.upstream_name,
                                                   api_key=os.environ.get(args.api_key_env), system=args.system,
                                                   timeout=args.timeout, retries=args.retries)
    if args.upstream_file:
        return connectors.FileUpstream(args.upstream_file, args.question_field, args.answer_field)
    return None


def run(args) -> int:
    from tqdm.auto import tqdm

    from lightalign.errors import UserError
    from lightalign.io import append_jsonl

    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if not args.aligner:
        if not (args.sft_out or args.dpo_out):
            raise UserError("give --aligner PATH (or only --sft-out/--dpo-out to convert corrected records)")
        return _convert_only(args)
    if args.in_path != "-" and not os.path.exists(args.in_path):
        raise UserError(f"{args.in_path}: file not found")
    if args.out != "-" and os.path.abspath(args.out) == os.path.abspath(args.in_path):
        raise UserError("--out must differ from --in")

    done, previous = _done_ids(args.out, args.id_field)
    stream = sys.stdin if args.in_path == "-" else open(args.in_path, encoding="utf-8")
    name = "<stdin>" if args.in_path == "-" else args.in_path
    try:
        pending = [(lineno, rec) for lineno, rec in _parse_lines(stream, name)
                   if _key(rec, lineno, args.id_field) not in done]
    finally:
        if stream is not sys.stdin:
            stream.close()
    if done:
        print(f"resuming: {len(done)} records already in {args.out}, {len(pending)} to go", file=sys.stderr)

    written: list[dict] = list(previous)
    out = sys.stdout if args.out == "-" else open(args.out, "a", encoding="utf-8")
    try:
        if pending:
            aligner = _load_aligner(args)
            upstream = _upstream(args)
            bar = tqdm(total=len(pending), desc="correcting", unit="rec", file=sys.stderr,
                       disable=args.no_progress or None)
            for start in range(0, len(pending), args.batch_size * 4):
                chunk = pending[start:start + args.batch_size * 4]
                for rec in _correct_chunk(chunk, aligner, upstream, args):
                    if out is sys.stdout:
                        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                        out.flush()
                    else:
                        append_jsonl(out, rec)  # durable per record: a crash loses at most this one
                    written.append(rec)
                    bar.update(1)
            bar.close()
    finally:
        if out is not sys.stdout:
            out.close()
    flagged = sum(1 for r in written if r.get("fallback"))
    print(f"{len(written)} records ({sum(1 for r in written if r.get('changed'))} changed, {flagged} flagged)"
          + ("" if args.out == "-" else f" in {args.out}"), file=sys.stderr)
    _write_w2s(written, args)
    return 0


def _load_aligner(args):
    from lightalign.aligner.model import Aligner

    kwargs = {}
    if args.max_new_tokens:
        kwargs["max_new_tokens"] = args.max_new_tokens
    return Aligner.from_pretrained(args.aligner, template=args.template, trust_remote_code=args.trust_remote_code,
                                   allow_pickle=args.allow_pickle, device=args.device, **kwargs)


def _correct_chunk(chunk, aligner, upstream, args) -> list[dict]:
    """Output records for one chunk: ask the upstream where needed, correct, flag what failed."""
    qf, af, idf = args.question_field, args.answer_field, args.id_field
    outs: list[dict | None] = [None] * len(chunk)
    need_answer, to_correct = [], []
    for k, (lineno, rec) in enumerate(chunk):
        if not isinstance(rec, dict):  # an unreadable line: report it under its line number
            outs[k] = {idf: f"line-{lineno}", "error": rec, "fallback": "error", "correction": None, "changed": False}
            continue
        if rec.get(idf) is None:  # no id: the line number is the id that resume matches on
            rec = {**rec, idf: f"line-{lineno}"}
        chunk[k] = (lineno, rec)
        q = rec.get(qf, rec.get("prompt") if qf == "question" else None)
        if not isinstance(q, str):
            outs[k] = _error(rec, f"line {lineno}: missing or non-string field {qf!r}")
        elif isinstance(rec.get(af), str):
            to_correct.append((k, q, rec[af]))
        elif upstream is not None:
            need_answer.append((k, q))
        else:
            outs[k] = _error(rec, f"line {lineno}: missing field {af!r} (give an --upstream-* option to generate it)")
    if need_answer:
        answers = upstream.answer_batch([q for _, q in need_answer])
        for (k, q), a in zip(need_answer, answers):
            rec = chunk[k][1]
            if isinstance(a, Exception):
                outs[k] = _error(rec, f"upstream: {a}")
            else:
                rec[af] = a
                rec["upstream"] = getattr(upstream, "name", None)
                to_correct.append((k, q, a))
    results = aligner.correct_batch([(q, a) for _, q, a in to_correct], batch_size=args.batch_size)
    for (k, q, a), c in zip(to_correct, results):
        rec = chunk[k][1]
        outs[k] = {**rec, "question": q, "answer": a, "correction": c.text, "changed": c.changed,
                   "fallback": c.fallback}
    return outs  # type: ignore[return-value]


def _error(rec: dict, message: str) -> dict:
    answer = rec.get("answer") if isinstance(rec.get("answer"), str) else None
    return {**rec, "correction": answer, "changed": False, "fallback": "error", "error": message}


def _write_w2s(records: list[dict], args) -> None:
    if not (args.sft_out or args.dpo_out):
        return
    from lightalign.aligner.weak_to_strong import write_datasets

    counts = write_datasets(records, args.sft_out, args.dpo_out)
    print("weak-to-strong: " + ", ".join(f"{n} {k} rows" for k, n in counts.items()), file=sys.stderr)


def _convert_only(args) -> int:
    from lightalign.io import read_records

    if args.in_path == "-":
        records = [r for _, r in _parse_lines(sys.stdin, "<stdin>") if isinstance(r, dict)]
    else:
        records = [r for _, r in read_records(args.in_path)]
    _write_w2s(records, args)
    return 0
