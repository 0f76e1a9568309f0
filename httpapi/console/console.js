// The dibs operator console: /console.
//
// The admin token is typed into the sign-in form and kept in this tab's
// sessionStorage; it travels only in the Authorization header, never in a
// URL. The page reads the live snapshot stream (GET /v1/admin/live,
// server-sent events once a second) with fetch, because EventSource cannot
// send an Authorization header, and parses the frames itself. A lost stream
// is retried with backoff and the header says so. Every answer of 401
// returns to the sign-in form.
(() => {
  'use strict';

  const tokenKey = 'dibs-admin-token';
  const keep = 600;           // points per chart series: 10 minutes at one a second
  const quietMs = 5000;       // a stream silent this long is treated as lost
  const actionsEveryMs = 5000;
  const switchNames = ['claims', 'queue_joins', 'payments', 'webhooks'];
  const switchText = {
    claims: ['Claims', 'Every claim is refused with 503 until it is turned on again.'],
    queue_joins: ['Queue joins', 'Nobody new can join a waiting room; people already in line keep their place.'],
    payments: ['Payments', 'No charge is sent to the payment gateway; charges wait in the backlog.'],
    webhooks: ['Webhooks', 'No webhook is delivered; deliveries wait in the backlog.'],
  };
  const outcomes = ['won', 'existing', 'sold_out', 'limit', 'not_open', 'shed', 'error'];
  const outcomeColors = ['#2b8a3e', '#5c7cfa', '#868e96', '#f08c00', '#ae3ec9', '#e8590c', '#c92a2a'];

  const $ = (id) => document.getElementById(id);

  let token = null;
  let running = false;   // signed in and following the stream
  let session = 0;       // counts sign-ins and sign-outs: a loop of an earlier session stops
  let stream = null;     // AbortController of the stream being read
  let actionsTimer = null;
  let lastSwitches = {};
  const tiles = new Map(); // drop id → tile

  // ---- small helpers -------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  const nf = new Intl.NumberFormat('en-US');
  function int(n) { return n == null ? '–' : nf.format(Math.round(n)); }
  function ms(n) { return n == null ? '–' : (n < 10 ? n.toFixed(1) : nf.format(Math.round(n))) + ' ms'; }
  function bytes(n) {
    if (n == null) return '–';
    const mb = n / 1048576;
    return mb >= 1024 ? (mb / 1024).toFixed(1) + ' GiB' : mb.toFixed(mb < 10 ? 1 : 0) + ' MiB';
  }
  function dur(s) {
    if (s == null || !isFinite(s)) return '–';
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' m ' + String(s % 60).padStart(2, '0') + ' s';
    return Math.floor(m / 60) + ' h ' + String(m % 60).padStart(2, '0') + ' m';
  }
  function clock(t) {
    const d = new Date(t);
    return isNaN(d) ? '–' : d.toLocaleTimeString('en-GB', { hour12: false });
  }
  function perClass(m) {
    const parts = Object.entries(m || {}).sort().map(([k, v]) => k + ' ' + int(v));
    return parts.length ? parts.join(' · ') : '–';
  }
  function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

  function show(view) { document.body.dataset.view = view; }

  function setConn(state, text) {
    document.body.dataset.conn = state;
    const c = $('conn');
    c.dataset.state = state;
    c.textContent = text;
  }

  // ---- errors --------------------------------------------------------

  function banner(text) {
    $('banner-text').textContent = text;
    $('banner').hidden = false;
  }

  // problem reads a problem+json answer (title, detail, code) into a line.
  async function problem(res, what) {
    let p = null;
    try { p = await res.json(); } catch (e) { /* not JSON */ }
    const title = (p && p.title) || res.statusText || 'Error';
    const detail = p && p.detail ? ': ' + p.detail : '';
    const code = p && p.code ? ' [' + p.code + ']' : '';
    return what + ' failed (' + res.status + '). ' + title + detail + code;
  }

  // api sends an authorised request and returns the answer, or null after
  // showing the error (a 401 signs out).
  async function api(method, path, body, what) {
    const headers = { Authorization: 'Bearer ' + token, Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      banner(what + ' failed: the server did not answer (' + e.message + ').');
      return null;
    }
    if (res.status === 401) {
      signOut('The admin token was refused (401). Sign in again.');
      return null;
    }
    if (!res.ok) {
      banner(await problem(res, what));
      return null;
    }
    return res;
  }

  // ---- sign in / out -------------------------------------------------

  function signIn(t) {
    token = t;
    try { sessionStorage.setItem(tokenKey, t); } catch (e) { /* private mode: memory only */ }
    $('signin-error').hidden = true;
    show('console');
    running = true;
    follow(++session);
    refreshActions();
    actionsTimer = setInterval(refreshActions, actionsEveryMs);
  }

  function signOut(message) {
    running = false;
    session++;
    token = null;
    try { sessionStorage.removeItem(tokenKey); } catch (e) { /* nothing kept */ }
    if (stream) stream.abort();
    stream = null;
    clearInterval(actionsTimer);
    actionsTimer = null;
    for (const tile of tiles.values()) tile.destroy();
    tiles.clear();
    $('drops').replaceChildren();
    setConn('idle', 'not connected');
    const err = $('signin-error');
    err.textContent = message || '';
    err.hidden = !message;
    show('signin');
    $('token').focus();
  }

  // ---- the live stream -----------------------------------------------

  // follow reads the stream until sign-out, reconnecting with backoff
  // (0.5 s doubling to 15 s, with jitter) whenever it ends or goes quiet.
  async function follow(mine) {
    const current = () => running && mine === session;
    let attempt = 0;
    let gap = false;
    while (current()) {
      const ctrl = new AbortController();
      stream = ctrl;
      let quiet = null;
      const heard = () => {
        clearTimeout(quiet);
        quiet = setTimeout(() => ctrl.abort(), quietMs);
      };
      try {
        heard();
        const res = await fetch('/v1/admin/live', {
          headers: { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' },
          cache: 'no-store', credentials: 'omit', signal: ctrl.signal,
        });
        if (res.status === 401) {
          clearTimeout(quiet);
          signOut('The admin token was refused (401). Sign in again.');
          return;
        }
        if (!res.ok) {
          banner(await problem(res, 'Reading the live stream'));
          throw new Error('the live stream was refused');
        }
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';  // normalised to \n line ends
        let cr = '';   // a \r that ended a chunk: the next may start with its \n
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          heard();
          let text = cr + value;
          cr = text.endsWith('\r') ? '\r' : '';
          if (cr) text = text.slice(0, -1);
          buf += text.replace(/\r\n?/g, '\n');
          let end;
          while ((end = buf.indexOf('\n\n')) >= 0) {
            const data = frameData(buf.slice(0, end));
            buf = buf.slice(end + 2);
            if (data === null) continue;
            let snap;
            try { snap = JSON.parse(data); } catch (e) { continue; }
            if (!current()) break;
            attempt = 0;
            setConn('live', 'live');
            render(snap, gap);
            gap = false;
          }
        }
      } catch (e) {
        // A network error, a refused stream or a quiet one: retry below.
        if (!current()) { clearTimeout(quiet); return; }
      }
      clearTimeout(quiet);
      if (!current()) return;
      gap = true;
      const delay = Math.min(15000, 500 * 2 ** attempt) * (0.75 + Math.random() / 4);
      attempt++;
      setConn('reconnecting', 'reconnecting… (try ' + attempt + ' in ' + Math.ceil(delay / 1000) + ' s)');
      await sleep(delay);
    }
  }

  // frameData returns the data of one server-sent event (its data: lines
  // joined), or null for a frame without data (a comment, a keep-alive).
  function frameData(frame) {
    const lines = [];
    for (const line of frame.split('\n')) {
      if (line.startsWith('data:')) lines.push(line.slice(line.startsWith('data: ') ? 6 : 5));
    }
    return lines.length ? lines.join('\n') : null;
  }

  // ---- rendering -----------------------------------------------------

  function render(snap, gap) {
    $('updated').textContent = 'snapshot ' + clock(snap.at);
    renderSwitches(snap.switches || {});
    const drops = snap.drops || [];
    $('no-drops').hidden = drops.length > 0;
    const seen = new Set();
    const t = Date.parse(snap.at) / 1000;
    for (const d of drops) {
      seen.add(d.id);
      let tile = tiles.get(d.id);
      if (!tile) {
        tile = new Tile(d);
        tiles.set(d.id, tile);
        $('drops').append(tile.root);
      }
      tile.update(d, t, gap);
    }
    for (const [id, tile] of tiles) {
      if (!seen.has(id)) { tile.destroy(); tile.root.remove(); tiles.delete(id); }
    }
    renderPost(snap.post || {});
    renderNodes(snap.nodes || [], Date.parse(snap.at));
  }

  function fact(dl, label, value, cls) {
    dl.append(el('div', {}, el('dt', { text: label }), el('dd', { text: value, class: cls || '' })));
  }

  // ---- switches ------------------------------------------------------

  const switchRows = {};
  function buildSwitches() {
    for (const name of switchNames) {
      const state = el('span', { class: 'pill', text: '–' });
      const button = el('button', { type: 'button', 'data-switch': name, text: '…' });
      button.disabled = true;
      button.addEventListener('click', () => flip(name));
      const row = el('div', { class: 'switch', 'data-name': name },
        el('span', { class: 'switch-name', text: switchText[name][0] }), state, button);
      switchRows[name] = { row, state, button };
      $('switches').append(row);
    }
  }

  function renderSwitches(sw) {
    lastSwitches = sw;
    for (const name of switchNames) {
      const r = switchRows[name];
      const on = sw[name] !== 'off';
      const known = sw[name] === 'on' || sw[name] === 'off';
      r.row.dataset.state = known ? sw[name] : 'unknown';
      r.state.textContent = known ? sw[name] : '?';
      r.button.textContent = on ? 'Turn off' : 'Turn on';
      r.button.className = on ? 'danger' : '';
      r.button.disabled = !known || r.busy;
    }
  }

  function confirmOff(name) {
    return new Promise((resolve) => {
      const d = $('confirm');
      $('confirm-text').textContent = 'Turn ' + switchText[name][0].toLowerCase() + ' off? ' + switchText[name][1];
      const done = (yes) => {
        $('confirm-yes').onclick = $('confirm-no').onclick = d.oncancel = null;
        d.close();
        resolve(yes);
      };
      $('confirm-yes').onclick = () => done(true);
      $('confirm-no').onclick = () => done(false);
      d.oncancel = () => done(false);
      d.showModal();
      $('confirm-no').focus();
    });
  }

  async function flip(name) {
    const r = switchRows[name];
    const turnOff = lastSwitches[name] !== 'off';
    if (turnOff && !(await confirmOff(name))) return;
    r.busy = true;
    r.button.disabled = true;
    const res = await api('PATCH', '/v1/admin/switches', { [name]: turnOff ? 'off' : 'on' }, 'Switching ' + name);
    r.busy = false;
    if (!res) { renderSwitches(lastSwitches); return; }
    let sw = null;
    try { sw = await res.json(); } catch (e) { /* the next snapshot tells */ }
    renderSwitches(sw && typeof sw === 'object' ? Object.assign({}, lastSwitches, sw) : lastSwitches);
  }

  // ---- drop tiles ----------------------------------------------------

  class Tile {
    constructor(d) {
      this.id = d.id;
      this.t = []; this.remaining = [];
      this.rates = outcomes.map(() => []);
      this.title = el('h3', {});
      this.ident = el('span', { class: 'muted small' });
      this.state = el('span', { class: 'pill' });
      this.remainingText = el('span', { class: 'big', 'data-field': 'remaining' });
      this.stockText = el('span', { class: 'muted' });
      this.bar = el('div', { class: 'bar-fill' });
      this.counts = el('dl', { class: 'facts' });
      this.rateTable = el('table', { class: 'table rates' });
      this.latency = el('dl', { class: 'facts' });
      this.curveBox = el('div', { class: 'chart' });
      this.ratesBox = el('div', { class: 'chart' });
      this.queueBox = el('div', { class: 'queue', hidden: '' });
      this.root = el('article', { class: 'card tile', 'data-drop': d.id },
        el('div', { class: 'tile-head' }, el('div', { class: 'tile-name' }, this.title, this.ident), this.state),
        el('div', { class: 'remaining' }, this.remainingText, this.stockText),
        el('div', { class: 'meter' }, this.bar),
        this.counts,
        el('div', { class: 'tile-cols' },
          el('div', {}, el('h4', { text: 'claims/s' }), this.rateTable),
          el('div', {}, el('h4', { text: 'latency' }), this.latency)),
        el('div', { class: 'charts' },
          el('div', {}, el('h4', { text: 'remaining, last 10 minutes' }), this.curveBox),
          el('div', {}, el('h4', { text: 'claims/s, last 10 minutes' }), this.ratesBox)),
        this.queueBox);
      this.buildQueue();
    }

    buildQueue() {
      this.queueFacts = el('dl', { class: 'facts' });
      this.rateInput = el('input', { type: 'number', min: '0', step: '1', 'aria-label': 'admissions per second', class: 'rate-input' });
      this.minInput = el('input', { type: 'number', min: '0', step: '1', 'aria-label': 'auto minimum', placeholder: 'min' });
      this.maxInput = el('input', { type: 'number', min: '1', step: '1', 'aria-label': 'auto maximum', placeholder: 'max' });
      const set = el('button', { type: 'button', text: 'set', class: 'rate-set' });
      const auto = el('button', { type: 'button', text: 'auto', class: 'rate-auto' });
      set.addEventListener('click', () => {
        const n = Number(this.rateInput.value);
        if (!this.rateInput.value || !Number.isInteger(n) || n < 0) { banner('The pace is a whole number of admissions per second.'); return; }
        this.pace({ rate: n }, set);
      });
      auto.addEventListener('click', () => {
        const a = Number(this.minInput.value), b = Number(this.maxInput.value);
        if (!this.minInput.value || !this.maxInput.value || !Number.isInteger(a) || !Number.isInteger(b) || a < 0 || a > b) {
          banner('Auto pace needs whole numbers with 0 ≤ min ≤ max.');
          return;
        }
        this.pace({ rate: 'auto', min: a, max: b }, auto);
      });
      this.queueBox.append(
        el('h4', { text: 'waiting room' }), this.queueFacts,
        el('div', { class: 'pace' },
          el('label', { text: 'pace' }), this.rateInput, el('span', { class: 'muted small', text: '/s' }), set,
          el('span', { class: 'sep' }), this.minInput, this.maxInput, auto));
    }

    async pace(body, button) {
      button.disabled = true;
      const res = await api('PATCH', '/v1/admin/drops/' + encodeURIComponent(this.id), body, 'Setting the pace of ' + this.id);
      button.disabled = false;
      if (res) { this.rateInput.value = ''; }
    }

    update(d, t, gap) {
      this.title.textContent = d.title || d.id;
      this.ident.textContent = d.id + (d.kind ? ' · ' + d.kind : '') + (d.queue ? ' · queued' : '');
      this.state.textContent = d.state || '–';
      this.state.dataset.state = d.state || '';
      this.remainingText.textContent = int(d.remaining);
      this.stockText.textContent = ' / ' + int(d.stock) + ' left';
      const sold = d.stock > 0 ? (d.stock - d.remaining) / d.stock : 0;
      this.bar.style.width = Math.max(0, Math.min(100, sold * 100)).toFixed(1) + '%';

      this.counts.replaceChildren();
      fact(this.counts, 'held', int(d.held));
      fact(this.counts, 'confirmed', int(d.confirmed));
      fact(this.counts, 'paid', int(d.paid));
      fact(this.counts, 'released', int(d.released));
      fact(this.counts, 'expired', int(d.expired));
      fact(this.counts, 'sold out', d.sold_out_at ? clock(d.sold_out_at) : 'not yet', d.sold_out_at ? 'bad' : '');

      const cps = d.claims_per_sec || {};
      this.rateTable.replaceChildren(...outcomes.map((o) =>
        el('tr', { class: (o === 'error' || o === 'shed') && cps[o] > 0 ? 'bad' : '' },
          el('td', { text: o.replace('_', ' ') }), el('td', { class: 'num', text: int(cps[o] || 0) }))));
      const lat = d.latency_ms || {};
      this.latency.replaceChildren();
      fact(this.latency, 'p50', ms(lat.p50));
      fact(this.latency, 'p99', ms(lat.p99));

      this.renderQueue(d.queue);
      this.record(d, t, gap);
    }

    renderQueue(q) {
      this.queueBox.hidden = !q;
      if (!q) return;
      this.queueFacts.replaceChildren();
      fact(this.queueFacts, 'joined', int(q.joined));
      fact(this.queueFacts, 'waiting', int(q.waiting));
      fact(this.queueFacts, 'admitted/s', int(q.admitted_per_sec));
      const mode = q.rate_mode === 'auto' ? 'auto ' + int(q.rate_min) + '–' + int(q.rate_max) : 'fixed';
      fact(this.queueFacts, 'rate', int(q.rate) + '/s (' + mode + ')');
      fact(this.queueFacts, 'last in line', q.sold_out ? 'sold out' : 'in ' + dur(q.eta_last_s));
      this.rateInput.placeholder = String(q.rate);
    }

    // record appends the snapshot to the chart series (a null point marks
    // a gap in the stream, so a reconnect does not draw a false line).
    record(d, t, gap) {
      if (!isFinite(t)) return;
      const last = this.t[this.t.length - 1];
      if (last !== undefined && t <= last) return;
      const cps = d.claims_per_sec || {};
      if (gap && this.t.length) {
        this.push(t - 0.001, null, outcomes.map(() => null));
      }
      this.push(t, d.remaining, outcomes.map((o) => cps[o] || 0));
      this.draw();
    }

    push(t, remaining, rates) {
      this.t.push(t);
      this.remaining.push(remaining);
      rates.forEach((v, i) => this.rates[i].push(v));
      if (this.t.length > keep) {
        const n = this.t.length - keep;
        this.t.splice(0, n);
        this.remaining.splice(0, n);
        this.rates.forEach((s) => s.splice(0, n));
      }
    }

    draw() {
      if (typeof uPlot === 'undefined') return;
      const width = Math.max(240, this.curveBox.clientWidth || 300);
      if (!this.curve) {
        // Whole seconds at least between ticks: snapshots come once a second.
        const axes = [{ stroke: '#5d6470', incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600] },
          { stroke: '#5d6470', size: 56 }];
        this.curve = new uPlot({
          width, height: 140, legend: { show: false }, cursor: { show: true }, axes,
          scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
          series: [{}, { label: 'remaining', stroke: '#3b5bdb', width: 2, fill: 'rgba(59,91,219,.08)' }],
        }, [this.t, this.remaining], this.curveBox);
        this.ratesChart = new uPlot({
          width, height: 160, axes, legend: { show: true, live: false },
          scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
          series: [{}].concat(outcomes.map((o, i) => ({ label: o, stroke: outcomeColors[i], width: 1.5 }))),
        }, [this.t].concat(this.rates), this.ratesBox);
        this.width = width;
        return;
      }
      if (width !== this.width) {
        this.width = width;
        this.curve.setSize({ width, height: 140 });
        this.ratesChart.setSize({ width, height: 160 });
      }
      this.curve.setData([this.t, this.remaining]);
      this.ratesChart.setData([this.t].concat(this.rates));
    }

    destroy() {
      if (this.curve) this.curve.destroy();
      if (this.ratesChart) this.ratesChart.destroy();
      this.curve = this.ratesChart = null;
    }
  }

  // ---- downstream and nodes ------------------------------------------

  function renderPost(p) {
    const dl = $('post');
    dl.replaceChildren();
    const breaker = p.breaker || '–';
    fact(dl, 'breaker', breaker, breaker === 'closed' ? 'good' : 'bad');
    fact(dl, 'charges/s', int(p.charges_per_sec));
    fact(dl, 'gateway p99', ms(p.gateway_p99_ms));
    fact(dl, 'failed webhooks', int(p.failed_webhooks), p.failed_webhooks > 0 ? 'bad' : '');
    const kinds = Object.entries(p.backlog || {}).sort();
    $('backlog').replaceChildren(...(kinds.length ? kinds.map(([k, v]) =>
      el('tr', {}, el('td', { text: k }), el('td', { class: 'num', text: int(v) })))
      : [el('tr', {}, el('td', { class: 'muted', text: 'empty', colspan: '2' }))]));
  }

  function renderNodes(nodes, at) {
    $('nodes').replaceChildren(...nodes.map((n) => {
      const age = (at - Date.parse(n.last_heartbeat)) / 1000;
      const row = el('tr', { class: n.stale ? 'stale' : '', 'data-node': n.id },
        el('td', { text: n.id + (n.stale ? ' (stale)' : '') }),
        el('td', { text: n.version || '–' }),
        el('td', { class: 'num', text: isFinite(age) ? dur(age) : '–' }),
        el('td', { text: perClass(n.inflight) }),
        el('td', { text: perClass(n.shed) }),
        el('td', { class: 'num', text: int(n.recorder_batch) }),
        el('td', { class: 'num', text: ms(n.commit_p99_ms) }),
        el('td', { class: 'num', text: int(n.goroutines) }),
        el('td', { class: 'num', text: bytes(n.heap_bytes) }),
        el('td', { class: 'num', text: ms(n.gc_pause_p99_ms) }));
      return row;
    }));
  }

  // ---- the action log ------------------------------------------------

  async function refreshActions() {
    if (!running) return;
    const res = await api('GET', '/v1/admin/actions', undefined, 'Reading the action log');
    if (!res || !running) return;
    const text = await res.text();
    const list = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try { list.push(JSON.parse(line)); } catch (e) { /* a torn line */ }
    }
    list.sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
    const items = list.slice(0, 20).map((a) => {
      let detail = '';
      if (a.detail !== undefined && a.detail !== null) detail = typeof a.detail === 'string' ? a.detail : JSON.stringify(a.detail);
      return el('li', { 'data-kind': a.kind || '' },
        el('span', { class: 'muted', text: clock(a.at) }), ' ',
        el('strong', { text: a.kind || '?' }), ' ',
        a.drop_id ? el('span', { class: 'pill', text: a.drop_id }) : '', ' ',
        el('span', { class: 'muted', text: 'by ' + (a.actor || '?') }), ' ',
        el('code', { text: detail }));
    });
    $('actions').replaceChildren(...(items.length ? items : [el('li', { class: 'muted', text: 'No actions yet.' })]));
  }

  // ---- start ---------------------------------------------------------

  function start() {
    buildSwitches();
    $('signin-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const t = $('token').value.trim();
      $('token').value = '';
      if (t) signIn(t);
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('banner-close').addEventListener('click', () => { $('banner').hidden = true; });
    let saved = null;
    try { saved = sessionStorage.getItem(tokenKey); } catch (e) { /* none */ }
    if (saved) signIn(saved); else signOut('');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
