"""The Gradio 6 page: one prompt, a column per variant, the Aligner's diff, and the judge's verdicts.

Every event that runs a model shares one concurrency_id, so the queue never lets more than
`concurrency_limit` generations touch the (single) model at once, whichever button started them.
The compare event takes its inputs unprocessed (preprocess=False) and checks them in its validator:
gradio's own range check of a slider fails inside the validator step as a bare HTTP 400, while a
validator's message reaches the page and API clients (a 422 naming the input).
"""

from __future__ import annotations

import html
import math
from contextlib import closing

import gradio as gr

from lightalign.app.compare import COLUMNS, TITLES, PromptError, Snapshot, check_prompt, compare
from lightalign.app.diff import COLOR_MAP, summarize, word_diff
from lightalign.app.examples import NO_KIND, Examples
from lightalign.app.models import GenSettings, Models, PartMissing
from lightalign.app.rewordings import MAX_TYPED, check_typed, side_by_side

LOCAL = ("127.0.0.1", "localhost", "::1")
MODEL_POOL = "model"  # concurrency_id of every model-bound event
SEED_MAX = 2**32 - 1
CSS = """
.answer textarea { font-size: 1rem; }
#status { font-size: 0.9rem; }
"""


def _esc(text: str) -> str:
    """Messages carry paths and model output: no raw HTML, but quotes stay readable."""
    return html.escape(text, quote=False)


def status_markdown(models: Models, examples: Examples) -> str:
    icon = {True: "✓", False: "⚠"}  # text symbols: they render without an emoji font
    lines = [f"- {icon[s.ok]} **{name}**: {_esc(s.message)}" for name, s in models.describe().items()]
    return "\n".join(lines + [f"- **examples**: {_esc(examples.describe())}"])


def setting_limits(cfg) -> dict[str, tuple[float, float]]:
    """(lowest, highest) of each generation setting: the sliders' range, checked again on the server."""
    return {"max_new_tokens": (1, 4 * cfg.max_new_tokens), "temperature": (0.0, 2.0), "top_p": (0.05, 1.0),
            "seed": (0, SEED_MAX)}


