"""granary - call Granary grains from Python over the binary protocol
(docs/wire-protocol.md). Standard library only.

    import granary
    c = granary.Client(["10.0.0.5:7700", "10.0.0.6:7700"], cluster="default", secret="s3cret")
    c.call("Counter", "user-42", "incr")            # -> b"1"

    async with granary.AsyncClient([...]) as c:        # pipelined, many calls in flight
        await c.call("Counter", b"user-42", "incr")

Every call carries an idempotency key (one per logical call, made when not
given) and retryable errors are retried with jittered backoff across the
listed silos until `retry_for` seconds have passed (0: no retries), so a call
counts once (docs/exactly-once.md). Errors raise GranaryError; retryable ones
are RetryableError (its subclass).
"""
import asyncio
import os
import random
import socket
import struct
import threading
import time

__all__ = ["Client", "AsyncClient", "GranaryError", "RetryableError"]

PROTOCOL_VERSION = 1
_MAGIC = 0x4752
HELLO, HELLO_OK, REQUEST, RESPONSE, ONEWAY, PING, PONG, GOAWAY = range(1, 9)
_F_IDEM = 0x40
ERRORS = {
    -1: "GR_EINVAL", -2: "GR_ENOMEM", -3: "GR_ETIMEDOUT", -4: "GR_ECANCELED", -5: "GR_ENOCLASS",
    -6: "GR_ENOMETHOD", -7: "GR_EAPP", -8: "GR_ECONFLICT", -9: "GR_ESTORAGE", -10: "GR_EPROTO",
    -11: "GR_ETOOBIG", -12: "GR_ECONN", -13: "GR_EVERSION", -14: "GR_EAUTH", -15: "GR_ENOTHERE",
    -16: "GR_EOVERLOAD", -17: "GR_ESHUTDOWN", -18: "GR_EACTIVATE", -19: "GR_EAGAIN", -20: "GR_EEXIST",
    -21: "GR_ENOENT", -22: "GR_EIO", -23: "GR_ECONFIG", -24: "GR_EBUSY", -25: "GR_ESTATE",
    -26: "GR_EDEADLOCK", -27: "GR_ESTATEVERSION",
}
RETRYABLE = {-3, -8, -9, -12, -15, -16, -17, -27}
GR_ECONN = -12


class GranaryError(Exception):
    """A call failed: `code` (a GR_E* number), `name` ("GR_ENOCLASS"), `message`."""

    def __init__(self, code, message):
        self.code = code
        self.name = ERRORS.get(code, "GR_E%d" % -code)
        self.message = message
        super().__init__("%s: %s" % (self.name, message))

    @property
    def retryable(self):
        return self.code in RETRYABLE


class RetryableError(GranaryError):
    """The call may or may not have run; retrying with the same key is safe."""


def _error(code, message):
    cls = RetryableError if code in RETRYABLE else GranaryError
    return cls(code, message.decode("utf-8", "replace") if isinstance(message, bytes) else message)


def _b(x):
    return x.encode() if isinstance(x, str) else bytes(x)


def _frame(ftype, fid, body, flags=0):
    return struct.pack(">IHBBQ", 12 + len(body), _MAGIC, ftype, flags, fid) + body


def _hello(cluster, secret, name):
    c, s, n = _b(cluster), _b(secret), _b(name)
    return _frame(HELLO, 0, struct.pack(">HBBHHH", PROTOCOL_VERSION, 1, 0, len(c), len(s), len(n)) + c + s + n)


def _request(fid, cls, key, method, arg, timeout_ms, idem):
    c, k, m, a = _b(cls), _b(key), _b(method), _b(arg)
    body = struct.pack(">IHHII", timeout_ms, len(c), len(m), len(k), len(a)) + c + k + m + a
    flags = 0
    if idem:
        i = _b(idem)
        if not 1 <= len(i) <= 128:
            raise GranaryError(-1, "idempotency key must be 1..128 bytes")
        body += bytes([len(i)]) + i
        flags = _F_IDEM
    return _frame(REQUEST, fid, body, flags)


def _parse_response(body):
    status, n = struct.unpack_from(">iI", body)
    return status, body[8:8 + n]


