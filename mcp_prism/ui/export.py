"""What `report --html` asks the services for: the report already made, its spend per day, the batch counts."""

from __future__ import annotations

from pathlib import Path

from mcp_prism.loop.batch import BatchService
from mcp_prism.results import CostReport
from mcp_prism.service import PrismService
from mcp_prism.ui import report_html


async def export_costs(svc: PrismService, r: CostReport, path: str | Path, *, days: int | None, since: str | None,
                       until: str | None, filters: dict[str, str]) -> Path:
    dim = r.group_by[0]
    daily = await svc.cost_report(days=days, since=since, until=until, group_by=["day", dim], filters=filters)
    counts = (await BatchService(svc).list_requests(limit=1)).counts
    return report_html.write(path, report_html.render(r, daily, counts))
