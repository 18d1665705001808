// Training the chosen net (one's own, made on the first Train, Reset or Pretrain, or the class
// net), resetting it and copying the best shipped model into it; progress, the place in the
// training queue and the learning curve come from /train/events. Train is disabled while a
// training runs or waits and, with one sentence why, on a server that cannot train.

import { api } from './api.js';
import { drawChart } from './chart.js';
import { $, describe, percent, plural, words } from './dom.js';
import { clearEverywhere, slot } from './messages.js';

// opened(events): another panel listens to the same /train/events (the playground).
export function trainingPanel({ models, replaced, own, makes, whose, opened }) {
  const messages = slot($('#train-status'), $('#train-error'));
  const trainButton = $('#train');
  const why = $('#train-why');
  const epochsBox = $('#epochs');
  const bar = $('#progress');
  const label = $('#progress-label');
  const confirm = $('#confirm');
  let job = null;  // {running, epoch, epochs, batch, batches}: the current or last job
  let history = [];  // its epochs: {epoch, val_accuracy, ...}
  let asking = false;  // this page's /train request is under way
  let pending = null;  // the replacement waiting for "Yes, replace it"
  let waiting = null;  // this net's training waits in the queue: its place (1: next)
  let events = null;  // the open /train/events of the chosen net
  const Whose = () => whose()[0].toUpperCase() + whose().slice(1);

  function showTrainable() {
    if (!models()) return;  // not loaded yet
    const { settings } = models();
    // (A training of the class net does not hold back the first Train: it makes one's own.)
    trainButton.disabled = asking || ((!!job?.running || waiting != null) && !makes())
      || settings.can_train === false;
    why.hidden = settings.can_train !== false;
    if (!why.hidden) {
      const sentence = settings.cannot_train;
      why.replaceChildren(...words(sentence[0].toUpperCase() + sentence.slice(1)));
    }
  }

  async function train() {
    const { settings } = models();
    const text = epochsBox.value.trim();
    const epochs = Number(text);
    if (!text || !Number.isInteger(epochs) || epochs < 1 || epochs > settings.max_epochs) {
      messages.fail(text ? `Epochs must be a whole number from 1 to ${settings.max_epochs}, `
        + `not ${text}.` : `Type how many epochs to train: a whole number from 1 to `
        + `${settings.max_epochs}.`, 'epochs');
      return;
    }
    const samples = $('#with-samples').checked;
    asking = true;
    showTrainable();
    try {
      await own('live');  // the first change makes one's own net, a copy of the class net
      messages.say(`Training ${whose()} for ${plural(epochs, 'epoch')}`
        + `${samples ? ' on MNIST and your drawings' : ''}…`);
      const result = await api.train(epochs, samples);
      if (result.promoted === false) messages.fail(notLive(result));
      else messages.say(trained(result, epochs, settings), details(result, settings));
      replaced();
    } catch (err) {
      messages.fail(err.message, err.status === 409 ? 'busy' : 'action');
    } finally {
      asking = false;
      showTrainable();
    }
  }

  // In a student's words: how many unseen digits it now reads right, before -> after.
  function trained({ validation_accuracy: accuracy, before, after }, epochs) {
    const now = after?.mnist ?? accuracy;
    return `Trained ${plural(epochs, 'more epoch')}: ${whose()} now reads `
      + `${percent(now)} of digits it never trained on right`
      + (before?.mnist == null ? '.' : ` (${percent(before.mnist)} before).`);
  }

  // A training the gate held back: kept as a version, not answering (service/gate.py).
  function notLive(result) {
    return `Trained, but kept as version ${result.version}, not live: ${result.gate.reason}. `
      + `${Whose()} answers as before; its versions offer "Make live" to use it anyway.`;
  }

  function details(result, settings) {
    const { before, after, samples } = result;
    let text = `${plural(result.epochs, 'epoch')} in total; ${result.accuracy} of `
      + `${settings.score_samples} random validation images right; `
      + `${result.seconds.toFixed(1)} s.`;
    if (before && after) {
      text += ` MNIST validation accuracy ${percent(before.mnist)} → ${percent(after.mnist)}`;
      if (samples && after.samples != null) {
        text += `; your ${plural(after.samples_count, 'held-out drawing')} `
          + `${percent(before.samples)} → ${percent(after.samples)}`;
      } else if (samples) {
        text += '; no held-out drawings yet (every fifth kept drawing is held out to check)';
      }
      text += '.';
    }
    return text;
  }

  // from: what one's own net is made from when there is none yet ("fresh" is already reset).
  async function replace(call, done, from) {
    confirm.hidden = true;
    pending = null;
    try {
      const { made } = await own(from);
      if (!(made && from === 'fresh')) await call();
      job = null;
      history = [];
      showProgress();
      drawChart(history);
      messages.say(`${Whose()} ${done}`);
      replaced({ toLive: true });
    } catch (err) {
      messages.fail(err.message, err.status === 409 ? 'busy' : 'action');
    }
  }

  // A net trained on this server is work: ask before throwing it away.
  // (A new net of one's own replaces nothing; an old version can be brought back.)
  function ask(call, done, what, from) {
    const { live } = models();
    if (live.validation_accuracy == null || makes()) {
      replace(call, done, from);
      return;
    }
    pending = () => replace(call, done, from);
    $('#confirm-text').textContent = `${what} replaces ${whose()}, which was trained `
      + `(${plural(live.epochs, 'epoch')}, ${percent(live.validation_accuracy)} validation `
      + 'accuracy). Its versions keep it: "Go back to this version" brings it back.';
    confirm.hidden = false;
    $('#confirm-yes').focus();
  }

  $('#confirm-yes').addEventListener('click', () => pending?.());
  $('#confirm-no').addEventListener('click', () => {
    confirm.hidden = true;
    pending = null;
  });
  trainButton.addEventListener('click', train);
  $('#reset').addEventListener('click', () => ask(api.reset,
    `is now a fresh, untrained ${describe(models().settings.default_net.sizes)} net.`,
    'Reset', 'fresh'));
  $('#pretrain').addEventListener('click', () => ask(api.pretrain,
    'is now a copy of the best pretrained model.', 'Pretrain', 'live'));

  function showProgress() {
    if (waiting != null) {
      bar.value = 0;
      // Its place (1: next) counts the trainings it waits for: those queued before it, and
      // for the first, the one running now.
      label.textContent = `Waiting for ${plural(waiting, 'training')} ahead of yours; `
        + (waiting === 1 ? 'yours is next.' : `yours is number ${waiting} in line.`);
    } else if (!job) {
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
    showTrainable();
  }

  // A progress or epoch event: the first one of a job starts a new curve.
  function updateJob(update) {
    waiting = null;
    if (!job || !job.running) {
      job = { running: true, epoch: 1, batch: 0, batches: 0 };
      history = [];
    }
    Object.assign(job, update);
  }

  // The chosen net's events (opened again when another net is chosen).
  function listen() {
    events?.close();
    events = api.trainEvents();
    opened?.(events);
    waiting = null;
    events.addEventListener('status', (event) => {
      const status = JSON.parse(event.data);
      waiting = status.state === 'queued' ? status.position ?? 1 : null;
      job = status.epochs && waiting == null ? status : null;
      history = status.history ?? [];
      if (!job?.running) clearEverywhere('busy');
      drawChart(history);
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
      drawChart(history);
      showProgress();
    });
    events.addEventListener('queued', (event) => {
      waiting = JSON.parse(event.data).position;
      showProgress();
    });
    events.addEventListener('done', (event) => {
      const result = JSON.parse(event.data);
      waiting = null;
      if (job) job.running = false;
      clearEverywhere('busy');  // "busy training" is no longer true
      showProgress();
      if (result.error) messages.fail(`Training stopped: ${result.error}`);
      replaced();
    });
  }

  drawChart(history);
  showProgress();
  return {
    listen,
    running: () => !!job?.running,
    versionLive() {
      epochsBox.max = String(models().settings.max_epochs);  // the server's limit
      $('#train-title').textContent = makes() ? 'Train a net of your own'
        : `Train ${whose() === 'your net' ? 'my net' : 'the class net'}`;
      $('#pretrain').disabled = models().best == null;
      showTrainable();
    },
  };
}
