"""The one typed config (issue 12.8, 12.9, 12.14): unknown keys refused with their path and the valid names,
`mcp-prism config check`, the shipped JSON Schema, and a gateway whose start-up fails exits instead of hanging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

from mcp_prism.config import Settings, shipped_catalog_data
from mcp_prism.core.config_schema import config_json_schema, config_json_schema_text, parse_config
from mcp_prism.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
README_CONFIG_START = "```toml\n[models.\"claude-sonnet-4-5\"]"


def _cli(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env["PRISM_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "mcp_prism", *args], cwd=home, env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.mark.parametrize(("toml", "needles"), [
    ("[gatway]\nupstream_timeout_seconds = 5\n", ["the top level: unknown setting(s) gatway", "did you mean gateway",
                                                  "known: alerts, aliases"]),
    ('[models."claude-sonnet-4-5"]\ndiscont = "0.1"\n', ["models.claude-sonnet-4-5: unknown setting(s) discont",
                                                         "did you mean discount"]),
    ('[gateway.retries]\nattempts = "three"\n', ["gateway.retries.attempts must be a whole number from 1 to 10, "
                                                 "not 'three'"]),
    ("[cache]\nsemantic = true\n", ["cache.semantic", "not available"]),
    ("[routing]\nclassifier_threshold = 2\n", ["routing.classifier_threshold must be a number between 0 and 1"]),
    ('[providers.openai]\napi_key = "sk-secret"\n', ["providers.openai", "api_key_env"]),
    ('[monitoring]\nregression_test = "sideways"\n', ["monitoring.regression_test must be upper_bound or lower_bound"]),
    ("[analysis]\nrework_burst = 1.5\n", ["analysis.rework_burst must be a whole number"]),
    ('[batch]\ninterval_seconds = "1h"\n', ["batch.interval_seconds"]),
    ('[alerts]\nwebhook_url = "ftp://x"\n', ["alerts.webhook_url must be an http:// or https:// URL"]),
    ("gateway = 3\n", ["gateway must be a table"]),
])
def test_a_bad_config_file_names_the_key_and_what_it_must_be(tmp_path: Path, toml: str, needles: list[str]) -> None:
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigError) as e:
        Settings.from_env({}, home=tmp_path)
    for needle in needles:
        assert needle in str(e.value)
    assert str(tmp_path / "config.toml") in str(e.value)
    assert "sk-secret" not in str(e.value)  # a key put in the file is not echoed back


def test_every_problem_is_listed_at_once_and_long_input_is_cut() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"gatway": {}, "routing": {"default_task_type": 3}, "cache": {"ttl_seconds": "x" * 10_000}})
    text = str(e.value)
    assert "3 problems" in text and "gatway" in text and "routing.default_task_type" in text
    assert len(text) < 1500  # 10,000 characters of input are not echoed


def test_good_configs_load_and_keep_only_what_the_file_set(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    start = readme.index(README_CONFIG_START) + len("```toml\n")
    (tmp_path / "config.toml").write_text(readme[start:readme.index("```", start)])
    s = Settings.from_env({}, home=tmp_path)  # the README's own example is a valid config
    assert s.config.gateway and s.config.gateway.upstream_timeout_seconds == 300
    assert s.user_config["models"]["claude-sonnet-4-5"] == {"discount": "0.15"}
    assert s.upstream_timeout == 300 and s.classifier_threshold is None and s.default_task_type == "general"
    parse_config(shipped_catalog_data())  # the shipped catalog holds to the same schema


def test_the_json_schema_ships_and_matches_the_model() -> None:
    shipped = (REPO / "mcp_prism" / "data" / "config.schema.json").read_text()
    assert shipped == config_json_schema_text(), "regenerate it: mcp-prism config schema > mcp_prism/data/..."
    schema = config_json_schema()
    assert schema["additionalProperties"] is False and "gateway" in schema["properties"]
    retries = schema["$defs"]["RetriesConfig"]
    assert retries["additionalProperties"] is False and "attempts" in retries["properties"]


def test_config_check_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[gatway]\n[models."claude-sonnet-4-5"]\ndiscont = "0.1"\n')
    r = _cli("config", "check", "--file", str(bad), home=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "gatway" in r.stderr and "discont" in r.stderr and "2 problems" in r.stderr
    good = tmp_path / "good.toml"
    good.write_text('[cache]\ntask_types = ["ticket_classification"]\n')
    r = _cli("config", "check", "--file", str(good), home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "config OK" in r.stdout and "response cache for 1 task type" in r.stdout
    # cross-table problems found too: a cache for a task type that does not exist
    good.write_text('[cache]\ntask_types = ["nope"]\n')
    r = _cli("config", "check", "--file", str(good), home=tmp_path)
    assert r.returncode == 2 and "unknown task types ['nope']" in r.stderr
    r = _cli("config", "check", "--file", str(tmp_path / "missing.toml"), home=tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr
    r = _cli("config", "schema", home=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["title"] == "mcp_prism config.toml"


def test_a_broken_config_stops_the_cli_not_only_the_gateway(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[gatway]\nupstream_timeout_seconds = 5\n')
    r = _cli("report", home=tmp_path)
    assert r.returncode == 2 and "gatway" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("toml", ['[gateway.retries]\nattempts = "three"\n', "[cache]\nsemantic = true\n"])
def test_a_gateway_with_a_bad_config_exits_non_zero_instead_of_hanging(tmp_path: Path, toml: str) -> None:
    (tmp_path / "config.toml").write_text(toml)
    r = _cli("gateway", "--no-auth", "--port", str(free_port()), home=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and ("attempts" in r.stderr or "semantic" in r.stderr)


def test_a_gateway_whose_startup_fails_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "prism.db").write_bytes(b"this is not a database" * 500)  # start-up fails after the port is bound
    r = _cli("gateway", "--no-auth", "--port", str(free_port()), home=tmp_path, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "could not start" in r.stderr
