// Clients: search (id prefix, hostname, label:, os:, host:; connected or not), paged
// through the whole fleet with the total, select many and add or remove labels.

import { h, chips, connectedBadge, ago, time, pager, errorBox, hashFor, url, enc } from '../ui.js';

const PAGE_ROWS = 50;

export async function render(main, params, app) {
  const q = params.q || '';
  const connected = params.connected || '';
  const start = Math.max(0, parseInt(params.start, 10) || 0);
  const go = (changes) => app.navigate(hashFor('/clients', { q, connected, start, ...changes }));

  const search = h('input', { type: 'search', class: 'wide', name: 'q', value: q, 'data-test': 'clients-search',
    placeholder: 'C.1234…, hostname, label:prod, os:linux', 'aria-label': 'Search clients' });
  const presence = h('select', { name: 'connected', 'data-test': 'clients-connected', 'aria-label': 'Presence' },
    h('option', { value: '' }, 'all clients'),
    h('option', { value: 'true' }, 'connected'),
    h('option', { value: 'false' }, 'not connected'));
  presence.value = connected;
  const form = h('form', { class: 'toolbar', 'data-test': 'clients-form', onsubmit: (e) => {
    e.preventDefault();
    go({ q: search.value.trim(), connected: presence.value, start: 0 });
  } }, search, presence, h('button', { type: 'submit', class: 'primary', 'data-test': 'clients-submit' }, 'Search'));

  main.append(h('div', { class: 'view-head' }, h('h1', {}, 'Clients'),
    h('span', { class: 'sub' }, 'terms are ANDed: id prefix, hostname, label:NAME, os:NAME, host:NAME')), form);
  const results = h('div', { 'data-test': 'clients-results' }, h('p', { class: 'muted' }, 'Searching…'));
  main.append(results);
  search.focus();

  let page;
  try {
    page = await app.api('GET', url('/api/v1/clients', {
      search: q, start, offset: start, limit: PAGE_ROWS, connected,
    }));
  } catch (e) {
    if (e.name === 'AbortError') return;
    results.replaceChildren(errorBox(e));
    return;
  }
  results.replaceChildren(...clientTable(page, { start, go, app, reload: () => render(clear(main), params, app) }));
}

function clear(main) {
  main.replaceChildren();
  return main;
}

function clientTable(page, { start, go, app, reload }) {
  const items = page.items || [];
  const selected = new Set();
  const boxes = [];
  const message = h('div', { 'data-test': 'labels-message' });
  const count = h('span', { class: 'muted', 'data-test': 'selected-count' }, '0 selected');
  const refreshCount = () => { count.textContent = `${selected.size} selected`; };

  const all = h('input', { type: 'checkbox', 'aria-label': 'Select all on this page', 'data-test': 'select-all',
    onchange: () => {
      for (const [box, id] of boxes) { box.checked = all.checked; if (all.checked) selected.add(id); else selected.delete(id); }
      refreshCount();
    } });
  const rows = items.map((c) => {
    const box = h('input', { type: 'checkbox', 'aria-label': `Select ${c.client_id}`, 'data-test': 'client-select',
      onchange: () => { if (box.checked) selected.add(c.client_id); else selected.delete(c.client_id); refreshCount(); } });
    boxes.push([box, c.client_id]);
    return h('tr', { 'data-test': 'client-row', 'data-client-id': c.client_id },
      h('td', { class: 'check' }, app.canChange() ? box : ''),
      h('td', { class: 'mono' }, h('a', { href: `#/clients/${enc(c.client_id)}`, 'data-test': 'client-link' }, c.client_id)),
      h('td', { 'data-test': 'client-hostname' }, c.hostname || '—'),
      h('td', {}, c.os || '—'),
      h('td', { class: 'wrap', 'data-test': 'client-labels' }, chips(c.labels)),
      h('td', {}, connectedBadge(c.connected, c.frontend)),
      h('td', { class: 'mono muted' }, c.frontend || ''),
      h('td', { title: time(c.last_seen_ms) }, ago(c.last_seen_ms)));
  });

  const out = [];
  if (app.canChange()) {
    const label = h('input', { type: 'text', placeholder: 'label', 'data-test': 'labels-input', 'aria-label': 'Label' });
    const change = async (op) => {
      const name = label.value.trim();
      if (!name || !selected.size) {
        message.replaceChildren(errorBox(!name ? 'type a label first' : 'select clients first'));
        return;
      }
      const body = op === 'add' ? { add: [name], remove: [] } : { add: [], remove: [name] };
      try {
        for (const id of selected) await app.api('POST', `/api/v1/clients/${enc(id)}/labels`, body);
      } catch (e) {
        if (e.name !== 'AbortError') message.replaceChildren(errorBox(e));
        return;
      }
      await reload();
    };
    out.push(h('div', { class: 'toolbar', 'data-test': 'labels-toolbar' }, count, label,
      h('button', { type: 'button', 'data-test': 'labels-add', onclick: () => change('add') }, 'Add label'),
      h('button', { type: 'button', 'data-test': 'labels-remove', onclick: () => change('remove') }, 'Remove label')));
  }
  out.push(message);
  const total = page.total ?? null;
  const pageStart = page.start ?? start;
  const nav = () => pager({ start: pageStart, limit: PAGE_ROWS, total, shown: items.length, onPage: (s) => go({ start: s }) });
  out.push(nav());
  if (!items.length) {
    out.push(h('div', { class: 'panel empty', 'data-test': 'clients-empty' }, 'No client matches.'));
    return out;
  }
  out.push(h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-test': 'clients-table' },
    h('thead', {}, h('tr', {}, h('th', { class: 'check' }, app.canChange() ? all : ''), h('th', {}, 'client'),
      h('th', {}, 'hostname'), h('th', {}, 'os'), h('th', {}, 'labels'), h('th', {}, 'presence'),
      h('th', {}, 'frontend'), h('th', {}, 'last seen'))),
    h('tbody', {}, rows))));
  out.push(nav());
  return out;
}
