"""ember's pages in a real browser (headless Chromium through Selenium): the human-evaluation form and
the HTML report.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them with apt when missing)
and the ``selenium`` package (the ``browser`` extra). Where they are not installed the tests say so
in their skip reason.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ember.evaluate.human import HumanItem, export_sheet

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver", "chromium-driver")


def _chromium(downloads: Path) -> Any:
    pytest.importorskip("selenium", reason="selenium is not installed: pip install 'ember[browser]'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    driver = next((shutil.which(name) for name in DRIVER if shutil.which(name)), None)
    if binary is None or driver is None:
        pytest.skip("no Chromium here: apt-get install chromium chromium-driver (.ci/run does it on CI)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # a private profile: the form's saved answers live there for the whole test, and nowhere else
    options.add_argument(f"--user-data-dir={downloads.parent / 'profile'}")
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "downloads").mkdir()
    driver = _chromium(tmp_path / "downloads")
    try:
        yield driver
    finally:
        driver.quit()


def _rendered(browser: Any, timeout: float = 20.0) -> None:
    """Wait until the form's script has restored the answers and drawn the page (it fills ``#progress``).

    Chromedriver can return from ``get`` or ``refresh`` while the new page is still being parsed,
    when ``#rater`` exists but the script that restores it has not run yet.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(lambda d: d.find_element(By.ID, "progress").text != "")


def _reload(browser: Any) -> None:
    browser.refresh()
    _rendered(browser)


def _wait_for(folder: Path, pattern: str, timeout: float = 20.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.glob(pattern) if not p.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"nothing matching {pattern} was downloaded into {folder}")


@pytest.mark.slow
def test_form_rates_reloads_downloads_and_imports(browser: Any, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    items = [
        HumanItem(
            f"q{i}", input=f"question {i} <b>not bold</b>", outputs={"A": f"good {i}", "B": f"weak {i}"}
        )
        for i in range(6)
    ]
    sheet = export_sheet(items, tmp_path / "sheet", systems={"A": "run-a", "B": "run-b"}, seed=2)
    key = json.loads(sheet.key.read_text())
    browser.get(sheet.form.resolve().as_uri())
    _rendered(browser)
    assert browser.find_element(By.ID, "progress").text == "0 of 6 rated"
    assert not browser.find_elements(By.CSS_SELECTOR, ".input-text b")  # markup in an input is shown as text
    browser.find_element(By.ID, "rater").send_keys("dana")
    for row, entry in key["rows"].items():  # always the output of system A
        side = "1" if entry["output_1"] == "A" else "2"
        browser.find_element(By.CSS_SELECTOR, f"input[name='{row}'][value='{side}']").click()
    browser.find_elements(By.CSS_SELECTOR, "input[placeholder^='comment']")[0].send_keys('fine, "really"')
    assert browser.find_element(By.ID, "progress").text == "6 of 6 rated"

    _reload(browser)  # answers are saved in the browser: a reload keeps them
    assert browser.find_element(By.ID, "rater").get_attribute("value") == "dana"
    assert browser.find_element(By.ID, "progress").text == "6 of 6 rated"
    # Chromium sometimes hands a file:// page an empty localStorage on a reload: the tab's copy restores it
    browser.execute_script("localStorage.clear()")
    _reload(browser)
    assert browser.find_element(By.ID, "rater").get_attribute("value") == "dana"
    assert browser.find_element(By.ID, "progress").text == "6 of 6 rated"
    # of two saved copies the newer one is restored; a new tab has no sessionStorage, and then localStorage's is
    older = "localStorage.setItem(arguments[0], JSON.stringify({answers: {}, rater: 'old', at: 1}))"
    browser.execute_script(older, "ember-sheet-" + key["sheet"])
    assert browser.execute_script("return emberSheet.load().rater") == "dana"
    browser.execute_script("sessionStorage.clear()")
    assert browser.execute_script("return emberSheet.load().rater") == "old"
    checked = browser.find_elements(By.CSS_SELECTOR, "input[type='radio']:checked")
    assert {c.get_attribute("name") for c in checked} == set(key["rows"])
    assert browser.find_elements(By.CSS_SELECTOR, "input[placeholder^='comment']")[0].get_attribute(
        "value"
    ) == ('fine, "really"')

    browser.find_element(By.ID, "download").click()
    downloaded = _wait_for(tmp_path / "downloads", "ratings-dana*.csv")
    with downloaded.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["rater"] for r in rows} == {"dana"}
    out = cli("human", "import", str(downloaded), "--key", str(sheet.key), "--json").stdout
    result = json.loads(out)
    assert result["judgments"] == 6 and result["win_rate"]["A"]["estimate"] == 1.0
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


@pytest.mark.slow
def test_report_has_no_console_error_and_no_broken_image(browser: Any, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    runs = str(tmp_path / "runs")
    cli("train", "configs/digits-cnn.yaml", "trainer.epochs=1", "model.name=cnn_tiny", "--runs-dir", runs)
    out = cli("report", "latest", "--runs-dir", runs).stdout
    page = Path(out.split()[1])  # "report PATH (SIZE)"
    page = page if page.is_absolute() else Path(__file__).resolve().parents[2] / page  # the CLI ran there
    browser.get(page.resolve().as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, (i.alt || i.src).slice(0, 60)])"
    )
    assert images, "the report shows no image"
    broken = [alt for complete, width, alt in images if not complete or width == 0]
    assert not broken, f"broken images: {broken}"
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
    assert "accuracy" in browser.find_element("tag name", "body").text
