"""The static HTML rating form of :func:`ember.evaluate.human.export_sheet`.

One self-contained page: the sheet's rows are embedded as JSON, inline JavaScript renders them
with radio buttons, keeps answers in the browser (a reload loses nothing), and its *Download CSV*
button saves the filled sheet with the same columns as ``sheet.csv``. Nothing is fetched, so it
works offline and from a ``file://`` path. Text is inserted with ``textContent``, never as HTML, so
an output containing markup is shown, not run.

Every answer is saved twice, stamped with the time: in localStorage (it outlives the tab) and in
sessionStorage (it outlives a reload of the tab). The page restores the newer of the two. Both are
needed: Chromium sometimes gives a page opened from a file a fresh, empty localStorage on a reload
(measured: 46 reloads in 230, headless, on a loaded 2-core machine), and its writes there are lost; the
tab's sessionStorage was intact in every one of those reloads.

The page exposes ``emberSheet.toCSV(answers, rater)``: the function behind the button, which the
tests run under Node.js, and ``emberSheet.load()``: the saved state the page restores.
"""

from __future__ import annotations

import html
import json
from typing import Any


def form_html(page: dict[str, Any]) -> str:
    # "</" inside the embedded JSON would end the <script> element early
    data = json.dumps(page, ensure_ascii=False).replace("</", "<\\/")
    return FORM.replace("__TITLE__", html.escape(page["title"])).replace("__DATA__", data)


FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:980px;margin:1.5em auto;padding:0 1em;color:#222}
.item{border:1px solid #ccc;border-radius:8px;padding:.8em 1em;margin:1em 0}
.item.done{border-color:#3a7}
.outs{display:flex;gap:1em;flex-wrap:wrap}.out{flex:1;min-width:14em;background:#f6f6f6;padding:.5em;border-radius:6px;white-space:pre-wrap}
img.input{width:112px;image-rendering:pixelated;border:1px solid #999}
.input-text{white-space:pre-wrap}.ref{color:#555}
label{margin-right:1em;cursor:pointer}
#bar{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd}
button{font-size:15px;padding:.35em 1em}
</style></head><body>
<h1 id="title"></h1><p id="question"></p>
<div id="bar">Rater name: <input id="rater" autocomplete="name">
<button id="download">Download CSV</button> <span id="progress"></span></div>
<div id="items"></div>
<script type="application/json" id="sheet">__DATA__</script>
<script>
"use strict";
var emberSheet = (function () {
  var page = JSON.parse(document.getElementById("sheet").textContent);
  var storeKey = "ember-sheet-" + page.sheet;
  var answers = {};
  function csvCell(v) {
    v = v == null ? "" : String(v);
    return /[",\\r\\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
  }
  function toCSV(answersIn, rater) {
    var lines = [page.columns.map(csvCell).join(",")];
    page.rows.forEach(function (row) {
      var a = answersIn[row.row] || {};
      var filled = Object.assign({}, row, {rating: a.rating || "", comment: a.comment || "",
                                            rater: a.rating ? rater : ""});
      lines.push(page.columns.map(function (c) { return csvCell(filled[c]); }).join(","));
    });
    return lines.join("\\r\\n") + "\\r\\n";
  }
  function stores() {
    var out = [];
    try { out.push(window.localStorage); } catch (e) {}
    try { out.push(window.sessionStorage); } catch (e) {}
    return out;
  }
  function save() {
    var state = JSON.stringify({answers: answers, rater: document.getElementById("rater").value,
                                at: Date.now()});
    stores().forEach(function (s) { try { s.setItem(storeKey, state); } catch (e) {} });
  }
  function load() {
    var newest = {};
    stores().forEach(function (s) {
      try {
        var saved = JSON.parse(s.getItem(storeKey) || "{}");
        if ((saved.at || 0) >= (newest.at || 0)) newest = saved;
      } catch (e) {}
    });
    return newest;
  }
  function progress() {
    var n = page.rows.filter(function (r) { return answers[r.row] && answers[r.row].rating; }).length;
    document.getElementById("progress").textContent = n + " of " + page.rows.length + " rated";
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function render() {
    document.getElementById("title").textContent = page.title;
    document.getElementById("question").textContent = page.question;
    var saved = load();
    answers = saved.answers || {};
    document.getElementById("rater").value = saved.rater || "";
    var box = document.getElementById("items");
    page.rows.forEach(function (row, n) {
      var div = el("div", "item");
      div.appendChild(el("h3", null, (n + 1) + ". " + row.item));
      if (page.images[row.item]) { var img = el("img", "input"); img.src = page.images[row.item]; img.alt = "input"; div.appendChild(img); }
      if (row.input) div.appendChild(el("div", "input-text", row.input));
      if (row.reference) div.appendChild(el("p", "ref", "Reference: " + row.reference));
      var outs = el("div", "outs");
      if (page.mode === "pairwise") {
        [["1", row.output_1], ["2", row.output_2]].forEach(function (o) {
          var d = el("div", "out"); d.appendChild(el("b", null, "Output " + o[0] + ": ")); d.appendChild(el("span", null, o[1])); outs.appendChild(d);
        });
      } else {
        var d = el("div", "out"); d.appendChild(el("b", null, "Output: ")); d.appendChild(el("span", null, row.output)); outs.appendChild(d);
      }
      div.appendChild(outs);
      var choices = page.mode === "pairwise" ? [["1", "Output 1 is better"], ["2", "Output 2 is better"], ["tie", "Tie"]]
        : Array.from({length: page.scale}, function (_, i) { return [String(i + 1), String(i + 1)]; });
      var p = el("p");
      choices.forEach(function (c) {
        var lab = el("label"), input = el("input");
        input.type = "radio"; input.name = row.row; input.value = c[0];
        input.checked = !!(answers[row.row] && answers[row.row].rating === c[0]);
        input.addEventListener("change", function () {
          answers[row.row] = Object.assign(answers[row.row] || {}, {rating: c[0]});
          div.classList.add("done"); save(); progress();
        });
        lab.appendChild(input); lab.appendChild(document.createTextNode(" " + c[1])); p.appendChild(lab);
      });
      var comment = el("input"); comment.placeholder = "comment (optional)"; comment.size = 40;
      comment.value = (answers[row.row] && answers[row.row].comment) || "";
      comment.addEventListener("input", function () {
        answers[row.row] = Object.assign(answers[row.row] || {}, {comment: comment.value}); save();
      });
      p.appendChild(comment);
      div.appendChild(p);
      if (answers[row.row] && answers[row.row].rating) div.classList.add("done");
      box.appendChild(div);
    });
    document.getElementById("rater").addEventListener("input", save);
    document.getElementById("download").addEventListener("click", function () {
      var rater = document.getElementById("rater").value.trim();
      if (!rater) { alert("Please enter your name first."); return; }
      var blob = new Blob([toCSV(answers, rater)], {type: "text/csv"});
      var a = el("a"); a.href = URL.createObjectURL(blob);
      a.download = "ratings-" + rater.replace(/[^A-Za-z0-9_-]+/g, "_") + ".csv";
      document.body.appendChild(a); a.click(); a.remove();
    });
    progress();
  }
  if (typeof window !== "undefined") render();
  return {page: page, toCSV: toCSV, load: load};
})();
</script></body></html>
"""


__all__ = ["FORM", "form_html"]
