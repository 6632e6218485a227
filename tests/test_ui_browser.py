"""The dashboard driven by a real headless browser (Debian's chromium + chromedriver through selenium; nothing is
downloaded at run time): every page against a real SQLite store filled by `mcp-prism demo` and
`import-outcomes`, the figures shown compared with the CLI's `--json` output on the same store, a blind rating
done to completion with the keyboard by two raters, the HTML report opened from a file.

Screenshots go to tmp_path (and to PRISM_UI_SHOTS, when set, e.g. docs/ for the README)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

STRONG, WEAK = "claude-sonnet-4-5", "claude-haiku-4-5"
ITEMS = 6


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run the real CLI on the test's store; with --json, its parsed output."""
    out = subprocess.run([sys.executable, "-m", "mcp_prism", *args, "--db", str(home / "demo.db")],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PRISM_HOME": str(home), **(env or {})})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if "--json" in args else out.stdout


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("ui-home")
    subprocess.run([sys.executable, "-m", "mcp_prism", "demo", "--home", str(home), "--requests", "3000"],
                   check=True, capture_output=True, timeout=300, env={**os.environ, "PRISM_HOME": str(home)})
    rows = [{"prompt": f"Summarise change {n}: rename `f{n}` to `g{n}`", STRONG: 1, WEAK: 1 if n % 3 else 0,
             f"{STRONG}_response": f"Renames f{n} to g{n} across the module.",
             f"{WEAK}_response": f"f{n} is now g{n}." if n % 3 else "I cannot tell."} for n in range(1, ITEMS + 1)]
    data = home / "code_review_outcomes.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cli(home, "import-outcomes", str(data), "--task-type", "code_review")
    return home


@pytest.fixture(scope="module")
def experiment_id(home: Path) -> str:
    listing = cli(home, "experiment", "list", "--json")
    return listing["experiments"][0]["id"]


def _serve(home: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mcp_prism", "ui", "--db", str(home / "demo.db"), "--port",
                             str(port), *extra], env={**os.environ, "PRISM_HOME": str(home), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(base + "/static/style.css", timeout=1)
            break
        except httpx.HTTPError:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.05)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[str]:
    yield from _serve(home)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    opts = Options()
    opts.binary_location = CHROMIUM or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER or ""), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def shot(browser: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    if os.environ.get("PRISM_UI_SHOTS"):
        shutil.copy(path, Path(os.environ["PRISM_UI_SHOTS"]) / f"ui-{name}.png")
    return path


def value(browser: Any, test_id: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, f'[data-testid="{test_id}"]').get_attribute("data-v")


def table_rows(browser: Any, test_id: str) -> list[list[Any]]:
    """Each row's cells: the exact data-v of a figure, else the cell's text."""
    out = []
    for tr in browser.find_elements(By.CSS_SELECTOR, f'table[data-testid="{test_id}"] tbody tr'):
        cells = []
        for td in tr.find_elements(By.TAG_NAME, "td"):
            fig = td.find_elements(By.CSS_SELECTOR, "[data-v]")
            cells.append(fig[0].get_attribute("data-v") if fig else td.text)
        out.append(cells)
    return out


def charts_drawn(browser: Any) -> int:
    WebDriverWait(browser, 10).until(lambda b: b.execute_script("return typeof Chart !== 'undefined'"))
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('canvas')).filter(c => Chart.getChart(c)).length")


def dec(v: Any) -> Decimal | None:
    return None if v in (None, "") else Decimal(str(v))


