// Small niceties on top of htmx: Enter sends, the composer clears, streams resume at the right
// offset, code gets copied, the view follows the answer. Everything works without this file.
(function () {
  "use strict";

  document.addEventListener("keydown", function (event) {
    var box = event.target;
    if (box.id === "content" && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (box.value.trim()) box.form.requestSubmit();
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (form.id === "composer" && event.detail.successful) {
      form.reset();
      document.getElementById("content").focus();
    }
  });

  // The sse extension reconnects with the URL it was given; keep its cursor at what the page shows,
  // so a reconnect resumes instead of replaying.
  document.addEventListener("htmx:sseMessage", function (event) {
    var id = event.detail && event.detail.lastEventId;
    var source = event.target.closest && event.target.closest("[sse-connect]");
    if (!id || !source) return;
    var url = new URL(source.getAttribute("sse-connect"), window.location.href);
    url.searchParams.set("cursor", id);
    source.setAttribute("sse-connect", url.pathname + url.search);
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button.copy");
    if (!button) return;
    var code = button.parentElement.querySelector("pre");
    if (code && navigator.clipboard) {
      navigator.clipboard.writeText(code.innerText).then(function () { button.textContent = "Copied"; });
    }
  });

  // Follow the answer while the reader is at the bottom; stop when they scroll up.
  var following = true;
  function messages() { return document.getElementById("messages"); }
  document.addEventListener("scroll", function (event) {
    var box = event.target;
    if (box === messages()) following = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }, true);
  document.addEventListener("htmx:afterSwap", function () {
    var box = messages();
    if (box && following) box.scrollTop = box.scrollHeight;
  });
  document.addEventListener("htmx:sseMessage", function () {
    var box = messages();
    if (box && following) box.scrollTop = box.scrollHeight;
  });
})();
