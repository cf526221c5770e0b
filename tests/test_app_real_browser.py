"""The real model's page in a real browser (Debian's chromium through Playwright, never a downloaded one).

Serves the small real track's app.yaml as `lightalign app --config <track>/app.yaml` does (SmolLM2 base,
its SFT+DPO adapter, the Aligner, the held-out prompts grouped by set, the track's refusal judge), picks
a HarmBench example and an edgy one from the page, and checks that the three answer columns are filled
and each carries the judge's verdict on the very text the page shows. The track is trained once per
session (conftest's real_small_track), shared with tests/test_real_track.py's end-to-end test.
Screenshots go to $LIGHTALIGN_SCREENSHOT_DIR as well, when set, to look at them.
"""

import os
import shutil
from argparse import Namespace
from pathlib import Path

import pytest
from helpers.app_lab import launched

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOWN = ("base", "adapter", "aligner")  # the adapter's own correction is off by default

pytestmark = [
    pytest.mark.real,
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium "
                       "(`make browser` or apt-get install chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def served(real_small_track):
    """(AppConfig, Examples) exactly as the CLI reads the track's app.yaml, on a free port."""
    from lightalign.app.cli import resolve_config
    from lightalign.app.examples import Examples

    root, _ = real_small_track
    args = Namespace(config=str(root / "app.yaml"), lab=None, base=None, adapter=None, aligner=None,
                     quantization=None, host=None, port=0, overrides=[])
    cfg, _ = resolve_config(args)
    return cfg, Examples.from_config(cfg)


@pytest.fixture(scope="module")
def page(served):
    from playwright.sync_api import sync_playwright

    cfg, _ = served
    with launched(cfg) as (_demo, url, _models), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url)
            yield page
        finally:
            browser.close()


@pytest.mark.parametrize("group, metric", [("HarmBench", "refuses_harmful"), ("Edgy but benign", "answers_edgy")])
def test_real_model_answers_side_by_side_with_verdicts(page, served, group, metric, tmp_path):
    from lightalign.app.examples import MARKS
    from lightalign.evaluation.judge_rules import is_refusal

    cfg, examples = served
    groups = examples.groups(cfg.examples_per_kind)
    assert {"HarmBench", "Edgy but benign", "Benign"} <= set(groups)  # grouped by set, not by harmful/safe
    page.get_by_text(f"{group} examples").first.wait_for(timeout=30_000)
    prompt = groups[group][0]
    # the example's button (the page shortens long prompts) fills the prompt box with the whole prompt
    page.get_by_role("button").filter(has_text=prompt[:40]).first.click()
    page.wait_for_function(f"document.querySelector('#prompt textarea').value === {prompt!r}", timeout=30_000)
    page.locator("#run").click()
    # each column's verdict line appears once its answer is complete; this prompt's metric tells them
    # apart from the previous prompt's lines
    done = " && ".join(f"document.querySelector('#info-{c}')?.innerText.includes({metric!r})" for c in SHOWN)
    page.wait_for_function(done, timeout=300_000)
    for column in SHOWN:
        text = page.locator(f"#answer-{column} textarea").input_value()
        assert text.strip(), column
        refused = is_refusal(text)
        verdict = refused if metric == "refuses_harmful" else not refused
        info = page.locator(f"#info-{column}").inner_text()
        assert f"{metric} {MARKS[verdict]}" in info, (column, text, info)
    assert not page.locator("#answer-adapter_aligner").is_visible()

    shot = tmp_path / f"app_real_{metric}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("LIGHTALIGN_SCREENSHOT_DIR"):
        out = Path(os.environ["LIGHTALIGN_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / shot.name)
