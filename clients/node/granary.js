'use strict';
// granary - call Granary grains from Node over the binary protocol
// (docs/wire-protocol.md). No dependencies.
//
//   const { Client } = require('granary-client');
//   const c = new Client({ silos: ['10.0.0.5:7700', '10.0.0.6:7700'], cluster: 'default', secret: 's3cret' });
//   await c.call('Counter', 'user-42', 'incr');   // -> Buffer "1"
//
// One pipelined connection, failover to the next silo, an idempotency key
// per logical call and jittered retries of retryable errors until
// `retryFor` ms (docs/exactly-once.md). Errors are GranaryError with
// `code`, `name`, `retryable`.
const net = require('net');
const crypto = require('crypto');

const MAGIC = 0x4752;
const HELLO = 1, HELLO_OK = 2, REQUEST = 3, RESPONSE = 4, GOAWAY = 8;
const F_IDEM = 0x40;
const NAMES = ['', 'EINVAL', 'ENOMEM', 'ETIMEDOUT', 'ECANCELED', 'ENOCLASS', 'ENOMETHOD', 'EAPP', 'ECONFLICT',
  'ESTORAGE', 'EPROTO', 'ETOOBIG', 'ECONN', 'EVERSION', 'EAUTH', 'ENOTHERE', 'EOVERLOAD', 'ESHUTDOWN',
  'EACTIVATE', 'EAGAIN', 'EEXIST', 'ENOENT', 'EIO', 'ECONFIG', 'EBUSY', 'ESTATE', 'EDEADLOCK', 'ESTATEVERSION'];
const RETRYABLE = new Set([-3, -8, -9, -12, -15, -16, -17, -27]);
const ECONN = -12;

class GranaryError extends Error {
  constructor(code, message) {
    const name = 'GR_' + (NAMES[-code] || 'E' + -code);
    super(`${name}: ${message}`);
    this.code = code;
    this.name = name;
    this.detail = message;
    this.retryable = RETRYABLE.has(code);
  }
}

const buf = (x) => (Buffer.isBuffer(x) ? x : Buffer.from(x == null ? '' : String(x)));

function frame(type, id, body, flags = 0) {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(12 + body.length, 0);
  h.writeUInt16BE(MAGIC, 4);
  h.writeUInt8(type, 6);
  h.writeUInt8(flags, 7);
  h.writeBigUInt64BE(BigInt(id), 8);
  return Buffer.concat([h, body]);
}

function hello(cluster, secret, name) {
  const c = buf(cluster), s = buf(secret), n = buf(name);
  const h = Buffer.alloc(10);
  h.writeUInt16BE(1, 0);
  h.writeUInt8(1, 2);
  h.writeUInt16BE(c.length, 4);
  h.writeUInt16BE(s.length, 6);
  h.writeUInt16BE(n.length, 8);
  return frame(HELLO, 0, Buffer.concat([h, c, s, n]));
}

function request(id, cls, key, method, arg, timeoutMs, idem) {
  const c = buf(cls), k = buf(key), m = buf(method), a = buf(arg);
  const h = Buffer.alloc(16);
  h.writeUInt32BE(timeoutMs, 0);
  h.writeUInt16BE(c.length, 4);
  h.writeUInt16BE(m.length, 6);
  h.writeUInt32BE(k.length, 8);
  h.writeUInt32BE(a.length, 12);
  const parts = [h, c, k, m, a];
  let flags = 0;
  if (idem) {
    const i = buf(idem);
    if (i.length < 1 || i.length > 128) throw new GranaryError(-1, 'idempotency key must be 1..128 bytes');
    parts.push(Buffer.from([i.length]), i);
    flags = F_IDEM;
  }
  return frame(REQUEST, id, Buffer.concat(parts), flags);
}

function parseAddr(s) {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
}

class Client {
  constructor({ silos = ['127.0.0.1:7700'], cluster = 'default', secret = '', name = 'node', timeoutMs = 30000,
    connectTimeoutMs = 3000, retryForMs = 10000 } = {}) {
    this.silos = typeof silos === 'string' ? silos.split(',') : silos;
    Object.assign(this, { cluster, secret, name, timeoutMs, connectTimeoutMs, retryForMs });
    this.sock = null;
    this.connecting = null;
    this.cur = 0;
    this.nextId = 0;
    this.pending = new Map();
    this.rbuf = Buffer.alloc(0);
  }

