// Hunts: the list with live progress (`GET /api/v1/live/hunts`), and for those who may
// change things the form that creates one (artifacts with their typed parameters, a
// label / OS condition, an expiry) and Start / Stop.

import { h, badge, chips, time, ago, count, errorBox, enc } from '../ui.js';
import { parameterForm } from '../params.js';
import { ensureStyles, openStream, liveBadge, progress, huntActions, actionsKey } from './live-common.js';

export async function render(main, params, app) {
  ensureStyles();
  const status = liveBadge();
  const list = h('div', { 'data-test': 'hunts-list' }, h('div', { class: 'muted' }, 'Waiting for the hunts…'));
  const total = h('span', { class: 'muted', 'data-test': 'hunts-total' });
  const formBox = h('div', {});
  const head = h('div', { class: 'view-head' }, h('h1', {}, 'Hunts'), status, total);
  if (app.canChange()) {
    const toggle = h('button', { type: 'button', class: 'primary', 'data-test': 'hunt-new' }, 'New hunt');
    toggle.addEventListener('click', async () => {
      if (formBox.firstChild) { formBox.replaceChildren(); return; }
      formBox.append(await createForm(app));
    });
    head.append(toggle);
  }
  main.append(head, formBox, list);
  if (params.new === '1' && app.canChange()) formBox.append(await createForm(app));
  const rows = new HuntRows(app);
  openStream(app, '/api/v1/live/hunts', (data) => {
    const hunts = data.hunts || [];
    total.textContent = data.total > hunts.length ? `newest ${hunts.length} of ${count(data.total)}` : `${count(data.total)} hunt${data.total === 1 ? '' : 's'}`;
    rows.paint(list, hunts);
  }, status);
}

const COLUMNS = ['Hunt', 'State', 'Artifacts', 'Condition', 'Created', 'Progress', 'Rows', ''];

/** The hunts table, updated in place: a row's cells change as its figures do, and its
 *  buttons are rebuilt only when what they offer changes (a click or a ticked box is never
 *  lost to a repaint). */
class HuntRows {
  constructor(app) {
    this.app = app;
    this.rows = new Map();
    this.body = h('tbody', {});
    this.table = h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-test': 'hunts-table' },
      h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { class: c === 'Rows' ? 'num' : null }, c)))), this.body));
    this.empty = h('div', { class: 'empty', 'data-test': 'hunts-table-empty' }, 'No hunts yet.');
  }

  paint(list, hunts) {
    if (!hunts.length) { list.replaceChildren(this.empty); return; }
    if (list.firstChild !== this.table) list.replaceChildren(this.table);
    const seen = new Set();
    for (const x of hunts) {
      seen.add(x.hunt_id);
      let row = this.rows.get(x.hunt_id);
      if (!row) {
        row = this.create(x);
        this.rows.set(x.hunt_id, row);
      }
      this.update(row, x);
      this.body.append(row.tr); // moves it into the stream's order
    }
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) { row.tr.remove(); this.rows.delete(id); }
    }
  }

  create(x) {
    const cells = COLUMNS.map((c) => h('td', { class: c === 'Rows' ? 'num' : null }));
    cells[0].append(h('a', { href: `#/hunts/${enc(x.hunt_id)}`, class: 'mono', 'data-test': 'hunt-link' }, x.hunt_id));
    cells[2].append(h('span', { class: 'mono' }, (x.artifacts || []).join(', ')));
    cells[3].append(condition(x.condition));
    cells[4].append(h('span', { title: time(x.create_time_ms) }, ago(x.create_time_ms)));
    const tr = h('tr', { 'data-test': 'hunt-row', 'data-hunt': x.hunt_id }, cells);
    return { tr, cells, actionsKey: null };
  }

  update(row, x) {
    row.tr.dataset.state = x.state;
    row.cells[1].replaceChildren(badge(x.state));
    row.cells[5].replaceChildren(progress(x));
    row.cells[6].replaceChildren(h('span', { 'data-test': 'hunt-rows' }, count(x.total_rows)));
    const key = actionsKey(x);
    if (key !== row.actionsKey) {
      row.actionsKey = key;
      row.cells[7].replaceChildren(huntActions(this.app, x, 'list'));
    }
  }
}

export function condition(c) {
  const labels = (c && c.labels) || [];
  const os = c && c.os;
  if (!labels.length && !os) return h('span', { class: 'muted' }, 'every agent');
  return h('span', {}, chips(labels), os ? h('span', { class: 'chip' }, `os:${os}`) : '');
}

