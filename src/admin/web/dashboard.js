/* The Granary dashboard. Polls /api/cluster every second (the silo serving
 * this page gathers every member's part), keeps five minutes of per-second
 * samples per silo here, and draws tables and small SVG charts. No library:
 * the charts are a few lines of SVG each. Layout of the JSON:
 * docs/dashboard.md. */
'use strict';

const POLL_MS = 1000;
const WINDOW = 300; /* seconds kept */
const OVERLAP = 5;  /* seconds asked again each poll: silos sample a little apart */

const st = {
  silos: new Map(), /* id -> {frag, series: Map(key -> Map(t -> sample)), io: Map(t -> sample), seenMs} */
  le: [],           /* latency bucket upper bounds, us */
  lastT: 0,         /* newest sample second received */
  nowT: 0,          /* the serving silo's clock, seconds */
  figures: new Map(),
  view: 300,        /* seconds charted (the window selector) */
  classes: new Map(), /* class -> true, for the search box */
  changes: new Map(), /* "version|id|to" -> change: kept here, so the list survives a restart of the serving silo */
};

let last = null; /* the newest /api/cluster answer */

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function fmtNum(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
  return a >= 100 || digits === 0 ? String(Math.round(v)) : v.toFixed(digits === undefined ? 1 : digits);
}
function fmtMs(v) {
  if (v === null || v === undefined) return '–';
  return v >= 100 ? Math.round(v) + ' ms' : v >= 1 ? v.toFixed(1) + ' ms' : Math.round(v * 1000) + ' µs';
}
function fmtBytes(v) {
  if (!v) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return v.toFixed(i ? 1 : 0) + ' ' + u[i];
}
function fmtTime(ms) { return new Date(ms).toLocaleTimeString(); }

/* ---- data ---- */

function ingest(d) {
  st.le = d.latency_le_us || st.le;
  st.nowT = Math.floor(d.now_ms / 1000);
  const nowMs = Date.now();
  for (const f of d.silos) {
    let rec = st.silos.get(f.id);
    if (!rec) { rec = { series: new Map(), io: new Map() }; st.silos.set(f.id, rec); }
    rec.frag = f;
    rec.seenMs = nowMs;
    if (f.error) continue;
    for (const s of f.series || []) {
      const key = s.class + '.' + s.method;
      let m = rec.series.get(key);
      if (!m) { m = new Map(); rec.series.set(key, m); }
      for (const x of s.samples) { m.set(x[0], x); st.lastT = Math.max(st.lastT, x[0]); }
    }
    for (const x of f.storage || []) { rec.io.set(x[0], x); st.lastT = Math.max(st.lastT, x[0]); }
    for (const m of f.methods || []) st.classes.set(m[0], true);
  }
  /* Forget what is older than the window, and silos gone for that long. */
  const oldest = st.nowT - WINDOW;
  for (const [id, rec] of st.silos) {
    for (const m of rec.series.values()) for (const t of m.keys()) if (t <= oldest) m.delete(t);
    for (const t of rec.io.keys()) if (t <= oldest) rec.io.delete(t);
    if (nowMs - rec.seenMs > WINDOW * 1000) st.silos.delete(id);
  }
}

function seconds() { /* the charted seconds, oldest first; the current one is still filling */
  const out = [];
  for (let t = st.nowT - st.view + 1; t < st.nowT; t++) out.push(t);
  return out;
}

/* Per second: calls, errors and merged latency buckets over the silos, for
 * one key (class.method) or every key (null). */
function aggregate(key) {
  const ts = seconds();
  const calls = new Array(ts.length).fill(0);
  const errors = new Array(ts.length).fill(0);
  const buckets = ts.map(() => new Array(16).fill(0));
  const t0 = ts[0];
  for (const rec of st.silos.values()) {
    for (const [k, m] of rec.series) {
      if (key !== null && k !== key) continue;
      for (const [t, x] of m) {
        const i = t - t0;
        if (i < 0 || i >= ts.length) continue;
        calls[i] += x[1];
        errors[i] += x[2];
        for (let b = 0; b < 16; b++) buckets[i][b] += x[3 + b];
      }
    }
  }
  return { ts, calls, errors, buckets };
}

