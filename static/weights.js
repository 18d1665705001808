// The first layer's weights of the chosen net (/model/hidden), one load per net and version,
// shared by the panels that draw them; and how one unit's 784 weights are drawn.

import { api } from './api.js';

const SIZE = 28;
const POSITIVE = [178, 24, 43];  // diverging colours: red positive, white zero, blue negative
const NEGATIVE = [33, 102, 172];

let current = null;  // {key, promise}: the latest load wins

export function load(pretrained, version) {
  const key = `${pretrained}:${version}`;
  if (current?.key !== key) current = { key, promise: api.hidden(pretrained) };
  return current.promise;
}

export function unitImage(weights, index) {
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
