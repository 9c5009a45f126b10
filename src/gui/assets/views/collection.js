// One collection: state, timings, limits that ended it; every artifact's results in
// paged tables; uploads with download links; exports; cancel while it runs.

import { h, badge, time, duration, bytes, count, pager, errorBox, rowsTable, url, enc } from '../ui.js';
import { openStream } from './live-common.js';

const RESULT_PAGE_ROWS = 50;
const UPLOADS_PAGE_ROWS = 50;
const ENDED = new Set(['finished', 'error', 'cancelled']);

export async function render(main, params, app) {
  const { id, flow } = params;
  const base = `/api/v1/clients/${enc(id)}/collections/${enc(flow)}`;
  const head = h('div', { class: 'view-head' },
    h('h1', {}, 'Collection ', h('span', { class: 'mono', 'data-test': 'collection-id' }, flow)),
    h('a', { href: `#/clients/${enc(id)}`, class: 'sub mono', 'data-test': 'collection-client' }, `‹ ${id}`));
  const status = h('div', { class: 'panel', 'data-test': 'collection-status' });
  const results = h('div', { 'data-test': 'collection-results' });
  const uploads = h('div', { 'data-test': 'collection-uploads' });
  main.append(head, status, results, uploads);

  let shownState = null;
  let shownRows = null;
  // The page each table is on, kept while a running collection's tables are redrawn.
  const starts = new Map();
  const show = async (doc) => {
    status.replaceChildren(...statusPanel(doc, base, app, refresh));
    // Results and uploads are drawn again only when there may be more of them.
    const rows = `${doc.total_rows}/${doc.uploaded_files}`;
    if (doc.state !== shownState || rows !== shownRows) {
      shownState = doc.state;
      shownRows = rows;
      await Promise.all([paintResults(results, doc, base, app, starts), paintUploads(uploads, doc, base, app, starts)]);
    }
  };
  const refresh = async () => {
    try {
      await show(await app.api('GET', base));
    } catch (e) {
      if (e.name !== 'AbortError') status.replaceChildren(errorBox(e));
    }
  };
  await refresh();
  if (shownState === null || ENDED.has(shownState)) return;
  // While it runs, the server says when the status changes (server-sent events), so the
  // page follows rows and state as they arrive without asking again and again.
  let painting = Promise.resolve();
  const stream = openStream(app, `/api/v1/live/clients/${enc(id)}/collections/${enc(flow)}`, (doc) => {
    if (doc.error) return;
    painting = painting.then(() => show(doc)).catch(() => {});
    if (ENDED.has(doc.state)) stream.close();
  }, null);
}

function statusPanel(doc, base, app, refresh) {
  const running = !ENDED.has(doc.state);
  const actions = h('div', { class: 'toolbar' },
    h('a', { class: 'button', href: `${base}/export.zip`, download: '', 'data-test': 'export-zip' }, 'Export zip'));
  if (running && app.canChange()) {
    const message = h('span', {});
    actions.append(h('button', { type: 'button', class: 'danger', 'data-test': 'collection-cancel', onclick: async (e) => {
      e.target.disabled = true;
      try {
        await app.api('POST', `${base}/cancel`, {});
        await refresh();
      } catch (err) {
        if (err.name !== 'AbortError') message.replaceChildren(errorBox(err));
        e.target.disabled = false;
      }
    } }, 'Cancel'), message);
  }
  const errors = doc.errors || [];
  return [
    h('div', { class: 'toolbar' }, badge(doc.state), running ? h('span', { class: 'muted' }, 'updating…') : '',
      h('span', { class: 'spacer' }), actions),
    h('dl', { class: 'facts' },
      h('dt', {}, 'created'), h('dd', {}, time(doc.create_time_ms)),
      h('dt', {}, 'started'), h('dd', {}, time(doc.start_time_ms)),
      h('dt', {}, 'finished'), h('dd', {}, time(doc.finish_time_ms),
        doc.finish_time_ms ? h('span', { class: 'muted' }, ` (took ${duration(doc.start_time_ms || doc.create_time_ms, doc.finish_time_ms)})`) : ''),
      h('dt', {}, 'rows'), h('dd', { 'data-test': 'collection-rows' }, count(doc.total_rows)),
      h('dt', {}, 'bytes'), h('dd', {}, bytes(doc.total_bytes)),
      h('dt', {}, 'uploads'), h('dd', {}, `${count(doc.uploaded_files)} file${doc.uploaded_files === 1 ? '' : 's'}, ${bytes(doc.uploaded_bytes)}`),
      h('dt', {}, 'ended by'), h('dd', { 'data-test': 'collection-ended-by' },
        doc.ended_by ? h('span', { class: 'badge state-error' }, doc.ended_by) : '—'),
      h('dt', {}, 'errors'), h('dd', { 'data-test': 'collection-errors' },
        errors.length ? errors.map((e) => h('div', { class: 'error' }, typeof e === 'string' ? e : JSON.stringify(e))) : '—')),
  ];
}