# ==================================================================== pages vs the CLI's --json
@pytest.mark.parametrize("by", ["task_type", "model"])
def test_costs_page_equals_report_json(home: Path, server: str, browser: Any, tmp_path: Path, by: str) -> None:
    report = cli(home, "report", "--by", by, "--json")
    browser.get(f"{server}/costs?by={by}")
    assert dec(value(browser, "total-cost")) == dec(report["total_cost_usd"]) > 0
    assert int(value(browser, "total-requests")) == report["total_requests"]
    assert dec(value(browser, "monthly-now")) == dec(report["monthly_projection_usd"])
    assert dec(value(browser, "monthly-saving")) == dec(report["monthly_saving_usd"])
    assert int(value(browser, "cache-hits")) == report["cache_hits"]
    shown = {r[0]: (int(r[1]), dec(r[2])) for r in table_rows(browser, "cost-groups")}
    assert shown == {g["key"][by]: (g["requests"], dec(g["cost_usd"])) for g in report["groups"]}
    opportunities = table_rows(browser, "opportunities")
    assert [(o[0], dec(o[6])) for o in opportunities] == [(o["task_type"], dec(o["monthly_saving_usd"]))
                                                          for o in report["opportunities"]]
    assert charts_drawn(browser) == 2
    shot(browser, tmp_path, "costs" if by == "task_type" else "costs-by-model")


def test_costs_filters_match_the_cli(home: Path, server: str, browser: Any) -> None:
    report = cli(home, "report", "--by", "model", "--days", "7", "--task-type", "code_review", "--json")
    browser.get(f"{server}/costs?by=model&days=7&task_type=code_review")
    assert dec(value(browser, "total-cost")) == dec(report["total_cost_usd"])
    assert int(value(browser, "total-requests")) == report["total_requests"]
    browser.get(f"{server}/costs?days=lots")
    assert "days must be a whole number" in browser.find_element(By.CSS_SELECTOR, '[data-testid="error"]').text


def test_matrix_page_equals_analyze_json(home: Path, server: str, browser: Any, tmp_path: Path) -> None:
    a = cli(home, "analyze", "--json")
    browser.get(f"{server}/matrix")
    assert dec(value(browser, "matrix-now")) == dec(a["monthly_cost_now_usd"])
    assert dec(value(browser, "matrix-saving")) == dec(a["monthly_saving_usd"])
    assert dec(value(browser, "matrix-potential")) == dec(a["potential_monthly_saving_usd"])
    rows = table_rows(browser, "matrix")
    assert [(r[0], r[4], dec(r[5]), dec(r[7])) for r in rows] == [
        (t["task_type"], t["recommended_model"] or "-", dec(t["monthly_cost_now_usd"]), dec(t["monthly_saving_usd"]))
        for t in a["rows"]]
    hyps = table_rows(browser, "hypotheses")
    assert [h[4] for h in hyps] == [h["command"] for h in a["hypotheses"]]  # the command that tests each one
    assert charts_drawn(browser) == 1
    shot(browser, tmp_path, "matrix")


def test_experiment_page_equals_report_json(home: Path, server: str, browser: Any, tmp_path: Path,
                                            experiment_id: str) -> None:
    r = cli(home, "experiment", "report", experiment_id, "--json")
    browser.get(f"{server}/experiments")
    assert [row[0] for row in table_rows(browser, "experiments")] == [experiment_id]
    browser.find_element(By.LINK_TEXT, experiment_id).click()
    rows = table_rows(browser, "candidates")
    c = r["candidates"][0]
    assert rows[0][0] == c["model"] and rows[0][1] == c["verdict"]
    assert (float(rows[0][2]), float(rows[0][3]), float(rows[0][4])) == (c["rate"], c["lower_bound"], c["threshold"])
    assert dec(rows[0][7]) == dec(c["cost_per_request_usd"])
    assert len(browser.find_elements(By.CSS_SELECTOR, "details.fail")) == len(r["failed_examples"]) > 0
    assert charts_drawn(browser) == 1
    shot(browser, tmp_path, "experiment")
    # promote from the page: the service refuses a candidate that did not qualify, and says why
    rules_before = cli(home, "rules", "show", "code_review", "--json")
    form = browser.find_element(By.CSS_SELECTOR, 'form[action$="/promote"]')
    form.find_element(By.NAME, "author").send_keys("lee")
    form.find_element(By.NAME, "reason").send_keys("cheaper")
    form.find_element(By.TAG_NAME, "button").click()
    error = browser.find_element(By.CSS_SELECTOR, '[data-testid="error"]').text
    assert f"{c['model']} is not qualified in experiment {experiment_id}" in error
    assert cli(home, "rules", "show", "code_review", "--json") == rules_before


