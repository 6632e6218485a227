"""Prometheus metrics of the gateway, named after the OpenTelemetry GenAI conventions where one exists
(`gen_ai.client.operation.duration` -> `gen_ai_client_operation_duration_seconds`, ...) and with a
`prism_` prefix where the standard has nothing (cost, task type, gateway overhead).

Observed by the recorder when it flushes a batch, not on the request path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Bucket boundaries advised by the OTel GenAI semantic conventions.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)

LABELS = ("gen_ai_provider_name", "gen_ai_response_model", "task_type", "team")
TOKEN_TYPES = ("input", "output", "cached_input", "cache_write", "reasoning")

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.duration = Histogram("gen_ai_client_operation_duration_seconds",
                                  "Duration of a chat request through the gateway, first byte in to last byte out",
                                  ("gen_ai_operation_name", *LABELS, "error_type"), buckets=DURATION_BUCKETS,
                                  registry=r)
        self.ttft = Histogram("gen_ai_server_time_to_first_token_seconds",
                              "Time from the request to the first streamed bytes of the answer", LABELS,
                              buckets=TTFT_BUCKETS, registry=r)
        self.token_usage = Histogram("gen_ai_client_token_usage", "Tokens per request (input includes cached)",
                                     ("gen_ai_token_type", *LABELS), buckets=TOKEN_BUCKETS, registry=r)
        self.requests = Counter("prism_gateway_requests", "Chat requests handled by the gateway",
                                (*LABELS, "status"), registry=r)
        self.tokens = Counter("prism_gateway_tokens", "Tokens by type (input includes cached and cache writes; "
                              "output includes reasoning)", ("type", *LABELS), registry=r)
        self.cost = Counter("prism_gateway_cost_usd", "Cost in US dollars at the provider's prices", LABELS,
                            registry=r)
        self.errors = Counter("prism_gateway_errors", "Requests that did not end well, by error type",
                              ("error_type", *LABELS), registry=r)
        self.overhead = Histogram("prism_gateway_overhead_seconds",
                                  "Time spent in the gateway itself (total minus waiting for the provider)",
                                  ("route",), buckets=OVERHEAD_BUCKETS, registry=r)
        self.retries = Counter("prism_gateway_retries", "Upstream tries beyond a request's first: kind retry (the "
                               "same deployment again), fallback (the rule's next model) or skipped (circuit open)",
                               ("provider", "model", "kind"), registry=r)
        self.circuit_state = Gauge("prism_gateway_circuit_state",
                                   "Circuit of each provider deployment: 0 closed, 1 half-open, 2 open",
                                   ("provider", "model"), registry=r)
        self.in_flight = Gauge("prism_gateway_in_flight_requests", "Chat requests being served now", registry=r)
        self.queue = Gauge("prism_gateway_recorder_queue", "Usage events waiting to be written", registry=r)
        self.budget_remaining = Gauge("prism_budget_remaining_usd",
                                      "What is left of a budget in its current window (hard limit, else soft, "
                                      "minus spent and reserved), as last seen by this replica",
                                      ("scope", "subject", "period"), registry=r)
        self.budget_rejections = Counter("prism_budget_rejections",
                                         "Requests refused by a budget (reason: budget, rpm, tpm)",
                                         ("scope", "subject", "period", "reason"), registry=r)
        self.dropped = Counter("prism_gateway_recorder_dropped_events",
                               "Usage events given up after the store refused them repeatedly", registry=r)
        self.journal_errors = Counter("prism_gateway_journal_errors",
                                      "Answered requests the journal could not take (they would not survive a crash)",
                                      registry=r)
        self.set_aside = Counter("prism_gateway_recorder_set_aside_events",
                                 "Usage events the store refused on their own (bad data): set aside, not retried",
                                 registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
