/* scenetrigger on-site slots (docs/ads.md, "On-site slots").
 * <div data-scenetrigger-slot="home" data-user="u1" data-exp="1796680000" data-sig="..."></div>
 * <script src="/slots.js" defer></script>
 * (data-exp and data-sig: the shop backend's signature of the user until exp,
 * `scenetrigger slot-sig`.)
 * Fetches GET /slots/{slot}?user=&exp=&sig= from the server that served this file,
 * renders title, body and products as text (never as HTML), then sends the
 * impression beacon. window.scenetriggerSlots.refresh() fetches them again. */
(function () {
  "use strict";
  var me = document.currentScript;
  var base = me && me.src ? new URL(me.src, location.href) : new URL(location.href);

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text) { node.textContent = text; }
    return node;
  }

  function safeHref(link) {
    if (!link) { return ""; }
    var url = new URL(link, base);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : "";
  }

  function render(box, data) {
    var card = el("div", "st-slot");
    card.setAttribute("data-variant", data.variant);
    card.appendChild(el("h3", "st-title", data.title));
    if (data.body && !data.products.length) { card.appendChild(el("p", "st-body", data.body)); }
    var list = el("ul", "st-products");
    data.products.forEach(function (p) {
      var item = el("li", "st-product");
      var href = safeHref(p.link);
      var label = el(href ? "a" : "span", "st-name", p.name);
      if (href) { label.href = href; }
      item.appendChild(label);
      item.appendChild(el("span", "st-price", " " + p.price));
      list.appendChild(item);
    });
    if (data.products.length) { card.appendChild(list); }
    box.replaceChildren(card);
    box.setAttribute("data-variant", data.variant);
    if (data.impression) { new Image(1, 1).src = new URL(data.impression, base).href; }
  }

  function load(box) {
    var q = new URLSearchParams({ user: box.getAttribute("data-user") || "" });
    var sig = box.getAttribute("data-sig");
    if (sig) { q.set("exp", box.getAttribute("data-exp") || ""); q.set("sig", sig); }
    var url = new URL("/slots/" + encodeURIComponent(box.getAttribute("data-scenetrigger-slot")) +
                      "?" + q.toString(), base);
    return fetch(url.href, { credentials: "omit" })
      .then(function (r) { if (!r.ok) { throw new Error("slot " + r.status); } return r.json(); })
      .then(function (data) { render(box, data); })
      .catch(function (err) { box.setAttribute("data-error", String(err.message || err)); });
  }

  function refresh() {
    var boxes = document.querySelectorAll("[data-scenetrigger-slot]");
    return Promise.all(Array.prototype.map.call(boxes, load));
  }

  window.scenetriggerSlots = { refresh: refresh };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", refresh);
  } else {
    refresh();
  }
})();
