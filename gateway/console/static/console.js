// paygate operations console: the little script the pages need (CSP: script-src 'self', no inline code).
// Charts read their data from a JSON block the server rendered (<script type="application/json">);
// what each chart shows is kept in window.paygateConsole.charts for anyone who wants to check it.
"use strict";
(function () {
  var state = { charts: {} };
  window.paygateConsole = state;

  function data(el) {
    var source = document.getElementById(el.getAttribute("data-source"));
    return source ? JSON.parse(source.textContent) : null;
  }

  var COLORS = { PROCESSING: "#d9a300", SUCCEEDED: "#2e9a52", FAILED: "#cf3b2f" };

  var builders = {
    trend: function (d) {
      return {
        animation: false,
        tooltip: { trigger: "axis" },
        legend: { data: d.status_names, top: 0 },
        grid: { left: 50, right: 20, top: 40, bottom: 30 },
        xAxis: { type: "category", data: d.days },
        yAxis: { type: "value", minInterval: 1 },
        series: d.statuses.map(function (status, i) {
          return { name: d.status_names[i], type: "bar", stack: "flows", data: d.counts[status], color: COLORS[status] };
        })
      };
    },
    rates: function (d) {
      return {
        animation: false,
        tooltip: { trigger: "axis", valueFormatter: function (v) { return v === null ? "–" : v + "%"; } },
        legend: { data: d.rates.names, top: 0 },
        grid: { left: 50, right: 20, top: 40, bottom: 30 },
        xAxis: { type: "category", data: d.rates.channels },
        yAxis: { type: "value", min: 0, max: 100, axisLabel: { formatter: "{value}%" } },
        series: [
          { name: d.rates.names[0], type: "bar", data: d.rates.hour },
          { name: d.rates.names[1], type: "bar", data: d.rates.day }
        ]
      };
    }
  };

  function drawCharts() {
    var nodes = document.querySelectorAll("[data-chart]");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      var kind = el.getAttribute("data-chart");
      var d = data(el);
      if (!d || !builders[kind]) { continue; }
      var option = builders[kind](d);
      var entry = { option: option, instance: null, error: null };
      state.charts[kind] = entry;
      if (typeof window.echarts === "undefined") { entry.error = "echarts not loaded"; continue; }
      entry.instance = window.echarts.init(el, null, { renderer: "canvas" });
      entry.instance.setOption(option);
    }
    window.addEventListener("resize", function () {
      Object.keys(state.charts).forEach(function (k) { if (state.charts[k].instance) { state.charts[k].instance.resize(); } });
    });
  }

  function wireForms() {
    document.addEventListener("submit", function (event) {
      var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
      if (question && !window.confirm(question)) { event.preventDefault(); }
    });
    var toggles = document.querySelectorAll("[data-select-all]");
    for (var i = 0; i < toggles.length; i++) {
      toggles[i].addEventListener("change", function (event) {
        var name = event.target.getAttribute("data-select-all");
        var boxes = event.target.form.querySelectorAll("input[type=checkbox][name='" + name + "']");
        for (var j = 0; j < boxes.length; j++) { boxes[j].checked = event.target.checked; }
      });
    }
  }

  function ready() { drawCharts(); wireForms(); state.ready = true; }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", ready); } else { ready(); }
})();
