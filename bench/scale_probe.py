#!/usr/bin/env python3
"""bench/scale_probe.py - watches many silos' /metrics at once for bench/scale.sh.

  scale_probe.py wait-size SIZE TIMEOUT_S PORT...
      until every silo reports granary_membership_size == SIZE and
      granary_membership_active == SIZE; prints "first_ms median_ms last_ms":
      when the first, the median and the last silo first saw it, from the start
  scale_probe.py wait-directory TIMEOUT_S PORT...
      until the directory entries of the silos add up to their activations
      (every live grain registered again after a silo left), and the sum has
      stayed so for 1 s; prints "ms entries activations"
  scale_probe.py sum METRIC PORT...
      prints the sum of METRIC over the silos

One keep-alive HTTP connection per silo, polled in turn (64 silos in about
30 ms here); every wait is bounded by its timeout (exit status 1 on timeout).
"""
import http.client
import sys
import time


class Silo:
    def __init__(self, port):
        self.port = port
        self.conn = None

    def metrics(self):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                self.conn.request("GET", "/metrics")
                body = self.conn.getresponse().read().decode()
                out = {}
                for line in body.splitlines():
                    if line and not line.startswith("#"):
                        name, _, value = line.rpartition(" ")
                        try:  # labelled series add up under their bare name
                            base = name.split("{", 1)[0]
                            out[base] = out.get(base, 0.0) + float(value)
                        except ValueError:
                            pass
                return out
            except (OSError, http.client.HTTPException):
                self.conn = None
        return {}


def wait_size(size, timeout, silos):
    t0 = time.monotonic()
    seen = {}
    while len(seen) < len(silos):
        if time.monotonic() - t0 > timeout:
            print(f"timeout: {len(seen)} of {len(silos)} silos saw size {size}", file=sys.stderr)
            return 1
        for s in silos:
            if s.port in seen:
                continue
            m = s.metrics()
            if m.get("granary_membership_size") == size and m.get("granary_membership_active") == size:
                seen[s.port] = (time.monotonic() - t0) * 1000
        time.sleep(0.005)
    ts = sorted(seen.values())
    print(f"{ts[0]:.0f} {ts[len(ts) // 2]:.0f} {ts[-1]:.0f}")
    return 0


def wait_directory(timeout, silos):
    t0 = time.monotonic()
    ok_since = None
    while time.monotonic() - t0 < timeout:
        ms = [s.metrics() for s in silos]
        entries = sum(m.get("granary_directory_entries", 0) for m in ms)
        acts = sum(m.get("granary_activations", 0) for m in ms)
        now = time.monotonic()
        if acts > 0 and entries == acts:
            if ok_since is None:
                ok_since = now
            elif now - ok_since >= 1.0:
                print(f"{(ok_since - t0) * 1000:.0f} {entries:.0f} {acts:.0f}")
                return 0
        else:
            ok_since = None
        time.sleep(0.02)
    print(f"timeout: entries {entries:.0f}, activations {acts:.0f}", file=sys.stderr)
    return 1


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    if a[0] == "wait-size":
        return wait_size(float(a[1]), float(a[2]), [Silo(int(p)) for p in a[3:]])
    if a[0] == "wait-directory":
        return wait_directory(float(a[1]), [Silo(int(p)) for p in a[2:]])
    if a[0] == "sum":
        print(f"{sum(Silo(int(p)).metrics().get(a[1], 0) for p in a[2:]):.0f}")
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
