"""ProxyStore's proxy patterns (TPDS'24), scaled to this machine, side by side in one run:
ProxyStore 1.1's own Redis connector and shims against ours, and ours over two emulated
Globus sites (which ProxyStore cannot do). Run by scripts/bench-patterns; never a test.

    python scripts/patterns_bench.py --redis-port PORT [--quick]

Prints one JSON line per measurement, then the tables (markdown) the README carries:

1. redis: through ProxyStore's ``Store`` (cache off), put / get / put_batch of 1 KiB and
   1 MiB, median of 3 runs, microseconds an object.
2. pipelining (R6 shape): a chain of tasks in a process pool, each with a startup overhead
   equal to its compute time (overhead fraction 0.5) and ~10 MB of data to the next;
   without futures each task starts after the last ended, with futures they all start at
   once and wait on the previous task's future.
3. streams: items of 10 kB and 1 MB, a producer here and a consumer process, from the
   first send to the last item resolved.
4. memory left (R8 shape): a workflow of tasks whose intermediate objects are read once;
   what stays in the store after it with default proxies, owned proxies and a lease; and
   a lease's objects after its owner was killed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from proxystore.connectors.redis import RedisConnector as PsRedis
from proxystore.store import Store

import ps_globus
from ps_globus.proxystore import GlobusConnector, RedisConnector
from ps_globus.testing import emulator

RESULTS: list[dict[str, Any]] = []


def emit(row: dict[str, Any]) -> None:
    RESULTS.append(row)
    print(json.dumps(row), flush=True)


def median_us(op, n: int, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        op()
        times.append((time.perf_counter() - started) / n * 1e6)
    return round(statistics.median(times), 1)


# 1. Redis through ProxyStore's Store.


def redis_rows(port: int, quick: bool) -> None:
    for name, connector in (
        ('ProxyStore RedisConnector', PsRedis('127.0.0.1', port)),
        ('ps_globus RedisConnector', RedisConnector('127.0.0.1', port)),
    ):
        store = Store(f'bench-{name}', connector, cache_size=0, register=False)
        for size, n in ((1024, 2000 if not quick else 200), (1 << 20, 50 if not quick else 10)):
            objs = [os.urandom(size) for _ in range(n)]
            keys: list[Any] = []

            def put() -> None:
                keys.clear()
                keys.extend(store.put(o) for o in objs)

            put_us = median_us(put, n)
            get_us = median_us(lambda: [store.get(k) for k in keys], n)
            for k in keys:
                store.evict(k)
            times = []
            for _ in range(3):
                started = time.perf_counter()
                batch = store.put_batch(objs)
                times.append((time.perf_counter() - started) / n * 1e6)
                for k in batch:  # not timed
                    store.evict(k)
            batch_us = round(statistics.median(times), 1)
            emit({'bench': 'redis', 'connector': name, 'size': size, 'put_us': put_us,
                  'get_us': get_us, 'put_batch_us': batch_us})


def redis_benchmark_rows(port: int) -> None:
    for size in (1024, 1 << 20):
        n = 20000 if size == 1024 else 500
        done = subprocess.run(
            ['redis-benchmark', '-p', str(port), '-t', 'set,get', '-d', str(size), '-n', str(n),
             '-c', '1', '--csv'],
            capture_output=True, text=True, check=True,
        )
        for line in done.stdout.splitlines():
            cells = [c.strip('"') for c in line.split(',')]
            if cells[0] in ('SET', 'GET'):
                emit({'bench': 'redis', 'connector': f'redis-benchmark {cells[0]} (1 client)',
                      'size': size, 'per_op_us': round(1e6 / float(cells[1]), 1)})


def rust_rows(port: int, binary: str) -> None:
    done = subprocess.run([binary, '--port', str(port)], capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        row = json.loads(line)
        emit({'bench': 'redis', 'connector': f'Rust {row["workload"].rsplit(".", 1)[0]}',
              'size': row['size'], 'per_op_us': row['per_op_us']})


# 2. Pipelining with proxy futures.

def _site_worker(site: str | None) -> None:
    if site is not None:
        os.environ['PS_GLOBUS_SITE'] = site


def stage(overhead_s: float, compute_s: float, size: int, source: Any, sink: Any) -> int:
    """One task: its startup overhead, then its input (a proxy: waits for it), then its
    compute, then its output, set on ``sink`` (a future) or returned as a proxy."""
    time.sleep(overhead_s)
    got = len(bytes(source)) if source is not None else 0
    time.sleep(compute_s)
    out = os.urandom(size)
    if hasattr(sink, 'set_result'):
        sink.set_result(out)
        return got
    from proxystore.store import get_or_create_store

    return get_or_create_store(sink).proxy(out, populate_target=False)


def chain(kind: str, stores: list[Store], pools: list[ProcessPoolExecutor], n: int,
          overhead_s: float, compute_s: float, size: int, futures: bool) -> float:
    started = time.perf_counter()
    if futures:
        outs = [stores[i % len(stores)].future(polling_interval=0.01, polling_backoff_factor=1.2,
                                               polling_interval_limit=0.2) for i in range(n)]
        submitted = []
        for i in range(n):
            source = outs[i - 1].proxy() if i else None
            submitted.append(pools[i % len(pools)].submit(stage, overhead_s, compute_s, size,
                                                         source, outs[i]))
        for s in submitted:
            s.result()
        assert len(bytes(outs[-1].proxy())) == size
    else:
        source = None
        for i in range(n):
            source = pools[i % len(pools)].submit(stage, overhead_s, compute_s, size, source,
                                                  stores[i % len(stores)].config()).result()
        assert len(bytes(source)) == size
    return time.perf_counter() - started


def pipelining_rows(port: int, quick: bool) -> None:
    n, overhead_s, compute_s, size = (6, 0.5, 0.5, 10_000_000) if not quick else (3, 0.2, 0.2, 1_000_000)
    context = multiprocessing.get_context('fork')
    redis_setups = [
        ('ProxyStore RedisConnector', [Store('pipe-ps', PsRedis('127.0.0.1', port), register=True)]),
        ('ps_globus RedisConnector', [Store('pipe-ours', RedisConnector('127.0.0.1', port), register=True)]),
    ]
    for name, stores in redis_setups:
        with ProcessPoolExecutor(n, mp_context=context) as pool:
            list(pool.map(time.sleep, [0] * n))  # workers started before the clock
            for futures in (False, True):
                seconds = chain(name, stores, [pool], n, overhead_s, compute_s, size, futures)
                emit({'bench': 'pipelining', 'connector': name, 'futures': futures, 'tasks': n,
                      'overhead_s': overhead_s, 'compute_s': compute_s, 'bytes': size,
                      'seconds': round(seconds, 2)})
    with emulator(sites=('a', 'b'), task_latency_ms=200, https_max_size=0) as emu:
        emu.activate('a')
        stores = [Store('pipe-globus-a', GlobusConnector('pipe-globus', settling_site='a'), register=True),
                  Store('pipe-globus-b', GlobusConnector('pipe-globus', settling_site='b'), register=True)]
        half = max(1, n // 2 + n % 2)
        with ProcessPoolExecutor(half, mp_context=context, initializer=_site_worker, initargs=('a',)) as at_a, \
                ProcessPoolExecutor(half, mp_context=context, initializer=_site_worker, initargs=('b',)) as at_b:
            list(at_a.map(time.sleep, [0] * half))
            list(at_b.map(time.sleep, [0] * half))
            for futures in (False, True):
                seconds = chain('globus', stores, [at_a, at_b], n, overhead_s, compute_s, size, futures)
                emit({'bench': 'pipelining', 'connector': 'ps_globus GlobusConnector (sites a, b; 200 ms a task)',
                      'futures': futures, 'tasks': n, 'overhead_s': overhead_s, 'compute_s': compute_s,
                      'bytes': size, 'seconds': round(seconds, 2)})
        ps_globus.flush()


# 3. Streams.

CONSUMER = """
import json, sys, time
spec = json.loads(sys.argv[1])
from proxystore.stream import StreamConsumer
if spec['kind'] == 'ps':
    from proxystore.stream.shims.redis import RedisSubscriber
    subscriber = RedisSubscriber('127.0.0.1', spec['port'], spec['topic'])
