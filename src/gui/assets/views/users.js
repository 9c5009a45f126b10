// Users (administrators only; docs/security/roles.md): the users of the master's config
// file and their roles (`GET /api/v1/users`), a form that adds one, and per user: change
// the role, set a password, remove (asked twice). The server checks everything again; a
// user whose password or role changes is logged out of the GUI.

import { h, errorBox, enc } from '../ui.js';

const ROLES = ['administrator', 'investigator', 'reader'];
// As the server's MIN_PASSWORD_CHARS (src/limits.rs): said before the round trip.
const MIN_PASSWORD_CHARS = 12;

export async function render(main, params, app) {
  const head = h('div', { class: 'view-head' }, h('h1', {}, 'Users'));
  main.append(head);
  if (!app.isAdministrator()) {
    main.append(h('div', { class: 'panel empty', 'data-test': 'users-forbidden' },
      'Only administrators manage users.'));
    return;
  }
  const total = h('span', { class: 'muted', 'data-test': 'users-total' });
  head.append(total);
  const message = h('div', { 'data-test': 'users-message' });
  const list = h('div', { 'data-test': 'users-list' });
  const say = (text) => message.replaceChildren(h('div', { class: 'notice', 'data-test': 'users-notice' }, text));
  const fail = (err) => { if (err.name !== 'AbortError') message.replaceChildren(errorBox(err, 'users-error')); };
  const reload = async () => {
    const { items } = await app.api('GET', '/api/v1/users');
    total.textContent = `${items.length} user${items.length === 1 ? '' : 's'}`;
    list.replaceChildren(usersTable(items, app, { say, fail, reload }));
  };
  main.append(addForm(app, { say, fail, reload }), message, list);
  await reload();
}

function roleSelect(value, test) {
  const select = h('select', { 'data-test': test, 'aria-label': 'Role' },
    ROLES.map((r) => h('option', { value: r }, r)));
  select.value = value;
  return select;
}

/** Why a new password will be refused, or null. */
function passwordProblem(password, again) {
  if (password.length < MIN_PASSWORD_CHARS) return `the password needs at least ${MIN_PASSWORD_CHARS} characters`;
  if (password !== again) return 'the two passwords differ';
  return null;
}

function addForm(app, { say, fail, reload }) {
  const name = h('input', { type: 'text', id: 'user-add-name', autocomplete: 'off', required: true,
    placeholder: 'e.g. ana.lyst', 'data-test': 'user-add-name' });
  const role = roleSelect('investigator', 'user-add-role');
  const password = h('input', { type: 'password', id: 'user-add-password', autocomplete: 'new-password',
    required: true, 'data-test': 'user-add-password' });
  const again = h('input', { type: 'password', id: 'user-add-again', autocomplete: 'new-password',
    required: true, 'data-test': 'user-add-again' });
  const submit = h('button', { type: 'submit', class: 'primary', 'data-test': 'user-add-submit' }, 'Add user');
  const form = h('form', { class: 'panel', 'data-test': 'user-add-form' },
    h('h2', {}, 'Add a user'),
    h('div', { class: 'row' },
      h('div', { class: 'field' }, h('label', { for: 'user-add-name' }, 'Name'), name,
        h('span', { class: 'help' }, 'letters, digits, . _ - @')),
      h('div', { class: 'field' }, h('label', {}, 'Role'), role),
      h('div', { class: 'field' }, h('label', { for: 'user-add-password' }, 'Password'), password,
        h('span', { class: 'help' }, `at least ${MIN_PASSWORD_CHARS} characters`)),
      h('div', { class: 'field' }, h('label', { for: 'user-add-again' }, 'Password again'), again)),
    submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const problem = passwordProblem(password.value, again.value);
    if (problem) { fail(new Error(problem)); return; }
    submit.disabled = true;
    try {
      const added = await app.api('POST', '/api/v1/users',
        { name: name.value.trim(), role: role.value, password: password.value });
      form.reset();
      role.value = 'investigator';
      await reload();
      say(`Added ${added.name} (${added.role}).`);
    } catch (err) {
      fail(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function usersTable(items, app, actions) {
  if (!items.length) return h('div', { class: 'panel empty', 'data-test': 'users-empty' }, 'No users.');
  const body = items.map((u) => userRow(u, app, actions));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'data', 'data-test': 'users-table' },
    h('thead', {}, h('tr', {}, ['Name', 'Role', 'Password', ''].map((c) => h('th', {}, c)))),
    h('tbody', {}, body)));
}

function userRow(u, app, { say, fail, reload }) {
  const path = `/api/v1/users/${enc(u.name)}`;
  const self = app.session && app.session.user === u.name;
  const change = async (body, done) => {
    try {
      await app.api('PUT', path, body);
      await reload();
      say(done);
    } catch (err) {
      fail(err);
    }
  };
  const role = roleSelect(u.role, 'user-role');
  const saveRole = h('button', { type: 'button', disabled: true, 'data-test': 'user-role-save',
    onclick: () => change({ role: role.value }, `${u.name} is now ${role.value}.`) }, 'Change role');
  role.addEventListener('change', () => { saveRole.disabled = role.value === u.role; });
  const password = h('input', { type: 'password', autocomplete: 'new-password', placeholder: 'new password',
    'aria-label': `New password for ${u.name}`, 'data-test': 'user-password' });
  const again = h('input', { type: 'password', autocomplete: 'new-password', placeholder: 'again',
    'aria-label': `New password for ${u.name}, again`, 'data-test': 'user-password-again' });
  const setPassword = h('button', { type: 'submit', 'data-test': 'user-password-save' }, 'Set password');
  const passwordForm = h('form', { class: 'toolbar', 'data-test': 'user-password-form', onsubmit: (e) => {
    e.preventDefault();
    const problem = passwordProblem(password.value, again.value);
    if (problem) { fail(new Error(problem)); return; }
    change({ password: password.value }, `Set the password of ${u.name}.`);
  } }, password, again, setPassword);
  const removeBox = h('span', {});
  const askRemove = () => removeBox.replaceChildren(
    h('span', { class: 'muted' }, `Remove ${u.name}? `),
    h('button', { type: 'button', class: 'danger', 'data-test': 'user-remove-confirm', onclick: async () => {
      try {
        await app.api('DELETE', path);
        await reload();
        say(`Removed ${u.name}.`);
      } catch (err) {
        fail(err);
      }
    } }, 'Remove'),
    h('button', { type: 'button', 'data-test': 'user-remove-cancel', onclick: showRemove }, 'Cancel'));
  const showRemove = () => removeBox.replaceChildren(h('button', { type: 'button', class: 'danger',
    'data-test': 'user-remove', onclick: askRemove }, 'Remove…'));
  showRemove();
  return h('tr', { 'data-test': 'user-row', 'data-user': u.name },
    h('td', { 'data-test': 'user-name' }, u.name, self ? h('span', { class: 'muted' }, ' (you)') : ''),
    h('td', {}, h('div', { class: 'toolbar' }, role, saveRole)),
    h('td', {}, passwordForm),
    h('td', {}, removeBox));
}
