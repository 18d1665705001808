// Training the live net, resetting it and copying the best shipped model into it; progress
// and the learning curve come from /train/events. Train is disabled while a training runs
// and, with one sentence why, on a server that cannot train.

import { api } from './api.js';
import { drawChart } from './chart.js';
import { $, describe, percent, plural, words } from './dom.js';
import { clearEverywhere, slot } from './messages.js';

export function trainingPanel({ models, replaced }) {
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

  function showTrainable() {
    if (!models()) return;  // not loaded yet
    const { settings } = models();
    trainButton.disabled = asking || !!job?.running || settings.can_train === false;
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
    messages.say(`Training the live network for ${plural(epochs, 'epoch')}`
      + `${samples ? ' on MNIST and your drawings' : ''}…`);
    try {
      const result = await api.train(epochs, samples);
      messages.say(trained(result, epochs, settings), details(result, settings));
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
    return `Trained ${plural(epochs, 'more epoch')}: the live net now reads `
      + `${percent(now)} of digits it never trained on right`
      + (before?.mnist == null ? '.' : ` (${percent(before.mnist)} before).`);
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

  async function replace(call, done) {
    confirm.hidden = true;
    pending = null;
    try {
      await call();
      job = null;
      history = [];
      showProgress();
      drawChart(history);
      messages.say(done);
      replaced({ toLive: true });
    } catch (err) {
      messages.fail(err.message, err.status === 409 ? 'busy' : 'action');
    }
  }

  // A net trained on this server is work: ask before throwing it away.
  function ask(call, done, what) {
    const { live } = models();
    if (live.validation_accuracy == null) {
      replace(call, done);
      return;
    }
    pending = () => replace(call, done);
    $('#confirm-text').textContent = `${what} throws away the live net you trained `
      + `(${plural(live.epochs, 'epoch')}, ${percent(live.validation_accuracy)} validation `
      + 'accuracy). There is no undo.';
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
    `The live network is now a fresh, untrained ${describe(models().settings.default_net.sizes)}`
    + ' net.', 'Reset'));
  $('#pretrain').addEventListener('click', () => ask(api.pretrain,
    'The live network is now a copy of the best pretrained model.', 'Pretrain'));

  function showProgress() {
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
    showTrainable();
  }

  // A progress or epoch event: the first one of a job starts a new curve.
  function updateJob(update) {
    if (!job || !job.running) {
      job = { running: true, epoch: 1, batch: 0, batches: 0 };
      history = [];
    }
    Object.assign(job, update);
  }

  function listen() {
    const events = api.trainEvents();
    events.addEventListener('status', (event) => {
      const status = JSON.parse(event.data);
      job = status.epochs ? status : null;
      history = status.history;
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
    events.addEventListener('done', (event) => {
      const result = JSON.parse(event.data);
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
    start: listen,
    running: () => !!job?.running,
    versionLive() {
      epochsBox.max = String(models().settings.max_epochs);  // the server's limit
      $('#pretrain').disabled = models().best == null;
      showTrainable();
    },
  };
}
