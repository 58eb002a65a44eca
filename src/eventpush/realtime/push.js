/* eventpush realtime browser client (push.js) — dependency-free.
 *
 *   var client = new Push.Client()                    // transports: EventSource (SSE) where available, else LongPoll
 *     .url({longpoll: "http://127.0.0.1:8787/push/greetings"})
 *     .message(function (msg) { ... })                // raw text (options({json: true}) parses JSON)
 *     .connect();
 *
 * The consumer id travels as ?cid= (EventSource cannot set headers), so the consumer keeps its queue between
 * requests: messages published while it reconnects arrive afterwards, in order. The chainable API follows the
 * original Push client: url / params / options / message / connected / disconnected / error / connect.
 */
(function (root) {
  "use strict";

  function newId() {
    var s = String(Math.floor(Date.now() / 1000)) + "-";
    for (var i = 0; i < 12; i++) s += "0123456789abcdef".charAt(Math.floor(Math.random() * 16));
    return s;
  }

  function query(params) {
    var parts = [];
    for (var k in params) {
      if (Object.prototype.hasOwnProperty.call(params, k) && params[k] !== undefined && params[k] !== null) {
        parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(params[k]));
      }
    }
    return parts.join("&");
  }

  function withQuery(url, params) {
    var q = query(params);
    return q ? url + (url.indexOf("?") >= 0 ? "&" : "?") + q : url;
  }

  function Client(transports) {
    this._transports = transports || ["EventSource", "LongPoll"];
    this._url = {};
    this._params = {};
    this._options = { timeout: 30, retry: 5000, json: false };
    this._on = { message: [], connected: [], disconnected: [], error: [] };
    this._active = null;
    this.cid = newId();
  }

  var chain = ["message", "connected", "disconnected", "error"];
  for (var i = 0; i < chain.length; i++) {
    (function (name) {
      Client.prototype[name] = function (fn) {
        this._on[name].push(fn);
        return this;
      };
    })(chain[i]);
  }

  Client.prototype.url = function (u) {
    if (typeof u === "string") u = { longpoll: u };
    for (var k in u) this._url[k] = u[k];
    return this;
  };
  Client.prototype.params = function (p) {
    for (var k in p) this._params[k] = p[k];
    if (p.cid) this.cid = p.cid;
    return this;
  };
  Client.prototype.options = function (o) {
    for (var k in o) this._options[k] = o[k];
    if (o.cid) this.cid = o.cid;
    return this;
  };
  Client.prototype._emit = function (name, arg) {
    var fns = this._on[name];
    for (var i = 0; i < fns.length; i++) {
      try { fns[i].call(this, arg); } catch (e) { if (name !== "error") this._emit("error", e); }
    }
  };
  Client.prototype._deliver = function (text) {
    var msg = text;
    if (this._options.json) {
      try { msg = JSON.parse(text); } catch (e) { this._emit("error", e); return; }
    }
    this._emit("message", msg);
  };
  Client.prototype._params_with_id = function () {
    var p = {};
    for (var k in this._params) p[k] = this._params[k];
    p.cid = this.cid;
    return p;
  };
  Client.prototype.connect = function () {
    this._stopped = false;
    for (var i = 0; i < this._transports.length; i++) {
      var T = Push.Transport[this._transports[i]];
      if (T && T.supported()) {
        this._active = new T(this);
        this._active.connect();
        return this;
      }
    }
    this._emit("error", new Error("no supported transport"));
    return this;
  };
  Client.prototype.disconnect = function () {
    this._stopped = true;
    if (this._active) this._active.stop();
    this._active = null;
    return this;
  };
  Client.prototype._fallback = function () {
    // SSE failed to open at all: continue with long-poll (same cid, so the queue carries over)
    if (this._stopped) return;
    this._active = new Push.Transport.LongPoll(this);
    this._active.connect();
  };

  /* Long-poll: one message per response; 200 → deliver and re-poll at once; 204 → re-poll at once;
     an error → disconnected, retry after options.retry ms. */
  function LongPoll(client) { this.c = client; this.xhr = null; this.timer = null; this.up = false; }
  LongPoll.supported = function () { return typeof XMLHttpRequest !== "undefined"; };
  LongPoll.prototype.connect = function () { this.poll(); };
  LongPoll.prototype.poll = function () {
    var self = this, c = this.c;
    if (c._stopped) return;
    var p = c._params_with_id();
    p._ = Date.now(); // like jQuery's cache: false
    var xhr = this.xhr = new XMLHttpRequest();
    xhr.open("GET", withQuery(c._url.longpoll, p), true);
    xhr.timeout = (c._options.timeout + 5) * 1000;
    xhr.onload = function () {
      if (xhr.status === 200 || xhr.status === 204) {
        if (!self.up) { self.up = true; c._emit("connected"); }
        if (xhr.status === 200) c._deliver(xhr.responseText);
        self.poll();
      } else {
        self.fail(new Error("HTTP " + xhr.status));
      }
    };
    xhr.onerror = function () { self.fail(new Error("network error")); };
    xhr.ontimeout = function () { self.poll(); };
    xhr.send();
  };
  LongPoll.prototype.fail = function (err) {
    var self = this, c = this.c;
    if (c._stopped) return;
    if (this.up) { this.up = false; c._emit("disconnected"); }
    c._emit("error", err);
    this.timer = setTimeout(function () { self.poll(); }, c._options.retry);
  };
  LongPoll.prototype.stop = function () {
    if (this.timer) clearTimeout(this.timer);
    if (this.xhr) { this.xhr.onload = this.xhr.onerror = this.xhr.ontimeout = null; this.xhr.abort(); }
  };

  /* Server-Sent Events: one event per message; the browser reconnects by itself (same URL, same cid). */
  function EventSourceTransport(client) { this.c = client; this.es = null; this.opened = false; }
  EventSourceTransport.supported = function () { return typeof root.EventSource !== "undefined"; };
  EventSourceTransport.prototype.connect = function () {
    var self = this, c = this.c;
    var es = this.es = new root.EventSource(withQuery(c._url.eventsource || c._url.longpoll, c._params_with_id()));
    es.onopen = function () { self.opened = true; c._emit("connected"); };
    es.onmessage = function (e) { c._deliver(e.data); };
    es.onerror = function () {
      c._emit("disconnected");
      if (es.readyState === 2) { // CLOSED: the browser gave up (e.g. not an event stream)
        self.stop();
        if (!self.opened) c._fallback();
        else setTimeout(function () { if (!c._stopped) self.connect(); }, c._options.retry);
      }
    };
  };
  EventSourceTransport.prototype.stop = function () { if (this.es) this.es.close(); };

  /* WebSocket: one frame per message; unclean close → reconnect after options.retry ms. */
  function WebSocketTransport(client) { this.c = client; this.ws = null; }
  WebSocketTransport.supported = function () { return typeof root.WebSocket !== "undefined"; };
  WebSocketTransport.prototype.connect = function () {
    var self = this, c = this.c;
    var url = c._url.websocket;
    if (!url) { // derive ws(s):// from the long-poll URL, relative URLs included
      var u = new URL(String(c._url.longpoll), root.location ? root.location.href : undefined);
      u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
      url = u.toString();
    }
    var ws = this.ws = new root.WebSocket(withQuery(url, c._params_with_id()));
    ws.onopen = function () { c._emit("connected"); };
    ws.onmessage = function (e) {
      if (typeof e.data === "string") c._deliver(e.data);
      else c._emit("message", e.data);
    };
    ws.onclose = function (e) {
      c._emit("disconnected");
      if (!c._stopped) setTimeout(function () { self.connect(); }, c._options.retry);
    };
  };
  WebSocketTransport.prototype.stop = function () { if (this.ws) { this.ws.onclose = null; this.ws.close(); } };

  var Push = root.Push || {};
  Push.Client = Client;
  Push.Transport = { LongPoll: LongPoll, EventSource: EventSourceTransport, WebSocket: WebSocketTransport };
  Push.newId = newId;
  root.Push = Push;
})(typeof window !== "undefined" ? window : this);
