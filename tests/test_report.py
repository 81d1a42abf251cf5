"""The HTML report (``metabench report``): self-contained, escaped, complete, and working in a real browser.

The browser test opens the report of the committed ``results/`` in headless Chromium through selenium
(Debian's ``chromium`` and ``chromium-driver``, which ``scripts/install-chromium.sh`` installs and
``.ci/run`` calls), and skips, saying what is missing, where they are not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabench import compare, results
from metabench import report as reporting
from metabench.cli import app

REPO = Path(__file__).resolve().parents[1]
#: the committed results, named as a user in the repository would name them (the report shows the path)
COMMITTED = Path("results") if Path.cwd() == REPO else REPO / "results"
runner = CliRunner()


@pytest.fixture(scope="module")
def committed_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the committed results, written once for this module (about 10 s on one core)."""
    return reporting.write([COMMITTED], tmp_path_factory.mktemp("report") / "report.html")


def _copy_result(source: Path, folder: Path, **changes: object) -> Path:
    data = json.loads(source.read_text(encoding="utf-8"))
    data.update(changes)
    target = folder / source.parent.name / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data), encoding="utf-8")
    for name in data.get("figures") or []:
        shutil.copy(source.with_name(name), target.with_name(name))
    return target


def test_report_is_self_contained(committed_report: Path) -> None:
    text = committed_report.read_text(encoding="utf-8")
    # nothing is fetched: no external script, style, image, font or frame
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text)
    assert "@import" not in text
    assert '<link rel="stylesheet"' not in text
    # every image is inline
    sources = re.findall(r'<img src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/") for s in sources)


def test_report_lists_every_committed_result_with_its_verdict(committed_report: Path) -> None:
    text = committed_report.read_text(encoding="utf-8")
    frame = compare.load_frame([COMMITTED])
    for path in results.find([COMMITTED]):
        assert f'data-path="{path}"' in text, path
    for row in frame.itertuples():
        marker = f'data-verdict="{row.verdict}" data-profile="{row.profile}" data-path="{row.path}"'
        assert marker in text, (row.path, row.verdict)


def test_report_inlines_figures_curves_settings_and_provenance(committed_report: Path) -> None:
    text = committed_report.read_text(encoding="utf-8")
    sinusoid = next(COMMITTED.glob("maml/sinusoid-5shot__*.json"))
    data = results.read(sinusoid)
    figure = sinusoid.with_name(data["figures"][0]).read_bytes()
    import base64

    assert base64.b64encode(figure).decode() in text  # the run's figure, inlined byte for byte
    assert f"learning curve of maml {data['benchmark']}" in text
    for value in (data["command"], data["git"]["commit"], data["test_episodes"]["digest"], data["created"]):
        assert value in text
    assert "<th>lr</th>" in text and "<th>meta_batch</th>" in text  # hyperparameters
    assert "reported by the paper" in text and "reproduced here" in text
    assert "Model-Agnostic Meta-Learning" in text  # the paper's citation beside its table


def test_strings_from_a_result_are_escaped(tmp_path: Path) -> None:
    source = next(COMMITTED.glob("protonet/omniglot-5w1s__*.json"))
    _copy_result(source, tmp_path, command="metabench run <script>alert('x')</script> --seed 0")
    text = reporting.render([tmp_path])
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text


def test_seeds_are_aggregated(tmp_path: Path) -> None:
    source = next(COMMITTED.glob("protonet/omniglot-5w1s__*.json"))
    first = _copy_result(source, tmp_path)
    data = json.loads(first.read_text(encoding="utf-8"))
    data["seed"] = 1
    first.with_name(first.name.replace("seed0", "seed1")).write_text(json.dumps(data), encoding="utf-8")
    text = reporting.render([tmp_path])
    table = text[text.index('<table id="seeds">') :]
    assert "<td class='num'>2</td>" in table.split("</table>")[0]


def test_report_command_writes_the_file_and_refuses_an_empty_folder(tmp_path: Path) -> None:
    source = next(COMMITTED.glob("protonet/omniglot-5w1s__*.json"))
    _copy_result(source, tmp_path / "res")
    output = tmp_path / "out" / "r.html"
    result = runner.invoke(app, ["report", str(tmp_path / "res"), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert str(output) in result.stdout
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["report", str(tmp_path / "empty"), "--output", str(tmp_path / "e.html")])
    assert empty.exit_code == 2 and "no results found" in empty.output
    assert not (tmp_path / "e.html").exists()


# --------------------------------------------------------------------------- in a real browser


def _browser_missing() -> str:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (run scripts/install-chromium.sh)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    return ""


@pytest.fixture(scope="module")
def browser():
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1600,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(shutil.which("chromedriver"))), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _column(driver, name: str) -> int:
    from selenium.webdriver.common.by import By

    headers = driver.find_elements(By.CSS_SELECTOR, "#results thead th")
    return [h.get_attribute("data-column") for h in headers].index(name)


def _visible_rows(driver) -> list:
    from selenium.webdriver.common.by import By

    return [r for r in driver.find_elements(By.CSS_SELECTOR, "#results tbody tr") if r.is_displayed()]


@pytest.mark.browser
def test_report_in_headless_chromium(browser, committed_report: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(committed_report.as_uri())
    assert browser.title == "metabench report"

    # every committed result appears, with the verdict the comparison gives it, in the rendered DOM
    frame = compare.load_frame([COMMITTED])
    verdict_at = _column(browser, "verdict")
    shown: dict[str, list[str]] = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr"):
        shown.setdefault(row.get_attribute("data-path"), []).append(
            row.find_elements(By.TAG_NAME, "td")[verdict_at].text
        )
    assert set(shown) == {str(p) for p in results.find([COMMITTED])}
    for path, group in frame.groupby("path"):
        assert shown[path] == list(group["verdict"]), path
    assert len(_visible_rows(browser)) == len(frame)

    # every inline image decoded
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);"
    )
    assert broken == []
    # nothing was fetched from the network
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'));"
    )
    assert fetched == []

    # sorting: by the reproduced mean, ascending then descending; by paper as text
    at = _column(browser, "reproduced")
    header = browser.find_elements(By.CSS_SELECTOR, "#results thead th")[at]

    def keys(index: int) -> list[str]:
        return [
            r.find_elements(By.TAG_NAME, "td")[index].get_attribute("data-sort")
            for r in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        ]

    def finite(key: str) -> bool:
        return key not in ("", "inf", "-inf", "nan")

    def numbers(sort_keys: list[str]) -> list[float]:
        """The finite keys; a diverged mean (NaN, inf) is not a number to sort by and comes after them."""
        return [float(k) for k in sort_keys if finite(k)]

    header.click()
    ascending_keys = keys(at)
    ascending = numbers(ascending_keys)
    assert not any(finite(k) for k in ascending_keys[len(ascending) :]), "non-finite means sort last"
    assert ascending == sorted(ascending) and ascending != [float(m) for m in frame["mean"] if m == m]
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    descending = numbers(keys(at))
    assert descending == sorted(ascending, reverse=True)
    paper_at = _column(browser, "paper")
    browser.find_elements(By.CSS_SELECTOR, "#results thead th")[paper_at].click()
    papers = [r.find_elements(By.TAG_NAME, "td")[paper_at].text for r in _visible_rows(browser)]
    assert papers == sorted(papers, key=str.lower)

    # filtering by paper, then by verdict too
    Select(browser.find_element(By.ID, "filter-paper")).select_by_value("maml")
    rows = _visible_rows(browser)
    assert rows and {r.get_attribute("data-paper") for r in rows} == {"maml"}
    assert len(rows) == int((frame["paper"] == "maml").sum())
    assert browser.find_element(By.ID, "shown-count").text == str(len(rows))
    verdict = rows[0].get_attribute("data-verdict")
    Select(browser.find_element(By.ID, "filter-verdict")).select_by_value(verdict)
    expected = int(((frame["paper"] == "maml") & (frame["verdict"] == verdict)).sum())
    assert len(_visible_rows(browser)) == expected
    Select(browser.find_element(By.ID, "filter-paper")).select_by_value("")
    Select(browser.find_element(By.ID, "filter-verdict")).select_by_value("")

    # no console error (a failed script, a refused resource) while loading, sorting and filtering
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == []

    browser.refresh()  # the screenshot shows the report as it opens
    screenshot = Path(os.environ.get("METABENCH_REPORT_SCREENSHOT") or tmp_path / "report.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
