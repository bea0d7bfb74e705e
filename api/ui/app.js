'use strict';
// posledger's screen. Every figure on it comes from the documented HTTP API (/v1/openapi.json)
// with the key the user signs in with; the key is kept in this tab's session storage, never in
// a URL. Money arrives as decimal strings and is shown exactly as sent, digits grouped: the
// screen never does float arithmetic on money (sums use integers scaled by the decimals).

const KEY_STORE = 'posledger.key';
// The business time zone, +08:00: business dates and times are shown as the merchants write them.
const BUSINESS_OFFSET_MS = 8 * 3600 * 1000;
const BUSINESS_ZONE = '+08:00';
// Events shown per page of the audit log.
const EVENTS_PAGE = 50;
// Times a read refused as busy (429) is asked again.
const BUSY_RETRIES = 5;
// Merchants shown per page.
const MERCHANTS_PAGE = 50;
// Breaks listed on one page of the breaks view (the server's page holds up to 10,000).
const BREAKS_PAGE = 200;
// Postings read per page, and pages at most, when looking for a merchant's settlements.
const POSTINGS_PAGE = 10000;
const POSTINGS_PAGES_MAX = 5;

const CHANNEL_NAMES = {
  wechat: 'WeChat Pay', alipay: 'Alipay', unionpay: 'UnionPay', generic: 'Generic',
  unionpay_card: 'UnionPay card', unionpay_qr: 'UnionPay QR', cash: 'Cash',
};
const STATEMENT_CHANNELS = ['wechat', 'alipay', 'unionpay', 'generic'];
const OUTCOME_NAMES = {
  matched: 'Matched',
  amount_mismatch: 'Amount differs',
  fee_mismatch: 'Fee differs',
  status_mismatch: 'Status differs',
  missing_in_ledger: 'Missing in our books',
  missing_in_statement: 'Missing in the statement',
  duplicate_in_statement: 'Duplicate in the statement',
  carried_forward: 'Carried to the next day',
};
const BREAK_OUTCOMES = Object.keys(OUTCOME_NAMES).filter((o) => o !== 'matched');
const ACTIONS = {
  book: 'Book it (post what the channel reports)',
  write_off: 'Write it off',
  refund: 'Refund the customer',
};
// The merchant's path through onboarding.
const STAGES = [['申请', 'Applied'], ['审核', 'Reviewed'], ['签约', 'Contracted'], ['装机', 'Installed'], ['开通', 'Active']];

// The views, and the roles each is shown to (the API refuses the rest anyway).
const VIEWS = [
  { id: 'day-end', title: 'Day-end', roles: ['finance', 'admin'], draw: drawDayEnd },
  { id: 'breaks', title: 'Breaks', roles: ['finance', 'auditor', 'admin'], draw: drawBreaks },
  { id: 'merchants', title: 'Merchants', roles: ['finance', 'admin'], draw: drawMerchants },
  { id: 'trends', title: 'Trends', roles: ['analyst', 'finance', 'admin'], draw: drawTrends },
  { id: 'audit', title: 'Audit', roles: ['auditor', 'admin'], draw: drawAudit },
];

const session = { key: null, who: null };
// Bumped on every navigation: a view still loading for an older one stops drawing.
let generation = 0;
// Object URLs of drawn charts, released when the view changes.
let chartUrls = [];

// ---- DOM -------------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

// A table: columns are [heading, cell(row), {num: true}] and rows any values.
function table(caption, columns, rows, empty) {
  if (rows.length === 0) return h('p', { class: 'empty' }, empty || 'None.');
  const head = h('tr', {}, columns.map(([title, , opt]) => h('th', { scope: 'col', class: opt && opt.num ? 'num' : null }, title)));
  const body = rows.map((r) => h('tr', {}, columns.map(([, cell, opt]) => h('td', { class: opt && opt.num ? 'num' : null }, cell(r)))));
  return h('div', { class: 'scroll', tabindex: 0, role: 'region', 'aria-label': caption },
    h('table', {}, h('caption', {}, caption), h('thead', {}, head), h('tbody', {}, body)));
}

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function section(title, ...children) {
  return h('section', { 'aria-label': title }, h('h2', {}, title), children);
}

// ---- money, dates ----------------------------------------------------------------------------

function parseDecimal(s) {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(s));
  if (!m) throw new Error(`${s} is not a decimal`);
  const frac = m[3] || '';
  const n = BigInt(m[2] + frac);
  return { n: m[1] ? -n : n, scale: frac.length };
}

function decimalString(n, scale) {
  const neg = n < 0n;
  const digits = (neg ? -n : n).toString().padStart(scale + 1, '0');
  const int = digits.slice(0, digits.length - scale);
  return (neg ? '-' : '') + int + (scale ? '.' + digits.slice(digits.length - scale) : '');
}

// The exact sum of decimal strings.
function sum(values) {
  let total = { n: 0n, scale: 0 };
  for (const v of values) {
    const d = parseDecimal(v);
    const scale = Math.max(total.scale, d.scale);
    total = { n: total.n * 10n ** BigInt(scale - total.scale) + d.n * 10n ** BigInt(scale - d.scale), scale };
  }
  return decimalString(total.n, total.scale);
}

function negate(s) {
  const d = parseDecimal(s);
  return decimalString(-d.n, d.scale);
}