/* The q-quantile in ms of a bucket count array, interpolated in its bucket. */
function quantile(b, q) {
  let n = 0;
  for (const c of b) n += c;
  if (!n) return null;
  const target = q * n;
  let cum = 0;
  for (let i = 0; i < b.length; i++) {
    if (b[i] && cum + b[i] >= target) {
      const lo = i ? st.le[i - 1] : 0;
      const hi = i < st.le.length ? st.le[i] : st.le[st.le.length - 1] * 2;
      return (lo + (hi - lo) * ((target - cum) / b[i])) / 1000;
    }
    cum += b[i];
  }
  return null;
}

function mergeBuckets(list) {
  const out = new Array(16).fill(0);
  for (const b of list) for (let i = 0; i < 16; i++) out[i] += b[i];
  return out;
}

function storageSeries() {
  const ts = seconds();
  const rows = [[], [], []];
  const t0 = ts[0];
  for (let i = 0; i < ts.length; i++) rows[0].push(0), rows[1].push(0), rows[2].push(0);
  for (const rec of st.silos.values())
    for (const [t, x] of rec.io) {
      const i = t - t0;
      if (i < 0 || i >= ts.length) continue;
      rows[0][i] += x[3]; rows[1][i] += x[4]; rows[2][i] += x[5];
    }
  return rows;
}

function lastAvg(values, n) {
  const tail = values.slice(-n);
  return tail.length ? tail.reduce((a, b) => a + b, 0) / tail.length : 0;
}

/* ---- charts ---- */