elif spec['kind'] == 'ours':
    from ps_globus.proxystore import RedisConnector
    from ps_globus.stream import RedisStreamSubscriber
    connector = RedisConnector('127.0.0.1', spec['port'], prefix=spec['prefix'])
    subscriber = RedisStreamSubscriber(connector, spec['topic'], timeout=120)
else:
    from ps_globus.proxystore import GlobusConnector
    from ps_globus.stream import GlobusSubscriber
    subscriber = GlobusSubscriber(GlobusConnector('stream-globus'), spec['topic'], key_file=spec['key'], timeout=120)
print('ready', flush=True)
count = 0
for item in StreamConsumer(subscriber).iter_objects():
    assert len(item) == spec['size']
    count += 1
print(json.dumps({'count': count, 'end': time.time()}), flush=True)
"""


def stream_run(spec: dict[str, Any], publisher: Any, store: Store, n: int, env: dict[str, str]) -> float:
    from proxystore.stream import StreamProducer

    consumer = subprocess.Popen([sys.executable, '-c', CONSUMER, json.dumps(spec)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert consumer.stdout is not None and consumer.stdout.readline().strip() == 'ready'
    producer = StreamProducer(publisher, stores={spec['topic']: store})
    items = [os.urandom(spec['size']) for _ in range(n)]
    started = time.time()
    for item in items:
        producer.send(spec['topic'], item, evict=True)
    producer.close(topics=[spec['topic']])
    out, _ = consumer.communicate(timeout=300)
    done = json.loads(out.strip().splitlines()[-1])
    assert done['count'] == n, done
    return n / (done['end'] - started)


def stream_rows(port: int, quick: bool, key_file: str) -> None:
    from proxystore.stream.shims.redis import RedisPublisher

    from ps_globus.stream import GlobusPublisher, RedisStreamPublisher

    for size, n in ((10_000, 1000 if not quick else 100), (1_000_000, 200 if not quick else 20)):
        topic = f'items-{size}'
        rate = stream_run({'kind': 'ps', 'port': port, 'topic': topic, 'size': size},
                          RedisPublisher('127.0.0.1', port),
                          Store(f'stream-ps-{size}', PsRedis('127.0.0.1', port)), n, {})
        emit({'bench': 'streams', 'connector': 'ProxyStore RedisPublisher (pub/sub) + RedisConnector',
              'size': size, 'items': n, 'items_per_s': round(rate, 1)})
        ours = RedisConnector('127.0.0.1', port, prefix=f'bench-{size}:')
        rate = stream_run({'kind': 'ours', 'port': port, 'topic': topic, 'size': size,
                           'prefix': f'bench-{size}:'},
                          RedisStreamPublisher(ours), Store(f'stream-ours-{size}', ours), n, {})
        emit({'bench': 'streams', 'connector': 'ps_globus RedisStreamPublisher (Redis stream) + RedisConnector',
              'size': size, 'items': n, 'items_per_s': round(rate, 1)})
    with emulator(sites=('a', 'b'), task_latency_ms=200, https_max_size=0) as emu:
        emu.activate('a')
        for size, n in ((10_000, 300 if not quick else 30), (1_000_000, 100 if not quick else 10)):
            connector = GlobusConnector('stream-globus')
            rate = stream_run({'kind': 'globus', 'topic': f'g-{size}', 'size': size, 'key': key_file},
                              GlobusPublisher(connector, key_file=key_file),
                              Store(f'stream-globus-{size}', connector), n, emu.env('b'))
            emit({'bench': 'streams', 'connector': 'ps_globus GlobusPublisher (sealed files, sites a to b; 200 ms a task)',
                  'size': size, 'items': n, 'items_per_s': round(rate, 1)})


# 4. Memory left behind.


def used_memory(port: int) -> int:
    import redis

    return int(redis.Redis('127.0.0.1', port).info('memory')['used_memory'])


def consume(proxy: Any) -> int:
    return len(bytes(proxy))


def memory_rows(port: int, quick: bool) -> None:
    n, size = (50, 1_000_000) if not quick else (10, 100_000)
    import redis

    server = redis.Redis('127.0.0.1', port)
    for name, connector in (('ProxyStore RedisConnector', PsRedis('127.0.0.1', port)),
                            ('ps_globus RedisConnector', RedisConnector('127.0.0.1', port))):
        modes = ['default', 'owned'] + (['lease'] if isinstance(connector, RedisConnector) else [])
        for mode in modes:
            server.flushdb()
            store = Store(f'mem-{mode}-{type(connector).__module__}', connector, register=True)
            before = used_memory(port)
            peak = 0
            lease = ps_globus.lease(store, ttl=3600) if mode == 'lease' else None
            for _ in range(n):
                obj = os.urandom(size)
                if mode == 'default':
                    proxy = store.proxy(obj, populate_target=False)
                elif mode == 'owned':
                    proxy = store.owned_proxy(obj, populate_target=False)
                else:
                    proxy = lease.proxy(obj)
                consume(proxy)
                del proxy
                peak = max(peak, used_memory(port) - before)
            if lease is not None:
                lease.end()
            left = max(0, used_memory(port) - before)
            emit({'bench': 'memory', 'connector': name, 'proxies': mode, 'tasks': n, 'bytes': size,
                  'peak_bytes': peak, 'left_bytes': left, 'objects_left': server.dbsize()})
    # A lease whose owner is killed before it ends: evicted at expiry by another process.
    server.flushdb()
    owner = subprocess.run(
        [sys.executable, '-c', f"""
