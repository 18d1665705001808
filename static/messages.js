// Messages: a slot of the page (a role=status line and a role=alert line in reserved space,
// so that a message never moves or covers anything). News goes when the next action starts;
// an error goes when its source succeeds or stops being true (clear(source) on every slot).

import { el, words } from './dom.js';

const slots = [];

export function slot(status, error) {
  let source = null;  // what showed the error, so that its next success clears it
  const self = {
    say(text, details) {
      status.replaceChildren(...words(text), ...(details ? [' ', el('details', {},
        el('summary', { text: 'Details' }), el('p', { text: details }))] : []));
      self.clear();
    },
    fail(text, from = 'action') {
      status.replaceChildren();  // news of an earlier step would contradict the error
      error.replaceChildren(...words(text));
      error.hidden = false;
      source = from;
    },
    clear(from) {
      if (from && from !== source) return;
      error.hidden = true;
      error.textContent = '';
      source = null;
    },
    quiet() {
      status.replaceChildren();
    },
  };
  slots.push(self);
  return self;
}

// An error no longer true anywhere (e.g. "busy training" once the training ended).
export const clearEverywhere = (source) => slots.forEach((s) => s.clear(source));
