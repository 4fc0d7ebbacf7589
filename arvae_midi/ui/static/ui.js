// arvae-midi control page: one WebSocket carrying JSON events (docs/ui.md); no framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const SHORT = { rhythmic_complexity: "rhythm", note_density: "density", pitch_range: "range", contour: "contour" };
const state = { attributes: [], targets: {}, pitchRange: [55, 84], knobs: {}, dragging: null, ws: null, roll: null };

function fmt(v, digits = 2) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }

function send(cmd) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(cmd));
}

function buildKnobs(hello) {
  const rows = $("knob-rows");
  rows.replaceChildren();
  for (const name of hello.attributes) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${SHORT[name] || name}</td><td>${hello.cc_map.attributes[name] ?? "-"}</td>` +
      `<td><input type="range" min="0" max="127" step="1" value="64" id="knob-${name}" data-own="1"></td>` +
      `<td class="num" id="val-${name}">own</td><td class="num" id="target-${name}">-</td>` +
      `<td class="num" id="out-${name}">-</td><td class="num" id="in-${name}">-</td>`;
    rows.appendChild(tr);
    const slider = tr.querySelector("input");
    slider.addEventListener("pointerdown", () => { state.dragging = name; });
    slider.addEventListener("pointerup", () => { state.dragging = null; });
    slider.addEventListener("input", () => {
      send({ cmd: "knob", attribute: name, value: Number(slider.value) });
      showKnob(name, Number(slider.value));
    });
  }
  $("cc-amount").textContent = hello.cc_map.amount;
  $("cc-freeze").textContent = hello.cc_map.freeze;
}

function showKnob(name, value) {
  const slider = $(`knob-${name}`);
  if (!slider) return;
  if (value === null) {
    slider.dataset.own = "1";
    $(`val-${name}`).textContent = "own";
    $(`target-${name}`).textContent = "own";
    return;
  }
  delete slider.dataset.own;
  if (state.dragging !== name) slider.value = value;
  $(`val-${name}`).textContent = value;
  const table = state.targets[name];
  $(`target-${name}`).textContent = table ? fmt(table[value]) : "-";
}

function onKnobs(ev) {
  state.knobs = ev.values;
  for (const [name, value] of Object.entries(ev.values)) showKnob(name, value);
  const amount = Math.round(ev.amount * 127);
  if (state.dragging !== "amount") $("knob-amount").value = amount;
  $("val-amount").textContent = fmt(ev.amount);
  $("knob-freeze").checked = ev.freeze;
  $("val-freeze").textContent = ev.freeze ? "on" : "off";
  document.body.dataset.knobs = JSON.stringify(ev);
}

function onStatus(ev) {
  $("tempo").textContent = fmt(ev.tempo, 1);
  $("source").textContent = ev.source;
  $("bar").textContent = ev.bar < 0 ? "-" : ev.bar;
  $("state").textContent = ev.state;
  if (document.activeElement !== $("mode")) $("mode").value = ev.mode;
  $("inference").textContent = ev.inference_ms === null ? "-" : `${fmt(ev.inference_ms, 1)} ms`;
  $("ready").textContent = ev.margin === null ? "-" : `${fmt(100 * ev.margin, 1)} % of a bar early`;
  $("misses").textContent = ev.misses;
  $("late").textContent = ev.late;
  $("dropped").textContent = ev.dropped;
  $("errors").textContent = ev.errors;
  $("message").textContent = ev.message || ev.ui_error || "";
  for (const name of state.attributes) {
    const out = ev.out_attributes && ev.out_attributes[name];
    const inp = ev.in_attributes && ev.in_attributes[name];
    $(`out-${name}`).textContent = fmt(out);
    $(`in-${name}`).textContent = fmt(inp);
  }
  document.body.dataset.bar = ev.bar;
}

function pitchSpan(roll) {
  let [lo, hi] = state.pitchRange;
  for (const notes of [roll.input || [], roll.variation || []]) {
    for (const [p] of notes) { lo = Math.min(lo, p); hi = Math.max(hi, p); }
  }
  return [lo, hi];
}

function draw(canvas, notes, color, span) {
  const g = canvas.getContext("2d");
  const [lo, hi] = span;
  const w = canvas.width, h = canvas.height, rows = hi - lo + 1, rowH = h / rows;
  g.clearRect(0, 0, w, h);
  for (let p = lo; p <= hi; p++) {  // black keys darker, C rows marked
    const y = h - (p - lo + 1) * rowH;
    if ([1, 3, 6, 8, 10].includes(p % 12)) { g.fillStyle = "#171a20"; g.fillRect(0, y, w, rowH); }
    if (p % 12 === 0) {
      g.fillStyle = "#3a3f4b"; g.fillRect(0, y + rowH - 1, w, 1);
      g.fillStyle = "#8a909c"; g.font = "10px sans-serif"; g.fillText(`C${p / 12 - 1}`, 3, y + rowH + 10);
    }
  }
  for (let t = 0; t <= 16; t++) {  // 16ths faint, beats bright
    g.fillStyle = t % 4 === 0 ? "#4a505c" : "#23262e";
    g.fillRect(Math.round((t / 16) * w), 0, 1, h);
  }
  g.fillStyle = color;
  for (const [pitch, start, length] of notes || []) {
    const x = (start / 4) * w, y = h - (pitch - lo + 1) * rowH;
    g.fillRect(x + 1, y + 1, Math.max((length / 4) * w - 2, 2), Math.max(rowH - 2, 2));
  }
}

function onRoll(ev) {
  state.roll = ev;
  const span = pitchSpan(ev);
  draw($("roll-in"), ev.input, getComputedStyle(document.body).getPropertyValue("--in") || "#4fa3ff", span);
  draw($("roll-out"), ev.variation, getComputedStyle(document.body).getPropertyValue("--out") || "#ffaa3b", span);
  $("in-bar").textContent = ev.source_bar ?? "-";
  $("out-bar").textContent = ev.bar;
  $("plan").textContent = ev.plan === "repeat" ? "(frozen)" : "";
  document.body.dataset.roll = ev.bar;
}

function connect() {
  const token = new URLSearchParams(location.search).get("token") || "";
  const ws = new WebSocket(`ws://${location.host}/ws?token=${encodeURIComponent(token)}`);
  state.ws = ws;
  ws.onopen = () => { document.body.dataset.state = "connected"; $("conn").textContent = "live"; };
  ws.onclose = () => {
    document.body.dataset.state = "closed";
    $("conn").textContent = "disconnected";
    setTimeout(connect, 2000);
  };
  ws.onmessage = (msg) => {
    const ev = JSON.parse(msg.data);
    switch (ev.event) {
      case "hello":
        state.attributes = ev.attributes; state.targets = ev.targets; state.pitchRange = ev.pitch_range;
        $("scale").textContent = ev.key_lock ? "-" : "off";
        buildKnobs(ev);
        break;
      case "knobs": onKnobs(ev); break;
      case "status": onStatus(ev); break;
      case "roll": onRoll(ev); break;
      case "scale":
        $("scale").textContent = ev.scale ? `${ev.scale.name} (${ev.scale.notes.join(" ")})` : "-";
        break;
      case "command_error": $("message").textContent = ev.error; break;
      default: break;  // the bridge's log events (bar, send, submit, ...): the page needs none of them
    }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const amount = $("knob-amount");
  amount.addEventListener("pointerdown", () => { state.dragging = "amount"; });
  amount.addEventListener("pointerup", () => { state.dragging = null; });
  amount.addEventListener("input", () => send({ cmd: "amount", value: Number(amount.value) / 127 }));
  $("knob-freeze").addEventListener("change", (e) => send({ cmd: "freeze", value: e.target.checked ? 1 : 0 }));
  $("mode").addEventListener("change", (e) => send({ cmd: "mode", value: e.target.value }));
  connect();
});
