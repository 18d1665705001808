// Where the net goes wrong (GET /confusion): the chosen net's 10x10 confusion matrix on
// MNIST's test images, per-class accuracy; a cell shows its digits (/confusion/examples).

import { api } from './api.js';
import { $, $$, confidence, el, modelName, percent, touchOnly, words } from './dom.js';

const CELL_EXAMPLES = 48;
const MOVES = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };

// A 10x10 confusion matrix into a <table> (its thead and tbody), a row's accuracy beside it;
// with onCell(t, r) its cells are buttons (one tab stop), else numbers (the playground's).
export function drawMatrix(table, { matrix, per_class: perClass }, onCell = null) {
  const th = (digit, scope) => el('th', { scope, text: digit });
  table.tHead.replaceChildren(el('tr', {},
    el('td', {}, el('span', { class: 'visually-hidden', text: 'true digit, read as' })),
    ...matrix.map((_, d) => th(d, 'col')), el('th', { scope: 'col', text: 'right' })));
  table.tBodies[0].replaceChildren(...matrix.map((row, t) => {
    const total = row.reduce((a, b) => a + b, 0);
    const right = perClass ? perClass[t] : total ? row[t] / total : null;
    return el('tr', {}, th(t, 'row'), ...row.map((count, r) => {
      const label = t === r ? `${count} ${t}s read right` : `${count} ${t}s read as ${r}`;
      const b = onCell ? el('button', { type: 'button', text: count,
        dataset: { true: t, read: r }, tabindex: t === 0 && r === 0 ? 0 : -1,  // one tab stop
        'aria-pressed': 'false', 'aria-label': label, onclick: () => onCell(t, r) })
        : el('span', { text: count, title: label });
      // Green for right answers, red for mistakes, stronger for a larger share of the row.
      const share = count / (total || 1);
      b.style.setProperty('--cell', t === r ? `rgba(46, 125, 50, ${0.15 + 0.6 * share})`
        : `rgba(179, 38, 30, ${count ? Math.min(0.8, 0.08 + 4 * share) : 0})`);
      return el('td', { class: count === 0 ? 'zero' : null }, b);
    }), el('td', { class: 'accuracy',
      text: right == null ? '–' : percent(right, 0) }));
  }));
  table.hidden = false;
}

export function confusionPanel({ net, isOpen, messages, saveState }) {
  const table = $('#matrix');
  const info = $('#confusion-info');
  const box = $('#cell');
  let cell = null;  // [true, read], chosen
  let asked = 0;

  $('#confusion-how').textContent = touchOnly()
    ? 'Tap a cell to see its digits; swipe the table sideways for the last columns.'
    : 'Choose a cell to see its digits: arrow keys move between cells, Enter opens one.';

  const button = (t, r) => $(`#matrix button[data-true="${t}"][data-read="${r}"]`);

  async function load() {
    if (!isOpen()) return;
    const pretrained = net();
    const mine = ++asked;
    try {
      const data = await api.confusion(pretrained);
      if (mine !== asked) return;  // the choice changed meanwhile
      info.textContent = `${modelName(data.model)} read ${percent(data.accuracy)} of `
        + `${data.images.count.toLocaleString('en')} test images right: ${data.images.source}.`;
      showMatrix(data);
      if (cell) showCell(...cell);
      else box.hidden = true;
    } catch (err) {
      if (mine !== asked) return;
      table.hidden = true;
      box.hidden = true;
      info.replaceChildren(...words(err.message));
    }
  }

  const showMatrix = (data) => drawMatrix(table, data, showCell);

  // Arrow keys move between the cells (a grid is one tab stop); Enter opens one (a button).
  table.addEventListener('keydown', (event) => {
    const from = event.target.closest('button');
    if (!from || !MOVES[event.key]) return;
    event.preventDefault();
    const [dt, dr] = MOVES[event.key];
    const t = Math.min(9, Math.max(0, Number(from.dataset.true) + dt));
    const r = Math.min(9, Math.max(0, Number(from.dataset.read) + dr));
    for (const b of $$('#matrix button')) b.tabIndex = -1;
    button(t, r).tabIndex = 0;
    button(t, r).focus();
  });

  async function showCell(t, r) {
    cell = [t, r];
    saveState();
    for (const b of $$('#matrix button')) {
      b.setAttribute('aria-pressed', String(b === button(t, r)));
    }
    try {
      const data = await api.confusionCell(net(), t, r, CELL_EXAMPLES);
      if (!cell || cell[0] !== t || cell[1] !== r) return;
      const what = t === r ? `${t}s read right` : `${t}s read as ${r}`;
      $('#cell-title').textContent = data.count === 0 ? `No ${what}.`
        : `${data.count} ${what}` + (data.count > data.examples.length
          ? `: the ${data.examples.length} read most confidently` : '')
        + ` (${modelName(data.model)}'s confidence under each)`;
      $('#cell-examples').replaceChildren(...data.examples.map((example) => el('li', {},
        el('img', { src: example.image,
          alt: `a ${t} read as ${r}, ${confidence(example.confidence)} confident` }),
        el('span', { text: confidence(example.confidence) }))));
      box.hidden = false;
    } catch (err) {
      messages.fail(err.message, 'load');
    }
  }

  return {
    name: 'confusion',
    cell: () => cell,
    restore(chosen) { cell = chosen; },
    opened: load,
    netChanged(byUser) {
      if (byUser) cell = null;
      return load();
    },
    versionLive: (live) => (live ? load() : undefined),
    load,
  };
}