const SVGNS = 'http://www.w3.org/2000/svg';
function svgEl(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

/* lines: [{values, cls}] (null = no data); bars: values or null. */
function drawChart(svg, lines, bars, fmt) {
  const W = Math.max(svg.clientWidth || 300, 100), H = Math.max(svg.clientHeight || 100, 40);
  const padL = 46, padB = 14, padT = 6;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const n = (lines[0] ? lines[0].values : bars).length;
  let max = 0;
  for (const l of lines) for (const v of l.values) if (v !== null && v > max) max = v;
  let barMax = 0;
  if (bars) for (const v of bars) if (v > barMax) barMax = v;
  if (!lines.length) max = barMax;
  const top = max > 0 ? max * 1.1 : 1;
  const x = (i) => padL + (W - padL - 2) * (n > 1 ? i / (n - 1) : 0);
  const y = (v, m) => padT + (H - padT - padB) * (1 - v / m);
  for (const f of [0, 0.5, 1]) {
    const yy = y(top * f, top);
    svg.append(svgEl('line', { class: 'grid', x1: padL, x2: W, y1: yy, y2: yy }));
    if (f > 0) {
      const t = svgEl('text', { class: 'axis', x: padL - 3, y: yy + 3, 'text-anchor': 'end' });
      t.textContent = fmt(top * f);
      svg.append(t);
    }
  }
  const t1 = svgEl('text', { class: 'axis', x: padL, y: H - 2 });
  t1.textContent = `-${Math.round(st.view / 60)} min`;
  const t2 = svgEl('text', { class: 'axis', x: W - 2, y: H - 2, 'text-anchor': 'end' });
  t2.textContent = 'now';
  svg.append(t1, t2);
  if (bars && barMax > 0) {
    const bw = Math.max((W - padL) / n, 1);
    const scale = lines.length ? barMax * 1.1 : top;
    bars.forEach((v, i) => {
      if (!v) return;
      const yy = y(v, scale);
      svg.append(svgEl('rect', { class: 'bar', x: x(i) - bw / 2, y: yy, width: bw, height: H - padB - yy }));
    });
  }
  lines.forEach((l) => {
    let d = '', pen = false;
    l.values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v, top).toFixed(1)}`;
      pen = true;
    });
    if (d) svg.append(svgEl('path', { class: l.cls, d }));
  });
}

/* ---- rendering ---- */

function short(id) { return id.replace(/-[0-9a-f]+$/, ''); }

function siloRate(rec) {
  if (!rec || !rec.io.size) return null;
  let sum = 0, n = 0;
  for (let t = st.nowT - 5; t < st.nowT; t++) { const x = rec.io.get(t); if (x) sum += x[1]; n++; }
  return n ? sum / n : null;
}

function renderMembers(d) {
  const tbody = $('members').tBodies[0];
  const rows = [];
  const ids = d.view.members.length ? d.view.members.map((m) => m.id) : d.silos.map((f) => f.id);
  let active = 0;
  for (const id of ids) {
    const m = d.view.members.find((x) => x.id === id);
    const rec = st.silos.get(id);
    const f = rec && rec.frag && rec.frag.now_ms ? rec.frag : null;
    const err = rec && rec.frag && rec.frag.error;
    let status = m ? m.status : f ? f.state : 'unknown';
    if (f && m && f.state !== 'active' && f.state !== m.status) status = f.state;
    if (status === 'active') active++;
    const badge = el('span', { class: 'badge ' + (err ? 'unreachable' : status), text: err ? status + ' · unreachable' : status });
    if (err) badge.title = err;
    const tr = el('tr', { 'data-status': status, 'data-id': id },
      el('td', {}, el('div', { class: 'id', title: id }, short(id), el('span', { class: 'gen', text: id.slice(short(id).length) }))),
      el('td', {}, badge),
      el('td', { class: 'num', text: m ? m.heartbeat_age_ms + ' ms' : '–' }),
      el('td', { class: 'num', text: f ? fmtNum(f.load.activations, 0) : '–' }),
      el('td', { class: 'num', text: f ? fmtNum(siloRate(rec)) : '–' }),
      el('td', { class: 'num', text: f && f.totals.directory_entries !== undefined ? fmtNum(f.totals.directory_entries, 0) : '–' }),
      el('td', { class: 'num', text: f ? Math.round(f.load.cpu * 100) + ' %' : '–' }),
      el('td', { class: 'num', text: f ? fmtBytes(f.load.rss_bytes) : '–' }),
      el('td', { class: 'num', text: f ? fmtNum(f.load.connections, 0) : '–' }));
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
  $('silos-active').textContent = `${active} / ${ids.length}`;
}

function liveFrags(d) { return d.silos.filter((f) => !f.error); }

function renderGrains(d) {
  const frags = liveFrags(d);
  const classes = new Set();
  for (const f of frags) for (const c of f.classes) classes.add(c.name);
  const table = $('grains');
  table.tHead.replaceChildren(el('tr', {}, el('th', { text: 'Class' }),
    ...frags.map((f) => el('th', { class: 'num', text: short(f.id), title: f.id })), el('th', { class: 'num', text: 'Total' })));
  let total = 0;
  const rows = [...classes].sort().map((name) => {
    let sum = 0;
    const cells = frags.map((f) => {
      const c = f.classes.find((x) => x.name === name);
      const v = c ? c.active : 0;
      sum += v;
      return el('td', { class: 'num', text: fmtNum(v, 0) });
    });
    total += sum;
    return el('tr', {}, el('td', { text: name }), ...cells, el('td', { class: 'num', text: fmtNum(sum, 0) }));
  });
  table.tBodies[0].replaceChildren(...rows);
  $('grain-total').textContent = fmtNum(total, 0);
  $('grain-total').dataset.value = String(total);
}

function renderStorage(d) {
  const frags = liveFrags(d);
  const sum = [0, 0, 0, 0];
  const rows = frags.map((f) => {
    const v = [f.totals.storage_reads, f.totals.storage_writes, f.totals.storage_conflicts, f.totals.storage_errors];
    v.forEach((x, i) => { sum[i] += x; });
    return el('tr', {}, el('td', { class: 'id', text: short(f.id), title: f.id }), ...v.map((x) => el('td', { class: 'num', text: fmtNum(x, 0) })));
  });
  rows.push(el('tr', {}, el('th', { text: 'All' }), ...sum.map((x) => el('th', { class: 'num', text: fmtNum(x, 0) }))));
  $('storage').tBodies[0].replaceChildren(...rows);
  $('conflicts').textContent = fmtNum(sum[2], 0);
}

function renderMigration(d) {
  const keys = ['migrated_in', 'migrated_out', 'migrate_refused', 'migrate_failed', 'rebalance_moves'];
  const sum = keys.map(() => 0);
  const rows = liveFrags(d).map((f) => {
    const v = keys.map((k) => f.totals[k]);
    v.forEach((x, i) => { if (x !== undefined) sum[i] += x; });
    return el('tr', {}, el('td', { class: 'id', text: short(f.id), title: f.id }),
      ...v.map((x) => el('td', { class: 'num', text: x === undefined ? '–' : fmtNum(x, 0) })));
  });
  rows.push(el('tr', {}, el('th', { text: 'All' }), ...sum.map((x) => el('th', { class: 'num', text: fmtNum(x, 0) }))));
  $('migration').tBodies[0].replaceChildren(...rows);
}

function renderCharts() {
  const all = aggregate(null);
  const total = all.calls.reduce((a, b) => a + b, 0);
  const calls = $('chart-calls');
  drawChart(calls, [{ values: all.calls, cls: 's0' }], null, (v) => fmtNum(v));
  calls.dataset.total = String(total);
  const p50 = all.buckets.map((b) => quantile(b, 0.5));
  const p99 = all.buckets.map((b) => quantile(b, 0.99));
  drawChart($('chart-latency'), [{ values: p50, cls: 's0' }, { values: p99, cls: 's1' }], null, fmtMs);
  const io = storageSeries();
  drawChart($('chart-storage'), [{ values: io[0], cls: 's0' }, { values: io[1], cls: 's1' }, { values: io[2], cls: 's2' }], null, (v) => fmtNum(v));
  $('calls-rate').textContent = fmtNum(lastAvg(all.calls, 5));
  $('p99').textContent = fmtMs(quantile(mergeBuckets(all.buckets.slice(-5)), 0.99));
  $('writes-rate').textContent = fmtNum(lastAvg(io[1], 5));
}

function renderMethods(d) {
  /* Every method called in the window, plus totals from the silos' counters. */
  const totals = new Map();
  for (const f of liveFrags(d))
    for (const m of f.methods) {
      const key = m[0] + '.' + m[1];
      const t = totals.get(key) || [0, 0];
      t[0] += m[3]; t[1] += m[4];
      totals.set(key, t);
    }
  const keys = new Set();
  for (const rec of st.silos.values()) for (const [k, m] of rec.series) if (m.size) keys.add(k);
  const box = $('methods');
  const sorted = [...keys].sort();
  for (const [k, fig] of st.figures) if (!keys.has(k)) { fig.remove(); st.figures.delete(k); }
  if (!sorted.length && !box.firstChild) box.append(el('p', { class: 'muted', text: 'No calls in the last five minutes.' }));
  for (const k of sorted) {
    let fig = st.figures.get(k);
    if (!fig) {
      if (box.firstChild && box.firstChild.tagName === 'P') box.replaceChildren();
      const svg = svgEl('svg', { class: 'chart' });
      fig = el('figure', { 'data-key': k }, el('figcaption', {}, el('b', { text: k }), el('span', { class: 'stats' })), svg);
      st.figures.set(k, fig);
      box.append(fig);
    }
    const a = aggregate(k);
    const p99 = a.buckets.map((b) => quantile(b, 0.99));
    drawChart(fig.querySelector('svg'), [{ values: p99, cls: 's1' }], a.calls, fmtMs);
    const t = totals.get(k) || [0, 0];
    fig.querySelector('.stats').textContent =
      `${fmtNum(lastAvg(a.calls, 5))}/s · p99 ${fmtMs(quantile(mergeBuckets(a.buckets.slice(-5)), 0.99))} · ${fmtNum(t[0], 0)} calls, ${fmtNum(t[1], 0)} errors`;
  }
  const order = [...box.children].map((c) => c.dataset.key);
  if (sorted.length && order.join('\n') !== sorted.join('\n')) box.replaceChildren(...sorted.map((k) => st.figures.get(k)));
}

function renderChanges(d) {
  /* Views are numbered by the cluster, so the same change reported by two
   * serving silos has the same key; "seen" entries only say what a silo
   * found when it started, and are dropped when the change itself is known. */
  for (const c of d.changes) {
    const key = `${c.version}|${c.id}|${c.to}`;
    const known = [...st.changes.values()].some((x) => x.id === c.id && x.to === c.to && x.from !== 'seen');
    if (!st.changes.has(key) && !(c.from === 'seen' && known)) st.changes.set(key, c);
  }
  const list = [...st.changes.values()].sort((a, b) => b.version - a.version || b.t_ms - a.t_ms).slice(0, 64);
  st.changes = new Map(list.map((c) => [`${c.version}|${c.id}|${c.to}`, c]));
  const items = list.map((c) => {
    const what = c.to === '' ? `left the view (was ${c.from})` : c.from === '' ? `joined as ${c.to}` :
      c.from === 'seen' ? `${c.to} when this silo started` : `${c.from} → ${c.to}`;
    return el('li', {}, el('span', { class: 'muted', text: fmtTime(c.t_ms) + ' ' }), el('span', { class: 'id', text: short(c.id) }),
      ' ' + what + ' ', el('span', { class: 'muted small', text: `(view ${c.version})` }));
  });
  $('changes').replaceChildren(...items);
}

function renderClasses() {
  const sel = $('search-class');
  const have = [...sel.options].map((o) => o.value);
  const want = [...st.classes.keys()].sort();
  if (have.join('\n') !== want.join('\n')) {
    const cur = sel.value;
    sel.replaceChildren(...want.map((c) => el('option', { value: c, text: c })));
    if (want.includes(cur)) sel.value = cur;
  }
}

function render(d) {
  last = d;
  $('cluster-name').textContent = '· ' + d.cluster;
  $('view-version').textContent = d.view.version;
  $('served-by').textContent = short(d.served_by);
  $('served-by').title = d.served_by;
  $('updated').textContent = fmtTime(d.now_ms);
  renderMembers(d);
  renderGrains(d);
  renderStorage(d);
  renderMigration(d);
  renderCharts();
  renderMethods(d);
  renderChanges(d);
  renderClasses();
}

function setConn(ok, err) {
  const c = $('conn');
  c.className = 'badge ' + (ok ? 'live' : 'lost');
  c.textContent = ok ? 'live' : 'connection lost, retrying';
  c.title = err ? String(err) : '';
}

async function poll() {
  try {
    const since = st.lastT ? st.lastT - OVERLAP : 0;
    /* A silo that accepted the connection but cannot answer (stopped, or
     * its loop blocked) must not freeze the page: give up after 5 s. */
    const r = await fetch('/api/cluster?since=' + since, { cache: 'no-store', signal: AbortSignal.timeout(5000) });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    const d = await r.json();
    ingest(d);
    render(d);
    setConn(true);
  } catch (e) {
    setConn(false, e);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

/* ---- search and read-only calls ---- */

async function getJson(url) {
  const r = await fetch(url, { cache: 'no-store', signal: AbortSignal.timeout(10000) });
  const d = await r.json().catch(() => ({ error: 'HTTP ' + r.status }));
  return d;
}

let located = null;

$('search').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const cls = $('search-class').value, key = $('search-key').value;
  const out = $('locate-result');
  out.className = 'result';
  out.textContent = 'looking…';
  const q = new URLSearchParams({ class: cls, key });
  const d = await getJson('/api/locate?' + q).catch((e) => ({ error: String(e) }));
  if (d.error && !d.class) { out.textContent = d.error; located = null; $('call').hidden = true; return; }
  located = d;
  let text = `${d.class}/${d.key}: `;
  if (d.stateless_worker) text += 'a stateless worker, served on whichever silo a call enters';
  else if (d.host) text += `active on ${d.host}`;
  else text += 'not active (a call activates it)';
  if (!d.stateless_worker && d.directory_owner) text += ` · directory entry kept by ${d.directory_owner}`;
  if (d.error) text += ` · lookup failed: ${d.error}`;
  out.textContent = text;
  out.dataset.host = d.host || '';
  const methods = d.read_only || [];
  $('call-method').replaceChildren(...methods.map((m) => el('option', { value: m, text: m })));
  $('call').hidden = methods.length === 0;
  if (!methods.length) out.textContent += ' · the class declares no read-only methods';
});

$('call').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (!located) return;
  const out = $('call-result');
  out.hidden = false;
  out.textContent = 'calling…';
  const q = new URLSearchParams({ class: located.class, key: located.key, method: $('call-method').value, arg: $('call-arg').value });
  const d = await getJson('/api/call?' + q).catch((e) => ({ error: String(e) }));
  out.textContent = d.error ? 'refused: ' + d.error :
    `${located.class}/${located.key}.${$('call-method').value} → ${d.status} in ${fmtMs(d.took_us / 1000)}\n${d.reply}`;
  out.dataset.status = d.status || 'error';
});

$('window').addEventListener('change', () => {
  st.view = Number($('window').value);
  if (last) { renderCharts(); renderMethods(last); }
});
window.addEventListener('resize', () => { if (last) { renderCharts(); renderMethods(last); } });
poll();
