// The playground: a net of one's own design. The learner chooses its hidden layers and how it
// learns (the library's options, with the server's limits, defaults and choices from /models'
// settings.playground), makes it (POST /nets from "fresh") and trains it (/train with the
// training-time options); each epoch's event redraws the loss and accuracy curves, the
// validation confusion matrix and the first hidden units' pictures. The whole set-up lives in
// the address (state.js), and a teacher's link may hide controls by name (hide=...). The net
// goes out as an NPZ, an ONNX file or a model card, and an NPZ comes in (POST /nets/import).

import { api } from './api.js';
import { drawLines } from './chart.js';
import { $, describe, el, percent, plural } from './dom.js';
import { slot } from './messages.js';
import { drawMatrix } from './panel-confusion.js';
import { unitImage } from './weights.js';

// The optimizer as a learner names it: the library's optimizer with momentum and nesterov.
const OPTIMIZERS = {
  sgd: { label: 'SGD', options: { optimizer: 'sgd', momentum: 0, nesterov: false } },
  momentum: { label: 'SGD + momentum', options: { optimizer: 'sgd', nesterov: false } },
  nesterov: { label: 'SGD + Nesterov', options: { optimizer: 'sgd', nesterov: true } },
  adam: { label: 'Adam', options: { optimizer: 'adam', momentum: 0, nesterov: false } },
};
const WITH_MOMENTUM = ['momentum', 'nesterov'];
// The fields after the shape: [key, label, kind, hint]; each key is also its name in the
// address and in hide=, and (but for optimizer and epochs) the library's option.
const FIELDS = [
  ['activation', 'Activation of the hidden layers', 'select'],
  ['optimizer', 'Optimizer', 'select'],
  ['momentum', 'Momentum', 'number', 'from 0 to below 1'],
  ['learning_rate', 'Learning rate', 'number'],
  ['batch_size', 'Batch size', 'number', 'images per step'],
  ['weight_decay', 'Weight decay (L2)', 'number', '0: none'],
  ['schedule', 'Learning-rate schedule', 'select'],
  ['epochs', 'Epochs to train', 'number'],
];
const SCHEDULES = { constant: 'constant', step: 'step: x0.5 every 10 epochs',
  exponential: 'exponential: x0.95 per epoch', cosine: 'cosine over 50 epochs' };
// Controls a link may hide (hide=name,...): the playground's fields and buttons, and the
// page's own. docs/api.md lists them.
export const HIDEABLE = {
  hidden: ['#pg-shape'],
  ...Object.fromEntries(FIELDS.map(([key]) => [key, [`#pg-${key}-row`]])),
  make: ['#pg-make'],
  train: ['#pg-train'],
  download: ['#pg-take'],
  upload: ['#pg-bring'],
  whose: ['#whose'],
  model: ['label[for="model-choice"]', '#model-choice', '#model-info'],
  reset: ['#reset'],
  pretrain: ['#pretrain'],
  samples: ['label:has(> #with-samples)'],
  versions: ['#versions'],
  compare: ['#compare'],
  confusion: ['#confusion'],
  inside: ['#inside'],
};
const PICTURES = 16;

