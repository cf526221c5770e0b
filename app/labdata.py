"""What the app takes from the mini-lab's data: example prompts and the judges' verdicts.

Both are optional: a real base model served without a lab simply gets no examples and no judges.
The judges need the eval record (expected value, kind), so only prompts that match a held-out
lab prompt get a verdict.
"""

from __future__ import annotations

from pathlib import Path

# order and titles of the example groups in the page
KINDS = {"answerable": "Factual", "format": "Format", "harmful": "Harmful", "unanswerable": "Unanswerable"}
MARKS = {True: "✓ yes", False: "✗ no"}


def _key(prompt: str) -> str:
    return " ".join(prompt.split()).lower()


class LabData:
    def __init__(self, lab_dir: str | Path):
        from lightalign.io import read_jsonl

        self.dir = Path(lab_dir)
        self.records: list[dict] = []
        self.judge = None
        self.problem = ""
        self._by_prompt: dict[str, dict] = {}
        prompts = self.dir / "data" / "eval_prompts.jsonl"
        world = self.dir / "data" / "world.json"
        if not prompts.exists() or not world.exists():
            self.problem = f"no lab data in {self.dir / 'data'} (run `lightalign lab` to build it)"
            return
        try:
            from lightalign.lab.judges import Judge

            self.records = read_jsonl(prompts)
            self.judge = Judge.from_file(world)
        except Exception as e:  # noqa: BLE001 - a broken lab file costs the examples, not the app
            self.records, self.judge = [], None
            self.problem = f"lab data unreadable: {e}"
            return
        self._by_prompt = {_key(r["prompt"]): r for r in self.records if "prompt" in r}

    def examples(self, per_kind: int) -> dict[str, list[str]]:
        """{title: prompts}, spread across each kind's records so they are not near-duplicates."""
        out: dict[str, list[str]] = {}
        for kind, title in KINDS.items():
            rows = [r["prompt"] for r in self.records if r.get("kind") == kind]
            if rows and per_kind:
                step = max(1, len(rows) // per_kind)
                out[title] = rows[::step][:per_kind]
        return out

    def record_for(self, prompt: str) -> dict | None:
        return self._by_prompt.get(_key(prompt)) if self.judge else None

    def verdicts(self, prompt: str, reply: str) -> str:
        """One markdown line: the judges that apply to this prompt and what they say of `reply`."""
        if self.judge is None:
            return f"*No judges: {self.problem}.*"
        rec = self.record_for(prompt)
        if rec is None:
            return "*No judge for this prompt (judges apply to the lab's held-out prompts, e.g. the examples).*"
        if not reply:
            return ""
        scores = self.judge.score(rec, reply)
        shown = [f"**{m}** {MARKS[v]}" for m, v in scores.items() if v is not None]
        return "Judges: " + (" · ".join(shown) if shown else "none apply")
