// The approvers' web app: a client of the public API (docs/api.md) and nothing else.
//
// - Sign-in: `config.json` says how. With an OpenID Connect provider, the authorization code
//   flow with PKCE (S256) runs here, in the page; in development, a user-name form gets a token
//   from `POST /v1/dev/token`. The token lives in sessionStorage and is the bearer of every call.
// - The inbox follows `GET /v1/stream`, read with fetch() (EventSource cannot send the bearer
//   header): every `inbox` event, and every (re)connection, re-reads the inbox. The stream
//   reconnects with a growing, jittered delay.
// - Every command (a decision, a bulk approval, an absence) gets its Idempotency-Key once, when
//   it is tapped: however often it is sent again (after a lost answer, or from the offline queue
//   in localStorage when the connection is back), the service carries it out once.
// - Text from the API is only ever set as text (textContent), never parsed as HTML.

const TOKEN_KEY = 'approval-ledger.session';
const QUEUE_KEY = 'approval-ledger.queue';
const PKCE_KEY = 'approval-ledger.pkce';
const STREAM_MAX_DELAY_MS = 30000;
// The server sends a keep-alive comment every 15 s: silence this long means a dead connection.
const STREAM_SILENCE_MS = 45000;
const PAGE = 50;

const $ = (selector) => document.querySelector(selector);

const state = {
  config: null,
  token: null,
  user: null,
  expiresAt: 0,
  inbox: [],
  next: null,
  total: 0,
  selected: new Set(),
  detail: null,
  view: null,
  streamGeneration: 0,
  streamAbort: null,
  wakeStream: null,
  flushing: false,
};

/** An element with attributes, listeners (`onclick`) and children (strings become text). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      node.className = value;
    } else {
      node.setAttribute(name, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let announced = null;

/** Says `text` to everyone (a polite live region), for a while. */
function announce(text) {
  const node = $('#announce');
  node.textContent = text;
  clearTimeout(announced);
  announced = setTimeout(() => { node.textContent = ''; }, 8000);
}

// ---------------------------------------------------------------------------------------------
// Calling the API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Whether sending the same command again (with its key) may still succeed. */
function retryable(error) {
  if (!(error instanceof ApiError)) return true; // the network: the call may not have arrived
  // 401: the sign-in expired; the command waits for the next one (keys are per person).
  return [401, 502, 503, 504].includes(error.status);
}

async function api(method, path, { body, key, raw, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (key) headers['Idempotency-Key'] = key;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    signal,
  });
  if (response.status === 401 && state.token) {
    signOut('Your sign-in has expired. Please sign in again.');
  }
  if (raw && response.ok) return response;
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(response.status, error.code || 'error', error.message || `HTTP ${response.status}`);
  }
  return data;
}

function describe(error) {
  if (error instanceof ApiError) return `${error.message} (${error.code})`;
  return 'The service cannot be reached.';
}

/** A new Idempotency-Key. */
function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // Outside a secure context (plain http to another host) randomUUID is missing.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---------------------------------------------------------------------------------------------
// Commands: sent with their key, queued while offline

