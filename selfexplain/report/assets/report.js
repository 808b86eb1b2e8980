(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("ex-data").textContent);
  var rows = D.rows, PAGE = D.pageSize || 25;
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function own(o, k) { return o !== null && typeof o === "object" && Object.prototype.hasOwnProperty.call(o, k); }
  function famInfo(name) {
    var f = own(D.family, name) ? D.family[name] : "unclassified";
    return own(D.familyInfo, f) ? D.familyInfo[f] : {label: f, color: "#a8a29e"};
  }
  function opt(sel, value, label) { var o = el("option", null, label); o.value = value; sel.appendChild(o); }
  var search = $("ex-search"), fb = $("ex-bench"), fk = $("ex-kind"), fe = $("ex-expl"), fc = $("ex-correct");
  var list = $("ex-list"), count = $("ex-count"), pageLbl = $("ex-page");
  var prevs = [$("ex-prev"), $("ex-prev2")], nexts = [$("ex-next"), $("ex-next2")];
  D.benchmarks.forEach(function (b) { opt(fb, b, b); });
  D.kinds.forEach(function (k) { opt(fk, k, k); });
  D.explainers.forEach(function (n) { opt(fe, n, n + " · " + famInfo(n).label); });
  rows.forEach(function (r) {
    var parts = [r.id, r.q, r.t];
    Object.keys(r.p).forEach(function (n) { parts.push(r.p[n][0]); });
    r.hay = parts.join("\n").toLowerCase();
  });
  var hits = rows, page = 0;

  function right(em) { return em === null || em === undefined ? null : em >= 0.5; }

  function marked(parent, text, needle) {  // text nodes + <mark> around matches; never parses HTML
    text = String(text);
    if (!needle) { parent.appendChild(document.createTextNode(text)); return parent; }
    var low = text.toLowerCase(), i = 0, j;
    while ((j = low.indexOf(needle, i)) !== -1) {
      if (j > i) parent.appendChild(document.createTextNode(text.slice(i, j)));
      parent.appendChild(el("mark", null, text.slice(j, j + needle.length)));
      i = j + needle.length;
    }
    if (i < text.length) parent.appendChild(document.createTextNode(text.slice(i)));
    return parent;
  }

  function swatch(name) {
    var s = el("span", "swatch");
    s.style.background = famInfo(name).color;
    return s;
  }

  function card(r, chosen, needle) {
    var c = el("article", "ex");
    var head = el("div", "ex-head");
    head.appendChild(el("span", "badge", r.b));
    if (r.k) {
      var kb = el("span", "badge kind", r.k);
      kb.style.background = own(D.kindColors, r.k) ? D.kindColors[r.k] : "#6366f1";
      head.appendChild(kb);
    }
    head.appendChild(marked(el("code", "ex-id"), r.id, needle));
    c.appendChild(head);
    var grid = el("div", "ex-grid"), left = el("div"), rightCol = el("div");
    left.appendChild(el("div", "lbl", "Input (query)"));
    left.appendChild(marked(el("pre", "query"), r.q, needle));
    var keys = Object.keys(r.c || {});
    if (keys.length) {
      var det = el("details"), sum = el("summary", null, "context (" + keys.length + " fields)");
      det.appendChild(sum);
      var t = el("table", "kv");
      keys.forEach(function (k) {
        var v = r.c[k], tr = el("tr");
        tr.appendChild(el("th", null, k));
        tr.appendChild(el("td", null, typeof v === "string" ? v : JSON.stringify(v)));
        t.appendChild(tr);
      });
      det.appendChild(t);
      left.appendChild(det);
    }
    rightCol.appendChild(el("div", "lbl", "Ground truth"));
    rightCol.appendChild(marked(el("div", "truth"), r.t, needle));
    rightCol.appendChild(el("div", "lbl", "Explainers' answers"));
    var tbl = el("table", "answers"), missing = [];
    var order = D.explainers.slice();
    if (chosen) order = [chosen].concat(order.filter(function (n) { return n !== chosen; }));
    order.forEach(function (n) {
      var p = own(r.p, n) ? r.p[n] : null;
      if (!p) { missing.push(n); return; }
      var ok = right(p[1]), tr = el("tr", n === chosen ? "chosen" : null);
      var m = el("td", "mark " + (ok === null ? "unk" : ok ? "ok" : "bad"), ok === null ? "?" : ok ? "✓" : "✗");
      m.title = ok === null ? "not scored" : ok ? "right" : "wrong";
      tr.appendChild(m);
      var who = el("td", "who");
      who.appendChild(swatch(n));
      who.appendChild(document.createTextNode(n));
      tr.appendChild(who);
      tr.appendChild(p[0] === "" ? el("td", "txt unk", "(empty answer)") : marked(el("td", "txt"), p[0], needle));
      tbl.appendChild(tr);
    });
    rightCol.appendChild(tbl);
    if (missing.length) rightCol.appendChild(el("div", "missing", "not run on this item: " + missing.join(", ")));
    grid.appendChild(left);
    grid.appendChild(rightCol);
    c.appendChild(grid);
    return c;
  }

  function render() {
    var pages = Math.max(1, Math.ceil(hits.length / PAGE));
    page = Math.min(Math.max(0, page), pages - 1);
    var needle = search.value.trim().toLowerCase(), chosen = fe.value;
    while (list.firstChild) list.removeChild(list.firstChild);
    var start = page * PAGE, end = Math.min(hits.length, start + PAGE);
    for (var i = start; i < end; i++) list.appendChild(card(hits[i], chosen, needle));
    if (!hits.length) list.appendChild(el("div", "empty", rows.length ? "No example matches these filters." :
                                                         "This report carries no per-example data."));
    count.textContent = hits.length ? ("showing " + (start + 1) + "–" + end + " of " + hits.length +
                                       " examples" + (hits.length < rows.length ? " (" + rows.length + " in all)" : ""))
                                    : "0 examples";
    pageLbl.textContent = "page " + (page + 1) + " / " + pages;
    prevs.forEach(function (b) { b.disabled = page === 0; });
    nexts.forEach(function (b) { b.disabled = page >= pages - 1; });
  }

  function apply() {
    var needle = search.value.trim().toLowerCase(), b = fb.value, k = fk.value, e = fe.value;
    fc.disabled = !e;
    var want = fc.disabled || fc.value === "" ? null : fc.value === "1";
    hits = rows.filter(function (r) {
      if (b && r.b !== b) return false;
      if (k && r.k !== k) return false;
      if (e) {
        var p = own(r.p, e) ? r.p[e] : null;
        if (!p) return false;
        if (want !== null && right(p[1]) !== want) return false;
      }
      return !needle || r.hay.indexOf(needle) !== -1;
    });
    page = 0;
    render();
  }

  var timer = null;
  search.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(apply, 120); });
  [fb, fk, fe, fc].forEach(function (s) { s.addEventListener("change", apply); });
  prevs.forEach(function (b) { b.addEventListener("click", function () { page--; render(); }); });
  nexts.forEach(function (b) {
    b.addEventListener("click", function () {
      page++; render();
      if (this.id === "ex-next2") $("examples").scrollIntoView();
    });
  });
  prevs[1].addEventListener("click", function () { $("examples").scrollIntoView(); });
  apply();
})();
