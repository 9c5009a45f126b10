// Small DOM and formatting helpers shared by the views. Everything builds elements
// (no HTML strings): text is always text, so row values from agents cannot inject markup.

/** h('a', {href, class, 'data-test', onclick}, ...children): an element. Attributes whose
 *  value is a function become event listeners; null/undefined/false ones are skipped. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === 'function') el.addEventListener(key.replace(/^on/, ''), value);
    else if (key === 'value') el.value = value;
    else if (key === 'checked') el.checked = !!value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** A state badge: `finished`, `in_progress`, `error`, `running`, ... */
export function badge(state, extraClass) {
  const text = String(state ?? 'unknown').replace(/_/g, ' ');
  return h('span', { class: `badge state-${state} ${extraClass || ''}`, 'data-test': 'state-badge',
    'data-state': state }, text);
}

export function connectedBadge(connected, frontend) {
  return connected
    ? h('span', { class: 'badge connected', title: frontend ? `on ${frontend}` : null,
      'data-test': 'connected-badge' }, 'connected')
    : h('span', { class: 'badge offline', 'data-test': 'connected-badge' }, 'offline');
}

export function chips(labels) {
  return (labels || []).map((l) => h('span', { class: 'chip', 'data-test': 'label' }, l));
}

/** `2026-12-05 07:02:58Z` (UTC: what logs and other analysts quote). */
export function time(ms) {
  if (!ms) return '—';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/** "12 s ago", "3 min ago", "5 h ago", "2 d ago". */
export function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 5) return 'now';
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  if (s < 86400 * 400) return `${Math.round(s / 86400)} d ago`;
  return `${(s / (86400 * 365.25)).toFixed(1)} y ago`;
}

export function duration(fromMs, toMs) {
  if (!fromMs || !toMs || toMs < fromMs) return '—';
  const ms = toMs - fromMs;
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60000)} min`;
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function count(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
}

export function errorBox(err, test) {
  return h('div', { class: 'error', role: 'alert', 'data-test': test || 'error' },
    err && err.message ? err.message : String(err));
}

/** Prev / "1–50 of 1,234" / Next. `onPage(start)` is called with the new start. */
export function pager({ start, limit, total, shown, onPage, test }) {
  const first = total === 0 || shown === 0 ? 0 : start + 1;
  const last = start + shown;
  const known = total !== null && total !== undefined;
  const info = known ? `${count(first)}–${count(last)} of ${count(total)}` : `${count(first)}–${count(last)}`;
  const more = known ? last < total : shown >= limit;
  const prefix = test || 'pager';
  return h('div', { class: 'pager', 'data-test': prefix },
    h('button', { type: 'button', disabled: start <= 0, 'data-test': `${prefix}-prev`,
      onclick: () => onPage(Math.max(0, start - limit)) }, '‹ Prev'),
    h('span', { class: 'info', 'data-test': `${prefix}-info` }, info),
    h('button', { type: 'button', disabled: !more, 'data-test': `${prefix}-next`,
      onclick: () => onPage(start + limit) }, 'Next ›'));
}

/** A cell's text for any JSON value: objects and arrays as compact JSON. */
export function cellText(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** A table whose columns are the union of the rows' keys, in first-seen order. */
export function rowsTable(rows, test) {
  if (!rows.length) return h('div', { class: 'empty', 'data-test': `${test || 'rows'}-empty` }, 'No rows.');
  const columns = [];
  const seen = new Set();
  for (const row of rows) {
    for (const key of Object.keys(row && typeof row === 'object' ? row : { value: row })) {
      if (!seen.has(key)) { seen.add(key); columns.push(key); }
    }
  }
  const body = rows.map((row) => {
    const r = row && typeof row === 'object' ? row : { value: row };
    return h('tr', { 'data-test': `${test || 'rows'}-row` }, columns.map((c) => {
      const text = cellText(r[c]);
      const numeric = typeof r[c] === 'number';
      return h('td', { class: numeric ? 'num' : 'clip', title: text.length > 60 ? text : null }, text);
    }));
  });
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'data', 'data-test': test || 'rows' },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: numericColumn(rows, c) ? 'num' : null }, c)))),
      h('tbody', {}, body)));
}

function numericColumn(rows, column) {
  const first = rows.find((r) => r && typeof r === 'object' && r[column] !== undefined && r[column] !== null);
  return !!first && typeof first[column] === 'number';
}

/** A table from column specs: [{title, cell: (item) => node|string, class}]. */
export function table(items, columns, { test, rowTest, rowAttrs, empty } = {}) {
  if (!items.length) return h('div', { class: 'empty', 'data-test': `${test || 'table'}-empty` }, empty || 'Nothing here.');
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'data', 'data-test': test || null },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.class || null }, c.title)))),
      h('tbody', {}, items.map((item) => h('tr', { 'data-test': rowTest || null, ...(rowAttrs ? rowAttrs(item) : {}) },
        columns.map((c) => h('td', { class: c.class || null }, c.cell(item))))))));
}

/** `#/path?a=1&b=2` from a path and a params object (empty values left out). */
export function hashFor(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== '' && v !== null && v !== undefined) q.set(k, v);
  }
  const s = q.toString();
  return `#${path}${s ? `?${s}` : ''}`;
}

export function url(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== '' && v !== null && v !== undefined) q.set(k, v);
  }
  const s = q.toString();
  return `${path}${s ? `?${s}` : ''}`;
}

export const enc = encodeURIComponent;
