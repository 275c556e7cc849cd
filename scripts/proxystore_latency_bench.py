"""bench_lane's workload through ProxyStore's GlobusConnector, on ps-globus's emulator.

Run by scripts/bench-lane-compare (which starts `ps-globus sim serve` and sets
GLOBUS_SDK_SERVICE_URL_* and PROXYSTORE_GLOBUS_CLIENT_ID/SECRET). Site A puts N objects
of S bytes one after another (one Globus task each, as ProxyStore does) and hands each
key at once to a second process, configured as site B, which resolves them in order and
reports when each arrived. The resolve latency of an object runs from its put's start to
its bytes at B (both processes on this host's clock). Prints one JSON line.
"""
import json
import math
import subprocess
import sys
import time

from proxystore.connectors.globus import GlobusKey
from proxystore.store import Store

from proxystore_globus_bench import connector


def consume(conf, size):
    store = Store('ps-b', connector(conf, 'b'), register=False)
    for line in sys.stdin:
        key = json.loads(line)
        value = store.get(GlobusKey(key[0], tuple(key[1]) if isinstance(key[1], list) else key[1]))
        assert value is not None and len(value) == size
        print(time.time(), flush=True)


def percentile(values, q):
    return values[min(len(values), max(1, math.ceil(len(values) * q))) - 1]


def main():
    conf = json.loads(sys.argv[2])
    n, size = int(sys.argv[3]), int(sys.argv[4])
    if sys.argv[1] == 'consume':
        consume(conf, size)
        return
    reader = subprocess.Popen(
        [sys.executable, __file__, 'consume', sys.argv[2], str(n), str(size)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    store = Store('ps-a', connector(conf, 'a'), register=False)
    started = time.time()
    put_at = []
    for _ in range(n):
        put_at.append(time.time())
        key = store.put(b'x' * size)
        reader.stdin.write(json.dumps(list(key)) + '\n')
        reader.stdin.flush()
    put_s = time.time() - started
    reader.stdin.close()
    resolved = [float(line) for line in reader.stdout]
    if reader.wait() != 0 or len(resolved) != n:
        sys.exit('the reader at site b failed')
    latencies = sorted((r - p) * 1000 for r, p in zip(resolved, put_at))
    print(json.dumps({
        'size': size, 'objects': n, 'connector': 'ProxyStore GlobusConnector',
        'resolve_ms_p50': round(percentile(latencies, 0.5), 1),
        'resolve_ms_p95': round(percentile(latencies, 0.95), 1),
        'resolve_ms_max': round(latencies[-1], 1),
        'put_s': put_s, 'total_s': max(resolved) - started,
    }))


if __name__ == '__main__':
    main()