# ==================================================================== rating, blind, with the keyboard
def rate_all(browser: Any, url: str, keys: list[str]) -> list[str]:
    """Rate every pair by pressing keys[i % len(keys)]; returns the answer texts seen (left|right)."""
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(url)
    root = browser.find_element(By.ID, "rate")
    seen = []
    for n in range(100):
        WebDriverWait(browser, 10).until(lambda b: root.get_attribute("data-state") in ("ready", "done"))
        if root.get_attribute("data-state") == "done":
            return seen
        seen.append(browser.find_element(By.ID, "first").text + "|" + browser.find_element(By.ID, "second").text)
        ActionChains(browser).send_keys(keys[n % len(keys)]).perform()
        WebDriverWait(browser, 10).until(lambda b: root.get_attribute("data-state") != "saving")
    raise AssertionError("rating never finished")


def test_rating_to_completion_with_the_keyboard(home: Path, server: str, browser: Any, tmp_path: Path,
                                                experiment_id: str) -> None:
    ann = cli(home, "ui", "rater-link", experiment_id, "--rater", "ann", "--base-url", server, "--json")
    bob = cli(home, "ui", "rater-link", experiment_id, "--rater", "bob", "--base-url", server, "--json")
    assert ann["token"] not in (home / "demo.db").read_bytes().decode("latin-1")  # only its hash is stored
    # ann rates two pairs, leaves, and resumes where she stopped
    browser.get(server + ann["path"])
    root = browser.find_element(By.ID, "rate")
    WebDriverWait(browser, 10).until(lambda b: root.get_attribute("data-state") == "ready")
    shot(browser, tmp_path, "rating")
    page_text = browser.find_element(By.TAG_NAME, "body").text
    for name in (STRONG, WEAK, "baseline", "candidate"):
        assert name not in page_text  # blind: nothing says which model wrote which answer
    from selenium.webdriver.common.action_chains import ActionChains

    for _ in range(2):
        ActionChains(browser).send_keys("2").perform()
        WebDriverWait(browser, 10).until(lambda b: root.get_attribute("data-state") == "ready")
    assert browser.find_element(By.ID, "progress").text == f"2 of {ITEMS} rated"
    seen_ann = rate_all(browser, server + ann["path"], ["2"])  # resumed: 4 left
    assert len(seen_ann) == ITEMS - 2
    assert browser.find_element(By.ID, "progress").text == f"{ITEMS} of {ITEMS} rated"
    shot(browser, tmp_path, "rating-done")
    seen_bob = rate_all(browser, server + bob["path"], ["2", "4", "2"])
    assert len(seen_bob) == ITEMS

    progress = cli(home, "evaluate", "progress", experiment_id, "--json")
    assert progress["rated"] == ITEMS and {r["rater"]: r["rated"] for r in progress["raters"]} == {"ann": ITEMS,
                                                                                                   "bob": ITEMS}
    # the owner sees both raters' agreement
    browser.get(f"{server}/experiments/{experiment_id}")
    kappa = table_rows(browser, "kappa")
    assert [(k[0], k[1], int(k[2])) for k in kappa] == [("ann", "bob", ITEMS)]
    assert kappa[0][4] != ""  # ann said "same" throughout, bob did not: kappa is defined (0 here)
    shot(browser, tmp_path, "experiment-rated")


