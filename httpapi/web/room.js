// The waiting room page of a dibs drop: /d/{id}.
//
// The passport comes from the URL fragment (/d/{id}#passport=...), which
// browsers never send to a server, or from the form; it is kept in this
// tab's sessionStorage only. The page joins the line (joining again returns
// the same place), follows the ticket by server-sent events (or by polling
// when streaming fails), claims with the admission the moment it comes, and
// shows the result. It keeps the ticket and the claim it won in
// localStorage (useless without the passport), so that a reload follows the
// same ticket without joining again and a winner sees their claim.
(() => {
  'use strict';

  const dropID = decodeURIComponent(location.pathname.split('/')[2] || '');
  const base = '/v1/drops/' + encodeURIComponent(dropID);
  const passportKey = 'dibs-passport';
  const placeKey = 'dibs-place:' + dropID; // {sub, ticket, claim} of this drop
  const $ = (id) => document.getElementById(id);

  let passport = null;
  let ticket = null;
  let opensAt = 0;
  let offset = 0; // server clock minus this clock, in ms
  let firstPosition = 0;
  let claiming = false;
  let done = false;
  let clockTimer = null;

  function show(view) {
    document.body.dataset.view = view;
    if (view !== 'countdown' && clockTimer) {
      clearInterval(clockTimer);
      clockTimer = null;
    }
  }

  function fail(text) {
    done = true;
    $('error-text').textContent = text;
    show('error');
  }

  function finish(view) {
    done = true;
    show(view);
  }

  function readPassport() {
    const frag = new URLSearchParams(location.hash.slice(1));
    const p = frag.get('passport');
    if (p) {
      history.replaceState(null, '', location.pathname + location.search);
      try { sessionStorage.setItem(passportKey, p); } catch (e) { /* private mode: keep it in memory */ }
      return p;
    }
    try { return sessionStorage.getItem(passportKey); } catch (e) { return null; }
  }

  function forgetPassport(message) {
    passport = null;
    try { sessionStorage.removeItem(passportKey); } catch (e) { /* nothing kept */ }
    const err = $('passport-error');
    err.hidden = !message;
    err.textContent = message || '';
    show('passport');
  }

  // subject is the user id a passport names (its JWT's sub), or ''.
  function subject(p) {
    try {
      return String(JSON.parse(atob(p.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub || '');
    } catch (e) { return ''; }
  }

  // loadPlace returns what this page kept of the passport's user's place.
  function loadPlace() {
    try {
      const v = JSON.parse(localStorage.getItem(placeKey) || 'null');
      return v && v.sub === subject(passport) ? v : {};
    } catch (e) { return {}; }
  }

  function savePlace(fields) {
    const v = Object.assign(loadPlace(), fields, { sub: subject(passport) });
    try { localStorage.setItem(placeKey, JSON.stringify(v)); } catch (e) { /* not kept: a reload joins again */ }
  }

  async function api(method, path, extra) {
    const headers = Object.assign({ Authorization: 'Bearer ' + passport }, extra || {});
    const res = await fetch(path, { method, headers, cache: 'no-store' });
    let body = null;
    try { body = await res.json(); } catch (e) { /* empty or not JSON */ }
    return { status: res.status, body, retryAfter: Number(res.headers.get('Retry-After')) || 1 };
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function duration(s) {
    if (s == null) return '–';
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 10) return m + 'm ' + (s % 60) + 's';
    if (m < 60) return m + ' min';
    return Math.floor(m / 60) + 'h ' + (m % 60) + 'm';
  }

  const number = (n) => (n == null ? '–' : Number(n).toLocaleString('en'));

  function tickClock() {
    const left = (opensAt - (Date.now() + offset)) / 1000;
    const s = Math.max(0, Math.ceil(left));
    const pad = (n) => String(n).padStart(2, '0');
    $('clock').textContent = pad(Math.floor(s / 3600)) + ':' + pad(Math.floor(s / 60) % 60) + ':' + pad(s % 60);
  }

  function render(st) {
    if (done) return;
    if (st.server_time) offset = Date.parse(st.server_time) - Date.now();
    if (st.opens_at) opensAt = Date.parse(st.opens_at);
    switch (st.state) {
      case 'waiting':
        if (st.position == null || opensAt > Date.now() + offset) { // before the opening
          $('draw-note').textContent = st.position == null
            ? (st.joined === 1 ? 'You are the first in.' : number(st.joined) + ' people are in.') + ' Your place is drawn at the opening.'
            : 'You are #' + number(st.position) + ' in line.';
          show('countdown');
          tickClock();
          if (!clockTimer) clockTimer = setInterval(tickClock, 250);
          return;
        }
        if (!firstPosition || st.position > firstPosition) firstPosition = st.position;
        $('position').textContent = '#' + number(st.position);
        $('ahead').textContent = number(st.ahead);
        $('eta').textContent = duration(st.eta_seconds);
        $('left').textContent = number(st.remaining);
        $('progress').value = firstPosition > 1 ? (firstPosition - st.position) / (firstPosition - 1) : 0;
        $('eta-note').hidden = st.eta_seconds != null;
        $('eta-note').textContent = st.ahead >= st.remaining
          ? 'More people are ahead of you than there are slots left: you get in only if some come back.'
          : 'Nobody is being let in right now. Your place is kept.';
        show('waiting');
        return;
      case 'admitted':
        show('admitted');
        claim(st.admission);
        return;
      case 'won':
        won(null);
        return;
      case 'sold_out':
      case 'closed':
      case 'expired':
        finish(st.state);
        return;
    }
  }

  async function claim(admission) {
    if (claiming || done) return;
    claiming = true;
    for (let attempt = 0; attempt < 20 && !done; attempt++) {
      const r = await api('POST', base + '/claims', { 'Dibs-Admission': admission });
      const code = r.body && r.body.code;
      if (r.status === 201 || r.status === 200) {
        savePlace({ claim: r.body.claim_id });
        return won(r.body);
      }
      if (r.status === 410) return finish(code === 'closed' ? 'closed' : 'sold_out');
      if (r.status === 403) return settle();
      if (r.status === 401) return forgetPassport('The passport was not accepted. It may have expired.');
      if (r.status === 409) return fail('You already hold as many of these as allowed.');
      await sleep(Math.min(r.retryAfter * 1000, 5000));
    }
    if (!done) fail('The claim could not be made. Please reload the page.');
  }

  // won shows the claim a ticket won: c, or the one this page kept, read
  // afresh (a hold may have ended since). A winner on another browser has
  // no claim kept here and is told it is theirs all the same.
  async function won(c) {
    if (done) return;
    done = true;
    const id = loadPlace().claim;
    if (!c && id) {
      const r = await api('GET', '/v1/claims/' + encodeURIComponent(id));
      if (r.status === 200) c = r.body;
    }
    if (c && (c.state === 'released' || c.state === 'expired')) {
      $('lapsed-text').textContent = c.state === 'expired'
        ? 'You got a slot, but it was not paid for in time.'
        : 'You got a slot, but it was given back: the payment did not go through.';
      return show('lapsed');
    }
    $('slot').textContent = c ? '#' + number(c.slot) : '✓';
    let detail = c ? 'Claim ' + c.claim_id : 'The claim is yours: the shop has it under your account.';
    if (c && c.state === 'paid') detail += ' · paid';
    else if (c && c.hold_expires_at) detail += ' · pay before ' + new Date(c.hold_expires_at).toLocaleTimeString();
    $('won-detail').textContent = detail;
    show('won');
  }

  // settle reads the ticket once more after a refused claim: the turn may
  // have passed, or an earlier attempt (a retry after a lost answer) won.
  async function settle() {
    const r = await api('GET', base + '/queue/' + ticket);
    if (r.status === 200 && r.body.state === 'won') return won(null);
    finish('expired');
  }

  // follow streams the ticket's status, falling back to polling.
  async function follow() {
    let failures = 0;
    while (!done && !claiming) {
      try {
        await stream();
        failures = 0;
      } catch (e) {
        failures++;
      }
      if (done || claiming) return;
      if (failures >= 2) return poll();
      await sleep(1000);
    }
  }

  async function stream() {
    const res = await fetch(base + '/queue/' + ticket + '/events', {
      headers: { Authorization: 'Bearer ' + passport, Accept: 'text/event-stream' },
      cache: 'no-store',
    });
    if (!res.ok || !res.body) {
      if (res.status === 404) { ticket = null; return join(); }
      throw new Error('stream: ' + res.status);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) return;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const chunk = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = chunk.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
        if (data) render(JSON.parse(data));
      }
    }
  }

  async function poll() {
    while (!done && !claiming) {
      const r = await api('GET', base + '/queue/' + ticket);
      if (r.status === 200) {
        render(r.body);
        await sleep(r.body.poll_after_ms || 1000);
      } else if (r.status === 404) {
        ticket = null;
        return join();
      } else {
        await sleep(r.retryAfter * 1000);
      }
    }
  }

  async function join() {
    for (;;) {
      const r = await api('POST', base + '/queue');
      const code = r.body && r.body.code;
      if (r.status === 201 || r.status === 200) {
        ticket = r.body.ticket;
        savePlace({ ticket });
        render(r.body);
        if (!done && !claiming) follow();
        return;
      }
      if (r.status === 401) return forgetPassport('The passport was not accepted. It may have expired.');
      if (r.status === 410) return finish(code === 'closed' ? 'closed' : 'sold_out');
      if (r.status === 409) return fail('This drop has no waiting room.');
      if (r.status === 404) return fail('There is no such drop.');
      await sleep(Math.min(r.retryAfter * 1000, 10000));
    }
  }

  // resume follows the ticket this page kept for the passport's user, or
  // joins: a reload spends none of the address's joins.
  async function resume() {
    const kept = loadPlace().ticket;
    if (kept) {
      const r = await api('GET', base + '/queue/' + kept);
      if (r.status === 200) {
        ticket = kept;
        render(r.body);
        if (!done && !claiming) follow();
        return;
      }
      if (r.status === 401) return forgetPassport('The passport was not accepted. It may have expired.');
    }
    await join();
  }

  async function start() {
    $('audit').href = base + '/queue';
    $('forget').addEventListener('click', (ev) => {
      ev.preventDefault();
      try {
        sessionStorage.removeItem(passportKey);
        localStorage.removeItem(placeKey);
      } catch (e) { /* nothing kept */ }
      location.reload();
    });
    $('passport-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const p = $('passport-input').value.trim();
      if (!p) return;
      passport = p;
      try { sessionStorage.setItem(passportKey, p); } catch (e) { /* keep it in memory */ }
      show('loading');
      resume().catch((e) => fail(String(e)));
    });

    const res = await fetch(base, { cache: 'no-store' });
    if (!res.ok) return fail('There is no such drop.');
    const drop = await res.json();
    document.title = drop.title + ' · dibs';
    $('title').textContent = drop.title;
    $('facts').textContent = number(drop.stock) + (drop.kind === 'purchase' ? ' for sale' : ' to win') +
      (drop.state === 'upcoming' ? ' · opens ' + new Date(drop.opens_at).toLocaleString() : '');
    passport = readPassport();
    if (!passport) return show('passport');
    await resume();
  }

  start().catch((e) => fail(String(e)));
})();
