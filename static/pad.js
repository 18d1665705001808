// The drawing pad: strokes are lists of points in canvas pixels, so undo can redraw the rest.
// It tells its owner when the drawing changed (onDraw) or became empty (onEmpty).

import { $ } from './dom.js';

export function createPad(canvas, { onDraw, onEmpty, onStart }) {
  const ink = canvas.getContext('2d');
  const brush = canvas.width / 12;  // about an MNIST pen stroke, relative to the digit box
  // /predict gets the drawing shrunk to a sixth (56x56 for the 336 pad): far fewer pixels to
  // decode on the server, still nearly 3x the 20 px of an MNIST digit (docs/performance.md).
  const sent = document.createElement('canvas');
  sent.width = sent.height = Math.round(canvas.width / 6);
  const shrink = sent.getContext('2d');
  shrink.imageSmoothingQuality = 'high';
  const undoButton = $('#undo');
  const clearButton = $('#clear');

  let strokes = [];
  let stroke = null;  // the stroke being drawn
  let penId = null;  // the pointer drawing it; other fingers are ignored
  let generation = 0;  // bumped by clear and undo, so that late answers are dropped

  function paper() {
    ink.fillStyle = '#fff';
    ink.fillRect(0, 0, canvas.width, canvas.height);
    ink.lineWidth = brush;
    ink.lineCap = 'round';
    ink.lineJoin = 'round';
    ink.strokeStyle = ink.fillStyle = '#000';
  }

  function dot([x, y]) {
    ink.beginPath();
    ink.arc(x, y, brush / 2, 0, 2 * Math.PI);
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
    undoButton.disabled = clearButton.disabled = strokes.length === 0;
  }

  function point(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
      (event.clientY - box.top) * canvas.height / box.height];
  }

  canvas.addEventListener('pointerdown', (event) => {
    if (stroke || event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    if (!strokes.length) onStart();
    penId = event.pointerId;
    stroke = [point(event)];
    strokes.push(stroke);
    dot(stroke[0]);
    undoButton.disabled = clearButton.disabled = false;
    onDraw();
  });

  canvas.addEventListener('pointermove', (event) => {
    if (!stroke || event.pointerId !== penId) return;
    // A pen or a fast mouse reports several positions per event: use them all.
    for (const e of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) {
      const p = point(e);
      line(stroke[stroke.length - 1], p);
      stroke.push(p);
    }
    onDraw();
  });

  function endStroke(event) {
    if (!stroke || event.pointerId !== penId) return;
    stroke = penId = null;
    onDraw();
  }
  canvas.addEventListener('pointerup', endStroke);
  canvas.addEventListener('pointercancel', endStroke);

  const pad = {
    get generation() { return generation; },
    get empty() { return strokes.length === 0; },
    clear() {
      strokes = [];
      stroke = penId = null;
      generation += 1;
      redraw();
      onEmpty();
    },
    undo() {
      if (stroke || !strokes.length) return;
      strokes.pop();
      generation += 1;
      redraw();
      if (strokes.length) onDraw();
      else onEmpty();
    },
    image() {  // the drawing as /predict gets it: a PNG data URL, shrunk
      shrink.drawImage(canvas, 0, 0, sent.width, sent.height);
      return sent.toDataURL('image/png');
    },
  };

  clearButton.addEventListener('click', pad.clear);
  undoButton.addEventListener('click', pad.undo);
  document.addEventListener('keydown', (event) => {
    if (event.target.matches('input, select, textarea')) return;
    if (event.key === 'Escape' || event.key === 'Backspace') {
      event.preventDefault();
      pad.clear();
    } else if (event.key.toLowerCase() === 'z' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      pad.undo();
    }
  });
  redraw();
  return pad;
}
