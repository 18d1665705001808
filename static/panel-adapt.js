// "Teach it my handwriting": a mode of one's own net (made when there is none). It asks for
// each digit in turn, keeps every drawing with that digit (POST /samples on one's own net),
// and after the first round asks for more of the digits GET /nets/{name}/ask puts first (the
// net reads them worst or is least sure of them). "Adapt my net" then trains the net on its
// drawings (/train with samples) and says, before and after, how many of the learner's
// drawings it reads right; a worse adaptation is not made current, and it says why.
// While the mode is open it takes the place of the Right / digit buttons beside the pad.

import { api } from './api.js';
import { $, el, onPress, percent, plural } from './dom.js';

const ROUND = 5;  // drawings of every digit in the first round (unless ask says its "each")
const MORE = 3;  // then this many more of each of the digits the net needs most
const NEEDY = 3;  // how many of ask's digits get more
const DIGITS = [...Array(10).keys()];

// "48 of your 50 drawings": ask's per_digit summed.
function total(perDigit) {
  const all = Object.values(perDigit ?? {});
  return { drawings: all.reduce((n, d) => n + d.drawings, 0),
    right: all.reduce((n, d) => n + d.right, 0) };
}

export function adaptPanel({ messages, mine, useMine, kept, replaced, saveState }) {
  const group = $('#adapt');
  const teach = $('#teach');
  const prompt = $('#adapt-prompt');
  const count = $('#adapt-count');
  const bar = $('#adapt-progress');
  const chips = $('#adapt-digits');
  const keepButton = $('#adapt-keep');
  const skipButton = $('#adapt-skip');
  const undoButton = $('#adapt-undo');
  const runButton = $('#adapt-run');
  const training = $('#adapt-training');
  const openButton = $('#adapt-open');

  let on = false;
  let each = ROUND;  // drawings of every digit in the first round
  let counts = DIGITS.map(() => 0);  // drawings of each digit the net holds
  let targets = DIGITS.map(() => ROUND);
  let more = [];  // the digits asked for again after the first round, most needed first
  let planned = false;  // the first round is over and `more` was asked for
  let skipped = new Set();
  let done = [];  // this visit's kept drawings, {id, label}, for Undo
  let digit = null;  // the digit asked for now (null: nothing more to ask)
  let shown = null;  // the image of the drawing on the pad, once it has an answer
  let busy = false;  // a keep, an undo or an adaptation is under way

  const wanted = (d, target) => counts[d] < target && !skipped.has(d);
  const firstRoundDone = () => !DIGITS.some((d) => wanted(d, each));

  // The next digit to ask for: the first round in order, then the ones ask put first.
  async function next() {
    digit = DIGITS.find((d) => wanted(d, each)) ?? null;
    if (digit === null && !planned) await plan();
    digit ??= more.find((d) => wanted(d, targets[d])) ?? null;
    show();
  }

  // After the first round: more of the digits the net reads worst or is least sure of.
  async function plan() {
    const { ask } = await api.ask(mine());
    planned = true;
    more = ask.slice(0, NEEDY);
    for (const d of more) targets[d] = Math.max(targets[d], counts[d] + MORE);
  }

  function show() {
    training.hidden = true;  // an adaptation's bar stays full until the next drawing
    const goal = targets.reduce((a, b) => a + b, 0);
    const have = DIGITS.reduce((n, d) => n + Math.min(counts[d], targets[d]), 0);
    if (digit === null) {
      prompt.textContent = planned ? 'All asked drawings are kept: adapt your net to them.'
        : 'Every digit skipped: draw some, or adapt your net to the drawings it has.';
    } else {
      const again = counts[digit] >= each ? ' (your net needs more of these)' : '';
      prompt.textContent = `Draw a ${digit} the way you write it${again}`;
    }
    count.textContent = (digit === null ? '' : `${digit}: ${counts[digit]} of `
      + `${targets[digit]} · `) + `${have} of ${goal} done`;
    bar.value = goal ? have / goal : 0;
    chips.replaceChildren(...DIGITS.map((d) => el('li', {
      class: [d === digit ? 'now' : '', counts[d] >= targets[d] ? 'full' : '',
        skipped.has(d) ? 'skipped' : ''].join(' ').trim() || null,
      'aria-current': d === digit ? 'step' : null,
    }, el('b', { text: d }), `${counts[d]}/${targets[d]}`)));
    keepButton.textContent = digit === null ? 'Keep' : `Keep this ${digit}`;
    enable();
  }

  function enable() {
    keepButton.disabled = busy || !shown || digit === null;
    skipButton.disabled = busy || digit === null;
    undoButton.disabled = busy || done.length === 0;
    runButton.disabled = busy || !firstRoundDone() || counts.every((n) => n === 0);
    runButton.classList.toggle('primary', digit === null);
    keepButton.classList.toggle('primary', digit !== null);
  }

  // Holds the buttons while a request is under way; a failure is said in the mode's slot.
  async function step(work) {
    if (busy) return;
    busy = true;
    enable();
    try {
      await work();
    } catch (err) {
      messages.fail(err.message);
    } finally {
      busy = false;
      enable();
    }
  }

  const keep = () => step(async () => {
    if (!shown || digit === null) return;
    const label = digit;
    const { status, data: sample } = await api.keep(shown.image, label, false);
    if (status === 200) {  // the same image bytes were kept before
      messages.say(`This drawing is already kept (as a ${sample.label}): draw it again.`);
    } else {
      counts[label] += 1;
      done.push({ id: sample.id, label });
      messages.say(`Kept your ${label}` + (sample.predicted === label
        ? ': your net read it right.' : `: your net read a ${sample.predicted}.`));
    }
    kept(sample);  // the pad is cleared for the next one
    await next();
  });

  const undo = () => step(async () => {
    const last = done.pop();
    if (!last) return;
    try {
      await api.deleteSample(last.id);
    } catch (err) {
      if (err.status !== 404) {  // (404: it was deleted already, in the gallery)
        done.push(last);
        throw err;
      }
    }
    counts[last.label] = Math.max(0, counts[last.label] - 1);
    skipped.delete(last.label);
    messages.say(`Took back your last ${last.label}.`);
    kept(null);
    await next();
  });

  const skip = () => step(async () => {
    if (digit === null) return;
    skipped.add(digit);
    messages.say(`Skipped the ${digit}s.`);
    await next();
  });

  // Adapts the net to its drawings, with progress from its /train/events; then says how many
  // of the learner's drawings it reads right, before and after.
  const adapt = () => step(async () => {
    const name = mine();
    const before = total((await api.ask(name)).per_digit);
    messages.say(`Adapting your net to your ${plural(before.drawings, 'drawing')}…`);
    training.hidden = false;
    training.value = 0;
    const events = api.trainEvents();
    const part = ({ epoch, epochs, batch, batches }) => (epoch - 1 + batch / batches) / epochs;
    events.addEventListener('progress', (event) => {
      const p = JSON.parse(event.data);
      if (p.epochs && p.batches) training.value = part(p);
    });
    events.addEventListener('epoch', (event) => {
      const { epoch, epochs } = JSON.parse(event.data);
      if (epochs) training.value = epoch / epochs;
    });
    events.addEventListener('queued', (event) => {
      const { position } = JSON.parse(event.data);
      messages.say(`Waiting for ${plural(position, 'training')} ahead of yours…`);
    });
    // The stream first says the net's status: from then on it sends this job's steps.
    await new Promise((resolve) => {
      events.addEventListener('status', resolve, { once: true });
      events.addEventListener('error', resolve, { once: true });
    });
    let result;
    try {
      result = await api.adapt();
    } catch (err) {
      training.hidden = true;
      throw err;
    } finally {
      events.close();
    }
    const after = total((await api.ask(name)).per_digit);
    messages.say(said(result, before, after), heldOut(result));
    replaced();  // versions, descriptions and answers of the changed net
  });

  // Before and after, in a student's words.
  function said(result, before, after) {
    if (result.promoted === false) {  // the gate held it back (service/gate.py)
      const reason = result.gate?.reason;
      return 'The adapted net was not made your net' + (reason ? `, because ${reason}` : '')
        + `. Your net answers as before: it still reads ${after.right} of your `
        + `${after.drawings} drawings right. The adapted one is kept as version `
        + `${result.version}; the versions list offers "Make live" to use it anyway.`;
    }
    return `It now reads ${after.right} of your ${after.drawings} drawings right `
      + `(was ${before.right}).`;
  }

  // The drawings it never learns from (every fifth one is kept aside to check it).
  function heldOut({ before, after }) {
    const n = after?.samples_count;
    if (!n || after.samples == null) return undefined;
    const right = (figures) => figures.samples_right ?? Math.round(figures.samples * n);
    return `Of your ${plural(n, 'drawing')} kept aside to check it (it never learns from `
      + `those), it reads ${right(after)} right`
      + (before?.samples == null ? '.' : ` (was ${right(before)}).`)
      + ` On MNIST's validation images: ${percent(after.mnist)}`
      + (before?.mnist == null ? '.' : ` (was ${percent(before.mnist)}).`);
  }

  async function open() {
    if (on) return;
    messages.clear();
    await useMine();  // one's own net answers and learns (made now when there is none)
    const asked = await api.ask(mine());
    const perDigit = asked.per_digit;
    each = asked.each ?? ROUND;
    counts = DIGITS.map((d) => perDigit[d]?.drawings ?? 0);
    targets = DIGITS.map(() => each);
    more = [];
    planned = false;
    skipped = new Set();
    done = [];
    on = true;
    group.hidden = false;
    teach.hidden = openButton.hidden = true;
    saveState();
    await next();
    prompt.focus({ preventScroll: true });  // (the button that opened it is gone)
  }

  function close() {
    if (!on) return;
    on = false;
    group.hidden = true;
    teach.hidden = openButton.hidden = false;
    saveState();
  }

  onPress(keepButton, keep);  // (beside the pad: a tap right after a stroke counts)
  onPress(skipButton, skip);
  onPress(undoButton, undo);
  runButton.addEventListener('click', adapt);
  $('#adapt-close').addEventListener('click', close);
  openButton.addEventListener('click', () => open().catch((err) => {
    close();
    messages.fail(err.message);
  }));

  return {
    name: 'adapt',
    isOpen: () => on,
    open,
    netChanged() {  // the mode is one's own net's: the class net chosen ends it
      if (on && !mine()) close();
    },
    answer(answer, image) {
      shown = { image };
      if (on) enable();
    },
    cleared() {
      shown = null;
      if (on) enable();
    },
  };
}
