// NeuralForge Studio: the shared front-end core (no framework, no build step).
// Pages live in pages/*.js and register themselves in NF.pages; this file has the
// router, the API client, SSE helpers, charts (uPlot) and formatting.
'use strict';

const NF = (window.NF = { pages: {}, cleanup: [] });

// ---------------------------------------------------------------- token

// The studio's token arrives once, in the address `neuralforge studio` printed (?token=…).
// It is kept in localStorage, which belongs to this origin alone (port included), and
// taken out of the address. It is never a cookie: browsers send a host's cookies to every
// port of it, so another program on another localhost port would receive it.
NF.token = (function takeToken() {
  const q = new URLSearchParams(location.search);
  const t = q.get('token');
  if (t) {
    try { localStorage.setItem('nf-studio-token', t); } catch (_) { /* private mode: this page only */ }
    q.delete('token');
    const rest = q.toString();
    history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : '') + location.hash);
    return t;
  }
  try { return localStorage.getItem('nf-studio-token') || ''; } catch (_) { return ''; }
})();

// `url` with the token as a query parameter, for what cannot send headers (EventSource,
// download links).
NF.withToken = (url) => `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(NF.token)}`;

// ---------------------------------------------------------------- DOM helpers

// h('div', {class: 'x', testid: 'y', onclick: fn}, child, 'text', [more]) -> Element
NF.h = function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'testid') el.dataset.testid = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' || k === 'checked' || k === 'selected' || k === 'disabled' || k === 'hidden' || k === 'multiple') el[k] = v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  NF.append(el, children);
  return el;
};

NF.append = function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
};

NF.clear = function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
};

// Replace el's children (arrays flattened, null/false skipped).
NF.fill = function fill(el, ...children) {
  return NF.append(NF.clear(el), children);
};

NF.$ = (sel, root) => (root || document).querySelector(sel);

// A labelled form field: label text above the control.
NF.field = function field(label, control, help) {
  return NF.h('label', { class: 'field' },
    NF.h('span', { class: 'field-label' }, label), control,
    help ? NF.h('span', { class: 'field-help' }, help) : null);
};

NF.section = function section(title, testid, ...children) {
  return NF.h('section', { class: 'card', testid }, title ? NF.h('h2', {}, title) : null, ...children);
};

NF.kv = function kv(pairs, testid) {
  const dl = NF.h('dl', { class: 'kv', testid });
  for (const [k, v] of pairs) {
    if (v === undefined) continue;
    dl.append(NF.h('dt', {}, k), NF.h('dd', {}, v === null ? '—' : v));
  }
  return dl;
};

NF.badge = function badge(status) {
  const s = String(status || 'unknown');
  return NF.h('span', { class: `badge badge-${s}`, testid: 'status-badge', dataset: { status: s } }, s);
};

NF.progressBar = function progressBar(done, total, testid) {
  const pct = total ? Math.max(0, Math.min(100, (100 * done) / total)) : null;
  const bar = NF.h('div', { class: 'progress' + (pct === null ? ' indeterminate' : ''), testid,
    role: 'progressbar', 'aria-valuenow': pct === null ? undefined : pct.toFixed(0) },
  NF.h('div', { class: 'progress-fill', style: { width: pct === null ? '30%' : pct + '%' } }));
  return bar;
};

// ---------------------------------------------------------------- formatting

