// One hunt: its definition, live progress (`GET /api/v1/live/hunts/{id}`), Start / Stop,
// its results page by page (`GET /api/v1/hunts/{id}/results`) and the zip export.

import { h, badge, time, count, errorBox, pager, table, cellText, hashFor, enc } from '../ui.js';
import { ensureStyles, openStream, liveBadge, progress, huntActions, actionsKey } from './live-common.js';
import { condition } from './hunts.js';

const PAGE_ROWS = 50;
// Results are fetched again when the row count moved, at most this often.
const RESULTS_REFRESH_MS = 2000;

export async function render(main, params, app) {
  ensureStyles();
  const id = params.id;
  const start = Math.max(0, parseInt(params.start, 10) || 0);
  let hunt = await app.api('GET', `/api/v1/hunts/${enc(id)}`);
  const artifact = params.artifact || (hunt.artifacts || [])[0] || '';
  const status = liveBadge();
  const state = h('span', {});
  const actions = h('span', {});
  const prog = h('div', {});
  const facts = h('div', {});
  const results = h('div', { 'data-test': 'hunt-results' });
  const exportLink = h('a', { class: 'button', href: `/api/v1/hunts/${enc(id)}/export.zip`, download: `${id}.zip`,
    'data-test': 'hunt-export' }, 'Export zip');
  const tabs = h('div', { class: 'tabs' }, (hunt.artifacts || []).map((a) => h('a', {
    href: hashFor(`/hunts/${enc(id)}`, { artifact: a }), class: a === artifact ? 'active' : '',
    'data-test': 'hunt-artifact-tab', 'data-artifact': a }, a)));
  main.append(
    h('div', { class: 'view-head' }, h('h1', { class: 'mono', 'data-test': 'hunt-id' }, id), state, status,
      h('span', { class: 'sub' }, h('a', { href: '#/hunts' }, '‹ all hunts'))),
    h('div', { class: 'panel' }, prog, actions),
    facts,
    h('div', { class: 'toolbar' }, h('h2', {}, 'Results'), h('span', { class: 'spacer' }), exportLink),
    tabs, results);

  let shownRows = -1;
  let shownActions = null;
  let lastFetch = 0;
  let timer = null;
  app.onLeave(() => clearTimeout(timer));
  const loadResults = async () => {
    lastFetch = Date.now();
    try {
      const page = await app.api('GET', `/api/v1/hunts/${enc(id)}/results?artifact=${enc(artifact)}&start_row=${start}&rows=${PAGE_ROWS}`);
      results.replaceChildren(resultsTable(page, id, artifact, start, app));
    } catch (e) {
      if (e.name !== 'AbortError') results.replaceChildren(errorBox(e, 'hunt-results-error'));
    }
  };
  const paint = (x) => {
    hunt = x;
    state.replaceChildren(badge(x.state));
    prog.replaceChildren(progress(x));
    if (actionsKey(x) !== shownActions) {
      shownActions = actionsKey(x);
      actions.replaceChildren(huntActions(app, x, 'hunt'));
    }
    facts.replaceChildren(factsPanel(x));
    // Result pages list the rows of participants whose collection ended, so they are
    // read again when rows arrive and when a participant finishes.
    const moved = `${x.total_rows}/${x.completed}/${x.errors}/${x.cancelled || 0}`;
    if (moved !== shownRows) {
      shownRows = moved;
      clearTimeout(timer);
      timer = setTimeout(loadResults, Math.max(0, lastFetch + RESULTS_REFRESH_MS - Date.now()));
    }
  };
  paint(hunt);
  openStream(app, `/api/v1/live/hunts/${enc(id)}`, paint, status);
}

function factsPanel(x) {
  return h('div', { class: 'panel' }, h('dl', { class: 'facts', 'data-test': 'hunt-facts' },
    h('dt', {}, 'Artifacts'), h('dd', { class: 'mono' }, (x.artifacts || []).join(', ')),
    h('dt', {}, 'Condition'), h('dd', {}, condition(x.condition)),
    h('dt', {}, 'Created'), h('dd', {}, time(x.create_time_ms)),
    h('dt', {}, 'Started'), h('dd', {}, time(x.start_time_ms)),
    h('dt', {}, 'Stopped'), h('dd', {}, time(x.stop_time_ms)),
    h('dt', {}, 'Recruits until'), h('dd', {}, x.expires_ms ? time(x.expires_ms) : 'stopped (no expiry)'),
    h('dt', {}, 'Rows'), h('dd', { 'data-test': 'hunt-total-rows' }, count(x.total_rows))));
}

function resultsTable(page, id, artifact, start, app) {
  const rows = page.rows || [];
  const columns = [];
  const seen = new Set();
  for (const r of rows) {
    for (const k of Object.keys(r.row && typeof r.row === 'object' ? r.row : { value: r.row })) {
      if (!seen.has(k)) { seen.add(k); columns.push(k); }
    }
  }
  const value = (r, k) => (r.row && typeof r.row === 'object' ? r.row[k] : r.row);
  const cols = [
    { title: 'Client', cell: (r) => h('a', { href: `#/clients/${enc(r.client_id)}`, class: 'mono' }, r.client_id) },
    { title: 'Flow', cell: (r) => h('a', { href: `#/clients/${enc(r.client_id)}/collections/${enc(r.flow_id)}`, class: 'mono' }, r.flow_id) },
    ...columns.map((k) => ({ title: k, cell: (r) => {
      const text = cellText(value(r, k));
      return h('span', { class: typeof value(r, k) === 'number' ? 'num' : 'clip', title: text.length > 60 ? text : null }, text);
    } })),
  ];
  return h('div', {},
    table(rows, cols, { test: 'hunt-results-table', rowTest: 'hunt-result-row', empty: 'No rows yet.' }),
    pager({ start, limit: PAGE_ROWS, total: page.total_rows, shown: rows.length, test: 'hunt-pager',
      onPage: (s) => app.navigate(hashFor(`/hunts/${enc(id)}`, { artifact, start: s })) }));
}
