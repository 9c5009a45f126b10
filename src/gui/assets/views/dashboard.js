// Placeholder: the dashboard view is built with the live streams (docs/gui/app.md).

import { h } from '../ui.js';

export async function render(main) {
  main.appendChild(h('div', { class: 'panel placeholder', 'data-test': 'placeholder-dashboard' },
    'The dashboard view is not here yet.'));
}
