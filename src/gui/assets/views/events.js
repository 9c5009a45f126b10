// Events: the client event table (which event artifacts agents run: for all of them and
// per label; `GET/PUT /api/v1/events/client_table`) and a live watch of one event
// artifact (`GET /api/v1/events/watch?artifact=A`, ndjson read with fetch + a stream
// reader, aborted when the route changes).

import { h, time, count, errorBox, cellText, table, enc } from '../ui.js';
import { parameterForm } from '../params.js';
import { ensureStyles } from './live-common.js';

// The watch table keeps the newest rows only: a busy artifact must not grow the page.
const WATCH_ROWS_KEPT = 200;
// Repaints of the watch table at most this often, however fast events come.
const WATCH_PAINT_MS = 250;

export async function render(main, params, app) {
  ensureStyles();
  const catalogue = await app.api('GET', '/api/v1/artifacts');
  const events = (catalogue.items || []).filter((a) => a.kind === 'event');
  const tableBox = h('div', { 'data-test': 'event-table' });
  const watchBox = h('div', { 'data-test': 'event-watch' });
  main.append(
    h('div', { class: 'view-head' }, h('h1', {}, 'Events')),
    h('h2', {}, 'Client event table'), tableBox,
    h('h2', {}, 'Watch live'), watchBox);
  await paintTable(tableBox, events, app);
  watchPanel(watchBox, events, params, app);
}

// ---- the client event table ------------------------------------------------------------

async function paintTable(box, events, app, notice) {
  const current = await app.api('GET', '/api/v1/events/client_table');
  const lists = [];
  const error = h('div', { 'data-test': 'event-table-error' });
  const labelsBox = h('div', {});
  const addList = (label, entries) => {
    const list = entryList(label, entries, events, () => {
      lists.splice(lists.indexOf(list), 1);
      list.node.remove();
    });
    lists.push(list);
    (label === null ? allBox : labelsBox).append(list.node);
  };
  const allBox = h('div', {});
  addList(null, current.all || []);
  for (const [label, entries] of Object.entries(current.by_label || {})) addList(label, entries);

  const newLabel = h('input', { type: 'text', placeholder: 'label', 'data-test': 'event-table-new-label' });
  const addLabel = h('button', { type: 'button', 'data-test': 'event-table-add-label' }, 'Add a label\'s list');
  addLabel.addEventListener('click', () => {
    const label = newLabel.value.trim();
    error.replaceChildren();
    if (!label) return;
    if (lists.some((l) => l.label === label)) { error.append(errorBox(`label ${label} has a list already`)); return; }
    addList(label, []);
    newLabel.value = '';
  });
  const save = h('button', { type: 'submit', class: 'primary', 'data-test': 'event-table-save' }, 'Save table');
  const form = h('form', { class: 'panel', 'data-test': 'event-table-form' },
    h('div', { class: 'toolbar' },
      h('span', {}, 'Version ', h('strong', { 'data-test': 'event-table-version' }, String(current.version))),
      h('span', { class: 'muted' }, current.version === 0 ? '(never set: agents run no event artifacts)' : ''),
      notice ? h('span', { class: 'notice', 'data-test': 'event-table-notice' }, notice) : ''),
    allBox, labelsBox,
    app.isAdministrator() ? h('div', { class: 'toolbar' }, newLabel, addLabel, h('span', { class: 'spacer' }), save) : '',
    error);
  if (!app.isAdministrator()) {
    for (const el of form.querySelectorAll('input, select, textarea, button')) el.disabled = true;
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.replaceChildren();
    const body = { all: [], by_label: {} };
    try {
      for (const list of lists) {
        const entries = list.read();
        if (list.label === null) body.all = entries;
        else body.by_label[list.label] = entries;
      }
    } catch (err) {
      error.append(errorBox(err));
      return;
    }
    save.disabled = true;
    try {
      const answer = await app.api('PUT', '/api/v1/events/client_table', body);
      await paintTable(box, events, app, `Saved: version ${answer.version}`);
    } catch (err) {
      if (err.name !== 'AbortError') error.append(errorBox(err, 'event-table-error'));
      save.disabled = false;
    }
  });
  box.replaceChildren(form);
}

/** The entries of `all` (label null) or of one label: {label, node, read()}. */
function entryList(label, entries, events, onRemoveList) {
  const editors = [];
  const rows = h('div', { class: 'entries' });
  const add = (entry) => {
    const editor = entryEditor(entry, events, () => {
      editors.splice(editors.indexOf(editor), 1);
      editor.node.remove();
    });
    editors.push(editor);
    rows.append(editor.node);
  };
  entries.forEach(add);
  const test = label === null ? 'event-list-all' : 'event-list-label';
  const addButton = h('button', { type: 'button', 'data-test': `${test}-add` }, '+ Add an event artifact');
  addButton.addEventListener('click', () => {
    const used = new Set(editors.map((e) => e.name()));
    const next = events.find((a) => !used.has(a.name)) || events[0];
    if (next) add({ name: next.name, parameters: {} });
  });
  const head = label === null
    ? h('h3', {}, 'Every agent')
    : h('h3', {}, 'Agents labelled ', h('span', { class: 'chip' }, label), ' ',
      h('button', { type: 'button', class: 'link', onclick: onRemoveList, 'data-test': 'event-list-remove' }, 'remove this list'));
  const node = h('div', { class: 'event-list', 'data-test': test, 'data-label': label || '' }, head, rows, addButton);
  return {
    label,
    node,
    read() {
      const names = new Set();
      return editors.map((e) => {
        const entry = e.read();
        if (names.has(entry.name)) throw new Error(`${entry.name} is twice in the list of ${label === null ? 'every agent' : `label ${label}`}`);
        names.add(entry.name);
        return entry;
      });
    },
  };
}

