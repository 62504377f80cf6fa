"""`snakemake --report` gives a self-contained HTML report whose figures render in a real browser."""

from __future__ import annotations

import shutil
import time

import pytest

from conftest import need, run_snakemake


@pytest.fixture(scope="module")
def report(clone):
    out = clone / "report.html"
    run_snakemake(clone, "--report", str(out), configfile=None, snakefile=clone / "Snakefile")
    return out


def test_report_is_self_contained(report):
    html = report.read_text()
    assert "accuracy_by_pooling.png" in html and "pooling_stats.csv" in html
    assert "src=\"http" not in html  # nothing loaded from the network


PNG_SIGNATURE = "%89%50%4E%47%0D%0A%1A%0A"  # a figure's first bytes, percent-encoded as the first page inlines them


def test_first_page_shows_every_figure_and_the_headline_tables(report, clone):
    html = report.read_text()
    figures = sorted((clone / "results" / "figures").glob("*.png"))
    assert figures and html.count(PNG_SIGNATURE) == len(figures)
    # The headline tables' headers (pooling_stats.csv, regime_ladder.csv) as table text, not only as downloads.
    assert "accuracy_sd" in html and "gap_holm_p" in html


def test_report_figures_render_in_headless_chromium(report):
    need(shutil.which("chromium") is not None and shutil.which("chromedriver") is not None,
         "chromium and chromedriver (Debian: apt-get install chromium chromium-driver) are needed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium")
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        browser.get(report.as_uri())
        time.sleep(2)
        inline = [img for img in browser.find_elements(By.TAG_NAME, "img")
                  if (img.get_attribute("src") or "").startswith("data:image/png,")]
        assert len(inline) >= 2, "the first page shows no figures"
        for img in inline:
            width = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            assert width > 200, f"{img.get_attribute('alt')} did not render on the first page (natural width {width})"
        assert len(browser.find_elements(By.TAG_NAME, "table")) >= 2, "the first page shows no tables"
        browser.find_element(By.LINK_TEXT, "Figures").click()
        time.sleep(1)
        names = [td.text for td in browser.find_elements(By.XPATH, "//tr/td[1]") if td.text.endswith(".png")]
        assert names, "no figure listed in the report"
        for name in names:
            row = browser.find_element(By.XPATH, f"//tr[contains(., '{name}')]")
            row.find_element(By.XPATH, ".//a[@iconname='eye']").click()
            time.sleep(1)
            shown = [img for img in browser.find_elements(By.TAG_NAME, "img")
                     if name.rsplit("/", 1)[-1] in (img.get_attribute("src") or "")]
            assert shown, f"{name} is not displayed"
            width = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", shown[0])
            assert width > 200, f"{name} did not render (natural width {width})"
    finally:
        browser.quit()
