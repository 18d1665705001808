// Your drawings: the kept ones, newest first, each with what the chosen net reads now (it
// may have learned since the drawing was kept).

import { api } from './api.js';
import { $, el } from './dom.js';

const GALLERY = 24;  // newest drawings shown

export function galleryPanel({ messages, net }) {
  const title = $('#samples-title');
  const info = $('#samples-info');
  const list = $('#gallery');

  async function item(sample) {
    const caption = el('span');
    const li = el('li', { dataset: { label: sample.label } },
      el('img', { src: api.sampleImage(sample.id), width: 56, height: 56,
        alt: `drawing #${sample.id}, a ${sample.label}` }),
      caption,
      el('button', { type: 'button', text: 'Delete',
        'aria-label': `Delete drawing #${sample.id}`, onclick: () => remove(sample.id) }));
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
