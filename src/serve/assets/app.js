// mnist-cnn serve: the page's behaviour. Plain JavaScript, no framework, no build step.
'use strict';

const $ = (id) => document.getElementById(id);
let info = null;
let modelVersion = 0;

async function api(path, options) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = response.status + ' ' + response.statusText;
    try { message = (await response.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.blob();
}

function percent(p) { return (p * 100).toFixed(1) + '%'; }

function classCount() { return info && info.model ? info.model.class_names.length : 10; }

// ---- tabs ---------------------------------------------------------------------------------
let currentTab = 'draw';
function showTab(name) {
  currentTab = name;
  document.querySelectorAll('.tab').forEach((b) => b.classList.toggle('active', b.dataset.tab === name));
  document.querySelectorAll('.panel').forEach((p) => p.classList.toggle('active', p.id === name));
  if (name === 'test') loadMetrics();
  if (name === 'training') loadRuns().then(pollHistory);
}
document.querySelectorAll('.tab').forEach((b) => b.addEventListener('click', () => showTab(b.dataset.tab)));

// ---- the model ----------------------------------------------------------------------------
async function loadInfo() {
  info = await api('/api/info');
  const m = info.model;
  if (m) {
    modelVersion = m.version;
    $('model-info').textContent = `${m.architecture}, ${m.parameters.toLocaleString('en')} parameters, ` +
      `trained ${m.completed_epochs}/${m.epochs} epochs`;
    $('pipeline').textContent = `Your drawing, prepared as the model's training pictures were ` +
      `(${m.pipeline.name}, as predict and inspect prepare pictures): ${m.pipeline.description}.`;
  } else {
    $('model-info').textContent = `no trained model in ${info.model_dir} yet: waiting for ` +
      '`mnist-cnn train` to finish its first epoch';
  }
  $('collect').hidden = !(info.collect && m);
  if (info.collect && m) {
    const select = $('collect-class');
    select.replaceChildren(...m.class_names.map((name, i) => new Option(name, i)));
  }
}

// ---- drawing ------------------------------------------------------------------------------
const pad = $('pad');
const pen = pad.getContext('2d');
let drawing = false;
let drawn = false;
let last = null;

function clearPad() {
  pen.fillStyle = '#fff';
  pen.fillRect(0, 0, pad.width, pad.height);
  drawn = false;
  $('top-class').textContent = '-';
  $('bars').replaceChildren();
  $('draw-status').textContent = 'Draw a digit on the white square.';
  const input = $('input').getContext('2d');
  input.fillStyle = '#000';
  input.fillRect(0, 0, $('input').width, $('input').height);
  $('layer-pictures').replaceChildren();
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: (event.clientX - box.left) * pad.width / box.width,
    y: (event.clientY - box.top) * pad.height / box.height,
  };
}

function stroke(from, to) {
  pen.strokeStyle = '#000';
  pen.lineWidth = 22;
  pen.lineCap = 'round';
  pen.lineJoin = 'round';
  pen.beginPath();
  pen.moveTo(from.x, from.y);
  pen.lineTo(to.x, to.y);
  pen.stroke();
}

pad.addEventListener('pointerdown', (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = point(event);
  stroke(last, last);
  changed();
});
pad.addEventListener('pointermove', (event) => {
  if (!drawing) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of (events.length ? events : [event])) {
    const p = point(e);
    stroke(last, p);
    last = p;
  }
  changed();
});
for (const type of ['pointerup', 'pointercancel']) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    changed();
  });
}
$('clear').addEventListener('click', clearPad);

// At most one prediction in flight; the latest drawing is sent when it returns.
let inFlight = false;
let dirty = false;
let layersOpen = false;

function changed() {
  drawn = true;
  dirty = true;
  pump();
}

function padBlob() {
  return new Promise((resolve) => pad.toBlob(resolve, 'image/png'));
}

