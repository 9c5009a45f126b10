// What the live views (dashboard, hunts, hunt, events) share: their stylesheet, the
// server-sent-event stream with its status badge, hunt progress and hunt actions.

import { h, errorBox } from '../ui.js';

/** Links /assets/live.css once (index.html belongs to the shell; CSP allows 'self'). */
export function ensureStyles() {
  if (document.querySelector('link[data-live-css]')) return;
  document.head.append(h('link', { rel: 'stylesheet', href: '/assets/live.css', 'data-live-css': '' }));
}

/** Opens an EventSource on `path` (same origin, session cookie), calls `onData(json)` for
 *  each event and keeps `status` (an element) saying whether the view is live. Closed when
 *  the route changes. An `end` event closes it for good. */
export function openStream(app, path, onData, status) {
  const source = new EventSource(path, { withCredentials: true });
  const show = (state, text) => {
    if (!status) return;
    status.className = `badge live-${state}`;
    status.dataset.state = state;
    status.textContent = text;
  };
  show('connecting', 'connecting…');
  source.addEventListener('open', () => show('live', 'live'));
  source.addEventListener('message', (e) => {
    show('live', 'live');
    let data;
    try { data = JSON.parse(e.data); } catch { return; }
    onData(data);
  });
  source.addEventListener('end', () => {
    source.close();
    show('ended', 'ended');
  });
  source.addEventListener('error', () => {
    // The browser reconnects by itself (after the server's retry delay) unless closed.
    if (source.readyState === EventSource.CLOSED) {
      show('ended', 'not live: reload to retry');
      // Refused rather than cut: if the session ended, this sends the user to log in.
      app.api('GET', '/api/v1/session').catch(() => {});
    } else {
      show('reconnecting', 'reconnecting…');
    }
  });
  app.onLeave(() => source.close());
  return source;
}

export function liveBadge() {
  return h('span', { class: 'badge live-connecting', 'data-test': 'live-status' }, 'connecting…');
}

/** Flows still running: scheduled minus every ended one. */
export function running(hunt) {
  return Math.max(0, hunt.scheduled - hunt.completed - hunt.errors - (hunt.cancelled || 0));
}

/** A bar of completed / errors / cancelled over scheduled, and its figures. */
export function progress(hunt) {
  const total = hunt.scheduled || 0;
  const part = (n, cls) => {
    const pct = total ? Math.round((n / total) * 100) : 0;
    // Widths by class steps (no inline style under the CSP): 0, 5, 10 ... 100.
    return h('span', { class: `seg ${cls} w${Math.round(pct / 5) * 5}` });
  };
  return h('div', { class: 'progress', 'data-test': 'hunt-progress' },
    h('div', { class: 'bar' }, part(hunt.completed, 'done'), part(hunt.errors, 'err'),
      part(hunt.cancelled || 0, 'cancel')),
    h('div', { class: 'figures' },
      h('span', { 'data-test': 'hunt-completed' }, String(hunt.completed)), ' / ',
      h('span', { 'data-test': 'hunt-scheduled' }, String(hunt.scheduled)), ' done',
      hunt.errors ? h('span', { class: 'err-text', 'data-test': 'hunt-errors' }, ` · ${hunt.errors} errors`)
        : h('span', { class: 'hidden', 'data-test': 'hunt-errors' }, '0'),
      hunt.cancelled ? ` · ${hunt.cancelled} cancelled` : '',
      running(hunt) ? ` · ${running(hunt)} running` : '',
      // Fleet-wide: connected agents the recruiter has yet to check against running hunts.
      hunt.pending_recruitment && hunt.state === 'running'
        ? h('span', { class: 'muted', title: 'connected agents not yet checked against the running hunts' },
          ` · ${hunt.pending_recruitment} agents still to check`) : ''));
}

/** What `huntActions` offers for a hunt: its buttons are rebuilt only when this changes. */
export function actionsKey(hunt) {
  // Running or paused: Start / Stop whatever the counts. Ended: the unfinished count shows.
  if (hunt.state === 'running' || hunt.state === 'paused') return hunt.state;
  return `${hunt.state}:${running(hunt)}`;
}

/** Start / Stop (with "cancel unfinished collections") for a hunt, if the role may. */
export function huntActions(app, hunt, where) {
  if (!app.canChange()) return h('span', { class: 'muted' });
  const box = h('div', { class: 'hunt-actions', 'data-test': 'hunt-actions' });
  const error = h('span', {});
  const call = async (action, body) => {
    error.replaceChildren();
    for (const b of box.querySelectorAll('button')) b.disabled = true;
    try {
      await app.api('POST', `/api/v1/hunts/${encodeURIComponent(hunt.hunt_id)}/${action}`, body);
    } catch (e) {
      if (e.name !== 'AbortError') error.append(errorBox(e, `${where}-action-error`));
    } finally {
      for (const b of box.querySelectorAll('button')) b.disabled = false;
    }
  };
  if (hunt.state === 'paused') {
    box.append(h('button', { type: 'button', class: 'primary', 'data-test': 'hunt-start',
      onclick: () => call('start') }, 'Start'));
  }
  const stoppable = hunt.state === 'running' || hunt.state === 'paused';
  if (stoppable) {
    const id = `cancel-${where}-${hunt.hunt_id}`;
    const cancel = h('input', { type: 'checkbox', 'data-test': 'hunt-cancel-flows', id });
    box.append(h('button', { type: 'button', class: 'danger', 'data-test': 'hunt-stop',
      onclick: () => call('stop', cancel.checked ? { cancel_flows: true } : {}) }, 'Stop'),
    h('label', { class: 'check', for: id }, cancel, ' and cancel unfinished collections'));
  } else if (running(hunt) > 0) {
    // Stopped or expired with collections still running: they can still be cancelled.
    box.append(h('button', { type: 'button', class: 'danger', 'data-test': 'hunt-cancel-unfinished',
      onclick: () => call('stop', { cancel_flows: true }) }, `Cancel ${running(hunt)} unfinished`));
  }
  box.append(error);
  return box;
}

/** A rate for the dashboard: null is "not reported" (a minion's counters are its own). */
export function rate(v, unit) {
  if (v === null || v === undefined) return h('span', { class: 'muted', title: 'not reported to the master' }, '—');
  return `${Number(v).toLocaleString('en-US', { maximumFractionDigits: 2 })}${unit ? ` ${unit}` : ''}`;
}
