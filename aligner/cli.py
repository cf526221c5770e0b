"""`lightalign correct`: post-edit answers with an Aligner, JSONL in -> JSONL out.

    lightalign correct --aligner runs/minilab/aligner --in answers.jsonl --out corrected.jsonl
    cat answers.jsonl | lightalign correct --aligner PATH --in - --out -
    lightalign correct --aligner PATH --engine vllm --in answers.jsonl --out corrected.jsonl     # on vLLM
    lightalign correct --aligner PATH --aligner-url http://gpu-host:8000/v1 --in ... --out ...  # `vllm serve PATH`
    lightalign correct --aligner PATH --in questions.jsonl --upstream-url http://127.0.0.1:8000/v1 \
        --upstream-model my-model --out corrected.jsonl            # ask an upstream model first
    lightalign correct --in corrected.jsonl --dpo-out dpo.jsonl --sft-out sft.jsonl   # weak-to-strong data

With a gate saved beside the Aligner (an inspector, see lightalign.aligner.inspector), answers it
passes are written back unchanged without decoding ("gate_passed": true, with its "gate_score");
--no-gate decodes every answer, --gate-threshold T moves the line.

Input: JSON Lines, one {"question", "answer"} object per line (plus an optional "id" and any other
fields, kept), or a JSON array of such objects (on one line or pretty-printed). Each output line adds
"correction", "changed" and "fallback" (why the answer was kept, or null). A bad record (invalid
JSON, a line that is not UTF-8, a missing field, an upstream failure) becomes an output line with
"error", never a crash, and is named in the summary on stderr. Re-running with the same --out skips
records already written (by id, or by line/item number without ids), so an interrupted run resumes;
--retry-errors also redoes the records that ended in an error (e.g. once the input is fixed).

A record whose id an earlier record already has is an error record too (resume matches by id).
An existing --out that is not an output of this command (another JSONL, a binary) is refused, never
cut or appended to; devices such as /dev/null are written, not resumed.

Exit codes: 0 every record was corrected (or kept with a fallback reason such as "truncated");
1 at least one record in --out is an error record; 2 a usage error (bad flag, missing file, a
folder where a file is expected, an Aligner that cannot load): nothing is written then; also 2
when --out cannot be written (disk full), with the records written so far kept for a resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lightalign.aligner.engines import add_engine_arguments, engine_from_args
from lightalign.bounds import MAX_BATCH
from lightalign.errors import UserError, deprecated
from lightalign.io import BOMS, append_jsonl, decode_utf8, make_dir, parse_records, read_bytes, write_jsonl

HELP = "Correct answers with an Aligner (JSONL in/out, '-' for stdin/stdout, resumable)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aligner", help="Aligner folder or hub id (omit to only convert --in to --sft-out/--dpo-out)")
    p.add_argument("--template", help="prompt template name or custom string (default: the Aligner's own)")
    p.add_argument("--in", dest="in_path", default="-", help="input JSONL ('-' = stdin)")
    p.add_argument("--out", default="-", help="output JSONL ('-' = stdout); an existing file is resumed")
    p.add_argument("--batch-size", type=int, default=None,
                   help="corrections per Aligner call (default 16; 256 with --engine vllm or --aligner-url)")
    p.add_argument("--max-new-tokens", type=int, help="limit per correction (default: the Aligner's)")
    p.add_argument("--question-field", default="question")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--id-field", default="id")
    up = p.add_argument_group("upstream (for records without an answer; one of --upstream-model-path, "
                              "--upstream-url, --upstream-file)")
    up.add_argument("--upstream-model-path", help="local transformers model folder or hub id")
    up.add_argument("--upstream-adapter", help="LoRA adapter folder for --upstream-model-path")
    up.add_argument("--upstream-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 "
                                           "(/v1 is added when the URL has no path; no user:password@)")
    up.add_argument("--upstream-model", help="model name sent to --upstream-url (default: 'default')")
    up.add_argument("--upstream-file", help="JSONL of pre-generated {question, answer} rows")
    up.add_argument("--upstream-key-env", metavar="VAR",
                    help="environment variable holding the upstream's API key, sent as Bearer (none if omitted)")
    up.add_argument("--upstream-name", help=argparse.SUPPRESS)  # deprecated: --upstream-model
    up.add_argument("--api-key-env", help=argparse.SUPPRESS)  # deprecated: --upstream-key-env
    up.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    up.add_argument("--retries", type=int, default=2)
    up.add_argument("--system", help="system prompt for the upstream model")
    w2s = p.add_argument_group("weak-to-strong datasets (from all records in --out, or --in without --aligner)")
    w2s.add_argument("--sft-out", help="write {prompt, completion} rows (completion = correction)")
    w2s.add_argument("--dpo-out", help="write {prompt, chosen, rejected} rows (chosen = correction, rejected = answer)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true", help="run model code from the checkpoint (off by default)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle .bin weights (off: safetensors only)")
    p.add_argument("--retry-errors", action="store_true",
                   help="redo the records of --out that ended in an error (others are kept, as on any resume)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-gate", action="store_true",
                   help="decode every answer, even those the Aligner's gate (its inspector) would pass unchanged")
    p.add_argument("--gate-threshold", type=float, metavar="T",
                   help="the gate's threshold instead of the saved one (answers scoring below it pass unchanged)")
    add_engine_arguments(p)


def _deprecated(old: str, new: str) -> None:
    deprecated(f"lightalign correct: {old} is deprecated, use {new}")


def normalize_flags(args) -> None:
    """Map the previous release's spellings onto the current flags, with a one-line notice each."""
    if args.upstream_name:
        _deprecated("--upstream-name", "--upstream-model")
        if args.upstream_model and args.upstream_model != args.upstream_name:
            raise UserError("give --upstream-model only (--upstream-name is its old spelling)")
        args.upstream_model = args.upstream_name
    if args.api_key_env:
        _deprecated("--api-key-env", "--upstream-key-env")
        args.upstream_key_env = args.upstream_key_env or args.api_key_env
    if args.upstream_model and not args.upstream_url:
        if args.upstream_model_path or not os.path.exists(args.upstream_model):
            raise UserError("--upstream-model is the model name sent to --upstream-url; "
                            "for a local model folder use --upstream-model-path")
        _deprecated("--upstream-model PATH", "--upstream-model-path PATH")
        args.upstream_model_path, args.upstream_model = args.upstream_model, None


