"""``GET /``: the risk calculator, one self-contained HTML page.

Everything is inline (CSS, a small script, the SVG chart it draws), and the
Content-Security-Policy forbids any other origin, so the page works in a
hospital network without internet and leaks nothing to a CDN. The form is
generated from :data:`model.features.FEATURES`: labels, units, codes as choices,
ranges as hints, and "not measured" for the features that may be missing. The
browser's own range checks are off (``novalidate``): the API is the one place
that validates, and its 422 errors are shown beside the field they name.

With an API key configured, the page asks for it; the key lives in a script
variable only (no cookie, no storage), so closing the tab forgets it.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from typing import Final

from model.features import FEATURES, Feature

#: Only this page's own inline code and same-origin requests.
CONTENT_SECURITY_POLICY: Final[str] = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
)

_STYLE: Final[str] = """
body{font:16px/1.45 system-ui,sans-serif;margin:0 auto;max-width:46rem;padding:1rem;color:#111}
h1{font-size:1.4rem}.warn{background:#fff4d6;border-left:4px solid #c80;padding:.5rem .8rem}
fieldset{border:1px solid #bbb;border-radius:6px;margin:0 0 1rem;padding:.5rem .8rem}
.field{margin:.6rem 0}.field label{display:block;font-weight:600}
.hint{color:#555;font-size:.85rem}.err{color:#b00020;font-size:.9rem;display:block}
input,select,button{font:inherit;padding:.35rem;max-width:100%;box-sizing:border-box}
input[type=number],select,input[type=password]{width:100%}
button{background:#0b57d0;color:#fff;border:0;border-radius:4px;padding:.55rem 1.2rem}
:focus-visible{outline:3px solid #f90;outline-offset:2px}
#result{margin-top:1rem}#risk{font-size:1.6rem;font-weight:700}
svg text{font:12px system-ui,sans-serif}
"""

_SCRIPT: Final[str] = r"""
const FEATURES = __FEATURES__;
let apiKey = null;  // memory only: never stored
const form = document.getElementById('form');
const keyBox = document.getElementById('keybox');
if (__KEY_REQUIRED__) keyBox.hidden = false;
for (const f of FEATURES) {
  const nm = document.getElementById('nm-' + f.name);
  if (nm) nm.addEventListener('change', () => {
    document.getElementById('f-' + f.name).disabled = nm.checked;
  });
}
function clearErrors() {
  for (const e of document.querySelectorAll('.err')) e.textContent = '';
  for (const e of document.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
}
function showError(name, msg) {
  const slot = document.getElementById('err-' + name) || document.getElementById('err-form');
  slot.textContent = (slot.textContent ? slot.textContent + ' ' : '') + msg;
  const input = document.getElementById('f-' + name);
  if (input) input.setAttribute('aria-invalid', 'true');
}
function body() {
  const out = {};
  for (const f of FEATURES) {
    const nm = document.getElementById('nm-' + f.name);
    const raw = document.getElementById('f-' + f.name).value.trim();
    if (nm && nm.checked) out[f.name] = null;
    else if (raw === '') out[f.name] = '';
    else out[f.name] = f.coded ? parseInt(raw, 10) : Number(raw);
  }
  return out;
}
function svgEl(tag, attrs, text) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function chart(items) {
  const rowH = 26, width = 340, mid = 170, half = 160;
  const max = Math.max(1e-9, ...items.map(c => Math.abs(c.contribution)));
  const svg = svgEl('svg', {viewBox: `0 0 ${width} ${items.length * rowH + 4}`,
    width: '100%', role: 'img', id: 'chart',
    'aria-label': 'Contribution of each feature to the risk, largest first'});
  items.forEach((c, i) => {
    const w = Math.abs(c.contribution) / max * half, y = i * rowH + 2;
    const up = c.contribution >= 0;
    svg.appendChild(svgEl('rect', {x: up ? mid : mid - w, y: y + 13, width: Math.max(w, 1),
      height: 9, fill: up ? '#c62828' : '#1565c0'}));
    const shown = c.value === null ? 'not measured' : (c.value_meaning || c.value);
    const sign = up ? '+' : '\u2212';
    svg.appendChild(svgEl('text', {x: 2, y: y + 10},
      `${c.feature} = ${shown}: ${sign}${(Math.abs(c.contribution) * 100).toFixed(1)} pts`));
  });
  svg.appendChild(svgEl('line', {x1: mid, x2: mid, y1: 0, y2: items.length * rowH + 4,
    stroke: '#333'}));
  return svg;
}
form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearErrors();
  const headers = {'Content-Type': 'application/json'};
  if (!keyBox.hidden) {
    apiKey = document.getElementById('apikey').value;
    headers['X-API-Key'] = apiKey;
  }
  let res;
  try {
    res = await fetch('predict/explain', {method: 'POST', headers, body: JSON.stringify(body())});
  } catch (e) { showError('form', 'The service did not answer: ' + e); return; }
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) {
    keyBox.hidden = false;
    showError('apikey', 'This service needs its API key.');
    document.getElementById('apikey').focus();
    return;
  }
  if (res.status === 422) {
    for (const d of data.detail || []) {
      const loc = d.loc || [];
      showError(loc.length > 1 ? loc[loc.length - 1] : 'form', d.msg);
    }
    const first = document.querySelector('[aria-invalid]');
    if (first) first.focus();
    return;
  }
  if (!res.ok) { showError('form', data.detail || ('HTTP ' + res.status)); return; }
  const p = data.probability;
  const prob = document.getElementById('probability');
  prob.textContent = p.toFixed(4);
  prob.dataset.value = String(p);
  document.getElementById('risk').textContent = (p * 100).toFixed(1) + ' %';
  const iv = data.risk_interval;
  document.getElementById('interval').textContent = iv
    ? `${(iv.lower * 100).toFixed(1)} % to ${(iv.upper * 100).toFixed(1)} % ` +
      `(${Math.round(iv.coverage * 100)} % band of models trained on resampled data)`
    : 'not available for this model';
  document.getElementById('base').textContent = (data.base_value * 100).toFixed(1) + ' %';
  const old = document.getElementById('chart');
  if (old) old.remove();
  document.getElementById('chartbox').appendChild(chart(data.contributions));
  document.getElementById('result').hidden = false;
  document.getElementById('result').focus();
});
"""


def _field(feature: Feature) -> str:
    """One labelled input: a select of codes, or a number box with its range as a hint."""
    name = html.escape(feature.name)
    unit = f" ({html.escape(feature.unit)})" if feature.unit else ""
    label = f'<label for="f-{name}">{html.escape(feature.description)}{unit}</label>'
    hint_id = f"hint-{name}"
    if feature.codes:
        options = "".join(
            f'<option value="{c}"{" selected" if c == int(feature.example) else ""}>'
            f"{c}: {html.escape(meaning)}</option>"
            for c, meaning in sorted(feature.codes.items())
        )
        control = (
            f'<select id="f-{name}" name="{name}" aria-describedby="{hint_id} err-{name}">'
            f"{options}</select>"
        )
    else:
        control = (
            f'<input type="number" id="f-{name}" name="{name}" step="any" '
            f'value="{feature.example:g}" min="{feature.minimum:g}" max="{feature.maximum:g}" '
            f'inputmode="decimal" aria-describedby="{hint_id} err-{name}">'
        )
    missing = ""
    if feature.may_be_missing:
        missing = f'<label class="hint"><input type="checkbox" id="nm-{name}"> not measured</label>'
    return (
        f'<div class="field">{label}{control}'
        f'<span class="hint" id="{hint_id}">{html.escape(feature.name)}: '
        f"{html.escape(feature.describe_domain())}</span>{missing}"
        f'<span class="err" id="err-{name}" role="alert"></span></div>'
    )


@lru_cache(maxsize=2)
def render(*, key_required: bool) -> bytes:
    """The whole page; built once per process (it depends only on the feature table)."""
    features = [{"name": f.name, "coded": f.is_coded} for f in FEATURES]
    script = _SCRIPT.replace("__FEATURES__", json.dumps(features)).replace(
        "__KEY_REQUIRED__", "true" if key_required else "false"
    )
    fields = "\n".join(_field(f) for f in FEATURES)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Heart disease risk calculator</title><style>{_STYLE}</style></head>
<body><main>
<h1>Heart disease risk calculator</h1>
<p class="warn"><strong>Not a medical device.</strong> A teaching and research model trained
on 1980s UCI data from four hospitals; it must not be used to diagnose or treat anyone.</p>
<form id="form" novalidate>
<fieldset id="keybox" hidden><legend>API key</legend>
<div class="field"><label for="apikey">This service needs its API key (kept in this page's
memory only)</label><input type="password" id="apikey" autocomplete="off"
aria-describedby="err-apikey"><span class="err" id="err-apikey" role="alert"></span></div>
</fieldset>
<fieldset><legend>Patient (the example patient is filled in)</legend>
{fields}
</fieldset>
<button type="submit">Estimate the risk</button>
<span class="err" id="err-form" role="alert"></span>
</form>
<section id="result" hidden tabindex="-1" aria-live="polite">
<h2>Result</h2>
<p>Estimated risk: <span id="risk"></span> (probability <span id="probability"></span>)</p>
<p>How much the training data could move it: <span id="interval"></span></p>
<p>Average risk over the reference patients: <span id="base"></span>. Each bar is how much
one value moves this patient's risk away from it (red raises, blue lowers; exact Shapley
values, in percentage points).</p>
<div id="chartbox"></div>
</section>
</main>
<script>{script}</script>
</body></html>
""".encode()
