"""`mcp-prism config check`: everything a server would refuse at start-up, found before it starts.

The typed check (`core/config_schema.py`) runs when the file is read; this adds what needs several tables
or the shipped catalog: prices and aliases resolve, the default task type exists, cache and batch name known
task types, retry caps hold. The gateway and `serve` run it before they bind a port, so a bad config exits
with its message instead of failing inside a running server.
"""

from __future__ import annotations

from mcp_prism.config import Settings
from mcp_prism.core.analysis import LoopSettings
from mcp_prism.errors import UnknownName
from mcp_prism.gateway.cache import CacheSettings
from mcp_prism.loop.batch import batch_settings
from mcp_prism.providers.resilience import from_config as resilience_from_config


def check_settings(settings: Settings) -> list[str]:
    """Raise the first ConfigError the config holds; return a summary of what it sets."""
    config = settings.user_config
    catalog = settings.catalog()
    task_types = settings.task_types()
    default = settings.default_task_type
    if default not in task_types:
        raise UnknownName("task type", default, list(task_types))
    cache = CacheSettings.from_config(config, known_task_types=task_types)
    batch_types, _ = batch_settings(config, task_types)
    resilience_from_config(config)
    LoopSettings.from_config(config)
    return [f"{len(catalog.models)} models, {len(catalog.aliases)} aliases, {len(catalog.providers)} providers",
            f"{len(task_types)} task types (default {default})",
            f"response cache for {len(cache.task_types)} task type(s), batch for {len(batch_types)}"]
