// The operator console: live figures through Switchboard's own subscriptions, `serverStats`
// (a snapshot twice a second) and `eventTail` (the published events), over graphql-ws at
// /graphql. Staff and admins only: the server refuses anyone else, and the page shows why.
//
// The connection is Switchboard's JavaScript client (clients/js, served at /console/lib/) around
// graphql-ws's own (served at /console/vendor/): it reconnects by itself with jittered backoff and
// reports every failure as a SwitchboardError, which the page turns into words.
//
// The token is typed into the form and kept in a variable (and in this tab's sessionStorage only
// if the operator asks); it travels in `connection_init`, never in a URL.

import { resumableGraphqlWs } from './lib/index.js';
import { createClient } from './vendor/graphql-ws-client.js';
import { avatarBadge, el } from './ui.js';

const STATS = `subscription Console($every: Int, $rooms: Int) {
  serverStats(every: $every, rooms: $rooms) {
    node roomCount presenceMembers
    nodes {
      node local ageMs connections subscriptions
      connectionsByChannel { name count } subscriptionsByField { name count }
      publishedPerSecond deliveredPerSecond laggedConsumers droppedDeliveries
    }
    rooms { roomId connections memberCount members { userId name connections isTyping typingField } }
  }
}`;
const TAIL = `subscription Tail { eventTail(perSecond: 20) { topic sequence kind cursor at skipped } }`;
const EVERY_MS = 500;
const ROOMS_SHOWN = 20;
const TAIL_ROWS = 100;
const SPARK_POINTS = 120; // one minute at two snapshots a second
const STORAGE_KEY = 'switchboard.console.token';

const settings = JSON.parse(document.getElementById('settings').textContent);
const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const int = new Intl.NumberFormat();

let token = null;
/** The graphql-ws client of the operator signed in, while they are. */
let client = null;
let lastSnapshot = 0;
let paused = false;
const history = { published: [], delivered: [] };

// --- signing in and out ------------------------------------------------------------------

function showSignIn(message = '') {
  $('sign-in').hidden = false;
  $('console').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in-error').textContent = message;
  setStatus('Signed out');
  $('token').focus();
}

function signOut(message = '') {
  token = null;
  sessionStorage.removeItem(STORAGE_KEY);
  const current = client;
  client = null;
  void current?.dispose();
  showSignIn(message);
}

function open(newToken, remember) {
  token = newToken.trim().replace(/^Bearer\s+/i, '');
  if (remember) sessionStorage.setItem(STORAGE_KEY, token);
  else sessionStorage.removeItem(STORAGE_KEY);
  $('token').value = '';
  $('sign-in-error').textContent = '';
  start();
}

function setStatus(text, state = '') {
  const status = $('status');
  // Only on change: it is a live region, and a screen reader would repeat it twice a second.
  if (status.textContent !== text) status.textContent = text;
  status.dataset.state = state;
}

// --- the connection ----------------------------------------------------------------------

/** What a failure means to the operator (a SwitchboardError); every one of them signs out. */
function refusal(error) {
  if (error.kind === 'auth') return 'The server refused this token: it is invalid or has expired.';
  if (error.kind === 'closed') return `The connection was refused (${error.closeCode} ${error.message}).`;
  switch (error.code) {
    case 'FORBIDDEN':
      return 'This token may not open the console: it needs the staff or admin role.';
    case 'UNAUTHENTICATED':
      return 'The server did not receive a token.';
    default:
      return `The server refused the console: ${error.message}`;
  }
}

