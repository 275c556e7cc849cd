//! Store benchmark: put/get/evict and proxy/resolve round trips on the local and file
//! connectors, beside the floors they are judged against, measured in the same run.
//!
//!     cargo run --release --example bench_store -- --json
//!
//! One JSON line per workload: `{"workload", "n", "per_op_us", "MBps"}` where MBps is
//! object bytes per round trip / 10^6 / seconds per round trip.
//!
//! - `<local|file>.put_get_evict.<bytes>`: `store.put(&vec)`, `store.get`, `store.evict`
//!   of a `Vec<u8>` (cache off).
//! - `file.get.<bytes>`: `store.get::<Vec<u8>>` of an object already stored, into a fresh
//!   buffer (the read path alone).
//! - `<local|file>.proxy_resolve.<bytes>`: `store.proxy_with(&vec, evict)`, then
//!   `proxy.resolve()`.
//! - `floor.fs_syscalls.<bytes>`: the same file-system work done by hand with `std::fs`:
//!   write a temporary file, rename it into place, read it, unlink it.
//! - `floor.write.<bytes>`: `write(2)` of the bytes from user memory into a new file
//!   (then unlink); `floor.read.<bytes>`: `read(2)` of a stored file into a fresh buffer.
//!   The honest floors of a put and a get. (`cat` is none: GNU cat 9 copies file to
//!   file inside the kernel, so its bytes never pass through user memory.)
//!
//! Options: `--json`, `--sizes 1024,1048576,67108864`, `--min-time-ms 400` (per
//! workload), `--dir DIR` (where the file connector and the floors write; default a
//! temporary directory).

mod common;

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ps_globus::connector::{FileConnector, LocalConnector};
use ps_globus::{ProxyOptions, Store};

struct Args {
    json: bool,
    sizes: Vec<usize>,
    min_time: Duration,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut args = Args {
        json: false,
        sizes: vec![1024, 1 << 20, 64 << 20],
        min_time: Duration::from_millis(400),
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| common::usage("bench_store", format!("{arg} needs a value")))
        };
        let number = |text: &str| {
            text.parse::<u64>().map_err(|_| {
                common::usage("bench_store", format!("{arg} takes numbers, not {text:?}"))
            })
        };
        match arg.as_str() {
            "--json" => args.json = true,
            "--sizes" => {
                args.sizes = value()?
                    .split(',')
                    .map(|s| number(s).map(|n| n as usize))
                    .collect::<Result<_, _>>()?
            }
            "--min-time-ms" => args.min_time = Duration::from_millis(number(&value()?)?),
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--bench" => {} // passed by `cargo bench`-style runners
            other => {
                return Err(common::usage(
                    "bench_store",
                    format!("unknown option {other}"),
                ));
            }
        }
    }
    Ok(args)
}

/// Runs `op` in rounds until `min_time` has passed (at least 3 times), after a warm-up,
/// and returns (iterations, seconds per iteration).
fn measure(
    min_time: Duration,
    mut op: impl FnMut() -> common::Outcome,
) -> Result<(u64, f64), Box<dyn std::error::Error>> {
    op()?; // warm-up: first-touch allocations, runtime start, page cache
    let mut n = 0u64;
    let mut batch = 1u64;
    let start = Instant::now();
    loop {
        for _ in 0..batch {
            op()?;
        }
        n += batch;
        let elapsed = start.elapsed();
        if elapsed >= min_time && n >= 3 {
            return Ok((n, elapsed.as_secs_f64() / n as f64));
        }
        batch = (batch * 2).min(1 << 16);
    }
}

fn report(args: &Args, workload: &str, size: usize, (n, secs): (u64, f64)) {
    let per_op_us = secs * 1e6;
    let mbps = size as f64 / 1e6 / secs;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"workload": workload, "n": n, "per_op_us": round3(per_op_us), "MBps": round3(mbps)})
        );
    } else {
        println!("{workload:<36} n={n:<8} {per_op_us:>12.2} us/op {mbps:>10.1} MB/s");
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn store_workloads(args: &Args, label: &str, store: &Store, size: usize) -> common::Outcome {
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let result = measure(args.min_time, || {
        let key = store.put(&data)?;
        let back = store
            .get::<Vec<u8>>(&key)?
            .ok_or("the object just stored is missing")?;
        check(back.len() == size, "read back a different size")?;
        store.evict(&key)?;
        Ok(())
    })?;
    report(args, &format!("{label}.put_get_evict.{size}"), size, result);

    if label == "file" {
        let key = store.put(&data)?;
        let result = measure(args.min_time, || {
            let back = store
                .get::<Vec<u8>>(&key)?
                .ok_or("the stored object is missing")?;
            check(back.len() == size, "read back a different size")?;
            Ok(())
        })?;
        store.evict(&key)?;
        report(args, &format!("{label}.get.{size}"), size, result);
    }

    let options = ProxyOptions::default().with_evict(true);
    let result = measure(args.min_time, || {
        let proxy = store.proxy_with(&data, &options)?;
        let value = proxy.resolve()?;
        check(value.len() == size, "resolved a different size")?;
        Ok(())
    })?;
    report(args, &format!("{label}.proxy_resolve.{size}"), size, result);
    Ok(())
}

fn fs_floor(args: &Args, dir: &Path, size: usize) -> common::Outcome {
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let mut i = 0u64;
    let result = measure(args.min_time, || {
        i += 1;
        let tmp = dir.join(format!(".floor-{i}.tmp"));
        let path = dir.join(format!("floor-{i}"));
        fs::write(&tmp, &data)?;
        fs::rename(&tmp, &path)?;
        let back = fs::read(&path)?;
        black_box(&back);
        fs::remove_file(&path)?;
        Ok(())
    })?;
    report(args, &format!("floor.fs_syscalls.{size}"), size, result);
    Ok(())
}

/// `write(2)` from user memory into a new file, and `read(2)` into a fresh buffer.
fn syscall_floors(args: &Args, dir: &Path, size: usize) -> common::Outcome {
    use std::io::{Read, Write};
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let target = dir.join("floor-write");
    let result = measure(args.min_time, || {
        fs::File::create(&target)?.write_all(&data)?;
        fs::remove_file(&target)?;
        Ok(())
    })?;
    report(args, &format!("floor.write.{size}"), size, result);
    fs::write(&target, &data)?;
    let result = measure(args.min_time, || {
        let mut back = Vec::with_capacity(size);
        fs::File::open(&target)?.read_to_end(&mut back)?;
        check(back.len() == size, "read back a different size")?;
        Ok(())
    })?;
    fs::remove_file(&target)?;
    report(args, &format!("floor.read.{size}"), size, result);
    Ok(())
}

fn check(ok: bool, what: &str) -> common::Outcome {
    if ok { Ok(()) } else { Err(what.into()) }
}

fn main() -> std::process::ExitCode {
    common::exit_with(run())
}

fn run() -> common::Outcome {
    let args = parse_args()?;
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let local = Store::new("bench-local", LocalConnector::new())?;
    let file = Store::new("bench-file", FileConnector::new(dir.join("store"))?)?;
    let floor_dir = dir.join("floor");
    fs::create_dir_all(&floor_dir)?;

    for &size in &args.sizes {
        store_workloads(&args, "local", &local, size)?;
        store_workloads(&args, "file", &file, size)?;
        fs_floor(&args, &floor_dir, size)?;
        syscall_floors(&args, &floor_dir, size)?;
    }
    Ok(())
}
