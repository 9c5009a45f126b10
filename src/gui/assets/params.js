// The form for one artifact's typed parameters (`GET /api/v1/artifacts`: each parameter's
// name, description, default (null: required) and type: string, glob, glob_list, bool,
// u64). Used by the hunt form, the client event table editor and a new collection; builds elements only
// (no HTML strings).

import { h } from './ui.js';

/** `parameterForm(def, current?, {test})` -> `{fieldset, read()}`. `current` holds values
 *  to start from (the event table's stored strings); `read()` returns the parameters to
 *  send: only those set and different from the default, typed as the API takes them, and
 *  throws an Error naming a missing required or ill-typed value. */
export function parameterForm(def, current, { test: prefix } = {}) {
  const inputs = [];
  const values = current || {};
  const rows = (def.parameters || []).map((p) => {
    const test = `${prefix || 'param'}-${def.name}-${p.name}`;
    const start = values[p.name] !== undefined ? String(values[p.name]) : null;
    const required = p.default === null || p.default === undefined;
    if (p.type === 'bool') {
      const on = (start ?? p.default) === 'true';
      const input = h('input', { type: 'checkbox', checked: on, 'data-test': test, id: test });
      inputs.push([p, () => (input.checked === (p.default === 'true') ? undefined : input.checked)]);
      return h('div', { class: 'field check' }, input, h('label', { for: test }, p.name),
        h('span', { class: 'help' }, p.description || ''));
    }
    let input;
    if (p.type === 'glob_list') {
      input = h('textarea', { rows: 3, 'data-test': test, id: test, placeholder: 'one absolute glob per line' });
      input.value = start ?? p.default ?? '';
      inputs.push([p, () => {
        const globs = input.value.split('\n').map((l) => l.trim()).filter(Boolean);
        if (!globs.length) {
          if (required) throw new Error(`${def.name}: ${p.name} needs at least one glob`);
          return undefined;
        }
        return globs.join('\n') === (p.default || '') ? undefined : globs;
      }]);
    } else if (p.type === 'u64') {
      input = h('input', { type: 'number', min: 0, step: 1, 'data-test': test, id: test,
        placeholder: p.default ?? '' });
      if (start !== null && start !== p.default) input.value = start;
      inputs.push([p, () => {
        const text = input.value.trim();
        if (text === '') {
          if (required) throw new Error(`${def.name}: ${p.name} is required`);
          return undefined;
        }
        if (!/^\d+$/.test(text)) throw new Error(`${def.name}: ${p.name} must be a non-negative integer`);
        return Number(text);
      }]);
    } else {
      input = h('input', { type: 'text', class: 'wide', 'data-test': test, id: test,
        placeholder: p.default ?? '' });
      if (start !== null && start !== p.default) input.value = start;
      inputs.push([p, () => {
        if (input.value === '') {
          if (required) throw new Error(`${def.name}: ${p.name} is required`);
          return undefined;
        }
        return input.value;
      }]);
    }
    return h('div', { class: 'field' },
      h('label', { for: test }, p.name, required ? ' *' : '', ' ', h('span', { class: 'badge' }, p.type)),
      input,
      h('span', { class: 'help' }, p.description || '', required ? '' : ` (default ${p.default})`));
  });
  const fieldset = h('fieldset', { 'data-test': 'artifact-params', 'data-artifact': def.name },
    h('legend', { class: 'mono' }, def.name),
    rows.length ? rows : h('div', { class: 'muted field' }, 'No parameters.'));
  return {
    fieldset,
    read() {
      const out = {};
      for (const [p, read] of inputs) {
        const v = read();
        if (v !== undefined) out[p.name] = v;
      }
      return out;
    },
  };
}