function queued() {
  try {
    const list = JSON.parse(localStorage.getItem(QUEUE_KEY) || '[]');
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function saveQueue(list) {
  localStorage.setItem(QUEUE_KEY, JSON.stringify(list));
  renderQueue();
}

function enqueue(command) {
  const list = queued();
  if (!list.some((c) => c.key === command.key)) list.push(command);
  saveQueue(list);
}

function dequeue(key) {
  saveQueue(queued().filter((c) => c.key !== key));
}

function mine() {
  return queued().filter((c) => c.user === state.user);
}

/**
 * Sends a command once tapped: its answer, or `null` when it is queued (offline, or the answer
 * was lost on the way) to be sent again with the same key.
 */
async function submit(command) {
  if (!navigator.onLine) {
    enqueue(command);
    return null;
  }
  try {
    return await api(command.method, command.path, { body: command.body, key: command.key });
  } catch (error) {
    if (!retryable(error)) throw error;
    enqueue(command);
    return null;
  }
}

/** Sends the queued commands, oldest first, each with the key it got when it was tapped. */
async function flush() {
  if (state.flushing || !state.token) return;
  const pending = mine();
  if (pending.length === 0) return;
  state.flushing = true;
  try {
    for (const command of pending) {
      try {
        const answer = await api(command.method, command.path, { body: command.body, key: command.key });
        dequeue(command.key);
        settled(command, answer, null);
      } catch (error) {
        if (retryable(error)) break; // still offline: keep this and the rest, in order
        dequeue(command.key);
        settled(command, null, error);
      }
    }
  } finally {
    state.flushing = false;
    renderQueue();
  }
  refreshInbox();
}

/** What a queued command's answer shows, once it comes. */
function settled(command, answer, error) {
  if (command.kind === 'bulk') {
    if (answer) showBulkResults(command, answer);
    else announce(`${command.label}: ${describe(error)}`);
  } else if (command.kind === 'decision') {
    const shown = state.view === 'detail' && state.detail && state.detail.id === command.request;
    const text = answer ? `${command.label}: done, the request is ${answer.status}.` : `${command.label}: ${describe(error)}`;
    if (shown) {
      result('#decide-result', answer ? 'done' : 'failed', text);
      openDetail(command.request, false);
    } else {
      announce(text);
    }
  } else if (command.kind === 'absence') {
    announce(answer ? `${command.label}: recorded.` : `${command.label}: ${describe(error)}`);
    if (state.view === 'absences') loadAbsences();
  }
}

function renderQueue() {
  const list = state.user ? mine() : [];
  const note = $('#queue-note');
  note.hidden = list.length === 0;
  note.textContent = list.length === 1
    ? '1 command is queued: it is sent when the connection is back.'
    : `${list.length} commands are queued: they are sent when the connection is back.`;
  const ids = new Set(list.filter((c) => c.kind === 'decision').map((c) => c.request));
  for (const c of list.filter((c) => c.kind === 'bulk')) {
    for (const item of c.body.items) ids.add(item.id);
  }
  for (const li of document.querySelectorAll('#inbox-list li[data-id]')) {
    const badge = li.querySelector('.queued');
    if (badge) badge.hidden = !ids.has(li.dataset.id);
    li.dataset.queued = String(ids.has(li.dataset.id));
  }
  if (state.detail) $('#detail-queued').hidden = !ids.has(state.detail.id);
}

function result(selector, status, text) {
  const node = $(selector);
  node.dataset.state = status;
  node.textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Sign-in

function base64url(bytes) {
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function claims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(part + '='.repeat((4 - (part.length % 4)) % 4)), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

function useSession(token, expiresAt) {
  const who = claims(token);
  state.token = token;
  state.user = who.sub || '?';
  state.expiresAt = expiresAt;
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ token, expires_at: expiresAt }));
  $('#who').textContent = `Signed in as ${state.user}`;
  $('#who').hidden = false;
  $('#nav').hidden = false;
}

function restoreSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || 'null');
    if (saved && saved.token && saved.expires_at > Date.now() + 30000) {
      useSession(saved.token, saved.expires_at);
    }
  } catch {
    sessionStorage.removeItem(TOKEN_KEY);
  }
}

function signOut(reason) {
  state.token = null;
  state.user = null;
  state.inbox = [];
  state.selected.clear();
  state.detail = null;
  rendered.clear();
  $('#inbox-list').replaceChildren();
  sessionStorage.removeItem(TOKEN_KEY);
  stopStream();
  $('#who').hidden = true;
  $('#nav').hidden = true;
  $('#signin-error').textContent = reason || '';
  if (location.hash) history.replaceState(null, '', location.pathname);
  route();
}

async function devSignIn(event) {
  event.preventDefault();
  const user = $('#dev-user').value.trim();
  const roles = [...document.querySelectorAll('#dev-form input[name="role"]:checked')].map((i) => i.value);
  $('#signin-error').textContent = '';
  const button = $('#dev-sign-in');
  button.disabled = true;
  try {
    const answer = await api('POST', '/v1/dev/token', { body: { user, roles } });
    useSession(answer.token, Date.parse(answer.expires_at));
    started();
  } catch (error) {
    $('#signin-error').textContent = `Cannot sign in: ${describe(error)}`;
  } finally {
    button.disabled = false;
  }
}

function redirectUri() {
  return `${location.origin}/app/`;
}

async function discover(issuer) {
  const response = await fetch(`${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`);
  if (!response.ok) throw new Error(`the provider's discovery document answered ${response.status}`);
  const doc = await response.json();
  if (!doc.authorization_endpoint || !doc.token_endpoint) {
    throw new Error("the provider's discovery document names no authorization or token endpoint");
  }
  return doc;
}

