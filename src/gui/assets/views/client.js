// One client: facts, labels, presence; its collections (paged, newest first); a new
// collection built from the artifact catalogue; its monitoring events by time range.

import {
  h, badge, chips, connectedBadge, ago, time, duration, bytes, count, pager, errorBox,
  rowsTable, hashFor, url, enc,
} from '../ui.js';
import { parameterForm } from '../params.js';

const COLLECTIONS_PAGE_ROWS = 20;
const MONITORING_PAGE_ROWS = 100;
const DAY_MS = 86400000;
const TABS = [['collections', 'Collections'], ['new', 'New collection'], ['monitoring', 'Monitoring']];

export async function render(main, params, app) {
  const id = params.id;
  const tab = params.tab || 'collections';
  const self = (changes) => hashFor(`/clients/${enc(id)}`, { tab, ...changes });

  const facts = h('div', { class: 'panel', 'data-test': 'client-facts' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(
    h('div', { class: 'view-head' },
      h('h1', { 'data-test': 'client-title' }, id),
      h('a', { href: '#/clients', class: 'sub' }, '‹ all clients')),
    facts);
  const tabs = h('nav', { class: 'tabs', 'data-test': 'client-tabs' },
    TABS.filter(([key]) => key !== 'new' || app.canChange()).map(([key, title]) =>
      h('a', { href: hashFor(`/clients/${enc(id)}`, { tab: key }), class: key === tab ? 'active' : null,
        'data-test': `tab-${key}` }, title)));
  const body = h('div', { 'data-test': `client-${tab}` });
  main.append(tabs, body);

  const info = loadFacts(facts, id, app);
  if (tab === 'new' && app.canChange()) await newCollection(body, id, app);
  else if (tab === 'monitoring') await monitoring(body, id, params, app, self);
  else await collections(body, id, params, app, self);
  await info;
}

async function loadFacts(panel, id, app) {
  let client;
  try {
    client = await app.api('GET', `/api/v1/clients/${enc(id)}`);
  } catch (e) {
    if (e.status === 404) {
      client = null;
    } else {
      if (e.name !== 'AbortError') panel.replaceChildren(errorBox(e));
      return;
    }
  }
  if (!client) {
    panel.replaceChildren(errorBox(`client ${id} is not known`, 'client-unknown'));
    return;
  }
  const title = document.querySelector('[data-test="client-title"]');
  if (title && client.hostname) {
    title.replaceChildren(client.hostname, ' ', h('span', { class: 'mono muted' }, id));
  }
  const labels = h('span', { 'data-test': 'client-labels' }, client.labels && client.labels.length ? chips(client.labels) : '—');
  const dl = h('dl', { class: 'facts' },
    h('dt', {}, 'client id'), h('dd', { class: 'mono' }, client.client_id),
    h('dt', {}, 'hostname'), h('dd', { 'data-test': 'client-hostname' }, client.hostname || '—'),
    h('dt', {}, 'os'), h('dd', {}, client.os || '—'),
    h('dt', {}, 'presence'), h('dd', {}, connectedBadge(client.connected, client.frontend),
      client.frontend ? h('span', { class: 'mono muted' }, ` on ${client.frontend}`) : ''),
    h('dt', {}, 'first seen'), h('dd', {}, time(client.first_seen_ms)),
    h('dt', {}, 'last seen'), h('dd', { title: time(client.last_seen_ms) }, ago(client.last_seen_ms)),
    h('dt', {}, 'labels'), h('dd', {}, labels, app.canChange() ? labelEditor(client, labels, app) : ''));
  panel.replaceChildren(dl);
}

function labelEditor(client, labels, app) {
  const input = h('input', { type: 'text', placeholder: 'label', 'data-test': 'client-label-input', 'aria-label': 'Label' });
  const message = h('span', {});
  const change = async (add, remove) => {
    if (!input.value.trim()) return;
    try {
      const answer = await app.api('POST', `/api/v1/clients/${enc(client.client_id)}/labels`, { add, remove });
      labels.replaceChildren(...(answer.labels.length ? chips(answer.labels) : ['—']));
      input.value = '';
      message.replaceChildren();
    } catch (e) {
      if (e.name !== 'AbortError') message.replaceChildren(errorBox(e));
    }
  };
  return h('span', { class: 'toolbar' }, ' ', input,
    h('button', { type: 'button', 'data-test': 'client-label-add', onclick: () => change([input.value.trim()], []) }, 'Add'),
    h('button', { type: 'button', 'data-test': 'client-label-remove', onclick: () => change([], [input.value.trim()]) }, 'Remove'),
    message);
}

async function collections(body, id, params, app, self) {
  const start = Math.max(0, parseInt(params.start, 10) || 0);
  let list;
  try {
    list = await app.api('GET', `/api/v1/clients/${enc(id)}/collections`);
  } catch (e) {
    if (e.name !== 'AbortError') body.replaceChildren(errorBox(e));
    return;
  }
  // The API lists newest first; sorting again keeps that true whatever it sends.
  const items = (list.items || []).slice().sort((a, b) => (b.create_time_ms || 0) - (a.create_time_ms || 0));
  const page = items.slice(start, start + COLLECTIONS_PAGE_ROWS);
  const nav = pager({ start, limit: COLLECTIONS_PAGE_ROWS, total: items.length, shown: page.length,
    onPage: (s) => app.navigate(self({ start: s })), test: 'collections-pager' });
  if (!items.length) {
    body.append(h('div', { class: 'panel empty', 'data-test': 'collections-empty' }, 'No collections yet.',
      app.canChange() ? h('span', {}, ' ', h('a', { href: self({ tab: 'new' }) }, 'Start one.')) : ''));
    return;
  }
  const rows = page.map((c) => h('tr', { 'data-test': 'collection-row', 'data-flow-id': c.flow_id },
    h('td', { class: 'mono' }, h('a', { href: `#/clients/${enc(id)}/collections/${enc(c.flow_id)}`,
      'data-test': 'collection-link' }, c.flow_id)),
    h('td', {}, badge(c.state)),
    h('td', { class: 'wrap' }, (c.artifacts || []).map((a) => h('span', { class: 'chip' }, a.name))),
    h('td', { class: 'num' }, count(c.total_rows)),
    h('td', { class: 'num' }, bytes(c.total_bytes)),
    h('td', { class: 'num' }, count(c.uploaded_files)),
    h('td', { title: time(c.create_time_ms) }, time(c.create_time_ms)),
    h('td', { class: 'num' }, duration(c.start_time_ms || c.create_time_ms, c.finish_time_ms)),
    h('td', {}, c.ended_by ? h('span', { class: 'badge' }, c.ended_by) : '')));
  body.append(nav, h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-test': 'collections-table' },
    h('thead', {}, h('tr', {}, ['flow', 'state', 'artifacts', 'rows', 'bytes', 'files', 'created', 'took', 'ended by']
      .map((t, i) => h('th', { class: [3, 4, 5, 7].includes(i) ? 'num' : null }, t)))),
    h('tbody', {}, rows))));
}