async function pump() {
  if (inFlight || !dirty || !drawn) return;
  dirty = false;
  inFlight = true;
  try {
    const body = await padBlob();
    const result = await api(`/api/predict?top=${classCount()}&input=true`, {
      method: 'POST', headers: { 'Content-Type': 'image/png' }, body,
    });
    showPrediction(result.predictions[0]);
  } catch (error) {
    $('draw-status').textContent = error.message;
  }
  inFlight = false;
  if (dirty) pump();
  else if (layersOpen && !drawing) showLayers('layer-pictures', () => padBlob().then((b) => ({ type: 'image/png', body: b })));
}

function barRows(element, top) {
  const best = top[0] ? top[0].class : -1;
  element.replaceChildren(...top.flatMap((c) => {
    const name = document.createElement('span');
    name.textContent = c.name;
    const track = document.createElement('div');
    const bar = document.createElement('div');
    bar.className = c.class === best ? 'bar best' : 'bar';
    bar.style.width = Math.max(1, c.probability * 180) + 'px';
    track.append(bar);
    const value = document.createElement('span');
    value.textContent = percent(c.probability);
    return [name, track, value];
  }));
}

function showPrediction(prediction) {
  const top = prediction.top;
  const best = top[0];
  const head = $('top-class');
  head.textContent = best.name;
  const small = document.createElement('small');
  small.textContent = percent(best.probability);
  head.append(small);
  barRows($('bars'), top);
  $('draw-status').textContent = '';
  if (prediction.input && info.model) {
    drawPixels($('input'), prediction.input, info.model.rows, info.model.cols, info.model.channels);
  }
}

// `pixels`: `channels` interleaved values a pixel (1: grey, 3: red, green, blue).
function drawPixels(canvas, pixels, rows, cols, channels = 1) {
  const small = document.createElement('canvas');
  small.width = cols;
  small.height = rows;
  const context = small.getContext('2d');
  const image = context.createImageData(cols, rows);
  for (let i = 0; i < rows * cols; i++) {
    const at = i * channels;
    const rgb = channels === 3 ? pixels.slice(at, at + 3) : [pixels[at], pixels[at], pixels[at]];
    image.data.set([...rgb, 255], i * 4);
  }
  context.putImageData(image, 0, 0);
  const target = canvas.getContext('2d');
  target.imageSmoothingEnabled = false;
  target.clearRect(0, 0, canvas.width, canvas.height);
  target.drawImage(small, 0, 0, canvas.width, canvas.height);
}

// ---- layers -------------------------------------------------------------------------------
let layerGeneration = 0;

// Fetches every picture of `inspect` for the input `body()` gives and shows them in `target`.
async function showLayers(target, body) {
  if (!info || !info.model) return;
  const generation = ++layerGeneration;
  const element = $(target);
  try {
    const { type, body: payload } = await body();
    const blobs = await Promise.all(info.model.pictures.map((name) =>
      api(`/api/inspect/${name}`, { method: 'POST', headers: { 'Content-Type': type }, body: payload })));
    if (generation !== layerGeneration) return;
    element.replaceChildren(...blobs.map((blob, i) => {
      const img = document.createElement('img');
      img.src = URL.createObjectURL(blob);
      img.alt = info.model.pictures[i];
      img.onload = () => URL.revokeObjectURL(img.src);
      return img;
    }));
  } catch (error) {
    element.textContent = error.message;
  }
}

$('show-layers').addEventListener('click', () => {
  layersOpen = !layersOpen;
  $('layers').hidden = !layersOpen;
  $('show-layers').textContent = layersOpen ? 'Hide the layers' : 'Show the layers';
  if (layersOpen && drawn) showLayers('layer-pictures', () => padBlob().then((b) => ({ type: 'image/png', body: b })));
});

// ---- collecting ---------------------------------------------------------------------------
$('collect-save').addEventListener('click', async () => {
  if (!drawn) { $('collect-status').textContent = 'draw something first'; return; }
  const klass = Number($('collect-class').value);
  try {
    const result = await api('/api/collect', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ class: klass, image: pad.toDataURL('image/png') }),
    });
    $('collect-status').textContent = 'saved ' + result.saved;
  } catch (error) {
    $('collect-status').textContent = error.message;
  }
});