export function playgroundPanel({ models, adopt, saveState, whose, active, net }) {
  const messages = slot($('#pg-status'), $('#pg-error'));
  const fields = $('#pg-fields');
  const epochLine = $('#pg-epoch');
  const makeButton = $('#pg-make');
  const trainButton = $('#pg-train');
  let offer = null;  // settings.playground: limits, defaults, choices
  let hidden = [];  // the link's hide= names that this page knows
  let history = [];  // this job's epochs, for the curves
  let busy = false;  // this page's own request is under way
  let running = false;  // the chosen net trains (its events say so)

  const input = (key) => $(`#pg-${key}`);
  const layerInputs = () => [...fields.querySelectorAll('.pg-layer input')];

  // -- the form, built once the server's offer is known ----------------------------------

  function row(key, label, kind, hint) {
    const id = `pg-${key}`;
    const control = kind === 'select' ? el('select', { id })
      : el('input', { id, type: 'number', inputmode: key === 'learning_rate'
        || key === 'weight_decay' || key === 'momentum' ? 'decimal' : 'numeric', step: 'any' });
    control.setAttribute('aria-describedby', `${id}-error${hint ? ` ${id}-hint` : ''}`);
    return el('div', { class: 'pg-row', id: `${id}-row`, dataset: { field: key } },
      el('label', { for: id, text: label }), control,
      hint ? el('span', { class: 'hint', id: `${id}-hint`, text: hint }) : null,
      el('p', { class: 'field-error', id: `${id}-error`, role: 'alert', hidden: true }));
  }

  function build() {
    const choices = offer.choices;
    const shape = el('fieldset', { id: 'pg-shape', dataset: { field: 'hidden' } },
      el('legend', { text: 'Shape' }),
      el('div', { class: 'pg-row' },
        el('label', { for: 'pg-layers', text: 'Hidden layers' }),
        el('input', { id: 'pg-layers', type: 'number', min: 0, max: offer.max_hidden_layers,
          step: 1, inputmode: 'numeric', 'aria-describedby': 'pg-hidden-error pg-layers-hint' }),
        el('span', { class: 'hint', id: 'pg-layers-hint',
          text: `0 to ${offer.max_hidden_layers}; each 1 to `
            + `${offer.max_units.toLocaleString('en')} units` })),
      el('ol', { id: 'pg-layers-list', class: 'pg-layers', 'aria-label': 'Units per hidden layer' }),
      el('p', { class: 'field-error', id: 'pg-hidden-error', role: 'alert', hidden: true }));
    const training = el('fieldset', { id: 'pg-training' }, el('legend', { text: 'Learning' }),
      ...FIELDS.map(([key, label, kind, hint]) => row(key, label, kind, hint)));
    fields.replaceChildren(shape, training);
    input('activation').append(...choices.activation.map((a) => el('option', { value: a,
      text: a })));
    input('optimizer').append(...Object.entries(OPTIMIZERS)
      .filter(([, o]) => choices.optimizer.includes(o.options.optimizer))
      .map(([value, o]) => el('option', { value, text: o.label })));
    input('schedule').append(...choices.schedule.map((s) => el('option', { value: s,
      text: SCHEDULES[s] ?? s })));
    input('epochs').min = 1;
    input('epochs').max = offer.max_epochs;
    input('epochs').step = 1;
    input('batch_size').min = 1;
    input('batch_size').step = 1;
    input('momentum').min = 0;
    input('momentum').max = 1;
    input('weight_decay').min = 0;
    $('#pg-layers').addEventListener('input', () => layers(layersWanted()));
    fields.addEventListener('change', changed);
    fields.addEventListener('input', (event) => clearField(fieldOf(event.target)));
  }

  const layersWanted = () => {
    const n = Number($('#pg-layers').value);
    return Number.isInteger(n) ? Math.max(0, Math.min(offer.max_hidden_layers, n)) : 0;
  };

  // Show `count` hidden-layer inputs, keeping the units typed so far.
  function layers(count, units = layerInputs().map((i) => i.value)) {
    const list = $('#pg-layers-list');
    const fallback = units[units.length - 1] || defaults().hidden[0] || 30;
    list.replaceChildren(...Array.from({ length: count }, (_, i) => el('li',
      { class: 'pg-layer' },
      el('label', { for: `pg-units-${i}`, text: `Layer ${i + 1}` }),
      el('input', { id: `pg-units-${i}`, type: 'number', min: 1, max: offer.max_units,
        step: 1, inputmode: 'numeric', value: units[i] ?? fallback,
        'aria-describedby': 'pg-hidden-error' }),
      el('span', { class: 'unit', text: 'units' }))));
  }

  // The server's defaults as the form's values.
  function defaults() {
    const d = offer.defaults;
    const schedule = Array.isArray(d.schedule) ? d.schedule[0] : d.schedule;
    const sizes = models().settings.default_net.sizes;
    const optimizer = d.optimizer === 'sgd' && d.momentum
      ? (d.nesterov ? 'nesterov' : 'momentum') : d.optimizer;
    return { hidden: sizes.slice(1, -1), activation: d.activation, optimizer,
      momentum: d.momentum || 0.9, learning_rate: d.learning_rate, batch_size: d.batch_size,
      weight_decay: d.weight_decay, schedule, epochs: 1 };
  }

  // -- the set-up: the form <-> the address ----------------------------------------------

  // The form's values as the address writes them (words).
  function setup() {
    if (!offer) return {};
    const units = layerInputs().map((i) => i.value.trim());
    const values = { hidden: units.length ? units.join('-') : 'none' };
    for (const [key] of FIELDS) values[key] = input(key).value.trim();
    if (!WITH_MOMENTUM.includes(values.optimizer)) delete values.momentum;
    return values;
  }

  // A set-up from the address over the defaults; a value the form cannot hold is left out.
  function fill(given) {
    const values = { ...defaults() };
    if (given.hidden === 'none') values.hidden = [];
    else if (/^[0-9]{1,6}(-[0-9]{1,6})*$/.test(given.hidden ?? '')) {
      values.hidden = given.hidden.split('-').slice(0, offer.max_hidden_layers);
    }
    for (const [key, , kind] of FIELDS) {
      const value = given[key];
      if (value == null) continue;
      if (kind === 'select' ? [...input(key).options].some((o) => o.value === value)
        : /^[0-9.eE+-]{1,30}$/.test(value)) values[key] = value;
    }
    $('#pg-layers').value = values.hidden.length;
    layers(values.hidden.length, values.hidden.map(String));
    for (const [key] of FIELDS) input(key).value = String(values[key]);
    showMomentum();
  }

  function showMomentum() {
    $('#pg-momentum-row').hidden = !WITH_MOMENTUM.includes(input('optimizer').value);
  }

  function changed(event) {
    if (event?.target === input('optimizer')) showMomentum();
    showNet();
    saveState();
  }

  // Hide the controls a link names (hide=...): kept hidden until another link says otherwise.
  function hide(names) {
    hidden = names.filter((name) => name in HIDEABLE);
    for (const [name, selectors] of Object.entries(HIDEABLE)) {
      for (const selector of selectors) {
        for (const node of document.querySelectorAll(selector)) {
          if (hidden.includes(name)) node.dataset.hiddenBy = 'link';
          else delete node.dataset.hiddenBy;
        }
      }
    }
  }

  // -- what is sent, and the server's refusals next to their fields ----------------------

  const number = (key) => Number(input(key).value.trim());

  function chosen() {
    const sizes = [offer.inputs, ...layerInputs().map((i) => Number(i.value)), offer.outputs];
    const optimizer = input('optimizer').value;
    const options = { ...OPTIMIZERS[optimizer].options,
      learning_rate: number('learning_rate'), batch_size: number('batch_size'),
      weight_decay: number('weight_decay'), schedule: input('schedule').value };
    if (WITH_MOMENTUM.includes(optimizer)) options.momentum = number('momentum');
    return { sizes, options, activation: input('activation').value };
  }

  // What the browser can tell before asking: a number where a number goes. The rest (ranges,
  // limits) is the server's to judge, in its words.
  function unreadable() {
    for (const [i, box] of layerInputs().entries()) {
      if (!/^[0-9]+$/.test(box.value.trim())) {
        return ['hidden', `Layer ${i + 1}: type its number of units, a whole number.`];
      }
    }
    for (const [key, label, kind] of FIELDS) {
      const box = input(key);
      if (kind === 'number' && !box.closest('[hidden]') && (box.value.trim() === ''
        || !Number.isFinite(Number(box.value)))) {
        return [key, `${label}: type a number${box.value.trim() ? `, not ${box.value}` : ''}.`];
      }
    }
    const epochs = number('epochs');
    if (!Number.isInteger(epochs) || epochs < 1 || epochs > offer.max_epochs) {
      return ['epochs', `Epochs must be a whole number from 1 to ${offer.max_epochs}, not `
        + `${input('epochs').value}.`];
    }
    return null;
  }

  // The field a server's message names: "options.momentum ...", "sizes ...", "hidden
  // layer 2 ...", "epochs ..."; null: none of the form's.
  function fieldOf(target) {
    if (typeof target !== 'string') {
      return target?.closest?.('[data-field]')?.dataset.field ?? null;
    }
    const option = /options\.([a-z_]+)/.exec(target)?.[1];
    if (option === 'nesterov' || option === 'optimizer') return 'optimizer';
    if (option && FIELDS.some(([key]) => key === option)) return option;
    if (/^(sizes|hidden layer)/.test(target)) return 'hidden';
    if (/^epochs/.test(target)) return 'epochs';
    return null;
  }

  function clearField(key) {
    if (!key) return;
    const error = $(`#pg-${key}-error`);
    if (error) { error.hidden = true; error.textContent = ''; }
    for (const box of key === 'hidden' ? [$('#pg-layers'), ...layerInputs()] : [input(key)]) {
      box?.removeAttribute('aria-invalid');
    }
  }

  function clearFields() {
    clearField('hidden');
    for (const [key] of FIELDS) clearField(key);
  }

  // A refusal next to the field it names (and in the messages when it names none).
  function refuse(key, text) {
    const error = key && $(`#pg-${key}-error`);
    if (!error) {
      messages.fail(text);
      return;
    }
    error.textContent = text;
    error.hidden = false;
    const boxes = key === 'hidden' ? [$('#pg-layers'), ...layerInputs()] : [input(key)];
    for (const box of boxes) box.setAttribute('aria-invalid', 'true');
    messages.fail(`Not made: ${text}`, 'field');
    if (!error.closest('[data-hidden-by]')) boxes[boxes.length - 1].focus();
  }

  function refused(err) {
    const said = err.message.replace(/^Error [0-9]+: /, '');
    const key = err.status === 400 ? fieldOf(said) : null;
    if (key) refuse(key, said);
    else messages.fail(err.message, err.status === 409 ? 'busy' : 'action');
  }

  // -- make, train, bring, take ----------------------------------------------------------

  async function act(work) {
    if (busy) return;
    messages.clear();
    clearFields();
    const wrong = unreadable();
    if (wrong) {
      refuse(...wrong);
      return;
    }
    busy = true;
    showButtons();
    try {
      await work();
    } catch (err) {
      refused(err);
    } finally {
      busy = false;
      showButtons();
    }
  }

  async function make() {
    const { sizes, options, activation } = chosen();
    messages.say(`Making a ${describe(sizes)} net…`);
    const made = await api.createNet('fresh', { sizes, options: { ...options, activation } });
    await adopt(made.net);
    messages.say(`Made your ${describe(made.sizes)} net, untrained: press "Train it".`);
  }

  async function train() {
    if (!active()) await make();
    const epochs = number('epochs');
    const { options } = chosen();
    messages.say(`Training ${whose()} for ${plural(epochs, 'epoch')}…`);
    const result = await api.trainWith(epochs, options);
    messages.say(`Trained ${plural(epochs, 'epoch')}: ${whose()} now reads `
      + `${percent(result.validation_accuracy)} of the validation digits right.`);
  }

  async function bring(file) {
    if (!file) return;
    messages.clear();
    messages.say(`Bringing in ${file.name}…`);
    try {
      const made = await api.importNet(await file.arrayBuffer());
      await adopt(made.net);
      describeNet(made);
      messages.say(`Your net is now the one in ${file.name}: ${describe(made.sizes)}, `
        + `${plural(made.epochs ?? 0, 'epoch')} trained.`);
    } catch (err) {
      messages.fail(`${file.name} was not brought in: ${err.message}`);
    } finally {
      $('#pg-upload').value = '';
    }
  }

  makeButton.closest('form').addEventListener('submit', (event) => {
    event.preventDefault();
    act(make);
  });
  trainButton.addEventListener('click', () => act(train));
  $('#pg-upload').addEventListener('change', (event) => bring(event.target.files[0]));

  // The downloads of the net that answers (a shipped model's when one is chosen).
  function showDownloads() {
    const pretrained = net();
    const name = pretrained == null ? (active() ? 'my-net' : 'class-net') : `model-v${pretrained}`;
    const who = pretrained == null ? whose() : `model v${pretrained}`;
    $('#pg-downloads').replaceChildren(...[['npz', 'NPZ', 'npz'], ['onnx', 'ONNX', 'onnx'],
      ['card', 'Model card', 'md']].map(([format, text, extension]) => el('a', {
      class: 'button', id: `pg-download-${format}`, href: api.exportUrl(format, pretrained),
      download: true, text,
      'aria-label': `Download ${who} as ${format === 'card' ? 'a model card (Markdown)'
        : `${text}`}` })));
  }

  function showButtons() {
    makeButton.disabled = busy;
    trainButton.disabled = busy || running;
    trainButton.textContent = active() ? 'Train it' : 'Make and train it';
  }

  // A net's options in words: "relu; SGD + momentum 0.9, learning rate 0.05, batch 32".
  function recipe({ options = {}, learning_rate: rate, batch_size: batch }) {
    const optimizer = options.optimizer === 'sgd' && options.momentum
      ? (options.nesterov ? 'nesterov' : 'momentum') : options.optimizer;
    const schedule = [options.schedule ?? []].flat()[0];
    return [options.activation, [
      `${OPTIMIZERS[optimizer]?.label ?? optimizer}`
        + (WITH_MOMENTUM.includes(optimizer) ? ` ${options.momentum}` : ''),
      `learning rate ${rate}` + (schedule && schedule !== 'constant' ? ` (${schedule})` : ''),
      `batch ${batch}`,
      options.weight_decay ? `weight decay ${options.weight_decay}` : null,
    ].filter(Boolean).join(', ')].filter(Boolean).join('; ');
  }

  // The form takes a net's own set-up (one brought in: the form then describes it).
  function describeNet(live) {
    const { options = {} } = live;
    const optimizer = options.optimizer === 'sgd' && options.momentum
      ? (options.nesterov ? 'nesterov' : 'momentum') : options.optimizer;
    fill({ ...setup(), hidden: live.sizes.slice(1, -1).join('-') || 'none',
      activation: options.activation, optimizer, learning_rate: String(live.learning_rate),
      batch_size: String(live.batch_size), weight_decay: String(options.weight_decay ?? 0),
      schedule: [options.schedule ?? []].flat()[0],
      ...(options.momentum ? { momentum: String(options.momentum) } : {}) });
    saveState();
  }

  // What the net that trains is, beside the form that may describe another.
  function showNet() {
    const live = models()?.live;
    if (!offer || !live) return;
    const own = active();
    const same = own && describe(live.sizes) === describe(chosen().sizes);
    $('#pg-net').textContent = !own
      ? 'The class net answers now: "Make this net" makes you your own, of this shape.'
      : `Your net: ${describe(live.sizes)}, ${plural(live.epochs ?? 0, 'epoch')} trained `
        + `(${recipe(live)}).`
        + (same ? '' : ' The shape above is not its shape: "Make this net" makes a new one;'
          + ' "Train it" trains this one with the learning options above.');
  }

  // -- watching it train: one event per epoch ----------------------------------------------

  function drawCurves() {
    const series = (key) => history.filter((h) => h[key] != null)
      .map((h) => [h.epoch, h[key]]);
    drawLines($('#pg-loss'), [{ name: 'training', points: series('loss') },
      { name: 'validation', points: series('val_loss') }],
    { what: 'Loss', format: (v) => String(Number(v.toPrecision(2))), low: 0 });
    drawLines($('#pg-accuracy'), [{ name: 'training', points: series('train_accuracy') },
      { name: 'validation', points: series('val_accuracy') }],
    { what: 'Accuracy', format: (v) => percent(v, 0), high: 1 });
  }

  function showEpoch(epoch) {
    epochLine.textContent = `Epoch ${epoch.epoch} of ${epoch.epochs}: validation accuracy `
      + `${percent(epoch.val_accuracy)}`
      + (epoch.train_accuracy == null ? '' : `, training ${percent(epoch.train_accuracy)}`)
      + (epoch.view_samples ? ` (on ${epoch.view_samples.toLocaleString('en')} images)` : '')
      + (epoch.learning_rate == null ? '.'
        : `; learning rate ${Number(epoch.learning_rate.toPrecision(3))}.`);
    const watch = $('#pg-watch');
    watch.dataset.epoch = epoch.epoch;
    if (epoch.confusion) drawMatrix($('#pg-matrix'), { matrix: epoch.confusion });
    if (epoch.units) {
      const { pixels, total } = epoch.units;
      // 128 is a weight of 0: the same red and blue as the hidden layer's own panel.
      $('#pg-pictures').replaceChildren(...pixels.slice(0, PICTURES).map((b64, i) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const canvas = unitImage(Array.from(bytes, (v) => (v - 128) / 127), i);
        canvas.setAttribute('role', 'img');
        canvas.setAttribute('aria-label', `hidden unit ${i + 1} after epoch ${epoch.epoch}`);
        return canvas;
      }));
      $('#pg-pictures-title').textContent = `The first ${Math.min(PICTURES, pixels.length)} of `
        + `${plural(total, 'hidden unit')} after epoch ${epoch.epoch}: red pixels excite `
        + 'one, blue ones inhibit it';
    }
  }

  // The chosen net's /train/events (panel-training opens them; see main.js).
  function listen(events) {
    history = [];
    running = false;
    drawCurves();
    events.addEventListener('status', (event) => {
      const status = JSON.parse(event.data);
      running = !!status.running || status.state === 'queued';
      history = [...(status.history ?? [])];
      drawCurves();
      // The last epoch's matrix and pictures (a page opened after, or during, a training).
      const last = history.find((h) => h.epoch === status.view?.epoch);
      if (last) showEpoch({ ...last, ...status.view, epochs: status.epochs });
      showButtons();
    });
    events.addEventListener('progress', () => {
      if (!running) history = [];  // a new job: a new curve
      running = true;
      showButtons();
    });
    events.addEventListener('epoch', (event) => {
      const epoch = JSON.parse(event.data);
      if (!running || epoch.epoch === 1) history = history.filter((h) => h.epoch < epoch.epoch);
      running = true;
      history.push(epoch);
      drawCurves();
      showEpoch(epoch);
      showButtons();
    });
    events.addEventListener('done', () => {
      running = false;
      showButtons();
    });
  }

  // -- the panel's hooks -----------------------------------------------------------------

  function ready() {
    if (offer || !models()) return !!offer;
    offer = models().settings.playground;
    if (!offer) {  // an older server
      $('#pg-net').textContent = 'This server does not offer nets of your own design.';
      makeButton.disabled = trainButton.disabled = true;
      return false;
    }
    build();
    fill({});
    return true;
  }

  return {
    name: 'playground',
    setup,
    hidden: () => hidden,
    listen,
    // From the address: the set-up over the defaults, and the controls it hides.
    restore(state) {
      if (!ready()) return;
      fill(state.setup ?? {});
      hide(state.hide ?? []);
      showNet();
      showButtons();
      showDownloads();
    },
    netChanged() {
      showDownloads();
      showNet();
      showButtons();
    },
    versionLive() {
      ready();
      showDownloads();
      showNet();
      showButtons();
    },
  };
}
