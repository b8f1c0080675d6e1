'use strict';
// Tests of the Node client against a real cluster (tests/clients/run.sh sets GRANARY_SILOS).
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('crypto');
const { Client, GranaryError } = require('..');

const SILOS = process.env.GRANARY_SILOS.split(',');
const opts = { silos: SILOS, cluster: process.env.GRANARY_CLUSTER, secret: process.env.GRANARY_CLUSTER_SECRET || '' };
const fresh = (p) => `${p}-${crypto.randomBytes(4).toString('hex')}`;

test('incr and get', async () => {
  const c = new Client(opts);
  const k = fresh('node');
  assert.strictEqual((await c.call('Counter', k, 'incr')).toString(), '1');
  assert.strictEqual((await c.call('Counter', k, 'incr')).toString(), '2');
  assert.strictEqual((await c.call('Counter', k, 'get')).toString(), '2');
  c.close();
});

test('500 pipelined calls and a binary key through every silo', async () => {
  const c = new Client(opts);
  const k = fresh('pipe');
  const replies = await Promise.all([...Array(500).keys()].map((i) => c.call('Counter', `${k}-${i}`, 'incr')));
  assert.deepStrictEqual(replies.map(String), Array(500).fill('1'));
  const bin = Buffer.concat([Buffer.from('n\0'), crypto.randomBytes(6)]);
  for (const s of SILOS) {
    const one = new Client({ ...opts, silos: [s] });
    await one.call('HashCounter', bin, 'incr');
    one.close();
  }
  assert.strictEqual((await c.call('HashCounter', bin, 'get')).toString(), String(SILOS.length));
  c.close();
});

test('idempotency key and errors', async () => {
  const c = new Client(opts);
  const k = fresh('idem');
  assert.strictEqual((await c.call('Counter', k, 'incr', '', { idempotencyKey: 'op-1' })).toString(), '1');
  assert.strictEqual((await c.call('Counter', k, 'incr', '', { idempotencyKey: 'op-1' })).toString(), '1');
  await assert.rejects(c.call('NoSuchClass', 'x', 'get'), (e) => e instanceof GranaryError && e.name === 'GR_ENOCLASS' && !e.retryable);
  await assert.rejects(c.call('Counter', 'x', 'nosuch'), (e) => e.name === 'GR_ENOMETHOD');
  c.close();
  const bad = new Client({ ...opts, secret: 'wrong' });
  await assert.rejects(bad.call('Counter', 'x', 'get'), (e) => e.name === 'GR_EAUTH');
  bad.close();
});

test('failover past a dead address', async () => {
  const c = new Client({ ...opts, silos: ['127.0.0.1:1', ...SILOS] });
  assert.strictEqual((await c.call('Counter', fresh('fo'), 'incr')).toString(), '1');
  c.close();
});
