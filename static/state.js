// The address holds the view (#model=v6&open=compare,confusion&cell=4-9), so that a link shows
// the same: the chosen net, the open panels and the chosen confusion cell. Nothing is written
// before the address has been read.

let restored = false;

export function read() {
  const state = new URLSearchParams(location.hash.slice(1));
  const cell = /^([0-9])-([0-9])$/.exec(state.get('cell') || '');
  restored = true;
  return {
    model: state.get('model'),  // 'live', 'v6' or null
    open: state.has('open') ? state.get('open').split(',') : null,
    cell: cell ? [Number(cell[1]), Number(cell[2])] : null,
  };
}

export function write({ pretrained, open, cell }) {
  if (!restored) return;
  const state = new URLSearchParams();
  state.set('model', pretrained === null ? 'live' : `v${pretrained}`);
  state.set('open', open.join(','));
  if (cell) state.set('cell', cell.join('-'));
  window.history.replaceState(null, '', `#${state}`);
}
