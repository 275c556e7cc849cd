"""The bench_globus workload through ProxyStore's GlobusConnector, on ps-globus's emulator.

Run by scripts/bench-globus-compare (which starts `ps-globus sim serve` and sets
GLOBUS_SDK_SERVICE_URL_* and PROXYSTORE_GLOBUS_CLIENT_ID/SECRET). Site A puts N objects
of S bytes one at a time (one Globus task each, as ProxyStore does); then a second
process, configured as site B, gets all N (waiting on each task). Prints one JSON line.
"""
import json
import socket
import subprocess
import sys
import time

from proxystore.connectors.globus import GlobusConnector, GlobusEndpoint
from proxystore.store import Store


def connector(conf, here):
    host = '^' + socket.gethostname() + '$'
    endpoints = [
        GlobusEndpoint(conf[s]['id'], '/ps-store', conf[s]['root'] + '/ps-store',
                       host if s == here else '^no-such-host$')
        for s in ('a', 'b')
    ]
    return GlobusConnector(endpoints, polling_interval=1, timeout=600, clear=False)


def main():
    conf = json.loads(sys.argv[2])
    n, size = int(sys.argv[3]), int(sys.argv[4])
    if sys.argv[1] == 'consume':
        store = Store('ps-b', connector(conf, 'b'), register=False)
        keys = [tuple(k) for k in json.loads(sys.stdin.read())]
        from proxystore.connectors.globus import GlobusKey
        for k in keys:
            value = store.get(GlobusKey(k[0], tuple(k[1]) if isinstance(k[1], list) else k[1]))
            assert value is not None and len(value) == size
        return
    store = Store('ps-a', connector(conf, 'a'), register=False)
    started = time.perf_counter()
    keys = [store.put(b'x' * size) for _ in range(n)]
    put_s = time.perf_counter() - started
    resolve_started = time.perf_counter()
    subprocess.run([sys.executable, __file__, 'consume', sys.argv[2], str(n), str(size)],
                   input=json.dumps([list(k) for k in keys]), text=True, check=True)
    resolve_s = time.perf_counter() - resolve_started
    print(json.dumps({'objects': n, 'size': size, 'put_s': put_s, 'resolve_s': resolve_s,
                      'total_s': put_s + resolve_s}))


if __name__ == '__main__':
    main()
