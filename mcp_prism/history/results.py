"""What `import-history` returns (`--json` prints it), with its markdown."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel


class CostDisagreement(BaseModel):
    model: str
    requests: int
    ours_usd: Decimal  # priced from genai-prices / the catalog at each request's time
    agent_usd: Decimal  # what the agent logged for the same requests


class AgentImport(BaseModel):
    agent: str
    roots: list[str]
    files: int  # logs found
    files_read: int  # logs with something new since the last import
    requests: int  # requests read from the new part of the logs
    stored: int  # new usage events
    duplicates: int  # requests already stored (a re-read, a resumed session's copy, another machine's copy)
    sidechain: int  # requests of subagents
    unpriced: int
    cost_usd: Decimal  # of the requests read, priced
    agent_cost_usd: Decimal | None = None  # what the agent itself logged (OpenCode), beside ours
    disagreements: list[CostDisagreement] = []


class ImportResult(BaseModel):
    machine: str
    user: str
    agents: list[AgentImport]
    warnings: list[str]
    state_saved: bool  # False when --since/--project narrowed the import: the next run reads it all again
    seconds: float = 0.0  # the import itself, reading to storing (not the interpreter's start)

    @property
    def stored(self) -> int:
        return sum(a.stored for a in self.agents)

    @property
    def markdown(self) -> str:
        lines = [f"Imported history on {self.machine} as {self.user} in {self.seconds:.1f} s:", "",
                 "| agent | logs (new) | requests | stored | already stored | subagent | unpriced | cost USD |",
                 "|---|---|---|---|---|---|---|---|"]
        for a in self.agents:
            lines.append(f"| {a.agent} | {a.files} ({a.files_read}) | {a.requests} | {a.stored} | {a.duplicates} | "
                         f"{a.sidechain} | {a.unpriced} | {a.cost_usd:.4f} |")
        for a in self.agents:
            if not a.files:
                lines.append(f"\nNo {a.agent} logs found in {', '.join(a.roots)}; --path points at another folder.")
            if a.agent_cost_usd is not None and a.requests:
                lines.append(f"\n{a.agent} logged its own cost too: {a.agent_cost_usd:.6f} USD against "
                             f"{a.cost_usd:.6f} from genai-prices.")
            for d in a.disagreements:
                lines.append(f"- {d.model}: {d.requests} requests differ: {a.agent} says {d.agent_usd:.6f} USD, "
                             f"genai-prices {d.ours_usd:.6f} USD")
        if self.warnings:
            lines += ["", *(f"warning: {w}" for w in self.warnings)]
        if not self.state_saved:
            lines.append("\n--since/--project narrowed this import: the next full import reads these logs again "
                         "(nothing is stored twice).")
        lines.append("\nNext: `mcp-prism analyze` (where each task type runs and where it should) and "
                     "`mcp-prism report`.")
        return "\n".join(lines)
