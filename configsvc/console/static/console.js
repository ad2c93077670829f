// Live updates for the console's pages: one EventSource per page, fed by configsvc's watch of
// the routes and its health sampler. Each event carries the page's live parts, rendered and
// escaped on the server; they replace the parts of the same id. No framework, no build step.
(function () {
  "use strict";
  var body = document.body;
  var view = body.dataset.live;
  if (!view || !window.EventSource) {
    return;
  }
  var state = document.getElementById("live-state");
  var since = body.dataset.version || "0";
  var url = body.dataset.prefix + "/events?view=" + encodeURIComponent(view) + "&since=" + since;
  if (view === "agent") {
    url += "&agent=" + encodeURIComponent(body.dataset.agent);
  }
  function say(text, css) {
    if (state) {
      state.textContent = text;
      state.className = "live " + css;
    }
  }
  var source = new EventSource(url);
  source.onopen = function () {
    say("live", "ok");
  };
  source.onerror = function () {
    // EventSource reconnects by itself (and resumes after the last event id it saw).
    say("reconnecting…", "warn");
  };
  source.addEventListener("fragments", function (event) {
    var parts = JSON.parse(event.data);
    Object.keys(parts).forEach(function (id) {
      var target = document.getElementById(id);
      if (target) {
        target.innerHTML = parts[id];
      }
    });
    body.dataset.version = event.lastEventId;
    say("live · updated " + new Date().toLocaleTimeString(), "ok");
  });
})();
