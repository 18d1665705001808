// The drawing page: draw a digit, see what the network answers, train it live.
// Plain browser JavaScript, no libraries; every URL is relative to the page (served at /).
'use strict';

const PREDICT_EVERY_MS = 150;  // live predictions while drawing, at most this often
const SIZE = 28;               // MNIST images are 28x28 = 784 pixels

const $ = (selector) => document.querySelector(selector);
const pad = $('#pad');
const ink = pad.getContext('2d');
const BRUSH = pad.width / 12;  // about an MNIST pen stroke, relative to the digit box
// /predict gets the drawing shrunk to a sixth (56x56 for the 336 pad): far fewer pixels to
// decode on the server, still nearly 3x the 20 px of an MNIST digit (docs/performance.md).
const sent = document.createElement('canvas');
sent.width = sent.height = Math.round(pad.width / 6);
const shrink = sent.getContext('2d');
shrink.imageSmoothingQuality = 'high';

// ---------------------------------------------------------------------------------------
// Talking to the server.

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = 'GET', body, withStatus = false } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, `Cannot reach the server (${err.message}). Is it still running?`);
  }
  const text = await response.text();
  let data = text;
  try { data = JSON.parse(text); } catch { /* plain text, e.g. "OK" */ }
  if (!response.ok) throw new ApiError(response.status, explain(response, data));
  return withStatus ? { status: response.status, data } : data;
}

function explain(response, data) {
  const said = (data && data.error) || (typeof data === 'string' && data.trim())
    || response.statusText;
  if (response.status === 409) {
    return `The server is busy training; try again when it has finished. (${said})`;
  }
  if (response.status === 503) return `Not available on this server: ${said}`;
  return `Error ${response.status}: ${said}`;
}

// ---------------------------------------------------------------------------------------
// Messages: one visible area, role=status for news and role=alert for errors.

const statusLine = $('#status');
const errorLine = $('#error');
let errorSource = null;  // which action showed the error, so that its next success clears it

function say(text) {
  statusLine.textContent = text;
  hideError();
}

function fail(text, source = 'action') {
  statusLine.textContent = '';  // news of an earlier step would contradict the error
  errorLine.textContent = text;
  errorLine.hidden = false;
  errorSource = source;
}

function hideError(source) {
  if (source && source !== errorSource) return;
  errorLine.hidden = true;
  errorLine.textContent = '';
  errorSource = null;
}

const percent = (x, digits = 1) => `${(100 * x).toFixed(digits)}%`;
const confidence = (x) => (x > 0.999 ? '>99.9%' : percent(x));
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

// ---------------------------------------------------------------------------------------
// Drawing: strokes are lists of points in canvas pixels, so undo can redraw the rest.

let strokes = [];
let stroke = null;      // the stroke being drawn
let penId = null;       // the pointer drawing it; other fingers are ignored
let generation = 0;     // bumped by clear and undo, so that late answers are dropped

function paper() {
  ink.fillStyle = '#fff';
  ink.fillRect(0, 0, pad.width, pad.height);
  ink.lineWidth = BRUSH;
  ink.lineCap = 'round';
  ink.lineJoin = 'round';
  ink.strokeStyle = ink.fillStyle = '#000';
}

function dot([x, y]) {
  ink.beginPath();
  ink.arc(x, y, BRUSH / 2, 0, 2 * Math.PI);
  ink.fill();
}

function line([x0, y0], [x1, y1]) {
  ink.beginPath();
  ink.moveTo(x0, y0);
  ink.lineTo(x1, y1);
  ink.stroke();
}

function redraw() {
  paper();
  for (const points of strokes) {
    dot(points[0]);
    points.slice(1).forEach((p, i) => line(points[i], p));
  }
  $('#undo').disabled = $('#clear').disabled = strokes.length === 0;
}

function canvasPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
    (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener('pointerdown', (event) => {
  if (stroke || event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  penId = event.pointerId;
  stroke = [canvasPoint(event)];
  strokes.push(stroke);
  dot(stroke[0]);
  $('#undo').disabled = $('#clear').disabled = false;
  wantPrediction();
});

pad.addEventListener('pointermove', (event) => {
  if (!stroke || event.pointerId !== penId) return;
  // A pen or a fast mouse reports several positions per event: use them all.
  for (const e of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) {
    const p = canvasPoint(e);
    line(stroke[stroke.length - 1], p);
    stroke.push(p);
  }
  wantPrediction();
});

function endStroke(event) {
  if (!stroke || event.pointerId !== penId) return;
  stroke = penId = null;
  wantPrediction();
}
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);

function clearDrawing() {
  strokes = [];
  stroke = penId = null;
  generation += 1;
  redraw();
  showNoPrediction('Draw a digit to see what the network thinks.');
}

function undo() {
  if (stroke || !strokes.length) return;
  strokes.pop();
  generation += 1;
  redraw();
  if (strokes.length) wantPrediction();
  else showNoPrediction('Draw a digit to see what the network thinks.');
}

$('#clear').addEventListener('click', clearDrawing);
$('#undo').addEventListener('click', undo);

document.addEventListener('keydown', (event) => {
  const typing = event.target.matches('input, select, textarea');
  if (typing) return;
  if (event.key === 'Escape' || event.key === 'Backspace') {
    event.preventDefault();
    clearDrawing();
  } else if (event.key.toLowerCase() === 'z' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    undo();
  }
});

// ---------------------------------------------------------------------------------------
// Predictions: throttled while drawing, at most one request in flight.

let wanted = false;
let inFlight = false;
let lastSent = -Infinity;
let timer = null;

function wantPrediction() {
  wanted = true;
  pump();
}

// aria-busy says an answer for the latest drawing is still coming.
function pump() {
  $('#prediction').setAttribute('aria-busy', String(inFlight || (wanted && !!strokes.length)));
  if (!wanted || inFlight || timer || !strokes.length) return;
  const wait = lastSent + PREDICT_EVERY_MS - performance.now();
  if (wait > 0) {
    timer = setTimeout(() => { timer = null; pump(); }, wait);
    return;
  }
  wanted = false;
  inFlight = true;
  lastSent = performance.now();
  predict().finally(() => { inFlight = false; pump(); });
}

function chosenModel() {
  const value = $('#model-choice').value;
  return value === '' ? null : Number(value);
}

async function predict() {
  const asked = generation;
  shrink.drawImage(pad, 0, 0, sent.width, sent.height);
  const body = { image: sent.toDataURL('image/png'), pretrained: chosenModel(),
    return_input: true, return_activations: isOpen('inside') };
  // Every net on the same drawing, asked at the same time (one decoding on the server).
  const compared = isOpen('compare')
    ? api('compare', { method: 'POST', body: { image: body.image } }) : null;
  compared?.catch(() => {});  // its error is the same as /predict's, shown once
  try {
    const answer = await api('predict', { method: 'POST', body });
    if (asked === generation) {
      showPrediction(answer);
      showActivations(answer);
      shown = { image: body.image, label: answer.label };
      enableTeaching(true);
    }
    if (compared) {
      const { models: rows } = await compared;
      if (asked === generation) showCompare(rows);
    }
    hideError('predict');
  } catch (err) {
    if (asked !== generation) return;
    if (err.status === 422) showNoPrediction('No digit found yet: draw a bit more.');
    else fail(err.message, 'predict');
  }
}

// ---------------------------------------------------------------------------------------
// Showing an answer.

const bars = $('#bars');
for (let digit = 0; digit < 10; digit += 1) {
  const row = document.createElement('li');
  row.innerHTML = '<span class="digit"></span><span class="track"><span class="fill">'
    + '</span></span><span class="pct">–</span>';
  row.querySelector('.digit').textContent = digit;
  bars.append(row);
}

function showPrediction({ label, predictions, model, input, unsure }) {
  const confidences = new Array(10).fill(0);
  for (const p of predictions) confidences[p.label] = p.confidence;
  $('#label').textContent = label;
  // Not sure: say why in words; the digit stays, greyed, as a guess.
  $('#label').classList.toggle('unsure', !!unsure);
  $('#confidence').classList.toggle('unsure', !!unsure);
  $('#confidence').textContent = unsure
    ? `Not sure: ${unsure}. Best guess ${label} (${confidence(confidences[label])}).`
    : `${confidence(confidences[label])} sure it is a ${label}`;
  $('#answered-by').textContent = `Answered by ${model === 'live' ? 'the live network'
    : `pretrained model ${model}`}.`;
  [...bars.children].forEach((row, digit) => {
    row.classList.toggle('top', digit === label);
    row.querySelector('.fill').style.width = percent(confidences[digit], 2);
    row.querySelector('.pct').textContent = confidence(confidences[digit]);
    row.setAttribute('aria-label', `${digit}: ${confidence(confidences[digit])}`);
  });
  if (input) showSeen(input);
}

function showNoPrediction(text) {
  shown = null;
  enableTeaching(false);
  $('#label').textContent = '?';
  $('#label').classList.remove('unsure');
  $('#confidence').classList.remove('unsure');
  showCompare(null);
  showActivations(null);
  $('#confidence').textContent = text;
  $('#answered-by').textContent = '';
  for (const row of bars.children) {
    row.classList.remove('top');
    row.querySelector('.fill').style.width = '0';
    row.querySelector('.pct').textContent = '–';
    row.removeAttribute('aria-label');
  }
  showSeen(null);
}

function showSeen(input) {
  const seen = $('#seen').getContext('2d');
  const image = seen.createImageData(SIZE, SIZE);
  (input || []).flat().forEach((v, i) => {
    image.data.fill(Math.round(255 * v), 4 * i, 4 * i + 3);
  });
  for (let i = 3; i < image.data.length; i += 4) image.data[i] = 255;
  seen.putImageData(image, 0, 0);
}

// ---------------------------------------------------------------------------------------
// Teaching: keep the drawing with its right digit (POST /samples), see the kept ones.

let shown = null;  // {image, label} of the drawing whose answer is on screen

const digitButtons = $('#digit-buttons');
for (let digit = 0; digit < 10; digit += 1) {
  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = digit;
  button.disabled = true;
  button.setAttribute('aria-label', `It's a ${digit}`);
  button.addEventListener('click', () => keep(digit));
  digitButtons.append(button);
}
$('#right').addEventListener('click', () => shown && keep(shown.label));

function enableTeaching(on) {
  $('#right').disabled = !on;
  for (const button of digitButtons.children) button.disabled = !on;
}

async function keep(label) {
  if (!shown) return;
  try {
    const { status, data: sample } = await api('samples', { method: 'POST',
      body: { image: shown.image, label }, withStatus: true });
    if (status === 200) {  // the same drawing was kept before
      say(`This drawing is already kept, as a ${sample.label} (drawing #${sample.id}).`);
    } else {
      say(`Kept drawing #${sample.id} as a ${label}`
        + (sample.predicted === label ? ' (the net read it right).'
          : ` (the net read a ${sample.predicted}).`)
        + ' Train on MNIST + my drawings to learn from it.');
    }
    loadGallery();
  } catch (err) {
    fail(err.message);
  }
}

const GALLERY = 24;  // newest drawings shown

async function loadGallery() {
  const { total, samples } = await api(`samples?limit=${GALLERY}`);
  $('#samples-title').textContent = `Your drawings (${total})`;
  $('#samples-info').hidden = total > 0;
  const items = await Promise.all(samples.map(galleryItem));
  $('#gallery').replaceChildren(...items);
}

async function galleryItem(sample) {
  const item = document.createElement('li');
  const image = document.createElement('img');
  image.src = `samples/${sample.id}/image`;
  image.width = image.height = 56;
  image.alt = `drawing #${sample.id}, a ${sample.label}`;
  const caption = document.createElement('span');
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.textContent = 'Delete';
  remove.setAttribute('aria-label', `Delete drawing #${sample.id}`);
  remove.addEventListener('click', async () => {
    try {
      await api(`samples/${sample.id}`, { method: 'DELETE' });
      loadGallery();
    } catch (err) {
      fail(err.message);
    }
  });
  item.append(image, caption, remove);
  item.dataset.label = sample.label;
  // What the chosen net reads now (it may have learned since the drawing was kept).
  try {
    const png = await fetch(image.src).then((r) => r.blob());
    const url = await new Promise((resolve) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.readAsDataURL(png);
    });
    const answer = await api('predict', { method: 'POST',
      body: { image: url, pretrained: chosenModel() } });
    const right = answer.label === sample.label;
    item.classList.add(right ? 'right' : 'wrong');
    item.dataset.read = answer.label;
    caption.textContent = `a ${sample.label} · reads ${answer.label} ${right ? '✓' : '✗'}`;
  } catch {
    caption.textContent = `a ${sample.label}`;
  }
  return item;
}