// ---- the test set -------------------------------------------------------------------------
let testIndex = 0;

async function loadTest(index) {
  if (!info || !info.test_images) return;
  testIndex = Math.max(0, Math.min(info.test_images - 1, index));
  $('test-index').value = testIndex;
  try {
    const item = await api(`/api/test/${testIndex}`);
    drawPixels($('test-image'), item.pixels, item.rows, item.cols, info.model.channels);
    const names = info.model.class_names;
    const best = item.top[0];
    $('test-caption').textContent = `test image ${item.index}: label ${names[item.label]}, ` +
      `predicted ${best.name} (${percent(best.probability)})` + (item.correct ? '' : ' - a mistake');
    barRows($('test-bars'), item.top.slice(0, 5));
    if (!$('test-layer-card').hidden) showTestLayers();
  } catch (error) {
    $('test-caption').textContent = error.message;
  }
}

function showTestLayers() {
  $('test-layer-card').hidden = false;
  showLayers('test-layer-pictures', async () => ({
    type: 'application/json', body: JSON.stringify({ test_index: testIndex }),
  }));
}

$('test-go').addEventListener('click', () => loadTest(Number($('test-index').value)));
$('test-index').addEventListener('change', () => loadTest(Number($('test-index').value)));
$('test-prev').addEventListener('click', () => loadTest(testIndex - 1));
$('test-next').addEventListener('click', () => loadTest(testIndex + 1));
$('test-layers').addEventListener('click', showTestLayers);

let metricsVersion = -1;

async function loadMetrics() {
  if (!info || !info.model || metricsVersion === modelVersion) return;
  if (!info.test_images) { $('accuracy').textContent = 'no test split'; return; }
  try {
    const metrics = await api('/api/metrics');
    metricsVersion = metrics.model_version;
    $('accuracy').textContent = `accuracy ${metrics.accuracy.toFixed(4)}, loss ${metrics.loss.toFixed(4)}`;
    const names = metrics.class_names;
    const table = $('confusion');
    const header = document.createElement('tr');
    header.append(document.createElement('th'), ...names.map((n) => {
      const th = document.createElement('th');
      th.textContent = n;
      return th;
    }));
    const biggest = Math.max(...metrics.confusion.flat());
    const rows = metrics.confusion.map((row, label) => {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.textContent = names[label];
      tr.append(th, ...row.map((count, predicted) => {
        const td = document.createElement('td');
        td.textContent = count;
        const t = count === 0 ? 0 : Math.log(1 + count) / Math.log(1 + biggest);
        td.style.background = label === predicted
          ? `rgba(31, 119, 180, ${0.15 + 0.85 * t})` : (count ? `rgba(255, 127, 14, ${0.2 + 0.8 * t})` : '#f7f7f7');
        td.style.color = t > 0.6 ? '#fff' : '#202020';
        td.title = `true ${names[label]}, predicted ${names[predicted]}: ${count} images`;
        td.dataset.testid = `cell-${label}-${predicted}`;
        td.addEventListener('click', () => gallery(`/api/test?label=${label}&predicted=${predicted}&limit=60`,
          `True ${names[label]}, predicted ${names[predicted]} (${count} images, most confident first)`));
        return td;
      }));
      return tr;
    });
    table.replaceChildren(header, ...rows);
    if (!$('gallery').childElementCount) loadTest(testIndex);
  } catch (error) {
    $('accuracy').textContent = error.message;
  }
}

async function gallery(url, title) {
  $('gallery-title').textContent = title;
  try {
    const result = await api(url);
    const names = info.model.class_names;
    $('gallery').replaceChildren(...result.items.map((item) => {
      const figure = document.createElement('figure');
      const canvas = document.createElement('canvas');
      canvas.width = result.cols;
      canvas.height = result.rows;
      canvas.className = 'pixels';
      drawPixels(canvas, item.pixels, result.rows, result.cols, info.model.channels);
      const caption = document.createElement('figcaption');
      caption.textContent = `#${item.index}: ${names[item.label]} as ${names[item.predicted]} ${percent(item.confidence)}`;
      figure.append(canvas, caption);
      figure.addEventListener('click', () => loadTest(item.index));
      return figure;
    }));
    if (!result.items.length) $('gallery').textContent = 'no images';
  } catch (error) {
    $('gallery').textContent = error.message;
  }
}