// ---- new collection -------------------------------------------------------------------

async function newCollection(body, id, app) {
  let catalogue;
  try {
    catalogue = await app.api('GET', '/api/v1/artifacts');
  } catch (e) {
    if (e.name !== 'AbortError') body.replaceChildren(errorBox(e));
    return;
  }
  const artifacts = (catalogue.items || []).filter((a) => a.kind === 'collection');
  const chosen = new Map(); // name -> {def, fieldset, read()}
  const filter = h('input', { type: 'search', placeholder: 'search artifacts', 'data-test': 'artifact-search',
    'aria-label': 'Search artifacts', oninput: () => paintList() });
  const list = h('div', { class: 'list', 'data-test': 'artifact-list' });
  const forms = h('div', { 'data-test': 'artifact-forms' });
  const error = h('div', { 'data-test': 'collect-error' });
  const limits = {
    timeout_s: numberInput('limit-timeout_s', 'seconds'),
    max_rows: numberInput('limit-max_rows', 'rows'),
    max_upload_bytes: numberInput('limit-max_upload_bytes', 'bytes'),
  };
  const submit = h('button', { type: 'submit', class: 'primary', 'data-test': 'collect-submit' }, 'Collect');

  function paintList() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = artifacts.filter((a) => words.every((w) =>
      a.name.toLowerCase().includes(w) || (a.description || '').toLowerCase().includes(w)));
    list.replaceChildren(...shown.map((a) => {
      const box = h('input', { type: 'checkbox', checked: chosen.has(a.name), 'aria-label': a.name });
      const option = h('label', { class: `option${chosen.has(a.name) ? ' selected' : ''}`, 'data-test': 'artifact-option',
        'data-artifact': a.name }, box,
      h('div', {}, h('div', { class: 'name' }, a.name), h('div', { class: 'desc' }, a.description || '')));
      box.addEventListener('change', () => {
        if (box.checked) chosen.set(a.name, parameterForm(a));
        else chosen.delete(a.name);
        option.classList.toggle('selected', box.checked);
        forms.replaceChildren(...[...chosen.values()].map((c) => c.fieldset));
      });
      return option;
    }));
    if (!shown.length) list.append(h('div', { class: 'empty' }, 'No artifact matches.'));
  }
  paintList();

  const form = h('form', { 'data-test': 'collect-form', onsubmit: async (e) => {
    e.preventDefault();
    error.replaceChildren();
    if (!chosen.size) { error.append(errorBox('choose at least one artifact')); return; }
    const request = { artifacts: [...chosen.keys()], parameters: {} };
    try {
      for (const [name, c] of chosen) {
        const values = c.read();
        if (Object.keys(values).length) request.parameters[name] = values;
      }
      for (const [key, input] of Object.entries(limits)) {
        if (input.value !== '') request[key] = readNumber(input.value, key);
      }
    } catch (err) {
      error.append(errorBox(err));
      return;
    }
    submit.disabled = true;
    try {
      const answer = await app.api('POST', `/api/v1/clients/${enc(id)}/collections`, request);
      app.navigate(`#/clients/${enc(id)}/collections/${enc(answer.flow_id)}`);
    } catch (err) {
      if (err.name !== 'AbortError') error.append(errorBox(err));
      submit.disabled = false;
    }
  } },
  h('div', { class: 'picker' },
    h('div', {}, h('div', { class: 'toolbar' }, filter), list),
    h('div', {}, forms,
      h('fieldset', {}, h('legend', {}, 'Limits (empty: the server\'s defaults; 0: none)'),
        h('div', { class: 'row' },
          field('timeout', limits.timeout_s, 'timeout_s'),
          field('max rows', limits.max_rows, 'max_rows'),
          field('max upload bytes', limits.max_upload_bytes, 'max_upload_bytes'))),
      error, submit)));
  body.append(form);
}

