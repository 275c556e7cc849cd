"""ProxyStore's Store from Python: with ps_globus's GlobusConnector, then with ProxyStore's
own GlobusConnector, on the same emulator (ps_globus.testing) with the same task latency.

Run by scripts/bench-python. Site a puts N objects of S bytes one at a time through
`Store.proxy` (what a workflow does); a second process at site b resolves every proxy.
Prints one JSON line per connector and one with the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

from proxystore.store import Store

from ps_globus.proxystore import GlobusConnector
from ps_globus.testing import CLIENT_ID, CLIENT_SECRET, emulator

CONSUME = """
import pickle, sys
proxies = pickle.loads(sys.stdin.buffer.read())
assert all(len(p) == int(sys.argv[1]) for p in proxies)
"""


def counters(emu) -> tuple[int, int]:
    stats = emu.stats()
    return stats['tasks_submitted'].get('TRANSFER', 0), stats['api_requests']


def ps_globus_run(emu, n: int, size: int) -> dict:
    emu.activate('a')
    tasks0, requests0 = counters(emu)
    store = Store('bench-ps-globus', GlobusConnector('bench-ps-globus'), register=True)
    started = time.perf_counter()
    proxies = [store.proxy(os.urandom(size)) for _ in range(n)]
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, '-c', CONSUME, str(size)],
        input=pickle.dumps(proxies),
        env={**os.environ, **emu.env('b')},
        check=True,
    )
    resolve_s = time.perf_counter() - started
    tasks, requests = counters(emu)
    return {
        'connector': 'ps_globus.proxystore.GlobusConnector',
        'objects': n,
        'size': size,
        'put_s': round(put_s, 3),
        'resolve_s': round(resolve_s, 3),
        'total_s': round(put_s + resolve_s, 3),
        'tasks': tasks - tasks0,
        'api_requests': requests - requests0,
    }


def proxystore_run(emu, n: int, size: int) -> dict:
    tasks0, requests0 = counters(emu)
    conf = {name: {'id': s['collection'], 'root': s['local_path']} for name, s in emu.sites.items()}
    env = {
        **os.environ,
        'GLOBUS_SDK_SERVICE_URL_TRANSFER': emu.transfer_url,
        'GLOBUS_SDK_SERVICE_URL_AUTH': emu.auth_url,
        'PROXYSTORE_GLOBUS_CLIENT_ID': CLIENT_ID,
        'PROXYSTORE_GLOBUS_CLIENT_SECRET': CLIENT_SECRET,
    }
    script = Path(__file__).with_name('proxystore_globus_bench.py')
    done = subprocess.run(
        [sys.executable, str(script), 'produce', json.dumps(conf), str(n), str(size)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    tasks, requests = counters(emu)
    return {
        'connector': 'proxystore.connectors.globus.GlobusConnector',
        'objects': n,
        'size': size,
        'put_s': round(result['put_s'], 3),
        'resolve_s': round(result['resolve_s'], 3),
        'total_s': round(result['total_s'], 3),
        'tasks': tasks - tasks0,
        'api_requests': requests - requests0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--objects', type=int, default=100)
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--task-latency-ms', type=int, default=1000)
    parser.add_argument('--https', action='store_true',
                        help="objects up to 4 MiB by the collections' HTTPS (default: Transfer only, as ProxyStore)")
    args = parser.parse_args()
    lane = {} if args.https else {'https_max_size': 0}
    with emulator(sites=('a', 'b'), task_latency_ms=args.task_latency_ms, **lane) as emu:
        ours = ps_globus_run(emu, args.objects, args.size)
        print(json.dumps(ours), flush=True)
        theirs = proxystore_run(emu, args.objects, args.size)
        print(json.dumps(theirs), flush=True)
    print(json.dumps({
        'speedup_total': round(theirs['total_s'] / ours['total_s'], 1),
        'task_latency_ms': args.task_latency_ms,
    }))


if __name__ == '__main__':
    main()