$('mistakes').addEventListener('click', () =>
  gallery('/api/test?mistakes=true&limit=25', 'The most confident mistakes'));

// ---- training -----------------------------------------------------------------------------
function niceStep(span, count) {
  const raw = span / count;
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || 10 * magnitude;
}

function lineChart(canvas, title, yLabel, series, legendBelow) {
  const c = canvas.getContext('2d');
  const [w, h] = [canvas.width, canvas.height];
  const box = { left: 64, right: w - 20, top: 36, bottom: h - 48 };
  c.clearRect(0, 0, w, h);
  c.fillStyle = '#fff';
  c.fillRect(0, 0, w, h);
  c.fillStyle = '#202020';
  c.font = '16px system-ui, sans-serif';
  c.textAlign = 'center';
  c.fillText(title, w / 2, 22);
  const points = series.flatMap((s) => s.points);
  if (!points.length) {
    c.font = '14px system-ui, sans-serif';
    c.fillText('no epoch finished yet', w / 2, h / 2);
    return;
  }
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 0.5; y1 += Math.abs(y1) * 0.1 || 0.5; }
  const pad = (y1 - y0) * 0.08;
  y0 -= pad; y1 += pad;
  const X = (x) => box.left + (x - x0) / (x1 - x0) * (box.right - box.left);
  const Y = (y) => box.bottom - (y - y0) / (y1 - y0) * (box.bottom - box.top);
  c.font = '12px system-ui, sans-serif';
  c.strokeStyle = '#e5e5e5';
  c.lineWidth = 1;
  const yStep = niceStep(y1 - y0, 6);
  c.textAlign = 'right';
  for (let y = Math.ceil(y0 / yStep) * yStep; y <= y1; y += yStep) {
    c.beginPath(); c.moveTo(box.left, Y(y)); c.lineTo(box.right, Y(y)); c.stroke();
    c.fillText(y.toFixed(Math.max(0, -Math.floor(Math.log10(yStep)))), box.left - 6, Y(y) + 4);
  }
  const xStep = Math.max(1, niceStep(x1 - x0, 10));
  c.textAlign = 'center';
  for (let x = Math.ceil(x0 / xStep) * xStep; x <= x1; x += xStep) {
    c.fillText(String(x), X(x), box.bottom + 16);
  }
  c.fillText('epoch', (box.left + box.right) / 2, h - 10);
  c.save();
  c.translate(16, (box.top + box.bottom) / 2);
  c.rotate(-Math.PI / 2);
  c.fillText(yLabel, 0, 0);
  c.restore();
  c.strokeStyle = '#404040';
  c.strokeRect(box.left, box.top, box.right - box.left, box.bottom - box.top);
  const legendLeft = box.right - 36 - Math.max(...series.map((s) => c.measureText(s.name).width));
  series.forEach((s, i) => {
    c.strokeStyle = c.fillStyle = s.color;
    c.lineWidth = 2;
    c.setLineDash(s.dashed ? [7, 5] : []);
    c.beginPath();
    s.points.forEach(([x, y], k) => (k ? c.lineTo(X(x), Y(y)) : c.moveTo(X(x), Y(y))));
    c.stroke();
    s.points.forEach(([x, y]) => { c.beginPath(); c.arc(X(x), Y(y), 3, 0, 2 * Math.PI); c.fill(); });
    c.textAlign = 'left';
    const y = legendBelow ? box.bottom - 16 - (series.length - 1 - i) * 18 : box.top + 12 + i * 18;
    c.beginPath(); c.moveTo(legendLeft, y + 1); c.lineTo(legendLeft + 18, y + 1); c.stroke();
    c.setLineDash([]);
    c.fillStyle = '#202020';
    c.fillText(s.name, legendLeft + 24, y + 5);
  });
}