function numberInput(test, placeholder) {
  return h('input', { type: 'number', min: 0, step: 1, placeholder, 'data-test': test });
}

function field(title, input, help) {
  return h('div', { class: 'field' }, h('label', {}, title), input, help ? h('span', { class: 'help mono' }, help) : '');
}

function readNumber(text, what) {
  if (!/^\d+$/.test(text.trim())) throw new Error(`${what} must be a non-negative integer`);
  return Number(text.trim());
}

/** The form for one artifact's typed parameters: {fieldset, read() -> parameters to send}. */
// ---- monitoring ----------------------------------------------------------------------

async function monitoring(body, id, params, app, self) {
  let stored;
  let catalogue;
  try {
    [stored, catalogue] = await Promise.all([
      app.api('GET', `/api/v1/clients/${enc(id)}/monitoring`),
      app.api('GET', '/api/v1/artifacts'),
    ]);
  } catch (e) {
    if (e.name !== 'AbortError') body.replaceChildren(errorBox(e));
    return;
  }
  const events = (catalogue.items || []).filter((a) => a.kind === 'event').map((a) => a.name);
  const storedNames = (stored.artifacts || []).map((a) => a.name);
  const names = [...new Set([...storedNames, ...events])];
  const artifact = params.artifact || storedNames[0] || events[0] || '';
  const now = Date.now();
  const endMs = parseInt(params.end_ms, 10) || now;
  const startMs = parseInt(params.start_ms, 10) || endMs - DAY_MS;
  const start = Math.max(0, parseInt(params.start, 10) || 0);

  const pick = h('select', { 'data-test': 'monitoring-artifact', 'aria-label': 'Event artifact' },
    names.map((n) => h('option', { value: n }, n, storedNames.includes(n) ? '' : ' (no data)')));
  pick.value = artifact;
  const from = h('input', { type: 'datetime-local', step: 1, value: localInput(startMs), 'data-test': 'monitoring-from' });
  const to = h('input', { type: 'datetime-local', step: 1, value: localInput(endMs), 'data-test': 'monitoring-to' });
  body.append(h('form', { class: 'toolbar', onsubmit: (e) => {
    e.preventDefault();
    app.navigate(self({ artifact: pick.value, start_ms: fromInput(from.value), end_ms: fromInput(to.value), start: 0 }));
  } }, pick, h('label', {}, 'from (UTC)'), from, h('label', {}, 'to (UTC)'), to,
  h('button', { type: 'submit', class: 'primary', 'data-test': 'monitoring-submit' }, 'Show')));
  if (!artifact) { body.append(h('div', { class: 'empty' }, 'No event artifacts.')); return; }
  let page;
  try {
    page = await app.api('GET', url(`/api/v1/clients/${enc(id)}/monitoring/${enc(artifact)}`,
      { start_ms: startMs, end_ms: endMs, start_row: start, rows: MONITORING_PAGE_ROWS }));
  } catch (e) {
    if (e.name !== 'AbortError') body.append(errorBox(e));
    return;
  }
  const items = page.items || [];
  body.append(
    pager({ start, limit: MONITORING_PAGE_ROWS, total: page.total_rows, shown: items.length,
      onPage: (s) => app.navigate(self({ artifact, start_ms: startMs, end_ms: endMs, start: s })), test: 'monitoring-pager' }),
    rowsTable(items.map((i) => ({ time: time(i.time_ms), ...(i.row && typeof i.row === 'object' ? i.row : { value: i.row }) })),
      'monitoring-rows'));
}

// datetime-local inputs hold UTC here (the app shows UTC everywhere).
function localInput(ms) {
  return new Date(ms).toISOString().slice(0, 19);
}

function fromInput(value) {
  const ms = Date.parse(`${value}Z`);
  return Number.isNaN(ms) ? '' : ms;
}
