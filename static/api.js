// The API client: every request the page makes goes through here (relative URLs: the page is
// served at /). The chosen net (useNet) goes with every request that reads or changes a net,
// in one place: query() and post() below; /models and /nets name their net themselves.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let chosen = null;  // a private net's name; null: the shared one, the class net ("live")

function query(path, params = {}, net = chosen) {
  const search = new URLSearchParams();
  if (net) search.set('net', net);
  for (const [key, value] of Object.entries(params)) {
    if (value != null) search.set(key, value);
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

// body: sent as JSON; bytes (an ArrayBuffer or Blob): sent as they are (a net's NPZ file).
async function call(path, { method = 'GET', body, bytes } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: bytes !== undefined ? { 'Content-Type': 'application/octet-stream' }
        : body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: bytes ?? (body === undefined ? undefined : JSON.stringify(body)),
    });
  } catch (err) {
    throw new ApiError(0, `Cannot reach the server (${err.message}). Is it still running?`);
  }
  const text = await response.text();
  let data = text;
  try { data = JSON.parse(text); } catch { /* plain text, e.g. "OK" */ }
  if (!response.ok) throw new ApiError(response.status, explain(response, data));
  return { status: response.status, data };
}

const withNet = (body = {}) => (chosen ? { ...body, net: chosen } : body);
const get = async (path, params) => (await call(query(path, params))).data;
const post = async (path, body) => (await call(path, { method: 'POST', body: withNet(body) }))
  .data;
const netPath = (name) => `nets/${encodeURIComponent(name)}`;

function explain(response, data) {
  const said = (data && data.error) || (typeof data === 'string' && data.trim())
    || response.statusText;
  if (response.status === 409) {
    return `The server is busy training; try again when it has finished. (${said})`;
  }
  if (response.status === 401 || response.status === 403) {
    return `Only the teacher may do this here (it needs the server's token). (${said})`;
  }
  if (response.status === 503) return `Not available on this server: ${said}`;
  return `Error ${response.status}: ${said}`;
}

async function dataUrl(path) {
  const blob = await fetch(path).then((r) => r.blob());
  return new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.readAsDataURL(blob);
  });
}

export const api = {
  useNet: (name) => { chosen = name; },  // then every request goes with it
  models: async () => (await call('models')).data,
  // shape: {sizes, options} of a fresh net (the playground's)
  createNet: (from, shape = {}) => call('nets', { method: 'POST', body: { from, ...shape } })
    .then((r) => r.data),
  importNet: (bytes) => call('nets/import', { method: 'POST', bytes }).then((r) => r.data),
  // A download of the chosen net (a shipped model's when one is given): npz, onnx or card.
  exportUrl: (format, pretrained = null) => (pretrained == null
    ? `${netPath(chosen ?? 'live')}/export?format=${format}`
    : `models/${pretrained}/export?format=${format}`),
  net: (name) => call(netPath(name)).then((r) => r.data),
  versions: (name) => call(`${netPath(name)}/versions`).then((r) => r.data),
  ask: (name) => call(`${netPath(name)}/ask`).then((r) => r.data),
  rollback: (name, version) => call(`${netPath(name)}/rollback`,
    { method: 'POST', body: { version } }).then((r) => r.data),
  promote: (name, version) => call(`${netPath(name)}/promote`,
    { method: 'POST', body: { version } }).then((r) => r.data),
  hidden: (pretrained) => get('model/hidden', { pretrained }),
  predict: (body) => post('predict', body),
  compare: (image) => post('compare', { image }),
  confusion: (pretrained) => get('confusion', { pretrained }),
  confusionCell: (pretrained, t, r, limit) => get('confusion/examples',
    { true: t, read: r, limit, pretrained }),
  samples: (limit) => get('samples', { limit }),
  keep: (image, label, share) => call('samples', { method: 'POST',
    body: withNet(share ? { image, label, share } : { image, label }) }),
  deleteSample: (id) => call(query(`samples/${id}`), { method: 'DELETE' }),
  // the class net's review of a drawing judged mislabelled: 'approve' or 'reject' (the token)
  review: (id, verdict) => call(`samples/${id}/review`, { method: 'POST', body: { verdict } }),
  sampleImage: (id) => query(`samples/${id}/image`),
  sampleDataUrl: (id) => dataUrl(query(`samples/${id}/image`)),
  train: (epochs, samples) => post('train', { epochs, samples }),
  adapt: () => post('train', { samples: true }),  // the recipe for a net's own drawings
  trainWith: (epochs, options) => post('train', { epochs, options }),  // the playground's
  reset: () => post('reset'),
  pretrain: () => post('pretrain'),
  trainEvents: () => new EventSource(query('train/events')),
};
