//! Globus connector benchmark: N objects put at site A, resolved at site B by another
//! process, on the emulator.
//!
//!     cargo run --release --example bench_globus -- --objects 100 --size 1024 --task-latency-ms 1000 --json
//!
//! Starts the emulator in-process (the latency model of `sim serve`). Site A's store
//! `put`s N objects of S bytes one at a time in a plain loop (`put_s`); then a second
//! process — its own store instance, state database and identity's token — configured
//! as site B resolves and verifies all N (`resolve_s`, from its spawn to its exit).
//! Prints `{"objects", "size", "task_latency_ms", "put_s", "resolve_s", "total_s",
//! "tasks", "api_requests"}` (`tasks`, `api_requests` from the emulator's stats, Auth
//! requests included).
//!
//! `--readers R` starts R reader processes at site B instead of one, sharing one state
//! database (one host), each resolving its 1/R share of the objects; the emulator keeps
//! Globus's default rate limit (20 requests/s per identity over 10 s). The report adds
//! `readers`, `transfer_requests` (Transfer API requests of the identity, every
//! process's), `responses_429` and `wall_s` (first put to last reader's exit):
//!
//!     cargo run --release --example bench_globus -- --readers 64 --objects 1000 --size 1024

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use ps_globus::Store;
use ps_globus::sim::TwoSites;

fn value(index: usize, size: usize) -> Vec<u8> {
    vec![(index % 251) as u8; size]
}

fn arg(args: &[String], name: &str, default: usize) -> Result<usize, Box<dyn std::error::Error>> {
    match args.iter().position(|a| a == name).map(|i| args.get(i + 1)) {
        None => Ok(default),
        Some(Some(v)) => v.parse().map_err(|_| {
            common::usage("bench_globus", format!("{name} takes a number, not {v:?}"))
        }),
        Some(None) => Err(common::usage(
            "bench_globus",
            format!("{name} needs a value"),
        )),
    }
}

fn main() -> std::process::ExitCode {
    common::exit_with(run())
}

fn run() -> common::Outcome {
    let args: Vec<String> = std::env::args().collect();
    let objects = arg(&args, "--objects", 100)?;
    let size = arg(&args, "--size", 1024)?;
    let latency = arg(&args, "--task-latency-ms", 1000)? as u64;
    if args.iter().any(|a| a == "--consumer") {
        let stdin = std::io::stdin();
        let (n, _) = ps_globus::block_on(ps_globus::demo::consume(
            stdin.lock(),
            |i| value(i, size),
            |_, _| {},
        ))?;
        if n != objects {
            return Err(format!("only {n} of {objects} objects resolved").into());
        }
        return Ok(());
    }

    let sites = TwoSites::start(latency)?;
    let store = Store::builder("bench-globus", sites.producer()?).build()?;
    let started = Instant::now();
    let mut keys = Vec::with_capacity(objects);
    for i in 0..objects {
        keys.push(store.put(&value(i, size))?);
    }
    let put_s = started.elapsed().as_secs_f64();

    let readers = arg(&args, "--readers", 1)?.max(1);
    let resolve_started = Instant::now();
    // Each reader gets every `readers`-th object; all share site B's state database.
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); readers];
    for (i, key) in keys.into_iter().enumerate() {
        let proxy = store.proxy_from_key::<Vec<u8>>(key);
        shares[i % readers].push(format!("{i}\t{}", serde_json::to_string(&proxy)?));
    }
    let mut consumers = Vec::new();
    for share in shares.into_iter().filter(|s| !s.is_empty()) {
        let mut consumer = Command::new(std::env::current_exe()?)
            .args([
                "--consumer",
                "--objects",
                &share.len().to_string(),
                "--size",
                &size.to_string(),
            ])
            .envs(sites.consumer_env())
            .stdin(Stdio::piped())
            .spawn()?;
        let mut stdin = consumer.stdin.take().ok_or("the consumer has no stdin")?;
        for line in share {
            writeln!(stdin, "{line}")?;
        }
        consumers.push(consumer);
    }
    for mut consumer in consumers {
        let status = consumer.wait()?;
        if !status.success() {
            return Err(format!("a consumer at site b failed ({status})").into());
        }
    }
    let resolve_s = resolve_started.elapsed().as_secs_f64();
    let stats = sites.sim.stats();
    let transfer_requests: u64 = stats
        .by_route
        .iter()
        .filter(|(route, _)| route.contains(" /v0.10/"))
        .map(|(_, n)| n)
        .sum();
    let report = serde_json::json!({
        "objects": objects,
        "size": size,
        "task_latency_ms": latency,
        "readers": readers,
        "put_s": put_s,
        "resolve_s": resolve_s,
        "total_s": put_s + resolve_s,
        "wall_s": started.elapsed().as_secs_f64(),
        "tasks": stats.route("POST /v0.10/transfer"),
        "api_requests": stats.api_requests,
        "transfer_requests": transfer_requests,
        "responses_429": stats.responses_429,
    });
    if args.iter().any(|a| a == "--json") {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
