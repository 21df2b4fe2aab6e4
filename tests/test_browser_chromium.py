"""The results browser in a real headless browser: Debian's chromium, driven by selenium.

The site of test_browser.make_results is opened from file:// and from `browse`'s server: the run
page shows the matrix with the regression outlined, the filter hides and shows rows, links lead
to the cell and bisection pages, and markup in a subtest name, a detail and log lines is shown as
text, with no script of it run.

./bootstrap --test installs chromium, chromium-driver and selenium. These tests skip only where
chromium cannot be installed at all (no apt candidate); otherwise a missing browser fails them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.test_browser import EVIL_LOG, EVIL_NAME, EVIL_SUBJECT, Built, make_results

from kbisect.browser import render_site
from kbisect.browser.serve import serving

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver")


def _apt_candidate(package: str) -> bool:
    if shutil.which("apt-cache") is None:
        return False
    try:
        out = subprocess.run(
            ["apt-cache", "policy", package],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Candidate:" in out and "Candidate: (none)" not in out


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


def _chromium() -> tuple[str, str]:
    browser, driver = _find(BROWSERS), _find(DRIVERS)
    if browser and driver:
        return browser, driver
    if not _apt_candidate("chromium"):
        pytest.skip("chromium is not installable on this machine (apt has no candidate)")
    pytest.fail(
        "chromium and chromium-driver are not installed but could be: run ./bootstrap --test"
    )


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    browser, chromedriver = _chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: run ./bootstrap --test (pip install -e .[test])")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=options, service=Service(chromedriver))
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    built = make_results(tmp_path_factory.mktemp("browser"))
    render_site(built.store)
    yield built
    built.store.close()


@pytest.fixture(scope="module", params=["file", "http"])
def base(request: pytest.FixtureRequest, site: Built) -> Iterator[str]:
    """The site's root URL, from file:// and from the server `browse` runs."""
    if request.param == "file":
        yield (site.results / "site").resolve().as_uri() + "/"
        return
    with serving(site.results / "site", site.results) as server:
        yield server.url.rsplit("/", 1)[0] + "/"


def _no_script_ran(driver: object) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        text = driver.switch_to.alert.text  # type: ignore[attr-defined]
    except NoAlertPresentException:
        text = None
    assert text is None, f"an alert ran: {text!r}"
    pwned = driver.execute_script(  # type: ignore[attr-defined]
        "return document.body.getAttribute('data-pwned')"
    )
    assert pwned is None, f"injected markup ran: {pwned!r}"


def test_run_page_matrix_outlines_the_regression(driver: object, site: Built, base: str) -> None:
    from selenium.webdriver.common.by import By

    d = driver
    d.get(f"{base}run/{site.runs[1]}/index.html")  # type: ignore[attr-defined]
    matrix = d.find_element(By.ID, "matrix")  # type: ignore[attr-defined]
    rows = matrix.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 2  # vm-io and vm-mixedmap at one revision
    outlined = matrix.find_elements(By.CSS_SELECTOR, "td.out-REGRESSION")
    assert len(outlined) == 1
    cell = outlined[0]
    assert cell.value_of_css_property("outline-style") == "solid"
    assert cell.value_of_css_property("outline-width") == "3px"
    assert "REGRESSION" in cell.text and "odirect-read" in cell.text
    row = cell.find_element(By.XPATH, "./ancestor::tr")
    assert "gntdev-numa/vm-io" in row.text
    assert d.find_element(By.ID, "f-count").text == "2 of 2 rows"  # type: ignore[attr-defined]
    _no_script_ran(d)


