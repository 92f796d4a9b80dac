// fleetpulse console: live updates over server-sent events. No dependencies.
// The server sends a "live" event with counters and a fingerprint per section (breakers,
// alerts, approvals, pauses, agents, silences, figures). Counters are set in place; every
// region marked data-live="section ..." whose section moved is re-fetched from this page's
// own URL and swapped in, so what appears is exactly what a reload would show.
(function () {
  "use strict";
  var url = document.querySelector('meta[name="live-url"]');
  if (!url || !window.EventSource) { return; }
  var seenMeta = document.querySelector('meta[name="live-versions"]');
  var seen = seenMeta ? JSON.parse(seenMeta.content) : {};
  var dot = document.getElementById("live-dot");
  var busy = false, again = false;

  function setCounts(counts) {
    Object.keys(counts).forEach(function (k) {
      document.querySelectorAll('[data-count="' + k + '"]').forEach(function (el) {
        var badge = el.classList.contains("badge");
        el.textContent = badge && !counts[k] ? "" : String(counts[k]);
      });
    });
  }

  function stale(changed) {
    return Array.prototype.filter.call(document.querySelectorAll("[data-live][id]"), function (el) {
      if (el.contains(document.activeElement) && document.activeElement !== document.body) {
        return false; // someone is typing in it: refresh on the next change
      }
      return el.dataset.live.split(" ").some(function (s) { return changed.indexOf(s) >= 0; });
    });
  }

  function refresh(regions) {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        regions.forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (fresh) { el.replaceWith(document.importNode(fresh, true)); }
        });
        document.body.dataset.refreshed = String(Date.now());
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(stale(Object.keys(seen))); } });
  }

  var source = new EventSource(url.content);
  source.addEventListener("open", function () { if (dot) { dot.className = "live-dot on"; } });
  source.addEventListener("error", function () { if (dot) { dot.className = "live-dot"; } });
  source.addEventListener("live", function (e) {
    var data = JSON.parse(e.data);
    setCounts(data.counts || {});
    var versions = data.versions || {};
    var changed = Object.keys(versions).filter(function (k) { return seen[k] !== versions[k]; });
    seen = versions;
    var regions = stale(changed);
    if (regions.length) { refresh(regions); }
  });
  window.addEventListener("beforeunload", function () { source.close(); });
})();
