// The learning curve: validation accuracy (y) per epoch (x), as an inline SVG; and the
// playground's curves (drawLines).

import { $, el, percent } from './dom.js';

const CHART = { width: 320, height: 170, left: 40, right: 12, top: 10, bottom: 30 };
const svg = (name, attributes, content) => (typeof content === 'object'
  ? el(name, { svg: true, ...attributes }, content)
  : el(name, { svg: true, ...attributes, text: content }));

export function drawChart(history) {
  const chart = $('#chart');
  const points = history.filter((h) => h.val_accuracy != null);
  chart.replaceChildren(svg('title', { id: 'chart-title' }, points.length
    ? `Validation accuracy per epoch; last ${percent(points[points.length - 1].val_accuracy)}`
    : 'Validation accuracy per epoch: no training yet'));
  const { width, height, left, right, top, bottom } = CHART;
  if (!points.length) {
    chart.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle',
      class: 'empty' }, 'Train to see the validation accuracy per epoch'));
    return;
  }
  const first = points[0].epoch;
  const last = Math.max(points[points.length - 1].epoch, first + 1);
  // From the nearest 10% below the worst epoch up to 100%.
  const low = Math.min(0.9, Math.floor(10 * Math.min(...points.map((p) => p.val_accuracy))) / 10);
  const x = (epoch) => left + (epoch - first) / (last - first) * (width - left - right);
  const y = (acc) => top + (1 - acc) / (1 - low) * (height - top - bottom);
  for (const acc of [low, (low + 1) / 2, 1]) {
    chart.append(svg('line', { x1: left, x2: width - right, y1: y(acc), y2: y(acc),
      class: 'grid' }));
    chart.append(svg('text', { x: left - 5, y: y(acc) + 4, 'text-anchor': 'end',
      class: 'tick' }, percent(acc, 0)));
  }
  chart.append(svg('line', { x1: left, x2: left, y1: top, y2: height - bottom,
    class: 'axis' }));
  chart.append(svg('text', { x: left, y: height - 8, class: 'tick' }, `epoch ${first}`));
  if (points.length > 1) {
    chart.append(svg('text', { x: width - right, y: height - 8, 'text-anchor': 'end',
      class: 'tick' }, `epoch ${last}`));
  }
  chart.append(svg('polyline', { class: 'curve',
    points: points.map((p) => `${x(p.epoch)},${y(p.val_accuracy)}`).join(' ') }));
  for (const p of points) {
    chart.append(svg('circle', { cx: x(p.epoch), cy: y(p.val_accuracy), r: 3.5 },
      svg('title', {}, `epoch ${p.epoch}: ${percent(p.val_accuracy)}`)));
  }
}

// Several curves on one chart (the playground's loss and accuracy): series are
// [{name, points: [[epoch, value], ...], dashed}], drawn into `chart` (an <svg> with the
// viewBox of CHART) from `low` to `high` (null: the data's), `format` labelling the values.
export function drawLines(chart, series, { what, format, low = null, high = null }) {
  const drawn = series.filter((s) => s.points.length);
  const all = drawn.flatMap((s) => s.points);
  const last = (s) => s.points[s.points.length - 1][1];
  chart.replaceChildren(svg('title', {}, all.length
    ? `${what} per epoch; last ${drawn.map((s) => `${s.name} ${format(last(s))}`).join(', ')}`
    : `${what} per epoch: no training yet`));
  const { width, height, left, right, top, bottom } = CHART;
  if (!all.length) {
    chart.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle',
      class: 'empty' }, `Train to see the ${what.toLowerCase()} per epoch`));
    return;
  }
  const first = Math.min(...all.map((p) => p[0]));
  const end = Math.max(...all.map((p) => p[0]), first + 1);
  const bottomValue = low ?? Math.min(...all.map((p) => p[1]));
  const topValue = Math.max(high ?? Math.max(...all.map((p) => p[1])), bottomValue + 1e-9);
  const x = (epoch) => left + (epoch - first) / (end - first) * (width - left - right);
  const y = (v) => top + (topValue - v) / (topValue - bottomValue) * (height - top - bottom);
  for (const v of [bottomValue, (bottomValue + topValue) / 2, topValue]) {
    chart.append(svg('line', { x1: left, x2: width - right, y1: y(v), y2: y(v), class: 'grid' }));
    chart.append(svg('text', { x: left - 5, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' },
      format(v)));
  }
  chart.append(svg('line', { x1: left, x2: left, y1: top, y2: height - bottom, class: 'axis' }));
  chart.append(svg('text', { x: left, y: height - 8, class: 'tick' }, `epoch ${first}`));
  chart.append(svg('text', { x: width - right, y: height - 8, 'text-anchor': 'end',
    class: 'tick' }, `epoch ${end}`));
  drawn.forEach((s, i) => {
    const group = svg('g', { class: `series series-${i}`, 'data-series': s.name });
    group.append(svg('polyline', { class: 'curve',
      points: s.points.map(([e, v]) => `${x(e)},${y(v)}`).join(' ') }),
    ...s.points.map(([e, v]) => svg('circle', { cx: x(e), cy: y(v), r: 3 },
      svg('title', {}, `${s.name}, epoch ${e}: ${format(v)}`))));
    chart.append(group);
  });
}
