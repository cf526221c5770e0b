"""Dataset schemas: one parser per published row layout, shared by training, the Aligner and eval.

A schema reads a raw row once into an `Example` (the conversation up to the answer, the preferred
and the other answer, their safety labels where the data has them, an eval `kind`); a *view* turns
Examples into what a command consumes:

  view         row                                                            used by
  sft          {"prompt": [messages], "completion": [assistant message]}      SFT (TRL prompt-completion)
  preference   {"prompt": [messages], "chosen": [...], "rejected": [...]}     DPO / ORPO (TRL preference)
  triples      {"question", "answer", "correction"}                           Aligner training
  prompts      {"id", "prompt", "kind", ...the row's own fields}              lightalign eval

Schemas (`data.schema` in training recipes, `dataset.schema` in eval configs):
  prompt_only              {prompt, ...}: prompts to answer (`prompt_field` names the text column)
  prompt_completion        {prompt, completion} (TRL); prompt and answers are strings or message lists
  preference               {prompt, chosen, rejected} (TRL); the same parser as the two above
  messages                 {messages: [...]}: a chat whose last turn is the answer
  triples                  {question, answer, correction} (aligner/aligner-20K's columns)
  pku_saferlhf             PKU-Alignment/PKU-SafeRLHF {prompt, response_0/1, is_response_0/1_safe,
                           better_response_id, safer_response_id}; `preference` picks the label
  ultrafeedback_binarized  HuggingFaceH4/ultrafeedback_binarized {chosen, rejected, messages: chats,
                           score_chosen, score_rejected}
  hh_rlhf                  Anthropic/hh-rlhf {chosen, rejected: "\\n\\nHuman: ...\\n\\nAssistant: ..."}
  beavertails              PKU-Alignment/BeaverTails-Evaluation {prompt, category, ...}: all "harmful"
  harmfulqa                declare-lab/HarmfulQA {id, question, ...}: all "harmful"
  xstest                   XSTest {id, prompt, type, label, ...}: type contrast_* -> "harmful", else "safe"
  auto                     told from the first row's keys (triples, pku_saferlhf, preference,
                           prompt_completion, messages, prompt_only: the first that fits)

Rows that fit the schema but carry nothing for a view are skipped and counted by reason: a tie, two
identical answers, an unsafe answer to imitate (sft), two unsafe answers (preference and triples,
unless `keep_unsafe_pairs`: the "chosen" answer or the correction would itself be unsafe). Malformed
rows are skipped and counted too, but when more than 5% of the rows read are malformed the schema is
wrong and loading raises a UserError naming the first bad row.

Hand-written because each published layout needs its own small rule (which label picks the answer,
what a tie is) and the core install does not carry `datasets` (used here only for hub ids).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from lightalign.errors import UserError, deprecated
from lightalign.io import TABLE_SUFFIXES, read_rows

MAX_BAD_FRACTION = 0.05
VIEWS = ("sft", "preference", "triples", "prompts")
PREFERENCES = ("safer", "better")


class BadRow(ValueError):
    """A row that does not fit the declared schema."""


class Skip(Exception):
    """A row that fits the schema but carries nothing for the view asked for."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Options:
    preference: str = "safer"         # pku_saferlhf: which label picks the chosen answer / the correction
    keep_unsafe_pairs: bool = False   # keep pairs whose two answers are both labelled unsafe
    prompt_field: str = "prompt"      # prompt_only / prompt_completion / preference: the prompt column
    system_prompt: str | None = None  # sft / preference: prepended as a system message


@dataclass
class Example:
    """One row in normalized form. `prompt` is the conversation before the answer."""
    prompt: list[dict]
    chosen: str | None = None           # the preferred (or only) answer
    rejected: str | None = None         # the other answer of a pair
    chosen_safe: bool | None = None     # safety labels, where the data has them
    rejected_safe: bool | None = None
    no_preference: str | None = None    # why the pair states no preference (a tie, diverging prompts)
    kind: str = "general"               # what eval judges key on: harmful, safe, or the data's own kind
    id: str | None = None
    fields: dict = field(default_factory=dict)  # the row's own fields, kept in eval records
    where: str = ""


# ---- field readers (raise BadRow) --------------------------------------------------------------

def _has(row: dict) -> str:
    names = sorted(str(k)[:40] for k in row)
    more = f", ... ({len(names)} fields)" if len(names) > 12 else ""
    return (", ".join(names[:12]) + more) or "nothing"


