// The address holds the view (#net=<name>&model=v6&open=compare,confusion&cell=4-9), so that a
// link shows the same: one's own net (its name is its key), the chosen net, the open panels
// and the chosen confusion cell. Nothing is written
// before the address has been read.

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
  };
}

export function write({ net, pretrained, open, cell }) {
  if (!restored) return;
  const state = new URLSearchParams();
  if (net) state.set('net', net);
  state.set('model', pretrained === null ? 'live' : `v${pretrained}`);
  state.set('open', open.join(','));
  if (cell) state.set('cell', cell.join('-'));
  window.history.replaceState(null, '', `#${state}`);
}
