// The filter browser: swaps embedded images when a layer or filter is picked. Text goes in
// through textContent only, so names from the run folder can never become markup.
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

  function show() {
    var figs = (data.figures[layerSel.value] || {})[filterSel.value] || {};
    panels.forEach(function (panel) {
      var fig = figs[panel.getAttribute("data-kind")];
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
