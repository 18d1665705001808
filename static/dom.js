// A tiny element helper and the page's number formats: nothing here knows a panel.

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

// el('button', { type: 'button', text: '4', onclick: f, 'aria-label': "It's a 4" }, child…):
// `text` sets the text, `on…` adds a listener, `class` and `dataset` set those, `true` sets an
// empty attribute and `false` or null leaves it out; children are nodes or strings.
export function el(tag, props = {}, ...children) {
  const node = tag === 'svg' || props.svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false || key === 'svg') continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.setAttribute('class', value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

// A server's sentence as nodes: `make data` becomes <code>make data</code>, not backticks.
export const words = (text) => text.split('`').map((part, i) => (i % 2 ? el('code', { text: part })
  : part));

export const percent = (x, digits = 1) => `${(100 * x).toFixed(digits)}%`;
export const confidence = (x) => (x > 0.999 ? '>99.9%' : percent(x));
export const plural = (n, word) => `${n.toLocaleString('en')} ${word}${n === 1 ? '' : 's'}`;
export const describe = (sizes) => sizes.join('-');
// An answer's "model": "live" (the class net), "v6" (a shipped model) or one's own net's name.
const shipped = (model) => /^v[0-9]+$/.test(model);
export const modelName = (model) => (model === 'live' ? 'Class net'
  : shipped(model) ? model : 'Your net');
export const whoAnswers = (model) => (model === 'live' ? 'the class net'
  : shipped(model) ? `pretrained model ${model}` : 'your net');
// On a touch screen without a mouse, keyboard hints are noise.
export const touchOnly = () => matchMedia('(hover: none) and (pointer: coarse)').matches;

// A finger's tap keeps on lifting: Chromium drops the click of a tap that comes right after a
// quick stroke on the pad (it takes the tap for the end of a fling). For buttons beside it.
export function onPress(button, action) {
  let touched = -Infinity;  // when a finger last pressed it
  button.addEventListener('pointerup', (event) => {
    if (event.pointerType !== 'touch' || button.disabled) return;
    touched = event.timeStamp;
    action();
  });
  button.addEventListener('click', (event) => {
    if (event.timeStamp - touched > 1000) action();  // else the tap's own click
  });
}
