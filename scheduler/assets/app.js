// trainyard dashboard: charts from data attributes, polling only while the
// page is visible, and the "/" shortcut to the search box. No inline script
// anywhere (the Content-Security-Policy forbids it); pages read fine without
// this file.
(function () {
  "use strict";

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // One uPlot per `.chart[data-chart]`. The attribute holds
  // {time: bool, x: [...], series: [{label, values, color, dash, points, band}], bands: [[hi, lo]]}.
  function drawChart(el) {
    if (el.dataset.drawn) return;
    var spec;
    try {
      spec = JSON.parse(el.getAttribute("data-chart"));
    } catch (e) {
      el.textContent = "chart data unreadable";
      return;
    }
    var fg = cssVar("--fg") || "#222";
    var grid = cssVar("--grid") || "#ddd";
    var data = [spec.x];
    var series = [{}];
    var points = 0;
    spec.series.forEach(function (s) {
      data.push(s.values);
      points += s.values.filter(function (v) { return v !== null; }).length;
      var color = cssVar("--" + s.color) || s.color || fg;
      var one = { label: s.label, stroke: color, width: s.band ? 0 : 1.5, spanGaps: false };
      if (s.dash) one.dash = [4, 4];
      if (s.points) {
        one.paths = function () { return null; };
        one.points = { show: true, size: 7, stroke: color, fill: color };
      } else {
        one.points = { show: false };
      }
      series.push(one);
    });
    var axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
    var opts = {
      width: Math.max(el.clientWidth, 280),
      height: Number(el.dataset.height || 240),
      scales: { x: { time: !!spec.time } },
      series: series,
      axes: [Object.assign({}, axis), Object.assign({}, axis, { label: spec.ylabel || "" })],
      legend: { live: true },
    };
    if (spec.bands) {
      opts.bands = spec.bands.map(function (b) {
        return { series: b, fill: cssVar("--band") || "rgba(80,120,200,0.15)" };
      });
    }
    el.textContent = "";
    var plot = new uPlot(opts, data, el);
    el.dataset.drawn = "1";
    el.dataset.points = String(points);
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        var w = Math.max(el.clientWidth, 280);
        if (Math.abs(w - plot.width) > 4) plot.setSize({ width: w, height: opts.height });
      }).observe(el);
    }
  }

  function drawAll(root) {
    if (typeof uPlot === "undefined") return;
    (root || document).querySelectorAll(".chart[data-chart]").forEach(drawChart);
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawAll(document);
  });

  // htmx: poll only while the tab is visible; catch up when it comes back.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    if (document.hidden && evt.detail.elt.hasAttribute("data-poll")) evt.preventDefault();
  });
  document.addEventListener("htmx:afterSettle", function (evt) {
    drawAll(evt.detail.elt);
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && window.htmx) {
      document.querySelectorAll("[data-poll]").forEach(function (el) {
        window.htmx.trigger(el, "visible-again");
      });
    }
  });

  // "/" focuses the search box (unless typing somewhere already).
  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "/" || evt.ctrlKey || evt.metaKey || evt.altKey) return;
    var t = evt.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
    var box = document.getElementById("search");
    if (box) {
      evt.preventDefault();
      box.focus();
      box.select();
    }
  });
})();
