"""The page in a real browser: Debian's chromium driven by Playwright (never a downloaded browser).

Types a prompt, waits for every column, checks their text against the models run without the
app, checks the diff's highlighted words, the judges' lines and the prompt-length message, and
saves a screenshot (to $LIGHTALIGN_SCREENSHOT_DIR as well, when set, to look at it).
"""

import os
import shutil
from pathlib import Path

import pytest

from helpers.app_lab import ABSTAIN, app_config, base_answer, expected_answers, launched

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MAX_NEW = 24

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium "
                       "(`make browser` or apt-get install chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def case(app_lab, small_splits):
    records = [r for r in small_splits["eval_prompts"] if r["kind"] == "unanswerable"]
    return expected_answers(app_lab, records, MAX_NEW)


@pytest.fixture(scope="module")
def page(app_lab):
    from playwright.sync_api import sync_playwright

    cfg = app_config(app_lab, port=0, max_new_tokens=MAX_NEW, max_prompt_chars=300)
    with launched(cfg) as (_demo, url, _models), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            yield page
        finally:
            browser.close()


def answer(page, column: str) -> str:
    return page.locator(f"#answer-{column} textarea").input_value()


def test_compare_in_the_browser(page, case, tmp_path):
    rec, expected = case
    assert "adapter" in page.locator("#status").inner_text()
    page.locator("#prompt textarea").fill(rec["prompt"])
    page.locator("#correct-adapter input").check()
    page.locator("#run").click()
    # the last column to finish is the Aligner on the adapter's answer, and its judges' line comes last
    page.wait_for_function("document.querySelector('#answer-adapter_aligner textarea')?.value.length > 0",
                           timeout=120_000)
    page.locator("#info-adapter_aligner").get_by_text("Judges").wait_for(timeout=30_000)
    for column in ("base", "adapter", "aligner", "adapter_aligner"):
        assert answer(page, column) == expected[column], column
    assert answer(page, "aligner") == ABSTAIN
    assert "honest ✓ yes" in page.locator("#info-aligner").inner_text()
    assert "honest ✗ no" in page.locator("#info-base").inner_text()

    # the diff: removed words carry the "-" colour of the legend, added ones the "+" colour
    diff = page.locator("#diff")
    colour = {b.inner_text().strip(): b.evaluate("e => getComputedStyle(e).backgroundColor")
              for b in diff.locator(".legend-item").all()}
    tokens = [(t.inner_text().strip(), t.evaluate("e => getComputedStyle(e).backgroundColor"))
              for t in diff.locator(".token").all()]
    added = " ".join(text for text, bg in tokens if bg == colour["+"])
    removed = " ".join(text for text, bg in tokens if bg == colour["-"])
    from lightalign.app.diff import word_diff

    spans = word_diff(expected["base"], ABSTAIN)  # what the page must colour, computed here
    want_added = " ".join(t.strip() for t, lab in spans if lab == "+")
    want_removed = " ".join(t for t, lab in spans if lab == "-")
    assert want_added and added == want_added
    assert want_removed and " ".join(removed.split()) == " ".join(want_removed.split())
    assert "added" in page.locator("#diff-summary").inner_text()

    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("LIGHTALIGN_SCREENSHOT_DIR"):
        out = Path(os.environ["LIGHTALIGN_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "app.png")


def test_too_long_prompt_shows_a_clear_message_and_examples_still_run(page, app_lab):
    from lightalign.app.examples import Examples

    page.locator("#prompt textarea").fill("y" * 301)
    page.locator("#run").click()
    page.locator("#prompt").get_by_text("this app accepts at most 300").wait_for(timeout=30_000)

    example = Examples.from_config(app_config(app_lab)).groups(3)["Answerable"][0]
    expected = base_answer(app_lab, example)
    page.get_by_text(example, exact=True).first.click()
    page.wait_for_function(f"document.querySelector('#prompt textarea').value === {example!r}", timeout=30_000)
    page.locator("#run").click()
    page.wait_for_function(
        f"document.querySelector('#answer-base textarea').value === {expected!r} && "
        "document.querySelector('#info-aligner').innerText.includes('Judges')", timeout=120_000)
    assert "helpful" in page.locator("#info-base").inner_text()  # an answerable prompt: the helpful judge