NF.fmt = {
  bytes(n) {
    if (n === null || n === undefined || !isFinite(n)) return '—';
    const u = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    let x = Number(n);
    while (Math.abs(x) >= 1000 && i < u.length - 1) { x /= 1000; i++; }
    return (i === 0 ? x.toFixed(0) : x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0)) + ' ' + u[i];
  },
  // seconds -> m:ss (or h:mm:ss); sub-second values as ms
  duration(s) {
    if (s === null || s === undefined || !isFinite(s)) return '—';
    if (s < 1) return Math.round(s * 1000) + ' ms';
    const t = Math.round(s);
    const h = Math.floor(t / 3600);
    const m = Math.floor((t % 3600) / 60);
    const sec = String(t % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
  },
  ms(x) {
    if (x === null || x === undefined || !isFinite(x)) return '—';
    return x >= 100 ? x.toFixed(0) + ' ms' : x >= 10 ? x.toFixed(1) + ' ms' : x.toFixed(2) + ' ms';
  },
  count(n) {
    if (n === null || n === undefined || !isFinite(n)) return '—';
    return Number(n).toLocaleString('en-US');
  },
  // 1234567 -> 1.23M
  si(n) {
    const v = NF.fmt.si_(n);
    return v.replace(/\.0+([KMGT])$/, '$1');
  },
  si_(n) {
    if (n === null || n === undefined || !isFinite(n)) return '—';
    const a = Math.abs(n);
    if (a >= 1e12) return (n / 1e12).toFixed(2) + 'T';
    if (a >= 1e9) return (n / 1e9).toFixed(2) + 'G';
    if (a >= 1e6) return (n / 1e6).toFixed(2) + 'M';
    if (a >= 1e4) return (n / 1e3).toFixed(1) + 'K';
    if (a >= 1e3) return (n / 1e3).toFixed(2) + 'K';
    return String(Number(Number(n).toPrecision(3)));
  },
  loss(x) {
    return x === null || x === undefined || !isFinite(x) ? '—' : Number(x).toFixed(4);
  },
  lr(x) {
    return x === null || x === undefined || !isFinite(x) ? '—' : Number(x).toExponential(2);
  },
  rate(x, unit) {
    return x === null || x === undefined || !isFinite(x) ? '—' : `${NF.fmt.si(x)} ${unit}`;
  },
  time(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toLocaleString('en-GB', { year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  },
  elapsed(startIso, endIso) {
    if (!startIso) return '—';
    const a = Date.parse(startIso);
    const b = endIso ? Date.parse(endIso) : Date.now();
    return isNaN(a) || isNaN(b) ? '—' : NF.fmt.duration(Math.max(0, (b - a) / 1000));
  },
};

// ---------------------------------------------------------------- API client

class ApiError extends Error {
  constructor(status, error, hint) {
    super(error);
    this.status = status;
    this.error = error;
    this.hint = hint || null;
  }
}
NF.ApiError = ApiError;

// api('GET', '/api/runs'), api('POST', '/api/train', {...}), api('PUT', url, fileBlob)
NF.api = async function api(method, path, body) {
  const init = { method, headers: { Accept: 'application/json', Authorization: `Bearer ${NF.token}` } };
  if (body instanceof Blob) {
    init.body = body;
    init.headers['Content-Type'] = 'application/octet-stream';
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `Cannot reach the studio server (${e.message}).`, 'Is `neuralforge studio` still running?');
  }
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = null; }
  }
  if (!r.ok) {
    if (data && typeof data === 'object' && data.error) throw new ApiError(r.status, data.error, data.hint);
    let hint = null;
    if (r.status === 401) hint = 'Open the URL that `neuralforge studio` printed (it carries ?token=).';
    throw new ApiError(r.status, `${method} ${path}: ${r.status} ${r.statusText}${text ? ': ' + text.slice(0, 300) : ''}`, hint);
  }
  return data === null && text ? text : data;
};

// An error box with the CLI's error and hint text.
NF.errorBox = function errorBox(err, testid) {
  const error = err && (err.error || err.message) ? err.error || err.message : String(err);
  const hint = err && err.hint ? err.hint : null;
  return NF.h('div', { class: 'error-box', testid: testid || 'error-box', role: 'alert' },
    NF.h('div', { class: 'error-msg', testid: 'error-message' }, NF.h('strong', {}, 'Error: '), error),
    hint ? NF.h('div', { class: 'error-hint', testid: 'error-hint' }, NF.h('strong', {}, 'Hint: '), hint) : null);
};

