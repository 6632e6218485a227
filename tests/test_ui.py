"""The dashboard's parts without a browser: Cohen's kappa, the Host/Origin and sign-in rules, rater links'
SQL on SQLite and PostgreSQL, `report --html` input errors. (The pages themselves: test_ui_browser.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_prism.core.agreement import cohen_kappa, pairwise
from mcp_prism.store import rater_links
from mcp_prism.ui.auth import bearer, host_problem, is_admin, same_origin
from tests.test_store import store  # noqa: F401  (the fixture: SQLite, and PostgreSQL when reachable)


def test_cohen_kappa_textbook_example() -> None:
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["y", "n"], ["y", "n"]) == pytest.approx(1.0)
    assert cohen_kappa(["y", "y"], ["y", "y"]) is None  # one label throughout: chance agreement is total
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["y"], [])


def test_pairwise_uses_only_items_both_rated() -> None:
    labels = {1: {"ann": "acceptable", "bob": "acceptable", "cy": "degraded"},
              2: {"ann": "degraded", "bob": "degraded"},
              3: {"ann": "acceptable"}}
    by = {(p.rater_a, p.rater_b): p for p in pairwise(labels)}
    assert by[("ann", "bob")].shared == 2 and by[("ann", "bob")].kappa == pytest.approx(1.0)
    assert by[("ann", "cy")].shared == 1 and by[("ann", "cy")].kappa is None  # one shared item: undefined
    assert by[("ann", "cy")].observed == 0.0


@pytest.mark.parametrize(("host", "origin", "open_mode", "refused"), [
    ("127.0.0.1:4100", None, True, False),
    ("localhost:4100", "http://localhost:4100", True, False),
    ("[::1]:4100", None, True, False),
    ("evil.example:4100", None, True, True),  # DNS rebinding onto an open dashboard
    ("127.0.0.1:4100", "http://evil.example", True, True),  # another site's page
    ("127.0.0.1:4100", "file://x", True, True),
    ("dash.example", "https://dash.example", False, False),  # with credentials, any name
    ("team.internal:4100", None, True, False),  # a name given with --allowed-host
])
def test_host_and_origin_checks(host: str, origin: str | None, open_mode: bool, refused: bool) -> None:
    why = host_problem(host, origin, open_mode=open_mode, allowed=frozenset({"team.internal"}))
    assert (why is not None) is refused, why


def test_post_origin_and_credentials() -> None:
    assert same_origin("127.0.0.1:4100", "http://127.0.0.1:4100")
    assert not same_origin("127.0.0.1:4100", "http://127.0.0.1:4101")
    assert not same_origin("127.0.0.1:4100", None)
    assert bearer("Bearer abc", "cookie") == "abc" and bearer(None, "cookie") == "cookie" and bearer(None, None) is None
    assert is_admin("s3cret", "s3cret") and not is_admin("s3cret", None) and not is_admin("x", "s3cret")


@pytest.mark.anyio
async def test_rater_link_rows_on_both_backends(store) -> None:  # noqa: F811
    await rater_links.insert(store, link_id="abc", digest="d" * 64, experiment_id="exp-1", rater="ann",
                             created_by="cli", created_at="2026-12-01T00:00:00Z")
    row = await rater_links.get(store, "abc")
    assert (row["experiment_id"], row["rater"], row["hash"], row["revoked_at"]) == ("exp-1", "ann", "d" * 64, None)
    assert [r["id"] for r in await rater_links.for_experiment(store, "exp-1")] == ["abc"]
    assert await rater_links.revoke(store, "abc", "2026-12-02T00:00:00Z")
    assert not await rater_links.revoke(store, "abc", "2026-12-03T00:00:00Z")  # already revoked
    assert (await rater_links.get(store, "abc"))["revoked_at"] == "2026-12-02T00:00:00Z"
    assert await rater_links.get(store, "nope") is None


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_prism", *args, "--home", str(home)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PRISM_HOME": str(home)})


def test_rater_link_cli_errors_and_secret_hashing(tmp_path: Path) -> None:
    out = _cli(tmp_path, "ui", "rater-link", "no-such-exp", "--rater", "ann")
    assert out.returncode == 2 and "no-such-exp" in out.stderr and "Traceback" not in out.stderr
    out = _cli(tmp_path, "ui", "rater-revoke", "nope")
    assert out.returncode == 2 and "nope" in out.stderr


def test_report_html_refuses_bad_targets(tmp_path: Path) -> None:
    bad = ((tmp_path / "notes.txt", "ending in .html"), (tmp_path / "x" / "r.html", "does not exist"))
    for target, fragment in bad:
        out = _cli(tmp_path, "report", "--html", str(target))
        assert out.returncode == 2 and fragment in out.stderr, out.stderr
        assert not target.exists()
    out = _cli(tmp_path, "report", "--html", str(tmp_path / "empty.html"), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["total_requests"] == 0
    assert "no usage recorded" in (tmp_path / "empty.html").read_text()
