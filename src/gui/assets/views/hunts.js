// Placeholder: the hunts view is built with the live streams (docs/gui/app.md).

import { h } from '../ui.js';

export async function render(main) {
  main.appendChild(h('div', { class: 'panel placeholder', 'data-test': 'placeholder-hunts' },
    'The hunts view is not here yet.'));
}
