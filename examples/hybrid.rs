//! Hybrid store benchmark: small objects through Redis, large ones through Globus, one
//! store; against the same workload all through Globus.
//!
//!     cargo run --release --example hybrid -- --small 1000 --large 10 --task-latency-ms 1000
//!
//! Needs `redis-server` on `PATH` (Debian's `redis-server` package; `scripts/test`
//! installs it): the example starts one on a free loopback port, without persistence,
//! and stops it at the end. For each mode it starts the emulator's two sites afresh; a
//! producer here at site A puts the objects one at a time in a mixed order (a large one
//! after every `small / large` small ones), then a second process configured as site B
//! resolves every proxy (64 at a time) and checks every byte.
//!
//! The hybrid store is a `MultiConnector`: child `small` (Redis, objects under
//! `--threshold` bytes, default 1 MiB, priority 1) and child `large` (Globus, the rest).
//! Options: `--small N` (1000) of `--small-size` bytes (4096), `--large N` (10) of
//! `--large-size` bytes (8 MiB), `--task-latency-ms` (1000), `--json` (one line).
//!
//! Reported per mode and class: `put_ms_mean` (one put, at A), `resolve_ms_p50`,
//! `resolve_ms_max` (from B's start to that object resolved and verified), and `ready_s`
//! (B's start to the last object of the class); per mode `put_s`, `resolve_s`, `tasks`
//! and `api_requests` (the emulator's counters, Auth included).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use ps_globus::Store;
use ps_globus::connector::{Connector, MultiConnector, Policy, RedisConfig, RedisConnector};
use ps_globus_sim::TwoSites;
use serde_json::{Value, json};

/// The workload: which objects there are, of which class and size.
#[derive(Clone, Copy)]
struct Workload {
    small: usize,
    large: usize,
    small_size: usize,
    large_size: usize,
    threshold: usize,
}

impl Workload {
    /// Object `i`'s class and size, large ones spread evenly through the small ones.
    fn object(&self, i: usize) -> (&'static str, usize) {
        let every = (self.small + self.large) / self.large.max(1);
        if self.large > 0 && i % every == every - 1 && i / every < self.large {
            ("large", self.large_size)
        } else {
            ("small", self.small_size)
        }
    }

    fn count(&self) -> usize {
        self.small + self.large
    }

    /// The options that describe this workload to a consumer process.
    fn args(&self) -> Vec<String> {
        [
            ("--small", self.small),
            ("--large", self.large),
            ("--small-size", self.small_size),
            ("--large-size", self.large_size),
        ]
        .iter()
        .flat_map(|(name, n)| [name.to_string(), n.to_string()])
        .collect()
    }
}

/// Object `i`'s bytes.
fn value(i: usize, size: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; size];
    if let Some(first) = v.first_mut() {
        *first = (i / 251) as u8;
    }
    v
}

fn arg(args: &[String], name: &str, default: usize) -> Result<usize, Box<dyn std::error::Error>> {
    common::number_arg("hybrid", args, name, default)
}

fn main() -> std::process::ExitCode {
    common::exit_with(run())
}