import os, signal
from proxystore.store import Store
import ps_globus
from ps_globus.proxystore import RedisConnector
store = Store('mem-killed', RedisConnector('127.0.0.1', {port}))
lease = ps_globus.lease(store, ttl=2)
for _ in range({n}):
    lease.put(os.urandom({size}))
os.kill(os.getpid(), signal.SIGKILL)
"""], check=False)
    assert owner.returncode == -signal.SIGKILL
    left_at_death = server.dbsize()
    deadline = time.monotonic() + 60
    while server.dbsize() and time.monotonic() < deadline:
        ps_globus.reap_expired_leases()
        time.sleep(0.2)
    emit({'bench': 'memory', 'connector': 'ps_globus RedisConnector', 'proxies': 'lease, owner killed',
          'tasks': n, 'bytes': size, 'objects_at_death': left_at_death, 'objects_left': server.dbsize()})


def tables() -> str:
    lines = ['', '| Redis, through ProxyStore\'s Store (µs an object) | size | put | get | put_batch |',
             '| --- | --- | --- | --- | --- |']
    for r in RESULTS:
        if r['bench'] == 'redis' and 'put_us' in r:
            lines.append(f"| {r['connector']} | {r['size']} | {r['put_us']} | {r['get_us']} | {r['put_batch_us']} |")
    for r in RESULTS:
        if r['bench'] == 'redis' and 'per_op_us' in r:
            lines.append(f"| {r['connector']} | {r['size']} | {r['per_op_us']} | | |")
    lines += ['', '| pipelining (R6 shape) | tasks | without futures | with futures | speed-up |',
              '| --- | --- | --- | --- | --- |']
    pipes: dict[str, dict[bool, float]] = {}
    for r in RESULTS:
        if r['bench'] == 'pipelining':
            pipes.setdefault(r['connector'], {})[r['futures']] = r['seconds']
            tasks = r['tasks']
    for name, t in pipes.items():
        lines.append(f"| {name} | {tasks} | {t[False]} s | {t[True]} s | {t[False] / t[True]:.2f}× |")
    lines += ['', '| streams (items/s) | size | items | items/s |', '| --- | --- | --- | --- |']
    for r in RESULTS:
        if r['bench'] == 'streams':
            lines.append(f"| {r['connector']} | {r['size']} | {r['items']} | {r['items_per_s']} |")
    lines += ['', '| memory left (R8 shape) | proxies | objects left | bytes left | peak bytes |',
              '| --- | --- | --- | --- | --- |']
    for r in RESULTS:
        if r['bench'] == 'memory':
            lines.append(f"| {r['connector']} | {r['proxies']} | {r['objects_left']} | "
                         f"{r.get('left_bytes', '—')} | {r.get('peak_bytes', '—')} |")
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--redis-port', type=int, required=True)
    parser.add_argument('--rust-bench', help='examples/bench_redis, built')
    parser.add_argument('--key-file', required=True, help='a stream key file')
    parser.add_argument('--quick', action='store_true', help='small sizes (to try the script)')
    parser.add_argument('--only', help='redis, pipelining, streams or memory')
    args = parser.parse_args()
    run = lambda part: args.only in (None, part)  # noqa: E731
    if run('redis'):
        redis_rows(args.redis_port, args.quick)
        redis_benchmark_rows(args.redis_port)
        if args.rust_bench:
            rust_rows(args.redis_port, args.rust_bench)
    if run('pipelining'):
        pipelining_rows(args.redis_port, args.quick)
    if run('streams'):
        stream_rows(args.redis_port, args.quick, args.key_file)
    if run('memory'):
        memory_rows(args.redis_port, args.quick)
    print(tables())


if __name__ == '__main__':
    main()