// Replace the contents of `slot` with an error box (or clear it when err is null).
NF.showError = function showError(slot, err) {
  NF.clear(slot);
  if (err) {
    slot.append(NF.errorBox(err));
    slot.hidden = false;
    if (err instanceof Error && !(err instanceof ApiError)) console.error(err);
  } else {
    slot.hidden = true;
  }
};

NF.globalError = function globalError(err) {
  NF.showError(document.getElementById('global-error'), err);
};

// ---------------------------------------------------------------- SSE

// Subscribe to a studio SSE stream. Each line carries an SSE id, so after an automatic
// reconnect the browser sends Last-Event-ID and the server resumes after the last line seen.
// handlers: {ndjson(event, index), status(summary), done(summary), error()},
// stopWhen(): close instead of reconnecting when the stream breaks and this is true.
NF.sse = function sse(url, handlers, stopWhen) {
  let seen = 0;
  let closed = false;
  const es = new EventSource(NF.withToken(url));
  es.addEventListener('ndjson', (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch (_) { return; }
    seen++;
    if (handlers.ndjson) handlers.ndjson(ev, seen - 1);
  });
  es.addEventListener('status', (m) => {
    if (handlers.status) { try { handlers.status(JSON.parse(m.data)); } catch (e) { console.error(e); } }
  });
  es.addEventListener('done', (m) => {
    closed = true;
    es.close();
    let s = null;
    try { s = JSON.parse(m.data); } catch (_) { s = null; }
    if (handlers.done) handlers.done(s);
  });
  es.addEventListener('error', () => {
    if (closed) return;
    if (stopWhen && stopWhen()) { closed = true; es.close(); }
    if (handlers.error) handlers.error(es.readyState);
  });
  const sub = { close() { closed = true; es.close(); }, get closed() { return closed; } };
  NF.cleanup.push(() => sub.close());
  return sub;
};

// Follow a job: onEvent(ev) for each NDJSON line, onDone(summary) at the end. A failed job's
// summary carries {error, hint}; an `error` event in the stream carries {message, hint}.
NF.followJob = function followJob(jobId, onEvent, onDone) {
  let lastError = null;
  return NF.sse(`/api/jobs/${encodeURIComponent(jobId)}/events`, {
    ndjson(ev) {
      if (ev.type === 'error') lastError = ev;
      onEvent(ev);
    },
    async done(summary) {
      let s = summary;
      if (!s) {
        try { s = await NF.api('GET', `/api/jobs/${encodeURIComponent(jobId)}`); } catch (e) { s = { status: 'failed', error: e.error, hint: e.hint }; }
      }
      if (s && s.status === 'failed' && !s.error && lastError) {
        s.error = lastError.message;
        s.hint = lastError.hint;
      }
      onDone(s);
    },
  });
};

NF.jobError = function jobError(summary) {
  return {
    error: (summary && summary.error) || `The job failed (exit code ${summary ? summary.exit_code : '?'}).`,
    hint: summary ? summary.hint : null,
  };
};

// ---------------------------------------------------------------- charts (uPlot)

NF.colors = {
  loss: '#4c6ef5', ema: '#f08c00', val: '#2f9e44', lr: '#7048e8', tps: '#1098ad',
  matmul: '#4c6ef5', attention: '#15aabf', norms: '#82c91e', loss_c: '#fab005',
  other: '#adb5bd', optimizer: '#e64980', data: '#7950f2',
};

