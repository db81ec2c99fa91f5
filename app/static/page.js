// The page's behaviour: models from GET /models, an image to POST /predict, the answer or the error as the
// service words it. Server text is only ever set as textContent. The API key stays in sessionStorage.
"use strict";

const KEY_STORAGE = "resnet-serve-api-key";
const $ = (id) => document.getElementById(id);
const form = $("form");
const fileInput = $("file");
const drop = $("drop");
const preview = $("preview");
const modelSelect = $("model");
const topK = $("top-k");
const apiKey = $("api-key");
const statusLine = $("status");
const errorLine = $("error");
const result = $("result");
let image = null; // the File being classified
let previewUrl = null;
let sequence = 0; // only the latest request's answer is shown

function headers() {
  const key = apiKey.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function showError(text) {
  errorLine.textContent = text;
  errorLine.hidden = !text;
}

// "400: <detail>" from an error response: JSON {"detail": ...} (a list for 422), else the status text.
async function errorText(response) {
  let detail = response.statusText;
  try {
    const body = await response.json();
    if (typeof body.detail === "string") {
      detail = body.detail;
    } else if (Array.isArray(body.detail)) {
      detail = body.detail.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    }
  } catch {
    // not JSON: keep the status text
  }
  return `${response.status}: ${detail}`;
}

async function loadModels() {
  statusLine.textContent = "Loading models…";
  let response;
  try {
    response = await fetch("/models", { headers: headers() });
  } catch (err) {
    statusLine.textContent = "";
    showError(`Cannot reach the service: ${err.message}`);
    return;
  }
  statusLine.textContent = "";
  if (response.status === 401) {
    showError("This server needs an API key: enter it in the API key field.");
    apiKey.setAttribute("aria-invalid", "true");
    return;
  }
  apiKey.removeAttribute("aria-invalid");
  if (!response.ok) {
    showError(`Models: ${await errorText(response)}`);
    return;
  }
  showError("");
  const body = await response.json();
  const previous = modelSelect.value;
  modelSelect.replaceChildren();
  for (const model of body.models) {
    const option = new Option(model.name, model.name);
    option.selected = previous ? model.name === previous : model.name === body.default;
    modelSelect.append(option);
  }
  if (!body.models.length) {
    modelSelect.append(new Option("no model is serving", "", true, true));
    modelSelect.disabled = true;
  } else {
    modelSelect.disabled = false;
  }
  modelSelect.dataset.loaded = "true";
}

function choose(file) {
  if (!file) return; // the service judges the bytes: its error is the one shown
  image = file;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  preview.src = previewUrl;
  preview.alt = `Preview of ${file.name || "the pasted image"}`;
  preview.hidden = false;
  $("drop-text").textContent = `${file.name || "Pasted image"}: choose, drop or paste another`;
  classify();
}

function render(body, ms) {
  const list = $("predictions");
  list.replaceChildren();
  for (const p of body.predictions) {
    const percent = (p.score * 100).toFixed(1);
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${percent}%`;
    bar.append(fill);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${percent}%`;
    item.append(label, bar, score);
    list.append(item);
  }
  $("latency").textContent = `${Math.round(ms)} ms`;
  $("answered-by").textContent = `${body.model}${body.version ? ` (version ${body.version})` : ""}`;
  result.hidden = false;
}

async function classify() {
  if (!image) {
    statusLine.textContent = "Choose, drop or paste an image first.";
    return;
  }
  const mine = ++sequence;
  const params = new URLSearchParams({ top_k: topK.value || "5" });
  if (modelSelect.value) params.set("model", modelSelect.value);
  const body = new FormData();
  body.append("file", image, image.name || "pasted.png");
  statusLine.textContent = "Classifying…";
  result.setAttribute("aria-busy", "true");
  const started = performance.now();
  try {
    const response = await fetch(`/predict?${params}`, { method: "POST", headers: headers(), body });
    const answer = response.ok ? await response.json() : await errorText(response);
    const ms = performance.now() - started;
    if (mine !== sequence) return;
    statusLine.textContent = "";
    if (response.ok) {
      showError("");
      render(answer, ms);
    } else {
      result.hidden = true;
      showError(answer);
    }
  } catch (err) {
    if (mine !== sequence) return;
    statusLine.textContent = "";
    result.hidden = true;
    showError(`Cannot reach the service: ${err.message}`);
  } finally {
    if (mine === sequence) result.removeAttribute("aria-busy");
  }
}

apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
apiKey.addEventListener("change", () => {
  const key = apiKey.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  loadModels();
});
form.addEventListener("submit", (event) => {
  event.preventDefault();
  classify();
});
fileInput.addEventListener("change", () => {
  choose(fileInput.files[0]);
  fileInput.value = ""; // choosing the same file again is a change too
});
preview.addEventListener("error", () => {
  preview.hidden = true; // not an image the browser can show; the service will say what it makes of it
});
modelSelect.addEventListener("change", () => image && classify());
topK.addEventListener("change", () => image && classify());
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  choose(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) {
    event.preventDefault();
    choose(file);
  }
});
loadModels();
