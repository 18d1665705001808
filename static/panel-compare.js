// Every net on this drawing (POST /compare): a row per net, the chosen one highlighted.

import { api } from './api.js';
import { $, confidence, el, modelName, percent } from './dom.js';

const DRAW_FIRST = 'Draw a digit to compare the networks.';

export function comparePanel({ models, net, training, isOpen, messages }) {
  const body = $('#compare-table tbody');
  const info = $('#compare-info');
  let asked = 0;

  function show(rows) {
    const chosen = net() === null ? rows[0]?.model : `v${net()}`;  // the trainable net first
    body.replaceChildren(...rows.map((row) => {
      const shipped = models().pretrained.find((m) => `v${m.version}` === row.model);
      const small = (text) => [el('br'), el('small', { text })];
      const name = el('th', { scope: 'row', text: modelName(row.model) },
        ...(shipped?.test_accuracy != null ? small(`${percent(shipped.test_accuracy)} test`) : []),
        ...(row === rows[0] && training.running()
          ? small('training: the last complete net answers') : []));
      const sure = el('td', { class: 'pct', text: confidence(row.confidence) },
        row.unsure ? ' ' : null, row.unsure ? el('span', { class: 'tag', text: 'not sure',
          title: row.unsure }) : null);
      return el('tr', { dataset: { model: row.model },
        class: [row.model === chosen && 'chosen', row.unsure && 'unsure']
          .filter(Boolean).join(' ') || null },
      name, el('td', { class: 'reads', text: row.label }), sure);
    }));
    const labels = new Set(rows.map((r) => r.label));
    info.textContent = labels.size === 1
      ? `All ${rows.length} networks read a ${rows[0].label}.`
      : `The networks disagree: they read ${[...labels].sort().join(', ')}.`;
  }

  return {
    name: 'compare',
    async answer(answer, image) {
      if (!isOpen()) return;
      const mine = ++asked;
      try {
        const { models: rows } = await api.compare(image);
        if (mine === asked) show(rows);
      } catch (err) {
        if (mine === asked) messages.fail(err.message, 'predict');
      }
    },
    cleared() {
      asked += 1;
      body.replaceChildren();
      info.textContent = DRAW_FIRST;
    },
  };
}
