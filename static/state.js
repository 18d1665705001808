// The address holds the view (#net=<name>&model=v6&open=compare,confusion&cell=4-9), so that a
// link shows the same: one's own net (its name is its key), the chosen net, the open panels
// and the chosen confusion cell; and the playground's set-up (hidden=128-64&activation=relu
// &optimizer=adam&...) with the controls a teacher hid (hide=optimizer,reset). Nothing is
// written before the address has been read.

// The set-up's names, as the library names its options (docs/api.md lists them).
export const SETUP = ['hidden', 'activation', 'optimizer', 'momentum', 'learning_rate',
  'batch_size', 'weight_decay', 'schedule', 'epochs'];

let restored = false;

export function read() {
  const state = new URLSearchParams(location.hash.slice(1));
  const cell = /^([0-9])-([0-9])$/.exec(state.get('cell') || '');
  restored = true;
  const net = state.get('net');
  return {
    net: net === 'class' || /^[A-Za-z0-9_-]{22}$/.test(net) ? net : null,  // or the class net
    model: state.get('model'),  // 'live', 'v6' or null
    open: state.has('open') ? state.get('open').split(',') : null,
    cell: cell ? [Number(cell[1]), Number(cell[2])] : null,
    // Raw words (the playground checks them against the server's choices and limits).
    setup: Object.fromEntries(SETUP.filter((key) => state.has(key))
      .map((key) => [key, state.get(key).slice(0, 100)])),
    hide: state.has('hide') ? state.get('hide').split(',').filter(Boolean) : [],
  };
}

export function write({ net, pretrained, open, cell, setup = {}, hide = [] }) {
  if (!restored) return;
  const state = new URLSearchParams();
  if (net) state.set('net', net);
  state.set('model', pretrained === null ? 'live' : `v${pretrained}`);
  state.set('open', open.join(','));
  for (const key of SETUP) if (setup[key] != null && setup[key] !== '') state.set(key, setup[key]);
  if (hide.length) state.set('hide', hide.join(','));
  if (cell) state.set('cell', cell.join('-'));
  window.history.replaceState(null, '', `#${state}`);
}