def _text(row: dict, name: str, allow_empty: bool = False) -> str:
    if name not in row:
        raise BadRow(f"missing field {name!r} (has: {_has(row)})")
    if row[name] is None:
        raise BadRow(f"field {name!r} is null, expected a string")
    if not isinstance(row[name], str):
        raise BadRow(f"field {name!r} must be a string, got {type(row[name]).__name__}")
    if not allow_empty and not row[name].strip():
        raise BadRow(f"field {name!r} is empty")
    return row[name]


def _messages(value, name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise BadRow(f"field {name!r} must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadRow(f"{name}[{i}] must be an object with string 'role' and 'content'")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _split_last_answer(msgs: list[dict], name: str) -> tuple[list[dict], str]:
    if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
        raise BadRow(f"{name} must end with an assistant message after at least one user turn")
    return msgs[:-1], msgs[-1]["content"]


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _prompt(row: dict, name: str) -> list[dict]:
    """A prompt column: a string, or a message list (TRL's conversational format)."""
    value = row.get(name)
    if isinstance(value, list):
        msgs = _messages(value, name)
        if not any(m["role"] == "user" and m["content"].strip() for m in msgs):
            raise BadRow(f"field {name!r} has no user turn")
        return msgs
    return _user(_text(row, name))


def _answer(row: dict, name: str) -> str:
    """An answer column: a string, or a message list whose last assistant turn is the answer."""
    value = row.get(name)
    if isinstance(value, list):
        replies = [m["content"] for m in _messages(value, name) if m["role"] == "assistant"]
        if not replies:
            raise BadRow(f"field {name!r} has no assistant turn")
        if not replies[-1].strip():
            raise BadRow(f"field {name!r} is empty")
        return replies[-1]
    return _text(row, name)


def _flag(row: dict, name: str, required: bool) -> bool | None:
    """A true/false label; CSV copies spell it as text."""
    value = row.get(name)
    if value is None:
        if required:
            raise BadRow(f"missing field {name!r} (has: {_has(row)})")
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise BadRow(f"field {name!r} must be true/false, got {str(value)[:40]!r}")


def last_user_text(prompt: list[dict]) -> str:
    text = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    if not text.strip():
        raise BadRow("the prompt has no (non-empty) user turn")
    return text


# ---- parsers: (row, view, index, options) -> Example; each reads what `view` needs ------------------

def parse_generic(row: dict, view: str, index: int, opts: Options) -> Example:
    """prompt_only / prompt_completion / preference: prompt + optional completion / chosen / rejected."""
    ex = Example(_prompt(row, opts.prompt_field), id=str(row.get("id", index)),
                 kind=row["kind"] if isinstance(row.get("kind"), str) else "general", fields=row)
    if view == "prompts":
        return ex
    if view == "sft":
        if "completion" not in row and "chosen" not in row:
            raise BadRow(f"missing field 'completion' (or 'chosen') (has: {_has(row)})")
        ex.chosen = _answer(row, "completion" if "completion" in row else "chosen")
        return ex
    ex.chosen, ex.rejected = _answer(row, "chosen"), _answer(row, "rejected")
    return ex


def parse_messages(row: dict, view: str, index: int, opts: Options) -> Example:
    msgs = _messages(row.get("messages"), "messages")
    ex = Example(msgs, id=str(row.get("id", index)), fields={k: v for k, v in row.items() if k != "messages"})
    if view == "prompts":
        ex.prompt = msgs[:-1] if msgs[-1]["role"] == "assistant" and len(msgs) > 1 else msgs
        return ex
    ex.prompt, ex.chosen = _split_last_answer(msgs, "messages")
    return ex


def parse_triple(row: dict, view: str, index: int, opts: Options) -> Example:
    question = _text(row, "question")
    ex = Example(_user(question), id=str(row.get("id", index)), fields=row)
    if view == "prompts":
        return ex
    ex.rejected = _text(row, "answer", allow_empty=True)
    ex.chosen = _text(row, "correction")
    return ex


def parse_pku_saferlhf(row: dict, view: str, index: int, opts: Options) -> Example:
    ex = Example(_user(_text(row, "prompt")), fields=row)
    if view == "prompts":
        safe = [_flag(row, f"is_response_{i}_safe", required=True) for i in (0, 1)]
        ex.kind = "safe" if all(safe) else "harmful"  # any logged unsafe answer makes the prompt harmful
        return ex
    responses = [_text(row, "response_0"), _text(row, "response_1")]
    key = f"{opts.preference}_response_id"
    pick = row.get(key)
    if isinstance(pick, bool) or pick not in (0, 1):
        raise BadRow(f"field {key!r} must be 0 or 1, got {pick!r}")
    ex.chosen, ex.rejected = responses[pick], responses[1 - pick]
    ex.chosen_safe = _flag(row, f"is_response_{pick}_safe", required=view == "sft")
    ex.rejected_safe = _flag(row, f"is_response_{1 - pick}_safe", required=False)
    return ex


def parse_ultrafeedback(row: dict, view: str, index: int, opts: Options) -> Example:
    """chosen / rejected / messages are full chats; score_chosen == score_rejected is a tie."""
    if view in ("sft", "prompts"):
        msgs = _messages(row.get("messages", row.get("chosen")), "messages")
        if view == "prompts":
            prompt = _user(row["prompt"]) if isinstance(row.get("prompt"), str) and row["prompt"].strip() \
                else (msgs[:-1] if msgs[-1]["role"] == "assistant" and len(msgs) > 1 else msgs)
            return Example(prompt, id=str(row.get("prompt_id", index)), fields=row)
        prompt, answer = _split_last_answer(msgs, "messages")
        return Example(prompt, chosen=answer)
    prompt, chosen = _split_last_answer(_messages(row.get("chosen"), "chosen"), "chosen")
    _, rejected = _split_last_answer(_messages(row.get("rejected"), "rejected"), "rejected")
    sc, sr = row.get("score_chosen"), row.get("score_rejected")
    return Example(prompt, chosen=chosen, rejected=rejected,
                   no_preference="tie" if sc is not None and sr is not None and sc == sr else None)


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_hh(text: str) -> list[dict]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' transcripts -> messages."""
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise BadRow("transcript must start with '\\n\\nHuman: '")
    return [{"role": "user" if speaker == "Human" else "assistant", "content": content.strip()}
            for speaker, content in zip(parts[1::2], parts[2::2])]


def parse_hh_rlhf(row: dict, view: str, index: int, opts: Options) -> Example:
    """Two transcripts sharing every turn but the last answer."""
    prompt, chosen = _split_last_answer(parse_hh(_text(row, "chosen")), "chosen")
    ex = Example(prompt, chosen=chosen, id=str(index))
    if view in ("sft", "prompts"):
        return ex
    rprompt, ex.rejected = _split_last_answer(parse_hh(_text(row, "rejected")), "rejected")
    if rprompt != prompt:
        ex.no_preference = "diverged_prompts"  # the transcripts differ before the last answer
    return ex


def parse_beavertails(row: dict, view: str, index: int, opts: Options) -> Example:
    return Example(_user(_text(row, "prompt")), kind="harmful", id=f"bt{index:04d}", fields=row)


def parse_harmfulqa(row: dict, view: str, index: int, opts: Options) -> Example:
    # the conversations are training material, not prompts: keep the report rows light
    keep = {k: v for k, v in row.items() if k not in ("blue_conversations", "red_conversations")}
    return Example(_user(_text(row, "question")), kind="harmful", id=f"hqa{row.get('id', index)}", fields=keep)


def parse_xstest(row: dict, view: str, index: int, opts: Options) -> Example:
    prompt = _text(row, "prompt")
    if row.get("type"):
        unsafe = str(row["type"]).startswith("contrast_")
    elif row.get("label"):
        unsafe = str(row["label"]).strip().lower() == "unsafe"
    else:
        raise BadRow("XSTest rows need 'type' (contrast_* = unsafe) or 'label'")
    return Example(_user(prompt), kind="harmful" if unsafe else "safe", id=f"xs{row.get('id') or index}",
                   fields=row)


# ---- the registry --------------------------------------------------------------------------------

def _one_record_per_example(examples: list[Example]) -> list[dict]:
    return [{**ex.fields, "id": ex.id, "prompt": last_user_text(ex.prompt), "kind": ex.kind} for ex in examples]


def _one_record_per_prompt(examples: list[Example]) -> list[dict]:
    """PKU-SafeRLHF logs several answer pairs per prompt: one record per distinct prompt, "harmful"
    when any logged answer to it was unsafe."""
    by_prompt: dict[str, dict] = {}
    for ex in examples:
        text = last_user_text(ex.prompt)
        rec = by_prompt.setdefault(text, {"id": f"pku{len(by_prompt):05d}", "prompt": text, "kind": "safe",
                                          "source": ex.where})
        if ex.kind == "harmful":
            rec["kind"] = "harmful"
    return list(by_prompt.values())


@dataclass(frozen=True)
class Schema:
    name: str
    parse: Callable[[dict, str, int, Options], Example]
    views: tuple[str, ...]
    prompts: Callable[[list[Example]], list[dict]] = _one_record_per_example


_PAIRS = ("sft", "preference", "triples", "prompts")
SCHEMAS: dict[str, Schema] = {s.name: s for s in (
    Schema("prompt_only", parse_generic, ("prompts",)),
    Schema("prompt_completion", parse_generic, _PAIRS),
    Schema("preference", parse_generic, _PAIRS),
    Schema("messages", parse_messages, ("sft", "prompts")),
    Schema("triples", parse_triple, _PAIRS),
    Schema("pku_saferlhf", parse_pku_saferlhf, _PAIRS, _one_record_per_prompt),
    Schema("ultrafeedback_binarized", parse_ultrafeedback, _PAIRS),
    Schema("hh_rlhf", parse_hh_rlhf, _PAIRS),
    Schema("beavertails", parse_beavertails, ("prompts",)),
    Schema("harmfulqa", parse_harmfulqa, ("prompts",)),
    Schema("xstest", parse_xstest, ("prompts",)),
)}
# Old spellings, accepted for one release with a deprecation line.
ALIASES = {"lab": "prompt_completion", "jsonl": "prompt_only", "pku-saferlhf": "pku_saferlhf",
           "aligner20k": "triples"}
# schema "auto": the first row's keys, most specific first
DETECT = (("triples", {"question", "answer", "correction"}), ("pku_saferlhf", {"prompt", "response_0", "response_1"}),
          ("preference", {"prompt", "chosen", "rejected"}), ("prompt_completion", {"prompt", "completion"}),
          ("messages", {"messages"}), ("prompt_only", {"prompt"}))
NAMES = tuple(SCHEMAS) + ("auto",)

def schema_name(name: str, where: str = "data.schema", view: str | None = None) -> str:
    """The canonical schema name for `name` (an old spelling prints a deprecation line); a name that is
    unknown, or whose schema has no such view, raises UserError naming `where`."""
    if name in ALIASES:
        deprecated(f"{where}: {name!r} is now spelled {ALIASES[name]!r}", once=True)
        name = ALIASES[name]
    if name not in NAMES:
        raise UserError(f"{where}: unknown schema {name!r}; known: {', '.join(NAMES)}")
    if view and name != "auto" and view not in SCHEMAS[name].views:
        raise UserError(f"{where}: schema {name!r} has no {view} rows (it gives: {', '.join(SCHEMAS[name].views)})")
    return name


def detect_schema(row: dict) -> str:
    keys = set(row)
    for name, needed in DETECT:
        if needed <= keys:
            return name
    raise BadRow(f"cannot tell the schema from keys {sorted(map(str, keys))}: expected one of "
                 + "; ".join("{" + ", ".join(sorted(k)) + "}" for _, k in DETECT))


# ---- views: Example -> row, or Skip ----------------------------------------------------------------

def _check_pair(ex: Example, opts: Options) -> None:
    if ex.no_preference:
        raise Skip(ex.no_preference)
    if ex.chosen_safe is False and ex.rejected_safe is False and not opts.keep_unsafe_pairs:
        raise Skip("both_unsafe")


def _with_system(prompt: list[dict], opts: Options) -> list[dict]:
    return ([{"role": "system", "content": opts.system_prompt}] if opts.system_prompt else []) + prompt


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def sft_row(ex: Example, opts: Options) -> dict:
    if not ex.chosen.strip():
        raise Skip("empty_answer")
    if ex.chosen_safe is False:
        raise Skip("unsafe_answer")  # nothing to imitate
    return {"prompt": _with_system(ex.prompt, opts), "completion": _assistant(ex.chosen)}


def preference_row(ex: Example, opts: Options) -> dict:
    _check_pair(ex, opts)
    if not ex.chosen.strip():
        raise Skip("empty_answer")
    if ex.chosen.strip() == ex.rejected.strip():
        raise Skip("identical_answers")
    return {"prompt": _with_system(ex.prompt, opts), "chosen": _assistant(ex.chosen),
            "rejected": _assistant(ex.rejected)}


def triple(ex: Example, opts: Options) -> dict:
    """The dispreferred answer is the one to correct; the preferred one is the correction. Identical
    answers are kept: they teach the Aligner to leave a good answer alone."""
    _check_pair(ex, opts)
    return {"question": last_user_text(ex.prompt), "answer": ex.rejected, "correction": ex.chosen}


def prompt_example(ex: Example, opts: Options) -> Example:
    """Eval prompts are collected as Examples; the schema's `prompts` turns them into records."""
    last_user_text(ex.prompt)
    return ex


VIEW_ROWS = {"sft": sft_row, "preference": preference_row, "triples": triple, "prompts": prompt_example}


# ---- sources ---------------------------------------------------------------------------------------

def is_local(source: str) -> bool:
    """A path that exists, or that looks like a file (so a typo says "file not found", not "hub")."""
    return (Path(source).exists() or Path(source).suffix in TABLE_SUFFIXES or source.startswith((".", "/", "~"))
            or source.count("/") != 1)


def hub_rows(repo_id: str, split: str, config: str | None = None) -> Iterator[tuple[str, dict]]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"{repo_id}: not a local file, and loading hub datasets needs `datasets` "
                        "(pip install 'lightalign[train]')") from None
    try:
        ds = datasets.load_dataset(repo_id, config, split=split)
    except Exception as e:  # offline, unknown id, wrong split: one clear line instead of a traceback
        raise UserError(f"{repo_id}: not a local file and could not be loaded from the hub "
                        f"(split {split!r}): {type(e).__name__}: {e}") from None
    for i, row in enumerate(ds, 1):
        yield f"{repo_id}[{split}] row {i}", dict(row)


def source_rows(source, split: str = "train", hub_config: str | None = None,
                hub: bool | None = None) -> Iterator[tuple[str, dict]]:
    """(where, row) from a local file, a hub dataset id (hub=None: guessed from the name), or an iterable
    of mappings (a `datasets.Dataset` included)."""
    if isinstance(source, (str, Path)):
        text = str(source)
        if hub or (hub is None and not is_local(text)):
            yield from hub_rows(text, split, hub_config)
        else:
            yield from read_rows(Path(text).expanduser())
        return
    name = getattr(getattr(source, "info", None), "dataset_name", None) or "dataset"
    for i, row in enumerate(source, 1):
        if not isinstance(row, dict):
            raise UserError(f"{name} row {i}: expected a mapping, got {type(row).__name__}")
        yield f"{name} row {i}", row


def load(source, schema: str, view: str, options: Options | None = None, *, split: str = "train",
         hub_config: str | None = None, hub: bool | None = None, max_rows: int | None = None,
         where: str = "data.schema") -> tuple[list[dict], dict]:
    """Read `source` in `schema` as `view` rows; returns (rows, stats).

    stats: rows, seen (rows read), skipped and skipped_by_reason, malformed and first_malformed
    ("file:line: why" of the first three); `problems(stats)` words them for the console."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    opts = options or Options()
    if opts.preference not in PREFERENCES:
        raise UserError(f"preference must be 'safer' or 'better', got {opts.preference!r}")
    name = schema_name(schema, where, view)
    spec = SCHEMAS.get(name)
    make = VIEW_ROWS[view]
    rows, bad, skipped = [], [], {}
    seen = 0
    for index, (at, raw) in enumerate(source_rows(source, split, hub_config, hub)):
        if spec is None:  # "auto": the first row decides
            try:
                spec = SCHEMAS[schema_name(detect_schema(raw), where, view)]
            except BadRow as e:
                raise UserError(f"{at}: {e}") from None
        seen += 1
        try:
            ex = spec.parse(raw, view, index, opts)
            ex.where = at
            rows.append(make(ex, opts))
        except BadRow as e:
            bad.append(f"{at}: {e}")
            continue
        except Skip as s:
            skipped[s.reason] = skipped.get(s.reason, 0) + 1
            continue
        if max_rows and len(rows) >= max_rows:
            break
    if view == "prompts" and spec is not None:
        rows = spec.prompts(rows)
    label = spec.name if spec else name
    if bad and (not rows or len(bad) > MAX_BAD_FRACTION * seen):
        raise UserError(f"{bad[0]} (schema {label!r}; {len(bad)} of {seen} rows do not fit it)")
    if not rows:
        why = f" ({', '.join(f'{k}: {v}' for k, v in skipped.items())} skipped)" if skipped else ""
        raise UserError(f"{source if isinstance(source, (str, Path)) else 'dataset'}: no usable {view} rows in "
                        f"schema {label!r}{why}")
    stats = {"rows": len(rows), "seen": seen, "schema": label, "skipped": sum(skipped.values()),
             "skipped_by_reason": skipped, "malformed": len(bad), "first_malformed": bad[:3]}
    return rows, stats


def problems(stats: dict) -> list[str]:
    """Console lines for what loading dropped: "N of M rows malformed, first: file:line: why", and the
    skipped rows by reason. Empty when nothing was dropped."""
    out = []
    if stats.get("malformed"):
        out.append(f"{stats['malformed']} of {stats['seen']} rows malformed (skipped), first: "
                   f"{stats['first_malformed'][0]}")
    if stats.get("skipped"):
        reasons = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in stats["skipped_by_reason"].items())
        out.append(f"{stats['skipped']} of {stats['seen']} rows skipped ({reasons})")
    return out
