// Keeping a drawing: "Right" or the digit it is (POST /samples); the pad is cleared after,
// ready for the next digit.

import { api } from './api.js';
import { $, el, onPress } from './dom.js';

export function teachPanel({ messages, kept, mine }) {
  const right = $('#right');
  const digits = $('#digit-buttons');
  let shown = null;  // {image, label} of the drawing whose answer is on screen

  for (let digit = 0; digit < 10; digit += 1) {
    const button = el('button', { type: 'button', text: digit, disabled: true,
      'aria-label': `It's a ${digit}` });
    onPress(button, () => keep(digit));
    digits.append(button);
  }
  onPress(right, () => shown && keep(shown.label));

  function enable(on) {
    right.disabled = !on;
    for (const button of digits.children) button.disabled = !on;
  }

  async function keep(label) {
    if (!shown) return;
    try {
      const share = !$('#share-row').hidden && $('#share').checked;
      const { status, data: sample } = await api.keep(shown.image, label, share);
      if (status === 200) {  // the same drawing was kept before
        messages.say(`This drawing is already kept, as a ${sample.label} `
          + `(drawing #${sample.id}).`);
      } else {
        messages.say(`Kept drawing #${sample.id} as a ${label}`
          + (sample.predicted === label ? ' (the net read it right)'
            : ` (the net read a ${sample.predicted})`)
          + (share ? ', shared with the class net' : '') + '. Draw the next one.');
      }
      kept(sample);
    } catch (err) {
      messages.fail(err.message);
    }
  }

  return {
    netChanged() {  // kept with one's own net: it may also go to the class net
      $('#share-row').hidden = !mine();
    },
    answer(answer, image) {
      shown = { image, label: answer.label };
      enable(true);
    },
    cleared() {
      shown = null;
      enable(false);
    },
  };
}
