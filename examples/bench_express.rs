//! The express lane (issue 37): small objects a reader waits on, put between large bulk
//! ones, with the lane off and on, side by side on one emulator setup:
//!
//!     cargo run --release --example bench_express -- --bulk 20 --bulk-size 67108864 --small 100 --json
//!
//! Each row starts a fresh emulator with two sites (Globus's 3 running slots per
//! identity, `--task-latency-ms` per task, `--bandwidth` per task and
//! `--link-bandwidth` shared by all running tasks if given, e.g. `500MB/s`). Site A puts `--small` objects of `--small-size` bytes (latency work) and
//! `--bulk` objects of `--bulk-size` bytes (bulk work: at least the store's
//! `latency_max_size`, 16 MiB) in one loop, a bulk object after every `small / bulk`
//! small ones, `--pace-ms` apart (50: a workflow producing over a few seconds, not a
//! burst). From the moment of each put a reader at site B (a connector of its own,
//! with its own state database, in this process) resolves and verifies it. Everything
//! goes by Transfer (`https_max_size = 0`): the express lane is about Transfer's slots.
//!
//! Per row: the small objects' resolve latency at B (put start → verified bytes at B)
//! p50, p95 and max; the bulk objects' total time (first bulk put → last bulk object
//! verified at B); Globus tasks; the whole run. `express_slots` 0 is the lane off (bulk
//! and latency share every slot, as before it), 1 the default.

mod common;

use std::time::{Duration, Instant};

use ps_globus::connector::{Connector, PutOptions};
use ps_globus::transfer::ManagerConfig;
use ps_globus_sim::TwoSites;

fn main() -> std::process::ExitCode {
    common::exit_with(ps_globus::block_on(run()))
}

/// The workload of one row.
#[derive(Clone)]
struct Mix {
    small: usize,
    small_size: usize,
    bulk: usize,
    bulk_size: usize,
    task_latency_ms: u64,
    bandwidth: Option<String>,
    link_bandwidth: Option<String>,
    /// `ManagerConfig::express_window`, if not the default.
    window: Option<Duration>,
    /// Between one put's return and the next put (a workflow that produces over time).
    pace: Duration,
}

async fn run() -> common::Outcome {
    let args: Vec<String> = std::env::args().collect();
    let number = |name, default| common::number_arg("bench_express", &args, name, default);
    let text = |name| common::text_arg("bench_express", &args, name);
    let mix = Mix {
        small: number("--small", 100)?,
        small_size: number("--small-size", 1024)?,
        bulk: number("--bulk", 20)?,
        bulk_size: number("--bulk-size", 64 << 20)?,
        task_latency_ms: number("--task-latency-ms", 1000)? as u64,
        pace: Duration::from_millis(number("--pace-ms", 50)? as u64),
        bandwidth: text("--bandwidth")?,
        link_bandwidth: text("--link-bandwidth")?,
        window: text("--express-window-s")?
            .map(|s| s.parse().map(Duration::from_secs))
            .transpose()
            .map_err(|_| common::usage("bench_express", "--express-window-s takes seconds"))?,
    };
    if mix.bulk_size < 16 << 20 {
        return Err(common::usage(
            "bench_express",
            "--bulk-size below 16 MiB would be latency work (the store's latency_max_size)",
        ));
    }
    for express_slots in [0, 1] {
        let row = measure(&mix, express_slots).await?;
        if args.iter().any(|a| a == "--json") {
            println!("{row}");
        } else {
            println!("{}", serde_json::to_string_pretty(&row)?);
        }
    }
    Ok(())
}

/// What a reader at B measured for one object.
struct Read {
    bulk: bool,
    put_at: Instant,
    arrived: Instant,
}

/// One row: the mix with `express_slots` slots kept for latency work.
async fn measure(
    mix: &Mix,
    express_slots: usize,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let mut sites = TwoSites::start_with(|config| {
        config.task_latency_ms = mix.task_latency_ms;
        config.bandwidth = mix.bandwidth.clone();
        config.link_bandwidth = mix.link_bandwidth.clone();
    })?;
    sites.config.https_max_size = Some(0);
    let mut config = ManagerConfig::default();
    config.express_slots = express_slots;
    if let Some(window) = mix.window {
        config.express_window = window;
    }
    let a = sites.builder("a")?.manager_config(config.clone()).build()?;
    let b = sites.builder("b")?.manager_config(config).build()?;
    let started = Instant::now();
    let every = mix.small.checked_div(mix.bulk).unwrap_or(usize::MAX).max(1);
    let (mut small_left, mut bulk_left) = (mix.small, mix.bulk);
    let mut readers = Vec::with_capacity(mix.small + mix.bulk);
    let mut i = 0usize;
    while small_left + bulk_left > 0 {
        let bulk = bulk_left > 0 && (small_left == 0 || i.is_multiple_of(every + 1));
        let size = if bulk { mix.bulk_size } else { mix.small_size };
        let fill = (i % 251) as u8;
        let data = vec![fill; size];
        let put_at = Instant::now();
        let key = a.put(&data, &PutOptions::default()).await?;
        drop(data);
        let b = b.clone();
        readers.push(tokio::spawn(async move {
            match b.get(&key).await {
                Ok(Some(bytes)) if bytes.len() == size && bytes.iter().all(|&x| x == fill) => {
                    Ok(Read {
                        bulk,
                        put_at,
                        arrived: Instant::now(),
                    })
                }
                Ok(_) => Err(format!("object {i} did not arrive whole")),
                Err(e) => Err(format!("object {i}: {e}")),
            }
        }));
        if bulk {
            bulk_left -= 1;
        } else {
            small_left -= 1;
        }
        i += 1;
        tokio::time::sleep(mix.pace).await;
    }
    let put_s = started.elapsed().as_secs_f64();
    let mut reads = Vec::with_capacity(readers.len());
    for reader in readers {
        reads.push(reader.await??);
    }
    let total_s = started.elapsed().as_secs_f64();
    a.close().await?;
    let mut small: Vec<Duration> = reads
        .iter()
        .filter(|r| !r.bulk)
        .map(|r| r.arrived - r.put_at)
        .collect();
    small.sort();
    let at = |q: f64| -> f64 {
        if small.is_empty() {
            return 0.0;
        }
        let i = ((small.len() as f64 * q).ceil() as usize).clamp(1, small.len()) - 1;
        ms(small[i])
    };
    let bulk_reads = reads.iter().filter(|r| r.bulk);
    let bulk_total_s = match (
        bulk_reads.clone().map(|r| r.put_at).min(),
        bulk_reads.map(|r| r.arrived).max(),
    ) {
        (Some(first), Some(last)) => (last - first).as_secs_f64(),
        _ => 0.0,
    };
    let stats = sites.sim.stats();
    Ok(serde_json::json!({
        "express_slots": express_slots,
        "small": mix.small,
        "small_size": mix.small_size,
        "bulk": mix.bulk,
        "bulk_size": mix.bulk_size,
        "task_latency_ms": mix.task_latency_ms,
        "bandwidth": mix.bandwidth,
        "link_bandwidth": mix.link_bandwidth,
        "pace_ms": mix.pace.as_millis() as u64,
        "express_window_s": mix.window.unwrap_or(ManagerConfig::default().express_window).as_secs(),
        "small_resolve_ms_p50": at(0.50),
        "small_resolve_ms_p95": at(0.95),
        "small_resolve_ms_max": ms(*small.last().unwrap_or(&Duration::ZERO)),
        "bulk_total_s": bulk_total_s,
        "tasks": stats.route("POST /v0.10/transfer"),
        "put_s": put_s,
        "total_s": total_s,
    }))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}
