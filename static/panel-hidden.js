// What the hidden layer has learned: each first-layer unit's 784 input weights as an image.

import { $, describe, whoAnswers } from './dom.js';
import { unitImage } from './weights.js';

const UNITS_SHOWN = 120;  // a wide layer (e.g. 800 units) shows this many until asked

export function hiddenPanel({ weightsOf }) {
  const title = $('#hidden-title');
  const grid = $('#units');
  const more = $('#all-units');
  let units = [];
  let shape = null;  // "v6 784-800-10": a new net folds the units back to the first ones
  let all = false;  // asked to see every unit of that net (kept while its weights reload)
  let asked = 0;  // the latest load wins: an older answer arriving late is dropped

  function show(count) {
    grid.replaceChildren(...units.slice(0, count).map(unitImage));
    more.hidden = units.length <= count;
    more.textContent = `Show all ${units.length} units (${units.length - count} more)`;
  }
  more.addEventListener('click', () => {
    all = true;
    show(units.length);
  });

  async function load() {
    const mine = ++asked;
    const hidden = await weightsOf();
    if (!hidden || mine !== asked) return;
    const who = whoAnswers(hidden.model);
    title.textContent = `What the hidden layer of ${who} has learned `
      + `(${hidden.units.length} units, ${describe(hidden.sizes)})`;
    const now = `${hidden.model} ${describe(hidden.sizes)}`;
    if (now !== shape) all = false;
    shape = now;
    units = hidden.units;
    show(all ? units.length : UNITS_SHOWN);
  }

  return { name: 'hidden', netChanged: load, versionLive: load };
}
