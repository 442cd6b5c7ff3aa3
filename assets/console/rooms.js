// The rooms demo: two people on one order, written as a client of Switchboard's public APIs only,
// so that it reads as an example.
//
// - GraphQL over HTTP (POST /graphql, `Authorization: Bearer <jwt>`): the order, once, and the
//   staff member's `updateOrder`.
// - The room channel (/ws?token=<jwt>): `join_room` on `order:<id>`; presence (`room_joined`'s
//   member list, then `user_joined_room` / `user_left_room`); `typing_indicator` both ways (the
//   server sends `isTyping: false` by itself 3 s after the last `true`); `order_update` each time
//   the order changes, with a `cursor` that a reconnect's `join_room` passes as `after` so that no
//   update is missed while the socket was down.
//
// The page is served in `--demo` mode only, with a token for each of its two people.

import { avatarBadge, el } from './ui.js';

const settings = JSON.parse(document.getElementById('settings').textContent);
const $ = (id) => document.getElementById(id);
const ORDER_FIELDS = 'id orderNumber status paymentStatus trackingNumber total currency updatedAt';
const TYPING_FIELD = 'reply';
const RETRY_MS = [500, 1000, 2000, 5000];

const me = settings.people.find((p) => p.key === new URLSearchParams(location.search).get('as'));
let order = null;
let roomId = null;
let ws = null;
let retries = 0;
/** The `cursor` of the last `order_update`: where a rejoin resumes. */
let lastCursor = null;
/** Everyone in the room by user id: `{ name, typing }`, in the order they arrived. */
const members = new Map();
let typingSentAt = 0;

// --- GraphQL over HTTP -------------------------------------------------------------------

async function graphql(query, variables = {}) {
  const response = await fetch('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${me.token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(body.errors[0].message);
  return body.data;
}

async function loadOrder() {
  const { orders } = await graphql(`query DemoOrders { orders(first: 100) { ${ORDER_FIELDS} } }`);
  order = orders.find((o) => o.orderNumber === settings.orderNumber);
  if (!order) throw new Error(`order ${settings.orderNumber} is not in the store`);
  showOrder(order, []);
}

// --- the room channel --------------------------------------------------------------------

function send(type, payload) {
  if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type, payload }));
}

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  setStatus('Connecting…', 'connecting');
  const socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(me.token)}`);
  ws = socket;
  socket.addEventListener('message', (event) => handle(JSON.parse(event.data)));
  socket.addEventListener('close', () => {
    if (ws !== socket) return;
    members.clear();
    renderPresence();
    const wait = RETRY_MS[Math.min(retries++, RETRY_MS.length - 1)];
    setStatus(`Disconnected; reconnecting in ${wait / 1000} s`, 'down');
    setTimeout(connect, wait);
  });
}

function join() {
  // With `after`, the updates since the last one seen come first: nothing is lost across a drop.
  send('join_room', lastCursor ? { roomId, after: lastCursor } : { roomId });
}

async function handle({ type, payload }) {
  switch (type) {
    case 'connection_established':
      join();
      break;
    case 'room_joined':
      retries = 0;
      setStatus(`In the room as ${me.name}`, 'live');
      members.clear();
      for (const m of payload.members) members.set(m.userId, { name: m.name, typing: m.isTyping });
      renderPresence();
      break;
    case 'user_joined_room':
      members.set(payload.userId, { name: payload.name, typing: false });
      renderPresence();
      break;
    case 'user_left_room':
      members.delete(payload.userId);
      renderPresence();
      break;
    case 'typing_indicator': {
      const member = members.get(payload.userId);
      if (member) member.typing = payload.isTyping;
      renderTyping();
      renderPresence();
      break;
    }
    case 'order_update':
      lastCursor = payload.cursor;
      order = { ...order, ...payload.order };
      showOrder(order, payload.changedFields);
      addUpdate(payload);
      break;
    case 'error':
      if (payload.code === 'CURSOR_EXPIRED') {
        // Too far behind to replay: read the order afresh and join from now.
        lastCursor = null;
        await loadOrder();
        join();
      } else {
        setStatus(`${payload.code}: ${payload.message}`, 'down');
      }
      break;
    default:
      break; // pong, notification: not shown here
  }
}

// --- typing ------------------------------------------------------------------------------

function typing(isTyping) {
  send('typing_indicator', { roomId, isTyping, field: TYPING_FIELD });
  typingSentAt = isTyping ? Date.now() : 0;
}

function onInput(event) {
  if (!event.target.value) return typing(false);
  // Once a second is enough: the server keeps an indicator 3 s after the last `true`.
  if (Date.now() - typingSentAt > 1000) typing(true);
}

// --- rendering ---------------------------------------------------------------------------

function setStatus(text, state = '') {
  $('status').textContent = text;
  $('status').dataset.state = state;
}

const nameOf = (userId) => members.get(userId)?.name || userId;

/** Brings the avatars in line with `members`, keeping the ones that stay (only arrivals animate). */
function renderPresence() {
  const list = $('presence');
  const shown = new Map([...list.children].map((li) => [li.dataset.user, li]));
  for (const [userId, li] of shown) if (!members.has(userId)) li.remove();
  let at = 0;
  for (const [userId, m] of members) {
    let item = shown.get(userId);
    if (!item) {
      item = el('li', { class: 'member', 'data-user': userId },
        avatarBadge(m.name, userId),
        el('span', { class: 'member-name', text: m.name || userId }));
      if (userId === me.userId) item.append(el('span', { class: 'you', text: '(you)' }));
    }
    item.classList.toggle('typing', Boolean(m.typing));
    // In arrival order. Moved only when out of place: re-inserting restarts its animation.
    if (list.children[at] !== item) list.insertBefore(item, list.children[at] ?? null);
    at += 1;
  }
}

function renderTyping() {
  const typists = [...members].filter(([userId, m]) => m.typing && userId !== me.userId).map(([userId]) => nameOf(userId));
  $('typing').textContent = typists.length === 0 ? ''
    : typists.length === 1 ? `${typists[0]} is typing…` : `${typists.join(' and ')} are typing…`;
}

function showOrder(o, changed) {
  $('order-number').textContent = o.orderNumber;
  const values = {
    status: o.status,
    paymentStatus: o.paymentStatus,
    trackingNumber: o.trackingNumber || '–',
    total: `${o.total} ${o.currency}`,
    updatedAt: new Date(o.updatedAt).toLocaleString(),
  };
  for (const [field, value] of Object.entries(values)) {
    const dd = document.querySelector(`[data-field="${field}"]`);
    dd.textContent = value;
    if (changed.includes(field)) {
      dd.classList.remove('changed');
      void dd.offsetWidth; // restart the highlight
      dd.classList.add('changed');
    }
  }
  $('status-select').value = o.status;
  $('payment-select').value = o.paymentStatus;
}

function addUpdate(update) {
  const what = update.changedFields.map((f) => `${f} → ${update[f] ?? update.order[f] ?? '–'}`).join(', ');
  const at = new Date(update.updatedAt).toLocaleTimeString(undefined, { hour12: false });
  $('updates').prepend(el('li', { 'data-sequence': String(update.sequence) }, el('span', { class: 'muted', text: `${at} · #${update.sequence} · ` }), what));
}

