// The rooms demo: two people on one order, written as a client of Switchboard's public APIs only,
// so that it reads as an example.
//
// - GraphQL over HTTP (POST /graphql, `Authorization: Bearer <jwt>`): the order, once, and the
//   staff member's `updateOrder`.
// - The room channel (/ws) through Switchboard's JavaScript client (clients/js, served at
//   /console/lib/): it joins `order:<id>` and keeps the room's presence (one entry per person),
//   relays typing both ways (throttled; the server stops an indicator 3 s after the last
//   keystroke), and delivers each `order_update`. It reconnects by itself, re-joins the room and
//   resumes the order's updates from the last one's cursor, so that none is missed while the
//   socket was down.
//
// The page is served in `--demo` mode only, with a token for each of its two people.

import { createRoomsClient } from './lib/index.js';
import { avatarBadge, el } from './ui.js';

const settings = JSON.parse(document.getElementById('settings').textContent);
const $ = (id) => document.getElementById(id);
const ORDER_FIELDS = 'id orderNumber status paymentStatus trackingNumber total currency updatedAt';
const TYPING_FIELD = 'reply';

const me = settings.people.find((p) => p.key === new URLSearchParams(location.search).get('as'));
let order = null;
let roomId = null;
let rooms = null;
/** Everyone in the room, one entry per person, in the order they arrived (the client's list). */
let members = [];

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

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  rooms = createRoomsClient({ url: `${scheme}://${location.host}/ws`, token: me.token });
  rooms.on('status', ({ state, delay }) => {
    if (state === 'connecting') setStatus('Connecting…', 'connecting');
    if (state === 'reconnecting') setStatus(`Disconnected; reconnecting in ${(delay / 1000).toFixed(1)} s`, 'down');
    if (state === 'closed') setStatus('Disconnected', 'down');
  });
  rooms.on('joined', () => setStatus(`In the room as ${me.name}`, 'live'));
  rooms.on('presence', (event) => {
    if (event.roomId !== roomId) return;
    members = event.members;
    renderPresence();
    renderTyping();
  });
  rooms.on('update', ({ type, payload }) => {
    if (type !== 'order_update') return;
    order = { ...order, ...payload.order };
    showOrder(order, payload.changedFields);
    addUpdate(payload);
  });
  // Too far behind to replay the updates missed: read the order afresh (the room is joined again).
  rooms.on('reset', () => loadOrder().catch((err) => setStatus(err.message, 'down')));
  rooms.on('error', (error) => {
    if (error.kind === 'room') setStatus(`${error.code}: ${error.message}`, 'down');
  });
  rooms.join(roomId).catch((error) => setStatus(`${error.code}: ${error.message}`, 'down'));
}

// --- typing ------------------------------------------------------------------------------

function onInput(event) {
  // The client sends `isTyping: true` at most once a second; the server keeps it 3 s.
  if (!rooms) return;
  if (event.target.value) rooms.typing(roomId, TYPING_FIELD);
  else rooms.stopTyping(roomId);
}

// --- rendering ---------------------------------------------------------------------------

function setStatus(text, state = '') {
  $('status').textContent = text;
  $('status').dataset.state = state;
}

/** Brings the avatars in line with `members`, keeping the ones that stay (only arrivals animate). */
function renderPresence() {
  const list = $('presence');
  const present = new Set(members.map((m) => m.userId));
  const shown = new Map([...list.children].map((li) => [li.dataset.user, li]));
  for (const [userId, li] of shown) if (!present.has(userId)) li.remove();
  let at = 0;
  for (const m of members) {
    let item = shown.get(m.userId);
    if (!item) {
      item = el('li', { class: 'member', 'data-user': m.userId },
        avatarBadge(m.name, m.userId),
        el('span', { class: 'member-name', text: m.name || m.userId }));
      if (m.userId === me.userId) item.append(el('span', { class: 'you', text: '(you)' }));
    }
    item.classList.toggle('typing', m.isTyping);
    // In arrival order. Moved only when out of place: re-inserting restarts its animation.
    if (list.children[at] !== item) list.insertBefore(item, list.children[at] ?? null);
    at += 1;
  }
}

function renderTyping() {
  const typists = members.filter((m) => m.isTyping && m.userId !== me.userId).map((m) => m.name || m.userId);
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
  $('reply').addEventListener('blur', () => rooms?.stopTyping(roomId));
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