async function oidcSignIn() {
  const { issuer, client_id: clientId, scope } = state.config.oidc;
  $('#signin-error').textContent = '';
  try {
    if (!crypto.subtle) throw new Error('this page must be served over https to sign in');
    const doc = await discover(issuer);
    const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
    const challenge = base64url(new Uint8Array(digest));
    const stateParam = base64url(crypto.getRandomValues(new Uint8Array(16)));
    const nonce = base64url(crypto.getRandomValues(new Uint8Array(16)));
    sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state: stateParam, nonce, hash: location.hash }));
    const url = new URL(doc.authorization_endpoint);
    const params = {
      response_type: 'code',
      client_id: clientId,
      redirect_uri: redirectUri(),
      scope,
      state: stateParam,
      nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    };
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
    location.assign(url.toString());
  } catch (error) {
    $('#signin-error').textContent = `Cannot sign in: ${error.message}`;
  }
}

/** The provider sent the browser back with `?code=&state=` (or `?error=`). */
async function oidcReturn(params) {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || 'null');
  } catch {
    saved = null;
  }
  sessionStorage.removeItem(PKCE_KEY);
  // The code must not stay in the address bar or the history.
  history.replaceState(null, '', location.pathname + ((saved && saved.hash) || ''));
  if (params.get('error')) {
    throw new Error(params.get('error_description') || params.get('error'));
  }
  if (!saved || !params.get('state') || saved.state !== params.get('state')) {
    throw new Error('the answer does not belong to a sign-in started here; please try again');
  }
  if (!state.config.oidc) throw new Error('no provider is configured');
  const { issuer, client_id: clientId } = state.config.oidc;
  const doc = await discover(issuer);
  const form = new URLSearchParams({
    grant_type: 'authorization_code',
    code: params.get('code') || '',
    redirect_uri: redirectUri(),
    client_id: clientId,
    code_verifier: saved.verifier,
  });
  const response = await fetch(doc.token_endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: form,
  });
  const tokens = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(tokens.error_description || tokens.error || `the token endpoint answered ${response.status}`);
  }
  if (tokens.id_token && claims(tokens.id_token).nonce !== saved.nonce) {
    throw new Error('the identity token was not issued for this sign-in');
  }
  // The API checks JWTs: the access token when the provider makes it one, else the ID token.
  const jwt = (t) => typeof t === 'string' && t.split('.').length === 3;
  const bearer = jwt(tokens.access_token) ? tokens.access_token : tokens.id_token;
  if (!jwt(bearer)) throw new Error('the provider gave no token this service can check');
  const exp = claims(bearer).exp;
  const expiresAt = exp ? exp * 1000 : Date.now() + (Number(tokens.expires_in) || 3600) * 1000;
  useSession(bearer, expiresAt);
}

// ---------------------------------------------------------------------------------------------
// Views

const VIEWS = ['signin', 'inbox', 'detail', 'absences'];

function show(view, focus = true) {
  state.view = view;
  for (const name of VIEWS) $(`#view-${name}`).hidden = name !== view;
  $('#bulk-bar').hidden = view !== 'inbox' || state.selected.size === 0;
  current($('#nav-inbox'), view === 'inbox' || view === 'detail');
  current($('#nav-absences'), view === 'absences');
  const titles = { signin: 'Sign in', inbox: 'Inbox', detail: 'Request', absences: 'Absences' };
  document.title = `${titles[view]} · Approvals`;
  if (focus) {
    const heading = $(`#view-${view} h1`);
    if (heading && !heading.closest('[hidden]')) heading.focus({ preventScroll: false });
  }
}

function current(button, yes) {
  if (yes) button.setAttribute('aria-current', 'page');
  else button.removeAttribute('aria-current');
}

