// The drawing page: draw a digit, see what the network answers, keep drawings, train it live.
// Build-free ES modules, no libraries. This module creates the pad, the predictor and the
// panels, and tells every panel what happened; panels never call each other. A panel is an
// object with any of these hooks:
//   answer(answer, image)  a new answer for the drawing on the pad (image: the PNG sent)
//   cleared(reason)        no answer on screen: the pad was cleared, or no digit was found
//   netChanged(byUser)     another network was chosen to answer (byUser: in the list)
//   versionLive(isLive)    the trainable net changed (train, reset, pretrain, go back,
//                          another tab's job, or one's own net and the class net swapped);
//                          isLive: the chosen network is the trainable one, not a shipped one
// The trainable net is one's own (panel-nets.js) or the class net ("live"); api.js sends its
// name with every request, and /models' "live" is replaced here by its description.

import { api } from './api.js';
import { $, $$ } from './dom.js';
import { slot } from './messages.js';
import { createPad } from './pad.js';
import { adaptPanel } from './panel-adapt.js';
import { answerPanel } from './panel-answer.js';
import { comparePanel } from './panel-compare.js';
import { confusionPanel } from './panel-confusion.js';
import { galleryPanel } from './panel-gallery.js';
import { hiddenPanel } from './panel-hidden.js';
import { insidePanel } from './panel-inside.js';
import { modelPanel } from './panel-model.js';
import { netsPanel } from './panel-nets.js';
import { playgroundPanel } from './panel-playground.js';
import { teachPanel } from './panel-teach.js';
import { trainingPanel } from './panel-training.js';
import { createPredictor } from './predictor.js';
import * as address from './state.js';
import * as weights from './weights.js';

const messages = slot($('#status'), $('#error'));
const sections = $$('details[data-panel]');
const isOpen = (name) => sections.some((d) => d.dataset.panel === name && d.open);

let models = null;  // the last answer of GET /models
let version = 0;  // of the trainable net, as this page has seen it
const getModels = () => models;

const nets = netsPanel({ messages, switched, replaced });
const whose = nets.whose;
const makes = () => nets.address() === null;  // no own net yet: a change makes one
const model = modelPanel({ models: getModels, changed: () => netChanged(true), whose });
const { net } = model;
const weightsOf = () => weights.load(net(), net() === null
  ? `${nets.active() ?? 'live'}:${version}` : 'shipped')
  .catch((err) => { messages.fail(err.message, 'load'); return null; });
const playground = playgroundPanel({ models: getModels, saveState, whose, active: nets.active,
  net, adopt: async (name) => { await nets.restore(name); await switched(); } });
const training = trainingPanel({ models: getModels, replaced, own: nets.own, makes, whose,
  opened: playground.listen });
const confusion = confusionPanel({ net, isOpen: () => isOpen('confusion'), messages,
  saveState });
const gallery = galleryPanel({ messages, net, mine: nets.active });
const kept = () => {
  pad.clear();  // ready for the next digit
  gallery.load().catch((err) => messages.fail(err.message, 'load'));
};
const adapt = adaptPanel({ messages, mine: nets.active, kept, replaced, saveState,
  async useMine() {  // the mode teaches one's own net: it answers, not a shipped model
    await nets.useMine();
    if (net() !== null) {
      model.choose('live');
      await netChanged(true);
    }
  } });
const panels = [
  answerPanel(),
  nets,
  teachPanel({ messages, mine: nets.active, kept }),
  adapt,
  gallery,
  model,
  training,
  comparePanel({ models: getModels, net, training, isOpen: () => isOpen('compare'), messages }),
  insidePanel({ weightsOf }),
  confusion,
  hiddenPanel({ weightsOf }),
  playground,
];

// Every panel's hook, called at once (in order); a failed load is shown, in words.
function each(hook, ...args) {
  const fail = (err) => messages.fail(err.message, 'load');
  return Promise.all(panels.map((panel) => {
    try {
      return Promise.resolve(panel[hook]?.(...args)).catch(fail);
    } catch (err) {
      return fail(err);
    }
  }));
}

const predictor = createPredictor({
  pad: { get generation() { return pad.generation; }, get empty() { return pad.empty; },
    image: () => pad.image() },
  request: () => ({ pretrained: net(), return_activations: isOpen('inside') }),
  onAnswer(answer, image) {
    messages.clear('predict');
    each('answer', answer, image);
  },
  onNone: (reason) => each('cleared', reason),
  onError: (err) => messages.fail(err.message, 'predict'),
});

const pad = createPad($('#pad'), {
  onStart: () => messages.quiet(),  // the last drawing's news is over
  onDraw: () => predictor.want(),
  onEmpty: () => each('cleared'),
});

function saveState() {
  address.write({ net: nets.address(), pretrained: net(), cell: confusion.cell(),
    open: [...sections.filter((d) => d.open).map((d) => d.dataset.panel),
      ...(adapt.isOpen() ? ['adapt'] : [])],
    setup: playground.setup(), hide: playground.hidden() });
}

function restoreState() {
  const state = address.read();
  model.choose(state.model);
  if (state.open) for (const d of sections) d.open = state.open.includes(d.dataset.panel);
  confusion.restore(state.cell);
  if (state.open?.includes('adapt')) adapt.open().catch((err) => messages.fail(err.message));
  playground.restore(state);
}

// byUser: picked in the list (not read from the address), which also unselects a cell.
async function netChanged(byUser = false) {
  predictor.want();
  const loaded = each('netChanged', byUser);
  saveState();  // after the panels took note (a cell unselected)
  await loaded;
}

// After the live net changed: new descriptions, weights and answers (calls that come
// together load once).
let refreshing = null;
function replaced({ toLive = false } = {}) {
  if (toLive) model.choose('live');
  predictor.want();
  refreshing ??= Promise.resolve().then(async () => {
    refreshing = null;
    try {
      await loadModels();
      version += 1;
      await each('versionLive', net() === null);
      messages.clear('load');
    } catch (err) {
      messages.fail(err.message, 'load');
    }
  });
}

sections.forEach((section) => section.addEventListener('toggle', () => {
  saveState();
  if (!section.open) return;
  if (section.dataset.panel === 'confusion') confusion.load();
  else predictor.want();  // the drawing's rows or activations were not asked for while shut
}));

// /models, its "live" being the trainable net: one's own when it answers.
async function loadModels() {
  const shared = await api.models();
  const own = nets.active();
  models = own ? { ...shared, live: await api.net(own) } : shared;
}

// One's own net and the class net swapped (or one's own was made): every request goes with
// the new one, and every panel shows it.
async function switched() {
  api.useNet(nets.active());
  model.choose('live');
  training.listen();
  saveState();
  replaced();
  await refreshing;
  await netChanged();
}

window.addEventListener('hashchange', async () => {
  const state = address.read();
  if ((state.net ?? null) !== nets.address()) {  // a link to another net, pasted here
    await nets.restore(state.net);
    await switched();
  }
  restoreState();
  netChanged();
});

async function start() {
  each('cleared');
  try {
    await nets.restore(address.read().net);
    api.useNet(nets.active());
    await loadModels();
  } catch (err) {
    messages.fail(err.message, 'load');
    return;
  }
  model.versionLive();
  training.versionLive();
  restoreState();
  await netChanged();
  nets.load();
  training.listen();
}

start();