// ---------------------------------------------------------------------------------------
// Models: the live net and the pretrained ones, and the hidden layer of the chosen one.

const describe = (sizes) => sizes.join('-');

let models = null;  // the last answer of GET /models

async function loadModels() {
  models = await api('models');
  $('#epochs').max = String(models.settings.max_epochs);  // the server's limit, not a literal
  const picker = $('#model-choice');
  const chosen = picker.value;
  const options = [new Option(`Live net · ${describe(models.live.sizes)}`, '')];
  for (const m of models.pretrained) {
    options.push(new Option(`v${m.version}${m.best ? ' (best)' : ''} · ${describe(m.sizes)}`
      + (m.test_accuracy == null ? '' : ` · ${percent(m.test_accuracy)} test`),
    String(m.version)));
  }
  picker.replaceChildren(...options);
  picker.value = options.some((o) => o.value === chosen) ? chosen : '';
  $('#pretrain').disabled = models.best == null;
  showModelInfo();
}

function showModelInfo() {
  const version = chosenModel();
  const live = models.live;
  const m = version === null ? null : models.pretrained.find((p) => p.version === version);
  $('#model-info').textContent = m ? describe(m.sizes)
      + (m.test_accuracy == null ? '.' : `, ${percent(m.test_accuracy)} test accuracy.`)
    : `${describe(live.sizes)}, ` + (live.epochs === 0 ? 'untrained.'
      : `trained ${plural(live.epochs, 'epoch')}` + (live.validation_accuracy == null ? '.'
        : `, ${percent(live.validation_accuracy)} validation accuracy.`));
  $('#recipe').hidden = !m?.recipe;
  $('#recipe p').textContent = m?.recipe ?? '';
}