  _connectOne(addr) {
    return new Promise((resolve, reject) => {
      const { host, port } = parseAddr(addr);
      const sock = net.connect({ host, port });
      sock.setNoDelay(true);
      let acc = Buffer.alloc(0);
      const timer = setTimeout(() => { sock.destroy(); reject(new GranaryError(ECONN, `connecting to ${addr} timed out`)); },
        this.connectTimeoutMs);
      const fail = (e) => { clearTimeout(timer); sock.destroy(); reject(e); };
      sock.on('error', (e) => fail(new GranaryError(ECONN, `cannot connect to ${addr}: ${e.message}`)));
      const onData = (d) => {
        acc = Buffer.concat([acc, d]);
        if (acc.length < 4 || acc.length < 4 + acc.readUInt32BE(0)) return;
        const type = acc.readUInt8(6), body = acc.subarray(16, 4 + acc.readUInt32BE(0));
        const rest = acc.subarray(4 + acc.readUInt32BE(0));
        sock.removeListener('data', onData);
        sock.removeAllListeners('error');
        clearTimeout(timer);
        if (type === HELLO_OK) return resolve({ sock, rest });
        const status = type === GOAWAY ? body.readInt32BE(0) : -10;
        const why = type === GOAWAY ? body.subarray(8).toString() : 'silo did not answer the handshake';
        sock.destroy();
        reject(new GranaryError(status === -14 || status === -13 ? status : ECONN, why));
      };
      sock.on('data', onData);
      sock.write(hello(this.cluster, this.secret, this.name));
    });
  }

  async _connect() {
    let last;
    for (let i = 0; i < this.silos.length; i++) {
      const at = (this.cur + i) % this.silos.length;
      try {
        const { sock, rest } = await this._connectOne(this.silos[at]);
        this.cur = at;
        this.sock = sock;
        this.rbuf = rest;
        sock.on('data', (d) => this._onData(d));
        sock.on('error', () => {});
        sock.on('close', () => this._lost(sock));
        return;
      } catch (e) {
        if (!e.retryable) throw e;
        last = e;
      }
    }
    throw last;
  }

  _onData(d) {
    this.rbuf = this.rbuf.length ? Buffer.concat([this.rbuf, d]) : d;
    while (this.rbuf.length >= 16 && this.rbuf.length >= 4 + this.rbuf.readUInt32BE(0)) {
      const n = this.rbuf.readUInt32BE(0), type = this.rbuf.readUInt8(6), id = this.rbuf.readBigUInt64BE(8);
      const body = this.rbuf.subarray(16, 4 + n);
      this.rbuf = this.rbuf.subarray(4 + n);
      if (type === RESPONSE) {
        const p = this.pending.get(id);
        if (p) {
          this.pending.delete(id);
          clearTimeout(p.timer);
          const status = body.readInt32BE(0), reply = Buffer.from(body.subarray(8, 8 + body.readUInt32BE(4)));
          status === 0 ? p.resolve(reply) : p.reject(new GranaryError(status, reply.toString()));
        }
      } else if (type === GOAWAY) {
        this.sock.destroy();
      }
    }
  }

  _lost(sock) {
    if (this.sock !== sock) return;
    this.sock = null;
    this.cur = (this.cur + 1) % this.silos.length;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new GranaryError(ECONN, 'connection to silo lost; outcome of the call unknown'));
      this.pending.delete(id);
    }
  }

  async _once(cls, key, method, arg, timeoutMs, idem) {
    if (!this.sock) {
      if (!this.connecting) this.connecting = this._connect().finally(() => { this.connecting = null; });
      await this.connecting;
    }
    const id = BigInt(++this.nextId);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new GranaryError(-3, "no response within the call's timeout"));
      }, timeoutMs + 1000);
      this.pending.set(id, { resolve, reject, timer });
      this.sock.write(request(id, cls, key, method, arg, timeoutMs, idem));
    });
  }

  // Call `method` on grain cls/key: a Promise of the reply (a Buffer).
  async call(cls, key, method, arg = '', { timeoutMs = this.timeoutMs, idempotencyKey, retryForMs = this.retryForMs } = {}) {
    const idem = idempotencyKey || (retryForMs ? crypto.randomBytes(16).toString('hex') : null);
    const deadline = Date.now() + retryForMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this._once(cls, key, method, arg, timeoutMs, idem);
      } catch (e) {
        const step = Math.min(1000, 20 * 2 ** attempt);
        const wait = step / 2 + Math.random() * (step / 2);
        if (!(e instanceof GranaryError) || !e.retryable || Date.now() + wait >= deadline) throw e;
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  close() {
    if (this.sock) this.sock.destroy();
    this.sock = null;
  }
}

module.exports = { Client, GranaryError };
