"""The app's sentence-streamed Aligner column in a real browser (Debian chromium through Playwright):
the page shows the corrected answer, the note and the diff of a streamed correction."""

from pathlib import Path

import pytest

from helpers.app_lab import ABSTAIN, app_config, base_answer, launched

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MAX_NEW = 48

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium "
                       "(`make browser` or apt-get install chromium chromium-driver)"),
]


@pytest.mark.parametrize("mode", ["sentence", "guided"])
def test_streamed_correction_in_the_browser(app_lab, small_splits, mode):
    from playwright.sync_api import sync_playwright

    from lightalign.aligner.sentences import split_sentences

    prompt = next(r["prompt"] for r in small_splits["eval_prompts"][:60]
                  if len(split_sentences(base_answer(app_lab, r["prompt"], MAX_NEW))) >= 2)
    cfg = app_config(app_lab, port=0, max_new_tokens=MAX_NEW, aligner_mode=mode)
    with launched(cfg) as (_demo, url, _models), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.locator("#prompt textarea").fill(prompt)
            page.locator("#run").click()
            page.locator("#info-aligner").get_by_text("Judges").wait_for(timeout=120_000)
            assert page.locator("#answer-aligner textarea").input_value() == ABSTAIN
            assert "sentence by sentence" in page.locator("#info-aligner").inner_text()
            assert "added" in page.locator("#diff-summary").inner_text()
            if mode == "sentence":
                assert page.locator("#answer-base textarea").input_value() == base_answer(app_lab, prompt, MAX_NEW)
        finally:
            browser.close()