def setting_problem(label: str, value, lowest: float, highest: float, whole: bool) -> str:
    """Why `value` is not a valid setting ("" when it is): a number in [lowest, highest]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{label} must be a number, got {value!r}."
    if whole and value != int(value):
        return f"{label} must be a whole number, got {value}."
    if not lowest <= value <= highest:
        return f"{label} is {value:,}; this app allows {lowest:,} to {highest:,}."
    return ""


def _info(col) -> str:
    return "\n\n".join(x for x in (_esc(col.note), col.verdict) if x)


def _outputs(snap: Snapshot, status: str) -> list:
    out = [snap.columns[c].text for c in COLUMNS] + [_info(snap.columns[c]) for c in COLUMNS]
    return out + [snap.diff, snap.diff_summary, snap.adapter_diff, snap.adapter_diff_summary, status]


def _page_error(e: BaseException) -> gr.Error:
    if isinstance(e, PromptError):
        return gr.Error(_esc(str(e)), title="Prompt not accepted")
    if isinstance(e, PartMissing):
        text = str(e)
        return gr.Error(_esc(text[:1].upper() + text[1:]), title="No base model")
    return gr.Error(_esc(f"{type(e).__name__}: {e}"), title="Generation failed")


def build(models: Models, examples: Examples) -> gr.Blocks:
    cfg = models.cfg
    limits = setting_limits(cfg)
    rewriters = cfg.rewriters()

    def run_compare(prompt, max_new_tokens, temperature, top_p, seed, correct_adapter):
        settings = GenSettings(int(max_new_tokens), float(temperature), float(top_p), int(seed))
        try:
            with closing(compare(models, examples, prompt, settings, bool(correct_adapter))) as snaps:
                for snap in snaps:
                    yield _outputs(snap, status_markdown(models, examples))
        except Exception as e:  # noqa: BLE001 - shown in the page; the app stays up
            raise _page_error(e) from e

    def check_inputs(prompt, max_new_tokens, temperature, top_p, seed, correct_adapter):
        """Runs before the queue (gradio's validator) on the raw inputs: each message appears on its input."""
        problems = []
        if not isinstance(prompt, str):
            problems.append(f"The prompt must be text, got {type(prompt).__name__}.")
        else:
            try:
                check_prompt(prompt, cfg.max_prompt_chars)
                problems.append("")
            except PromptError as e:
                problems.append(str(e))
        for label, name, value in (("Max new tokens", "max_new_tokens", max_new_tokens),
                                   ("Temperature", "temperature", temperature), ("Top-p", "top_p", top_p),
                                   ("Seed", "seed", seed)):
            problems.append(setting_problem(label, value, *limits[name], whole=name in ("max_new_tokens", "seed")))
        problems.append("" if isinstance(correct_adapter, bool) else
                        f"Must be true or false, got {correct_adapter!r}.")
        return [gr.validate(not p, p) for p in problems]

    def run_rewordings(prompt, typed, max_new_tokens, temperature, top_p, seed, correct_adapter):
        settings = GenSettings(int(max_new_tokens), float(temperature), float(top_p), int(seed))
        try:
            with closing(side_by_side(models, examples, rewriters, prompt, typed, settings,
                                      bool(correct_adapter))) as tables:
                for t in tables:
                    yield ({"headers": t.headers(examples.judge is not None), "data": t.rows(examples)},
                           t.summary(examples), status_markdown(models, examples))
        except Exception as e:  # noqa: BLE001
            raise _page_error(e) from e

    def check_rewordings(prompt, typed, *settings):
        """check_inputs, with the typed wordings checked too (one message per input, in input order)."""
        problem = "" if typed is None or isinstance(typed, str) else f"Must be text, got {type(typed).__name__}."
        if not problem:
            try:
                check_typed(typed, cfg.max_prompt_chars)
            except PromptError as e:
                problem = str(e)
        first, *rest = check_inputs(prompt, *settings)
        return [first, gr.validate(not problem, problem), *rest]

    def check_pair(question, answer):
        limits = {"question": cfg.max_prompt_chars, "answer": 4 * cfg.max_prompt_chars}
        out = []
        for name, text in (("question", question), ("answer", answer)):
            text = (text or "").strip()
            if not text:
                out.append(gr.validate(False, f"Give the {name} to correct."))
            elif len(text) > limits[name]:
                out.append(gr.validate(False, f"The {name} is {len(text):,} characters long; this app accepts "
                                              f"at most {limits[name]:,}."))
            else:
                out.append(gr.validate(True, ""))
        return out

    def run_correct(question, answer):
        try:
            result = models.correct(question.strip(), answer.strip())
        except Exception as e:  # noqa: BLE001
            raise gr.Error(_esc(f"The Aligner is not available or failed: {e}"), title="Aligner") from e
        spans = word_diff(answer.strip(), result.text)
        return result.text, spans, summarize(spans), status_markdown(models, examples)

    with gr.Blocks(title="lightalign: base vs aligned vs corrected") as demo:
        gr.Markdown("## lightalign: compare base, aligned and corrected answers\n"
                    "The base model answers alone and with its alignment adapter switched on (one copy of "
                    "the weights); the Aligner then post-edits the base answer.")
        status = gr.Markdown(status_markdown(models, examples), label="status", elem_id="status")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", placeholder="Ask something, or pick an example below",
                                lines=2, scale=5, elem_id="prompt",
                                info=f"At most {cfg.max_prompt_chars:,} characters.")
            with gr.Column(scale=1, min_width=160):
                run = gr.Button("Compare", variant="primary", elem_id="run")
                stop = gr.Button("Stop", variant="secondary", elem_id="stop")
                correct_adapter = gr.Checkbox(value=False, label="Aligner on the adapter's answer too",
                                              elem_id="correct-adapter")
        with gr.Accordion("Generation settings", open=False):
            with gr.Row():
                max_new_tokens = gr.Slider(*limits["max_new_tokens"], value=cfg.max_new_tokens, step=1,
                                           label="Max new tokens")
                temperature = gr.Slider(*limits["temperature"], value=0.0, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(*limits["top_p"], value=1.0, step=0.05, label="Top-p (sampling only)")
                seed = gr.Number(value=0, precision=0, minimum=0, maximum=SEED_MAX, label="Seed (sampling only)")
        with gr.Row(equal_height=False):  # one column of examples per kind
            for title, prompts in examples.groups(cfg.examples_per_kind).items():
                with gr.Column(min_width=200):
                    gr.Examples([[p] for p in prompts], inputs=[prompt],
                                label=title if title == NO_KIND else f"{title} examples")

        answers, infos, column_boxes = {}, {}, {}
        with gr.Row(equal_height=False):
            for name in COLUMNS:
                with gr.Column(visible=name != "adapter_aligner", min_width=220) as box:
                    answers[name] = gr.Textbox(label=TITLES[name], lines=5, interactive=False,
                                               elem_id=f"answer-{name}", elem_classes=["answer"], buttons=["copy"])
                    infos[name] = gr.Markdown(label=f"{TITLES[name]} notes", elem_id=f"info-{name}")
                column_boxes[name] = box
        with gr.Row():
            with gr.Column():
                diff = gr.HighlightedText(label="What the Aligner changed in the base answer", color_map=COLOR_MAP,
                                          show_legend=True, elem_id="diff")
                diff_summary = gr.Markdown(label="diff summary", elem_id="diff-summary")
            with gr.Column(visible=False) as adapter_diff_box:
                adapter_diff = gr.HighlightedText(label="What the Aligner changed in the adapter's answer",
                                                  color_map=COLOR_MAP, show_legend=True, elem_id="adapter-diff")
                adapter_diff_summary = gr.Markdown(label="adapter diff summary", elem_id="adapter-diff-summary")

        with gr.Accordion("One prompt, several wordings", open=False):
            gr.Markdown("The prompt above, reworded by rules (with the rule's name), asked of every system "
                        "in one batch per system; the judge's verdicts when the prompt is an example.")
            with gr.Row():
                typed = gr.Textbox(label="Your own wordings (optional)", lines=2, scale=5, elem_id="typed-wordings",
                                   info=f"One per line, at most {MAX_TYPED}.")
                run_wordings = gr.Button("Compare wordings", scale=1, elem_id="run-rewordings")
            wordings_summary = gr.Markdown(label="summary", elem_id="rewordings-summary")
            wordings_table = gr.Dataframe(label="Replies per wording", interactive=False, wrap=True,
                                          elem_id="rewordings")

        with gr.Accordion("Correct any answer with the Aligner", open=False):
            with gr.Row():
                own_question = gr.Textbox(label="Question", lines=2)
                own_answer = gr.Textbox(label="Answer (from any model)", lines=2)
            own_run = gr.Button("Correct")
            own_corrected = gr.Textbox(label="Correction", interactive=False)
            own_diff = gr.HighlightedText(label="Changes", color_map=COLOR_MAP, show_legend=True)
            own_summary = gr.Markdown(label="summary")

        model_bound = dict(concurrency_id=MODEL_POOL, concurrency_limit=cfg.concurrency_limit)
        outputs = ([answers[c] for c in COLUMNS] + [infos[c] for c in COLUMNS]
                   + [diff, diff_summary, adapter_diff, adapter_diff_summary, status])
        event = gr.on([run.click, prompt.submit], run_compare,
                      inputs=[prompt, max_new_tokens, temperature, top_p, seed, correct_adapter],
                      outputs=outputs, api_name="compare", show_progress="minimal",
                      show_progress_on=[answers["base"]],  # one spinner (or error badge), not thirteen
                      validator=check_inputs, preprocess=False,
                      **model_bound)
        wordings_event = run_wordings.click(
            run_rewordings, inputs=[prompt, typed, max_new_tokens, temperature, top_p, seed, correct_adapter],
            outputs=[wordings_table, wordings_summary, status], api_name="rewordings", show_progress="minimal",
            validator=check_rewordings, preprocess=False, **model_bound)
        stop.click(None, cancels=[event, wordings_event], queue=False, api_visibility="private")
        own_run.click(run_correct, inputs=[own_question, own_answer],
                      outputs=[own_corrected, own_diff, own_summary, status], api_name="correct",
                      validator=check_pair, **model_bound)
        correct_adapter.change(lambda on: (gr.update(visible=on), gr.update(visible=on)), correct_adapter,
                               [column_boxes["adapter_aligner"], adapter_diff_box], queue=False,
                               api_visibility="private")
    return demo


def launch(models: Models, examples: Examples, block: bool = True, quiet: bool = False):
    """Serve on cfg.host (127.0.0.1 unless asked): no share link, no /monitoring, no run history."""
    cfg = models.cfg
    demo = build(models, examples)
    demo.queue(max_size=cfg.max_queue, default_concurrency_limit=cfg.concurrency_limit)
    demo.launch(server_name=cfg.host, server_port=cfg.port or None, share=False, enable_monitoring=False,
                max_file_size="1mb",       # the page takes no uploads; keep any upload tiny
                run_history=False,         # its page offers to copy prompts to a Hugging Face bucket
                mcp_server=False, ssr_mode=False, show_error=True, prevent_thread_lock=True,
                quiet=True, css=CSS, footer_links=["api", "gradio"])
    if not quiet:  # printed by us: gradio's own banner advertises share=True, which this app never uses
        where = "this machine only" if cfg.host in LOCAL else f"reachable at {cfg.host}"
        print(f"lightalign app: {demo.local_url} ({where}; Ctrl+C to stop)", flush=True)
    if block:
        demo.block_thread()
    return demo
