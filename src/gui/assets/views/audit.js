// Audit trail (administrators): who changed what, from where, and how it ended, newest
// first, from `GET /api/v1/audit` (docs/security/audit.md). The time range (UTC) is in the
// URL, so a view can be shared; the user and action filters narrow the page shown.

import { h, badge, time, pager, errorBox, hashFor, url, count } from '../ui.js';

const PAGE_ROWS = 100;
const HOUR_MS = 3600 * 1000;
// Ranges offered, ending now; the server's default is the last day.
const SPANS = [['1h', 'last hour', HOUR_MS], ['24h', 'last 24 hours', 24 * HOUR_MS],
  ['7d', 'last 7 days', 7 * 24 * HOUR_MS], ['30d', 'last 30 days', 30 * 24 * HOUR_MS],
  ['custom', 'from – to (UTC)', 0]];

export async function render(main, params, app) {
  main.append(h('div', { class: 'view-head' }, h('h1', {}, 'Audit trail'),
    h('span', { class: 'sub' }, 'every change and failed login, newest first')));
  if (!app.session || app.session.role !== 'administrator') {
    main.append(errorBox('The audit trail is for administrators.', 'audit-forbidden'));
    return;
  }
  const span = SPANS.some(([k]) => k === params.span) ? params.span : '24h';
  const start = Math.max(0, parseInt(params.start, 10) || 0);
  const range = rangeOf(span, params);
  const go = (changes) => app.navigate(hashFor('/audit', {
    span, from: params.from, to: params.to, user: params.user, action: params.action, start, ...changes,
  }));

  const spanSelect = h('select', { 'data-test': 'audit-span', 'aria-label': 'Time range' },
    SPANS.map(([k, text]) => h('option', { value: k }, text)));
  spanSelect.value = span;
  const from = h('input', { type: 'datetime-local', step: 1, 'data-test': 'audit-from', 'aria-label': 'From (UTC)',
    value: localValue(range.start_ms) });
  const to = h('input', { type: 'datetime-local', step: 1, 'data-test': 'audit-to', 'aria-label': 'To (UTC)',
    value: localValue(range.end_ms) });
  const custom = h('span', { class: span === 'custom' ? '' : 'hidden', 'data-test': 'audit-custom' },
    from, ' – ', to);
  spanSelect.addEventListener('change', () => custom.classList.toggle('hidden', spanSelect.value !== 'custom'));
  const userFilter = h('input', { type: 'search', placeholder: 'user', value: params.user || '',
    'data-test': 'audit-user', 'aria-label': 'Filter by user' });
  const actionFilter = h('input', { type: 'search', placeholder: 'action', title: 'part of an action, e.g. hunt. or login.failed',
    value: params.action || '', 'data-test': 'audit-action', 'aria-label': 'Filter by action' });
  const form = h('form', { class: 'toolbar', 'data-test': 'audit-form', onsubmit: (e) => {
    e.preventDefault();
    const chosen = spanSelect.value;
    go({
      span: chosen,
      from: chosen === 'custom' ? String(utcMs(from.value) ?? range.start_ms) : undefined,
      to: chosen === 'custom' ? String(utcMs(to.value) ?? range.end_ms) : undefined,
      user: userFilter.value.trim(), action: actionFilter.value.trim(), start: 0,
    });
  } }, spanSelect, custom, userFilter, actionFilter,
  h('button', { type: 'submit', class: 'primary', 'data-test': 'audit-submit' }, 'Show'));
  const results = h('div', { 'data-test': 'audit-results' }, h('p', { class: 'muted' }, 'Reading the audit trail…'));
  main.append(form, results);

  let page;
  try {
    page = await app.api('GET', url('/api/v1/audit', { ...range, start_row: start, rows: PAGE_ROWS }));
  } catch (e) {
    if (e.name === 'AbortError') return;
    results.replaceChildren(errorBox(e, 'audit-error'));
    return;
  }
  results.replaceChildren(...pageView(page, { start, go, user: params.user, action: params.action }));
}

/** `{start_ms, end_ms}` of a span ending now, or of the custom range in the URL. */
function rangeOf(span, params) {
  const now = Date.now() + 1;
  if (span === 'custom') {
    const startMs = Number(params.from);
    const endMs = Number(params.to);
    if (Number.isFinite(startMs) && Number.isFinite(endMs) && startMs <= endMs) {
      return { start_ms: startMs, end_ms: endMs };
    }
  }
  const width = (SPANS.find(([k]) => k === span) || SPANS[1])[2] || 24 * HOUR_MS;
  return { start_ms: Math.max(0, now - width), end_ms: now };
}

/** A datetime-local value showing `ms` in UTC (the inputs are read back as UTC). */
function localValue(ms) {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, '');
}

function utcMs(value) {
  if (!value) return null;
  const ms = Date.parse(`${value.length === 16 ? `${value}:00` : value}Z`);
  return Number.isFinite(ms) ? ms : null;
}

function pageView(page, { start, go, user, action }) {
  const items = page.items || [];
  const wantedUser = (user || '').toLowerCase();
  const wantedAction = (action || '').toLowerCase();
  const shown = items.filter((e) => (!wantedUser || String(e.user).toLowerCase().includes(wantedUser))
    && (!wantedAction || String(e.action).toLowerCase().includes(wantedAction)));
  const out = [];
  if (page.malformed_lines) {
    out.push(h('div', { class: 'error', role: 'status', 'data-test': 'audit-malformed' },
      `${count(page.malformed_lines)} line(s) of the audit files in this range are not entries and were skipped.`));
  }
  const nav = () => pager({ start, limit: PAGE_ROWS, total: page.total, shown: items.length,
    onPage: (s) => go({ start: s }), test: 'audit-pager' });
  out.push(nav());
  if (wantedUser || wantedAction) {
    out.push(h('div', { class: 'muted', 'data-test': 'audit-filtered' },
      `${count(shown.length)} of the ${count(items.length)} entries on this page match the filter.`));
  }
  if (!shown.length) {
    out.push(h('div', { class: 'panel empty', 'data-test': 'audit-empty' }, 'No entry in this range.'));
    return out;
  }
  out.push(h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-test': 'audit-table' },
    h('thead', {}, h('tr', {}, ['time (UTC)', 'user', 'remote', 'via', 'action', 'target', 'outcome', 'detail']
      .map((c) => h('th', {}, c)))),
    h('tbody', {}, shown.map((e) => h('tr', { 'data-test': 'audit-row', 'data-action': e.action,
      'data-user': e.user, 'data-outcome': e.outcome },
    h('td', { class: 'mono' }, time(e.time_ms)),
    h('td', { 'data-test': 'audit-user-cell' }, e.user || '—'),
    h('td', { class: 'mono muted' }, e.remote || '—'),
    h('td', {}, e.via),
    h('td', { class: 'mono', 'data-test': 'audit-action-cell' }, e.action),
    h('td', { class: 'mono clip', title: e.target, 'data-test': 'audit-target-cell' }, e.target || '—'),
    h('td', {}, badge(e.outcome)),
    h('td', { class: 'clip', title: e.detail || null, 'data-test': 'audit-detail-cell' }, e.detail || '')))))));
  out.push(nav());
  return out;
}