const UNITS_SHOWN = 120;  // a wide layer (e.g. 800 units) shows this many until asked
let units = [];
let unitsOf = null;  // the model whose units these are ("live", "v6", ...)
let unitsShape = '';  // and its shape: a new shape is a new net
let allUnits = false;  // asked to see every unit of that net (kept while its weights reload)
let hiddenAsked = 0;  // the latest call wins: an older answer arriving late is dropped

async function loadHidden() {
  const pretrained = chosenModel();
  const asked = ++hiddenAsked;
  const hidden = await api(pretrained === null ? 'model/hidden'
    : `model/hidden?pretrained=${pretrained}`);
  if (asked !== hiddenAsked) return;
  const who = hidden.model === 'live' ? 'the live network' : `pretrained model ${hidden.model}`;
  $('#hidden-title').textContent = `What the hidden layer of ${who} has learned `
    + `(${hidden.units.length} units, ${describe(hidden.sizes)})`;
  if (hidden.model !== unitsOf || describe(hidden.sizes) !== unitsShape) allUnits = false;
  units = hidden.units;
  unitsOf = hidden.model;
  unitsShape = describe(hidden.sizes);
  showUnits(allUnits ? units.length : UNITS_SHOWN);
  // An answer that came before these weights gets their images now.
  if (activationsShown?.model === unitsOf) showActivations(activationsShown);
}

function showUnits(count) {
  $('#units').replaceChildren(...units.slice(0, count).map(unitImage));
  const more = $('#all-units');
  more.hidden = units.length <= count;
  more.textContent = `Show all ${units.length} units (${units.length - count} more)`;
}

$('#all-units').addEventListener('click', () => {
  allUnits = true;
  showUnits(units.length);
});

// Diverging colours: red for positive weights, white for zero, blue for negative.
const POSITIVE = [178, 24, 43];
const NEGATIVE = [33, 102, 172];

function unitImage(weights, index) {
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = SIZE;
  canvas.title = `hidden unit ${index + 1}`;
  const context = canvas.getContext('2d');
  const image = context.createImageData(SIZE, SIZE);
  const scale = Math.max(...weights.map(Math.abs)) || 1;
  weights.forEach((w, i) => {
    const t = Math.abs(w) / scale;
    const colour = w < 0 ? NEGATIVE : POSITIVE;
    for (let c = 0; c < 3; c += 1) image.data[4 * i + c] = 255 + t * (colour[c] - 255);
    image.data[4 * i + 3] = 255;
  });
  context.putImageData(image, 0, 0);
  return canvas;
}

// After the live net changed: a new answer, descriptions and weights (calls that come
// together load once).
let refreshing = null;
function refresh() {
  wantPrediction();
  refreshing ??= Promise.resolve().then(async () => {
    refreshing = null;
    try {
      await loadModels();
      await loadHidden();
      await loadGallery();
      if (chosenModel() === null) loadConfusion();
      hideError('load');
    } catch (err) {
      fail(err.message, 'load');
    }
  });
}

$('#model-choice').addEventListener('change', () => {
  showModelInfo();
  loadHidden().catch((err) => fail(err.message, 'load'));
  loadGallery().catch((err) => fail(err.message, 'load'));
  selectedCell = null;
  loadConfusion();
  saveState();
  wantPrediction();
});

// ---------------------------------------------------------------------------------------
// Training, reset and pretrain; progress and the learning curve come from /train/events.

let job = null;        // {running, epoch, epochs, batch, batches}: the current or last job
let history = [];      // its epochs: {epoch, val_accuracy, ...}

async function train() {
  const epochs = Number($('#epochs').value);
  const samples = $('#with-samples').checked;
  $('#train').disabled = true;
  say(`Training the live network for ${plural(epochs, 'epoch')}`
    + `${samples ? ' on MNIST and your drawings' : ''}…`);
  try {
    const result = await api('train', { method: 'POST', body: { epochs, samples } });
    say(`Trained: ${percent(result.validation_accuracy)} validation accuracy after `
      + `${result.epochs} epochs in total (${result.accuracy} of `
      + `${models.settings.score_samples} random validation `
      + `samples right), ${result.seconds.toFixed(1)} s. ${beforeAfter(result)}`);
    refresh();
  } catch (err) {
    fail(err.message);
  } finally {
    $('#train').disabled = false;
  }
}