function route() {
  if (!state.token) {
    showSignIn();
    return;
  }
  const hash = location.hash || '#/inbox';
  const match = hash.match(/^#\/requests\/([0-9a-fA-F-]{36})$/);
  if (match) {
    show('detail', false);
    openDetail(match[1], true);
  } else if (hash === '#/absences') {
    show('absences');
    loadAbsences();
  } else {
    show('inbox');
    refreshInbox();
  }
}

function showSignIn() {
  show('signin', false);
  const config = state.config;
  $('#signin-loading').hidden = config !== null;
  if (!config) return;
  $('#oidc-sign-in').hidden = !config.oidc;
  $('#dev-form').hidden = !config.dev_sign_in;
  $('#signin-none').hidden = Boolean(config.oidc || config.dev_sign_in);
}

function money(amount) {
  return amount ? `${amount.currency} ${amount.value}` : null;
}

function when(text) {
  if (!text) return null;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

function due(text) {
  if (!text) return null;
  const ms = Date.parse(text) - Date.now();
  const hours = Math.round(ms / 3600000);
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  if (Math.abs(hours) < 48) return `due ${format.format(hours, 'hour')}`;
  return `due ${format.format(Math.round(hours / 24), 'day')}`;
}

// --- Inbox

let refreshTimer = null;

/** Re-reads the inbox soon: several events in a burst make one read. */
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshInbox, 120);
}

async function refreshInbox() {
  if (!state.token) return;
  try {
    const answer = await api('GET', `/v1/inbox?limit=${PAGE}`);
    state.inbox = answer.items;
    state.next = answer.next_cursor;
    state.total = answer.total;
    $('#inbox-error').textContent = '';
    renderInbox();
  } catch (error) {
    if (state.token) $('#inbox-error').textContent = `Cannot read the inbox: ${describe(error)}`;
  }
}

async function moreInbox() {
  if (!state.next) return;
  try {
    const answer = await api('GET', `/v1/inbox?limit=${PAGE}&cursor=${encodeURIComponent(state.next)}`);
    const known = new Set(state.inbox.map((i) => i.id));
    state.inbox.push(...answer.items.filter((i) => !known.has(i.id)));
    state.next = answer.next_cursor;
    renderInbox();
  } catch (error) {
    $('#inbox-error').textContent = `Cannot read the inbox: ${describe(error)}`;
  }
}

// The items' nodes by id, kept while an item does not change: a live refresh then leaves the
// node (and the focus, and a half-done tap) where it is.
const rendered = new Map();

function renderInbox() {
  const list = $('#inbox-list');
  const ids = new Set(state.inbox.map((i) => i.id));
  for (const id of [...state.selected]) if (!ids.has(id)) state.selected.delete(id);
  for (const id of [...rendered.keys()]) if (!ids.has(id)) rendered.delete(id);
  const nodes = state.inbox.map((item) => {
    const key = JSON.stringify(item);
    const known = rendered.get(item.id);
    if (known && known.key === key) return known.node;
    const node = inboxItem(item);
    rendered.set(item.id, { key, node });
    return node;
  });
  const same = nodes.length === list.children.length && nodes.every((n, i) => list.children[i] === n);
  if (!same) list.replaceChildren(...nodes);
  for (const node of nodes) {
    node.querySelector('input.select').checked = state.selected.has(node.dataset.id);
  }
  $('#inbox-count').textContent = `(${state.total})`;
  $('#inbox-empty').hidden = state.inbox.length > 0;
  $('#inbox-more').hidden = !state.next;
  renderSelection();
  renderQueue();
}

function inboxItem(item) {
  const facts = [item.system, item.kind, money(item.amount), `from ${item.requester}`].filter(Boolean).join(' · ');
  const deadline = item.step_due_at || item.due_at;
  const checkbox = el('input', {
    type: 'checkbox',
    class: 'select',
    'aria-label': `Select ${item.title}`,
    onchange: (event) => {
      if (event.target.checked) state.selected.add(item.id);
      else state.selected.delete(item.id);
      renderSelection();
    },
  });
  checkbox.checked = state.selected.has(item.id);
  return el(
    'li',
    { class: 'item', 'data-id': item.id },
    el('label', { class: 'pick' }, checkbox),
    el(
      'button',
      { type: 'button', class: 'open', onclick: () => { location.hash = `#/requests/${item.id}`; } },
      el('strong', {}, item.title),
      el('span', { class: 'meta' }, facts),
      el(
        'span',
        { class: 'meta' },
        item.overdue ? el('span', { class: 'badge overdue' }, 'Overdue') : null,
        deadline ? ` ${due(deadline)}` : null,
        ' ',
        el('span', { class: 'badge queued', hidden: true }, 'Queued'),
      ),
    ),
  );
}

function renderSelection() {
  const n = state.selected.size;
  $('#bulk-n').textContent = String(n);
  $('#bulk-bar').hidden = state.view !== 'inbox' || n === 0;
}

