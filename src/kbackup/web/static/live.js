// Live progress without a page reload: polls /progress.json (the work under way) while a
// page shows a #running box, updates each progress bar, and reloads the page when a run
// starts or ends (its facts changed: a new backup, a new last run). Without JavaScript the
// page is still right as of when it was loaded, and has a plain reload link.
(function () {
  "use strict";
  var box = document.getElementById("running");
  if (!box || !window.fetch) { return; }
  var job = box.getAttribute("data-job");

  function shown() {
    var ids = [];
    box.querySelectorAll(".progress[data-run]").forEach(function (node) {
      ids.push(node.getAttribute("data-run"));
    });
    return ids.sort().join(",");
  }

  function update(run) {
    var p = run.progress || {};
    box.querySelectorAll('.progress[data-run="' + run.id + '"]').forEach(function (node) {
      node.querySelector(".phase").textContent = run.kind + " " + run.id + ": " + p.phase;
      node.querySelector(".pct").textContent =
        p.percent === null || p.percent === undefined ? "" : Math.round(p.percent) + "%";
      var bar = node.querySelector("progress");
      if (p.percent === null || p.percent === undefined) {
        bar.removeAttribute("value");
      } else {
        bar.value = p.percent;
      }
    });
  }

  function poll() {
    fetch("/progress.json", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        var runs = data.running.filter(function (run) { return !job || run.job === job; });
        var now = runs.map(function (run) { return run.id; }).sort().join(",");
        if (now !== shown()) {
          window.location.reload();
          return;
        }
        runs.forEach(update);
        box.setAttribute("data-polled", String(Date.now()));
        window.setTimeout(poll, runs.length ? 1000 : 5000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });  // e.g. a daemon restart
  }

  window.setTimeout(poll, 1000);
}());