// MNIST's and the held-out drawings' validation accuracy, before -> after: forgetting shows.
function beforeAfter({ before, after, samples }) {
  if (!before || !after) return '';
  let text = `MNIST validation ${percent(before.mnist)} → ${percent(after.mnist)}`;
  if (samples && after.samples != null) {
    text += `; your ${plural(after.samples_count, 'held-out drawing')} `
      + `${percent(before.samples)} → ${percent(after.samples)}`;
  } else if (samples) {
    text += '; no held-out drawings yet (every fifth kept drawing is held out to check)';
  }
  return `${text}.`;
}

async function replaceLiveNet(path, done) {
  try {
    await api(path, { method: 'POST' });
    job = null;
    history = [];
    showProgress();
    drawChart();
    $('#model-choice').value = '';
    saveState();
    say(done);
    refresh();
  } catch (err) {
    fail(err.message);
  }
}

$('#train').addEventListener('click', train);
$('#reset').addEventListener('click', () => replaceLiveNet('reset',
  `The live network is now a fresh, untrained ${describe(models.settings.default_net.sizes)} net.`));
$('#pretrain').addEventListener('click', () => replaceLiveNet('pretrain',
  'The live network is now a copy of the best pretrained model.'));

function showProgress() {
  const bar = $('#progress');
  const label = $('#progress-label');
  if (!job) {
    bar.value = 0;
    label.textContent = 'No training yet';
  } else if (job.running) {
    const batches = job.batches ? job.batch / job.batches : 0;
    bar.value = Math.min(1, (job.epoch - 1 + batches) / job.epochs);
    label.textContent = `Epoch ${job.epoch} of ${job.epochs}, batch ${job.batch} of `
      + `${job.batches} (${percent(bar.value, 0)})`;
  } else {
    bar.value = history.length / job.epochs;
    label.textContent = `Last training: ${history.length} of ${plural(job.epochs, 'epoch')} `
      + 'done';
  }
}

// A progress or epoch event: the first one of a job starts a new curve.
function updateJob(update) {
  if (!job || !job.running) {
    job = { running: true, epoch: 1, batch: 0, batches: 0 };
    history = [];
  }
  Object.assign(job, update);
}

const events = new EventSource('train/events');
events.addEventListener('status', (event) => {
  const status = JSON.parse(event.data);
  job = status.epochs ? status : null;
  history = status.history;
  drawChart();
  showProgress();
});
events.addEventListener('progress', (event) => {
  updateJob(JSON.parse(event.data));
  showProgress();
});
events.addEventListener('epoch', (event) => {
  const epoch = JSON.parse(event.data);
  updateJob({ epoch: epoch.epoch, epochs: epoch.epochs });
  job.batch = job.batches;
  history.push(epoch);
  drawChart();
  showProgress();
});
events.addEventListener('done', (event) => {
  const result = JSON.parse(event.data);
  if (job) job.running = false;
  showProgress();
  if (result.error) fail(`Training stopped: ${result.error}`);
  refresh();
});

// The learning curve: validation accuracy (y) per epoch (x), as an inline SVG.
const SVG = 'http://www.w3.org/2000/svg';
const CHART = { width: 320, height: 170, left: 40, right: 12, top: 10, bottom: 30 };