async function bulkApprove() {
  const items = state.inbox
    .filter((i) => state.selected.has(i.id))
    .map((i) => ({ id: i.id, decision: 'approve', expected_version: i.version }));
  if (items.length === 0) return;
  const comment = $('#bulk-comment').value.trim();
  const titles = Object.fromEntries(state.inbox.map((i) => [i.id, i.title]));
  const command = {
    kind: 'bulk',
    key: newKey(),
    user: state.user,
    method: 'POST',
    path: '/v1/decisions',
    body: comment ? { items, comment } : { items },
    label: `Approve ${items.length} request${items.length === 1 ? '' : 's'}`,
    titles,
  };
  const button = $('#bulk-approve');
  button.disabled = true;
  try {
    const answer = await submit(command);
    state.selected.clear();
    $('#bulk-comment').value = '';
    if (answer) {
      showBulkResults(command, answer);
    } else {
      showBulkQueued(command);
    }
    refreshInbox();
  } catch (error) {
    $('#inbox-error').textContent = `${command.label}: ${describe(error)}`;
  } finally {
    button.disabled = false;
    renderSelection();
  }
}

function showBulkResults(command, answer) {
  const list = $('#bulk-list');
  list.replaceChildren(
    ...answer.results.map((r) =>
      el(
        'li',
        { 'data-ok': String(r.ok), 'data-id': r.id },
        el('strong', {}, command.titles[r.id] || r.id),
        ': ',
        r.ok ? outcome('approve', r.status) : `not decided: ${r.error.message} (${r.error.code})`,
      ),
    ),
  );
  const section = $('#bulk-results');
  section.hidden = false;
  section.dataset.state = 'done';
  const ok = answer.results.filter((r) => r.ok).length;
  announce(`${ok} of ${answer.results.length} approved.`);
}

function showBulkQueued(command) {
  $('#bulk-list').replaceChildren(
    ...command.body.items.map((i) => el('li', { 'data-id': i.id }, el('strong', {}, command.titles[i.id] || i.id), ': queued')),
  );
  const section = $('#bulk-results');
  section.hidden = false;
  section.dataset.state = 'queued';
}

// --- Detail

let detailLoad = 0;

async function openDetail(id, focus) {
  const load = ++detailLoad;
  $('#detail-error').textContent = '';
  if (!state.detail || state.detail.id !== id) {
    $('#detail').hidden = true;
    $('#decide-result').textContent = '';
    delete $('#decide-result').dataset.state;
    $('#decide-comment').value = '';
  }
  try {
    const detail = await api('GET', `/v1/requests/${id}`);
    if (load !== detailLoad || state.view !== 'detail') return;
    state.detail = detail;
    renderDetail(detail);
    if (focus) $('#detail-title').focus();
  } catch (error) {
    if (load !== detailLoad) return;
    const shown = state.detail && state.detail.id === id && !(error instanceof ApiError);
    $('#detail-error').textContent = shown
      ? 'Offline: this is the request as it was last read.'
      : `Cannot read the request: ${describe(error)}`;
  }
}

