// The operator's dashboard: renders /api/events (the status, pushed when it changes) and sends
// the commands. Everything from Kafka (keys, errors, names) goes into the page as text, never as
// markup.
'use strict';

// Where the dashboard is served (its root, or where another server nests it): the directory of
// this script. The API paths are relative to it.
const API = new URL('.', document.currentScript.src).pathname;

const sections = new Map();

function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
}

function say(text, isError) {
  const m = document.getElementById('message');
  m.textContent = text;
  m.className = isError ? 'error' : 'ok';
}

function when(ms) {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return s + ' s ago';
  if (s < 7200) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}

async function post(path, body) {
  const headers = { 'Content-Type': 'application/json' };
  const operator = document.getElementById('operator').value.trim();
  if (operator) headers['X-Operator'] = operator;
  const response = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await response.text();
  let answer;
  try { answer = JSON.parse(text); } catch (_) { answer = { error: text || response.statusText }; }
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

// Sends a command; says what happened; true if it was issued.
async function command(path, body) {
  try {
    const c = (await post(path, body)).issued;
    say(c.command + ' ' + describe(c) + ' issued by ' + c.by + ' at ' + when(c.at_ms), false);
    return true;
  } catch (e) {
    say(path.replace(API + 'api/', '') + ' failed: ' + e.message, true);
    return false;
  }
}

function describe(c) {
  if (c.offset !== undefined) return 'of ' + c.partition + ':' + c.offset;
  return c.partition === null ? 'of every partition' : 'of partition ' + c.partition;
}

function section(target) {
  const id = target.topic + '\u0000' + target.group;
  let s = sections.get(id);
  if (s) return s;
  const root = document.getElementById('target').content.firstElementChild.cloneNode(true);
  root.dataset.topic = target.topic;
  root.dataset.group = target.group;
  root.querySelector('.topic').textContent = target.topic;
  root.querySelector('.group').textContent = 'group ' + target.group;
  const pair = { topic: target.topic, group: target.group };
  const partition = () => {
    const v = root.querySelector('.mode-partition').value.trim();
    if (v === '') return null;
    if (!/^\d+$/.test(v)) throw new Error('partition: a number, or empty for all');
    return Number(v);
  };
  for (const verb of ['unblock', 'block']) {
    root.querySelector('button.' + verb).addEventListener('click', () => {
      let p;
      try { p = partition(); } catch (e) { say(e.message, true); return; }
      command(API + 'api/' + verb, { ...pair, partition: p });
    });
  }
  const redrive = async (dryRun) => {
    const text = (c) => root.querySelector(c).value.trim() || undefined;
    const time = (c) => { const v = root.querySelector(c).value; return v ? new Date(v).getTime() : undefined; };
    const body = {
      ...pair, dry_run: dryRun, key: text('.redrive-key'), error: text('.redrive-error'),
      from_ms: time('.redrive-from'), until_ms: time('.redrive-until'),
      to_tier: root.querySelector('.redrive-to-tier').checked,
    };
    const list = root.querySelector('.redrive-result');
    const summary = root.querySelector('.redrive-summary');
    try {
      const answer = await post(API + 'api/redrive', body);
      list.replaceChildren(...answer.redriven.map((r) => el('li',
        'dead letter ' + r.dead_letter.partition + ':' + r.dead_letter.offset + ' (from ' + r.original.topic + ':' +
        r.original.partition + ':' + r.original.offset + ', key ' + (r.key ?? '—') + ') → ' + r.to)));
      summary.textContent = (answer.dry_run ? 'would redrive ' : 'redrove ') + answer.redriven.length + ' dead letter(s)';
      summary.className = 'redrive-summary';
    } catch (e) {
      list.replaceChildren();
      summary.textContent = 'redrive failed: ' + e.message;
      summary.className = 'redrive-summary target-error';
    }
  };
  root.querySelector('button.redrive-dry').addEventListener('click', () => redrive(true));
  root.querySelector('button.redrive-run').addEventListener('click', () => redrive(false));
  document.getElementById('targets').appendChild(root);
  s = { root, pair };
  sections.set(id, s);
  return s;
}

function blockedRow(pair, b) {
  const row = el('tr', undefined, 'blocked');
  row.dataset.partition = b.partition;
  row.dataset.offset = b.offset;
  const since = el('td', when(b.since_ms) + ' (' + ago(b.since_ms) + ')', 'since');
  since.dataset.since = b.since_ms;
  row.append(el('td', String(b.partition)), el('td', String(b.offset)), el('td', b.key ?? '—', 'key'), since,
    el('td', String(b.attempts)), el('td', b.error, 'error'));
  const actions = el('td');
  const skip = el('button', 'Skip', 'skip');
  skip.type = 'button';
  if (b.skip) {
    skip.disabled = true;
    skip.textContent = 'Skip issued by ' + b.skip.by;
  }
  skip.addEventListener('click', () => {
    skip.disabled = true;
    skip.textContent = 'Skipping…';
    // Issued, the row goes when the instance moves on; refused, the button can be used again.
    command(API + 'api/skip', { ...pair, partition: b.partition, offset: b.offset }).then((issued) => {
      if (!issued) {
        skip.disabled = false;
        skip.textContent = 'Skip';
      }
    });
  });
  const unblock = el('button', 'Unblock partition', 'unblock-partition');
  unblock.type = 'button';
  unblock.addEventListener('click', () => command(API + 'api/unblock', { ...pair, partition: b.partition }));
  actions.append(skip, ' ', unblock);
  row.append(actions);
  return row;
}

function render(status) {
  for (const target of status.targets) {
    const { root, pair } = section(target);
    const error = root.querySelector('.target-error');
    error.hidden = !target.error;
    error.textContent = target.error ? 'Could not read everything: ' + target.error : '';
    root.querySelector('.none').hidden = target.blocked.length > 0;
    root.querySelector('.blocked-records').hidden = target.blocked.length === 0;
    root.querySelector('.blocked-records tbody').replaceChildren(...target.blocked.map((b) => blockedRow(pair, b)));
    const queues = target.tiers.map((t) => el('li', t.topic + ': ' + t.waiting + ' waiting', 'tier'));
    const dlq = target.dead_letters === null ? 'unknown' : String(target.dead_letters);
    queues.push(el('li', 'dead-letter queue: ' + dlq + ' record(s), ' + target.redriven + ' redriven', 'dlq'));
    root.querySelector('.queues').replaceChildren(...queues);
    const modes = target.modes.map((m) => el('li', (m.partition === null ? 'every partition' : 'partition ' + m.partition) +
      ': ' + (m.blocking ? 'blocking' : 'not blocking') + ' (by ' + m.by + ', ' + when(m.at_ms) + ')'));
    if (modes.length === 0) modes.push(el('li', 'every partition: blocking (the default)'));
    root.querySelector('.modes').replaceChildren(...modes);
    const skips = target.skips.map((s) => el('li', s.partition + ':' + s.offset + ' by ' + s.by + ', ' + when(s.at_ms)));
    if (skips.length === 0) skips.push(el('li', 'none'));
    root.querySelector('.skips').replaceChildren(...skips);
  }
}

function connect() {
  const live = document.getElementById('live');
  const events = new EventSource(API + 'api/events');
  events.addEventListener('status', (e) => {
    render(JSON.parse(e.data));
    live.textContent = 'live · updated ' + new Date().toLocaleTimeString();
    live.className = 'ok';
  });
  // EventSource reconnects by itself.
  events.addEventListener('error', () => {
    live.textContent = 'reconnecting…';
    live.className = 'stale';
  });
}

const operatorInput = document.getElementById('operator');
operatorInput.value = localStorage.getItem('retry-dashboard-operator') || '';
operatorInput.addEventListener('change', () => localStorage.setItem('retry-dashboard-operator', operatorInput.value.trim()));
setInterval(() => {
  for (const cell of document.querySelectorAll('td.since')) {
    const ms = Number(cell.dataset.since);
    cell.textContent = when(ms) + ' (' + ago(ms) + ')';
  }
}, 1000);
connect();
