"""One prompt in several wordings, side by side: does each system's answer hold when the question is
reworded?

Rows are the prompt as typed, the rewordings that the eval's rules make of it
(lightalign.evaluation.rewrites, the same rules as `robustness.rewrites`), and any wordings the user
types. Columns are the systems the app serves (base, base + adapter, the Aligner's corrections).
Each system answers every wording in one batched generate (Models.answer_batch), and the Aligner
corrects them as one batch. When the prompt is one of the examples, the judge scores each cell
against that example's record, with the wording as its prompt, and the summary counts the passes.
Kept free of gradio, like compare.py; ui.py turns a Table into a dataframe and a summary line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from lightalign.app.compare import COLUMNS, TITLES, check_prompt
from lightalign.app.examples import NO_RECORD, Examples, judge_failure, prompt_key
from lightalign.app.models import GenSettings, Models, PartMissing, PromptError, describe_error
from lightalign.evaluation.rewrites import Rewording, reword

MAX_TYPED = 8            # wordings a user may type (each one more row in every batch)
ORIGINAL = "original"    # rule name of the first row
TYPED = "typed"          # rule name of the rows the user typed
SOURCE = {"aligner": "base", "adapter_aligner": "adapter"}  # the column each correction post-edits


def check_typed(text: str | None, max_chars: int) -> list[str]:
    """The user's extra wordings, one per non-blank line; PromptError if too many or one is too long."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(lines) > MAX_TYPED:
        raise PromptError(f"{len(lines)} extra wordings given; this app accepts at most {MAX_TYPED}, one per line.")
    for i, line in enumerate(lines, 1):
        if len(line) > max_chars:
            raise PromptError(f"Extra wording {i} is {len(line):,} characters long; this app accepts at most "
                              f"{max_chars:,} (max_prompt_chars).")
    return lines


def wordings(prompt: str, typed: list[str], rewriters: list, n: int) -> list[Rewording]:
    """The original first, then up to `n` rule-made rewordings, then the typed ones; repeats dropped."""
    rows = [Rewording(ORIGINAL, prompt)] + reword(prompt, rewriters)[:n] + [Rewording(TYPED, t) for t in typed]
    seen, out = set(), []
    for row in rows:
        if prompt_key(row.text) not in seen:
            seen.add(prompt_key(row.text))
            out.append(row)
    return out


@dataclass
class Table:
    """Replies (and verdicts) of each system to each wording; `notes` says why a column is empty."""
    wordings: list[Rewording]
    systems: list[str]
    replies: dict[str, list[str]] = field(default_factory=dict)
    scores: dict[str, list[dict]] = field(default_factory=dict)   # judge scores per cell, when judged
    notes: dict[str, str] = field(default_factory=dict)
    judge: str = ""   # why there are no verdicts ("" when there are, or no judge is configured)

    def headers(self, judged: bool) -> list[str]:
        """Rule, Wording, then each system's reply (and its judge column when a judge is configured)."""
        cols = ["Rule", "Wording"]
        for s in self.systems:
            cols += [TITLES[s]] + ([f"{TITLES[s]}: judge"] if judged else [])
        return cols

    def rows(self, examples: Examples) -> list[list[str]]:
        judged = examples.judge is not None
        out = []
        for i, w in enumerate(self.wordings):
            row = [w.rule, w.text]
            for s in self.systems:
                replies = self.replies.get(s)
                row.append(replies[i] if replies else self.notes.get(s, "…"))
                if judged:
                    row.append(self._verdict(examples, s, i))
            out.append(row)
        return out

    def _verdict(self, examples: Examples, system: str, i: int) -> str:
        """The cell's marks; empty when the cell was not judged (the summary says why)."""
        if system in self.scores:
            return " · ".join(examples.marks(self.scores[system][i])) or "none apply"
        return ""

    def summary(self, examples: Examples) -> str:
        """Per system: passed k of n wordings (every metric that applies holds), or why not judged."""
        n = len(self.wordings)
        head = f"{n} wording{'s' * (n != 1)}"
        if examples.judge is None:
            return f"{head}; no judge configured (set `judge` in the config for verdicts)."
        parts = []
        for s in self.systems:
            if s in self.scores:
                applied = [sc for sc in self.scores[s] if any(v is not None for v in sc.values())]
                passed = sum(all(v is not False for v in sc.values()) for sc in applied)
                parts.append(f"**{TITLES[s]}** passed {passed} of {len(applied)}" if applied
                             else f"**{TITLES[s]}**: no metric applies")
            elif s in self.notes:
                parts.append(f"**{TITLES[s]}** {self.notes[s]}")
        line = f"{head}. " + " · ".join(parts)
        return line + (f" {self.judge}" if self.judge else "")


def systems_for(models: Models, correct_adapter: bool) -> list[str]:
    """The columns this app can fill: the base always, the others when their part is configured."""
    has = {"base": True, "adapter": models.has_adapter, "aligner": models.cfg.aligner_path is not None}
    has["adapter_aligner"] = has["adapter"] and has["aligner"] and correct_adapter
    return [c for c in COLUMNS if has[c]]


def side_by_side(models: Models, examples: Examples, rewriters: list, prompt: str, typed: str | None,
                 settings: GenSettings, correct_adapter: bool = False) -> Iterator[Table]:
    """The table, yielded again as each system's column fills (the page shows progress)."""
    cfg = models.cfg
    prompt = check_prompt(prompt, cfg.max_prompt_chars)
    extra = check_typed(typed, cfg.max_prompt_chars)
    if models.model is None:
        raise PartMissing(f"base model {models.status['base'].message}")
    rows = wordings(prompt, extra, rewriters, cfg.rewordings)
    table = Table(rows, systems_for(models, correct_adapter))
    texts = [w.text for w in rows]
    yield table
    for system in table.systems:
        try:
            if system in SOURCE:
                answers = table.replies.get(SOURCE[system])
                if answers is None:
                    raise PartMissing(f"no {TITLES[SOURCE[system]].lower()} answers to correct")
                table.replies[system] = [c.text for c in models.correct_batch(list(zip(texts, answers)))]
            else:
                table.replies[system] = models.answer_batch(texts, adapter=system == "adapter", settings=settings)
        except (PartMissing, PromptError) as e:
            if system == "base":  # nothing to compare
                raise
            table.notes[system] = f"⚠ No Aligner: {e}" if system in SOURCE else f"⚠ {e}"
        except Exception as e:  # noqa: BLE001 - shown in its column, the other systems still run
            if system == "base":
                raise
            table.notes[system] = f"⚠ failed: {describe_error(e)}"
        yield table
    _judge(table, examples, prompt)
    yield table


def _judge(table: Table, examples: Examples, prompt: str) -> None:
    """Score every answered cell against the original prompt's example record (its wording as prompt)."""
    if examples.judge is None:
        return
    rec = examples.record_for(prompt)
    if rec is None:
        table.judge = NO_RECORD
        return
    records = [dict(rec, prompt=w.text) for w in table.wordings]
    for system, replies in table.replies.items():
        try:
            table.scores[system] = examples.judge.score(records, replies)
        except Exception as e:  # noqa: BLE001 - a failing plugin costs its verdicts, not the answers
            table.judge = judge_failure(e)