// A decimal string shown with its digits grouped and at least two decimals, nothing rounded.
function money(s) {
  if (s === null || s === undefined) return '—';
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(s));
  if (!m) return String(s);
  const int = m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const frac = (m[3] || '').padEnd(2, '0');
  return (m[1] ? '-' : '') + int + '.' + frac;
}

function count(n) {
  return n === null || n === undefined ? '—' : String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

// A fee rate such as 0.0038 as a percentage (0.38%), by moving the decimal point.
function percent(rate) {
  const d = parseDecimal(rate);
  const s = d.scale >= 2 ? decimalString(d.n, d.scale - 2) : decimalString(d.n * 10n ** BigInt(2 - d.scale), 0);
  return `${s}%`;
}

function businessToday() {
  return new Date(Date.now() + BUSINESS_OFFSET_MS).toISOString().slice(0, 10);
}

function addDays(date, n) {
  const t = new Date(date + 'T00:00:00Z');
  t.setUTCDate(t.getUTCDate() + n);
  return t.toISOString().slice(0, 10);
}

function daysBetween(from, to) {
  return Math.round((Date.parse(to + 'T00:00:00Z') - Date.parse(from + 'T00:00:00Z')) / 86400000);
}

const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
function dateWithWeekday(date) {
  return `${date} ${WEEKDAYS[new Date(date + 'T00:00:00Z').getUTCDay()]}`;
}

// Microseconds since the epoch as a business-zone time: 2026-11-02 05:05:50 +08:00.
function businessTime(us) {
  if (typeof us !== 'number') return '—';
  const t = new Date(Math.floor(us / 1000) + BUSINESS_OFFSET_MS);
  return t.toISOString().slice(0, 19).replace('T', ' ') + ' ' + BUSINESS_ZONE;
}

// An RFC 3339 time as the business zone writes it.
function rfcTime(s) {
  return s ? String(s).replace('T', ' ') : '—';
}

const isDate = (s) => /^\d{4}-\d{2}-\d{2}$/.test(s || '');

// ---- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(title, detail, status) {
    super(detail ? `${title}: ${detail}` : title);
    this.title = title;
    this.detail = detail;
    this.status = status;
  }
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function api(path, { method = 'GET', body } = {}) {
  const headers = { Authorization: `Bearer ${session.key}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  for (let attempt = 1; ; attempt++) {
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    } catch (e) {
      throw new ApiError('The server cannot be reached', String(e && e.message ? e.message : e), 0);
    }
    // A read refused as busy (the server bounds queries running at once) is asked again a few
    // times, after the wait the server names.
    if (res.status !== 429 || method !== 'GET' || attempt >= BUSY_RETRIES) break;
    const wait = Number(res.headers.get('retry-after'));
    await sleep(Number.isFinite(wait) && wait > 0 ? Math.min(wait, 10) * 1000 : 1000 * attempt);
  }
  if (!res.ok) {
    let problem = {};
    try {
      problem = await res.json();
    } catch (_) {
      // Not a problem document: the status says what there is.
    }
    const err = new ApiError(problem.title || res.statusText || `HTTP ${res.status}`, problem.detail || '', res.status);
    if (res.status === 401 && session.who) {
      signOut();
    }
    throw err;
  }
  return res;
}

const getJson = async (path) => (await api(path)).json();

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

// ---- messages ------------------------------------------------------------------------------

function showError(e) {
  const box = $('error');
  box.replaceChildren();
  if (e instanceof ApiError) {
    box.append(h('strong', {}, e.title), e.detail ? h('span', {}, ' — ', e.detail) : null);
  } else {
    box.append(h('strong', {}, 'Something went wrong'), h('span', {}, ' — ', String(e && e.message ? e.message : e)));
  }
  box.append(h('button', { type: 'button', class: 'dismiss', onclick: clearError, 'aria-label': 'Dismiss' }, '×'));
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').replaceChildren();
}

function say(text) {
  $('status').textContent = text;
}

// ---- sign-in and navigation ------------------------------------------------------------------

function views() {
  return session.who ? VIEWS.filter((v) => v.roles.includes(session.who.role)) : [];
}

function go(view, params) {
  location.hash = `#${view}${query(params || {})}`;
}

function signOut() {
  sessionStorage.removeItem(KEY_STORE);
  session.key = null;
  session.who = null;
  drawChrome();
  route();
}

async function signIn(key) {
  session.key = key;
  try {
    const who = await getJson('/v1/whoami');
    session.who = who;
    sessionStorage.setItem(KEY_STORE, key);
  } catch (e) {
    session.key = null;
    session.who = null;
    sessionStorage.removeItem(KEY_STORE);
    throw e;
  }
}

function drawChrome() {
  const nav = $('nav');
  const current = location.hash.slice(1).split('?')[0];
  nav.replaceChildren(...views().map((v) => h('a', { href: `#${v.id}`, 'aria-current': v.id === current ? 'page' : null }, v.title)));
  const who = session.who;
  $('who').textContent = who ? `${who.role} · key ${who.key_id}${who.merchant ? ` · ${who.merchant}` : ''}` : '';
  $('signout').hidden = !who;
}

function drawSignIn(main) {
  const input = h('input', { id: 'key', name: 'key', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false', placeholder: 'plk_…' });
  const form = h('form', {
    class: 'signin',
    onsubmit: async (ev) => {
      ev.preventDefault();
      clearError();
      try {
        await signIn(input.value.trim());
        drawChrome();
        route();
      } catch (e) {
        showError(e);
        input.select();
      }
    },
  },
  h('h1', {}, 'Sign in'),
  h('p', {}, 'With your posledger API key. It stays in this tab only, until you sign out or close it.'),
  h('label', { for: 'key' }, 'API key'), input,
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  main.replaceChildren(form);
  input.focus();
}

async function route() {
  const gen = ++generation;
  for (const u of chartUrls) URL.revokeObjectURL(u);
  chartUrls = [];
  say('');
  const main = $('main');
  if (!session.who) {
    drawChrome();
    drawSignIn(main);
    return;
  }
  const [id, q] = location.hash.slice(1).split('?');
  const allowed = views();
  if (allowed.length === 0) {
    main.replaceChildren(h('h1', {}, 'Nothing to show'),
      h('p', {}, `A ${session.who.role} key has no view here: terminals post their transactions to /v1/transactions.`));
    drawChrome();
    return;
  }
  const view = allowed.find((v) => v.id === id);
  if (!view) {
    go(allowed[0].id);
    return;
  }
  clearError();
  drawChrome();
  main.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
  main.setAttribute('aria-busy', 'true');
  const live = () => gen === generation;
  try {
    const content = h('div', { class: 'view', id: `view-${view.id}` });
    await view.draw(content, new URLSearchParams(q || ''), live);
    if (live()) main.replaceChildren(content);
  } catch (e) {
    if (live()) {
      main.replaceChildren(h('h1', {}, view.title), h('p', { class: 'empty' }, 'This view could not be drawn; the message above says why.'));
      showError(e);
    }
  } finally {
    if (live()) main.removeAttribute('aria-busy');
  }
}

// Runs an action from a button: disabled while it runs, its error in the banner.
function action(label, run) {
  return async (ev) => {
    const button = ev && ev.currentTarget;
    if (button) button.disabled = true;
    clearError();
    say(`${label}…`);
    try {
      await run();
    } catch (e) {
      say('');
      showError(e);
    } finally {
      if (button) button.disabled = false;
    }
  };
}

// ---- day-end -------------------------------------------------------------------------------

async function drawDayEnd(el, params, live) {
  const today = businessToday();
  const date = isDate(params.get('date')) ? params.get('date') : addDays(today, -1);
  const input = h('input', { type: 'date', id: 'day-end-date', name: 'date', value: date, max: today, required: true });
  el.append(h('h1', {}, `Day-end ${dateWithWeekday(date)}`),
    h('form', { class: 'controls', onsubmit: (ev) => { ev.preventDefault(); go('day-end', { date: input.value }); } },
      h('label', {}, 'Business date ', input),
      h('button', { type: 'submit' }, 'Show'),
      h('button', { type: 'button', onclick: () => go('day-end', { date: addDays(date, -1) }) }, '‹ Day before'),
      date < today ? h('button', { type: 'button', onclick: () => go('day-end', { date: addDays(date, 1) }) }, 'Day after ›') : null,
      h('button', {
        type: 'button', class: 'primary', id: 'run-day-end',
        onclick: action(`Running the day-end for ${date}`, async () => {
          const done = await (await api(`/v1/day-end${query({ date })}`, { method: 'POST' })).json();
          if (!live()) return;
          await route();
          say(dayEndSummary(done));
        }),
      }, `Run the day-end for ${date}`)));
  const day = await getJson(`/v1/day-end${query({ date })}`);
  if (!live()) return;
  el.append(h('p', { class: 'note' },
    'As the books stand now, nothing recorded: the statements imported for the day matched against the books, ',
    'the terminal batches closed that day, and the settlements recorded for the date.'));
  drawDayReport(el, day);
}

function dayEndSummary(done) {
  const reports = (done.report && done.report.reports) || [];
  const breaks = reports.reduce((n, r) => n + r.breaks.length, 0);
  const s = done.settlement || { paid: [], held: [] };
  return `The day-end for ${done.date} ran: ${reports.length} statements, ${breaks} breaks, ${s.paid.length} settlements paid, ${s.held.length} held.`;
}

function drawDayReport(el, day) {
  const reports = day.report.reports;
  if (reports.length === 0) {
    el.append(section('Statements', h('p', { class: 'empty' }, `No channel statement has been imported for ${day.date}.`)));
  } else {
    el.append(section('Statements',
      table(`Statements for ${day.date}`, [
        ['Channel', (r) => CHANNEL_NAMES[r.statement] || r.statement],
        ['File', (r) => r.file.name],
        ['Lines', (r) => count(r.file.lines), { num: true }],
        ['Matched', (r) => count(r.counts.matched), { num: true }],
        ['Breaks', (r) => count(r.breaks.length), { num: true }],
        ['Net the channel pays', (r) => money(r.theirs_net), { num: true }],
      ], reports),
      table('Each side’s totals: the channel’s statement against our books', [
        ['', (m) => m[0]],
        ...reports.flatMap((r) => [
          [`${CHANNEL_NAMES[r.statement] || r.statement}: theirs`, (m) => m[1](r.theirs), { num: true }],
          ['ours', (m) => m[1](r.ours), { num: true }],
        ]),
      ], [
        ['Payments', (t) => count(t.payments)],
        ['Payment amount', (t) => money(t.payment_amount)],
        ['Refunds', (t) => count(t.refunds)],
        ['Refund amount', (t) => money(t.refund_amount)],
        ['Fees', (t) => money(t.fees)],
      ]),
      table('Breaks by outcome and channel', [
        ['Outcome', (o) => OUTCOME_NAMES[o]],
        ...reports.map((r) => [CHANNEL_NAMES[r.statement] || r.statement, (o) => count(r.counts[o]), { num: true }]),
      ], BREAK_OUTCOMES.filter((o) => reports.some((r) => r.counts[o] > 0)), 'No breaks: every line matched.'),
      table('Clearing accounts at the start and end of the day', [
        ['Account', (c) => c.account],
        ['Currency', (c) => c.currency],
        ['Opening', (c) => money(c.opening), { num: true }],
        ['Closing', (c) => money(c.closing), { num: true }],
      ], reports.flatMap((r) => r.clearing))));
    const found = reports.flatMap((r) => r.breaks.map((b) => ({ ...b, statement: r.statement })));
    el.append(section('Breaks found',
      table(`Breaks found on ${day.date}`, [
        ['Channel', (b) => CHANNEL_NAMES[b.statement] || b.statement],
        ['Outcome', (b) => OUTCOME_NAMES[b.outcome] || b.outcome],
        ['Transaction', (b) => b.txn_id || b.channel_txn_id],
        ['Kind', (b) => b.kind],
        ['Ours', (b) => money(b.our_amount), { num: true }],
        ['Theirs', (b) => money(b.their_amount), { num: true }],
        ['Fee expected', (b) => money(b.expected_fee), { num: true }],
        ['Their fee', (b) => money(b.their_fee), { num: true }],
        ['Line', (b) => (b.line === null ? '—' : b.line), { num: true }],
      ], found, 'No breaks.'),
      found.length ? h('p', {}, h('a', { href: `#breaks${query({ date: day.date, status: 'all' })}` }, 'Resolve these in Breaks →')) : null));
  }
  const batches = day.report.batches;
  el.append(section('Terminal batches',
    h('p', {}, `${count(batches.closed)} closed, ${count(batches.balanced)} balanced, ${count(batches.unbalanced.length)} unbalanced.`),
    table('Unbalanced terminal batches: the terminal’s totals against ours', [
      ['Terminal', (b) => b.terminal_id],
      ['Batch', (b) => b.batch_no],
      ['Merchant', (b) => b.merchant_id],
      ['Terminal sales', (b) => `${b.terminal.debit_count} · ${money(b.terminal.debit_amount)}`, { num: true }],
      ['Our sales', (b) => `${b.host.debit_count} · ${money(b.host.debit_amount)}`, { num: true }],
      ['Terminal refunds', (b) => `${b.terminal.credit_count} · ${money(b.terminal.credit_amount)}`, { num: true }],
      ['Our refunds', (b) => `${b.host.credit_count} · ${money(b.host.credit_amount)}`, { num: true }],
      ['Difference', (b) => money(b.difference), { num: true }],
    ], batches.unbalanced, 'Every batch closed that day balanced.')));
  const paid = day.settlement.paid.map((p) => p.settled);
  const held = day.settlement.held.map((p) => p.held);
  const currencies = [...new Set(paid.map((p) => p.currency))];
  el.append(section('Settlements',
    h('p', {}, `${count(paid.length)} paid, ${count(held.length)} held.`),
    table('Paid, totals per currency', [
      ['Currency', (c) => c],
      ['Merchants', (c) => count(paid.filter((p) => p.currency === c).length), { num: true }],
      ['Gross', (c) => money(sum(paid.filter((p) => p.currency === c).map((p) => p.gross))), { num: true }],
      ['Refunds', (c) => money(sum(paid.filter((p) => p.currency === c).map((p) => p.refunds))), { num: true }],
      ['Fees', (c) => money(sum(paid.filter((p) => p.currency === c).map((p) => p.fees))), { num: true }],
      ['Net paid', (c) => money(sum(paid.filter((p) => p.currency === c).map((p) => p.net))), { num: true }],
    ], currencies, 'Nothing paid for this date.'),
    table('Held, and why', [
      ['Merchant', (s) => h('a', { href: `#merchants${query({ id: s.merchant_id })}` }, s.merchant_id)],
      ['Business date', (s) => s.business_date],
      ['Net held', (s) => `${money(s.net)} ${s.currency}`, { num: true }],
      ['Why', (s) => s.reasons.map((r) => `${r.kind.replace(/_/g, ' ')} ${r.reference} (${money(r.amount)})`).join('; ')],
    ], held, 'Nothing held.'),
    paid.length ? h('details', {}, h('summary', {}, `Every settlement paid (${paid.length})`),
      table('Settlements paid', [
        ['Merchant', (s) => h('a', { href: `#merchants${query({ id: s.merchant_id })}` }, s.merchant_id)],
        ['Business date', (s) => s.business_date],
        ['Gross', (s) => money(s.gross), { num: true }],
        ['Refunds', (s) => money(s.refunds), { num: true }],
        ['Fees', (s) => money(s.fees), { num: true }],
        ['Net', (s) => money(s.net), { num: true }],
        ['Currency', (s) => s.currency],
      ], paid)) : null));
}

// ---- breaks --------------------------------------------------------------------------------

function breakStatus(b) {
  if (b.resolved) return 'Resolved';
  if (b.awaiting_approval) return 'Awaiting approval';
  return 'Open';
}

async function drawBreaks(el, params, live) {
  const today = businessToday();
  const f = {
    date: isDate(params.get('date')) ? params.get('date') : '',
    channel: STATEMENT_CHANNELS.includes(params.get('channel')) ? params.get('channel') : '',
    outcome: BREAK_OUTCOMES.includes(params.get('outcome')) ? params.get('outcome') : '',
    status: ['open', 'resolved', 'all'].includes(params.get('status')) ? params.get('status') : 'open',
    age: /^\d{1,4}$/.test(params.get('age') || '') ? params.get('age') : '',
    after: /^[0-9a-f]{1,64}$/.test(params.get('after') || '') ? params.get('after') : '',
  };
  const id = params.get('id') || '';
  const select = (name, label, options, value) => h('label', {}, `${label} `,
    h('select', { name }, options.map(([v, t]) => h('option', { value: v, selected: v === value }, t))));
  const form = h('form', {
    class: 'controls',
    onsubmit: (ev) => {
      ev.preventDefault();
      go('breaks', Object.fromEntries(new FormData(ev.currentTarget)));
    },
  },
  h('label', {}, 'Date ', h('input', { type: 'date', name: 'date', value: f.date, max: today })),
  select('channel', 'Channel', [['', 'Every channel'], ...STATEMENT_CHANNELS.map((c) => [c, CHANNEL_NAMES[c]])], f.channel),
  select('outcome', 'Outcome', [['', 'Every outcome'], ...BREAK_OUTCOMES.map((o) => [o, OUTCOME_NAMES[o]])], f.outcome),
  select('status', 'Status', [['open', 'Open'], ['resolved', 'Resolved'], ['all', 'Open and resolved']], f.status),
  h('label', {}, 'At least ', h('input', { type: 'number', name: 'age', min: 0, max: 9999, value: f.age, class: 'short' }), ' days old'),
  h('button', { type: 'submit' }, 'Filter'));
  el.append(h('h1', {}, 'Breaks'), form);
  // The server filters and pages; a page of the list at a time.
  const page = await getJson(`/v1/breaks${query({
    status: f.status, date: f.date, channel: f.channel, outcome: f.outcome,
    to: f.age ? addDays(today, -Number(f.age)) : '', after: f.after, limit: BREAKS_PAGE,
  })}`);
  if (!live()) return;
  const shown = page.breaks;
  const link = (b) => h('a', { href: `#breaks${query({ ...f, id: b.id })}`, 'aria-current': b.id === id ? 'true' : null }, b.id);
  const more = page.next ? h('a', { href: `#breaks${query({ ...f, after: page.next })}` }, 'Next page →') : null;
  const fromStart = f.after ? h('a', { href: `#breaks${query({ ...f, after: '' })}` }, '← First page') : null;
  const list = h('div', { class: 'list' },
    h('p', {}, `${count(shown.length)} ${shown.length === 1 ? 'break' : 'breaks'}${f.after ? ' after the previous pages' : ''}${page.next ? `; more follow` : ''}.`),
    table('Breaks', [
      ['Break', link],
      ['Date', (b) => b.date],
      ['Channel', (b) => CHANNEL_NAMES[b.statement] || b.statement],
      ['Outcome', (b) => OUTCOME_NAMES[b.outcome] || b.outcome],
      ['Transaction', (b) => b.txn_id || b.channel_txn_id],
      ['Ours', (b) => money(b.our_amount), { num: true }],
      ['Theirs', (b) => money(b.their_amount), { num: true }],
      ['In suspense', (b) => money(b.suspense_amount), { num: true }],
      ['Age (days)', (b) => count(daysBetween(b.date, today)), { num: true }],
      ['Status', breakStatus],
    ], shown, 'No break matches.'),
    more || fromStart ? h('p', { class: 'pager' }, fromStart, fromStart && more ? ' · ' : '', more) : null);
  const chosen = shown.find((b) => b.id === id);
  el.append(chosen ? breakDetail(chosen) : '', list);
  if (id && !chosen) say(`Break ${id} is not among the breaks listed on this page: widen the filter or go to its page.`);
}

function breakDetail(b) {
  const role = session.who.role;
  const mayResolve = role === 'finance' || role === 'admin';
  const me = `key:${session.who.key_id}`;
  const side = (title, rows) => [title, ...rows];
  const sides = [
    side('Transaction', [b.txn_id || '—', b.channel_txn_id || '—']),
    side('Amount', [money(b.our_amount), money(b.their_amount)]),
    side('Fee', [money(b.expected_fee), money(b.their_fee)]),
    side('Date', [b.item_date || '—', b.date]),
    side('Channel', [CHANNEL_NAMES[b.ledger_channel] || b.ledger_channel || '—', `${CHANNEL_NAMES[b.statement] || b.statement} statement${b.line ? `, line ${b.line}` : ''}`]),
  ];
  const panel = h('aside', { class: 'detail', 'aria-label': `Break ${b.id}` },
    h('h2', {}, `Break ${b.id}`),
    facts([
      ['Outcome', OUTCOME_NAMES[b.outcome] || b.outcome],
      ['Kind', b.kind],
      ['In suspense', money(b.suspense_amount)],
      ['Status', breakStatus(b)],
    ]),
    table('Both sides', [
      ['', (r) => r[0]],
      ['Our books', (r) => r[1], { num: true }],
      ['The channel', (r) => r[2], { num: true }],
    ], sides));
  const again = () => route();
  if (b.resolved) {
    const r = b.resolved;
    panel.append(h('h3', {}, 'Resolution'), facts([
      ['Action', ACTIONS[r.action] || r.action],
      ['Reason', r.reason],
      ['By', r.by],
      r.approved_by ? ['Approved by', r.approved_by] : null,
    ]));
  } else if (b.awaiting_approval) {
    const p = b.awaiting_approval;
    panel.append(h('h3', {}, 'Waiting for a second person'),
      facts([['Action', ACTIONS[p.action] || p.action], ['Reason', p.reason], ['Proposed by', p.by]]));
    if (mayResolve && p.by !== me) {
      panel.append(h('button', {
        type: 'button', class: 'primary', id: 'approve',
        onclick: action('Approving', async () => {
          await api(`/v1/breaks/${encodeURIComponent(b.id)}/approval`, { method: 'POST', body: { action: p.action, reason: p.reason } });
          await again();
          say(`Break ${b.id} resolved: approved by ${me}.`);
        }),
      }, 'Approve this resolution'));
    } else if (mayResolve) {
      panel.append(h('p', { class: 'note' }, 'You proposed it: another finance or admin key approves it.'));
    }
  } else if (mayResolve) {
    const reason = h('input', { id: 'reason', name: 'reason', required: true, maxlength: 1024, autocomplete: 'off' });
    const choice = h('select', { id: 'resolve-action', name: 'action' }, Object.entries(ACTIONS).map(([v, t]) => h('option', { value: v }, t)));
    panel.append(h('form', {
      class: 'resolve',
      onsubmit: (ev) => {
        ev.preventDefault();
        action('Resolving', async () => {
          const res = await api(`/v1/breaks/${encodeURIComponent(b.id)}/resolution`, { method: 'POST', body: { action: choice.value, reason: reason.value } });
          const body = await res.json();
          await again();
          if (res.status === 202) {
            say(`Break ${b.id} parks ${money(body.suspense_amount)}, over the approval threshold of ${money(body.approval_over)}: it waits for another finance or admin key to approve.`);
          } else {
            say(`Break ${b.id} resolved.`);
          }
        })({ currentTarget: ev.submitter });
      },
    },
    h('h3', {}, 'Resolve'),
    h('label', { for: 'resolve-action' }, 'Action'), choice,
    h('label', { for: 'reason' }, 'Reason'), reason,
    h('button', { type: 'submit', class: 'primary' }, 'Resolve')));
  }
  return panel;
}

// ---- merchants -----------------------------------------------------------------------------

// How far a merchant has come: the index into STAGES reached, and whether it ended.
function stageOf(m) {
  const terms = m.terminals || [];
  switch (m.status) {
    case 'applied': return { reached: 0 };
    case 'approved': return { reached: 1 };
    case 'rejected': return { reached: 1, ended: 'Rejected at review' };
    case 'closed': return { reached: 4, ended: 'Closed (销户)' };
    default:
      if (terms.some((t) => t.status === 'active')) return { reached: 4 };
      if (terms.length > 0) return { reached: 3 };
      return { reached: 2 };
  }
}

function stages(m) {
  const s = stageOf(m);
  return h('span', { class: 'stages' },
    h('ol', { class: 'steps', 'aria-label': `Onboarding: ${s.ended || STAGES[s.reached][1]}` },
      STAGES.map(([zh, en], i) => h('li', { class: i <= s.reached ? (s.ended && i === s.reached ? 'ended' : 'done') : '', title: en },
        `${zh} ${en}`))),
    s.ended ? h('span', { class: 'ended-note' }, s.ended) : null);
}

function feeTerms(fees) {
  const rows = Array.isArray(fees) ? fees : Object.entries(fees || {});
  return rows.map(([channel, t]) => ({ channel, ...t }));
}

async function drawMerchants(el, params, live) {
  const id = params.get('id');
  if (id) {
    await drawMerchant(el, id, live);
    return;
  }
  const after = params.get('after') || '';
  const page = await getJson(`/v1/merchants${query({ after, limit: MERCHANTS_PAGE })}`);
  if (!live()) return;
  el.append(h('h1', {}, 'Merchants'),
    h('form', { class: 'controls', onsubmit: (ev) => { ev.preventDefault(); const v = ev.currentTarget.elements.id.value.trim(); if (v) go('merchants', { id: v }); } },
      h('label', {}, 'Merchant id ', h('input', { name: 'id', maxlength: 64, autocomplete: 'off' })),
      h('button', { type: 'submit' }, 'Open')),
    table(after ? `Merchants after ${after}` : 'Merchants', [
      ['Merchant', (m) => h('a', { href: `#merchants${query({ id: m.merchant_id })}` }, m.merchant_id)],
      ['Onboarding', stages],
      ['Terminals active', (m) => `${m.terminals.filter((t) => t.status === 'active').length} of ${m.terminals.length}`, { num: true }],
    ], page.merchants, 'No merchants.'),
    h('p', { class: 'pager' },
      after ? h('a', { href: '#merchants' }, '« First page') : null, ' ',
      page.next ? h('a', { href: `#merchants${query({ after: page.next })}` }, 'Next page ›') : null));
}

async function drawMerchant(el, id, live) {
  const m = await getJson(`/v1/merchants/${encodeURIComponent(id)}`);
  const account = `liabilities:merchant:${m.merchant_id}:payable`;
  let payable = null;
  try {
    payable = await getJson(`/v1/balances/${encodeURIComponent(account)}`);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
  }
  // The settlements are the payable account's MerchantSettled postings: read page by page, at
  // most POSTINGS_PAGES_MAX pages.
  const settlements = [];
  let from = 0;
  let pages = 0;
  let more = false;
  if (payable) {
    for (;;) {
      const page = await getJson(`/v1/entries${query({ account, from, limit: POSTINGS_PAGE })}`);
      settlements.push(...page.postings.filter((p) => p.event_type === 'MerchantSettled'));
      pages += 1;
      if (page.next === null || page.next === undefined) break;
      if (pages >= POSTINGS_PAGES_MAX) { more = true; break; }
      from = page.next;
    }
  }
  if (!live()) return;
  el.append(h('p', {}, h('a', { href: '#merchants' }, '‹ Every merchant')),
    h('h1', {}, `Merchant ${m.merchant_id}`),
    stages(m),
    section('Payable',
      payable
        ? facts([
          ['Owed to the merchant', `${money(negate(payable.balance))} ${payable.currency}`],
          ['Ledger balance', `${money(payable.balance)} (${account}; a credit is owed)`],
          ['As of position', count(payable.as_of_position)],
        ])
        : h('p', { class: 'empty' }, 'Nothing posted to this merchant yet.')),
    section('Fees in force', table('Fees of the contract in force, per channel', [
      ['Channel', (f) => CHANNEL_NAMES[f.channel] || f.channel],
      ['Rate', (f) => percent(f.rate), { num: true }],
      ['Cap per payment', (f) => (f.cap ? money(f.cap) : '—'), { num: true }],
    ], feeTerms(m.fees), 'No contract in force.')),
    section('Terminals', table('Terminals', [
      ['Terminal', (t) => t.terminal_id],
      ['Status', (t) => t.status],
    ], m.terminals || [], 'No terminal installed.')),
    section('Settlements', table('Settlements paid to the merchant, latest first', [
      ['Paid at', (p) => rfcTime(p.occurred_at)],
      ['Reference', (p) => p.reference],
      ['Amount paid', (p) => money(p.amount), { num: true }],
      ['Position', (p) => count(p.position), { num: true }],
    ], settlements.slice().reverse().slice(0, 30), 'No settlement yet.'),
    more ? h('p', { class: 'note' }, `Showing settlements among the first ${count(POSTINGS_PAGE * POSTINGS_PAGES_MAX)} postings; GET /v1/entries pages through the rest.`) : null));
}

// ---- trends --------------------------------------------------------------------------------

// The analyses' titles (the named queries carry theirs).
const ANALYSIS_TITLES = {
  trend: 'Weekly net sales and anomalies',
  rfm: 'Customer segments (recency, frequency, spend)',
  cohort: 'Cohort retention',
  basket: 'Ticket sizes',
};
const ANALYSES = ['trend', 'rfm', 'cohort', 'basket'];
// The queries of the trends view, one at a time: each waits for the one before.
let queries = Promise.resolve();

async function drawTrends(el, params, live) {
  const from = isDate(params.get('from')) ? params.get('from') : '';
  const to = isDate(params.get('to')) ? params.get('to') : '';
  el.append(h('h1', {}, 'Trends'),
    h('form', { class: 'controls', onsubmit: (ev) => { ev.preventDefault(); go('trends', Object.fromEntries(new FormData(ev.currentTarget))); } },
      h('label', {}, 'From ', h('input', { type: 'date', name: 'from', value: from })),
      h('label', {}, 'To ', h('input', { type: 'date', name: 'to', value: to })),
      h('button', { type: 'submit' }, 'Show')),
    h('p', { class: 'note' }, `Business dates in ${BUSINESS_ZONE}; amounts in the currency each chart names. `,
      from || to ? 'The named queries cover the dates chosen; the analyses cover the whole history.' : 'The whole history.'));
  const catalogue = (await getJson('/v1/queries')).queries.filter((q) => q.chart);
  if (!live()) return;
  const charts = [
    ...catalogue.map((q) => ({
      name: q.name,
      title: q.title || q.name,
      about: q.description,
      path: `/v1/queries/${encodeURIComponent(q.name)}`,
      params: Object.fromEntries(q.parameters.filter((p) => (p.name === 'from' && from) || (p.name === 'to' && to)).map((p) => [p.name, p.name === 'from' ? from : to])),
    })),
    ...ANALYSES.map((a) => ({ name: a, title: ANALYSIS_TITLES[a], about: '', path: `/v1/analytics/${a}`, params: {} })),
  ];
  const grid = h('div', { class: 'charts' });
  el.append(grid);
  const figures = charts.map((c) => {
    const img = h('img', { alt: `${c.title}: loading`, class: 'chart', width: 960, height: 540 });
    const details = h('details', {}, h('summary', {}, 'The figures'));
    details.addEventListener('toggle', () => {
      if (!details.open || details.dataset.loaded) return;
      details.dataset.loaded = '1';
      queries = queries.then(() => getJson(`${c.path}${query(c.params)}`))
        .then((t) => details.append(figuresTable(c.title, t)), showError);
    }, { once: false });
    const fig = h('figure', { 'data-chart': c.name },
      h('figcaption', {}, h('h2', {}, c.title), c.about ? h('p', { class: 'note' }, c.about) : null),
      img, details);
    grid.append(fig);
    return { c, img, fig };
  });
  // Drawn one after another once the view is up: the server bounds queries running at once.
  queries = queries.then(async () => {
    for (const { c, img, fig } of figures) {
      if (!live()) return;
      try {
        const res = await api(`${c.path}${query({ ...c.params, format: 'svg' })}`);
        const blob = await res.blob();
        if (!live()) return;
        const url = URL.createObjectURL(blob);
        chartUrls.push(url);
        img.src = url;
        img.alt = c.title;
        fig.classList.add('drawn');
      } catch (e) {
        if (!live()) return;
        img.replaceWith(h('p', { class: 'empty' }, e instanceof ApiError ? `${e.title}${e.detail ? ` — ${e.detail}` : ''}` : String(e)));
        fig.classList.add('failed');
      }
    }
  });
}

function figuresTable(title, t) {
  const numeric = (col) => t.rows.length > 0 && t.rows.every((r) => r[col] === null || typeof r[col] === 'number' || /^-?\d+(\.\d+)?$/.test(r[col]));
  return table(`${title}: the figures`,
    t.columns.map((col) => [col.replace(/_/g, ' '), (r) => (r[col] === null ? '—' : String(r[col])), { num: numeric(col) }]),
    t.rows, 'No rows.');
}

// ---- audit ---------------------------------------------------------------------------------

async function drawAudit(el, params, live) {
  const from = /^\d{1,19}$/.test(params.get('from') || '') ? params.get('from') : '0';
  const asOf = params.get('as_of') || '';
  el.append(h('h1', {}, 'Audit'));
  const verifyBox = h('div', { id: 'verify' }, h('p', { class: 'loading' }, 'Verifying the log…'));
  el.append(section('The log’s head, verified', verifyBox,
    h('button', { type: 'button', onclick: action('Verifying', async () => { await verify(verifyBox, live); say('Verified.'); }) }, 'Verify again')));
  const [page, next] = await events(from);
  if (!live()) return;
  const nav = (label, to) => h('a', { href: `#audit${query({ from: to, as_of: asOf })}` }, label);
  el.append(section('The event log',
    h('form', { class: 'controls', onsubmit: (ev) => { ev.preventDefault(); go('audit', { from: ev.currentTarget.elements.from.value, as_of: asOf }); } },
      h('label', {}, 'From position ', h('input', { type: 'number', name: 'from', min: 0, value: from })),
      h('button', { type: 'submit' }, 'Show')),
    table(`Events from position ${from}`, [
      ['Position', (e) => count(e.position), { num: true }],
      ['Recorded', (e) => businessTime(e.recorded_at_us)],
      ['Occurred', (e) => businessTime(e.occurred_at_us)],
      ['Event', (e) => e.event_type],
      ['Stream', (e) => e.stream],
      ['Payload', (e) => h('details', {}, h('summary', {}, 'payload'), h('pre', {}, JSON.stringify(e.payload, null, 2)))],
    ], page, 'No event at or after this position.'),
    h('p', { class: 'pager' },
      Number(from) > 0 ? nav('‹ Earlier', String(Math.max(0, Number(from) - EVENTS_PAGE))) : null, ' ',
      next !== null ? nav('Later ›', next) : null)));
  const asOfInput = h('input', { name: 'as_of', value: asOf, placeholder: 'a date, a position or 2026-11-25T23:59:59+08:00', class: 'wide' });
  const balances = section('Balances as of',
    h('form', { class: 'controls', onsubmit: (ev) => { ev.preventDefault(); go('audit', { from, as_of: asOfInput.value.trim() }); } },
      h('label', {}, 'As of ', asOfInput),
      h('button', { type: 'submit' }, 'Show')));
  el.append(balances);
  if (asOf) {
    // A date means the end of that business day.
    const at = isDate(asOf) ? `${asOf}T23:59:59${BUSINESS_ZONE}` : asOf;
    const tb = await getJson(`/v1/trial-balance${query({ as_of: at })}`);
    if (!live()) return;
    const currencies = [...new Set(tb.accounts.map((a) => a.currency))];
    balances.append(
      h('p', {}, `As of ${at}: `, currencies.map((c) => {
        const total = sum(tb.accounts.filter((a) => a.currency === c).map((a) => a.balance));
        return `${c} debits less credits ${money(total)}${parseDecimal(total).n === 0n ? ' (balanced)' : ' (NOT balanced)'}. `;
      })),
      table(`Trial balance as of ${at}`, [
        ['Account', (a) => a.account],
        ['Currency', (a) => a.currency],
        ['Balance', (a) => money(a.balance), { num: true }],
      ], tb.accounts, 'No account had a posting by then.'));
  }
  verify(verifyBox, live).catch(showError);
}

async function verify(box, live) {
  const v = await getJson('/v1/verify');
  if (!live()) return;
  box.replaceChildren(facts([
    ['Verdict', v.ok ? 'Intact: every frame’s hash chains to the head, and the books rebuild to the same digest' : 'NOT intact'],
    ['Head position', count(v.events)],
    ['Head hash', h('code', {}, v.head_hash)],
    ['Frames', count(v.frames)],
    ['Entries · postings', `${count(v.entries)} · ${count(v.postings)}`],
    ['Books digest', h('code', {}, v.digest)],
  ]));
}

async function events(from) {
  const res = await api(`/v1/events${query({ from, limit: EVENTS_PAGE })}`);
  const text = await res.text();
  const next = res.headers.get('x-posledger-next');
  return [text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l)), next];
}

// ---- start ---------------------------------------------------------------------------------

window.addEventListener('hashchange', route);
$('signout').addEventListener('click', () => {
  clearError();
  signOut();
});
(async () => {
  const stored = sessionStorage.getItem(KEY_STORE);
  if (stored) {
    try {
      await signIn(stored);
    } catch (e) {
      showError(e);
    }
  }
  route();
})();
