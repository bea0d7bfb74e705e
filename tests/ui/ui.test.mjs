// The screen end to end in headless Chromium, against a running `posledger demo --serve`.
//
//   POSLEDGER_URL=http://127.0.0.1:PORT POSLEDGER_KEYS='{"admin":…,"finance":…,"finance2":…,
//   "analyst":…,"auditor":…}' SCREENSHOTS=DIR node ui.test.mjs
//
// Every check compares what the screen shows with what the documented API answers for the same
// key; screenshots of every view go to SCREENSHOTS. Exits non-zero on the first failure.
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.POSLEDGER_URL;
const KEYS = JSON.parse(process.env.POSLEDGER_KEYS || '{}');
const SHOTS = process.env.SCREENSHOTS || join(tmpdir(), 'posledger-ui-screenshots');
// The server's approval threshold (POSLEDGER_APPROVAL_OVER), in whole yuan.
const APPROVAL_OVER = Number(process.env.POSLEDGER_APPROVAL_OVER || '1000');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
assert.ok(BASE, 'POSLEDGER_URL names the server');
for (const role of ['admin', 'finance', 'finance2', 'analyst', 'auditor']) assert.ok(KEYS[role], `POSLEDGER_KEYS has a ${role} key`);
mkdirSync(SHOTS, { recursive: true });

async function api(key, path, init = {}) {
  const res = await fetch(BASE + path, { ...init, headers: { Authorization: `Bearer ${key}`, ...(init.headers || {}) } });
  assert.ok(res.ok, `${init.method || 'GET'} ${path}: ${res.status} ${await res.clone().text()}`);
  return res;
}
// A decimal as the screen writes it: digits grouped, at least two decimals.
function grouped(s) {
  const [int, frac = ''] = s.split('.');
  return `${int.replace(/\B(?=(\d{3})+(?!\d))/g, ',')}.${frac.padEnd(2, '0')}`;
}
const json = async (key, path) => (await api(key, path)).json();

const profile = mkdtempSync(join(tmpdir(), 'posledger-ui-profile-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'],
  viewport: { width: 1366, height: 900 },
});
// Nothing on the page may come from anywhere but the server.
const outside = [];
context.on('request', (r) => { if (!r.url().startsWith(BASE) && !r.url().startsWith('blob:') && !r.url().startsWith('data:')) outside.push(r.url()); });
const consoleErrors = [];

let step = 0;
async function shot(page, name) {
  step += 1;
  await page.screenshot({ path: join(SHOTS, `${String(step).padStart(2, '0')}-${name}.png`), fullPage: true });
}