async function paintResults(panel, doc, base, app, starts) {
  const artifacts = doc.artifacts || [];
  if (!artifacts.length) {
    panel.replaceChildren(h('h2', {}, 'Results'), h('div', { class: 'panel empty' }, 'No results yet.'));
    return;
  }
  const sections = artifacts.map((a) => {
    const section = h('section', { class: 'panel', 'data-test': 'artifact-results', 'data-artifact': a.name });
    const show = async (start) => {
      starts.set(a.name, start);
      let page;
      try {
        page = await app.api('GET', url(`${base}/results`, { artifact: a.name, start_row: start, rows: RESULT_PAGE_ROWS }));
      } catch (e) {
        if (e.name !== 'AbortError') section.replaceChildren(errorBox(e));
        return;
      }
      const rows = page.rows || [];
      section.replaceChildren(
        h('div', { class: 'toolbar' }, h('h3', { class: 'mono' }, a.name),
          h('span', { class: 'muted' }, `${count(page.total_rows)} row${page.total_rows === 1 ? '' : 's'}`), h('span', { class: 'spacer' }),
          h('a', { class: 'button', href: url(`${base}/results`, { artifact: a.name, format: 'csv' }), download: '',
            'data-test': 'export-csv' }, 'CSV'),
          h('a', { class: 'button', href: url(`${base}/results`, { artifact: a.name, format: 'jsonl' }), download: '',
            'data-test': 'export-jsonl' }, 'JSONL')),
        pager({ start, limit: RESULT_PAGE_ROWS, total: page.total_rows, shown: rows.length, onPage: show, test: 'results-pager' }),
        rowsTable(rows, 'result'));
    };
    return [section, show];
  });
  panel.replaceChildren(h('h2', {}, 'Results'), ...sections.map(([s]) => s));
  await Promise.all(sections.map(([, show], i) => show(starts.get(artifacts[i].name) || 0)));
}

async function paintUploads(panel, doc, base, app, starts) {
  if (!doc.uploaded_files) {
    panel.replaceChildren();
    return;
  }
  const show = async (start) => {
    starts.set(' uploads', start);
    let page;
    try {
      page = await app.api('GET', url(`${base}/uploads`, { start_row: start, rows: UPLOADS_PAGE_ROWS }));
    } catch (e) {
      if (e.name !== 'AbortError') panel.replaceChildren(errorBox(e));
      return;
    }
    const items = page.items || [];
    const rows = items.map((u) => h('tr', { 'data-test': 'upload-row', 'data-upload': u.upload },
      h('td', { class: 'num' }, u.upload),
      h('td', { class: 'mono wrap' }, u.path),
      h('td', { class: 'mono' }, u.artifact),
      h('td', { class: 'num', title: `${u.size} bytes` }, bytes(u.size)),
      h('td', { class: 'mono clip', title: u.sha256 || '' }, (u.sha256 || '').slice(0, 16)),
      h('td', {}, time(u.time_ms)),
      h('td', {}, u.error ? h('span', { class: 'badge state-error', title: u.error }, u.error) : ''),
      h('td', {}, u.error && !u.stored ? '' : h('a', { href: `${base}/uploads/${enc(u.upload)}`, download: '',
        'data-test': 'upload-download' }, 'download'))));
    panel.replaceChildren(h('div', { class: 'panel' }, h('h2', {}, 'Uploads'),
      pager({ start, limit: UPLOADS_PAGE_ROWS, total: page.total, shown: items.length, onPage: show, test: 'uploads-pager' }),
      h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-test': 'uploads-table' },
        h('thead', {}, h('tr', {}, ['#', 'path', 'artifact', 'size', 'sha256', 'time', 'error', '']
          .map((t, i) => h('th', { class: i === 0 || i === 3 ? 'num' : null }, t)))),
        h('tbody', {}, rows)))));
  };
  await show(starts.get(' uploads') || 0);
}
