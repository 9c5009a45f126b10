// The dashboard: every frontend, the fleet total and the limits in force, live from
// `GET /api/v1/live/dashboard` (server-sent events; docs/gui/live.md).

import { h, badge, count, time, ago, table } from '../ui.js';
import { ensureStyles, openStream, liveBadge, rate } from './live-common.js';

export async function render(main, params, app) {
  ensureStyles();
  const status = liveBadge();
  const updated = h('span', { class: 'muted', 'data-test': 'dashboard-updated' });
  const fleet = h('div', { class: 'cards', 'data-test': 'fleet' }, h('div', { class: 'muted' }, 'Waiting for the first figures…'));
  const frontends = h('div', { 'data-test': 'frontends' });
  const limits = h('div', { 'data-test': 'limits' });
  main.append(
    h('div', { class: 'view-head' }, h('h1', {}, 'Dashboard'), status, updated),
    fleet,
    h('h2', {}, 'Frontends'), frontends,
    h('h2', {}, 'Limits in force'), limits);
  openStream(app, '/api/v1/live/dashboard', (data) => {
    updated.textContent = `updated ${time(data.time_ms)}`;
    paintFleet(fleet, data);
    frontends.replaceChildren(frontendsTable(data.frontends || []));
    limits.replaceChildren(limitsList(data.limits || {}));
  }, status);
}

function paintFleet(box, data) {
  const f = data.fleet || {};
  const list = data.frontends || [];
  const up = list.filter((x) => x.up).length;
  const card = (title, value, test, sub) => h('div', { class: 'card', 'data-test': test },
    h('div', { class: 'card-title' }, title), h('div', { class: 'card-value', 'data-test': `${test}-value` }, value),
    sub ? h('div', { class: 'card-sub muted' }, sub) : '');
  box.replaceChildren(
    card('Connected agents', count(f.connected), 'fleet-connected'),
    card('Known clients', count(f.known), 'fleet-known', f.known === null ? 'counting…' : 'that ever connected'),
    card('Frontends up', `${up} / ${list.length}`, 'frontends-up'));
}

function frontendsTable(list) {
  return table(list, [
    { title: 'Frontend', cell: (f) => h('span', { class: 'mono', 'data-test': 'frontend-name' }, f.name) },
    { title: 'Role', cell: (f) => h('span', { 'data-test': 'frontend-role' }, f.role) },
    { title: 'State', cell: (f) => h('span', { class: `badge ${f.up ? 'up' : 'down'}`, 'data-test': 'frontend-up' }, f.up ? 'up' : 'down') },
    { title: 'Agents', class: 'num', cell: (f) => h('span', { 'data-test': 'frontend-connected' }, count(f.connected_clients)) },
    { title: 'Accepts/s', class: 'num', cell: (f) => rate(f.accepts_per_second) },
    { title: 'Shed/s', class: 'num', cell: (f) => rate(f.sheds_per_second) },
    { title: 'Upload 503s/s', class: 'num', cell: (f) => rate(f.upload_503s_per_second) },
    { title: 'Ingest', class: 'num', cell: (f) => rate(f.ingest_mb_per_second, 'MB/s') },
    { title: 'Flows done / failed', class: 'num', cell: (f) => `${count(f.flows_finished)} / ${count(f.flows_failed)}` },
    { title: 'Replication', cell: (f) => replication(f.replication) },
  ], { test: 'frontends-table', rowTest: 'frontend-row', rowAttrs: (f) => ({ 'data-name': f.name, 'data-role': f.role }) });
}

function replication(r) {
  if (!r) return h('span', { class: 'muted' }, '—');
  if (r.state === 'master') {
    if (!r.links_configured) return h('span', { class: 'muted' }, 'no minions');
    return h('span', { 'data-test': 'replication' }, `${r.links_up} of ${r.links_configured} minions linked`);
  }
  return h('span', { 'data-test': 'replication' }, badge(r.state === 'up' ? 'up' : 'down', r.state),
    ' ', h('span', { class: 'muted' }, r.since_ms ? `since ${ago(r.since_ms)}` : 'since this master started'));
}

const LIMIT_UNITS = {
  concurrency: 'uploads at once', concurrency_wait_ms: 'ms', max_connections_per_second: '/s',
  hunt_recruitment_per_second: 'agents/s', max_upload_bytes: 'bytes', handshake_timeout_ms: 'ms',
  handshakes_in_flight_per_shard: 'per shard', idle_timeout_ms: 'ms', request_timeout_ms: 'ms',
  collection_timeout_s: 's (0: none)', collection_max_rows: 'rows (0: none)',
  collection_max_upload_bytes: 'bytes (0: none)', max_open_files: 'files', max_live_streams: 'streams',
};

function limitsList(limits) {
  return h('dl', { class: 'facts limits' }, Object.entries(limits).flatMap(([k, v]) => [
    h('dt', { class: 'mono' }, k),
    h('dd', { 'data-test': `limit-${k}` }, count(v), ' ', h('span', { class: 'muted' }, LIMIT_UNITS[k] || '')),
  ]));
}
