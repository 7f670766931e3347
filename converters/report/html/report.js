// Renders the report from the JSON in #harness-data: grid, cell detail (#cell=ID in the URL opens one), plots.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("harness-data").textContent);
  var VERDICTS = ["pass", "declared", "fail", "skipped"];
  var LABEL = { pass: "pass", declared: "declared failure", fail: "failure", skipped: "skipped" };
  var COLOR = { pass: "#3d9a45", declared: "#d8a21a", fail: "#c8352c", skipped: "#9aa0a8" };
  var byId = {};
  data.cells.forEach(function (c) { byId[c.id] = c; });

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (ch) { if (ch) node.appendChild(typeof ch === "string" ? document.createTextNode(ch) : ch); });
    return node;
  }
  // non-finite numbers arrive as the strings "nan" / "inf" / "-inf" and are shown as they are
  function num(v, digits) {
    if (v === null || v === undefined) return "-";
    return typeof v === "string" ? v : Number(v).toFixed(digits);
  }
  function size(bytes) {
    if (!bytes) return "-";
    return bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + " MB" : (bytes / 1024).toFixed(0) + " kB";
  }
  // near 1 the digits that matter are the distance from 1: "1−2.7e-9"
  function cosine(v) {
    if (v === null || v === undefined) return "-";
    if (typeof v === "string") return v;
    if (1 - v < 1e-12) return "1";
    return v > 0.9999 ? "1−" + (1 - v).toExponential(1) : Number(v).toFixed(4);
  }
  function primaryAccuracy(id) {
    var acc = data.accuracy[id];
    return acc && acc.metrics.length ? { acc: acc, m: acc.metrics[0] } : null;
  }
  function latencyB1(id) {
    var lat = data.latency[id];
    if (!lat) return null;
    return lat["1"] || lat[Object.keys(lat)[0]];
  }

  // ------------------------------------------------------------------------------------------- header
  var env = data.environment || {};
  var versions = env.versions || {};
  document.getElementById("run-meta").textContent = "generated " + data.generated +
    (env.commit ? " · commit " + env.commit : "") + (env.machine_id ? " · " + env.machine_id : "") +
    (env.python ? " · Python " + env.python : "") + " · " +
    Object.keys(versions).map(function (k) { return k + " " + versions[k]; }).join(", ");
  var counts = document.getElementById("counts");
  counts.appendChild(el("span", { cls: "count", "data-verdict": "total", "data-count": String(data.cells.length),
    text: data.cells.length + " cells" }));
  VERDICTS.forEach(function (v) {
    var n = data.counts[v] || 0;
    counts.appendChild(el("span", { cls: "count v-" + v, "data-verdict": v, "data-count": String(n), text: n + " " + LABEL[v] }));
  });

  // --------------------------------------------------------------------------------------------- grid
  var grid = document.getElementById("grid");
  var head = el("tr", {}, [el("th", { text: "target \\ model" })]);
  data.models.forEach(function (m) { head.appendChild(el("th", { text: m })); });
  grid.appendChild(el("thead", {}, [head]));
  var body = el("tbody");
  var index = {};
  data.cells.forEach(function (c) { index[c.target + "\u0000" + c.model] = c; });
  data.targets.forEach(function (t) {
    var row = el("tr", { "data-target": t }, [el("th", { cls: "target", text: t })]);
    data.models.forEach(function (m) {
      var c = index[t + "\u0000" + m];
      if (!c) { row.appendChild(el("td", { cls: "absent" })); return; }
      var lines = [el("span", { cls: "m main", text: c.verdict === "pass" ? "cos " + cosine(c.cosine) :
        (c.verdict === "skipped" ? "skipped" : (c.stage || c.outcome.toLowerCase())) })];
      var a = primaryAccuracy(c.id);
      if (a) lines.push(el("span", { cls: "m", text: "Δ" + num(a.m.drop, 2) + "pp [" + num(a.m.ci_low, 1) + "," + num(a.m.ci_high, 1) + "]" }));
      var l = latencyB1(c.id);
      if (l && l.ratio_to_eager) lines.push(el("span", { cls: "m", text: num(l.ratio_to_eager, 2) + "× eager" }));
      if (c.size_bytes) lines.push(el("span", { cls: "m", text: size(c.size_bytes) }));
      var td = el("td", { cls: "cell v-" + c.verdict, "data-cell": c.id, "data-verdict": c.verdict,
        title: c.id + ": " + LABEL[c.verdict] }, lines);
      td.addEventListener("click", function () { location.hash = "cell=" + encodeURIComponent(c.id); });
      row.appendChild(td);
    });
    body.appendChild(row);
  });
  grid.appendChild(body);

  // ---------------------------------------------------------------------------------------- filters
  var shown = {};
  VERDICTS.forEach(function (v) { shown[v] = true; });
  var filterBox = document.getElementById("verdict-filters");
  VERDICTS.forEach(function (v) {
    var box = el("input", { type: "checkbox", "data-verdict": v });
    box.checked = true;
    box.addEventListener("change", function () { shown[v] = box.checked; applyFilter(); });
    filterBox.appendChild(el("label", { cls: "v-" + v }, [box, " " + LABEL[v]]));
  });
  document.getElementById("filter").addEventListener("input", applyFilter);
  function applyFilter() {
    var q = document.getElementById("filter").value.trim().toLowerCase();
    Array.prototype.forEach.call(grid.querySelectorAll("td.cell"), function (td) {
      var c = byId[td.getAttribute("data-cell")];
      td.style.visibility = shown[c.verdict] && (!q || c.id.toLowerCase().indexOf(q) >= 0) ? "" : "hidden";
    });
  }

  // ----------------------------------------------------------------------------------------- detail
  var detail = document.getElementById("detail");
  function kv(rows) {
    return el("table", {}, rows.filter(function (r) { return r[1] !== null && r[1] !== undefined && r[1] !== ""; })
      .map(function (r) { return el("tr", {}, [el("th", { text: r[0] }), el("td", { cls: r[2] || "", text: String(r[1]) })]); }));
  }
  function table(header, rows) {
    return el("table", {}, [el("tr", {}, header.map(function (h) { return el("th", { text: h }); }))].concat(
      rows.map(function (r) { return el("tr", {}, r.map(function (x) { return el("td", { text: x === null || x === undefined ? "-" : String(x) }); })); })));
  }
  function openDetail(id) {
    var c = byId[id];
    Array.prototype.forEach.call(grid.querySelectorAll("td.selected"), function (td) { td.classList.remove("selected"); });
    if (!c) { detail.hidden = true; return; }
    var td = grid.querySelector('td[data-cell="' + CSS.escape(id) + '"]');
    if (td) { td.classList.add("selected"); td.scrollIntoView({ block: "nearest", inline: "nearest" }); }
    detail.innerHTML = "";
    var close = el("button", { cls: "close", text: "close" });
    close.addEventListener("click", function () { history.replaceState(null, "", location.pathname); openDetail(null); });
    detail.appendChild(close);
    detail.appendChild(el("h2", { text: c.id }));
    detail.appendChild(el("p", {}, [el("span", { cls: "count v-" + c.verdict, id: "detail-verdict", text: LABEL[c.verdict] + " (" + c.outcome + ")" })]));
    detail.appendChild(kv([["stage", c.stage], ["cache", c.cache], ["worst cosine", c.cosine], ["max |error|", c.max_abs],
      ["top-1 agreement", c.top1], ["file", c.file],
      ["same bytes as", c.identical_to && c.identical_to.length ? c.identical_to.join(", ") : null], ["size", c.size_bytes ? size(c.size_bytes) + " (" + c.size_bytes + " bytes)" : null],
      ["opset", c.opset], ["convert s", c.convert_seconds], ["artifact sha256", c.sha256, "mono"], ["cache key", c.key, "mono"],
      ["saved failing batch", c.saved_batch, "mono"],
      ["runtime", Object.keys(c.runtime).length ? JSON.stringify(c.runtime) : null],
      ["stack", Object.keys(c.versions).map(function (k) { return k + " " + c.versions[k]; }).join(", ")]]));
    if (c.message) {
      detail.appendChild(el("h3", { text: c.verdict === "skipped" ? "reason" : "error (verbatim, with the layer table when the harness localised it)" }));
      detail.appendChild(el("pre", { id: "detail-message", text: c.message }));
    }
    if (c.parity.length) {
      detail.appendChild(el("h3", { text: "parity against PyTorch" }));
      var rows = [];
      c.parity.forEach(function (p) {
        p.outputs.forEach(function (o) {
          rows.push([p.batch + (Object.keys(p.lengths).length ? " " + JSON.stringify(p.lengths) : ""), o.name,
            cosine(o.cosine), num(o.max_abs, 6), num(o.max_rel, 4), o.top1_agreement === null ? "-" : num(o.top1_agreement, 3),
            p.tolerance ? "cos≥" + p.tolerance.cosine_min + (p.tolerance.atol !== null ? " atol " + p.tolerance.atol : "") : "-", o.passed ? "ok" : "FAIL"]);
        });
      });
      detail.appendChild(table(["batch", "output", "cosine", "max abs", "max rel", "top-1", "tolerance", ""], rows));
    }
    var acc = data.accuracy[c.id];
    if (acc) {
      detail.appendChild(el("h3", { text: "accuracy (" + (acc.task || "task") + "): " + LABEL[acc.verdict] }));
      detail.appendChild(table(["metric", "fp32 %", "method %", "drop pp", "95% CI", "budget pp"], acc.metrics.map(function (m) {
        return [m.metric, num(m.fp32 * 100, 2), num(m.method * 100, 2), num(m.drop, 2), num(m.ci_low, 2) + ".." + num(m.ci_high, 2), m.threshold];
      })));
    }
    var lat = data.latency[c.id];
    if (lat) {
      detail.appendChild(el("h3", { text: "latency" }));
      detail.appendChild(table(["batch", "median ms", "p95 ms", "p99 ms", "eager ms", "ratio", "/s", "gate"], Object.keys(lat).map(function (b) {
        var x = lat[b];
        return [b, num(x.median_ms, 2), num(x.p95_ms, 2), num(x.p99_ms, 2), num(x.eager_ms, 2), num(x.ratio_to_eager, 3),
          num(x.throughput_per_s, 1), (x.gate_status || "-") + (x.gate_message ? ": " + x.gate_message : "")];
      })));
    }
    detail.hidden = false;
    detail.scrollTop = 0;
  }
  function fromHash() {
    var m = /^#cell=(.+)$/.exec(location.hash);
    openDetail(m ? decodeURIComponent(m[1]) : null);
  }
  window.addEventListener("hashchange", fromHash);

  // ------------------------------------------------------------------------------------------ plots
  var config = { displaylogo: false, responsive: true };
  function note(div, text) {
    var box = document.getElementById(div);
    box.classList.add("empty");  // no plot: the note alone, without the plot's height
    box.appendChild(el("p", { cls: "note", text: text }));
  }

  (function speedup() {
    var models = {};
    Object.keys(data.latency).forEach(function (id) {
      var x = latencyB1(id), c = byId[id];
      var model = c ? c.model : id.split("-")[0], target = c ? c.target : id.slice(model.length + 1);
      if (!x || !x.speedup_vs_eager || target === "torch:eager") return;
      (models[model] = models[model] || { x: [], y: [], text: [] });
      models[model].x.push(target); models[model].y.push(x.speedup_vs_eager);
      models[model].text.push(x.gate_status || "");
    });
    var traces = Object.keys(models).sort().map(function (m) {
      return { type: "bar", name: m, x: models[m].x, y: models[m].y, text: models[m].text, hovertemplate: "%{x}: %{y:.2f}× (%{text})<extra>" + m + "</extra>" };
    });
    if (!traces.length) { note("plot-speedup", "no latency results in this report (the latency suite writes --latency-report; pass it with --latency)"); return; }
    Plotly.newPlot("plot-speedup", traces, { barmode: "group", height: 380, margin: { t: 20, b: 140 },
      yaxis: { title: "speedup vs eager at batch 1 (×)" },
      shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 1, y1: 1, line: { dash: "dot", color: "#555" } }] }, config);
  })();

  (function accuracy() {
    var ids = Object.keys(data.accuracy).sort();
    var select = document.getElementById("accuracy-select");
    if (!ids.length) { select.disabled = true; note("plot-accuracy", "no accuracy results in this report (the accuracy suite did not run)"); return; }
    var models = [];
    ids.forEach(function (id) { var m = byId[id] ? byId[id].model : id.split("-")[0]; if (models.indexOf(m) < 0) models.push(m); });
    // one model at a time by default: a declared failure 80 pp down would flatten every other model's CI
    models.forEach(function (m) { select.appendChild(el("option", { value: m, text: m })); });
    select.appendChild(el("option", { value: "", text: "all models" }));
    function draw(model) {
      var traces = [], budgetX = [], budgetY = [];
      VERDICTS.forEach(function (v) {
        var t = { type: "scatter", mode: "markers", name: "drop (" + LABEL[v] + ")", x: [], y: [], marker: { color: COLOR[v], size: 8 },
          error_y: { type: "data", symmetric: false, array: [], arrayminus: [], color: COLOR[v] }, text: [],
          hovertemplate: "%{x}: %{y:.2f} pp, %{text}<extra></extra>" };
        ids.forEach(function (id) {
          var acc = data.accuracy[id], c = byId[id];
          if (acc.verdict !== v || (model && (c ? c.model : id.split("-")[0]) !== model)) return;
          acc.metrics.forEach(function (m) {
            if (m.drop === null) return;
            var x = (model ? id.slice(model.length + 1) : id) + " · " + m.metric;
            t.x.push(x); t.y.push(m.drop); t.error_y.array.push(m.ci_high - m.drop); t.error_y.arrayminus.push(m.drop - m.ci_low);
            t.text.push("CI " + num(m.ci_low, 2) + ".." + num(m.ci_high, 2) + " pp, budget " + m.threshold);
            if (m.threshold !== null) { budgetX.push(x); budgetY.push(m.threshold); }
          });
        });
        if (t.x.length) traces.push(t);
      });
      traces.push({ type: "scatter", mode: "markers", name: "budget", x: budgetX, y: budgetY, hoverinfo: "skip",
        marker: { symbol: "line-ew-open", size: 18, color: "#1b3f99", line: { width: 2 } } });
      Plotly.react("plot-accuracy", traces, { height: 460, margin: { t: 20, b: 220 }, xaxis: { tickangle: -45, tickfont: { size: 10 } },
        yaxis: { title: "drop vs FP32 PyTorch (pp, 95% CI)", zeroline: true } }, config);
    }
    select.addEventListener("change", function () { draw(select.value); });
    draw(models[0]);
  })();

  (function latencyHistory() {
    var select = document.getElementById("history-select");
    var ids = Object.keys(data.history).filter(function (k) { return data.history[k].some(function (p) { return p.ratio; }); }).sort();
    if (!ids.length) { select.disabled = true; note("plot-history", "no saved benchmark runs or latency results in this report"); return; }
    ids.forEach(function (id) { select.appendChild(el("option", { value: id, text: id })); });
    function draw(id) {
      var pts = data.history[id], cellId = id.replace(/-b\d+$/, ""), batch = (/-b(\d+)$/.exec(id) || [])[1];
      var lat = (data.latency[cellId] || {})[batch];
      var xs = pts.map(function (p, i) { return (i + 1) + ": " + p.run; });
      var traces = [{ type: "scatter", mode: "lines+markers", name: "ratio to eager", x: xs, y: pts.map(function (p) { return p.ratio; }),
        text: pts.map(function (p) { return (p.median_ms ? num(p.median_ms, 2) + " ms" : "") + " " + (p.machine || ""); }) }];
      if (lat && lat.baseline_ratio && lat.noise !== null) {
        var lo = lat.baseline_ratio * (1 - lat.noise), hi = lat.baseline_ratio * (1 + lat.noise);
        traces.unshift({ type: "scatter", mode: "lines", name: "baseline band (±noise)", x: xs.concat(xs.slice().reverse()),
          y: xs.map(function () { return hi; }).concat(xs.map(function () { return lo; })), fill: "toself",
          fillcolor: "rgba(58,106,214,0.15)", line: { width: 0 }, hoverinfo: "skip" });
      }
      Plotly.react("plot-history", traces, { height: 360, margin: { t: 30 }, title: { text: id + (lat && lat.gate_status ? " (gate: " + lat.gate_status + ")" : ""), font: { size: 13 } },
        yaxis: { title: "latency / eager latency (lower is faster)" } }, config);
    }
    select.addEventListener("change", function () { draw(select.value); });
    draw(ids[0]);
  })();

  fromHash();
  document.documentElement.setAttribute("data-rendered", "1");
  document.documentElement.setAttribute("data-js-errors", JSON.stringify(window.__harnessErrors));
})();
