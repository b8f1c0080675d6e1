"""Tests of the Python client against a real cluster (tests/clients/run.sh
starts three silos on a real PostgreSQL and sets GRANARY_SILOS)."""
import asyncio
import os
import unittest
import uuid

import granary

SILOS = os.environ["GRANARY_SILOS"].split(",")
CLUSTER = os.environ.get("GRANARY_CLUSTER", "default")
SECRET = os.environ.get("GRANARY_CLUSTER_SECRET", "")


def fresh(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


class SyncTest(unittest.TestCase):
    def setUp(self):
        self.c = granary.Client(SILOS, cluster=CLUSTER, secret=SECRET)

    def tearDown(self):
        self.c.close()

    def test_incr_and_get(self):
        k = fresh("py")
        self.assertEqual(self.c.call("Counter", k, "incr"), b"1")
        self.assertEqual(self.c.call("Counter", k, "incr"), b"2")
        self.assertEqual(self.c.call("Counter", k, "get"), b"2")

    def test_binary_key_and_every_silo(self):
        k = b"py\x00" + os.urandom(8)
        for silo in SILOS:  # the same grain through each silo
            with granary.Client([silo], cluster=CLUSTER, secret=SECRET) as one:
                one.call("HashCounter", k, "incr")
        self.assertEqual(self.c.call("HashCounter", k, "get"), str(len(SILOS)).encode())

    def test_idempotency_key(self):
        k = fresh("idem")
        self.assertEqual(self.c.call("Counter", k, "incr", idempotency_key="op-1"), b"1")
        self.assertEqual(self.c.call("Counter", k, "incr", idempotency_key="op-1"), b"1")
        self.assertEqual(self.c.call("Counter", k, "get"), b"1")

    def test_errors(self):
        with self.assertRaises(granary.GranaryError) as e:
            self.c.call("NoSuchClass", "x", "incr")
        self.assertEqual(e.exception.name, "GR_ENOCLASS")
        self.assertFalse(e.exception.retryable)
        with self.assertRaises(granary.GranaryError) as e:
            self.c.call("Counter", "x", "nosuch")
        self.assertEqual(e.exception.name, "GR_ENOMETHOD")

    def test_failover_past_a_dead_address(self):
        with granary.Client(["127.0.0.1:1"] + SILOS, cluster=CLUSTER, secret=SECRET) as c:
            self.assertEqual(c.call("Counter", fresh("fo"), "incr"), b"1")

    def test_wrong_secret_is_not_retried(self):
        with granary.Client(SILOS, cluster=CLUSTER, secret="wrong") as c:
            with self.assertRaises(granary.GranaryError) as e:
                c.call("Counter", "x", "get")
            self.assertEqual(e.exception.name, "GR_EAUTH")


class AsyncTest(unittest.TestCase):
    def test_pipelined(self):
        async def run():
            async with granary.AsyncClient(SILOS, cluster=CLUSTER, secret=SECRET) as c:
                k = fresh("apy")
                replies = await asyncio.gather(*[c.call("Counter", "%s-%d" % (k, i), "incr") for i in range(500)])
                self.assertEqual(replies, [b"1"] * 500)
                self.assertEqual(await c.call("Counter", k + "-7", "get"), b"1")
                with self.assertRaises(granary.GranaryError):
                    await c.call("NoSuchClass", "x", "get")

        asyncio.run(run())


if __name__ == "__main__":
    unittest.main(verbosity=2)
