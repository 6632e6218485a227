"""Schema migrations: an ordered list; the names applied are recorded in `schema_migrations`.

Append new migrations at the end; never edit one that has shipped. Each runs in the same
transaction as its bookkeeping row, so a failed migration leaves the database as it was.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_usage_events",
        """
        CREATE TABLE price_snapshots (
            id INTEGER PRIMARY KEY,
            body TEXT NOT NULL UNIQUE
        );
        CREATE TABLE usage_events (
            id TEXT PRIMARY KEY,
            ts TEXT NOT NULL,
            task_type TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            cached_input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            latency_ms REAL NOT NULL,
            ttft_ms REAL,
            cost_usd TEXT,
            cost_pico INTEGER,
            price_snapshot_id INTEGER REFERENCES price_snapshots(id),
            batch INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'ok',
            quality REAL CHECK (quality IS NULL OR (quality >= 0 AND quality <= 1)),
            quality_source TEXT CHECK (quality_source IS NULL OR quality_source IN ('human','judge','automated')),
            user TEXT,
            team TEXT,
            project TEXT,
            source TEXT NOT NULL,
            rule_id TEXT,
            rule_version INTEGER,
            request_id TEXT UNIQUE
        );
        CREATE INDEX usage_events_ts ON usage_events (ts);
        CREATE INDEX usage_events_task_ts ON usage_events (task_type, ts);
        CREATE TABLE samples (
            event_id TEXT PRIMARY KEY REFERENCES usage_events(id),
            prompt TEXT,
            response TEXT
        );
        -- Daily rollups kept in step with usage_events inside the same transaction, so reports over
        -- millions of events read thousands of rows. Empty strings stand for "not given". Users are
        -- in a rollup of their own: crossed with models and task types they would multiply the rows.
        CREATE TABLE usage_daily (
            day TEXT NOT NULL,
            task_type TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            team TEXT NOT NULL,
            project TEXT NOT NULL,
            requests INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0,
            unpriced INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            cached_input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            cost_pico INTEGER NOT NULL DEFAULT 0,
            latency_ms_sum REAL NOT NULL DEFAULT 0,
            quality_sum REAL NOT NULL DEFAULT 0,
            quality_n INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, task_type, model, provider, team, project)
        ) WITHOUT ROWID;
        CREATE TABLE usage_daily_user (
            day TEXT NOT NULL,
            user TEXT NOT NULL,
            team TEXT NOT NULL,
            project TEXT NOT NULL,
            requests INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0,
            unpriced INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            cached_input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            cost_pico INTEGER NOT NULL DEFAULT 0,
            latency_ms_sum REAL NOT NULL DEFAULT 0,
            quality_sum REAL NOT NULL DEFAULT 0,
            quality_n INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, user, team, project)
        ) WITHOUT ROWID;
        """,
    ),
    (
        "0002_routing_rules_and_audit",
        """
        CREATE TABLE routing_rules (
            task_type TEXT NOT NULL,
            version INTEGER NOT NULL,
            body TEXT NOT NULL,
            author TEXT NOT NULL,
            reason TEXT NOT NULL,
            evidence TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (task_type, version)
        );
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            details TEXT NOT NULL
        );
        """,
    ),
]