function showChooser() {
  $('choose').hidden = false;
  $('people').replaceChildren(...settings.people.map((p) =>
    el('li', { class: 'panel member' },
      avatarBadge(p.name, p.userId),
      el('div', {},
        el('strong', { text: p.name }), el('span', { class: 'muted', text: ` · ${p.role}` }), el('br'),
        el('a', { href: `?as=${p.key}`, text: `Open as ${p.name.split(' ')[0]}` }),
        ' · ',
        el('a', { href: `?as=${p.key}`, target: '_blank', rel: 'noopener', text: 'in a new tab' })))));
}

// --- start -------------------------------------------------------------------------------

async function start() {
  $('room').hidden = false;
  const other = settings.people.find((p) => p !== me);
  $('you').replaceChildren(`You are ${me.name} (${me.role}). Open `,
    el('a', { href: `?as=${other.key}`, target: '_blank', rel: 'noopener', text: other.name }),
    ' in another tab, or ',
    el('a', { href: `?as=${me.key}`, target: '_blank', rel: 'noopener', text: 'a second tab as yourself' }),
    '.');
  $('staff-panel').hidden = me.role === 'customer';
  $('reply').addEventListener('input', onInput);
  $('reply').addEventListener('blur', () => typingSentAt && typing(false));
  $('staff-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('staff-error').textContent = '';
    const input = { status: $('status-select').value, paymentStatus: $('payment-select').value };
    const tracking = $('tracking').value.trim();
    if (tracking) input.trackingNumber = tracking;
    try {
      await graphql('mutation DemoUpdate($id: ID!, $input: UpdateOrderInput!) { updateOrder(id: $id, input: $input) { id } }', { id: order.id, input });
    } catch (err) {
      $('staff-error').textContent = err.message;
    }
  });
  try {
    await loadOrder();
  } catch (err) {
    setStatus(err.message, 'down');
    return;
  }
  roomId = `order:${order.id}`;
  $('room-id').textContent = roomId;
  connect();
}

if (me) start();
else showChooser();
