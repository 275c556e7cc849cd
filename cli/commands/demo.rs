//! `demo`: the product end to end on the built-in emulator. A producer here (site a)
//! proxies objects; a consumer process (site b, `demo-consumer`) resolves and verifies
//! them; Globus (emulated) moves the bytes.

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar};
use ps_globus::Store;
use ps_globus_sim::TwoSites;

use super::CommandError;
use crate::CliResult;
use crate::output::demo_bar;

/// `demo` options.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// How many objects to proxy.
    #[arg(long, default_value_t = 100)]
    objects: usize,
    /// The largest object, in bytes (sizes are mixed, from 1 KiB up; every tenth is
    /// over half this, and above the HTTPS lane's 4 MiB goes by Transfer).
    #[arg(long, default_value_t = 8 << 20)]
    max_size: usize,
    /// Globus's per-task overhead on the emulator, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    task_latency_ms: u64,
}

/// `demo`.
pub fn demo(args: DemoArgs) -> CliResult {
    let started = Instant::now();
    let sites = TwoSites::start(args.task_latency_ms)?;
    eprintln!(
        "ps-globus demo: emulator at {} with sites a and b (task latency {} ms)",
        sites.sim.transfer_url(),
        args.task_latency_ms
    );
    let store = Store::builder("ps-globus-demo", sites.producer()?).build()?;
    let mut consumer = Command::new(std::env::current_exe()?)
        .args(["demo-consumer", "--max-size", &args.max_size.to_string()])
        .envs(sites.consumer_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let bars = MultiProgress::new();
    let put_bar = demo_bar(&bars, "proxied at site a", args.objects as u64);
    let got_bar = demo_bar(&bars, "resolved at site b", args.objects as u64);
    let reader = follow_consumer(consumer.stdout.take().expect("piped"), got_bar.clone());
    let bytes = produce(&store, &mut consumer, &args, &put_bar)?;
    put_bar.finish_with_message("done");
    let status = consumer.wait()?;
    let summary = reader
        .join()
        .map_err(|_| "the demo's reader thread panicked")?;
    got_bar.finish_with_message("verified");
    if !status.success() {
        return Err(format!("the consumer at site b failed ({status})").into());
    }
    let summary = summary.ok_or("the consumer at site b reported no summary")?;
    let stats = sites.sim.stats();
    println!(
        "{} objects ({:.1} MiB) proxied at site a and resolved, verified, at site b by another process",
        summary["objects"],
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "Globus tasks: {}   HTTPS PUTs: {}   API requests: {}   wall time: {:.2} s",
        stats.route("POST /v0.10/transfer"),
        stats.route("HTTPS PUT"),
        stats.api_requests,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Proxies every object and sends each proxy to the consumer; returns the bytes put.
fn produce(
    store: &Store,
    consumer: &mut Child,
    args: &DemoArgs,
    bar: &ProgressBar,
) -> Result<u64, CommandError> {
    let mut stdin = consumer.stdin.take().expect("piped");
    let mut bytes = 0u64;
    for index in 0..args.objects {
        let object = ps_globus_sim::demo::object(index, args.max_size);
        bytes += object.len() as u64;
        let proxy = store.proxy(&object)?;
        writeln!(stdin, "{index}\t{}", serde_json::to_string(&proxy)?)?;
        bar.inc(1);
    }
    Ok(bytes)
}

/// Counts the consumer's `{"resolved": ...}` lines on `bar`; the thread returns its
/// closing summary (`{"objects": ..., "bytes": ...}`).
fn follow_consumer(stdout: ChildStdout, bar: ProgressBar) -> JoinHandle<Option<serde_json::Value>> {
    std::thread::spawn(move || {
        let mut summary = None;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let doc: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if doc["resolved"].is_u64() {
                bar.inc(1);
            } else if doc["objects"].is_u64() {
                summary = Some(doc);
            }
        }
        summary
    })
}

/// `demo-consumer`: resolves the proxies on stdin, one JSON line per object on stdout.
pub fn consumer(max_size: usize) -> CliResult {
    let stdin = std::io::stdin();
    let (objects, bytes) = ps_globus::block_on(ps_globus_sim::demo::consume(
        stdin.lock(),
        |index| ps_globus_sim::demo::object(index, max_size),
        |index, len| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{{\"resolved\": {index}, \"bytes\": {len}}}");
            let _ = out.flush();
        },
    ))?;
    println!("{{\"objects\": {objects}, \"bytes\": {bytes}}}");
    Ok(())
}