def _parse_lines(data: bytes, name: str):
    """(lineno, record or error message) for each non-blank line; a bad line is reported, not fatal."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for lineno, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield lineno, f"{name}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield lineno, f"{name}:{lineno}: invalid JSON: {e.msg} (column {e.colno})"
            continue
        except RecursionError:
            yield lineno, f"{name}:{lineno}: JSON nested too deeply"
            continue
        if not isinstance(row, dict):
            yield lineno, f"{name}:{lineno}: expected a JSON object, got {type(row).__name__}"
            continue
        yield lineno, row


def read_input(path: str) -> tuple[str, list[tuple[int, dict | str]]]:
    """(name, [(line or item number, record or error message)]): JSON Lines, or a JSON array."""
    if path == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise UserError("--in -: stdin is closed; pipe records in or give --in FILE")
        name, data = "<stdin>", sys.stdin.buffer.read()
    else:
        name, data = path, read_bytes(path, "input file")
    if any(data.startswith(bom) for bom, _ in BOMS):  # UTF-16/32 (PowerShell's `>`): read as the text it is
        data = decode_utf8(data, name).encode("utf-8")
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return name, list(parse_records(decode_utf8(data, name), name, json_list=True))
    return name, list(_parse_lines(data, name))


def _id_key(value) -> str:
    """An id as resume compares it: JSON text, object keys sorted (ids may be numbers, lists, objects)."""
    return json.dumps(value, sort_keys=True)


def _key(rec_or_err, lineno: int, id_field: str) -> str:
    if isinstance(rec_or_err, dict) and rec_or_err.get(id_field) is not None:
        return _id_key(rec_or_err[id_field])
    return _id_key(f"line-{lineno}")


def _flag_duplicates(parsed: list, name: str, id_field: str) -> list:
    """Records whose id an earlier record already has become error messages: resume matches by id,
    so a duplicate would otherwise be skipped, or overwrite the other's result, unnoticed."""
    first: dict[str, int] = {}
    out = []
    for lineno, rec in parsed:
        key = _key(rec, lineno, id_field)
        if isinstance(rec, dict) and key in first:
            rec = f"{name}:{lineno}: duplicate {id_field} {key[:60]} (first on line {first[key]}); give each record its own"
        first.setdefault(key, lineno)
        out.append((lineno, rec))
    return out


