"""The web dashboard adapter: Costs, Matrix, Experiments, Rules pages, the blind rating page for human
raters, and the self-contained HTML report. It only translates: every figure comes from the application
services (`PrismService`, `mcp_prism.loop.*`); SQL lives in `mcp_prism.store`.

Charts use Chart.js 4 (MIT), vendored as `static/chart.umd.min.js` with its licence, so the pages and the
HTML report work with no network. Why Chart.js: it is widely used and actively maintained, one
dependency-free file, and draws every chart the pages need natively (stacked bars over time, floating
bars for a confidence interval with the threshold as a line on the same axis), where the lighter uPlot
draws time series only and would need hand-written bar and interval plugins.
"""
