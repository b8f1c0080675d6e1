// tests/e2e/dashboard.mjs - drives Debian's Chromium (headless, through
// playwright-core) on a silo's dashboard for tests/e2e/test_dashboard.c.
//
//   node dashboard.mjs --url http://127.0.0.1:PORT/ --chromium /usr/bin/chromium
//
// It reads one command per line on stdin, "ID COMMAND ARGS", and answers
// each with one line, "ID ok [detail]" or "ID fail detail" (the id lets the
// caller drop an answer it stopped waiting for), so the C test keeps its
// cluster and load running while the browser looks. Every wait is bounded; the whole run is
// bounded too (--max-seconds, default 300), and EOF on stdin closes the
// browser. Commands:
//   open                      load the page, wait for the first data
//   members N                 wait until N member rows are "active"
//   grains-at-least N         wait until the active grain total is >= N
//   moved-in-at-least N       wait until the live migration table's total moved in is >= N
//   calls-total               answer the calls charted in the window
//   calls-total-above X       wait until that total is > X
//   method-chart KEY          wait for the small chart of KEY (Class.method)
//   changes-include TEXT      wait until the membership changes list has TEXT
//   connection STATE          wait until the live badge says live or lost
//   locate CLASS KEY          use the search box; answer its result line
//   call METHOD [ARG]         call a read-only method there; answer the result
//   window SECONDS            chart the last 60, 120 or 300 seconds
//   viewport W H              resize the page
//   screenshot PATH           save a full-page PNG
//   errors                    answer the page errors seen so far ("ok 0")
//   quit                      close the browser and exit
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const url = args.url;
const exe = args.chromium || '/usr/bin/chromium';
const maxSeconds = Number(args['max-seconds'] || 300);
const WAIT_MS = Number(args['wait-ms'] || 20000);

const errors = [];
let browser, page;

function say(line) { process.stdout.write(line.replace(/\n/g, ' ') + '\n'); }

async function shutdown(code) {
  try { if (browser) await browser.close(); } catch { /* already gone */ }
  process.exit(code);
}
setTimeout(() => { say('fail driver ran out of time'); shutdown(2); }, maxSeconds * 1000).unref();

async function waitFor(fn, arg) {
  await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 200 });
}

const commands = {
  async open() {
    browser = await chromium.launch({
      executablePath: exe,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    });
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await ctx.newPage();
    page.on('pageerror', (e) => errors.push('pageerror: ' + e.message));
    page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource|ERR_CONNECTION/.test(m.text())) errors.push('console: ' + m.text()); });
    await page.goto(url, { timeout: WAIT_MS });
    await waitFor(() => document.querySelectorAll('#members tbody tr').length > 0);
    return 'ok ' + (await page.title());
  },
  async members(n) {
    await waitFor((want) => document.querySelectorAll('#members tbody tr[data-status="active"]').length === want &&
      document.querySelectorAll('#members tbody tr').length === want, Number(n));
    return 'ok ' + n;
  },
  async 'grains-at-least'(n) {
    await waitFor((want) => Number(document.getElementById('grain-total').dataset.value || 0) >= want, Number(n));
    return 'ok ' + (await page.$eval('#grain-total', (e) => e.dataset.value));
  },
  async 'moved-in-at-least'(n) {
    const total = () => {
      const rows = document.querySelectorAll('#migration tbody tr');
      const last = rows[rows.length - 1];
      return last ? Number((last.cells[1].textContent || '0').replace(/[^0-9]/g, '')) : 0;
    };
    await waitFor(`(${total.toString()})() >= ${Number(n)}`);
    return 'ok ' + (await page.evaluate(`(${total.toString()})()`));
  },
  async 'calls-total'() {
    return 'ok ' + (await page.$eval('#chart-calls', (e) => e.dataset.total));
  },
  async 'calls-total-above'(x) {
    await waitFor((min) => Number(document.getElementById('chart-calls').dataset.total) > min, Number(x));
    return 'ok ' + (await page.$eval('#chart-calls', (e) => e.dataset.total));
  },
  async 'method-chart'(key) {
    await waitFor((k) => !!document.querySelector(`#methods figure[data-key="${k}"] svg path, #methods figure[data-key="${k}"] svg rect`), key);
    return 'ok ' + (await page.$eval(`#methods figure[data-key="${key}"] .stats`, (e) => e.textContent));
  },
  async 'changes-include'(...words) {
    const text = words.join(' ');
    await waitFor((t) => document.getElementById('changes').textContent.includes(t), text);
    return 'ok';
  },
  async connection(state) {
    await waitFor((s) => document.getElementById('conn').classList.contains(s), state);
    return 'ok ' + state;
  },
  async locate(cls, key) {
    await waitFor((c) => [...document.querySelectorAll('#search-class option')].some((o) => o.value === c), cls);
    await page.selectOption('#search-class', cls);
    await page.fill('#search-key', key);
    await page.evaluate(() => { document.getElementById('locate-result').textContent = ''; });
    await page.click('#search button');
    await waitFor(() => /: |refused|failed|no grain/.test(document.getElementById('locate-result').textContent));
    return 'ok ' + (await page.textContent('#locate-result'));
  },
  async call(method, ...rest) {
    await page.selectOption('#call-method', method);
    await page.fill('#call-arg', rest.join(' '));
    await page.evaluate(() => { document.getElementById('call-result').textContent = ''; });
    await page.click('#call button');
    await waitFor(() => /→|refused/.test(document.getElementById('call-result').textContent));
    return 'ok ' + (await page.textContent('#call-result'));
  },
  async window(secs) {
    await page.selectOption('#window', String(secs));
    return 'ok ' + secs;
  },
  async viewport(w, h) {
    await page.setViewportSize({ width: Number(w), height: Number(h) });
    await page.waitForTimeout(1500); /* a poll redraws the charts at the new size */
    return 'ok';
  },
  async screenshot(path) {
    await page.screenshot({ path, fullPage: true });
    return 'ok ' + path;
  },
  async errors() {
    return errors.length ? 'fail ' + errors.length + ' ' + errors.slice(0, 3).join(' | ') : 'ok 0';
  },
  async quit() {
    await shutdown(0);
  },
};

const rl = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
rl.on('line', (line) => {
  queue = queue.then(async () => {
    const [id, cmd, ...rest] = line.trim().split(/\s+/);
    if (!cmd) return;
    const fn = commands[cmd];
    if (!fn) { say(id + ' fail unknown command ' + cmd); return; }
    if (cmd !== 'open' && !page) { say(id + ' fail the page is not open'); return; }
    try {
      say(id + ' ' + await fn(...rest));
    } catch (e) {
      say(id + ' fail ' + cmd + ': ' + String(e.message || e).split('\n')[0]);
    }
  });
});
rl.on('close', () => { queue.then(() => shutdown(0)); });