def test_filter_hides_and_shows_rows(driver: object, site: Built, base: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = driver
    d.get(f"{base}run/{site.runs[1]}/index.html")  # type: ignore[attr-defined]
    rows = d.find_elements(By.CSS_SELECTOR, "#matrix tbody tr")  # type: ignore[attr-defined]
    text = d.find_element(By.ID, "f-text")  # type: ignore[attr-defined]
    status = Select(d.find_element(By.ID, "f-status"))  # type: ignore[attr-defined]
    cls = Select(d.find_element(By.ID, "f-class"))  # type: ignore[attr-defined]
    count = d.find_element(By.ID, "f-count")  # type: ignore[attr-defined]

    def shown() -> list[str]:
        return [r.find_element(By.CSS_SELECTOR, "th + th").text for r in rows if r.is_displayed()]

    assert shown() == ["gntdev-numa/vm-io", "gntdev-numa/vm-mixedmap"]
    text.send_keys("mixedmap")
    assert shown() == ["gntdev-numa/vm-mixedmap"] and count.text == "1 of 2 rows"
    text.clear()
    text.send_keys("ODIRECT-READ")  # a failing subtest's name, any case
    assert shown() == ["gntdev-numa/vm-io"]
    text.clear()
    text.send_keys(" ")
    text.clear()
    d.execute_script(  # type: ignore[attr-defined]
        "document.getElementById('f-text').dispatchEvent(new Event('input'))"
    )
    assert len(shown()) == 2
    status.select_by_visible_text("FAIL")
    assert shown() == ["gntdev-numa/vm-io"]
    status.select_by_visible_text("PASS")
    assert shown() == ["gntdev-numa/vm-mixedmap"]
    status.select_by_visible_text("any")
    cls.select_by_visible_text("REGRESSION")
    assert shown() == ["gntdev-numa/vm-io"]
    cls.select_by_visible_text("FIXED")
    assert shown() == [] and count.text == "0 of 2 rows"
    cls.select_by_visible_text("any")
    assert len(shown()) == 2


def test_links_lead_to_the_cell_and_the_bisection(driver: object, site: Built, base: str) -> None:
    from selenium.webdriver.common.by import By

    d = driver
    run_page = f"{base}run/{site.runs[1]}/index.html"
    d.get(run_page)  # type: ignore[attr-defined]
    link = d.find_element(  # type: ignore[attr-defined]
        By.CSS_SELECTOR, f"td.out-REGRESSION a[href='cell-{site.regressed_cell}.html']"
    )
    link.click()
    assert d.current_url.endswith(f"cell-{site.regressed_cell}.html")  # type: ignore[attr-defined]
    h1 = d.find_element(By.TAG_NAME, "h1").text  # type: ignore[attr-defined]
    assert "FAIL" in h1 and "gntdev-numa/vm-io" in h1
    subtests = d.find_element(By.ID, "subtests")  # type: ignore[attr-defined]
    assert "odirect-read" in subtests.text and "EFAULT (14)" in subtests.text
    # the evidence line leads into the second page of the console log
    d.find_element(By.PARTIAL_LINK_TEXT, "line 2100").click()  # type: ignore[attr-defined]
    assert d.current_url.endswith("-2.html#L2100")  # type: ignore[attr-defined]
    target = d.find_element(By.ID, "L2100")  # type: ignore[attr-defined]
    assert "BUG: Bad page map" in target.text

    d.get(run_page)  # type: ignore[attr-defined]
    d.find_element(By.LINK_TEXT, f"bisection {site.bisection}").click()  # type: ignore[attr-defined]
    assert d.current_url.endswith(f"bisect/{site.bisection}.html")  # type: ignore[attr-defined]
    assert "Bisection" in d.find_element(By.TAG_NAME, "h1").text  # type: ignore[attr-defined]
    culprit = d.find_element(By.ID, "culprit").text  # type: ignore[attr-defined]
    assert EVIL_SUBJECT in culprit  # shown as text
    validation = d.find_element(By.ID, "validation").text  # type: ignore[attr-defined]
    assert "culprit" in validation and "parent" in validation
    _no_script_ran(d)

    d.get(f"{base}index.html")  # type: ignore[attr-defined]
    d.find_element(By.LINK_TEXT, str(site.runs[1])).click()  # type: ignore[attr-defined]
    assert d.current_url.endswith(f"run/{site.runs[1]}/index.html")  # type: ignore[attr-defined]


def test_markup_from_kernels_and_hosts_is_text(driver: object, site: Built, base: str) -> None:
    from selenium.webdriver.common.by import By

    d = driver
    d.get(f"{base}run/{site.runs[1]}/cell-{site.regressed_cell}.html")  # type: ignore[attr-defined]
    subtests = d.find_element(By.ID, "subtests").text  # type: ignore[attr-defined]
    assert EVIL_NAME in subtests  # the test name, as text
    assert "<img src=x onerror=" in subtests  # a detail, as text
    body = d.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
    assert EVIL_LOG in body  # the log lines, as text
    assert "<script>alert('cpu')</script>" in body  # the host fingerprint
    assert d.find_elements(By.CSS_SELECTOR, "main script, main img") == []  # type: ignore[attr-defined]
    _no_script_ran(d)
    severe = [
        entry
        for entry in d.get_log("browser")  # type: ignore[attr-defined]
        if entry["level"] == "SEVERE" and "favicon" not in entry["message"]
    ]
    assert severe == []  # no script error, no Content-Security-Policy violation


def test_verdict_leads_and_charts_are_drawn(driver: object, site: Built, base: str) -> None:
    """The run page leads with its verdict, whose regression links to the subtest on its cell;
    the trends page's SVG is drawn with the stylesheet's colours, the Content-Security-Policy
    allowing it (no inline style, no script), and the bisection's steps as bars."""
    from selenium.webdriver.common.by import By

    d = driver
    d.get(f"{base}run/{site.runs[1]}/index.html")  # type: ignore[attr-defined]
    headings = [h.text for h in d.find_elements(By.TAG_NAME, "h2")]  # type: ignore[attr-defined]
    assert headings[0] == "Verdict" and headings.index("Matrix") > 0
    verdict = d.find_element(By.CSS_SELECTOR, "p.verdict")  # type: ignore[attr-defined]
    assert verdict.text.startswith("1 new regression")
    d.find_element(By.CSS_SELECTOR, "ul.findings a").click()  # type: ignore[attr-defined]
    assert d.current_url.endswith(f"cell-{site.regressed_cell}.html#t-odirect-read")  # type: ignore[attr-defined]
    assert d.title.startswith("v6.1.192-2 · vm-io · odirect-read FAIL · run")  # type: ignore[attr-defined]

    d.get(f"{base}index.html")  # type: ignore[attr-defined]
    d.find_element(By.PARTIAL_LINK_TEXT, "nightly (nightly)").click()  # type: ignore[attr-defined]
    svg = d.find_element(By.CSS_SELECTOR, "svg.chart")  # type: ignore[attr-defined]
    assert svg.size["width"] > 300 and svg.size["height"] > 20
    failed = d.find_elements(By.CSS_SELECTOR, "svg.chart rect.r0")  # type: ignore[attr-defined]
    assert failed and failed[0].value_of_css_property("fill") == "rgb(207, 34, 46)"
    assert "failing since run" in svg.text
    d.get(f"{base}bisect/{site.bisection}.html")  # type: ignore[attr-defined]
    bars = d.find_elements(By.CSS_SELECTOR, "svg.chart rect.fail")  # type: ignore[attr-defined]
    assert len(bars) == 2 and bars[0].size["height"] > 10
    _no_script_ran(d)
    severe = [
        entry
        for entry in d.get_log("browser")  # type: ignore[attr-defined]
        if entry["level"] == "SEVERE" and "favicon" not in entry["message"]
    ]
    assert severe == []
