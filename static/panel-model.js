// The network that answers: the trainable one (one's own or the class net) or a shipped one,
// what it is and how it was trained.

import { $, describe, percent, plural } from './dom.js';

export function modelPanel({ models, changed, whose }) {
  const picker = $('#model-choice');
  const info = $('#model-info');
  const recipe = $('#recipe');
  picker.addEventListener('change', changed);

  function showInfo() {
    const version = picker.value === '' ? null : Number(picker.value);
    const { live, pretrained } = models();
    const m = version === null ? null : pretrained.find((p) => p.version === version);
    info.textContent = m ? describe(m.sizes)
        + (m.test_accuracy == null ? '.' : `, ${percent(m.test_accuracy)} test accuracy.`)
      : `${describe(live.sizes)}, ` + (live.epochs === 0 ? 'untrained.'
        : `trained ${plural(live.epochs, 'epoch')}` + (live.validation_accuracy == null ? '.'
          : `, ${percent(live.validation_accuracy)} validation accuracy.`));
    recipe.hidden = !m?.recipe;
    recipe.querySelector('p').textContent = m?.recipe ?? '';
  }

  return {
    // The chosen shipped version, null for the live net.
    net: () => (picker.value === '' ? null : Number(picker.value)),
    choose(model) {  // 'live' or 'v6', from the address; an unknown one is ignored
      if (model === 'live') picker.value = '';
      else if (model && [...picker.options].some((o) => `v${o.value}` === model)) {
        picker.value = model.slice(1);
      }
    },
    versionLive() {
      const { live, pretrained } = models();
      const chosen = picker.value;
      const name = whose() === 'your net' ? 'My net' : 'Class net';
      const options = [new Option(`${name} · ${describe(live.sizes)}`, '')];
      for (const m of pretrained) {
        options.push(new Option(`v${m.version}${m.best ? ' (best)' : ''} · ${describe(m.sizes)}`
          + (m.test_accuracy == null ? '' : ` · ${percent(m.test_accuracy)} test`),
        String(m.version)));
      }
      picker.replaceChildren(...options);
      picker.value = options.some((o) => o.value === chosen) ? chosen : '';
      showInfo();
    },
    netChanged: showInfo,
  };
}
