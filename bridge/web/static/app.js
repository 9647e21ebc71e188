// Small enhancements; every page works without this file.
(function () {
  "use strict";

  // Dates follow the browser's zone: tell the server once (a cookie, read on the next page).
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && document.cookie.indexOf("tz=" + encodeURIComponent(zone)) === -1) {
      document.cookie = "tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax";
    }
  } catch (e) { /* no Intl: the server's default zone stays */ }

  // "Expand all quotes" on a thread page.
  var toggle = document.getElementById("toggle-quotes");
  var quotes = document.querySelectorAll("details.quoted");
  if (toggle && quotes.length) {
    toggle.hidden = false;
    var collapse = toggle.getAttribute("data-collapse") || "";
    var expand = toggle.textContent;
    toggle.addEventListener("click", function () {
      var open = toggle.getAttribute("aria-pressed") !== "true";
      quotes.forEach(function (d) { d.open = open; });
      toggle.setAttribute("aria-pressed", open ? "true" : "false");
      toggle.textContent = open && collapse ? collapse : expand;
    });
  }

  // j / k move between messages of a thread.
  var messages = Array.prototype.slice.call(document.querySelectorAll("article.msg"));
  if (messages.length) {
    var current = -1;
    var hash = window.location.hash.slice(1);
    messages.forEach(function (m, i) { if (m.id === hash) { current = i; } });
    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey) { return; }
      var target = event.target;
      if (target && /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) { return; }
      var step = event.key === "j" ? 1 : event.key === "k" ? -1 : 0;
      if (!step) { return; }
      current = Math.max(0, Math.min(messages.length - 1, current + step));
      messages.forEach(function (m) { m.classList.remove("current"); });
      var m = messages[current];
      m.classList.add("current");
      m.focus({ preventScroll: true });
      m.scrollIntoView({ block: "start" });
      if (window.history && window.history.replaceState) {
        window.history.replaceState(null, "", "#" + m.id);
      }
    });
  }
})();
