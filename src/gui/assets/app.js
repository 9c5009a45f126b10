// The app shell: session, hash router, top bar and the `app` object every view gets
// (docs/gui/app.md). Views are ES modules under views/, loaded when first visited.

import { h, errorBox } from './ui.js';

/** An API call that did not answer 2xx: `status` is the HTTP status (0: no answer). */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

// Route table: pattern over the hash's path, view module, names of the captured parts.
const ROUTES = [
  [/^\/login$/, 'login', []],
  [/^\/dashboard$/, 'dashboard', []],
  [/^\/clients$/, 'clients', []],
  [/^\/clients\/([^/]+)$/, 'client', ['id']],
  [/^\/clients\/([^/]+)\/collections\/([^/]+)$/, 'collection', ['id', 'flow']],
  [/^\/hunts$/, 'hunts', []],
  [/^\/hunts\/([^/]+)$/, 'hunt', ['id']],
  [/^\/events$/, 'events', []],
  [/^\/audit$/, 'audit', []],
  [/^\/users$/, 'users', []],
];
const DEFAULT_ROUTE = '#/dashboard';
const LOGIN_ROUTE = '#/login';

const main = document.getElementById('main');
let leaveHandlers = [];
let routeAbort = new AbortController();
// Where the user was going when the login form came up: they land there after it.
let wanted = null;
// Bumped on every route change: a render that finishes late does not paint over the next.
let generation = 0;

export const app = {
  /** `{user, role, csrf_token, expires_ms}` once logged in, else null. */
  session: null,

  /** Why the login form came up, shown on it once (a session that ended). */
  loginNotice: null,

  /** fetch with JSON in and out. Non-GET requests carry the CSRF token. Throws ApiError;
   *  a 401 (no session, or it expired) sends the user to the login form. Requests made
   *  while a view is shown are aborted when the route changes. */
  async api(method, path, body, { signal } = {}) {
    const headers = { 'X-Requested-With': 'packhunt', Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && method !== 'HEAD' && app.session) {
      headers['X-CSRF-Token'] = app.session.csrf_token;
    }
    let response;
    try {
      response = await fetch(path, {
        method, headers, credentials: 'same-origin',
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal || routeAbort.signal,
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, `the server did not answer (${e.message})`);
    }
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    if (response.status === 401 && !path.startsWith('/api/v1/session')) {
      app.session = null;
      app.loginNotice = 'Your session has ended: log in again.';
      toLogin();
      throw new ApiError(401, 'your session has ended: log in again');
    }
    if (!response.ok) {
      const message = json && json.error ? json.error : `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return json;
  },

  /** Whether the user's role may collect, cancel, hunt and label (docs/security/roles.md;
   *  the API refuses the rest anyway). */
  canChange() {
    return !!app.session && ['administrator', 'investigator'].includes(app.session.role);
  },

  /** Whether the user may also manage users and the client event table. */
  isAdministrator() {
    return !!app.session && app.session.role === 'administrator';
  },

  navigate(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },

  /** `fn` runs once when the route changes: close streams, stop timers there. */
  onLeave(fn) {
    leaveHandlers.push(fn);
  },

  /** Called by the login view with the session the server answered. */
  loggedIn(session) {
    app.session = session;
    const target = wanted && wanted !== LOGIN_ROUTE ? wanted : DEFAULT_ROUTE;
    wanted = null;
    app.navigate(target);
  },

  async logout() {
    try { await app.api('DELETE', '/api/v1/session'); } catch { /* gone already */ }
    app.session = null;
    wanted = null;
    app.navigate(LOGIN_ROUTE);
  },
};

function toLogin() {
  if (location.hash !== LOGIN_ROUTE) {
    wanted = location.hash || DEFAULT_ROUTE;
    location.hash = LOGIN_ROUTE;
  }
}

/** `#/clients/C.1?tab=new` -> {view, params: {id: 'C.1', tab: 'new'}}, or null. */
export function parseHash(hash) {
  const raw = (hash || '').replace(/^#/, '') || '/dashboard';
  const [path, query] = raw.split('?', 2);
  for (const [pattern, view, names] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    const params = Object.fromEntries(new URLSearchParams(query || ''));
    names.forEach((name, i) => { params[name] = decodeURIComponent(m[i + 1]); });
    return { view, params };
  }
  return null;
}

async function route() {
  const mine = ++generation;
  for (const fn of leaveHandlers.splice(0)) {
    try { fn(); } catch (e) { console.error('leave handler', e); }
  }
  routeAbort.abort();
  routeAbort = new AbortController();
  const found = parseHash(location.hash);
  if (!found) {
    app.navigate(DEFAULT_ROUTE);
    return;
  }
  if (found.view !== 'login' && !app.session) {
    toLogin();
    return;
  }
  if (found.view === 'login' && app.session) {
    app.navigate(DEFAULT_ROUTE);
    return;
  }
  const { view } = found;
  paintTopBar(view);
  document.title = `packhunt · ${view}`;
  main.replaceChildren();
  main.dataset.view = view;
  try {
    const module = await import(`./views/${view}.js`);
    if (mine !== generation) return;
    await module.render(main, found.params, app);
  } catch (e) {
    if (mine !== generation || e.name === 'AbortError') return;
    if (e instanceof ApiError && e.status === 401) return;
    console.error(e);
    main.appendChild(errorBox(e, 'view-error'));
  }
}

function paintTopBar(view) {
  const top = document.getElementById('top');
  top.classList.toggle('hidden', view === 'login' || !app.session);
  const section = { client: 'clients', collection: 'clients', hunt: 'hunts' }[view] || view;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.view === section);
    // What a role may not do is not offered.
    if (a.dataset.role === 'administrator') a.classList.toggle('hidden', !app.isAdministrator());
  }
  if (app.session) {
    document.getElementById('session-user').textContent = app.session.user;
    document.getElementById('session-role').textContent = app.session.role;
  }
}

async function start() {
  document.getElementById('logout').addEventListener('click', () => app.logout());
  try {
    app.session = await app.api('GET', '/api/v1/session');
  } catch (e) {
    app.session = null;
    if (!(e instanceof ApiError && e.status === 401)) {
      main.replaceChildren(errorBox(e, 'view-error'));
    }
  }
  window.addEventListener('hashchange', route);
  await route();
}

start();

// Exposed for debugging from the console and for the browser tests.
window.packhunt = { app, h };
