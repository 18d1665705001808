// Predictions: throttled while drawing, at most one request in flight; an answer for a
// drawing that was cleared or undone meanwhile is dropped.

import { api } from './api.js';
import { $ } from './dom.js';

const PREDICT_EVERY_MS = 150;  // live predictions while drawing, at most this often

export function createPredictor({ pad, request, onAnswer, onNone, onError }) {
  const busy = $('#prediction');
  let wanted = false;
  let inFlight = false;
  let lastSent = -Infinity;
  let timer = null;

  // aria-busy says an answer for the latest drawing is still coming.
  function pump() {
    busy.setAttribute('aria-busy', String(inFlight || (wanted && !pad.empty)));
    if (!wanted || inFlight || timer || pad.empty) return;
    const wait = lastSent + PREDICT_EVERY_MS - performance.now();
    if (wait > 0) {
      timer = setTimeout(() => { timer = null; pump(); }, wait);
      return;
    }
    wanted = false;
    inFlight = true;
    lastSent = performance.now();
    ask().finally(() => { inFlight = false; pump(); });
  }

  async function ask() {
    const asked = pad.generation;
    const image = pad.image();
    try {
      const answer = await api.predict({ image, return_input: true, ...request() });
      if (asked === pad.generation) onAnswer(answer, image);
    } catch (err) {
      if (asked !== pad.generation) return;
      if (err.status === 422) onNone('No digit found yet: draw a bit more.');
      else onError(err);
    }
  }

  return {
    want() {
      wanted = true;
      pump();
    },
  };
}
