// Placeholder: the events view is built with the live streams (docs/gui/app.md).

import { h } from '../ui.js';

export async function render(main) {
  main.appendChild(h('div', { class: 'panel placeholder', 'data-test': 'placeholder-events' },
    'The events view is not here yet.'));
}
