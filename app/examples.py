"""Example prompts for the page, and an optional rule judge for the replies to them.

Examples come from a JSONL/JSON file of rows with "prompt" and optionally "kind" (the page shows a
few per kind, or per value of another field: AppConfig.examples_group_by); other fields are kept
for the judge. The judge is a plugin built by
lightalign.plugins.build_judge: `name`, `metrics`, `score(records, replies)`. It needs a whole
record (an expected value, a kind...), so a typed prompt gets a verdict only when it matches an
example (same words, whatever the case and spacing).
"""

from __future__ import annotations

from lightalign.app.config import AppConfig
from lightalign.io import read_records, require_fields
from lightalign.plugins import build_judge

MARKS = {True: "✓ yes", False: "✗ no"}
NO_KIND = "Examples"  # title of the rows that carry no value in the grouping field
NO_RECORD = "*No judge for this prompt (the judge scores replies to the example prompts).*"


def judge_failure(e: BaseException) -> str:
    return f"*The judge failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}*"


def prompt_key(prompt: str) -> str:
    return " ".join(prompt.split()).lower()


class Examples:
    def __init__(self, records: list[dict] | None = None, judge=None, source: str = "",
                 group_by: str = "kind", titles: dict[str, str] | None = None):
        self.records = list(records or [])
        self.judge = judge
        self.source = source
        self.group_by = group_by
        self.titles = dict(titles or {})
        self._by_prompt = {prompt_key(r["prompt"]): r for r in self.records}

    @classmethod
    def from_config(cls, cfg: AppConfig) -> "Examples":
        """Read cfg.examples and build cfg.judge; a bad file or plugin raises UserError naming it."""
        path = cfg.examples_path
        records = []
        if path is not None:
            for line, row in read_records(path):
                require_fields(row, ["prompt"], f"{path}:{line}")
                records.append(row)
        judge = build_judge(cfg.judge, cfg.judge_options, "judge") if cfg.judge else None
        return cls(records, judge, str(path) if path else "", cfg.examples_group_by, cfg.examples_titles)

    def title(self, value) -> str:
        value = str(value if value is not None else "").strip()
        return self.titles.get(value) or value.replace("_", " ").capitalize() or NO_KIND

    def groups(self, per_kind: int) -> dict[str, list[str]]:
        """{title: prompts}, groups (values of the `group_by` field) in file order, each spread across its
        rows (not near-duplicates)."""
        by_kind: dict[str, list[str]] = {}
        for r in self.records:
            by_kind.setdefault(self.title(r.get(self.group_by)), []).append(r["prompt"])
        out = {}
        for title, prompts in by_kind.items():
            if per_kind:
                step = max(1, len(prompts) // per_kind)
                out[title] = prompts[::step][:per_kind]
        return out

    def record_for(self, prompt: str) -> dict | None:
        return self._by_prompt.get(prompt_key(prompt))

    def verdicts(self, prompt: str, reply: str) -> str:
        """One markdown line: what the judge says of `reply` on the metrics that apply to this prompt."""
        if self.judge is None or not reply:
            return ""
        rec = self.record_for(prompt)
        if rec is None:
            return NO_RECORD
        try:
            (scores,) = self.judge.score([rec], [reply])
            shown = self.marks(scores, bold=True)
        except Exception as e:  # noqa: BLE001 - a failing plugin costs its verdict, not the answer
            return judge_failure(e)
        return "Judges: " + (" · ".join(shown) or "none apply")

    def marks(self, scores: dict, bold: bool = False) -> list[str]:
        """`metric ✓ yes` (or ✗ no) for each of the judge's metrics that applies (is not None)."""
        return [f"**{m}** {MARKS[scores[m]]}" if bold else f"{m} {MARKS[scores[m]]}"
                for m in self.judge.metrics if scores.get(m) is not None]

    def describe(self) -> str:
        """One line for the page's status list."""
        if not self.records:
            return "no example prompts (set `examples` in the config)"
        text = f"{len(self.records):,} example prompts from {self.source}"
        if self.judge is not None:
            text += f"; judge {self.judge.name} ({', '.join(self.judge.metrics)})"
        return text