function svg(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function drawChart() {
  const chart = $('#chart');
  const points = history.filter((h) => h.val_accuracy != null);
  const title = svg('title', { id: 'chart-title' }, points.length
    ? `Validation accuracy per epoch; last ${percent(points[points.length - 1].val_accuracy)}`
    : 'Validation accuracy per epoch: no training yet');
  chart.replaceChildren(title);
  const { width, height, left, right, top, bottom } = CHART;
  if (!points.length) {
    chart.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle',
      class: 'empty' }, 'Train to see the validation accuracy per epoch'));
    return;
  }
  const first = points[0].epoch;
  const last = Math.max(points[points.length - 1].epoch, first + 1);
  // From the nearest 10% below the worst epoch up to 100%.
  const low = Math.min(0.9, Math.floor(10 * Math.min(...points.map((p) => p.val_accuracy))) / 10);
  const x = (epoch) => left + (epoch - first) / (last - first) * (width - left - right);
  const y = (acc) => top + (1 - acc) / (1 - low) * (height - top - bottom);
  for (const acc of [low, (low + 1) / 2, 1]) {
    chart.append(svg('line', { x1: left, x2: width - right, y1: y(acc), y2: y(acc),
      class: 'grid' }));
    chart.append(svg('text', { x: left - 5, y: y(acc) + 4, 'text-anchor': 'end',
      class: 'tick' }, percent(acc, 0)));
  }
  chart.append(svg('line', { x1: left, x2: left, y1: top, y2: height - bottom,
    class: 'axis' }));
  chart.append(svg('text', { x: left, y: height - 8, class: 'tick' }, `epoch ${first}`));
  if (points.length > 1) {
    chart.append(svg('text', { x: width - right, y: height - 8, 'text-anchor': 'end',
      class: 'tick' }, `epoch ${last}`));
  }
  chart.append(svg('polyline', { class: 'curve',
    points: points.map((p) => `${x(p.epoch)},${y(p.val_accuracy)}`).join(' ') }));
  for (const p of points) {
    const mark = svg('circle', { cx: x(p.epoch), cy: y(p.val_accuracy), r: 3.5 });
    mark.append(svg('title', {}, `epoch ${p.epoch}: ${percent(p.val_accuracy)}`));
    chart.append(mark);
  }
}

// ---------------------------------------------------------------------------------------
// Teaching panels: every net on the drawing, what fires inside, where the net goes wrong.

const panels = [...document.querySelectorAll('details[data-panel]')];
const isOpen = (name) => panels.some((p) => p.dataset.panel === name && p.open);
const modelName = (model) => (model === 'live' ? 'Live net' : model);

panels.forEach((panel) => panel.addEventListener('toggle', () => {
  saveState();
  if (!panel.open) return;
  if (panel.dataset.panel === 'confusion') loadConfusion();
  else wantPrediction();  // the drawing's rows or activations were not asked for while shut
}));

// Every net on this drawing (POST /compare): a row per net, the chosen one highlighted.
function showCompare(rows) {
  const body = $('#compare-table tbody');
  if (!rows) {
    body.replaceChildren();
    $('#compare-info').textContent = 'Draw a digit to compare the networks.';
    return;
  }
  const chosen = chosenModel() === null ? 'live' : `v${chosenModel()}`;
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement('tr');
    tr.dataset.model = row.model;
    tr.classList.toggle('chosen', row.model === chosen);
    tr.classList.toggle('unsure', !!row.unsure);
    const best = models?.pretrained.find((m) => `v${m.version}` === row.model);
    const name = document.createElement('th');
    name.scope = 'row';
    name.textContent = modelName(row.model);
    if (best?.test_accuracy != null) {
      name.append(document.createElement('br'), Object.assign(document.createElement('small'),
        { textContent: `${percent(best.test_accuracy)} test` }));
    }
    if (row.model === 'live' && job?.running) {
      name.append(document.createElement('br'), Object.assign(document.createElement('small'),
        { textContent: 'training: the last complete net answers' }));
    }
    const reads = Object.assign(document.createElement('td'),
      { className: 'reads', textContent: row.label });
    const sure = Object.assign(document.createElement('td'),
      { className: 'pct', textContent: confidence(row.confidence) });
    if (row.unsure) {
      sure.append(' ', Object.assign(document.createElement('span'),
        { className: 'tag', textContent: 'not sure', title: row.unsure }));
    }
    tr.append(name, reads, sure);
    return tr;
  }));
  const labels = new Set(rows.map((r) => r.label));
  $('#compare-info').textContent = labels.size === 1
    ? `All ${rows.length} networks read a ${rows[0].label}.`
    : `The networks disagree: they read ${[...labels].sort().join(', ')}.`;
}

// What fires inside (/predict's "activations"): per hidden layer its most active units. For
// the first layer each unit shows its weights (what it looks for) and the drawing times its
// weights (which of its strokes the drawing matched); a narrow layer also shows every unit.
const UNITS_TOP_SHOWN = 16;

let activationsShown = null;  // the /predict answer whose activations are on screen

