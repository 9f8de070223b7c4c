// The filter browser: swaps embedded images and numbers when a layer or filter is picked; any
// figure enlarges on click. Text goes in through textContent only, so names from the run folder
// can never become markup.
(function () {
  "use strict";
  var zoom = document.getElementById("zoom");
  function openZoom(img) {
    var fig = img.closest("figure");
    var cap = fig ? fig.querySelector("figcaption") : null;
    zoom.querySelector("img").src = img.src;
    zoom.querySelector("p").textContent = cap ? cap.textContent : "";
    zoom.hidden = false;
  }
  if (zoom) {
    document.addEventListener("click", function (ev) {
      var t = ev.target;
      if (!zoom.hidden) { zoom.hidden = true; return; }
      if (t.tagName === "IMG" && t.closest("main figure") && t.getAttribute("src")) { openZoom(t); }
    });
    document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") { zoom.hidden = true; } });
  }
}());
(function () {
  "use strict";
  var node = document.getElementById("fb-data");
  if (!node) { return; }
  var data = JSON.parse(node.textContent);
  var layerSel = document.getElementById("fb-layer");
  var filterSel = document.getElementById("fb-filter");
  var panels = document.querySelectorAll(".fb-panel");
  var byName = {};
  data.layers.forEach(function (l) { byName[l.name] = l; });

  function fillFilters(layer, keep) {
    while (filterSel.firstChild) { filterSel.removeChild(filterSel.firstChild); }
    byName[layer].filters.forEach(function (f) {
      var opt = document.createElement("option");
      opt.value = String(f);
      opt.textContent = "filter " + f;
      filterSel.appendChild(opt);
    });
    if (keep !== undefined && byName[layer].filters.indexOf(keep) >= 0) { filterSel.value = String(keep); }
  }

  function showNumbers() {
    var box = document.getElementById("fb-numbers");
    if (!box) { return; }
    var vals = ((data.values || {})[layerSel.value] || {})[filterSel.value] || {};
    box.querySelectorAll("div[data-key]").forEach(function (item) {
      var v = vals[item.getAttribute("data-key")];
      item.querySelector("dd").textContent = v === undefined ? "\u2013" : v;
      item.classList.toggle("bad", item.getAttribute("data-key") === "dead" && v === "yes");
    });
  }

  // a figure drawn smaller than a panel (a 32-pixel picture) is enlarged by a whole factor; one
  // drawn larger keeps its size, so its text is as large as it was set
  function enlarge(img) {
    img.style.width = "";
    var w = img.naturalWidth;
    if (w > 0 && w < 200) { img.style.width = (w * Math.floor(240 / w)) + "px"; }
  }
  panels.forEach(function (panel) {
    var img = panel.querySelector("img");
    img.addEventListener("load", function () { enlarge(img); });
  });

  // a layer's figures of one kind: a pattern and the filters that follow it, and the others
  // (browser.py, pack); a filter's own figure is made from them when it is picked
  var listed = {};
  function figureOf(layer, filter, kind) {
    var e = (data.figures[layer] || {})[kind];
    if (!e) { return null; }
    if (e.other && e.other[filter]) { return e.other[filter]; }
    var key = layer + "\u0000" + kind;
    if (!listed[key]) {
      listed[key] = {};
      (e.filters || []).forEach(function (f) { listed[key][String(f)] = true; });
    }
    if (!listed[key][filter]) { return null; }
    return {src: e.src.split("{f}").join(filter), caption: e.caption.split("{f}").join(filter)};
  }

  function show() {
    showNumbers();
    panels.forEach(function (panel) {
      var fig = figureOf(layerSel.value, filterSel.value, panel.getAttribute("data-kind"));
      var img = panel.querySelector("img");
      var cap = panel.querySelector("figcaption");
      if (fig) {
        img.src = fig.src;
        img.hidden = false;
        cap.textContent = fig.caption;
        panel.classList.remove("empty");
      } else {
        img.removeAttribute("src");
        img.hidden = true;
        cap.textContent = "no figure for this filter";
        panel.classList.add("empty");
      }
    });
  }

  function select(layer, filter) {
    if (!byName[layer]) { return false; }
    layerSel.value = layer;
    fillFilters(layer, filter);
    show();
    return true;
  }

  function step(delta) {
    var i = filterSel.selectedIndex + delta;
    if (i >= 0 && i < filterSel.options.length) { filterSel.selectedIndex = i; show(); }
  }

  // "#fb=conv2/5" (the links in the tables) opens that filter
  function fromHash() {
    var m = /^#fb=(.+)\/(\d+)$/.exec(decodeURIComponent(window.location.hash));
    if (m && select(m[1], parseInt(m[2], 10))) {
      document.getElementById("filter-browser").scrollIntoView();
    }
  }

  layerSel.addEventListener("change", function () { fillFilters(layerSel.value); show(); });
  filterSel.addEventListener("change", show);
  document.getElementById("fb-prev").addEventListener("click", function () { step(-1); });
  document.getElementById("fb-next").addEventListener("click", function () { step(1); });
  window.addEventListener("hashchange", fromHash);
  fillFilters(layerSel.value);
  show();
  fromHash();
}());
(function () {
  "use strict";
  // The filter browser of a large network: each layer's filters on pages of index.size
  // (report/pages.py). The search box opens the page of a layer and filter; a table link
  // "#fb=layer/5" opens that filter's page.
  var node = document.getElementById("fb-index");
  if (!node) { return; }
  var index = JSON.parse(node.textContent);
  var layerIn = document.getElementById("fb-find-layer");
  var filterIn = document.getElementById("fb-find-filter");
  var said = document.getElementById("fb-find-said");

  // an exact name wins; else every layer whose name contains the text, ignoring case
  function findLayers(text) {
    var t = text.trim();
    var low = t.toLowerCase();
    var exact = index.layers.filter(function (l) { return l.name === t; });
    if (exact.length || !t) { return exact; }
    return index.layers.filter(function (l) { return l.name.toLowerCase().indexOf(low) >= 0; });
  }

  // the page that holds filter f: its place among the layer's filters (runs of numbers)
  function pageOf(layer, f) {
    var before = 0;
    for (var i = 0; i < layer.ranges.length; i++) {
      var r = layer.ranges[i];
      if (f >= r[0] && f <= r[1]) { return Math.floor((before + f - r[0]) / index.size); }
      before += r[1] - r[0] + 1;
    }
    return -1;
  }

  function hrefOf(layer, f) {
    if (f === null) { return layer.base + "1.html"; }
    var p = pageOf(layer, f);
    return p < 0 ? null : layer.base + (p + 1) + ".html#f" + f;
  }

  function go(layerText, filterText) {
    var found = findLayers(layerText);
    if (found.length !== 1) {
      var names = found.slice(0, 6).map(function (l) { return l.name; }).join(", ");
      said.textContent = found.length ? found.length + " layers match: " + names + (found.length > 6 ? ", ..." : "")
        : "no layer is called or contains \u201c" + layerText.trim() + "\u201d";
      return false;
    }
    var f = /^\s*$/.test(filterText) ? null : parseInt(filterText, 10);
    var href = (f === null || f >= 0) ? hrefOf(found[0], f) : null;
    if (!href) {
      said.textContent = found[0].name + " has no filter " + filterText.trim();
      return false;
    }
    said.textContent = "";
    window.location.href = href;
    return true;
  }

  function submit() { go(layerIn.value, filterIn.value); }
  document.getElementById("fb-find").addEventListener("click", submit);
  [layerIn, filterIn].forEach(function (input) {
    input.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { submit(); } });
  });

  function fromHash() {
    var m = /^#fb=(.+)\/(\d+)$/.exec(decodeURIComponent(window.location.hash));
    if (m) { go(m[1], m[2]); }
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
}());