async function open(role) {
  const page = await context.newPage();
  page.on('pageerror', (e) => consoleErrors.push(`${role}: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) consoleErrors.push(`${role}: ${m.text()}`); });
  await page.goto(BASE + '/');
  await page.fill('#key', KEYS[role]);
  await page.click('form.signin button[type=submit]');
  await page.waitForSelector('#nav a');
  return page;
}

async function navTitles(page) {
  return page.$$eval('#nav a', (as) => as.map((a) => a.textContent));
}

async function shown(page) {
  await page.waitForSelector('main .view');
  await page.waitForFunction(() => !document.querySelector('main').hasAttribute('aria-busy'));
}

async function statusText(page) {
  return page.textContent('#status');
}

function check(name, f) {
  return f().then(() => console.log(`ok ${name}`), async (e) => {
    console.log(`FAILED ${name}`);
    // What each page showed: its banner and status line.
    for (const page of context.pages()) {
      const said = await page.evaluate(() => `${location.hash} error: ${document.querySelector('#error')?.textContent} status: ${document.querySelector('#status')?.textContent}`).catch(() => 'closed');
      console.log(`  ${said}`);
    }
    throw e;
  });
}

try {
  await check('a wrong key is refused in words, and nothing is stored', async () => {
    const page = await context.newPage();
    await page.goto(BASE + '/');
    await shot(page, 'sign-in');
    await page.fill('#key', 'plk_000000000000_' + '0'.repeat(64));
    await page.click('form.signin button[type=submit]');
    await page.waitForSelector('#error:not([hidden])');
    const text = await page.textContent('#error');
    assert.match(text, /Unauthorized/i, text);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('posledger.key')), null);
    assert.equal(await page.$$eval('#nav a', (a) => a.length), 0);
    assert.ok(!page.url().includes('plk_'), 'the key is never in the URL');
    await shot(page, 'sign-in-refused');
    await page.close();
  });

  const finance = await open('finance');
  // The demo's business dates: those its breaks were found on.
  const all = (await json(KEYS.finance, '/v1/breaks')).breaks;
  const dates = [...new Set(all.map((b) => b.date))].sort();
  assert.ok(dates.length > 0, 'the demo planted breaks');
  const day = dates[1] || dates[0];

  await check('each role sees its views only', async () => {
    assert.deepEqual(await navTitles(finance), ['Day-end', 'Breaks', 'Merchants', 'Trends']);
    assert.ok(!finance.url().includes('plk_'), 'the key is never in the URL');
  });

  await check('the day-end view shows the planted breaks, the batches and the settlements', async () => {
    await finance.goto(`${BASE}/#day-end?date=${day}`);
    await shown(finance);
    const view = await json(KEYS.finance, `/v1/day-end?date=${day}`);
    const expected = view.report.reports.flatMap((r) => r.breaks.map((b) => b.txn_id || b.channel_txn_id)).sort();
    assert.ok(expected.length > 0, `breaks on ${day}`);
    const rows = await finance.$$eval('section[aria-label="Breaks found"] tbody tr', (trs) => trs.map((tr) => tr.children[2].textContent));
    assert.deepEqual(rows.sort(), expected);
    const statementRows = await finance.$$eval('section[aria-label="Statements"] div.scroll:first-of-type tbody tr', (trs) => trs.length);
    assert.equal(statementRows, view.report.reports.length);
    const batches = await finance.textContent('section[aria-label="Terminal batches"]');
    assert.ok(batches.includes(`${view.report.batches.unbalanced.length} unbalanced`), batches);
    const settlements = await finance.textContent('section[aria-label="Settlements"]');
    assert.ok(settlements.includes(`${view.settlement.paid.length} paid, ${view.settlement.held.length} held`), settlements);
    // Numbers are right-aligned.
    const align = await finance.$eval('section[aria-label="Breaks found"] tbody td.num', (td) => getComputedStyle(td).textAlign);
    assert.equal(align, 'right');
    await shot(finance, 'day-end');
  });

  await check('running the day-end from the screen reports what it did', async () => {
    await finance.click('#run-day-end');
    await finance.waitForFunction(() => /The day-end for .* ran/.test(document.querySelector('#status').textContent));
    assert.match(await statusText(finance), /settlements paid/);
  });

  await check('an API error is shown in words, not a blank page', async () => {
    await finance.goto(`${BASE}/#day-end?date=2999-01-01`);
    await finance.waitForSelector('#error:not([hidden])');
    const text = await finance.textContent('#error');
    assert.match(text, /2999-01-01/, text);
    await shot(finance, 'error-in-words');
  });

  const open_ = (await json(KEYS.finance, '/v1/breaks?open=true')).breaks.filter((b) => !b.awaiting_approval);
  const abs = (s) => s.replace('-', '');
  const over = (s, limit) => { const [i] = abs(s).split('.'); return Number(i) >= limit; };
  const small = open_.find((b) => !over(b.suspense_amount, APPROVAL_OVER));
  const large = open_.find((b) => over(b.suspense_amount, APPROVAL_OVER));
  assert.ok(small && large, 'the demo planted a small and a large open break');

  await check('resolving a break takes it off the open list', async () => {
    await finance.goto(`${BASE}/#breaks`);
    await shown(finance);
    assert.ok((await finance.textContent('main')).includes(small.id));
    await finance.click(`a[href*="id=${small.id}"]`);
    await finance.waitForSelector('#resolve-action');
    await shot(finance, 'break-detail');
    await finance.selectOption('#resolve-action', 'write_off');
    await finance.fill('#reason', 'written off from the screen test');
    await finance.click('form.resolve button[type=submit]');
    await finance.waitForFunction((id) => document.querySelector('#status').textContent.includes(`Break ${id} resolved`), small.id);
    await finance.goto(`${BASE}/#breaks`);
    await shown(finance);
    assert.ok(!(await finance.textContent('main .list')).includes(small.id), 'the resolved break left the open list');
    const listed = (await json(KEYS.finance, '/v1/breaks')).breaks.find((b) => b.id === small.id);
    assert.equal(listed.resolved.action, 'write_off');
    await shot(finance, 'breaks-open');
    // The resolved ones, of its outcome: the server filters, the screen lists what it sent.
    await finance.goto(`${BASE}/#breaks?status=resolved&outcome=${small.outcome}`);
    await shown(finance);
    const rows = await finance.$$eval('main .list tbody tr', (trs) => trs.map((tr) => tr.textContent));
    assert.ok(rows.some((r) => r.includes(small.id)), 'the resolved break is listed as resolved');
    assert.ok(rows.every((r) => r.includes('Resolved')), 'only resolved breaks');
  });

  await check('a large break needs a second key: the proposer cannot approve its own', async () => {
    await finance.goto(`${BASE}/#breaks?id=${large.id}`);
    await shown(finance);
    await finance.waitForSelector('#resolve-action');
    await finance.selectOption('#resolve-action', 'write_off');
    await finance.fill('#reason', 'written off above the threshold');
    await finance.click('form.resolve button[type=submit]');
    await finance.waitForFunction(() => /waits for another finance or admin key/.test(document.querySelector('#status').textContent));
    assert.match(await finance.textContent('aside.detail'), /Awaiting approval/);
    assert.equal(await finance.$('#approve'), null, 'no approve button for the proposer');
    await shot(finance, 'break-awaiting-approval');
    const second = await open('finance2');
    await second.goto(`${BASE}/#breaks?id=${large.id}`);
    await shown(second);
    await second.click('#approve');
    await second.waitForFunction((id) => document.querySelector('#status').textContent.includes(`Break ${id} resolved`), large.id);
    const listed = (await json(KEYS.finance, '/v1/breaks')).breaks.find((b) => b.id === large.id);
    assert.ok(listed.resolved, 'resolved after the second key approved');
    assert.notEqual(listed.resolved.by, listed.resolved.approved_by);
    await second.goto(`${BASE}/#breaks`);
    await shown(second);
    assert.ok(!(await second.textContent('main .list')).includes(large.id));
    await second.close();
  });

  await check('merchants show their onboarding, terminals, fees, payable and settlements', async () => {
    await finance.goto(`${BASE}/#merchants`);
    await shown(finance);
    const page = await json(KEYS.finance, '/v1/merchants?limit=50');
    const ids = await finance.$$eval('main tbody tr td:first-child', (tds) => tds.map((t) => t.textContent));
    assert.deepEqual(ids, page.merchants.map((m) => m.merchant_id));
    assert.ok((await finance.textContent('main')).includes('开通'));
    await shot(finance, 'merchants');
    const withSettlement = page.merchants.find((m) => m.status === 'contracted' && m.terminals.some((t) => t.status === 'active'));
    await finance.click(`a[href="#merchants?id=${withSettlement.merchant_id}"]`);
    await finance.waitForSelector('section[aria-label="Fees in force"]');
    await shown(finance);
    const bal = await json(KEYS.finance, `/v1/balances/liabilities:merchant:${withSettlement.merchant_id}:payable`);
    const text = await finance.textContent('main');
    assert.ok(text.includes(grouped(bal.balance)), `payable ${bal.balance} shown`);
    assert.ok(await finance.$$eval('section[aria-label="Settlements"] tbody tr', (r) => r.length) > 0, 'settlements listed');
    await shot(finance, 'merchant');
  });

  await check('the trends view draws every chart', async () => {
    await finance.goto(`${BASE}/#trends`);
    await shown(finance);
    await finance.waitForFunction(() => [...document.querySelectorAll('figure')].every((f) => f.classList.contains('drawn') || f.classList.contains('failed')), null, { timeout: 120000 });
    const failed = await finance.$$eval('figure.failed', (f) => f.map((x) => `${x.dataset.chart}: ${x.textContent}`));
    assert.deepEqual(failed, []);
    const sizes = await finance.$$eval('figure img.chart', (imgs) => imgs.map((i) => i.naturalWidth));
    assert.ok(sizes.length >= 10 && sizes.every((w) => w > 0), `charts drawn: ${sizes}`);
    await shot(finance, 'trends');
  });

  await check('an analyst sees the trends and no payer', async () => {
    const analyst = await open('analyst');
    assert.deepEqual(await navTitles(analyst), ['Trends']);
    await shown(analyst);
    await analyst.waitForFunction(() => [...document.querySelectorAll('figure')].every((f) => f.classList.contains('drawn') || f.classList.contains('failed')), null, { timeout: 120000 });
    assert.deepEqual(await analyst.$$eval('figure.failed', (f) => f.map((x) => x.dataset.chart)), []);
    // Every figure's table opened: the numbers under the charts carry no payer either.
    for (const d of await analyst.$$('figure details')) await d.evaluate((el) => { el.open = true; });
    await analyst.waitForFunction(() => [...document.querySelectorAll('figure details')].every((d) => d.querySelector('table, .empty')), null, { timeout: 120000 });
    const payers = new Set();
    let from = 0;
    for (let i = 0; i < 20 && from !== null; i++) {
      const res = await api(KEYS.auditor, `/v1/events?from=${from}&limit=1000`);
      for (const line of (await res.text()).split('\n').filter(Boolean)) {
        const e = JSON.parse(line);
        if (e.payload && e.payload.payer) payers.add(e.payload.payer);
      }
      from = res.headers.get('x-posledger-next');
    }
    assert.ok(payers.size > 100, 'payers found in the log');
    const text = await analyst.evaluate(() => document.body.innerText);
    const seen = [...payers].filter((p) => text.includes(p));
    assert.deepEqual(seen, [], 'no payer identity on the analyst’s screen');
    assert.ok(!/payer_token|"payer"/.test(text));
    // The analyst's views are the analyst's only: the audit view is not drawn for it.
    await analyst.goto(`${BASE}/#audit`);
    await shown(analyst);
    assert.ok(analyst.url().endsWith('#trends'), analyst.url());
    await shot(analyst, 'trends-analyst');
    await analyst.close();
  });

  await check('the auditor sees the verified head, the log paged, balances as of a date, and breaks without buttons', async () => {
    const auditor = await open('auditor');
    assert.deepEqual(await navTitles(auditor), ['Breaks', 'Audit']);
    await auditor.goto(`${BASE}/#audit?as_of=${day}`);
    await shown(auditor);
    await auditor.waitForSelector('#verify dl');
    const v = await json(KEYS.auditor, '/v1/verify');
    assert.ok((await auditor.textContent('#verify')).includes(v.head_hash));
    const rows = await auditor.$$eval('section[aria-label="The event log"] tbody tr', (r) => r.length);
    assert.equal(rows, 50);
    const tb = await auditor.textContent('section[aria-label="Balances as of"]');
    assert.match(tb, /\(balanced\)/);
    await shot(auditor, 'audit');
    await auditor.click('text=Later ›');
    await auditor.waitForFunction(() => location.hash.includes('from=50'));
    await shown(auditor);
    assert.equal(await auditor.$eval('section[aria-label="The event log"] tbody tr td', (td) => td.textContent), '50');
    const someBreak = (await json(KEYS.auditor, '/v1/breaks')).breaks.find((b) => !b.resolved);
    await auditor.goto(`${BASE}/#breaks?id=${someBreak.id}`);
    await shown(auditor);
    await auditor.waitForSelector('aside.detail');
    assert.equal(await auditor.$('#resolve-action'), null, 'an auditor resolves nothing');
    assert.equal(await auditor.$('#approve'), null, 'an auditor approves nothing');
    await shot(auditor, 'breaks-auditor');
    await auditor.close();
  });

  await check('on a tablet the views fit the width and the keyboard reaches the navigation', async () => {
    const tablet = await context.newPage();
    await tablet.setViewportSize({ width: 768, height: 1024 });
    await tablet.goto(BASE + '/');
    await tablet.fill('#key', KEYS.admin);
    await tablet.press('#key', 'Enter');
    await tablet.waitForSelector('#nav a');
    assert.deepEqual(await navTitles(tablet), ['Day-end', 'Breaks', 'Merchants', 'Trends', 'Audit']);
    for (const view of ['day-end', 'breaks', 'merchants', 'audit']) {
      await tablet.goto(`${BASE}/#${view}${view === 'day-end' ? `?date=${day}` : ''}`);
      await shown(tablet);
      const overflow = await tablet.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${view} is ${overflow}px wider than the tablet`);
      await shot(tablet, `tablet-${view}`);
    }
    // From a fresh load, the keyboard reaches every view's link in the navigation.
    await tablet.reload();
    await shown(tablet);
    const reached = [];
    for (let i = 0; i < 8; i++) {
      await tablet.keyboard.press('Tab');
      reached.push(await tablet.evaluate(() => (document.activeElement.closest('#nav') ? document.activeElement.textContent : null)));
    }
    assert.deepEqual(reached.filter(Boolean), ['Day-end', 'Breaks', 'Merchants', 'Trends', 'Audit'], `tab order ${reached}`);
    await tablet.close();
  });

  assert.deepEqual(outside, [], 'nothing fetched from outside the server');
  assert.deepEqual(consoleErrors, [], 'no script errors');
  console.log(`screenshots in ${SHOTS}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