def test_a_rater_link_opens_its_rating_page_only(home: Path, server: str, experiment_id: str) -> None:
    link = cli(home, "ui", "rater-link", experiment_id, "--rater", "cy", "--json")
    with httpx.Client(base_url=server) as c:
        assert c.get(link["path"]).status_code == 200
        assert c.get(link["path"][:-2] + "xx").status_code == 404  # wrong secret
        nxt = c.get(link["path"] + "/next").json()
        assert nxt["first"] and STRONG not in json.dumps(nxt)
        bad = c.post(link["path"] + "/submit", json={"token": "other:1:abc", "rating": "same"},
                     headers={"Origin": server})
        assert bad.status_code == 400 and "not part of the experiment" in bad.json()["error"]
        cross = c.post(link["path"] + "/submit", json={"token": nxt["token"], "rating": "same"},
                       headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        cli(home, "ui", "rater-revoke", link["link"]["id"])
        assert c.get(link["path"]).status_code == 404


# ==================================================================== rules: history, diff, rollback
def test_rules_page_and_rollback(home: Path, server: str, browser: Any, tmp_path: Path) -> None:
    rule = home / "rule.json"
    rule.write_text(json.dumps({"task_type": "doc_generation", "primary": STRONG}))
    cli(home, "rules", "set", str(rule), "--author", "dana", "--reason", "sonnet writes better docs")
    browser.get(f"{server}/rules")
    rows = {r[0]: r for r in table_rows(browser, "rules")}
    assert rows["doc_generation"][2] == STRONG and rows["doc_generation"][4] == "dana"
    section = browser.find_element(By.ID, "rule-doc_generation")
    assert f'+  "primary": "{STRONG}"' in section.find_elements(By.CSS_SELECTOR, "pre.diff")[-1].text
    shot(browser, tmp_path, "rules")
    form = section.find_element(By.TAG_NAME, "form")
    form.find_element(By.NAME, "to").send_keys("0")
    form.find_element(By.NAME, "author").send_keys("erin")
    form.find_element(By.NAME, "reason").send_keys("back to the default after a complaint")
    form.find_element(By.TAG_NAME, "button").click()
    WebDriverWait(browser, 10).until(lambda b: "/rules" in b.current_url)
    history = cli(home, "rules", "history", "doc_generation", "--json")
    newest = max(history["versions"], key=lambda v: v["version"])
    assert newest["author"] == "erin" and newest["reason"] == "back to the default after a complaint"
    assert newest["rule"]["primary"] != STRONG


# ==================================================================== auth off loopback, the HTML report
def test_sign_in_with_admin_token_or_virtual_key(home: Path, experiment_id: str) -> None:
    key = cli(home, "keys", "create", "--team", "platform", "--json")["secret"]
    for base in _serve(home, "--require-login", env={"PRISM_GATEWAY_TOKEN": "admin-secret"}):
        with httpx.Client(base_url=base) as c:
            assert c.get("/costs").status_code == 303  # to /login
            link = cli(home, "ui", "rater-link", experiment_id, "--rater", "dee", "--json")
            assert c.get(link["path"]).status_code == 200  # a rater needs no sign-in for their page...
            assert c.get("/costs", headers={"Authorization": f"Bearer {link['token']}"}).status_code == 303  # ...only
            assert c.get("/costs", headers={"Authorization": "Bearer admin-secret"}).status_code == 200
            viewer = c.get("/costs", headers={"Authorization": f"Bearer {key}"})
            assert viewer.status_code == 200 and "your key&#x27;s team: platform" in viewer.text
            denied = c.post(f"/experiments/{experiment_id}/rater-link", data={"rater": "x"},
                            headers={"Authorization": f"Bearer {key}", "Origin": base})
            assert denied.status_code == 403  # a key views; only the admin token changes things
            login = c.post("/login", data={"token": "admin-secret"}, headers={"Origin": base})
            assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()


def test_html_report_is_self_contained(home: Path, browser: Any, tmp_path: Path) -> None:
    target = tmp_path / "costs.html"
    report = cli(home, "report", "--html", str(target), "--json")
    html = target.read_text()
    assert "src=\"http" not in html and "href=\"http" not in html and "<script src" not in html
    browser.get(target.as_uri())
    assert dec(value(browser, "total-cost")) == dec(report["total_cost_usd"])
    assert charts_drawn(browser) == 2
    shot(browser, tmp_path, "html-report")
