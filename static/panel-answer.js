// The answer: the digit read and how sure (the compact row beside the pad), the confidence of
// every digit, and the 28x28 image the network sees.

import { $, confidence, el, percent, whoAnswers } from './dom.js';

const SIZE = 28;
const DRAW_FIRST = 'Draw a digit to see what the network thinks.';

export function answerPanel() {
  const label = $('#label');
  const sure = $('#confidence');
  const by = $('#answered-by');
  const bars = $('#bars');
  const seen = $('#seen');
  const seenFigure = $('#seen-figure');
  for (let digit = 0; digit < 10; digit += 1) {
    bars.append(el('li', {}, el('span', { class: 'digit', text: digit }),
      el('span', { class: 'track' }, el('span', { class: 'fill' })),
      el('span', { class: 'pct', text: '–' })));
  }

  function showSeen(input) {
    const context = seen.getContext('2d');
    const image = context.createImageData(SIZE, SIZE);
    (input || []).flat().forEach((v, i) => image.data.fill(Math.round(255 * v), 4 * i, 4 * i + 3));
    for (let i = 3; i < image.data.length; i += 4) image.data[i] = 255;
    context.putImageData(image, 0, 0);
    seenFigure.classList.toggle('empty', !input);
  }

  return {
    answer({ label: read, predictions, model, input, unsure }) {
      const confidences = new Array(10).fill(0);
      for (const p of predictions) confidences[p.label] = p.confidence;
      label.textContent = read;
      // Not sure: say why in words; the digit stays, greyed, as a guess.
      label.classList.toggle('unsure', !!unsure);
      sure.classList.toggle('unsure', !!unsure);
      sure.textContent = unsure
        ? `Not sure: ${unsure}. Best guess ${read} (${confidence(confidences[read])}).`
        : `${confidence(confidences[read])} sure it is a ${read}`;
      by.textContent = `Answered by ${whoAnswers(model)}.`;
      [...bars.children].forEach((row, digit) => {
        row.classList.toggle('top', digit === read);
        row.querySelector('.fill').style.width = percent(confidences[digit], 2);
        row.querySelector('.pct').textContent = confidence(confidences[digit]);
        row.setAttribute('aria-label', `${digit}: ${confidence(confidences[digit])}`);
      });
      if (input) showSeen(input);
    },
    cleared(reason = DRAW_FIRST) {
      label.textContent = '?';
      label.classList.remove('unsure');
      sure.classList.remove('unsure');
      sure.textContent = reason;
      by.textContent = '';
      for (const row of bars.children) {
        row.classList.remove('top');
        row.querySelector('.fill').style.width = '0';
        row.querySelector('.pct').textContent = '–';
        row.removeAttribute('aria-label');
      }
      showSeen(null);
    },
  };
}
