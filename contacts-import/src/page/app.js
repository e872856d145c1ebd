'use strict';
// The page's channel: the gateway pushes this page's notifications to it.
const channel = 'page-' + Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('');
const state = { text: null, request: null, lastId: null, socket: null, pageAfter: [], completes: 0, progressEvents: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function status(text, kind) {
  $('status').textContent = text;
  $('status').dataset.state = kind;
}

// ---- The websocket (pattern 2) ----------------------------------------------------------------

function connect() {
  return new Promise((resolve) => {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const after = state.lastId ? '?after=' + encodeURIComponent(state.lastId) : '';
    const socket = new WebSocket(scheme + '//' + location.host + '/ws/' + channel + after);
    state.socket = socket;
    socket.addEventListener('open', () => {
      $('socket').textContent = 'live (channel ' + channel + ')';
      $('socket').className = 'ok';
      resolve();
    });
    socket.addEventListener('message', (e) => {
      const frame = JSON.parse(e.data);
      state.lastId = frame.id;
      notified(frame.data);
    });
    // Resumes after the last notification seen: none missed, none twice.
    socket.addEventListener('close', () => {
      $('socket').textContent = 'reconnecting…';
      $('socket').className = 'stale';
      setTimeout(connect, 1000);
    });
  });
}

function notified(n) {
  const log = $('log');
  log.append(el('li', JSON.stringify(n)));
  if (log.children.length > 200) log.firstChild.remove();
  if (n.request !== state.request) return;
  if (n.type === 'accepted') {
    status('Importing ' + n.contacts + ' contacts in ' + n.total + ' jobs…', 'running');
  } else if (n.type === 'progress' || n.type === 'complete') {
    for (const job of n.jobs || []) $('jobs').children[job]?.classList.add('done');
    $('bar').max = n.total;
    $('bar').value = n.done;
    $('counts').textContent = n.done + ' of ' + n.total + ' jobs done · ' + n.imported + ' contacts imported · ' + n.rejected + ' rejected';
    if (n.type === 'progress') {
      state.progressEvents += 1;
      document.body.dataset.progressEvents = state.progressEvents;
      if (state.completes === 0) status('Importing: ' + n.done + ' of ' + n.total + ' jobs done', 'running');
    } else {
      state.completes += 1;
      document.body.dataset.completes = state.completes;
      status('Import complete: ' + n.imported + ' contacts imported, ' + n.rejected + ' rejected', 'complete');
      document.body.dataset.imported = n.imported;
      showContacts(null);
    }
  } else if (n.type === 'error') {
    status('Import failed: ' + n.error, 'error');
  }
}

// ---- Import -----------------------------------------------------------------------------------

function chosen(text, label) {
  state.text = text;
  $('chosen').textContent = label;
  $('import').disabled = false;
}

async function readFile(file) {
  chosen(await file.text(), file.name + ' (' + Math.round(file.size / 1024) + ' KiB)');
}

$('file').addEventListener('change', () => { if ($('file').files[0]) readFile($('file').files[0]); });
$('drop').addEventListener('dragover', (e) => { e.preventDefault(); $('drop').classList.add('over'); });
$('drop').addEventListener('dragleave', () => $('drop').classList.remove('over'));
$('drop').addEventListener('drop', (e) => {
  e.preventDefault();
  $('drop').classList.remove('over');
  if (e.dataTransfer.files[0]) readFile(e.dataTransfer.files[0]);
});
$('generate').addEventListener('click', async () => {
  $('chosen').textContent = 'Generating…';
  const response = await fetch('/api/sample.csv?contacts=100000');
  chosen(await response.text(), '100 000 generated contacts');
});

$('import').addEventListener('click', async () => {
  $('import').disabled = true;
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) await connect();
  const response = await fetch('/api/imports?channel=' + channel, {
    method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: state.text,
  });
  const answer = await response.json();
  $('import').disabled = false;
  if (response.status !== 202) {
    status('Refused: ' + answer.error, 'error');
    return;
  }
  state.request = answer.request;
  state.completes = 0;
  state.progressEvents = 0;
  document.body.dataset.request = answer.request;
  $('jobs').replaceChildren(...Array.from({ length: answer.jobs }, () => el('span')));
  $('bar').max = answer.jobs;
  $('bar').value = 0;
  $('counts').textContent = '';
  status('Accepted (202): request ' + answer.request + ', ' + answer.contacts + ' contacts in ' + answer.jobs + ' jobs', 'running');
});

// ---- Contacts (pattern 1's query service) ------------------------------------------------------

const PAGE_SIZE = 20;

async function showContacts(after) {
  const prefix = encodeURIComponent(state.request + '/');
  const url = '/view/rows?prefix=' + prefix + '&limit=' + PAGE_SIZE + (after ? '&after=' + encodeURIComponent(after) : '');
  const rows = await (await fetch(url)).json();
  $('contacts').tBodies[0].replaceChildren(...rows.map((r) => {
    const tr = el('tr');
    const v = r.value;
    for (const cell of [v.line, v.name, v.email, v.country, v.dial, v.job, v.importer]) tr.append(el('td', String(cell ?? '')));
    return tr;
  }));
  state.pageAfter = after ? [...state.pageAfter, after] : [];
  state.next = rows.length === PAGE_SIZE ? rows[rows.length - 1].key : null;
  $('next').disabled = !state.next;
  $('first').disabled = !after;
  $('page-info').textContent = 'page ' + (state.pageAfter.length + 1);
}
$('next').addEventListener('click', () => showContacts(state.next));
$('first').addEventListener('click', () => showContacts(null));

// ---- Countries (pattern 3), live ---------------------------------------------------------------

function countries() {
  let known = null;
  const events = new EventSource('/api/countries/events');
  events.addEventListener('countries', (e) => {
    const list = JSON.parse(e.data).countries;
    const items = list.map((c) => {
      const li = el('li', c.code + ' ' + c.name + ' ' + c.dial);
      li.dataset.code = c.code;
      if (known && known.get(c.code) !== li.textContent) li.classList.add('changed');
      return li;
    });
    known = new Map(items.map((li) => [li.dataset.code, li.textContent]));
    $('countries').replaceChildren(...items);
  });
}
$('country-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  await fetch('/api/countries', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ code: $('country-code').value, name: $('country-name').value, dial: $('country-dial').value }),
  });
});

connect();
countries();