function start() {
  void client?.dispose();
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`;
  setStatus('Connecting…', 'connecting');
  const current = resumableGraphqlWs(createClient, {
    url,
    connectionParams: () => ({ authorization: `Bearer ${token}` }),
    // A refused token signs out at once: the operator types another.
    authRetries: 0,
    backoff: { minDelay: 500, maxDelay: 5000 },
    on: {
      connected() {
        if (client === current) setStatus('Connected', 'connecting');
      },
      // Anything but a refusal (a restart, 1001, 1006, a slow-consumer 1013) is tried again.
      closed(event) {
        if (client === current) setStatus(`Disconnected (${event.code}); reconnecting…`, 'down');
      },
    },
  });
  client = current;
  const fail = (error) => {
    if (client === current) signOut(refusal(error));
  };
  current.subscribe({ query: STATS, variables: { every: EVERY_MS, rooms: ROOMS_SHOWN } }, {
    next(result) {
      if (client !== current) return;
      if (result.errors) return fail({ kind: 'graphql', code: result.errors[0]?.extensions?.code ?? '', message: result.errors[0]?.message ?? 'unknown error' });
      $('sign-in').hidden = true;
      $('console').hidden = false;
      $('sign-out').hidden = false;
      render(result.data.serverStats);
    },
    error: fail,
    complete() {},
  });
  current.subscribe({ query: TAIL }, {
    next(result) {
      if (client === current && !result.errors) addTail(result.data.eventTail);
    },
    error() {},
    complete() {},
  });
}

// A snapshot that stops coming (a stalled socket) should not look live.
setInterval(() => {
  if (client && lastSnapshot && Date.now() - lastSnapshot > 3 * EVERY_MS + 1000) {
    setStatus('No update for a few seconds…', 'down');
  }
}, 1000);

// --- rendering ---------------------------------------------------------------------------

/** Replaces `parent`'s children with `items`, each made by `make`. */
function fill(parent, items, make) {
  parent.replaceChildren(...items.map(make));
}

/** Sums `[{name, count}]` lists of every node by name, keeping the first node's order. */
function sumByName(lists) {
  const sums = new Map();
  for (const list of lists) for (const { name, count } of list) sums.set(name, (sums.get(name) ?? 0) + count);
  return [...sums].map(([name, count]) => ({ name, count }));
}

const total = (nodes, key) => nodes.reduce((sum, n) => sum + (n[key] ?? 0), 0);
const rate = (value) => (value == null ? '–' : fmt.format(value));

function render(snapshot) {
  lastSnapshot = Date.now();
  const nodes = snapshot.nodes;
  const label = nodes.length > 1 ? `${nodes.length} nodes` : snapshot.node;
  setStatus(`Live · ${label}`, 'live');

  const totals = {
    connections: int.format(total(nodes, 'connections')),
    subscriptions: int.format(total(nodes, 'subscriptions')),
    rooms: int.format(snapshot.roomCount),
    members: int.format(snapshot.presenceMembers),
    // With a backplane every node's broker is handed every event of the cluster: the events
    // published are this node's count, not the nodes' sum (deliveries are each node's own).
    published: rate(nodes[0].publishedPerSecond),
    delivered: rate(total(nodes, 'deliveredPerSecond')),
    lagged: int.format(total(nodes, 'laggedConsumers')),
    dropped: int.format(total(nodes, 'droppedDeliveries')),
  };
  for (const [key, value] of Object.entries(totals)) document.querySelector(`[data-total="${key}"]`).textContent = value;
  spark('published', nodes[0].publishedPerSecond);
  spark('delivered', total(nodes, 'deliveredPerSecond'));

  counts($('channels'), sumByName(nodes.map((n) => n.connectionsByChannel)), 'channel');
  counts($('fields'), sumByName(nodes.map((n) => n.subscriptionsByField)), 'field');

  fill($('nodes'), nodes, (n) =>
    el('tr', { 'data-node': n.node },
      el('th', { scope: 'row' }, n.node, n.local ? el('span', { class: 'tag', text: 'this node' }) : ''),
      el('td', { class: 'num', text: n.local ? '–' : `${fmt.format(n.ageMs / 1000)} s` }),
      el('td', { class: 'num', text: int.format(n.connections) }),
      el('td', { class: 'num', text: int.format(n.subscriptions) }),
      el('td', { class: 'num', text: rate(n.publishedPerSecond) }),
      el('td', { class: 'num', text: rate(n.deliveredPerSecond) }),
      el('td', { class: 'num', text: n.laggedConsumers == null ? '–' : int.format(n.laggedConsumers) }),
      el('td', { class: 'num', text: n.droppedDeliveries == null ? '–' : int.format(n.droppedDeliveries) })));

  renderRooms(snapshot);
}

/** A table of named counts with a bar for each one's share. */
function counts(tbody, list, kind) {
  const max = Math.max(1, ...list.map((c) => c.count));
  fill(tbody, list, ({ name, count }) => {
    const bar = el('span', { class: 'bar-fill' });
    bar.style.width = `${(100 * count) / max}%`;
    return el('tr', { [`data-${kind}`]: name, class: count ? '' : 'zero' },
      el('th', { scope: 'row' }, el('code', { text: name })),
      el('td', { class: 'num', text: int.format(count) }),
      el('td', { class: 'bar', 'aria-hidden': 'true' }, bar));
  });
}

function spark(key, value) {
  const points = history[key];
  points.push(value ?? 0);
  if (points.length > SPARK_POINTS) points.shift();
  const max = Math.max(1, ...points);
  const step = 120 / (SPARK_POINTS - 1);
  const offset = SPARK_POINTS - points.length;
  const coords = points.map((v, i) => `${((offset + i) * step).toFixed(1)},${(23 - (22 * v) / max).toFixed(1)}`);
  document.querySelector(`[data-spark="${key}"] polyline`).setAttribute('points', coords.join(' '));
}

function avatar(member) {
  const who = member.name || member.userId;
  const badge = avatarBadge(member.name, member.userId);
  const tabs = member.connections === 1 ? '1 tab' : `${member.connections} tabs`;
  const item = el('li', { class: 'member', 'data-user': member.userId, title: `${who} (${member.userId})` },
    badge,
    el('span', { class: 'member-name', text: who }),
    el('span', { class: 'tabs', text: tabs }));
  if (member.isTyping) {
    item.classList.add('typing');
    item.append(el('span', { class: 'typing-note', text: member.typingField ? `typing in ${member.typingField}…` : 'typing…' }));
  }
  return item;
}

function renderRooms(snapshot) {
  const rooms = snapshot.rooms;
  $('rooms-empty').hidden = rooms.length > 0;
  $('rooms-note').textContent = snapshot.roomCount > rooms.length
    ? `(the ${rooms.length} busiest of ${int.format(snapshot.roomCount)})` : '';
  fill($('rooms'), rooms, (room) => {
    const more = room.memberCount - room.members.length;
    return el('li', { class: 'room', 'data-room': room.roomId },
      el('div', { class: 'room-head' },
        el('code', { text: room.roomId }),
        el('span', { class: 'muted', text: `${room.memberCount} ${room.memberCount === 1 ? 'member' : 'members'} · ${room.connections} ${room.connections === 1 ? 'tab' : 'tabs'}` })),
      el('ul', { class: 'members' }, ...room.members.map(avatar),
        ...(more > 0 ? [el('li', { class: 'muted', text: `and ${more} more` })] : [])));
  });
}

function time(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { hour12: false });
}

function addTail(event) {
  if (paused) return;
  const body = $('tail');
  $('tail-empty').hidden = true;
  if (event.skipped > 0) {
    body.prepend(el('tr', { class: 'skipped' }, el('td', { colspan: '5', text: `${int.format(event.skipped)} more events not shown (the tail sends at most 20 a second)` })));
  }
  body.prepend(el('tr', { 'data-topic': event.topic },
    el('td', { text: time(event.at) }),
    el('td', {}, el('code', { text: event.topic })),
    el('td', { class: 'num', text: String(event.sequence) }),
    el('td', { text: event.kind.toLowerCase().replace('_', ' ') }),
    el('td', { class: 'cursor-col' }, el('code', { class: 'cursor', text: event.cursor }))));
  while (body.rows.length > TAIL_ROWS) body.lastElementChild.remove();
}

// --- wiring ------------------------------------------------------------------------------

$('sign-in-form').addEventListener('submit', (event) => {
  event.preventDefault();
  open($('token').value, $('remember').checked);
});
$('sign-out').addEventListener('click', () => signOut());
$('tail-pause').addEventListener('click', (event) => {
  paused = !paused;
  event.currentTarget.setAttribute('aria-pressed', String(paused));
  event.currentTarget.textContent = paused ? 'Resume' : 'Pause';
});
if (settings.demoToken) {
  $('use-demo').hidden = false;
  $('use-demo').addEventListener('click', () => open(settings.demoToken, false));
}

const kept = sessionStorage.getItem(STORAGE_KEY);
if (kept) {
  $('remember').checked = true;
  open(kept, true);
} else {
  showSignIn();
}
