// What fires inside (/predict's "activations"): per hidden layer its most active units. For
// the first layer each unit shows its weights (what it looks for) and the drawing times its
// weights (which of its strokes the drawing matched); a narrow layer also shows every unit.

import { $, el, modelName } from './dom.js';
import { unitImage } from './weights.js';

const UNITS_TOP_SHOWN = 16;
const DRAW_FIRST = 'Draw a digit to see which hidden units it excites.';

// What one unit's output means, by the net's hidden activation.
const SCALE = {
  sigmoid: 'each hidden unit\'s output runs from 0 (silent) to 1 (firing at full strength)',
  tanh: 'each hidden unit\'s output runs from −1 (firing against) through 0 (silent) to 1 '
    + '(firing)',
  relu: 'each hidden unit\'s output is 0 when it is silent and grows without a top the '
    + 'more it fires (ReLU units); the bars compare each unit with the most active one',
};

export function insidePanel({ weightsOf }) {
  const box = $('#layers');
  const info = $('#inside-info');
  let shown = null;  // the answer on screen, redrawn when its net's weights arrive

  async function show(answer) {
    shown = answer;
    const layers = answer.activations;
    const input = answer.input ? answer.input.flat() : null;
    const hidden = await weightsOf();
    if (shown !== answer) return;
    const units = hidden?.model === answer.model ? hidden.units : null;
    const activation = layers[0]?.activation ?? 'sigmoid';
    info.textContent = `${modelName(answer.model)}: ${SCALE[activation] ?? SCALE.sigmoid}.`
      + (units ? ' Left: what a unit looks for (red excites, blue inhibits); right: your '
        + 'drawing times those weights, the strokes it matched.' : '');
    box.replaceChildren(...layers.flatMap((layer) => {
      const top = Math.max(...layer.top.map((u) => Math.abs(u.value)), 1e-9);
      const level = (v) => (activation === 'relu' ? v / top : Math.abs(v));
      const parts = [el('h3', { text: `Hidden layer ${layer.layer}: ${layer.size} units, the `
        + `${Math.min(UNITS_TOP_SHOWN, layer.top.length)} most active` })];
      if (layer.values) {
        parts.push(el('div', { class: 'strip', role: 'img', 'aria-label': `all ${layer.size} `
          + `units of layer ${layer.layer}, ${layer.values.filter((v) => level(v) > 0.5).length}`
          + ' above half of the most active' }, ...layer.values.map((v, i) => {
          const cell = el('span', { title: `unit ${i}: ${v.toFixed(2)}` });
          cell.style.background = `rgba(34, 87, 199, ${Math.min(1, level(v))})`;
          return cell;
        })));
      }
      parts.push(el('ol', { class: 'units-top',
        'aria-label': `most active units of hidden layer ${layer.layer}` },
      ...layer.top.slice(0, UNITS_TOP_SHOWN).map(({ unit, value }) => {
        const item = el('li', { dataset: { unit } });
        if (layer.layer === 1 && units?.[unit]) {
          item.append(unitImage(units[unit], unit));
          if (input) item.append(unitImage(units[unit].map((w, i) => w * input[i]), unit));
        }
        const bar = el('span');
        bar.style.width = `${Math.round(100 * Math.min(1, level(value)))}%`;
        item.append(el('span', { class: 'what' }, el('span', { text: `unit ${unit}` }),
          el('b', { text: value.toFixed(2) })), el('span', { class: 'level' }, bar));
        return item;
      })));
      return parts;
    }));
  }

  return {
    name: 'inside',
    answer(answer) {
      if (answer.activations) show(answer);
    },
    cleared() {
      shown = null;
      box.replaceChildren();
      info.textContent = DRAW_FIRST;
    },
  };
}