def _addr(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def _new_key():
    return os.urandom(16).hex()


def _backoff(attempt):
    step = min(1.0, 0.02 * (2 ** attempt))
    return step / 2 + random.random() * step / 2


class _Conn:
    """One blocking connection to a silo, past its handshake."""

    def __init__(self, addr, cluster, secret, name, timeout):
        self.sock = socket.create_connection(_addr(addr), timeout=timeout)
        self.buf = b""
        try:
            self._handshake(cluster, secret, name)
        except BaseException:
            self.close()
            raise

    def _handshake(self, cluster, secret, name):
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(_hello(cluster, secret, name))
        ftype, _, body = self.read_frame()
        if ftype == GOAWAY:
            status, why = _parse_response(body)
            raise _error(status if status in (-14, -13) else GR_ECONN, b"silo refused the handshake: " + why)
        if ftype != HELLO_OK:
            raise _error(-10, "silo did not answer the handshake")
        self.silo = body[4:4 + struct.unpack_from(">H", body, 2)[0]].decode()

    def read_frame(self):
        while True:
            if len(self.buf) >= 16:
                n = struct.unpack_from(">I", self.buf)[0]
                if len(self.buf) >= 4 + n:
                    _, ftype, _, fid = struct.unpack_from(">HBBQ", self.buf, 4)
                    body, self.buf = self.buf[16:4 + n], self.buf[4 + n:]
                    return ftype, fid, body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise _error(GR_ECONN, "connection to silo lost; outcome of the call unknown")
            self.buf += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    """A blocking client, safe to share between threads (one call at a time
    per connection). Connects lazily and fails over to the next silo."""

    def __init__(self, silos=("127.0.0.1:7700",), cluster="default", secret="", name="python",
                 timeout=30.0, connect_timeout=3.0, retry_for=10.0):
        self.silos = [silos] if isinstance(silos, str) else list(silos)
        self.cluster, self.secret, self.name = cluster, secret, name
        self.timeout, self.connect_timeout, self.retry_for = timeout, connect_timeout, retry_for
        self._conn, self._cur, self._next_id = None, 0, 0
        self._lock = threading.Lock()

    def _connect(self):
        last = None
        for i in range(len(self.silos)):
            addr = self.silos[(self._cur + i) % len(self.silos)]
            try:
                self._conn = _Conn(addr, self.cluster, self.secret, self.name, self.connect_timeout)
                self._cur = (self._cur + i) % len(self.silos)
                return
            except GranaryError as e:
                if not e.retryable:
                    raise
                last = e
            except OSError as e:
                last = _error(GR_ECONN, "cannot connect to %s: %s" % (addr, e))
        raise last

    def _drop(self):
        if self._conn:
            self._conn.close()
        self._conn = None
        self._cur = (self._cur + 1) % len(self.silos)

    def _once(self, cls, key, method, arg, timeout, idem):
        with self._lock:
            if self._conn is None:
                self._connect()
            self._next_id += 1
            fid = self._next_id
            try:
                self._conn.sock.settimeout(timeout + 1)
                self._conn.sock.sendall(_request(fid, cls, key, method, arg, int(timeout * 1000), idem))
                while True:
                    ftype, rid, body = self._conn.read_frame()
                    if ftype == GOAWAY:
                        status, why = _parse_response(body)
                        self._drop()
                        raise _error(GR_ECONN, b"silo closed the connection: " + why)
                    if ftype == RESPONSE and rid == fid:
                        status, reply = _parse_response(body)
                        if status != 0:
                            raise _error(status, reply)
                        return reply
            except socket.timeout:
                self._drop()
                raise _error(-3, "no response within the call's timeout")
            except OSError as e:
                self._drop()
                raise _error(GR_ECONN, "connection to silo lost (%s); outcome unknown" % e)
            except RetryableError as e:
                if e.code == GR_ECONN:
                    self._drop()
                raise

    def call(self, cls, key, method, arg=b"", timeout=None, idempotency_key=None, retry_for=None):
        """Call `method` on grain cls/key; the reply as bytes."""
        timeout = self.timeout if timeout is None else timeout
        retry_for = self.retry_for if retry_for is None else retry_for
        idem = idempotency_key or (_new_key() if retry_for else None)
        deadline = time.monotonic() + retry_for
        attempt = 0
        while True:
            try:
                return self._once(cls, key, method, arg, timeout, idem)
            except RetryableError:
                wait = _backoff(attempt)
                attempt += 1
                if time.monotonic() + wait >= deadline:
                    raise
                time.sleep(wait)

    def close(self):
        with self._lock:
            if self._conn:
                self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncClient:
    """An asyncio client: one pipelined connection, many calls in flight,
    failover to the next silo when the connection fails."""

    def __init__(self, silos=("127.0.0.1:7700",), cluster="default", secret="", name="python-async",
                 timeout=30.0, connect_timeout=3.0, retry_for=10.0):
        self.silos = [silos] if isinstance(silos, str) else list(silos)
        self.cluster, self.secret, self.name = cluster, secret, name
        self.timeout, self.connect_timeout, self.retry_for = timeout, connect_timeout, retry_for
        self._writer, self._reader_task, self._cur, self._next_id = None, None, 0, 0
        self._pending = {}
        self._connecting = None

    async def _connect(self):
        last = None
        for i in range(len(self.silos)):
            addr = self.silos[(self._cur + i) % len(self.silos)]
            try:
                host, port = _addr(addr)
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), self.connect_timeout)
                w.write(_hello(self.cluster, self.secret, self.name))
                hdr = await asyncio.wait_for(r.readexactly(16), self.connect_timeout)
                n, _, ftype, _, _ = struct.unpack(">IHBBQ", hdr)
                body = await r.readexactly(n - 12)
                if ftype != HELLO_OK:
                    w.close()
                    status, why = _parse_response(body) if ftype == GOAWAY else (-10, b"bad handshake")
                    if status in (-14, -13):
                        raise _error(status, why)
                    raise _error(GR_ECONN, why)
                self._cur = (self._cur + i) % len(self.silos)
                self._writer = w
                self._reader_task = asyncio.ensure_future(self._read_loop(r))
                return
            except RetryableError as e:
                last = e
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                last = _error(GR_ECONN, "cannot connect to %s: %r" % (addr, e))
        raise last

    async def _read_loop(self, r):
        try:
            while True:
                hdr = await r.readexactly(16)
                n, _, ftype, _, fid = struct.unpack(">IHBBQ", hdr)
                body = await r.readexactly(n - 12)
                if ftype == RESPONSE:
                    fut = self._pending.pop(fid, None)
                    if fut and not fut.done():
                        fut.set_result(_parse_response(body))
                elif ftype == GOAWAY:
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass
        self._fail_all()

    def _fail_all(self):
        if self._writer:
            self._writer.close()
        self._writer = None
        self._cur = (self._cur + 1) % len(self.silos)
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_result((GR_ECONN, b"connection to silo lost; outcome of the call unknown"))

    async def _once(self, cls, key, method, arg, timeout, idem):
        if self._writer is None:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            try:
                await asyncio.shield(self._connecting)
            finally:
                if self._connecting and self._connecting.done():
                    self._connecting = None
        if self._writer is None:  # lost again before this call could be sent: safe to retry
            raise _error(GR_ECONN, "connection to silo lost; call not sent")
        self._next_id += 1
        fid = self._next_id
        fut = asyncio.get_running_loop().create_future()
        self._pending[fid] = fut
        self._writer.write(_request(fid, cls, key, method, arg, int(timeout * 1000), idem))
        try:
            status, reply = await asyncio.wait_for(fut, timeout + 1)
        except asyncio.TimeoutError:
            self._pending.pop(fid, None)
            raise _error(-3, "no response within the call's timeout")
        if status != 0:
            raise _error(status, reply)
        return reply

    async def call(self, cls, key, method, arg=b"", timeout=None, idempotency_key=None, retry_for=None):
        timeout = self.timeout if timeout is None else timeout
        retry_for = self.retry_for if retry_for is None else retry_for
        idem = idempotency_key or (_new_key() if retry_for else None)
        deadline = time.monotonic() + retry_for
        attempt = 0
        while True:
            try:
                return await self._once(cls, key, method, arg, timeout, idem)
            except RetryableError:
                wait = _backoff(attempt)
                attempt += 1
                if time.monotonic() + wait >= deadline:
                    raise
                await asyncio.sleep(wait)

    async def close(self):
        if self._reader_task:
            self._reader_task.cancel()
        if self._writer:
            self._writer.close()
        self._writer = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
