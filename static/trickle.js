// Small niceties on top of htmx: Enter sends, the composer clears, streams resume at the right
// offset, code gets copied, the view follows the answer, the phone drawer, dialogs and keyboard
// shortcuts. Everything works without this file.
(function () {
  "use strict";

  var root = document.documentElement;
  root.classList.add("js"); // shows the controls that need this file (copy, the menu button)
  var isMac = /Mac|iP(hone|ad|od)/.test(navigator.platform || navigator.userAgent);

  function byId(id) { return document.getElementById(id); }
  function last(selector) {
    var all = document.querySelectorAll(selector);
    return all.length ? all[all.length - 1] : null;
  }
  function typing(element) {
    return element && element.closest && !!element.closest("input, textarea, select, [contenteditable]");
  }

  // -- the phone drawer: a real button, focus moved in and back, closed by Esc or a choice ----------
  function menuButton() { return document.querySelector("button.menu-button"); }
  function drawerShown() { var menu = menuButton(); return !!menu && menu.getClientRects().length > 0; }
  function drawerOpen() { return root.classList.contains("drawer-open"); }
  function setDrawer(open, restoreFocus) {
    var menu = menuButton(), chat = byId("chat"), sidebar = byId("sidebar");
    if (!menu || !sidebar) return;
    root.classList.toggle("drawer-open", open);
    menu.setAttribute("aria-expanded", String(open));
    if (chat) chat.inert = open;
    if (open) {
      var close = sidebar.querySelector(".drawer-close");
      if (close) close.focus();
    } else if (restoreFocus) {
      menu.focus();
    }
  }
  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target : event.target.parentElement;
    if (target.closest("button.menu-button")) {
      setDrawer(!drawerOpen(), false);
    } else if (target.closest(".drawer-close, .backdrop")) {
      // Without JavaScript these links close the drawer by leaving #sidebar; with it, the class does.
      if (location.hash !== "#sidebar") event.preventDefault();
      setDrawer(false, true);
    } else if (drawerOpen() && target.closest("#sidebar a")) {
      setDrawer(false, false); // a conversation or New chat was chosen
    }
  });
  window.matchMedia("(max-width: 700px)").addEventListener("change", function (change) {
    if (!change.matches && drawerOpen()) setDrawer(false, false);
  });
  window.addEventListener("pageshow", function () { if (drawerOpen()) setDrawer(false, false); });

  // -- Options and Edit: panels that close on Esc or a click elsewhere; Cancel closes an edit ------
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details.tools[open]").forEach(function (tools) {
      if (!tools.contains(event.target)) tools.open = false;
    });
  });
  document.addEventListener("toggle", function (event) {
    var edit = event.target;
    if (edit.matches && edit.matches("details.edit") && edit.open) edit.querySelector("textarea").focus();
  }, true); // toggle does not bubble
  document.addEventListener("reset", function (event) {
    var edit = event.target.closest("details.edit");
    if (!edit) return;
    edit.open = false;
    edit.querySelector("summary").focus();
  });
  function editLastQuestion() {
    var edit = last("article.message.user details.edit");
    if (!edit) return;
    edit.open = true;
    var box = edit.querySelector("textarea");
    box.focus(); // now, not at the toggle event, so the caret can go to the end
    box.setSelectionRange(box.value.length, box.value.length);
    box.scrollIntoView({ block: "nearest" });
  }

  // -- a confirmation in a styled <dialog> instead of the browser's confirm() (hx-confirm) ---------
  document.addEventListener("htmx:confirm", function (event) {
    var dialog = byId("confirm-dialog");
    if (!event.detail.question || !dialog || !dialog.showModal) return;
    event.preventDefault();
    byId("confirm-text").textContent = event.detail.question;
    byId("confirm-ok").textContent = event.detail.elt.getAttribute("data-confirm-action") || "OK";
    dialog.returnValue = "";
    dialog.addEventListener("close", function () {
      if (dialog.returnValue === "ok") event.detail.issueRequest(true);
    }, { once: true });
    dialog.showModal();
  });
  function showShortcuts() {
    var dialog = byId("shortcuts");
    if (dialog && !dialog.open) dialog.showModal();
  }
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest(".shortcuts-button")) showShortcuts();
  });

  // -- keys: Enter sends; Esc stops or closes; the shortcuts the help dialog (?) lists ------------
  function stopAnswer() {
    var stop = last("article.streaming button.stop");
    if (stop) stop.click();
    return !!stop;
  }
  function escape(event) {
    if (event.target.closest && event.target.closest("dialog")) return false; // the dialog closes itself
    if (drawerOpen()) { setDrawer(false, true); return true; }
    var tools = document.querySelector("details.tools[open]");
    if (tools) { tools.open = false; tools.querySelector("summary").focus(); return true; }
    var edit = event.target.closest && event.target.closest("details.edit[open]");
    if (edit) { edit.querySelector("form").reset(); return true; }
    return stopAnswer();
  }
  function searchConversations() {
    if (drawerShown()) setDrawer(true, false);
    var search = byId("search");
    if (search) { search.focus(); search.select(); }
  }
  function copyLastAnswer() {
    var button = last("article.message.assistant:not(.streaming) button.copy-answer");
    if (button) button.click();
  }
  function shortcut(event) {
    var mod = isMac ? event.metaKey : event.ctrlKey;
    var key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (event.key === "Escape" && event.shiftKey && !mod) {
      var box = byId("content");
      if (drawerOpen()) setDrawer(false, false);
      if (box) box.focus();
      return !!box;
    }
    if (event.key === "Escape" && !mod) return escape(event);
    if (mod && event.shiftKey && !event.altKey) {
      if (key === "o") { location.assign(document.querySelector(".new-chat").href); return true; }
      if (key === "c") { copyLastAnswer(); return true; }
      if (key === "e") { editLastQuestion(); return true; }
    }
    if (mod && !event.shiftKey && !event.altKey && key === "k") { searchConversations(); return true; }
    if (event.key === "?" && !mod && !event.altKey && !typing(event.target)) { showShortcuts(); return true; }
    return false;
  }

  document.addEventListener("keydown", function (event) {
    var box = event.target;
    if (event.isComposing) return;
    if (box.id === "content" && event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      if (box.value.trim() || picked.length) box.form.requestSubmit(); // files alone may be sent
    } else if (shortcut(event)) {
      event.preventDefault();
    }
  });

  // -- files to send: picked by the button, pasted or dropped, shown as thumbnails (drawn on a canvas:
  // the page's policy loads images from the server only) and chips, each removable before sending.
  // They travel in the composer's own file input, so the form, htmx and the no-JS post all send them.
  var picked = []; // File objects, in order
  var PREVIEW = 56; // px, the composer thumbnail's side
  function isImage(file) { return /^image\/(png|jpeg|gif|webp)$/.test(file.type); }
  function syncPicked() {
    var input = byId("files");
    if (!input || !window.DataTransfer) return;
    var transfer = new DataTransfer();
    picked.forEach(function (file) { transfer.items.add(file); });
    input.files = transfer.files;
    var box = byId("content");
    if (box) box.required = !picked.length; // files alone are a message
    showPicked();
  }
  function preview(file) {
    var canvas = document.createElement("canvas");
    canvas.className = "preview";
    canvas.width = canvas.height = PREVIEW;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", file.name);
    if (window.createImageBitmap) {
      createImageBitmap(file).then(function (bitmap) {
        var scale = Math.max(PREVIEW / bitmap.width, PREVIEW / bitmap.height);
        var width = bitmap.width * scale, height = bitmap.height * scale;
        canvas.getContext("2d").drawImage(bitmap, (PREVIEW - width) / 2, (PREVIEW - height) / 2, width, height);
      }).catch(function () { canvas.classList.add("unreadable"); });
    }
    return canvas;
  }
  function showPicked() {
    var list = byId("composer-files");
    if (!list) return;
    list.textContent = "";
    picked.forEach(function (file, index) {
      var item = document.createElement("li");
      item.className = "composer-file " + (isImage(file) ? "image" : "text");
      if (isImage(file)) item.appendChild(preview(file));
      var name = document.createElement("span");
      name.className = "file-name";
      name.textContent = file.name;
      item.appendChild(name);
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove-file";
      remove.textContent = "×";
      remove.setAttribute("aria-label", "Remove " + file.name);
      remove.addEventListener("click", function () {
        picked.splice(index, 1);
        syncPicked();
        byId("content").focus();
      });
      item.appendChild(remove);
      list.appendChild(item);
    });
  }
  function addFiles(files) {
    if (!byId("files")) return false;
    picked = picked.concat(Array.prototype.slice.call(files));
    syncPicked();
    return true;
  }
  document.addEventListener("change", function (event) {
    if (event.target.id !== "files") return;
    var chosen = Array.prototype.slice.call(event.target.files); // the input holds only the new choice
    picked = picked.concat(chosen);
    syncPicked();
  });
  document.addEventListener("reset", function (event) {
    if (event.target.id !== "composer") return;
    picked = [];
    byId("content").required = true;
    showPicked();
  });
  document.addEventListener("paste", function (event) {
    var data = event.clipboardData;
    if (!data || !data.files || !data.files.length || !event.target.closest || !event.target.closest("#composer")) return;
    if (addFiles(data.files) && !data.getData("text/plain")) event.preventDefault();
  });
  function carriesFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return !!types && Array.prototype.indexOf.call(types, "Files") >= 0 && !!byId("files");
  }
  document.addEventListener("dragover", function (event) {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    root.classList.add("dropping");
  });
  document.addEventListener("dragleave", function (event) {
    if (!event.relatedTarget) root.classList.remove("dropping");
  });
  document.addEventListener("drop", function (event) {
    root.classList.remove("dropping");
    if (!carriesFiles(event)) return;
    event.preventDefault();
    addFiles(event.dataTransfer.files);
    byId("content").focus();
  });

  // -- a message sent while an answer streams waits its turn: shown queued, sent when the answer
  // ends (so the answer is in its history), cancelled by its button. Stop, then Send, redirects.
  var queue = []; // {text, files, bubble}, oldest first
  var sending = false; // a message is on its way: its answer is not on the page yet
  var releasing = false; // the next composer request is a queued message's
  var releasedRequests = new WeakSet();
  function busy() { return sending || !!document.querySelector("#messages article.streaming"); }
  function showQueue() { // after whatever the page swapped in, the queued bubbles come last
    var box = messages();
    if (box) queue.forEach(function (queued) { box.appendChild(queued.bubble); });
  }
  function enqueue(form) {
    var template = byId("queued-template");
    if (!template) return false;
    var bubble = template.content.firstElementChild.cloneNode(true);
    var text = form.elements.content.value;
    bubble.querySelector(".body").textContent = text;
    if (picked.length) { // the files go with it, named in its bubble
      var names = document.createElement("p");
      names.className = "queued-files";
      picked.forEach(function (file) {
        var chip = document.createElement("span");
        chip.className = "queued-file";
        chip.textContent = file.name;
        names.appendChild(chip);
      });
      bubble.querySelector(".body").after(names);
    }
    queue.push({ text: text, files: picked.slice(), bubble: bubble });
    showQueue();
    form.reset();
    byId("content").focus();
    follow();
    return true;
  }
  function release() {
    var form = byId("composer");
    if (!queue.length || busy() || !form) return;
    var next = queue.shift();
    next.bubble.remove();
    releasing = true;
    form.noValidate = true; // its own text is what counts, not what the composer holds now (maybe nothing)
    var composing = picked; // the files being picked now stay; the queued message's go out
    picked = next.files;
    syncPicked();
    try {
      htmx.ajax("POST", form.getAttribute("hx-post"), {
        source: form, target: "#messages", swap: "beforeend", values: { content: next.text },
      });
    } finally {
      form.noValidate = false;
      picked = composing;
      syncPicked();
    }
  }
  document.addEventListener("click", function (event) {
    var cancel = event.target.closest && event.target.closest("button.cancel-queued");
    if (!cancel) return;
    var bubble = cancel.closest("article.queued");
    queue = queue.filter(function (queued) { return queued.bubble !== bubble; });
    bubble.remove();
    byId("content").focus();
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt.id !== "composer") return;
    if (releasing) {
      releasing = false;
      releasedRequests.add(event.detail.xhr);
    } else if (busy() && enqueue(event.detail.elt)) {
      event.preventDefault();
      return;
    }
    sending = true;
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (form.id !== "composer") return;
    sending = false;
    // The composer keeps what is being typed while a queued message goes out.
    if (event.detail.successful && !releasedRequests.has(event.detail.xhr)) {
      form.reset();
      byId("content").focus();
    }
    release(); // a failed send (e.g. over a limit) lets the next one go
  });
  document.addEventListener("htmx:afterSwap", showQueue);
  document.addEventListener("htmx:afterSettle", release); // e.g. the answer's `done` replaced its bubble
  document.addEventListener("htmx:sseClose", release);

  // -- "Add to this answer": the composer's text goes to the answer being written, which keeps what
  // it wrote and goes on with it in mind; the server answers with the bubble, the addition shown in
  // it, streaming on from there (a fresh stream replaces the old one with the bubble).
  var adding = null; // {answer, text}: the addition on its way
  document.addEventListener("click", function (event) {
    var add = event.target.closest && event.target.closest("button.add-context");
    if (!add) return;
    var box = byId("content");
    var answer = last("#messages article.streaming[data-context-url]");
    if (!answer || !box.value.trim() || adding) { box.focus(); return; }
    adding = { answer: answer, text: box.value };
    var done = function () { adding = null; };
    htmx.ajax("POST", answer.getAttribute("data-context-url"), {
      source: answer, target: answer, swap: "outerHTML", values: { content: box.value },
    }).then(done, done);
  });
  document.addEventListener("htmx:beforeOnLoad", function (event) { // on the bubble, before it is replaced
    if (!adding || event.detail.elt !== adding.answer || event.detail.xhr.status !== 200) return;
    var box = byId("content");
    if (box.value === adding.text) box.value = ""; // what was typed since stays
    var error = byId("composer-error");
    if (error) error.textContent = "";
    box.focus();
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
      var answer = byId(button.getAttribute("data-copy-target"));
      var body = answer && answer.querySelector(".body");
      if (body) copy(button, body.innerText.trim());
    }
  });

  // Follow the answer while the reader is at the bottom; when they scroll up, stop and offer a jump back.
  var following = true;
  var pinned = null; // the scrollTop this script last set
  function messages() { return byId("messages"); }
  function jumpButton() { return byId("jump-latest"); }
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
  // The list got shorter (a panel, the on-screen keyboard, a taller composer): a follower stays at the bottom.
  if (window.ResizeObserver && messages()) {
    new ResizeObserver(function () { if (following) { pinned = null; follow(); } }).observe(messages());
  }
})();
