"""The bench_store workloads, done with the Python ProxyStore library, for comparison.

    python scripts/proxystore_bench.py [--sizes 1024,1048576,67108864] [--min-time-ms 400]

Prints the same JSON lines as `examples/bench_store.rs`, with workload names prefixed
"proxystore.". Work per round trip matches the Rust benchmark: cache off; proxies are
made with populate_target=False and evict=True, so resolving really reads the store.
"""

import argparse
import json
import tempfile
import time

from proxystore.connectors.file import FileConnector
from proxystore.connectors.local import LocalConnector
from proxystore.proxy import resolve
from proxystore.store import Store


def measure(min_time, op):
    op()  # warm-up
    n, batch = 0, 1
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            op()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and n >= 3:
            return n, elapsed / n
        batch = min(batch * 2, 1 << 16)


def report(workload, size, result):
    n, secs = result
    print(json.dumps({
        "workload": workload,
        "n": n,
        "per_op_us": round(secs * 1e6, 3),
        "MBps": round(size / 1e6 / secs, 3),
    }), flush=True)


def workloads(label, store, size, min_time):
    data = bytes(i % 253 for i in range(size)) if size < (1 << 20) else bytes(size)

    def put_get_evict():
        key = store.put(data)
        back = store.get(key)
        assert len(back) == size
        store.evict(key)

    report(f"proxystore.{label}.put_get_evict.{size}", size, measure(min_time, put_get_evict))

    def proxy_resolve():
        proxy = store.proxy(data, evict=True, populate_target=False)
        resolve(proxy)
        assert len(proxy) == size

    report(f"proxystore.{label}.proxy_resolve.{size}", size, measure(min_time, proxy_resolve))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1024,1048576,67108864")
    parser.add_argument("--min-time-ms", type=int, default=400)
    args = parser.parse_args()
    min_time = args.min_time_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        local = Store("bench-local", LocalConnector(), cache_size=0, register=True)
        file = Store("bench-file", FileConnector(tmp), cache_size=0, register=True)
        for size in [int(s) for s in args.sizes.split(",")]:
            workloads("local", local, size, min_time)
            workloads("file", file, size, min_time)


if __name__ == "__main__":
    main()