// A line chart: series [{label, stroke, dash?, points?}], returns {setData(data), root}.
// data is uPlot's columnar [xs, ys1, ys2, ...] (null for gaps).
NF.lineChart = function lineChart(container, opts) {
  const width = () => Math.max(260, container.clientWidth || 520);
  const u = new uPlot({
    width: width(),
    height: opts.height || 220,
    cursor: { drag: { x: true, y: false } },
    legend: { live: true },
    scales: { x: { time: false }, y: opts.log ? { distr: 3 } : {} },
    axes: [
      { label: opts.xLabel || 'step', stroke: '#495057', grid: { stroke: '#eef0f3' },
        incrs: [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2500, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6] },
      { label: opts.yLabel || '', stroke: '#495057', grid: { stroke: '#eef0f3' }, size: 64,
        values: opts.yFormat ? (u, vals) => vals.map(opts.yFormat) : undefined },
    ],
    series: [{ label: opts.xLabel || 'step' }].concat(opts.series.map((s) => ({
      label: s.label,
      stroke: s.stroke,
      width: s.width || 1.6,
      dash: s.dash,
      spanGaps: s.spanGaps !== false,
      points: s.points || { show: false },
      value: opts.yFormat ? (u, v) => (v === null || v === undefined ? '—' : opts.yFormat(v)) : undefined,
    }))),
  }, [[]].concat(opts.series.map(() => [])), container);
  let pending = null;
  const chart = {
    root: container,
    setData(data) {
      pending = data;
      if (chart.raf) return;
      chart.raf = requestAnimationFrame(() => {
        chart.raf = null;
        u.setData(pending);
      });
    },
    destroy() {
      ro.disconnect();
      u.destroy();
    },
  };
  const ro = new ResizeObserver(() => u.setSize({ width: width(), height: opts.height || 220 }));
  ro.observe(container);
  NF.cleanup.push(() => chart.destroy());
  return chart;
};

// ---------------------------------------------------------------- misc

NF.randomId = function randomId(bytes) {
  const b = new Uint8Array(bytes || 16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
};

NF.debounce = function debounce(fn, ms) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
};

// setInterval that stops when the page changes.
NF.every = function every(ms, fn) {
  const t = setInterval(fn, ms);
  NF.cleanup.push(() => clearInterval(t));
  return t;
};

NF.query = () => new URLSearchParams(location.search);

// Options for a <select> from a list: [{value, label}] or strings.
NF.options = function options(select, items, selected, placeholder) {
  NF.clear(select);
  if (placeholder !== undefined) select.append(NF.h('option', { value: '' }, placeholder));
  for (const it of items) {
    const o = typeof it === 'string' ? { value: it, label: it } : it;
    select.append(NF.h('option', { value: o.value, selected: o.value === selected }, o.label));
  }
  if (selected !== undefined && selected !== null) select.value = selected;
};

// Runs, newest first, cached briefly (several pages list them).
NF.loadRuns = () => NF.api('GET', '/api/runs');
NF.loadModels = () => NF.api('GET', '/api/models');
NF.loadDatasets = () => NF.api('GET', '/api/datasets');

// ---------------------------------------------------------------- router

NF.navigate = function navigate(url, replace) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  NF.render();
};

NF.render = function render() {
  for (const f of NF.cleanup.splice(0)) {
    try { f(); } catch (e) { console.error(e); }
  }
  NF.globalError(null);
  const path = location.pathname.replace(/\/+$/, '') || '/';
  const page = NF.pages[path] || NF.pages['/'];
  const root = document.getElementById('app');
  NF.clear(root);
  root.dataset.page = page.name;
  document.title = `${page.title} · NeuralForge Studio`;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.getAttribute('href') === (NF.pages[path] ? path : '/'));
  }
  root.append(NF.h('h1', { class: 'page-title', testid: 'page-title' }, page.title));
  try {
    const r = page.render(root);
    if (r && typeof r.catch === 'function') r.catch((e) => NF.globalError(e));
  } catch (e) {
    NF.globalError(e);
  }
};

NF.start = function start() {
  document.addEventListener('click', (e) => {
    const a = e.target.closest('a[data-link]');
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    NF.navigate(a.getAttribute('href'));
  });
  window.addEventListener('popstate', () => NF.render());
  NF.api('GET', '/api/info').then((info) => {
    const el = document.getElementById('home-info');
    el.textContent = `v${info.version} · ${info.home}`;
    el.title = 'NeuralForge home';
    NF.info = info;
  }).catch((e) => NF.globalError(e));
  NF.render();
};

document.addEventListener('DOMContentLoaded', () => NF.start());