def _done_ids(path: str, id_field: str, retry_errors: bool = False) -> tuple[set, list[dict]]:
    """Ids already in --out. A half-written last line (killed mid-write) is cut off, to be redone;
    with `retry_errors`, error records are removed from the file (rewritten atomically) to be redone."""
    done, records = set(), []
    if path == "-" or not os.path.isfile(path):  # /dev/null, /dev/stdout ...: nothing to resume
        return done, records
    with open(path, "rb+") as f:
        data = f.read()
        good_end = data.rfind(b"\n") + 1
        for lineno, line in enumerate(data[:good_end].decode("utf-8", errors="replace").splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    rec = None
                if not (isinstance(rec, dict) and "fallback" in rec):  # never cut or append to another file
                    raise UserError(f"{path}:{lineno}: --out exists and is not an output of lightalign correct; "
                                    "pick another file (an existing --out is resumed)")
                records.append(rec)
        if good_end < len(data):
            f.truncate(good_end)
    if retry_errors:
        kept = [r for r in records if r.get("fallback") != "error"]
        if len(kept) < len(records):
            print(f"retrying {len(records) - len(kept)} error records of {path}", file=sys.stderr)
            write_jsonl(path, kept)
            records = kept
    done = {_id_key(r.get(id_field)) for r in records}
    return done, records


def _upstream(args):
    from lightalign.aligner import connectors

    from lightalign.openai_client import key_from_env

    chosen = [x for x in (args.upstream_model_path, args.upstream_url, args.upstream_file) if x]
    if len(chosen) > 1:
        raise UserError("give only one of --upstream-model-path, --upstream-url, --upstream-file")
    if args.upstream_model_path:
        return connectors.LocalModelUpstream(args.upstream_model_path, adapter=args.upstream_adapter,
                                             system=args.system,
                                             trust_remote_code=args.trust_remote_code,
                                             allow_pickle=args.allow_pickle, device=args.device)
    if args.upstream_url:
        key = key_from_env(args.upstream_key_env, "--upstream-key-env")
        return connectors.OpenAICompatibleUpstream(args.upstream_url, args.upstream_model or "default", api_key=key,
                                                   system=args.system, timeout=args.timeout, retries=args.retries)
    if args.upstream_file:
        return connectors.FileUpstream(args.upstream_file, args.question_field, args.answer_field)
    return None


def _check_paths(args) -> None:
    if args.in_path != "-":
        if os.path.isdir(args.in_path):
            raise UserError(f"{args.in_path}: is a directory, expected an input file (--in)")
        if not os.path.exists(args.in_path):
            raise UserError(f"{args.in_path}: file not found")
    for flag, path in (("--out", args.out), ("--sft-out", args.sft_out), ("--dpo-out", args.dpo_out)):
        if path and path != "-" and os.path.isdir(path):
            raise UserError(f"{path}: is a directory, expected a file to write ({flag})")
        if path and path != "-":
            make_dir(os.path.dirname(path) or ".", f"the folder of {flag}")
    if args.out != "-" and os.path.realpath(args.out) == os.path.realpath(args.in_path):
        raise UserError("--out must differ from --in")


def run(args) -> int:
    from tqdm.auto import tqdm

    normalize_flags(args)
    _check_numbers(args)
    if not args.aligner:
        if not (args.sft_out or args.dpo_out):
            raise UserError("give --aligner PATH (or only --sft-out/--dpo-out to convert corrected records)")
        return _convert_only(args)
    _check_paths(args)

    name, parsed = read_input(args.in_path)
    if not parsed:
        raise UserError(f"{name}: no records (an empty input)")
    parsed = _flag_duplicates(parsed, name, args.id_field)
    done, previous = _done_ids(args.out, args.id_field, args.retry_errors)
    pending = [(lineno, rec) for lineno, rec in parsed if _key(rec, lineno, args.id_field) not in done]
    if done:
        print(f"resuming: {len(done)} records already in {args.out}, {len(pending)} to go", file=sys.stderr)

    written: list[dict] = list(previous)
    out = None  # opened at the first record: a run that fails to load writes no file
    try:
        if pending:
            aligner = _load_aligner(args)
            upstream = _upstream(args)
            bar = tqdm(total=len(pending), desc="correcting", unit="rec", file=sys.stderr,
                       disable=args.no_progress or None)
            for start in range(0, len(pending), args.batch_size * 4):
                chunk = pending[start:start + args.batch_size * 4]
                for rec in _correct_chunk(chunk, aligner, upstream, args):
                    if args.out != "-":
                        out = out or open(args.out, "a", encoding="utf-8")
                    append_jsonl(out or sys.stdout, rec)  # durable per record: a crash loses at most this one
                    written.append(rec)
                    bar.update(1)
            bar.close()
    finally:
        if out is not None:
            try:
                out.close()
            except OSError:  # every record was flushed as written: a failed one was already reported
                pass
    _write_w2s(written, args)
    return _summary(written, args)


def _check_numbers(args) -> None:
    import math

    if args.batch_size is None:  # vLLM batches continuously and a server takes requests in parallel: feed more
        args.batch_size = 16 if args.engine == "native" and not args.aligner_url else 256
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise UserError(f"--batch-size must be between 1 and {MAX_BATCH:,}, got {args.batch_size:,}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UserError(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    if args.retries < 0:
        raise UserError(f"--retries must be >= 0, got {args.retries}")
    if args.gate_threshold is not None and (args.no_gate or not math.isfinite(args.gate_threshold)):
        raise UserError("--gate-threshold needs a finite number, and the gate (not --no-gate)")


def _summary(written: list[dict], args) -> int:
    """The counts and the records that failed, on stderr; 1 if any failed, else 0."""
    errors = [r for r in written if r.get("fallback") == "error"]
    flagged = sum(1 for r in written if r.get("fallback"))
    print(f"{len(written)} records ({sum(1 for r in written if r.get('changed'))} changed, {flagged} flagged, "
          f"{len(errors)} errors)" + ("" if args.out == "-" else f" in {args.out}"), file=sys.stderr)
    for r in errors[:20]:
        print(f"  error: {r.get(args.id_field)}: {r.get('error')}", file=sys.stderr)
    if len(errors) > 20:
        print(f"  ... and {len(errors) - 20} more (records with \"fallback\": \"error\")", file=sys.stderr)
    if errors:
        print("fix the input and re-run with --retry-errors to redo them", file=sys.stderr)
    return 1 if errors else 0


def _load_aligner(args):
    from lightalign.aligner.model import Aligner

    kwargs = {}
    if args.max_new_tokens is not None:
        kwargs["max_new_tokens"] = args.max_new_tokens
    kwargs.update(engine_from_args(args, timeout=args.timeout, retries=args.retries))
    kwargs.update(gate=not args.no_gate, gate_threshold=args.gate_threshold)
    if kwargs["engine"] == "native":
        kwargs.update(allow_pickle=args.allow_pickle, device=args.device)
    elif args.allow_pickle or args.device:
        raise UserError(f"--allow-pickle and --device apply to the native engine, not {kwargs['engine']!r}")
    return Aligner.from_pretrained(args.aligner, template=args.template, trust_remote_code=args.trust_remote_code,
                                   **kwargs)


def _correct_chunk(chunk, aligner, upstream, args) -> list[dict]:
    """Output records for one chunk: ask the upstream where needed, correct, flag what failed."""
    qf, af, idf = args.question_field, args.answer_field, args.id_field
    outs: list[dict | None] = [None] * len(chunk)
    need_answer, to_correct = [], []
    for k, (lineno, rec) in enumerate(chunk):
        if not isinstance(rec, dict):  # an unreadable line: report it under its line number
            outs[k] = {idf: f"line-{lineno}", "error": rec, "fallback": "error", "correction": None,
                       "changed": False}
            continue
        if rec.get(idf) is None:  # no id: the line number is the id that resume matches on
            rec = {**rec, idf: f"line-{lineno}"}
        chunk[k] = (lineno, rec)
        q = rec.get(qf, rec.get("prompt") if qf == "question" else None)
        if not isinstance(q, str):
            outs[k] = _error(rec, f"line {lineno}: missing or non-string field {qf!r}")
        elif isinstance(rec.get(af), str):
            to_correct.append((k, q, rec[af]))
        elif rec.get(af) is not None:
            outs[k] = _error(rec, f"line {lineno}: field {af!r} must be a string, got {type(rec[af]).__name__}")
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
        if c.fallback and c.fallback.startswith("error"):  # the Aligner failed on it (e.g. its server is down)
            outs[k] = _error({**rec, "question": q, "answer": a}, "aligner: " + c.fallback.split(": ", 1)[-1])
            continue
        outs[k] = {**rec, "question": q, "answer": a, "correction": c.text, "changed": c.changed,
                   "fallback": c.fallback}
        if c.gate_score is not None:  # the Aligner's gate ran: its score, and whether it passed the answer
            outs[k].update(gate_score=c.gate_score, gate_passed=c.gate_passed)
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
    _check_paths(args)
    name, parsed = read_input(args.in_path)
    bad = [r for _, r in parsed if not isinstance(r, dict)]
    if bad:
        raise UserError(bad[0] + (f" (and {len(bad) - 1} more bad lines)" if len(bad) > 1 else ""))
    _write_w2s([r for _, r in parsed], args)
    return 0
