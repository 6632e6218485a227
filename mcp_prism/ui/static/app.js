// mcp-prism dashboard: draws the charts described by the page's #chart-data block (Chart.js, vendored),
// and runs the blind rating page. No network beyond this server; nothing from a CDN.
(function () {
  "use strict";
  var PALETTE = ["#3b6fd8", "#e0803a", "#3aa676", "#c94f6d", "#8a62c9", "#c9a93a", "#4bb3c4", "#7a7a7a", "#b0b0b0"];
  function color(i) { return PALETTE[i % PALETTE.length]; }

  function drawCharts() {
    var block = document.getElementById("chart-data");
    if (!block || typeof Chart === "undefined") return;
    var specs = JSON.parse(block.textContent || "[]");
    specs.forEach(function (s) {
      var el = document.getElementById(s.id);
      if (!el) return;
      var cfg;
      if (s.type === "interval") {
        cfg = {
          type: "bar",
          data: {
            labels: s.labels,
            datasets: [
              { label: "lower bound to observed", data: s.intervals, backgroundColor: "#3b6fd8aa",
                maxBarThickness: 80 }
            ]
          },
          options: { animation: false, maintainAspectRatio: false,
                     plugins: { subtitle: { display: true, color: "#c94f6d",
                                            text: "dashed line: threshold " + Math.round(s.threshold * 1000) / 10 + "%" } },
                     scales: { y: { min: 0, max: 1, title: { display: true, text: s.y } } } },
          // The threshold as a line across the whole plot (a line dataset needs two categories to show).
          plugins: [{ id: "threshold", afterDatasetsDraw: function (chart) {
            var y = chart.scales.y.getPixelForValue(s.threshold), a = chart.chartArea, ctx = chart.ctx;
            ctx.save(); ctx.strokeStyle = "#c94f6d"; ctx.lineWidth = 2; ctx.setLineDash([6, 4]);
            ctx.beginPath(); ctx.moveTo(a.left, y); ctx.lineTo(a.right, y); ctx.stroke(); ctx.restore();
          } }]
        };
      } else {
        cfg = {
          type: s.type,
          data: { labels: s.labels, datasets: s.datasets.map(function (d, i) {
            return { label: d.label, data: d.data, backgroundColor: color(i), borderColor: color(i) };
          }) },
          options: { animation: false, maintainAspectRatio: false, indexAxis: s.horizontal ? "y" : "x",
                     plugins: { legend: { display: s.datasets.length > 1 } },
                     scales: { x: { stacked: !!s.stacked }, y: { stacked: !!s.stacked, beginAtZero: true } } }
        };
        var valueAxis = s.horizontal ? "x" : "y";
        cfg.options.scales[valueAxis].title = { display: true, text: s.y };
        if (s.horizontal) cfg.options.scales.y.ticks = { autoSkip: false };
      }
      new Chart(el, cfg);
    });
  }

  // ------------------------------------------------------------------ rating page
  function rating() {
    var root = document.getElementById("rate");
    if (!root) return;
    var base = window.location.pathname.replace(/\/$/, "");
    var current = null, skipped = [], busy = false;
    function $(id) { return document.getElementById(id); }
    function fail(msg) { var p = $("error"); p.textContent = msg; p.hidden = false; busy = false; }
    function show(pair) {
      $("progress").textContent = pair.rated_by_you + " of " + pair.total + " rated";
      $("bar").style.width = (pair.total ? 100 * pair.rated_by_you / pair.total : 0) + "%";
      root.dataset.rated = pair.rated_by_you;
      root.dataset.total = pair.total;
      if (pair.done) {
        current = null; $("task").hidden = true; $("done").hidden = false;
        $("done").textContent = skipped.length && pair.rated_by_you < pair.total
          ? "No more pairs this session (you skipped " + skipped.length + "); reload to see them again."
          : "All pairs rated. Thank you!";
        root.dataset.state = "done"; busy = false; return;
      }
      current = pair;
      $("prompt").textContent = pair.prompt || "";
      $("question").textContent = pair.question || "";
      $("first").textContent = pair.first || "";
      $("second").textContent = pair.second || "";
      root.dataset.state = "ready"; busy = false;
    }
    function next() {
      busy = true; root.dataset.state = "loading";
      var q = skipped.length ? "?skip=" + skipped.map(encodeURIComponent).join(",") : "";
      fetch(base + "/next" + q, { credentials: "same-origin" })
        .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || r.status); return j; }); })
        .then(show).catch(function (err) { fail(String(err.message || err)); });
    }
    function rate(choice) {
      if (!current || busy) return;
      if (choice === "skip") { skipped.push(current.token); next(); return; }
      busy = true; root.dataset.state = "saving";
      fetch(base + "/submit", { method: "POST", credentials: "same-origin",
                                 headers: { "Content-Type": "application/json" },
                                 body: JSON.stringify({ token: current.token, rating: choice }) })
        .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || r.status); return j; }); })
        .then(next).catch(function (err) { fail(String(err.message || err)); });
    }
    root.querySelectorAll("button[data-rating]").forEach(function (b) {
      b.addEventListener("click", function () { rate(b.dataset.rating); });
    });
    document.addEventListener("keydown", function (ev) {
      if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
      var b = root.querySelector('button[data-key="' + ev.key.toLowerCase() + '"]');
      if (b) { ev.preventDefault(); rate(b.dataset.rating); }
    });
    next();
  }

  document.addEventListener("DOMContentLoaded", function () { drawCharts(); rating(); });
})();
