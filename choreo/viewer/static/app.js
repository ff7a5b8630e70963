// choreo saga-trace viewer: a read-only page over the tracker's JSON API.
//
// Safety rule: data from the API reaches the DOM only through textContent, text nodes
// and setAttribute on attributes named here: no markup is ever parsed from data, and
// no event handler or URL scheme is taken from it. The CSP forbids inline scripts and
// styles.
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const PAGE_SIZE = 50;
  const REFRESH_MIN_MS = 300;
  const STATUSES = ['Started', 'Pending', 'Compensating', 'Completed', 'Failed',
    'Stuck', 'CompensationFailed', 'Violated'];
  const STATUS_LABEL = { CompensationFailed: 'Compensation failed' };
  const ROLES = ['start', 'step', 'command', 'failure', 'compensate', 'compensation', 'completed', 'failed', 'notice'];

  const $ = (id) => document.getElementById(id);

  // --- DOM helpers (text only) -------------------------------------------------------

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'dataset') Object.assign(el.dataset, value);
      else if (name === 'on') for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
      else el.setAttribute(name, value === true ? '' : String(value));
    }
  }

  const TEXT_ONLY = new Set(['OPTION', 'TITLE', 'TEXTAREA']);

  // Text is isolated from its neighbours' direction (a right-to-left override in a
  // saga name cannot reorder the row around it): <bdi> in HTML, unicode-bidi in SVG.
  function appendAll(el, children) {
    const html = el.namespaceURI !== SVG_NS && !TEXT_ONLY.has(el.tagName);
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      if (child instanceof Node) { el.appendChild(child); continue; }
      const text = document.createTextNode(String(child));
      if (html) {
        const isolated = document.createElement('bdi');
        isolated.appendChild(text);
        el.appendChild(isolated);
      } else {
        el.appendChild(text);
      }
    }
    return el;
  }

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    return appendAll(el, children);
  }

  function fill(el, ...children) {
    el.replaceChildren();
    return appendAll(el, children);
  }

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    return appendAll(el, children);
  }

  function statusLabel(status) { return STATUS_LABEL[status] || status; }

  function badge(status) {
    return h('span', { class: `badge st-${status}`, dataset: { status } }, statusLabel(status));
  }

  // --- formatting ---------------------------------------------------------------------

  // Years 1 to 9999 (UTC) are times; anything else from data is shown as invalid.
  const MIN_MS = -62135596800000;
  const MAX_MS = 253402300799999;

  function validTime(ms) { return Number.isFinite(ms) && ms >= MIN_MS && ms <= MAX_MS; }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return '';
    if (!Number.isFinite(ms) || Math.abs(ms) > MAX_MS - MIN_MS) return 'invalid';
    if (ms < 0) return `-${fmtDuration(-ms)}`;
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
    const minutes = Math.floor(ms / 60000);
    const seconds = Math.floor((ms % 60000) / 1000);
    if (minutes < 60) return `${minutes}m ${String(seconds).padStart(2, '0')}s`;
    return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, '0')}m`;
  }

  function pad(n, width = 2) { return String(n).padStart(width, '0'); }

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return '';
    if (!validTime(ms)) return `invalid time (${String(ms).slice(0, 24)} ms)`;
    const d = new Date(ms);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function fmtOffset(ms) { return ms === 0 ? '+0' : `+${fmtDuration(ms)}`; }

  function truncate(text, max) { return text.length > max ? `${text.slice(0, max - 1)}…` : text; }

  // --- API ----------------------------------------------------------------------------

  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (response.status === 404) return null;
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error || message; } catch (_) { /* keep status */ }
      throw new Error(message);
    }
    return response.json();
  }

  function showError(error) {
    const box = $('error');
    if (!error) { box.hidden = true; return; }
    box.textContent = `Could not load data: ${error.message || error}`;
    box.hidden = false;
  }

  // --- state and routing --------------------------------------------------------------

  const state = {
    view: 'list',
    cid: null,
    filters: { status: '', saga: '', since: '', q: '', offset: 0 },
    selectedEventId: null,
    sagaTypes: [],
    firstRowsMarked: false,
  };

  function parseRoute() {
    const raw = location.hash.replace(/^#/, '') || '/';
    const cut = raw.indexOf('?');
    const path = cut < 0 ? raw : raw.slice(0, cut);
    const params = new URLSearchParams(cut < 0 ? '' : raw.slice(cut + 1));
    if (path.startsWith('/saga/')) {
      let cid;
      try { cid = decodeURIComponent(path.slice('/saga/'.length)); } catch (_) { cid = path.slice(6); }
      return { view: 'saga', cid };
    }
    if (path === '/graph') return { view: 'graph' };
    return {
      view: 'list',
      filters: {
        status: params.get('status') || '',
        saga: params.get('saga') || '',
        since: params.get('since') || '',
        q: params.get('q') || '',
        offset: Math.max(0, parseInt(params.get('offset') || '0', 10) || 0),
      },
    };
  }

  function listHash() {
    const params = new URLSearchParams();
    const f = state.filters;
    if (f.status) params.set('status', f.status);
    if (f.saga) params.set('saga', f.saga);
    if (f.since) params.set('since', f.since);
    if (f.q) params.set('q', f.q);
    if (f.offset) params.set('offset', String(f.offset));
    const qs = params.toString();
    return `#/${qs ? `?${qs}` : ''}`;
  }

  function sagaHash(cid) { return `#/saga/${encodeURIComponent(cid)}`; }

  function applyRoute() {
    const route = parseRoute();
    const moved = route.view !== state.view || (route.cid || null) !== state.cid;
    if (moved) state.selectedEventId = null;
    state.view = route.view;
    state.cid = route.cid || null;
    if (route.filters) state.filters = route.filters;
    for (const name of ['list', 'saga', 'graph']) $(`view-${name}`).hidden = name !== route.view;
    $('nav-sagas').classList.toggle('active', route.view !== 'graph');
    $('nav-graph').classList.toggle('active', route.view === 'graph');
    syncFilterInputs();
    if (route.view === 'saga' && moved) {
      for (const id of ['saga-head', 'violations', 'timeline', 'event-rows', 'timeline-legend']) fill($(id));
      $('payload-panel').hidden = true;
    }
    refreshNow();
  }

  function setFilters(change) {
    Object.assign(state.filters, change);
    history.replaceState(null, '', listHash());
    refreshNow();
  }

  // --- refreshing (coalesced) ---------------------------------------------------------
  //
  // Live changes schedule at most one load per REFRESH_MIN_MS and never two at once; a
  // response is drawn only if it is newer than the last one drawn and still answers the
  // current route and filters (so a slow response never overwrites a newer view).

  let inFlight = 0;
  let again = false;
  let timer = 0;
  let lastStart = 0;
  let startedSeq = 0;
  let drawnSeq = 0;

  function routeKey() { return JSON.stringify([state.view, state.cid, state.filters]); }

  function fresh(seq, key) {
    if (seq <= drawnSeq || key !== routeKey()) return false;
    drawnSeq = seq;
    return true;
  }

  function refreshNow() {
    clearTimeout(timer);
    timer = 0;
    load();
  }

  function scheduleRefresh() {
    if (inFlight) { again = true; return; }
    if (timer) return;
    const wait = Math.max(0, lastStart + REFRESH_MIN_MS - Date.now());
    timer = setTimeout(() => { timer = 0; load(); }, wait);
  }

  async function load() {
    const seq = ++startedSeq;
    const key = routeKey();
    inFlight += 1;
    lastStart = Date.now();
    try {
      if (state.view === 'list') await loadList(seq, key);
      else if (state.view === 'saga') await loadSaga(seq, key);
      else await loadGraph(seq, key);
      if (key === routeKey()) showError(null);
    } catch (error) {
      if (key === routeKey()) showError(error);
    } finally {
      inFlight -= 1;
    }
    if (again && !inFlight) { again = false; scheduleRefresh(); }
  }

  // --- saga list ----------------------------------------------------------------------

  async function loadList(seq, key) {
    const f = state.filters;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(f.offset) });
    if (f.status) params.set('status', f.status);
    if (f.saga) params.set('saga', f.saga);
    if (f.since) params.set('since', f.since);
    if (f.q) params.set('q', f.q);
    const [summary, page] = await Promise.all([getJSON('/api/summary'), getJSON(`/api/sagas?${params}`)]);
    if (!fresh(seq, key)) return;
    renderSummary(summary);
    renderRows(page);
  }

  function renderSummary(summary) {
    const active = state.filters.status;
    const chip = (status, label, n) => h('button', {
      type: 'button',
      class: `count st-${status || 'all'}`,
      'aria-pressed': String(active === status),
      dataset: { status: status || 'all' },
      on: { click: () => setFilters({ status: active === status ? '' : status, offset: 0 }) },
    }, h('span', { class: `n${n === 0 ? ' zero' : ''}` }, n.toLocaleString('en-US')), h('span', { class: 'label' }, label));
    fill($('counts'),
      chip('', 'All sagas', summary.total),
      STATUSES.map((status) => chip(status, statusLabel(status), summary.counts[status] || 0)),
    );
    renderRecords(summary.records);
    const types = summary.saga_types || [];
    if (types.join('\n') !== state.sagaTypes.join('\n')) {
      state.sagaTypes = types;
      const select = $('f-saga');
      fill(select, h('option', { value: '' }, 'All sagas'), types.map((t) => h('option', { value: t }, t)));
      select.value = state.filters.saga;
    }
  }

  function renderRecords(records) {
    if (!records) { fill($('records')); return; }
    const unreadable = records.unreadable || [];
    const reasons = unreadable.slice(0, 10).map((r) => `${r.reason}: ${r.count.toLocaleString('en-US')}`).join('; ');
    fill($('records'),
      `${records.records.toLocaleString('en-US')} records: ${records.events.toLocaleString('en-US')} events, `,
      `${records.duplicates.toLocaleString('en-US')} duplicates, ${records.dead_letters.toLocaleString('en-US')} dead letters, `,
      `${records.ignored.toLocaleString('en-US')} without choreo headers, `,
      h('span', { class: records.invalid ? 'unreadable' : null, dataset: { invalid: String(records.invalid) } },
        `${records.invalid.toLocaleString('en-US')} unreadable`),
      reasons ? h('span', { class: 'reasons' }, ` (${reasons})`) : null);
  }

  function renderRows(page) {
    const rows = page.items.map((saga) => {
      const href = sagaHash(saga.correlation_id);
      return h('tr', { dataset: { cid: saga.correlation_id }, on: { click: (e) => { if (e.target.tagName !== 'A') location.hash = href; } } },
        h('td', { class: 'cid' }, h('a', { href }, saga.correlation_id),
          saga.matched_fields && saga.matched_fields.length
            ? h('div', { class: 'matched muted' }, `matched ${saga.matched_fields.slice(0, 5).map((f) => truncate(f, 60)).join(', ')}`)
            : null),
        h('td', null, saga.saga),
        h('td', null, badge(saga.status), saga.violations ? h('span', { class: 'warn', title: 'guarantee violations' }, `⚠ ${saga.violations}`) : null),
        h('td', { class: 'when' }, fmtTime(saga.started_at_ms)),
        h('td', { class: 'num' }, saga.duration_ms === null ? h('span', { class: 'muted' }, 'running') : fmtDuration(saga.duration_ms)),
        h('td', { class: 'num' }, saga.event_count),
        h('td', { class: 'last' }, saga.last_event_type ? `${truncate(saga.last_event_type.split('.').pop(), 40)} · ${saga.last_service}` : ''));
    });
    if (!rows.length) rows.push(h('tr', null, h('td', { class: 'empty', colspan: '7' }, 'No sagas match these filters.')));
    fill($('saga-rows'), rows);
    const first = page.offset + 1;
    const last = page.offset + page.items.length;
    const of = page.total === null ? '' : ` of ${page.total.toLocaleString('en-US')}`;
    const cut = page.key_matches_cut ? ' (more sagas hold this key: narrow the search)' : '';
    $('page-info').textContent = page.items.length ? `${first.toLocaleString('en-US')}–${last.toLocaleString('en-US')}${of}${cut}` : '';
    $('prev').disabled = page.offset === 0;
    $('next').disabled = !page.has_more;
    if (!state.firstRowsMarked && page.items.length) {
      state.firstRowsMarked = true;
      performance.mark('choreo:first-rows');
      document.documentElement.dataset.firstRows = 'yes';
    }
  }

  function syncFilterInputs() {
    $('f-status').value = state.filters.status;
    $('f-saga').value = state.filters.saga;
    $('f-since').value = state.filters.since;
    if (document.activeElement !== $('f-q')) $('f-q').value = state.filters.q;
  }

  // --- one saga -----------------------------------------------------------------------

  async function loadSaga(seq, key) {
    const cid = state.cid;
    // ids go in the query string: a path segment such as '..' would be normalised away
    const detail = await getJSON(`/api/saga?${new URLSearchParams({ id: cid })}`);
    if (!fresh(seq, key)) return;
    if (!detail) {
      fill($('saga-head'), h('h1', null, 'No saga with correlation id ', h('span', { class: 'mono' }, cid)));
      for (const id of ['violations', 'timeline', 'event-rows', 'timeline-legend']) fill($(id));
      return;
    }
    renderSagaHead(detail);
    renderViolations(detail);
    drawTimeline($('timeline'), detail);
    renderEventRows(detail);
  }

  function renderSagaHead(d) {
    const services = d.lanes.length;
    fill($('saga-head'),
      h('h1', null, h('span', { class: 'mono', id: 'saga-cid' }, d.correlation_id), badge(d.status)),
      h('div', { class: 'meta' },
        h('span', null, 'Saga ', h('b', null, d.saga || '—')),
        h('span', null, 'Started ', h('b', null, fmtTime(d.started_at_ms))),
        h('span', null, 'Duration ', h('b', null, d.duration_ms === null ? 'running' : fmtDuration(d.duration_ms))),
        h('span', null, h('b', null, d.event_count), ` event${d.event_count === 1 ? '' : 's'} across `, h('b', null, services), ` service${services === 1 ? '' : 's'}`),
        d.status !== d.state ? h('span', null, 'Folded state ', h('b', null, d.state)) : null,
        d.deadline_ms && !d.ended_at_ms ? h('span', null, 'Next event due ', h('b', null, fmtTime(d.deadline_ms))) : null));
  }

  function renderViolations(d) {
    const box = $('violations');
    const letters = d.dead_letters || [];
    fill(box,
      d.violations.length ? h('div', { class: 'violations' },
        h('div', { class: 'title' }, `Saga guarantee violated (${d.violations.length})`),
        h('ul', null, d.violations.map((v) => h('li', null, h('code', null, v.code), ' ', v.message)))) : null,
      letters.length ? h('div', { class: 'violations dead-letters' },
        h('div', { class: 'title' }, `Dead-lettered records (${letters.length})`),
        h('ul', null, letters.map((l) => h('li', { dataset: { eventId: l.event_id } },
          h('code', null, l.reason), ' ', l.event_type, ' ', h('span', { class: 'mono' }, l.event_id),
          ` by ${l.service || '?'}`, l.failed_at_ms === null ? '' : ` at ${fmtTime(l.failed_at_ms)}`,
          ': ', l.message, l.needs_human ? ' (a human is needed)' : '')))) : null);
  }

  function renderEventRows(d) {
    const rows = d.events.map((e) => h('tr', {
      class: `role-${e.role}${e.event_id === state.selectedEventId ? ' selected' : ''}`,
      dataset: { index: String(e.index), eventId: e.event_id, role: e.role },
      on: { click: () => selectEvent(d, e) },
    },
    h('td', { class: 'num muted' }, e.index + 1),
    h('td', { class: 'num' }, fmtOffset(e.t_ms)),
    h('td', null, e.service),
    h('td', { class: 'type', title: e.event_type }, e.label, e.label !== e.event_type ? h('span', { class: 'full' }, e.event_type) : null),
    h('td', null, h('span', { class: `role role-${e.role}` }, e.role),
      e.marks.includes('violation') ? h('span', { class: 'mark' }, 'violation') : null,
      e.late ? h('span', { class: 'mark late' }, 'late') : null),
    h('td', { class: 'mono' }, e.step || ''),
    h('td', { class: 'num' }, h('button', { type: 'button', class: 'payload-btn', on: { click: (ev) => { ev.stopPropagation(); selectEvent(d, e); } } }, 'Payload'))));
    fill($('event-rows'), rows);
  }

  async function selectEvent(d, e) {
    state.selectedEventId = e.event_id;
    for (const row of $('event-rows').children) row.classList.toggle('selected', row.dataset.eventId === e.event_id);
    for (const g of $('timeline').querySelectorAll('.tl-event')) g.classList.toggle('selected', g.dataset.eventId === e.event_id);
    const panel = $('payload-panel');
    $('payload-title').textContent = `${e.label} · ${e.event_id}`;
    $('payload').textContent = 'Loading…';
    panel.hidden = false;
    try {
      const body = await getJSON(`/api/payload?${new URLSearchParams({ saga: d.correlation_id, event: e.event_id })}`);
      if (state.selectedEventId !== e.event_id) return;
      $('payload').textContent = body ? JSON.stringify(body.payload, null, 2) : 'No payload is kept for this event.';
    } catch (error) {
      $('payload').textContent = `Could not load the payload: ${error.message}`;
    }
  }

  // --- timeline (SVG) -----------------------------------------------------------------

  function marker(role, x, y) {
    const r = 8;
    switch (role) {
      case 'completed': return svg('rect', { class: 'm', x: x - r, y: y - r, width: 2 * r, height: 2 * r, rx: 4 });
      case 'failed': return svg('rect', { class: 'm', x: x - r, y: y - r, width: 2 * r, height: 2 * r, rx: 1 });
      case 'failure': return svg('path', { class: 'm', d: `M${x},${y - r - 2} L${x + r + 2},${y + r} L${x - r - 2},${y + r} Z` });
      case 'compensation': return svg('path', { class: 'm', d: `M${x},${y - r - 3} L${x + r + 3},${y} L${x},${y + r + 3} L${x - r - 3},${y} Z` });
      case 'notice': return svg('circle', { class: 'm', cx: x, cy: y, r: r - 2 });
      case 'command': case 'compensate': return svg('rect', { class: 'm', x: x - r + 2, y: y - r + 2, width: 2 * r - 4, height: 2 * r - 4 });
      default: return svg('circle', { class: 'm', cx: x, cy: y, r });
    }
  }

  function arrowDefs(id) {
    return svg('defs', null, svg('marker', { id, viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' },
      svg('path', { class: 'arrow', d: 'M0,0 L10,5 L0,10 Z' })));
  }

  // Positions (px) for events at fractions ``f`` (0..1) of the saga's duration, in causal
  // order, at least ``gap`` apart: as close to time-proportional as that allows (a blend
  // of time and rank; pure rank spacing, scrolling, when even that does not fit).
  function spread(f, width, gap) {
    const n = f.length;
    if (n < 2) return f.map(() => 0);
    if ((n - 1) * gap > width) return f.map((_, i) => i * gap);
    const at = (alpha, i) => width * (alpha * f[i] + (1 - alpha) * (i / (n - 1)));
    const fits = (alpha) => f.every((_, i) => i === 0 || at(alpha, i) - at(alpha, i - 1) >= gap - 0.01);
    let low = 0, high = 1;
    if (fits(1)) low = 1;
    else for (let k = 0; k < 24; k += 1) { const mid = (low + high) / 2; if (fits(mid)) low = mid; else high = mid; }
    return f.map((_, i) => at(low, i));
  }

  function drawTimeline(root, d) {
    const gutter = 170;
    const laneH = 66;
    const top = 30;
    const padX = 36;
    const padRight = 84;
    const minGap = 46;
    const events = d.events;
    const available = Math.max(480, (root.parentElement.clientWidth || 960) - gutter - padX - padRight);
    const span = Math.max(1, ...events.map((e) => e.t_ms));
    const xs = spread(events.map((e) => Math.max(0, e.t_ms) / span), available, minGap);
    const plotW = Math.max(available, xs[xs.length - 1] || 0);
    const width = gutter + padX + plotW + padRight;
    const height = top + d.lanes.length * laneH + 42;
    const X = (i) => gutter + padX + xs[i];
    const Y = (lane) => top + lane * laneH + laneH / 2;
    root.setAttribute('viewBox', `0 0 ${width} ${height}`);
    root.setAttribute('width', String(width));
    root.setAttribute('height', String(height));

    const parts = [arrowDefs('tl-arrow')];
    d.lanes.forEach((lane, i) => {
      const y = top + i * laneH;
      parts.push(svg('rect', { class: `lane-bg${i % 2 ? ' odd' : ''}`, x: 0, y, width, height: laneH }));
      parts.push(svg('line', { class: 'lane-line', x1: gutter, x2: width - 10, y1: y + laneH / 2, y2: y + laneH / 2 }));
      parts.push(svg('text', { class: 'lane-label', x: 16, y: y + laneH / 2 - 2, dataset: { lane: lane.service } }, truncate(lane.service, 22)));
      parts.push(svg('text', { class: 'lane-count', x: 16, y: y + laneH / 2 + 14 }, `${lane.events} event${lane.events === 1 ? '' : 's'}`));
    });

    // The compensating stretch: from the failure to the last compensation/terminal event.
    const failureAt = events.findIndex((e) => e.role === 'failure');
    if (failureAt >= 0) {
      let end = failureAt;
      events.forEach((e, i) => { if (i > failureAt && (e.role === 'compensation' || e.role === 'failed')) end = i; });
      const x1 = X(failureAt) - 20;
      const x2 = X(end) + 20;
      parts.push(svg('rect', { class: 'comp-band', x: x1, y: top - 20, width: x2 - x1, height: d.lanes.length * laneH + 20, rx: 6 }));
      parts.push(svg('text', { class: 'comp-band-label', x: x1 + 8, y: top - 6 }, 'COMPENSATING'));
    }

    events.forEach((e, i) => {
      if (e.cause_index === null || e.cause_index === undefined) return;
      const x1 = X(e.cause_index), y1 = Y(events[e.cause_index].lane);
      const x2 = X(i), y2 = Y(e.lane);
      const mid = (x1 + x2) / 2;
      const endX = x2 - (y1 === y2 ? 12 : 4);
      const endY = y2 + (y1 === y2 ? 0 : (y2 > y1 ? -12 : 12));
      parts.push(svg('path', { class: 'cause', d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${endX},${endY}`, 'marker-end': 'url(#tl-arrow)' }));
    });

    const laneSeq = {};
    events.forEach((e, i) => {
      const x = X(i), y = Y(e.lane);
      const nth = (laneSeq[e.lane] = (laneSeq[e.lane] || 0) + 1);
      const labelY = nth % 2 ? y + 25 : y - 16;
      const g = svg('g', { class: `tl-event role-${e.role}${e.event_id === state.selectedEventId ? ' selected' : ''}`, tabindex: '0', dataset: { index: String(i), eventId: e.event_id, role: e.role }, on: { click: () => selectEvent(d, e), keydown: (ev) => { if (ev.key === 'Enter') selectEvent(d, e); } } },
        svg('title', null, `${e.event_type}\n${e.role} · ${e.service} · ${fmtOffset(e.t_ms)}${e.marks.length ? `\n${e.marks.join(', ')}` : ''}`),
        svg('circle', { class: 'halo', cx: x, cy: y, r: 17 }),
        e.marks.includes('violation') ? svg('circle', { class: 'ring', cx: x, cy: y, r: 13 }) : null,
        e.late ? svg('circle', { class: 'ring late', cx: x, cy: y, r: 15 }) : null,
        marker(e.role, x, y),
        svg('text', { class: 'tl-label', x, y: labelY, 'text-anchor': 'middle' }, truncate(e.label, 24)));
      parts.push(g);
    });

    const axisY = top + d.lanes.length * laneH + 12;
    parts.push(svg('line', { class: 'axis', x1: gutter + padX, x2: gutter + padX + plotW, y1: axisY, y2: axisY }));
    events.forEach((_, i) => parts.push(svg('line', { class: 'tick', x1: X(i), x2: X(i), y1: axisY - 4, y2: axisY + 4 })));
    parts.push(svg('text', { class: 'axis-label', x: gutter + padX, y: axisY + 18, 'text-anchor': 'start' }, fmtTime(d.started_at_ms)));
    if (events.length > 1) {
      parts.push(svg('text', { class: 'axis-label', x: X(events.length - 1), y: axisY + 18, 'text-anchor': 'end' }, `${fmtOffset(span)} · time →`));
    }
    fill(root, parts);
    renderTimelineLegend(d);
  }

  function legendMarker(role) {
    return svg('svg', { width: '22', height: '22', viewBox: '0 0 22 22', class: 'timeline' },
      svg('g', { class: `tl-event role-${role}` }, marker(role, 11, 11)));
  }

  function renderTimelineLegend(d) {
    const seen = new Set(d.events.map((e) => e.role));
    const roles = ROLES.filter((r) => seen.has(r));
    fill($('timeline-legend'),
      roles.map((role) => h('span', { class: 'item' }, legendMarker(role), role)),
      h('span', { class: 'item muted' }, 'Arrows: caused by · click an event for its payload'));
  }

  // --- choreography graph (SVG) -------------------------------------------------------

  async function loadGraph(seq, key) {
    const graph = await getJSON('/api/graph');
    if (!fresh(seq, key)) return;
    const note = graph.source === 'declared'
      ? 'The declared choreography: services and the events they produce and consume.'
      : `Observed in the newest ${graph.sagas_sampled.toLocaleString('en-US')} sagas: each service reacting to an event, and the events it emitted.`;
    $('graph-note').textContent = note;
    drawGraph($('graph'), graph);
  }

  function layoutGraph(nodes, edges) {
    const out = new Map(nodes.map((n) => [n.id, []]));
    const indeg = new Map(nodes.map((n) => [n.id, 0]));
    for (const e of edges) {
      if (!out.has(e.from) || !out.has(e.to)) continue;
      out.get(e.from).push(e);
      indeg.set(e.to, indeg.get(e.to) + 1);
    }
    const mark = new Map();
    const back = new Set();
    const finished = [];
    const visit = (start) => {
      const stack = [[start, 0]];
      mark.set(start, 1);
      while (stack.length) {
        const top = stack[stack.length - 1];
        const outs = out.get(top[0]);
        if (top[1] < outs.length) {
          const e = outs[top[1]++];
          const m = mark.get(e.to);
          if (m === 1) back.add(e);
          else if (!m) { mark.set(e.to, 1); stack.push([e.to, 0]); }
        } else {
          mark.set(top[0], 2);
          finished.push(top[0]);
          stack.pop();
        }
      }
    };
    const roots = nodes.filter((n) => indeg.get(n.id) === 0 || n.role === 'start');
    for (const n of roots) if (!mark.get(n.id)) visit(n.id);
    for (const n of nodes) if (!mark.get(n.id)) visit(n.id);
    const layer = new Map(nodes.map((n) => [n.id, 0]));
    for (const id of finished.reverse()) {
      for (const e of out.get(id)) if (!back.has(e)) layer.set(e.to, Math.max(layer.get(e.to), layer.get(id) + 1));
    }
    const columns = [];
    for (const n of nodes) (columns[layer.get(n.id)] ||= []).push(n.id);
    const row = new Map();
    columns.forEach((col, c) => {
      if (c > 0) {
        const bary = (id) => {
          const ys = edges.filter((e) => e.to === id && row.has(e.from) && layer.get(e.from) < c).map((e) => row.get(e.from));
          return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : Infinity;
        };
        const keys = new Map(col.map((id) => [id, bary(id)]));
        col.sort((a, b) => keys.get(a) - keys.get(b));
      }
      col.forEach((id, i) => row.set(id, i));
    });
    return { layer, row, back, columns };
  }

  const LANES = ['forward', 'failure', 'compensation', 'notice'];

  function drawGraph(root, graph) {
    // Top to bottom: a saga's chain of events reads downwards; parallel branches sit
    // side by side.
    const nodeW = 184, nodeH = 40, colGap = 28, rowGap = 40, margin = 24;
    const { layer, row, back, columns } = layoutGraph(graph.nodes, graph.edges);
    const widest = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
    const pos = new Map();
    for (const n of graph.nodes) {
      const rank = columns[layer.get(n.id)];
      const offset = ((widest - rank.length) * (nodeW + colGap)) / 2;
      pos.set(n.id, { x: margin + 40 + offset + row.get(n.id) * (nodeW + colGap), y: margin + layer.get(n.id) * (nodeH + rowGap) });
    }
    const width = margin * 2 + 80 + widest * (nodeW + colGap) - colGap;
    const height = margin * 2 + Math.max(1, columns.length) * (nodeH + rowGap) - rowGap;
    root.setAttribute('viewBox', `0 0 ${width} ${height}`);
    root.setAttribute('width', String(width));
    root.setAttribute('height', String(height));
    const defs = svg('defs', null, LANES.map((lane) => svg('marker', { id: `g-arrow-${lane}`, viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' },
      svg('path', { class: `arrow lane-${lane}`, d: 'M0,0 L10,5 L0,10 Z' }))));
    const parts = [defs];
    if (!graph.nodes.length) {
      parts.push(svg('text', { x: margin, y: margin + 20, class: 'empty-note' }, 'Nothing observed yet.'));
    }
    for (const e of graph.edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      let d;
      if (back.has(e) || layer.get(e.to) <= layer.get(e.from)) {
        const x1 = a.x, y1 = a.y + nodeH / 2, x2 = b.x - 3, y2 = b.y + nodeH / 2 + 6;
        const side = Math.min(x1, x2) - 40;
        d = `M${x1},${y1} C${side},${y1} ${side},${y2} ${x2},${y2}`;
      } else {
        const x1 = a.x + nodeW / 2, y1 = a.y + nodeH, x2 = b.x + nodeW / 2, y2 = b.y - 3;
        const mid = (y1 + y2) / 2;
        d = `M${x1},${y1} C${x1},${mid} ${x2},${mid} ${x2},${y2}`;
      }
      const lane = LANES.includes(e.lane) ? e.lane : 'forward';
      parts.push(svg('path', { class: `g-edge ${e.kind || ''} lane-${lane}`, d, 'marker-end': `url(#g-arrow-${lane})` },
        svg('title', null, `${e.kind || 'edge'}: ${e.from} → ${e.to}${e.count ? ` · seen ${e.count}×` : ''}`)));
    }
    for (const n of graph.nodes) {
      const p = pos.get(n.id);
      const isEvent = n.kind === 'event';
      const cx = p.x + nodeW / 2;
      const text = n.detail
        ? [svg('text', { x: cx, y: p.y + 17, 'text-anchor': 'middle', class: 'name' }, truncate(n.label, 22)),
          svg('text', { x: cx, y: p.y + 31, 'text-anchor': 'middle', class: 'detail' }, truncate(n.detail, 26))]
        : [svg('text', { x: cx, y: p.y + nodeH / 2 + 4, 'text-anchor': 'middle', class: 'name' }, truncate(n.label, 24))];
      parts.push(svg('g', { class: isEvent ? `g-event role-${n.role || 'step'}` : `g-service kind-${n.kind}`, dataset: { node: n.id } },
        svg('title', null, n.title || n.label),
        svg('rect', { x: p.x, y: p.y, width: nodeW, height: nodeH, rx: isEvent ? nodeH / 2 : 6 }),
        text));
    }
    fill(root, parts);
    fill($('graph-legend'),
      h('span', { class: 'item' }, h('span', { class: 'swatch service' }), 'service reacting / starting'),
      ROLES.filter((r) => r !== 'notice').map((role) => h('span', { class: `item role-${role}` }, h('span', { class: 'swatch' }), `${role} event`)),
      h('span', { class: 'item' }, h('span', { class: 'line lane-failure' }), 'failure path'),
      h('span', { class: 'item' }, h('span', { class: 'line lane-compensation' }), 'compensation path'));
  }

  // --- live updates -------------------------------------------------------------------

  // The stream is reopened by the page itself, with exponential backoff and jitter, after
  // any error: EventSource gives up for good on a 503 (too many streams) or any non-200.
  const STREAM_RETRY_MIN_MS = 1000;
  const STREAM_RETRY_MAX_MS = 30000;
  let streamDelay = STREAM_RETRY_MIN_MS;

  function connectStream() {
    const live = $('live');
    const text = $('live-text');
    const source = new EventSource('/api/stream');
    const up = () => { streamDelay = STREAM_RETRY_MIN_MS; live.dataset.state = 'live'; text.textContent = 'live'; };
    source.addEventListener('open', up);
    source.addEventListener('hello', up);
    source.addEventListener('change', (event) => {
      let version = '';
      try { version = JSON.parse(event.data).version; } catch (_) { /* ignore */ }
      live.dataset.state = 'live';
      live.dataset.version = String(version);
      text.textContent = `live · updated ${fmtTime(Date.now())}`;
      live.classList.remove('pulse');
      void live.offsetWidth; // restart the pulse animation
      live.classList.add('pulse');
      scheduleRefresh();
    });
    source.addEventListener('error', () => {
      source.close();
      const wait = Math.round(streamDelay * (0.75 + Math.random() * 0.5));
      streamDelay = Math.min(streamDelay * 2, STREAM_RETRY_MAX_MS);
      live.dataset.state = 'down';
      live.dataset.retryMs = String(wait);
      text.textContent = `reconnecting in ${Math.ceil(wait / 1000)} s…`;
      setTimeout(connectStream, wait);
    });
  }

  // --- wiring -------------------------------------------------------------------------

  function init() {
    const status = $('f-status');
    fill(status, h('option', { value: '' }, 'All states'), STATUSES.map((s) => h('option', { value: s }, statusLabel(s))));
    status.addEventListener('change', () => setFilters({ status: status.value, offset: 0 }));
    $('f-saga').addEventListener('change', () => setFilters({ saga: $('f-saga').value, offset: 0 }));
    $('f-since').addEventListener('change', () => setFilters({ since: $('f-since').value, offset: 0 }));
    let debounce = 0;
    const search = $('f-q');
    search.addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => setFilters({ q: search.value.trim(), offset: 0 }), 220);
    });
    search.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') { clearTimeout(debounce); setFilters({ q: search.value.trim(), offset: 0 }); }
    });
    $('prev').addEventListener('click', () => setFilters({ offset: Math.max(0, state.filters.offset - PAGE_SIZE) }));
    $('next').addEventListener('click', () => setFilters({ offset: state.filters.offset + PAGE_SIZE }));
    window.addEventListener('hashchange', applyRoute);
    applyRoute();
    connectStream();
  }

  init();
})();