function renderDetail(d) {
  $('#detail').hidden = false;
  $('#detail-title').textContent = d.title;
  const status = $('#detail-status');
  status.textContent = d.status;
  status.className = `badge ${d.status}`;
  const facts = [
    ['System', d.system],
    ['Reference', d.external_ref],
    ['Kind', d.kind],
    ['Amount', money(d.amount)],
    ['Requester', d.requester],
    ['Submitted', when(d.submitted_at)],
    ['Due', when(d.due_at)],
    ['Round', d.round > 1 ? String(d.round) : null],
    ['Waiting for', d.awaiting && d.awaiting.length ? d.awaiting.join(', ') : null],
  ];
  const link = d.link && /^https?:\/\//i.test(d.link) ? el('a', { href: d.link, target: '_blank', rel: 'noopener noreferrer' }, 'Open in the source system') : null;
  $('#detail-facts').replaceChildren(
    ...facts.filter(([, v]) => v).flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]),
    ...(link ? [el('dt', {}, 'Link'), el('dd', {}, link)] : []),
  );
  const question = $('#detail-question');
  question.hidden = !d.awaiting_answer;
  if (d.awaiting_answer) {
    const q = d.awaiting_answer;
    question.replaceChildren(el('strong', {}, `${q.asked_by} asked (${when(q.asked_at)}):`), el('p', {}, q.question), el('p', { class: 'hint' }, 'Waiting for the answer.'));
  }
  $('#decide-form').hidden = d.status !== 'pending';
  const details = d.details && typeof d.details === 'object' && !Array.isArray(d.details) ? Object.entries(d.details) : [];
  $('#detail-details').replaceChildren(
    ...details.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, typeof v === 'string' ? v : el('pre', {}, JSON.stringify(v, null, 1)))]),
  );
  $('#details-title').parentElement.hidden = details.length === 0;
  const attachments = d.attachments || [];
  $('#attachments-section').hidden = attachments.length === 0;
  $('#detail-attachments').replaceChildren(
    ...attachments.map((a) =>
      el('li', {}, el('button', { type: 'button', onclick: (e) => download(a, e.currentTarget) }, `Download ${a.name} (${size(a.size)})`)),
    ),
  );
  $('#detail-steps').replaceChildren(...(d.steps || []).map(step));
  $('#detail-timeline').replaceChildren(
    ...(d.timeline || []).map((t) =>
      el(
        'li',
        {},
        el('span', { class: 'when' }, when(t.occurred_at)),
        humanType(t.type),
        t.actor ? ` by ${t.actor}` : null,
        t.delegate ? ` to ${t.delegate}` : null,
        t.comment ? el('pre', {}, t.comment) : null,
      ),
    ),
  );
  renderQueue();
}

function humanType(type) {
  return String(type || '').replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase().replace(/^./, (c) => c.toUpperCase());
}

function rule(r) {
  if (r === 'any') return 'any one';
  if (r === 'all') return 'all';
  if (r && typeof r === 'object' && r.at_least) return `at least ${r.at_least}`;
  return JSON.stringify(r);
}

