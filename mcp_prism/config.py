"""Settings: where the store lives and what the user's config file says.

Environment:
- `PRISM_HOME`    folder for the database and config (default `~/.mcp-prism`)
- `PRISM_DB`      database file (default `$PRISM_HOME/prism.db`)
- `PRISM_CONFIG`  config file (default `$PRISM_HOME/config.toml`, optional)
- `PRISM_DATABASE_URL`  `postgresql://...`: the store lives in PostgreSQL (for several gateway replicas);
                  without it the embedded SQLite file is used

The config file (TOML) may hold `[models.*]`, `[aliases]`, `[providers.*]` layered over the shipped
catalog, `[task_types.*]` for team task types (or to opt a built-in type into sample capture), and
`[routing] default_task_type / classifier_threshold`, and `[gateway] upstream_timeout_seconds`,
`budget_lease_seconds`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from mcp_prism.core.catalog import Catalog, build_catalog
from mcp_prism.core.config_schema import PrismConfig, checked, parse_config
from mcp_prism.core.tasks import BUILTIN_TASK_TYPES, GENERAL, TASK_TYPE_NAME, TaskTypeSpec, Tier
from mcp_prism.core.text_model import TextModel
from mcp_prism.errors import ConfigError
from mcp_prism.store import is_postgres_url


def shipped_catalog_data() -> dict[str, Any]:
    return tomllib.loads(files("mcp_prism").joinpath("data/catalog.toml").read_text(encoding="utf-8"))


@cache
def shipped_classifier_model() -> TextModel:
    """The task classifier's trained weights (`data/classifier.bin`, built by tools/classifier/train.py),
    read once per process."""
    try:
        return TextModel.from_bytes(files("mcp_prism").joinpath("data/classifier.bin").read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"the shipped classifier model (mcp_prism/data/classifier.bin) cannot be loaded: {e}; "
                          "reinstall mcp-prism") from None


@dataclass
class Settings:
    home: Path
    db_path: Path
    config_path: Path | None
    user_config: dict[str, Any] = field(default_factory=dict)  # the checked layer of `config` (what the file set)
    database_url: str | None = None  # PostgreSQL; None = the SQLite file at db_path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, home: str | Path | None = None) -> Settings:
        env = os.environ if env is None else env
        home_path = Path(home or env.get("PRISM_HOME") or Path.home() / ".mcp-prism").expanduser()
        db = Path(env.get("PRISM_DB") or home_path / "prism.db").expanduser()
        cfg_env = env.get("PRISM_CONFIG")
        cfg = Path(cfg_env).expanduser() if cfg_env else home_path / "config.toml"
        if cfg_env and not cfg.exists():
            raise ConfigError(f"PRISM_CONFIG points at {cfg}, which does not exist")
        data = read_config_file(cfg).layer() if cfg.exists() else {}
        url = (env.get("PRISM_DATABASE_URL") or "").strip() or None
        if url is not None and not is_postgres_url(url):
            raise ConfigError("PRISM_DATABASE_URL must be a postgresql://user[:password]@host[:port]/db URL "
                              "(optionally ?schema=name); unset it to use the embedded SQLite file")
        return cls(home=home_path, db_path=db, config_path=cfg if cfg.exists() else None, user_config=data,
                   database_url=url)

    # ---------------------------------------------------------------- derived
    @property
    def config(self) -> PrismConfig:
        """The typed config (every table optional)."""
        return parse_config(self.user_config)

    def catalog(self) -> Catalog:
        return build_catalog(shipped_catalog_data(), checked(self.user_config))

    def task_types(self) -> dict[str, TaskTypeSpec]:
        return task_types_from_config(self.user_config)

    @property
    def default_task_type(self) -> str:
        routing = self.config.routing
        return (routing.default_task_type if routing else None) or GENERAL

    @property
    def classifier_threshold(self) -> float | None:
        """None: the model's own fallback threshold, chosen by cross-validation when it was trained."""
        routing = self.config.routing
        value = routing.classifier_threshold if routing else None
        return None if value is None else float(value)

    @property
    def budget_lease_seconds(self) -> float:
        """Seconds a killed gateway's budget reservations stay held before another gateway (or its restart)
        gives them back; a live gateway renews its lease every third of this."""
        gateway = self.config.gateway  # the range (1..3600 s) is checked by the typed config
        value = gateway.budget_lease_seconds if gateway else None
        return 30.0 if value is None else float(value)

    @property
    def upstream_timeout(self) -> float:
        """Seconds the gateway waits for a provider to start answering, and between streamed chunks."""
        gateway = self.config.gateway
        value = gateway.upstream_timeout_seconds if gateway else None
        return 300.0 if value is None else value


def read_config_file(path: Path) -> PrismConfig:
    """The one place the config file is read: TOML, then the typed check (unknown keys refused)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    return parse_config(data, f"config file {path}")


def task_types_from_config(config: Mapping[str, Any]) -> dict[str, TaskTypeSpec]:
    config = checked(config)
    types = {t.name: t for t in BUILTIN_TASK_TYPES}
    for name, raw in (config.get("task_types") or {}).items():
        where = f"task_types.{name}"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a table")
        if not TASK_TYPE_NAME.match(name):
            raise ConfigError(f"{where}: names are lower_snake_case, 2-48 characters, starting with a letter")
        capture = raw.get("capture_samples", False)
        if not isinstance(capture, bool):
            raise ConfigError(f"{where}.capture_samples must be true or false")
        if name in types:  # a built-in: only sample capture may be switched on
            extra = set(raw) - {"capture_samples"}
            if extra:
                raise ConfigError(f"{where}: built-in task types accept only capture_samples, not {sorted(extra)}")
            old = types[name]
            types[name] = TaskTypeSpec(old.name, old.description, old.tier, old.keywords, capture, True)
            continue
        try:
            tier = Tier.parse(raw.get("tier", "standard"))
        except ValueError as e:
            raise ConfigError(f"{where}.tier: {e}") from None
        keywords = raw.get("keywords", [])
        if not isinstance(keywords, list) or not all(isinstance(k, str) and k.strip() for k in keywords):
            raise ConfigError(f"{where}.keywords must be a list of non-empty strings")
        types[name] = TaskTypeSpec(name, str(raw.get("description", name.replace("_", " "))), tier,
                                   tuple(k.strip().lower() for k in keywords), capture, False)
    return types


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches only this machine (the servers open without credentials only there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
