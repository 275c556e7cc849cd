//! The HTTPS lane against Transfer alone, side by side on one emulator setup:
//!
//!     cargo run --release --example bench_lane -- --objects 100 --task-latency-ms 1000 --https-latency-ms 20 --json
//!
//! Four rows: 1 KiB and 1 MiB objects (`--sizes 1024,1048576`), each with the lane off
//! (`https_max_size = 0`: every object by Transfer, as before) and on (the default
//! 4 MiB). Each row starts a fresh emulator with two sites, puts `--objects` objects at
//! site A one after another, and from the moment of each put a reader at site B (a
//! connector of its own, with its own state database, in this process) resolves it.
//! Per row: the resolve latency at B (put start → verified bytes at B) p50, p95 and max,
//! Globus tasks, HTTPS requests, Transfer requests, and the total (first put → last
//! resolve). `scripts/bench-lane-compare` runs this and ProxyStore's GlobusConnector on
//! the same emulator.

mod common;

use std::time::{Duration, Instant};

use ps_globus::connector::{Connector, PutOptions};
use ps_globus_sim::TwoSites;

fn main() -> std::process::ExitCode {
    common::exit_with(ps_globus::block_on(run()))
}

async fn run() -> common::Outcome {
    let args: Vec<String> = std::env::args().collect();
    let number = |name, default| common::number_arg("bench_lane", &args, name, default);
    let objects = number("--objects", 100)?;
    let task_latency = number("--task-latency-ms", 1000)? as u64;
    let https_latency = number("--https-latency-ms", 20)? as u64;
    let sizes: Vec<usize> = match args.iter().position(|a| a == "--sizes") {
        Some(i) => args
            .get(i + 1)
            .ok_or_else(|| common::usage("bench_lane", "--sizes needs a value"))?
            .split(',')
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|_| common::usage("bench_lane", "--sizes takes numbers, comma-separated"))?,
        None => vec![1024, 1 << 20],
    };
    let mut rows = Vec::new();
    for &size in &sizes {
        for lane in [false, true] {
            let row = measure(objects, size, lane, task_latency, https_latency).await?;
            if args.iter().any(|a| a == "--json") {
                println!("{row}");
            } else {
                println!("{}", serde_json::to_string_pretty(&row)?);
            }
            rows.push(row);
        }
    }
    Ok(())
}

/// One row: `objects` objects of `size` bytes from A to B, with the lane on or off.
async fn measure(
    objects: usize,
    size: usize,
    lane: bool,
    task_latency_ms: u64,
    https_latency_ms: u64,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let mut sites = TwoSites::start_with(|config| {
        config.task_latency_ms = task_latency_ms;
        config.https_latency_ms = https_latency_ms;
    })?;
    if !lane {
        sites.config.https_max_size = Some(0);
    }
    let (a, b) = (sites.connector("a")?, sites.connector("b")?);
    let started = Instant::now();
    let mut readers = Vec::with_capacity(objects);
    for i in 0..objects {
        let data = vec![(i % 251) as u8; size];
        let put_at = Instant::now();
        let key = a.put(&data, &PutOptions::default()).await?;
        let b = b.clone();
        readers.push(tokio::spawn(async move {
            match b.get(&key).await {
                Ok(Some(bytes)) if bytes.len() == size && bytes[0] == (i % 251) as u8 => {
                    Ok(put_at.elapsed())
                }
                Ok(_) => Err(format!("object {i} did not arrive whole")),
                Err(e) => Err(format!("object {i}: {e}")),
            }
        }));
    }
    let put_s = started.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(objects);
    for reader in readers {
        latencies.push(reader.await??);
    }
    let total_s = started.elapsed().as_secs_f64();
    a.close().await?;
    latencies.sort();
    let at = |q: f64| -> f64 {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        ms(latencies[i])
    };
    let stats = sites.sim.stats();
    let transfer_requests = stats.transfer_requests();
    Ok(serde_json::json!({
        "size": size,
        "objects": objects,
        "lane": lane,
        "task_latency_ms": task_latency_ms,
        "https_latency_ms": https_latency_ms,
        "resolve_ms_p50": at(0.50),
        "resolve_ms_p95": at(0.95),
        "resolve_ms_max": ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        "tasks": stats.route("POST /v0.10/transfer"),
        "https_requests": stats.https_requests,
        "transfer_requests": transfer_requests,
        "put_s": put_s,
        "total_s": total_s,
    }))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}
