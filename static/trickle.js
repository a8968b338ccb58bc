// Small niceties on top of htmx: Enter sends, the composer clears, streams resume at the right
// offset, code gets copied, the view follows the answer. Everything works without this file.
(function () {
  "use strict";

  document.addEventListener("keydown", function (event) {
    var box = event.target;
    if (box.id === "content" && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (box.value.trim()) box.form.requestSubmit();
    } else if (event.key === "Escape") {
      var stops = document.querySelectorAll("article.streaming button.stop");
      if (stops.length) {
        event.preventDefault();
        stops[stops.length - 1].click();
      }
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

  function copy(button, text) {
    if (!navigator.clipboard) return;
    navigator.clipboard.writeText(text).then(function () { button.textContent = "Copied"; });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button.copy, button.copy-answer");
    if (!button) return;
    if (button.classList.contains("copy")) {
      var code = button.parentElement.querySelector("pre");
      if (code) copy(button, code.innerText);
    } else {
      var answer = document.getElementById(button.getAttribute("data-copy-target"));
      var body = answer && answer.querySelector(".body");
      if (body) copy(button, body.innerText.trim());
    }
  });

  // Follow the answer while the reader is at the bottom; when they scroll up, stop and offer a jump back.
  var following = true;
  var pinned = null; // the scrollTop this script last set
  function messages() { return document.getElementById("messages"); }
  function jumpButton() { return document.getElementById("jump-latest"); }
  function follow() {
    var box = messages();
    if (!box) return;
    // The reader moved up since we last scrolled (their scroll event may not have fired yet): let them be.
    if (following && pinned !== null && box.scrollTop < pinned - 2 && box.scrollHeight - box.clientHeight >= pinned - 2) {
      following = false;
    }
    if (following) {
      box.scrollTop = box.scrollHeight;
      pinned = box.scrollTop;
    }
    var jump = jumpButton();
    if (jump) jump.hidden = following || box.scrollHeight <= box.clientHeight;
  }
  document.addEventListener("scroll", function (event) {
    var box = event.target;
    if (box !== messages()) return;
    following = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    var jump = jumpButton();
    if (jump) jump.hidden = following;
  }, true);
  document.addEventListener("click", function (event) {
    if (event.target.id !== "jump-latest") return;
    following = true;
    pinned = null;
    follow();
  });
  document.addEventListener("htmx:afterSwap", follow);
  document.addEventListener("htmx:sseMessage", follow);
})();
