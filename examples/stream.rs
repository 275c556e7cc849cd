//! Stream benchmark: a topic of objects from site A to site B over Globus itself, with no
//! broker (`ps_globus::stream`, `Channel::Globus`).
//!
//!     cargo run --release --example stream -- --events 1000 --size 65536 --task-latency-ms 1000
//!
//! Starts the emulator's two sites. A consumer process at site B starts first and waits
//! on the topic; this process, at site A, publishes `--events` objects (1000) of `--size`
//! bytes (64 KiB) one at a time, then the end of the stream. The consumer takes each
//! event once its file and its object are at B and verified, resolves the object and
//! checks every byte, in order.
//!
//! Reported: `publish_s` (A's loop, closing included), `total_s` (first publish to last
//! event consumed at B), `events_per_s` and `mib_per_s` over that span, `latency_ms`
//! (publish to consume, per event: p50, p95, max), `tasks` (Globus transfer tasks) and
//! `api_requests` (the emulator's counters, Auth included). `--json`: one line.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use ps_globus::Store;
use ps_globus::connector::{GlobusConfig, GlobusConnector};
use ps_globus::stream::{Channel, StreamConsumer, StreamProducer};
use ps_globus_sim::TwoSites;
use serde_json::json;

const TOPIC: &str = "bench";
const CONFIG_VAR: &str = "PS_GLOBUS_STREAM_BENCH_CONFIG";

/// Event `i`'s bytes.
fn value(i: usize, size: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; size];
    v[..8.min(size)].copy_from_slice(&(i as u64).to_le_bytes()[..8.min(size)]);
    v
}

fn main() -> std::process::ExitCode {
    common::exit_with(run())
}

fn run() -> common::Outcome {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name, default| common::number_arg("stream", &args, name, default);
    let events = arg("--events", 1000)?;
    let size = arg("--size", 64 << 10)?;
    if args.iter().any(|a| a == "--consumer") {
        return consume(size);
    }
    let latency = arg("--task-latency-ms", 1000)? as u64;
    let sites = TwoSites::start(latency)?;
    let mut consumer = Command::new(std::env::current_exe()?)
        .args(["--consumer", "--size", &size.to_string()])
        .envs(sites.consumer_env())
        .env(CONFIG_VAR, serde_json::to_string(&sites.config)?)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(consumer.stdout.take().ok_or("no stdout")?).lines();
    if lines.next().transpose()?.as_deref() != Some("READY") {
        return Err("the consumer at site B did not start".into());
    }

    let a = sites.producer()?;
    let store = Store::new("stream-bench", a.clone())?;
    let started = Instant::now();
    let first_published = chrono::Utc::now().timestamp_millis();
    ps_globus::block_on(async {
        let channel = Channel::Globus(a);
        let mut producer = StreamProducer::open(&store, &channel, TOPIC).await?;
        for i in 0..events {
            producer.send_async(&value(i, size)).await?;
        }
        producer.close_async().await
    })?;
    let publish_s = started.elapsed().as_secs_f64();

    let mut latency_ms = Vec::with_capacity(events);
    let mut last_consumed = first_published;
    for line in lines {
        let line = line?;
        let Some((consumed, latency)) = line.split_once('\t') else {
            continue;
        };
        last_consumed = consumed.parse()?;
        latency_ms.push(latency.parse::<f64>()?);
    }
    if !consumer.wait()?.success() || latency_ms.len() != events {
        return Err(format!("the consumer took {} of {events} events", latency_ms.len()).into());
    }
    latency_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| latency_ms[((latency_ms.len() - 1) as f64 * p) as usize];
    let total_s = (last_consumed - first_published) as f64 / 1e3;
    let stats = sites.sim.stats();
    let report = json!({
        "events": events,
        "size": size,
        "task_latency_ms": latency,
        "publish_s": publish_s,
        "total_s": total_s,
        "events_per_s": events as f64 / total_s,
        "mib_per_s": (events * size) as f64 / total_s / (1 << 20) as f64,
        "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "max": pct(1.0)},
        "tasks": stats.route("POST /v0.10/transfer"),
        "api_requests": stats.api_requests,
    });
    if args.iter().any(|a| a == "--json") {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// The consumer at site B: every event in order, its object resolved and checked; prints
/// `consumed_ms<TAB>latency_ms` for each (Unix milliseconds; one host, one clock).
fn consume(size: usize) -> common::Outcome {
    let config: GlobusConfig = serde_json::from_str(&std::env::var(CONFIG_VAR)?)?;
    let b = GlobusConnector::builder(config).build()?;
    let mut consumer = StreamConsumer::<Vec<u8>>::new(&Channel::Globus(b), TOPIC)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY")?;
    out.flush()?;
    let mut i = 0;
    while let Some(event) = ps_globus::block_on(consumer.next_event())? {
        let Some(proxy) = event.proxy::<Vec<u8>>()? else {
            break;
        };
        if *proxy.resolve()? != value(i, size) {
            return Err(format!("event {i}: not the bytes published").into());
        }
        let now = chrono::Utc::now().timestamp_millis();
        writeln!(out, "{now}\t{}", now - event.published_ms)?;
        i += 1;
    }
    Ok(())
}