/** The create form: POST /api/v1/hunts, then (if asked) start, then the hunt's page. */
async function createForm(app) {
  const catalogue = await app.api('GET', '/api/v1/artifacts');
  const artifacts = (catalogue.items || []).filter((a) => a.kind !== 'event');
  const chosen = new Map();
  const forms = h('div', { 'data-test': 'hunt-artifact-forms' });
  const filter = h('input', { type: 'search', placeholder: 'Filter artifacts', 'data-test': 'hunt-artifact-filter' });
  const picker = h('div', { class: 'list' });
  const paint = () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = artifacts.filter((a) => words.every((w) => a.name.toLowerCase().includes(w)
      || (a.description || '').toLowerCase().includes(w)));
    picker.replaceChildren(...shown.map((a) => {
      const box = h('input', { type: 'checkbox', checked: chosen.has(a.name), 'aria-label': a.name });
      const option = h('label', { class: `option${chosen.has(a.name) ? ' selected' : ''}`,
        'data-test': 'hunt-artifact-option', 'data-artifact': a.name }, box,
      h('div', {}, h('div', { class: 'name' }, a.name), h('div', { class: 'desc' }, a.description || '')));
      box.addEventListener('change', () => {
        if (box.checked) chosen.set(a.name, parameterForm(a, null, { test: 'hunt-param' }));
        else chosen.delete(a.name);
        option.classList.toggle('selected', box.checked);
        forms.replaceChildren(...[...chosen.values()].map((c) => c.fieldset));
      });
      return option;
    }));
    if (!shown.length) picker.append(h('div', { class: 'empty' }, 'No artifact matches.'));
  };
  filter.addEventListener('input', paint);
  paint();

  const labels = h('input', { type: 'text', class: 'wide', placeholder: 'e.g. prod web (all must match)', 'data-test': 'hunt-labels' });
  const os = h('input', { type: 'text', placeholder: 'e.g. linux (empty: any)', 'data-test': 'hunt-os' });
  const expiry = h('select', { 'data-test': 'hunt-expiry' },
    [['0', 'never'], ['1', 'in 1 hour'], ['24', 'in 1 day'], ['168', 'in 7 days'], ['720', 'in 30 days']]
      .map(([v, t]) => h('option', { value: v }, t)));
  expiry.value = '168';
  const startNow = h('input', { type: 'checkbox', checked: true, id: 'hunt-start-now', 'data-test': 'hunt-start-now' });
  const error = h('div', { 'data-test': 'hunt-create-error' });
  const submit = h('button', { type: 'submit', class: 'primary', 'data-test': 'hunt-create' }, 'Create hunt');
  const form = h('form', { class: 'panel hunt-form', 'data-test': 'hunt-form' },
    h('h2', {}, 'New hunt'),
    h('div', { class: 'picker' },
      h('div', {}, h('div', { class: 'toolbar' }, filter), picker),
      h('div', {}, forms,
        h('fieldset', {}, h('legend', {}, 'Which agents'),
          h('div', { class: 'row' },
            h('div', { class: 'field' }, h('label', {}, 'Labels'), labels,
              h('span', { class: 'help' }, 'space or comma separated; an agent needs all of them')),
            h('div', { class: 'field' }, h('label', {}, 'OS'), os))),
        h('fieldset', {}, h('legend', {}, 'When'),
          h('div', { class: 'row' },
            h('div', { class: 'field' }, h('label', {}, 'Recruits agents until'), expiry),
            h('div', { class: 'field check' }, startNow, h('label', { for: 'hunt-start-now' }, 'start it now')))),
        error, submit)));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.replaceChildren();
    if (!chosen.size) { error.append(errorBox('choose at least one artifact')); return; }
    const request = {
      artifacts: [...chosen.keys()],
      parameters: {},
      condition: { labels: labels.value.split(/[\s,]+/).filter(Boolean), os: os.value.trim() },
      expires_ms: expiry.value === '0' ? 0 : Date.now() + Number(expiry.value) * 3600 * 1000,
    };
    try {
      for (const [name, c] of chosen) {
        const values = c.read();
        if (Object.keys(values).length) request.parameters[name] = values;
      }
    } catch (err) {
      error.append(errorBox(err));
      return;
    }
    submit.disabled = true;
    try {
      const { hunt_id: id } = await app.api('POST', '/api/v1/hunts', request);
      if (startNow.checked) await app.api('POST', `/api/v1/hunts/${enc(id)}/start`, {});
      app.navigate(`#/hunts/${enc(id)}`);
    } catch (err) {
      if (err.name !== 'AbortError') error.append(errorBox(err));
      submit.disabled = false;
    }
  });
  return form;
}