function showActivations(answer) {
  activationsShown = answer?.activations ? answer : null;
  const box = $('#layers');
  const layers = answer?.activations;
  if (!layers) {
    box.replaceChildren();
    $('#inside-info').textContent = 'Draw a digit to see which hidden units it excites.';
    return;
  }
  const input = answer.input ? answer.input.flat() : null;
  const weightsShown = unitsOf === answer.model;
  $('#inside-info').textContent = `${modelName(answer.model)}: each hidden unit's output, 0 `
    + '(silent) to 1 (firing).' + (weightsShown ? ' Left: what a unit looks for (red excites, '
    + 'blue inhibits); right: your drawing times those weights, the strokes it matched.' : '');
  box.replaceChildren(...layers.flatMap((layer) => {
    const title = document.createElement('h3');
    title.textContent = `Hidden layer ${layer.layer}: ${layer.size} units, the `
      + `${Math.min(UNITS_TOP_SHOWN, layer.top.length)} most active`;
    const parts = [title];
    if (layer.values) {
      const strip = document.createElement('div');
      strip.className = 'strip';
      strip.setAttribute('role', 'img');
      strip.setAttribute('aria-label', `all ${layer.size} units of layer ${layer.layer}, `
        + `${layer.values.filter((v) => v > 0.5).length} above one half`);
      strip.append(...layer.values.map((v, i) => {
        const cell = document.createElement('span');
        cell.title = `unit ${i}: ${v.toFixed(2)}`;
        cell.style.background = `rgba(34, 87, 199, ${v})`;
        return cell;
      }));
      parts.push(strip);
    }
    const list = document.createElement('ol');
    list.className = 'units-top';
    list.setAttribute('aria-label', `most active units of hidden layer ${layer.layer}`);
    list.append(...layer.top.slice(0, UNITS_TOP_SHOWN).map(({ unit, value }) => {
      const item = document.createElement('li');
      item.dataset.unit = unit;
      if (layer.layer === 1 && weightsShown && units[unit]) {
        const weights = units[unit];
        item.append(unitImage(weights, unit));
        if (input) item.append(unitImage(weights.map((w, i) => w * input[i]), unit));
      }
      const what = document.createElement('span');
      what.className = 'what';
      what.innerHTML = '<span></span><b></b>';
      what.firstChild.textContent = `unit ${unit}`;
      what.lastChild.textContent = value.toFixed(2);
      const level = document.createElement('span');
      level.className = 'level';
      level.innerHTML = '<span></span>';
      level.firstChild.style.width = percent(value, 0);
      item.append(what, level);
      return item;
    }));
    parts.push(list);
    return parts;
  }));
}

// Where the net goes wrong (GET /confusion): the chosen net's 10x10 confusion matrix on the
// held-out test images, per-class accuracy; a cell shows its digits (/confusion/examples).
let confusionOf = null;  // the model whose matrix is shown
let selectedCell = null;  // [true, read]
const CELL_EXAMPLES = 48;

async function loadConfusion() {
  if (!isOpen('confusion')) return;
  const pretrained = chosenModel();
  const query = pretrained === null ? '' : `?pretrained=${pretrained}`;
  const info = $('#confusion-info');
  try {
    const data = await api(`confusion${query}`);
    if (chosenModel() !== pretrained) return;  // the choice changed meanwhile
    confusionOf = data.model;
    info.textContent = `${modelName(data.model)} read ${percent(data.accuracy)} of `
      + `${data.images.count.toLocaleString('en')} test images right: ${data.images.source}.`;
    showMatrix(data);
    if (selectedCell) showCell(...selectedCell);
    else $('#cell').hidden = true;
  } catch (err) {
    $('#matrix').hidden = true;
    $('#cell').hidden = true;
    info.textContent = err.message;
  }
}

function showMatrix({ matrix, per_class: perClass }) {
  const table = $('#matrix');
  const head = document.createElement('tr');
  head.innerHTML = '<td><span class="visually-hidden">true digit, read as</span></td>';
  for (let d = 0; d < 10; d += 1) head.append(headCell(d, 'col'));
  const accuracy = document.createElement('th');
  accuracy.scope = 'col';
  accuracy.textContent = 'right';
  head.append(accuracy);
  table.tHead.replaceChildren(head);
  table.tBodies[0].replaceChildren(...matrix.map((row, t) => {
    const tr = document.createElement('tr');
    tr.append(headCell(t, 'row'));
    const total = row.reduce((a, b) => a + b, 0) || 1;
    row.forEach((count, r) => {
      const td = document.createElement('td');
      td.classList.toggle('zero', count === 0);
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = count;
      button.dataset.true = t;
      button.dataset.read = r;
      button.tabIndex = t === 0 && r === 0 ? 0 : -1;  // one tab stop; arrows move inside
      button.setAttribute('aria-pressed', 'false');
      button.setAttribute('aria-label', t === r ? `${count} ${t}s read right`
        : `${count} ${t}s read as ${r}`);
      // Green for right answers, red for mistakes, stronger for a larger share of the row.
      const share = count / total;
      button.style.setProperty('--cell', t === r ? `rgba(46, 125, 50, ${0.15 + 0.6 * share})`
        : `rgba(179, 38, 30, ${count ? Math.min(0.8, 0.08 + 4 * share) : 0})`);
      button.addEventListener('click', () => showCell(t, r));
      td.append(button);
      tr.append(td);
    });
    const right = document.createElement('td');
    right.className = 'accuracy';
    right.textContent = perClass[t] == null ? '–' : percent(perClass[t], 0);
    tr.append(right);
    return tr;
  }));
  table.hidden = false;
}