fn run() -> common::Outcome {
    let args: Vec<String> = std::env::args().collect();
    let workload = Workload {
        small: arg(&args, "--small", 1000)?,
        large: arg(&args, "--large", 10)?,
        small_size: arg(&args, "--small-size", 4096)?,
        large_size: arg(&args, "--large-size", 8 << 20)?,
        threshold: arg(&args, "--threshold", 1 << 20)?,
    };
    if args.iter().any(|a| a == "--consumer") {
        return consume(&workload);
    }
    let latency = arg(&args, "--task-latency-ms", 1000)? as u64;
    let redis = RedisServer::start()?;
    let hybrid = measure(&workload, latency, Some(&redis))?;
    let all_globus = measure(&workload, latency, None)?;
    let report = json!({
        "small": {"objects": workload.small, "size": workload.small_size},
        "large": {"objects": workload.large, "size": workload.large_size},
        "threshold": workload.threshold,
        "task_latency_ms": latency,
        "hybrid": hybrid,
        "all_globus": all_globus,
    });
    if args.iter().any(|a| a == "--json") {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// One mode: puts at A, resolves at B in another process; its report.
fn measure(
    workload: &Workload,
    latency: u64,
    redis: Option<&RedisServer>,
) -> Result<Value, Box<dyn std::error::Error>> {
    let sites = TwoSites::start(latency)?;
    let globus: Arc<dyn Connector> = Arc::new(sites.producer()?);
    let connector: Arc<dyn Connector> = match redis {
        Some(redis) => {
            let small = Policy::default()
                .max_size(workload.threshold as u64 - 1)
                .priority(1);
            let redis: Arc<dyn Connector> = Arc::new(RedisConnector::new(redis.config())?);
            Arc::new(MultiConnector::from_connectors([
                ("small", redis, small),
                ("large", globus, Policy::default()),
            ])?)
        }
        None => globus,
    };
    let name = if redis.is_some() {
        "hybrid"
    } else {
        "all-globus"
    };
    let store = Store::builder(name, connector).build()?;

    let mut put_ms: [Vec<f64>; 2] = Default::default();
    let mut lines = Vec::with_capacity(workload.count());
    let started = Instant::now();
    for i in 0..workload.count() {
        let (class, size) = workload.object(i);
        let data = value(i, size);
        let one = Instant::now();
        let proxy = store.proxy(&data)?;
        put_ms[(class == "large") as usize].push(one.elapsed().as_secs_f64() * 1e3);
        lines.push(format!("{i}\t{}", serde_json::to_string(&proxy)?));
    }
    let put_s = started.elapsed().as_secs_f64();

    let resolve_started = Instant::now();
    let mut consumer = Command::new(std::env::current_exe()?)
        .arg("--consumer")
        .args(workload.args())
        .envs(sites.consumer_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = consumer.stdin.take().ok_or("the consumer has no stdin")?;
    for line in &lines {
        writeln!(stdin, "{line}")?;
    }
    drop(stdin);
    let output = consumer.wait_with_output()?;
    if !output.status.success() {
        return Err(format!("the consumer at site b failed ({})", output.status).into());
    }
    let resolve_s = resolve_started.elapsed().as_secs_f64();
    let mut resolved: [Vec<f64>; 2] = Default::default();
    for line in String::from_utf8(output.stdout)?.lines() {
        if let Some((class, ms)) = line.split_once('\t') {
            resolved[(class == "large") as usize].push(ms.parse()?);
        }
    }
    if resolved[0].len() + resolved[1].len() != workload.count() {
        return Err("the consumer did not resolve every object".into());
    }
    store.close()?;
    let stats = sites.sim.stats();
    let class = |n: usize| {
        let mut ms = resolved[n].clone();
        ms.sort_by(f64::total_cmp);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        json!({
            "put_ms_mean": mean(&put_ms[n]),
            "resolve_ms_p50": ms.get(ms.len() / 2).copied().unwrap_or(0.0),
            "resolve_ms_max": ms.last().copied().unwrap_or(0.0),
            "ready_s": ms.last().copied().unwrap_or(0.0) / 1e3,
        })
    };
    Ok(json!({
        "small": class(0),
        "large": class(1),
        "put_s": put_s,
        "resolve_s": resolve_s,
        "total_s": put_s + resolve_s,
        "tasks": stats.route("POST /v0.10/transfer"),
        "api_requests": stats.api_requests,
    }))
}

/// The consumer at site B: resolves every `index<TAB>proxy` line of its standard input
/// (the demo's consumer: 64 at a time, every byte checked), prints `class<TAB>ms` for each
/// (milliseconds since it started).
fn consume(workload: &Workload) -> common::Outcome {
    let started = Instant::now();
    let mut done = Vec::with_capacity(workload.count());
    ps_globus::block_on(ps_globus_sim::demo::consume(
        std::io::stdin().lock(),
        |i| value(i, workload.object(i).1),
        |i, _| done.push((workload.object(i).0, started.elapsed())),
    ))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (class, elapsed) in done {
        writeln!(out, "{class}\t{}", elapsed.as_secs_f64() * 1e3)?;
    }
    Ok(())
}

/// A throw-away `redis-server` on a free loopback port, stopped on drop.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server ({e}): apt-get install redis-server")
            })?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        for line in stdout.lines() {
            if line?.contains("Ready to accept connections") {
                return Ok(RedisServer { port, child });
            }
        }
        Err("redis-server exited before it was ready".into())
    }

    fn config(&self) -> RedisConfig {
        RedisConfig::new("127.0.0.1", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
