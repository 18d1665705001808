// Whose net: the learner's own net (made on the first Train, Reset or Pretrain, remembered by
// this browser, named in the address so that a link opens it elsewhere) or the class net,
// shared by everyone on this server. And that net's versions, each with what made it and a
// button to go back to it.

import { api } from './api.js';
import { $, el, percent, plural } from './dom.js';
import { slot } from './messages.js';

const REMEMBERED = 'better-tensorflow:net';  // localStorage: this browser's own net
const CLASS = 'class';  // the address's "net" when the class net was chosen over one's own

// What a version came from, in a student's words.
function cause(version, before) {
  switch (version.cause) {
    case 'create': return 'made';
    case 'train': {
      const more = before && version.epochs >= before.epochs ? version.epochs - before.epochs
        : null;
      return more ? `trained ${plural(more, 'epoch')}`
        : `trained (${plural(version.epochs, 'epoch')} in all)`;
    }
    case 'reset': return 'reset to an untrained net';
    case 'pretrain': return 'copied from the best pretrained model';
    case 'promote': return `made version ${version.promoted_from} live on purpose`;
    case 'rollback': return version.rolled_back_to
      ? `went back to version ${version.rolled_back_to}` : 'went back to an earlier version';
    default: return version.cause || 'changed';
  }
}

function when(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return date.toDateString() === new Date().toDateString() ? time
    : `${date.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}`;
}

export function netsPanel({ messages, switched, replaced }) {
  const mineButton = $('#use-mine');
  const classButton = $('#use-class');
  const info = $('#whose-info');
  const list = $('#version-list');
  const listInfo = $('#versions-info');
  const title = $('#versions-title');
  const said = slot($('#versions-status'), $('#versions-error'));
  let mine = null;  // this browser's own net, by name
  let onMine = false;  // it answers and trains (else the class net)
  let asked = 0;

  const active = () => (onMine ? mine : null);

  function remember(name) {
    mine = name;
    try {
      if (name) localStorage.setItem(REMEMBERED, name);
      else localStorage.removeItem(REMEMBERED);
    } catch { /* storage off: the address still holds it */ }
  }

  function show() {
    mineButton.setAttribute('aria-pressed', String(onMine));
    classButton.setAttribute('aria-pressed', String(!onMine));
    mineButton.title = mine ? '' : 'Makes you a net of your own: a copy of the class net';
    info.textContent = onMine
      ? 'Your own net answers and trains. Only someone with this page\'s link can see or '
        + 'change it; the class net stays as it is.'
      : 'The class net answers: it is shared by everyone on this server.'
        + (mine ? ' Train, Reset and Pretrain change it for everyone.'
          : ' Train, Reset or Pretrain first make you a net of your own, a copy to change.');
  }

  // The net was deleted or unused too long: say so and answer with the class net.
  function gone() {
    remember(null);
    onMine = false;
    messages.fail('Your own net is gone (it was deleted, or unused for too long): the class '
      + 'net answers now. Train, Reset or Pretrain make you a new one.', 'gone');
    show();
  }

  async function use(wantMine) {
    if (wantMine && !mine) {
      await own('live');
      return;
    }
    if (onMine === wantMine) return;
    onMine = wantMine;
    show();
    await switched();
  }
  mineButton.addEventListener('click', () => use(true).catch((e) => messages.fail(e.message)));
  classButton.addEventListener('click', () => use(false).catch((e) => messages.fail(e.message)));

  // The net a Train, Reset or Pretrain acts on: one's own, made now (from "live" or "fresh")
  // when there is none and the class net was not chosen over it. {made}: just made.
  async function own(from) {
    if (onMine || mine) return { made: false };
    const made = await api.createNet(from);
    remember(made.net);
    onMine = true;
    messages.clear('gone');
    show();
    await switched();
    return { made: true };
  }

  async function load() {
    const name = active() ?? 'live';
    const mineNow = ++asked;
    let answer;
    try {
      answer = await api.versions(name);
    } catch (err) {
      if (mineNow !== asked) return;
      if (err.status === 404 && name !== 'live') {
        gone();
        await switched();
        return;
      }
      listInfo.textContent = err.message;
      list.replaceChildren();
      return;
    }
    if (mineNow !== asked) return;
    title.textContent = onMine ? 'Versions of my net' : 'Versions of the class net';
    const { versions, current } = answer;
    listInfo.textContent = versions.length ? `Every change is a new version; the last `
      + `${plural(answer.kept, 'version')} are kept.` : 'No versions kept yet.';
    list.replaceChildren(...versions.map((v, i) => item(v, versions[i - 1], current))
      .reverse());  // newest first
  }

  function item(v, before, current) {
    const now = v.version === current;
    const candidate = v.promoted === false && !now;
    return el('li', { class: now ? 'current' : null, dataset: { version: v.version } },
      el('span', { class: 'number', text: `Version ${v.version}` }),
      el('span', { class: 'what', text: cause(v, before) }),
      el('span', { class: 'when', text: when(v.created) }),
      el('span', { class: 'accuracy', text: v.validation_accuracy == null ? 'not measured'
        : `${percent(v.validation_accuracy)} validation accuracy` }),
      // A training the gate held back: never live yet, with the reason.
      candidate ? el('span', { class: 'held', text: `not live: ${v.gate?.reason ?? ''}` }) : null,
      now ? el('span', { class: 'tag', text: 'answers now' })
        : el('button', { type: 'button', text: candidate ? 'Make live' : 'Go back to this version',
          'aria-label': `${candidate ? 'Make live' : 'Go back to'} version ${v.version}`,
          onclick: () => back(v.version, candidate) }));
  }

  async function back(version, candidate) {
    const name = active() ?? 'live';
    try {
      const done = await (candidate ? api.promote : api.rollback)(name, version);
      said.say(candidate ? `Version ${version} is live now (as version ${done.version}).`
        : `Went back to version ${version}: the net answers as it did then `
        + `(now version ${done.version}).`);
      replaced();
    } catch (err) {
      if ((err.status === 401 || err.status === 403) && name === 'live') {
        said.fail(`${candidate ? 'Making a version live' : 'Going back'} on the class net is `
          + 'for the teacher: it needs the server\'s token, which this page does not have. '
          + `Your own net can ${candidate ? 'do it' : 'go back'} any time.`);
      } else {
        said.fail(err.message);
      }
    }
  }

  show();
  return {
    name: 'nets',
    active,
    own,
    // Whose net answers, in words: "your net" or "the class net".
    whose: () => (onMine ? 'your net' : 'the class net'),
    // The address's "net": the own net's name, "class" when the class net was chosen over it.
    address: () => (onMine ? mine : mine && CLASS),
    // From the address (a link may name a net) or this browser's memory; a net that is gone
    // is forgotten, in words.
    async restore(fromAddress) {
      let stored = null;
      try { stored = localStorage.getItem(REMEMBERED); } catch { /* storage off */ }
      const name = fromAddress && fromAddress !== CLASS ? fromAddress : stored;
      onMine = !!name && fromAddress !== CLASS;
      mine = name;
      if (name) {
        try {
          await api.net(name);
          remember(name);
        } catch (err) {
          if (err.status === 404) gone();
          else throw err;
        }
      }
      show();
    },
    versionLive: load,
    load,
  };
}