/** One entry: which event artifact, and its parameters. */
function entryEditor(entry, events, onRemove) {
  const select = h('select', { 'data-test': 'event-entry-artifact' },
    events.map((a) => h('option', { value: a.name }, a.name)));
  select.value = entry.name;
  const formBox = h('div', {});
  let form = null;
  const build = (values) => {
    const def = events.find((a) => a.name === select.value) || { name: select.value, parameters: [] };
    form = parameterForm(def, values, { test: 'event-param' });
    formBox.replaceChildren(form.fieldset);
  };
  build(entry.parameters || {});
  select.addEventListener('change', () => build({}));
  const node = h('div', { class: 'event-entry', 'data-test': 'event-entry' },
    h('div', { class: 'toolbar' }, select,
      h('button', { type: 'button', class: 'link', onclick: onRemove, 'data-test': 'event-entry-remove' }, 'remove')),
    formBox);
  return { node, name: () => select.value, read: () => ({ name: select.value, parameters: form.read() }) };
}

// ---- live watch ------------------------------------------------------------------------

function watchPanel(box, events, params, app) {
  const artifact = h('select', { 'data-test': 'watch-artifact' }, events.map((a) => h('option', { value: a.name }, a.name)));
  if (params.artifact) artifact.value = params.artifact;
  const client = h('input', { type: 'text', placeholder: 'client id (optional)', 'data-test': 'watch-client' });
  const button = h('button', { type: 'button', class: 'primary', 'data-test': 'watch-start' }, 'Watch');
  const status = h('span', { class: 'muted', 'data-test': 'watch-status' }, 'not watching');
  const rowsBox = h('div', { 'data-test': 'watch-rows' });
  box.append(h('div', { class: 'panel' },
    h('div', { class: 'toolbar' }, artifact, client, button, status), rowsBox));

  let controller = null;
  const stop = (why) => {
    if (controller) controller.abort();
    controller = null;
    button.textContent = 'Watch';
    button.dataset.test = 'watch-start';
    if (why) status.textContent = why;
  };
  app.onLeave(() => stop());
  button.addEventListener('click', () => {
    if (controller) { stop('stopped'); return; }
    controller = new AbortController();
    button.textContent = 'Stop';
    button.dataset.test = 'watch-stop';
    watch(app, artifact.value, client.value.trim(), controller, status, rowsBox)
      .then((why) => stop(why), (e) => {
        if (e.name === 'AbortError') return;
        stop('');
        status.replaceChildren(errorBox(e, 'watch-error'));
      });
  });
}

/** Reads the ndjson stream until it ends or is aborted; resolves with why it ended. */
async function watch(app, artifact, clientId, controller, status, rowsBox) {
  let path = `/api/v1/events/watch?artifact=${enc(artifact)}`;
  if (clientId) path += `&client_id=${enc(clientId)}`;
  const response = await fetch(path, {
    headers: { 'X-Requested-With': 'packhunt', Accept: 'application/x-ndjson' },
    credentials: 'same-origin', signal: controller.signal,
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch { /* not JSON */ }
    if (response.status === 401) app.navigate('#/login');
    throw new Error(message);
  }
  status.textContent = `watching ${artifact}: no events yet`;
  const kept = [];
  let received = 0;
  let paintTimer = null;
  const paint = () => {
    paintTimer = null;
    status.textContent = `watching ${artifact}: ${count(received)} events`;
    rowsBox.replaceChildren(watchTable(kept));
  };
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let at;
    while ((at = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, at);
      buffered = buffered.slice(at + 1);
      if (!line.trim()) continue;
      let event;
      try { event = JSON.parse(line); } catch { continue; }
      if (event.end) {
        if (paintTimer) { clearTimeout(paintTimer); paint(); }
        return `ended by the server: ${event.end}`;
      }
      received++;
      kept.unshift(event);
      if (kept.length > WATCH_ROWS_KEPT) kept.length = WATCH_ROWS_KEPT;
    }
    if (!paintTimer) paintTimer = setTimeout(paint, WATCH_PAINT_MS);
  }
  if (paintTimer) { clearTimeout(paintTimer); paint(); }
  return 'the stream ended';
}

function watchTable(kept) {
  const columns = [];
  const seen = new Set();
  for (const e of kept) {
    for (const k of Object.keys(e.row && typeof e.row === 'object' ? e.row : {})) {
      if (!seen.has(k)) { seen.add(k); columns.push(k); }
    }
  }
  return table(kept, [
    { title: 'Time', cell: (e) => time(e.time_ms) },
    { title: 'Client', cell: (e) => h('a', { href: `#/clients/${enc(e.client_id)}`, class: 'mono', 'data-test': 'watch-client-id' }, e.client_id) },
    { title: 'Frontend', cell: (e) => h('span', { class: 'mono' }, e.frontend || '') },
    ...columns.map((k) => ({ title: k, cell: (e) => cellText(e.row ? e.row[k] : '') })),
  ], { test: 'watch-table', rowTest: 'watch-row', empty: 'No events yet.' });
}
