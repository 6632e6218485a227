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
    (
        "0003_experiments_monitors_alerts",
        """
        -- An experiment: candidates run on sampled requests of one task type, judged, qualified.
        CREATE TABLE experiments (
            id TEXT PRIMARY KEY,
            task_type TEXT NOT NULL,
            baseline_model TEXT,                 -- the current model; its answers are the baseline
            candidates TEXT NOT NULL,            -- JSON list of model names
            evaluation TEXT NOT NULL,            -- JSON: method (human|judge|automated|imported), threshold, ...
            status TEXT NOT NULL,                -- created|running|ready|evaluated|promoted|abandoned
            source TEXT NOT NULL,                -- store|file|import
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            notes TEXT
        );
        CREATE TABLE experiment_items (
            experiment_id TEXT NOT NULL REFERENCES experiments(id),
            item INTEGER NOT NULL,
            prompt TEXT NOT NULL,                -- JSON: {"system": ..., "messages": [...]} or plain text
            expected TEXT,                       -- expected answer / pattern for automated checks
            source_event_id TEXT,                -- the usage event the sample came from
            edge_case INTEGER NOT NULL DEFAULT 0,
            category TEXT,                       -- e.g. an MT-Bench category, a file name
            PRIMARY KEY (experiment_id, item)
        ) WITHOUT ROWID;
        -- One answer of one model to one item (baseline or candidate); a row exists once paid for,
        -- which is what lets an interrupted run resume without paying again.
        CREATE TABLE experiment_outputs (
            experiment_id TEXT NOT NULL REFERENCES experiments(id),
            item INTEGER NOT NULL,
            model TEXT NOT NULL,
            role TEXT NOT NULL,                  -- baseline|candidate
            response TEXT,
            status TEXT NOT NULL,                -- ok|error
            error TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            cached_input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            latency_ms REAL,
            cost_usd TEXT,
            score REAL,                          -- an imported outcome (1/0 correct, or a 1-10 judge score)
            created_at TEXT NOT NULL,
            PRIMARY KEY (experiment_id, item, model)
        ) WITHOUT ROWID;
        CREATE TABLE evaluations (
            experiment_id TEXT NOT NULL REFERENCES experiments(id),
            item INTEGER NOT NULL,
            model TEXT NOT NULL,                 -- the candidate judged against the baseline
            method TEXT NOT NULL,                -- human|judge|automated|imported
            verdict TEXT NOT NULL,               -- acceptable|degraded|unacceptable|tie|error
            detail TEXT,                         -- JSON: both judge orders, the output of a check
            evaluator TEXT,                      -- who: a person, the judge model, the check
            cost_usd TEXT,                       -- what judging cost (LLM judge)
            created_at TEXT NOT NULL,
            PRIMARY KEY (experiment_id, item, model, method)
        ) WITHOUT ROWID;
        -- A deployed rule version under watch against its baseline.
        CREATE TABLE monitors (
            id INTEGER PRIMARY KEY,
            task_type TEXT NOT NULL,
            rule_version INTEGER NOT NULL,
            baseline_version INTEGER,
            experiment_id TEXT,
            started_at TEXT NOT NULL,
            ends_at TEXT NOT NULL,
            threshold REAL NOT NULL,
            auto_rollback INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,                -- watching|passed|regressed|rolled_back
            last_checked TEXT,
            details TEXT
        );
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            kind TEXT NOT NULL,                  -- regression|rolled_back|review_due|...
            task_type TEXT,
            message TEXT NOT NULL,
            details TEXT NOT NULL,               -- JSON
            delivered INTEGER NOT NULL DEFAULT 0,
            acknowledged INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX alerts_open ON alerts (acknowledged, ts);
        """,
    ),
    (
        "0004_keys_budgets_cache",
        """
        -- Virtual API keys: only a hash of the secret is kept; the secret is shown once at creation.
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,                 -- public id, safe to show and log
            hash TEXT NOT NULL UNIQUE,           -- sha256 of the secret
            team TEXT NOT NULL,
            user TEXT,
            project TEXT,
            name TEXT,
            created_at TEXT NOT NULL,
            revoked_at TEXT,
            rotated_from TEXT,
            last_used_at TEXT
        );
        -- A USD budget (and optional request/token rates) for a key, user, team or project per period.
        CREATE TABLE budgets (
            id INTEGER PRIMARY KEY,
            scope TEXT NOT NULL,                 -- key|user|team|project
            subject TEXT NOT NULL,               -- the key id, user, team or project name
            period TEXT NOT NULL,                -- day|week|month
            soft_limit_usd TEXT,
            hard_limit_usd TEXT,
            rpm INTEGER,
            tpm INTEGER,
            downgrade INTEGER NOT NULL DEFAULT 0,  -- near the soft limit, route to the next cheaper qualified model
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (scope, subject, period)
        );
        -- The ledger enforcement updates atomically: spend settled and cost reserved by requests in flight.
        CREATE TABLE budget_spend (
            budget_id INTEGER NOT NULL REFERENCES budgets(id),
            window_start TEXT NOT NULL,
            spent_pico INTEGER NOT NULL DEFAULT 0,
            reserved_pico INTEGER NOT NULL DEFAULT 0,
            requests INTEGER NOT NULL DEFAULT 0,
            soft_alerted INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (budget_id, window_start)
        );
        -- Exact-match response cache (opt-in per task type), shared by gateway replicas.
        CREATE TABLE response_cache (
            key TEXT PRIMARY KEY,                -- sha256 of the normalised request
            task_type TEXT NOT NULL,
            project TEXT,
            model TEXT NOT NULL,
            client_format TEXT NOT NULL,
            body BLOB NOT NULL,
            usage TEXT NOT NULL,                 -- JSON token counts of the original answer
            cost_usd TEXT,                       -- what the original answer cost (a hit saves this)
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            hits INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX response_cache_expiry ON response_cache (expires_at);
        ALTER TABLE usage_events ADD COLUMN api_key_id TEXT;
        ALTER TABLE usage_events ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE usage_events ADD COLUMN saved_usd TEXT;
        """,
    ),
    (
        "0005_batch_requests",
        """
        -- Non-urgent requests queued for a provider batch API, answered later at the batch price.
        CREATE TABLE batch_requests (
            id TEXT PRIMARY KEY,                 -- returned to the client; results are fetched with it
            task_type TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            client_format TEXT NOT NULL,         -- openai|anthropic: the shape the result is returned in
            body TEXT NOT NULL,                  -- the provider-format request body (JSON)
            status TEXT NOT NULL,                -- queued|submitted|completed|failed|expired|cancelled
            provider_batch_id TEXT,
            result TEXT,                         -- the answer in the client format (JSON), once completed
            error TEXT,
            api_key_id TEXT,
            team TEXT,
            user TEXT,
            project TEXT,
            created_at TEXT NOT NULL,
            submitted_at TEXT,
            completed_at TEXT
        );
        CREATE INDEX batch_requests_status ON batch_requests (status, provider);
        """,
    ),
    (
        "0006_history_import",
        """
        -- One-hour cache writes, the part of cache_write_tokens billed at the one-hour rate.
        ALTER TABLE usage_events ADD COLUMN cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE usage_daily ADD COLUMN cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE usage_daily_user ADD COLUMN cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0;
        -- Imported history: where each request came from.
        ALTER TABLE usage_events ADD COLUMN machine TEXT;       -- host the log was read on
        ALTER TABLE usage_events ADD COLUMN session_id TEXT;    -- the agent's session
        ALTER TABLE usage_events ADD COLUMN agent TEXT;         -- claude-code | opencode | codex
        ALTER TABLE usage_events ADD COLUMN sidechain INTEGER NOT NULL DEFAULT 0;  -- a subagent's turn
        ALTER TABLE usage_events ADD COLUMN agent_cost_usd TEXT;  -- the cost the agent itself logged
        -- How far each log has been read, so a re-import reads only what is new.
        CREATE TABLE import_files (
            machine TEXT NOT NULL,
            path TEXT NOT NULL,
            agent TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            read_to INTEGER NOT NULL,           -- bytes of a JSONL log read; a watermark for a database
            head TEXT NOT NULL,                 -- digest of the first bytes: a replaced file starts over
            updated_at TEXT NOT NULL,
            PRIMARY KEY (machine, path)
        );
        """,
    ),
    (
        "0007_budget_leases",
        """
        -- Budget reservations as leases. Each gateway process (a holder) renews its row while it lives;
        -- what it holds per budget window is summed in budget_leases, changed in the same transactions as
        -- budget_spend.reserved_pico. A holder that stops renewing (killed) is reclaimed by any gateway.
        CREATE TABLE budget_holders (
            holder TEXT PRIMARY KEY,             -- host, pid and a random suffix of one gateway process
            expires_at TEXT NOT NULL             -- ISO UTC; renewed every third of the lease
        );
        CREATE TABLE budget_leases (
            holder TEXT NOT NULL,
            budget_id INTEGER NOT NULL,
            window_start TEXT NOT NULL,
            reserved_pico INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (holder, budget_id, window_start)
        );
        """,
    ),
    (
        "0008_voided_events",
        """
        -- Usage events taken out of every report (`mcp-prism events void`): moved here, whole, with who and
        -- why, so a void can be reviewed; the rollups were reduced by them in the same transaction.
        CREATE TABLE voided_events (
            id TEXT PRIMARY KEY,
            voided_at TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            event TEXT NOT NULL                  -- the usage_events row as JSON
        );
        """,
    ),
    (
        "0009_learned_routers",
        """
        -- Learned per-request routers, one lineage per task type, versioned like rules: a mixed rule names
        -- the version it uses, so rolling the rule back rolls the router back.
        CREATE TABLE learned_routers (
            task_type TEXT NOT NULL,
            version INTEGER NOT NULL,
            body TEXT NOT NULL,                  -- the router (weights, idf, frozen threshold) as JSON
            summary TEXT NOT NULL,               -- JSON: training data, calibration, expected quality and cost
            author TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (task_type, version)
        );
        ALTER TABLE usage_events ADD COLUMN router_version INTEGER;
        ALTER TABLE usage_events ADD COLUMN router_score REAL;
        """,
    ),
    (
        "0010_rater_links",
        """
        -- Rating-only links for human raters (`mcp-prism ui rater-link`): the secret is kept as a SHA-256
        -- hash only; a link opens the blind rating page of one experiment for one rater, nothing else.
        CREATE TABLE rater_links (
            id TEXT PRIMARY KEY,                 -- public part of the token (before the dot)
            hash TEXT NOT NULL,                  -- sha256 of the whole token
            experiment_id TEXT NOT NULL,
            rater TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE INDEX rater_links_experiment ON rater_links (experiment_id);
        """,
    ),
    (
        "0011_rollup_cache_and_lean_events",
        """
        -- Reports read rollups only: the response cache's hits and what they saved join the rollup sums
        -- (backfilled from the events; saved_usd text -> picodollars through REAL, exact to ~15 digits).
        ALTER TABLE usage_daily ADD COLUMN cache_hits INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE usage_daily ADD COLUMN saved_pico INTEGER NOT NULL DEFAULT 0;
        UPDATE usage_daily SET cache_hits = s.n, saved_pico = s.p FROM (
            SELECT substr(ts, 1, 10) AS k0, task_type AS k1, model AS k2, provider AS k3,
                   COALESCE(team, '') AS k4, COALESCE(project, '') AS k5, COUNT(*) AS n,
                   SUM(CAST(ROUND(CAST(COALESCE(saved_usd, '0') AS REAL) * 1000000000000) AS INTEGER)) AS p
            FROM usage_events WHERE cache_hit = 1 GROUP BY k0, k1, k2, k3, k4, k5
        ) AS s WHERE usage_daily.day = s.k0 AND usage_daily.task_type = s.k1
            AND usage_daily.model = s.k2 AND usage_daily.provider = s.k3
            AND usage_daily.team = s.k4 AND usage_daily.project = s.k5;
        ALTER TABLE usage_daily_user ADD COLUMN cache_hits INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE usage_daily_user ADD COLUMN saved_pico INTEGER NOT NULL DEFAULT 0;
        UPDATE usage_daily_user SET cache_hits = s.n, saved_pico = s.p FROM (
            SELECT substr(ts, 1, 10) AS k0, COALESCE(user, '') AS k1, COALESCE(team, '') AS k2,
                   COALESCE(project, '') AS k3, COUNT(*) AS n,
                   SUM(CAST(ROUND(CAST(COALESCE(saved_usd, '0') AS REAL) * 1000000000000) AS INTEGER)) AS p
            FROM usage_events WHERE cache_hit = 1 GROUP BY k0, k1, k2, k3
        ) AS s WHERE usage_daily_user.day = s.k0
            AND usage_daily_user.user = s.k1 AND usage_daily_user.team = s.k2
            AND usage_daily_user.project = s.k3;
        -- Ingestion: usage_events rebuilt without the UNIQUE index on request_id (random client ids made
        -- every insert a random B-tree write; idempotency is now a window of recent request ids, see
        -- store/sqlite.py) and without the (task_type, ts) index no query needs. Run with foreign keys
        -- off (Store._migrate) and checked with foreign_key_check before commit.
        CREATE TABLE usage_events_new (
            id TEXT PRIMARY KEY, ts TEXT NOT NULL, task_type TEXT NOT NULL, model TEXT NOT NULL,
            provider TEXT NOT NULL,
            input_tokens INTEGER NOT NULL DEFAULT 0, cached_input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0, latency_ms REAL NOT NULL, ttft_ms REAL, cost_usd TEXT,
            cost_pico INTEGER, price_snapshot_id INTEGER REFERENCES price_snapshots(id),
            batch INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'ok',
            quality REAL CHECK (quality IS NULL OR (quality >= 0 AND quality <= 1)),
            quality_source TEXT CHECK (quality_source IS NULL OR quality_source IN ('human','judge','automated')),
            user TEXT, team TEXT, project TEXT, source TEXT NOT NULL, rule_id TEXT, rule_version INTEGER,
            request_id TEXT, api_key_id TEXT, cache_hit INTEGER NOT NULL DEFAULT 0, saved_usd TEXT,
            cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0, machine TEXT, session_id TEXT, agent TEXT,
            sidechain INTEGER NOT NULL DEFAULT 0, agent_cost_usd TEXT, router_version INTEGER, router_score REAL
        );
        INSERT INTO usage_events_new (rowid, id, ts, task_type, model, provider, input_tokens, cached_input_tokens,
            cache_write_tokens, output_tokens, reasoning_tokens, latency_ms, ttft_ms, cost_usd, cost_pico,
            price_snapshot_id, batch,
            status, quality, quality_source, user, team, project, source, rule_id, rule_version, request_id,
            api_key_id, cache_hit, saved_usd, cache_write_1h_tokens, machine, session_id, agent, sidechain,
            agent_cost_usd, router_version, router_score)
        SELECT rowid, id, ts, task_type, model, provider, input_tokens, cached_input_tokens, cache_write_tokens,
            output_tokens, reasoning_tokens, latency_ms, ttft_ms, cost_usd, cost_pico, price_snapshot_id, batch,
            status, quality, quality_source, user, team, project, source, rule_id, rule_version, request_id,
            api_key_id, cache_hit, saved_usd, cache_write_1h_tokens, machine, session_id, agent, sidechain,
            agent_cost_usd, router_version, router_score
        FROM usage_events;
        DROP TABLE usage_events;
        ALTER TABLE usage_events_new RENAME TO usage_events;
        CREATE INDEX usage_events_ts ON usage_events (ts);
        -- Batch results are looked up by request id (the batch request's id); few events are batch events.
        CREATE INDEX usage_events_batch_request ON usage_events (request_id) WHERE batch = 1;
        """,
    ),
]