// ---- the run picker: other runs' curves over the served one's ------------------------------
const palette = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
  '#7f7f7f', '#bcbd22', '#17becf'];
const selectedRuns = [];
let runList = { current: null, runs: [] };
let runListAt = 0;

function runColor(name) {
  return palette[(selectedRuns.indexOf(name) + 1) % palette.length];
}

async function loadRuns() {
  runListAt = Date.now();
  try {
    runList = await api('/api/runs');
  } catch (_) {
    return;
  }
  const others = runList.runs.filter((r) => r.name !== runList.current);
  const names = new Set(others.map((r) => r.name));
  for (let i = selectedRuns.length - 1; i >= 0; i--) {
    if (!names.has(selectedRuns[i])) selectedRuns.splice(i, 1);
  }
  const picker = $('run-picker');
  if (!others.length) { picker.textContent = 'no other runs'; return; }
  picker.replaceChildren(...others.map((r) => {
    const label = document.createElement('label');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.value = r.name;
    box.checked = selectedRuns.includes(r.name);
    box.addEventListener('change', () => {
      const at = selectedRuns.indexOf(r.name);
      if (box.checked && at < 0) selectedRuns.push(r.name);
      if (!box.checked && at >= 0) selectedRuns.splice(at, 1);
      loadRuns().then(pollHistory);
    });
    const name = document.createElement('span');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = box.checked ? runColor(r.name) : 'transparent';
    name.append(swatch, r.name + (r.running ? ' (training)' : ''));
    const cells = [
      `${r.completed_epochs}/${r.epochs} epochs`,
      r.best_val_accuracy === null ? '' : `val_acc ${r.best_val_accuracy.toFixed(4)}`,
      r.options.join(' '),
    ].map((text) => { const cell = document.createElement('span'); cell.textContent = text; return cell; });
    cells[2].className = 'muted';
    label.append(box, name, ...cells);
    return label;
  }));
}

async function pollHistory() {
  try {
    const run = await api('/api/history');
    if (currentTab === 'training' && Date.now() - runListAt > 10000) loadRuns();
    const curve = (history, key) => history.filter((e) => e[key] !== null).map((e) => [e.epoch, e[key]]);
    let pair;
    if (!selectedRuns.length) {
      pair = (train, validation) => [
        { name: 'train', color: '#1f77b4', points: curve(run.history, train) },
        { name: 'validation', color: '#ff7f0e', points: curve(run.history, validation) },
      ].filter((s) => s.points.length);
    } else {
      const others = await Promise.all(selectedRuns.map((name) =>
        api(`/api/runs/${encodeURIComponent(name)}/history`).catch(() => null)));
      const runs = [{ name: runList.current || 'this run', color: palette[0], history: run.history }]
        .concat(others.filter(Boolean).map((o) => ({ name: o.name, color: runColor(o.name), history: o.history })));
      pair = (train, validation) => runs.flatMap((r) => [
        { name: r.name, color: r.color, points: curve(r.history, train) },
        { name: r.name + ' (validation)', color: r.color, dashed: true, points: curve(r.history, validation) },
      ]).filter((s) => s.points.length);
    }
    lineChart($('accuracy-chart'), 'Model accuracy', 'accuracy', pair('accuracy', 'val_accuracy'), true);
    lineChart($('loss-chart'), 'Model loss', 'loss', pair('loss', 'val_loss'));
    $('epochs').textContent = run.epochs ? `${run.completed_epochs} of ${run.epochs} epochs` : 'waiting for the first epoch';
    if (run.model_version !== modelVersion) {
      await loadInfo();
      loadRuns();
      if (drawn) { dirty = true; pump(); }
      if (currentTab === 'test') loadMetrics();
    }
  } catch (_) {
    // The server may be restarting; try again on the next tick.
  }
}

// ---- start --------------------------------------------------------------------------------
clearPad();
loadInfo().catch((error) => { $('model-info').textContent = error.message; });
pollHistory();
setInterval(pollHistory, 2000);