function headCell(digit, scope) {
  const th = document.createElement('th');
  th.scope = scope;
  th.textContent = digit;
  return th;
}

// Arrow keys move between the matrix's cells (a grid is one tab stop).
$('#matrix').addEventListener('keydown', (event) => {
  const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  const button = event.target.closest('button');
  if (!button || !moves[event.key]) return;
  event.preventDefault();
  const [dt, dr] = moves[event.key];
  const t = Math.min(9, Math.max(0, Number(button.dataset.true) + dt));
  const r = Math.min(9, Math.max(0, Number(button.dataset.read) + dr));
  focusCell(t, r);
});

function cellButton(t, r) {
  return $(`#matrix button[data-true="${t}"][data-read="${r}"]`);
}

function focusCell(t, r) {
  for (const b of document.querySelectorAll('#matrix button')) b.tabIndex = -1;
  const target = cellButton(t, r);
  target.tabIndex = 0;
  target.focus();
}

async function showCell(t, r) {
  selectedCell = [t, r];
  saveState();
  for (const b of document.querySelectorAll('#matrix button')) {
    b.setAttribute('aria-pressed', String(b === cellButton(t, r)));
  }
  const pretrained = chosenModel();
  const query = `true=${t}&read=${r}&limit=${CELL_EXAMPLES}`
    + (pretrained === null ? '' : `&pretrained=${pretrained}`);
  const box = $('#cell');
  try {
    const data = await api(`confusion/examples?${query}`);
    if (!selectedCell || selectedCell[0] !== t || selectedCell[1] !== r) return;
    const what = t === r ? `${t}s read right` : `${t}s read as ${r}`;
    $('#cell-title').textContent = data.count === 0 ? `No ${what}.`
      : `${data.count} ${what}` + (data.count > data.examples.length
        ? `: the ${data.examples.length} read most confidently` : '')
      + ` (${modelName(data.model)}'s confidence under each)`;
    $('#cell-examples').replaceChildren(...data.examples.map((example) => {
      const item = document.createElement('li');
      const image = document.createElement('img');
      image.src = example.image;
      image.alt = `a ${t} read as ${r}, ${confidence(example.confidence)} confident`;
      const caption = document.createElement('span');
      caption.textContent = confidence(example.confidence);
      item.append(image, caption);
      return item;
    }));
    box.hidden = false;
  } catch (err) {
    fail(err.message, 'load');
  }
}

// ---------------------------------------------------------------------------------------
// Shareable: the chosen net, the open panels and the chosen cell live in the address
// (#model=v6&open=compare,confusion&cell=4-9), so that a link shows the same view.

let restored = false;  // nothing is written to the address before it has been read

function saveState() {
  if (!restored) return;
  const state = new URLSearchParams();
  const pretrained = chosenModel();
  state.set('model', pretrained === null ? 'live' : `v${pretrained}`);
  state.set('open', panels.filter((p) => p.open).map((p) => p.dataset.panel).join(','));
  if (selectedCell) state.set('cell', selectedCell.join('-'));
  window.history.replaceState(null, '', `#${state}`);  // `history` is the learning curve's
}

function restoreState() {
  const state = new URLSearchParams(location.hash.slice(1));
  const model = state.get('model');
  const picker = $('#model-choice');
  if (model === 'live') picker.value = '';
  else if (model && [...picker.options].some((o) => `v${o.value}` === model)) {
    picker.value = model.slice(1);
  }
  if (state.has('open')) {
    const open = state.get('open').split(',');
    for (const panel of panels) panel.open = open.includes(panel.dataset.panel);
  }
  const cell = /^([0-9])-([0-9])$/.exec(state.get('cell') || '');
  selectedCell = cell ? [Number(cell[1]), Number(cell[2])] : null;
  restored = true;
  showModelInfo();
}

async function start() {
  try {
    await loadModels();
    restoreState();
    await loadHidden();
    await loadGallery();
    hideError('load');
  } catch (err) {
    fail(err.message, 'load');
  }
  await loadConfusion();
  saveState();
}

window.addEventListener('hashchange', () => {
  restoreState();
  loadHidden().catch((err) => fail(err.message, 'load'));
  loadConfusion();
  wantPrediction();
});

// ---------------------------------------------------------------------------------------

redraw();
showNoPrediction('Draw a digit to see what the network thinks.');
drawChart();
start();
