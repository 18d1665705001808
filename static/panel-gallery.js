// Your drawings: the kept ones, newest first, each with what the chosen net reads now (it
// may have learned since the drawing was kept). A drawing judged mislabelled (by nets that
// never learned from it) says why: on the class net it waits for the teacher's Approve or
// Reject; on one's own net (which trains on it regardless) the page asks whether to keep it.

import { api } from './api.js';
import { $, el } from './dom.js';

const GALLERY = 24;  // newest drawings shown

export function galleryPanel({ messages, net, mine }) {
  const title = $('#samples-title');
  const info = $('#samples-info');
  const list = $('#gallery');
  const keptKey = () => `btf-kept-${mine()}`;  // own drawings whose question was answered "keep"

  function kept() {
    try { return new Set(JSON.parse(localStorage.getItem(keptKey()) || '[]')); } catch {
      return new Set();
    }
  }

  function keep(id) {
    const ids = kept().add(id);
    try { localStorage.setItem(keptKey(), JSON.stringify([...ids].slice(-500))); } catch { /* */ }
    load().catch((err) => messages.fail(err.message, 'load'));
  }

  async function review(id, verdict) {
    try {
      await api.review(id, verdict);
      await load();
    } catch (err) {
      messages.fail(err.message);
    }
  }

  function doubt(sample) {
    const button = (text, label, onclick) => el('button', { type: 'button', text,
      'aria-label': `${label} drawing #${sample.id}`, onclick });
    if (mine()) {
      if (kept().has(sample.id)) return [];
      const seen = sample.reads_as ?? '?';
      return [el('p', { class: 'reason', role: 'note',
        text: `You labelled this ${sample.label}; it looks like a ${seen} — keep it?` }),
      el('span', { class: 'review' }, button('Keep', 'Keep', () => keep(sample.id)))];
    }
    return [el('p', { class: 'reason', role: 'note',
      text: `Held back from the class net: ${sample.reason}.` }),
    el('span', { class: 'review' },
      button('Approve', 'Approve', () => review(sample.id, 'approve')),
      button('Reject', 'Reject', () => review(sample.id, 'reject')))];
  }

  async function item(sample) {
    const caption = el('span');
    const li = el('li', { dataset: { label: sample.label } },
      el('img', { src: api.sampleImage(sample.id), width: 56, height: 56,
        alt: `drawing #${sample.id}, a ${sample.label}` }),
      caption,
      ...(sample.suspect ? doubt(sample) : []),
      el('button', { type: 'button', text: 'Delete',
        'aria-label': `Delete drawing #${sample.id}`, onclick: () => remove(sample.id) }));
    if (sample.suspect) li.classList.add('suspect');
    try {
      const url = await api.sampleDataUrl(sample.id);
      const answer = await api.predict({ image: url, pretrained: net() });
      const right = answer.label === sample.label;
      li.classList.add(right ? 'right' : 'wrong');
      li.dataset.read = answer.label;
      caption.textContent = `a ${sample.label} · reads ${answer.label} ${right ? '✓' : '✗'}`;
    } catch {
      caption.textContent = `a ${sample.label}`;
    }
    return li;
  }

  async function remove(id) {
    try {
      await api.deleteSample(id);
      await load();
    } catch (err) {
      messages.fail(err.message);
    }
  }

  async function load() {
    let answer;
    try {
      answer = await api.samples(GALLERY);
    } catch (err) {
      if (err.status !== 401) throw err;
      // A server with a token (a class): visitors draw and read, the teacher keeps drawings.
      title.textContent = 'Your drawings';
      info.hidden = false;
      info.textContent = 'On this server, keeping drawings needs its token (ask the teacher).';
      list.replaceChildren();
      return;
    }
    const { total, samples } = answer;
    title.textContent = `Your drawings (${total})`;
    info.hidden = total > 0;
    list.replaceChildren(...await Promise.all(samples.map(item)));
  }

  return { load, netChanged: load, versionLive: load };
}
