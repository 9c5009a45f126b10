// The login form: POST /api/v1/session; the server sets the session cookie.

import { h } from '../ui.js';

export async function render(main, params, app) {
  const user = h('input', { type: 'text', name: 'user', id: 'login-user', autocomplete: 'username',
    required: true, autofocus: true, 'data-test': 'login-user' });
  const password = h('input', { type: 'password', name: 'password', id: 'login-password',
    autocomplete: 'current-password', required: true, 'data-test': 'login-password' });
  const error = h('div', { class: 'error hidden', role: 'alert', 'data-test': 'login-error' });
  const notice = app.loginNotice
    ? h('div', { class: 'notice', 'data-test': 'login-notice' }, app.loginNotice) : null;
  app.loginNotice = null;
  const submit = h('button', { type: 'submit', class: 'primary', 'data-test': 'login-submit' }, 'Log in');
  const form = h('form', { class: 'panel login', 'data-test': 'login-form', onsubmit: async (e) => {
    e.preventDefault();
    error.classList.add('hidden');
    submit.disabled = true;
    try {
      const session = await app.api('POST', '/api/v1/session', { user: user.value, password: password.value });
      app.loggedIn(session);
    } catch (err) {
      if (err.name === 'AbortError') return;
      error.textContent = err.status === 401 ? 'Wrong user or password.' : err.message;
      error.classList.remove('hidden');
      password.value = '';
      password.focus();
    } finally {
      submit.disabled = false;
    }
  } },
  h('h1', {}, 'packhunt'),
  notice,
  h('div', { class: 'field' }, h('label', { for: 'login-user' }, 'User'), user),
  h('div', { class: 'field' }, h('label', { for: 'login-password' }, 'Password'), password),
  error,
  submit);
  main.appendChild(form);
  user.focus();
}
