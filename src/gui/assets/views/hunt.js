// Placeholder: the hunt view is built with the live streams (docs/gui/app.md).

import { h } from '../ui.js';

export async function render(main) {
  main.appendChild(h('div', { class: 'panel placeholder', 'data-test': 'placeholder-hunt' },
    'The hunt view is not here yet.'));
}
