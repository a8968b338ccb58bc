// The import's progress: the upload's bytes as they go, then a word while the server reads the file.
// Without this file the import works the same, without the bar.
(function () {
  "use strict";

  function isImport(event) { return event.target && event.target.id === "import-form"; }

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (!isImport(event)) return;
    var bar = document.getElementById("import-progress");
    bar.value = 0;
    bar.hidden = false;
    document.getElementById("import-result").textContent = "Uploading…";
  });

  document.addEventListener("htmx:xhr:progress", function (event) {
    if (!isImport(event) || !event.detail.lengthComputable) return;
    var bar = document.getElementById("import-progress");
    bar.max = event.detail.total;
    bar.value = event.detail.loaded;
    if (event.detail.loaded >= event.detail.total) {
      document.getElementById("import-result").textContent = "Uploaded; importing…";
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    if (isImport(event)) document.getElementById("import-progress").hidden = true;
  });
})();
