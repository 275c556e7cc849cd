"""Side-by-side table of bench_store and ProxyStore results, with the targets of issues
#2 and #15.

    python3 scripts/bench_report.py rust.jsonl python.jsonl
"""

import json
import sys


def load(path):
    with open(path) as f:
        return {r["workload"]: r for r in map(json.loads, filter(str.strip, f))}


def main():
    rust, python = load(sys.argv[1]), load(sys.argv[2])
    print(f"{'workload':<36} {'ps-globus us/op':>16} {'MB/s':>9} {'ProxyStore us/op':>17} {'speed-up':>9}")
    for name, r in rust.items():
        if name.startswith("floor."):
            continue
        p = python.get("proxystore." + name)
        p_us = f"{p['per_op_us']:.2f}" if p else "-"
        ratio = f"{p['per_op_us'] / r['per_op_us']:.1f}x" if p else "-"
        print(f"{name:<36} {r['per_op_us']:>16.2f} {r['MBps']:>9.1f} {p_us:>17} {ratio:>9}")

    print("\ntargets:")
    checks = []
    for w in ("local.put_get_evict.1024", "local.proxy_resolve.1024"):
        if w in rust and "proxystore." + w in python:
            ratio = python["proxystore." + w]["per_op_us"] / rust[w]["per_op_us"]
            checks.append((f"{w}: >= 10x faster than ProxyStore", ratio >= 10, f"{ratio:.1f}x"))
    floor = rust.get("floor.fs_syscalls.1024")
    for w in ("file.put_get_evict.1024", "file.proxy_resolve.1024"):
        if w in rust and floor:
            ratio = rust[w]["per_op_us"] / floor["per_op_us"]
            checks.append((f"{w}: <= 1.3x the fs floor", ratio <= 1.3, f"{ratio:.2f}x"))
    # Issue 15: a 64 MiB put+get+evict against the same run's naive syscalls (write(2)
    # from memory into a new file and its unlink, read(2) into a fresh buffer), and a
    # get into a fresh buffer at the page-cache limit.
    write, read = rust.get("floor.write.67108864"), rust.get("floor.read.67108864")
    w = "file.put_get_evict.67108864"
    if w in rust and write and read:
        ratio = rust[w]["per_op_us"] / (write["per_op_us"] + read["per_op_us"])
        checks.append((f"{w}: <= 1.0x write(2) + read(2)", ratio <= 1.0, f"{ratio:.2f}x"))
    get = rust.get("file.get.67108864")
    if get:
        checks.append(("file.get.67108864: >= 4 GB/s", get["MBps"] >= 4000, f"{get['MBps'] / 1000:.2f} GB/s"))
    for text, ok, value in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}: {value}")


if __name__ == "__main__":
    main()