function step(s) {
  const who = [...(s.approvers || []), ...(s.groups || []).map((g) => `group ${g}`)].join(', ');
  return el(
    'li',
    {},
    el('strong', {}, `${s.state}`),
    ` · ${rule(s.rule)} of ${who}`,
    s.overdue ? el('span', { class: 'badge overdue' }, ' overdue') : null,
    s.due_at ? el('span', { class: 'when' }, `Due ${when(s.due_at)}`) : null,
    (s.decisions || []).length
      ? el('ul', {}, ...s.decisions.map((x) => el('li', {}, `${x.by} ${x.decision}${x.on_behalf_of ? ` for ${x.on_behalf_of}` : ''}`, x.comment ? `: ${x.comment}` : '')))
      : null,
  );
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Downloads through fetch() with the bearer (a link cannot send it), then saves a blob. */
async function download(attachment, button) {
  button.disabled = true;
  try {
    const response = await api('GET', attachment.href, { raw: true });
    // A file that breaks off or fails its check rejects here: nothing half is saved.
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = el('a', { href: url, download: attachment.name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    $('#detail-error').textContent = `Cannot download ${attachment.name}: ${describe(error)}`;
  } finally {
    button.disabled = false;
  }
}

const VERBS = { approve: 'Approve', reject: 'Reject', return: 'Return', ask: 'Ask' };

/** What a decision did, in words: `status` is the request's status after it. */
function outcome(verdict, status) {
  if (verdict === 'approve' && status === 'pending') return 'approved; the request goes on to its next approvers';
  return `the request is ${status}`;
}

async function decide(verdict) {
  const d = state.detail;
  if (!d) return;
  const comment = $('#decide-comment').value.trim();
  if (verdict !== 'approve' && !comment) {
    result('#decide-result', 'failed', verdict === 'ask' ? 'Write the question in the comment first.' : `${VERBS[verdict]} needs a comment.`);
    $('#decide-comment').focus();
    return;
  }
  let body;
  if (verdict === 'ask') body = { question: comment };
  else body = comment ? { comment, expected_version: d.version } : { expected_version: d.version };
  const command = {
    kind: 'decision',
    key: newKey(),
    user: state.user,
    method: 'POST',
    path: `/v1/requests/${d.id}/${verdict}`,
    body,
    request: d.id,
    label: `${VERBS[verdict]} “${d.title}”`,
  };
  const buttons = document.querySelectorAll('#decide-form button');
  for (const b of buttons) b.disabled = true;
  result('#decide-result', 'sending', 'Sending…');
  try {
    const answer = await submit(command);
    if (answer) {
      result('#decide-result', 'done', verdict === 'ask' ? 'Asked: the requester gets your question.' : `Done: ${outcome(verdict, answer.status)}.`);
      $('#decide-comment').value = '';
      openDetail(d.id, false);
      refreshInbox();
    } else {
      result('#decide-result', 'queued', 'Queued: it is sent when the connection is back, and decides once.');
      renderQueue();
    }
  } catch (error) {
    result('#decide-result', 'failed', `Not done: ${describe(error)}`);
    if (error instanceof ApiError && error.code === 'version_conflict') openDetail(d.id, false);
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

// --- Absences

async function loadAbsences() {
  const from = $('#abs-from');
  const until = $('#abs-until');
  if (!from.value) from.value = localInput(new Date());
  if (!until.value) until.value = localInput(new Date(Date.now() + 7 * 86400000));
  try {
    const answer = await api('GET', '/v1/me/absences');
    $('#absences-error').textContent = '';
    $('#absence-list').replaceChildren(
      ...answer.items.map((a) =>
        el(
          'li',
          { class: 'item', 'data-id': a.id },
          el(
            'div',
            { class: 'row' },
            el('span', {}, el('strong', {}, `${a.deputy} stands in`), el('span', { class: 'meta' }, `${when(a.from)} until ${when(a.until)}`), a.comment ? el('span', { class: 'meta' }, a.comment) : null),
            el('button', { type: 'button', class: 'danger', onclick: (e) => endAbsence(a, e.currentTarget), 'aria-label': `End the absence with ${a.deputy}` }, 'End'),
          ),
        ),
      ),
    );
    $('#absence-empty').hidden = answer.items.length > 0;
  } catch (error) {
    $('#absences-error').textContent = `Cannot read your absences: ${describe(error)}`;
  }
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

async function saveAbsence(event) {
  event.preventDefault();
  const from = new Date($('#abs-from').value);
  const until = new Date($('#abs-until').value);
  if (Number.isNaN(from.getTime()) || Number.isNaN(until.getTime())) {
    result('#abs-result', 'failed', 'Give both dates.');
    return;
  }
  const deputy = $('#abs-deputy').value.trim();
  const comment = $('#abs-comment').value.trim();
  const body = { deputy, from: from.toISOString(), until: until.toISOString() };
  if (comment) body.comment = comment;
  const command = { kind: 'absence', key: newKey(), user: state.user, method: 'POST', path: '/v1/me/absences', body, label: `Absence with ${deputy}` };
  const button = $('#abs-save');
  button.disabled = true;
  try {
    const answer = await submit(command);
    if (answer) {
      result('#abs-result', 'done', `Recorded: ${answer.deputy} stands in for you.`);
      $('#abs-deputy').value = '';
      $('#abs-comment').value = '';
      loadAbsences();
    } else {
      result('#abs-result', 'queued', 'Queued: it is recorded when the connection is back.');
    }
  } catch (error) {
    result('#abs-result', 'failed', `Not recorded: ${describe(error)}`);
  } finally {
    button.disabled = false;
  }
}

async function endAbsence(absence, button) {
  button.disabled = true;
  try {
    await api('DELETE', `/v1/me/absences/${absence.id}`);
    announce(`The absence with ${absence.deputy} has ended.`);
    loadAbsences();
  } catch (error) {
    $('#absences-error').textContent = `Cannot end it: ${describe(error)}`;
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// The live stream

function setLive(text, status) {
  const node = $('#live');
  node.dataset.state = status;
  node.textContent = text;
}

function stopStream() {
  state.streamGeneration += 1;
  if (state.streamAbort) state.streamAbort.abort();
  state.streamAbort = null;
  if (state.wakeStream) state.wakeStream();
}

function startStream() {
  stopStream();
  follow(state.streamGeneration);
}

async function follow(generation) {
  let delay = 1000;
  while (state.token && generation === state.streamGeneration) {
    const controller = new AbortController();
    state.streamAbort = controller;
    let silence = null;
    const quiet = () => {
      clearTimeout(silence);
      silence = setTimeout(() => controller.abort(), STREAM_SILENCE_MS);
    };
    try {
      quiet();
      const response = await fetch('/v1/stream', {
        headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal: controller.signal,
      });
      if (response.status === 401) {
        clearTimeout(silence);
        signOut('Your sign-in has expired. Please sign in again.');
        return;
      }
      if (!response.ok || !response.body) throw new Error(`the stream answered ${response.status}`);
      await readEvents(response.body, quiet, (event, data) => {
        if (event === 'ready') {
          // Connected: whatever changed while away is read now.
          delay = 1000;
          setLive('Live', 'live');
          refreshInbox();
          flush();
        } else if (event === 'inbox') {
          scheduleRefresh();
          let change = {};
          try {
            change = JSON.parse(data);
          } catch {
            change = {};
          }
          if (state.view === 'detail' && state.detail && change.request_id === state.detail.id) {
            openDetail(state.detail.id, false);
          }
        }
      });
    } catch {
      // A network error, or the silence watchdog: reconnect below.
    }
    clearTimeout(silence);
    if (generation !== state.streamGeneration || !state.token) return;
    setLive(navigator.onLine ? 'Reconnecting…' : 'Offline', navigator.onLine ? 'off' : 'offline');
    const wait = delay + Math.random() * delay * 0.3;
    delay = Math.min(delay * 2, STREAM_MAX_DELAY_MS);
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, wait);
      state.wakeStream = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    state.wakeStream = null;
  }
}

/** Reads server-sent events from a byte stream: `onEvent(event, data)` for each one. */
async function readEvents(body, onBytes, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = 'message';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    buffer += value;
    for (;;) {
      const end = buffer.search(/\r\n|\r|\n/);
      if (end < 0) break;
      // A lone \r at the end of a chunk may be the first half of \r\n: wait for more.
      if (buffer[end] === '\r' && end === buffer.length - 1) break;
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
      if (line === '') {
        if (data.length) onEvent(event, data.join('\n'));
        event = 'message';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? '' : line.slice(colon + 1);
        if (text.startsWith(' ')) text = text.slice(1);
        if (field === 'event') event = text;
        else if (field === 'data') data.push(text);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Start

function started() {
  $('#signin-error').textContent = '';
  route();
  startStream();
  flush();
}

function wire() {
  $('#dev-form').addEventListener('submit', devSignIn);
  $('#oidc-sign-in').addEventListener('click', oidcSignIn);
  $('#sign-out').addEventListener('click', () => signOut(''));
  for (const button of document.querySelectorAll('[data-go]')) {
    button.addEventListener('click', () => {
      if (location.hash === button.dataset.go) route();
      else location.hash = button.dataset.go;
    });
  }
  $('#back').addEventListener('click', () => { location.hash = '#/inbox'; });
  for (const button of document.querySelectorAll('#decide-form [data-verdict]')) {
    button.addEventListener('click', () => decide(button.dataset.verdict));
  }
  $('#decide-form').addEventListener('submit', (e) => e.preventDefault());
  $('#bulk-approve').addEventListener('click', bulkApprove);
  $('#bulk-clear').addEventListener('click', () => {
    state.selected.clear();
    renderInbox();
  });
  $('#bulk-dismiss').addEventListener('click', () => { $('#bulk-results').hidden = true; });
  $('#inbox-more').addEventListener('click', moreInbox);
  $('#absence-form').addEventListener('submit', saveAbsence);
  window.addEventListener('hashchange', route);
  window.addEventListener('online', () => {
    flush();
    if (state.wakeStream) state.wakeStream();
  });
  window.addEventListener('offline', () => setLive('Offline', 'offline'));
  // A flaky connection may never say `online`: queued commands are tried again now and then.
  setInterval(() => {
    if (state.token && navigator.onLine && mine().length) flush();
  }, 15000);
  setInterval(() => {
    if (state.token && state.expiresAt && state.expiresAt < Date.now()) signOut('Your sign-in has expired. Please sign in again.');
  }, 30000);
}

async function main() {
  wire();
  try {
    const response = await fetch('config.json', { cache: 'no-store' });
    state.config = await response.json();
  } catch {
    state.config = { oidc: null, dev_sign_in: false };
    $('#signin-error').textContent = 'The service cannot be reached.';
  }
  const params = new URLSearchParams(location.search);
  if (params.has('code') || params.has('error')) {
    try {
      await oidcReturn(params);
    } catch (error) {
      $('#signin-error').textContent = `Cannot sign in: ${error.message}`;
    }
  }
  if (!state.token) restoreSession();
  if (state.token) started();
  else route();
}

main();
