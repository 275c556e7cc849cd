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
//!
//! `--producers P` puts from P producer processes at site A instead of this one (each
//! its 1/P share, all sharing site A's state database: one host); `put_s` is then the
//! longest put loop of any of them (their start-up and output excluded). With it the report adds the peak resident
//! memory of the largest producer and reader (`producer_peak_rss_mb`,
//! `reader_peak_rss_mb`), measured by each process itself (this process also runs the
//! emulator, so its own size says nothing about a producer's). `--producers 0` (the
//! default) puts from this process, as above. `scripts/bench-scale` runs the scale table.
//!
//! `--hosts H` (with `--producers P`) makes H hosts of site A with P producers each, every
//! host its own `PS_GLOBUS_HOST_ID` and state directory: by default each host has its own
//! SQLite state database, as separate machines would; with `--state-url URL`
//! (`postgres://…`) all of them share that one database, as a facility would. The
//! report adds `hosts` and `state`. `scripts/bench-facility` runs both against a
//! throw-away PostgreSQL server:
//!
//!     cargo run --release --example bench_globus -- --hosts 4 --producers 4 --objects 8000 --state-url postgres://…
//!
//! `--no-https` sends every object by Transfer (the store's `https_max_size = 0`): the
//! tables in the README before the HTTPS lane were measured that way. Without it, objects
//! up to 4 MiB go by the collections' HTTPS (see `bench_lane`); the report adds
//! `https_requests`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use ps_globus::Store;
use ps_globus_sim::TwoSites;

fn value(index: usize, size: usize) -> Vec<u8> {
    vec![(index % 251) as u8; size]
}

fn arg(args: &[String], name: &str, default: usize) -> Result<usize, Box<dyn std::error::Error>> {
    common::number_arg("bench_globus", args, name, default)
}

fn main() -> std::process::ExitCode {
    common::exit_with(run())
}

fn run() -> common::Outcome {
    let args: Vec<String> = std::env::args().collect();
    let objects = arg(&args, "--objects", 100)?;
    let size = arg(&args, "--size", 1024)?;
    let latency = arg(&args, "--task-latency-ms", 1000)? as u64;
    let stream = args.iter().any(|a| a == "--stream");
    if args.iter().any(|a| a == "--consumer") && stream {
        return ps_globus::block_on(consume_streaming(objects, size));
    }
    if args.iter().any(|a| a == "--consumer") {
        let stdin = std::io::stdin();
        let (n, _) = ps_globus::block_on(ps_globus_sim::demo::consume(
            stdin.lock(),
            |i| value(i, size),
            |_, _| {},
        ))?;
        if n != objects {
            return Err(format!("only {n} of {objects} objects resolved").into());
        }
        println!("rss\t{}", peak_rss_kb());
        return Ok(());
    }
    if args.iter().any(|a| a == "--producer") {
        return produce(arg(&args, "--first", 0)?, objects, size);
    }

    let mut sites = TwoSites::start(latency)?;
    if args.iter().any(|a| a == "--no-https") {
        sites.config.https_max_size = Some(0);
    }
    let producers = arg(&args, "--producers", 0)?;
    let hosts = arg(&args, "--hosts", 1)?.max(1);
    let state_url = common::text_arg("bench_globus", &args, "--state-url")?;
    if (hosts > 1 || state_url.is_some()) && producers == 0 {
        return Err(common::usage(
            "bench_globus",
            "--hosts and --state-url need --producers",
        ));
    }
    if stream && producers == 0 {
        return Err(common::usage("bench_globus", "--stream needs --producers"));
    }
    let started = Instant::now();
    let mut first_put_spread = None;
    // With --stream, one reader at site B runs from the start: each producer's proxies
    // go to it as that producer ends, and it reports when each object was verified.
    let mut streaming = None;
    if stream {
        let mut consumer = Command::new(std::env::current_exe()?)
            .args(["--consumer", "--stream", "--objects", &objects.to_string()])
            .args(["--size", &size.to_string()])
            .envs(sites.consumer_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = consumer.stdin.take().ok_or("the consumer has no stdin")?;
        streaming = Some((
            consumer,
            std::sync::Arc::new(std::sync::Mutex::new(Some(stdin))),
        ));
    }
    // `put_s`: the put loop alone; with producer processes, the longest of theirs (their
    // start-up is not a put).
    let (lines, put_s, producer_rss) = if producers == 0 {
        let store = Store::builder("bench-globus", sites.producer()?).build()?;
        let (lines, put_s, _) = put_objects(&store, 0..objects, size)?;
        (lines, put_s, None)
    } else {
        let fleet = Fleet {
            hosts,
            producers,
            state_url: state_url.as_deref(),
        };
        let forward = streaming.as_ref().map(|(_, stdin)| stdin.clone());
        let produced = spawn_producers(&sites, &fleet, objects, size, forward)?;
        first_put_spread = Some(produced.first_put_spread);
        if let Some((consumer, stdin)) = streaming {
            stdin.lock().map_err(|_| "stdin poisoned")?.take();
            return report_streamed(StreamRun {
                args: &args,
                sites: &sites,
                consumer,
                produced,
                fleet: &fleet,
                started,
                task_latency_ms: latency,
                size,
            });
        }
        (produced.lines, produced.put_s, Some(produced.rss_kb))
    };

    let readers = arg(&args, "--readers", 1)?.max(1);
    let resolve_started = Instant::now();
    // Each reader gets every `readers`-th object; all share site B's state database.
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); readers];
    for (i, line) in lines.into_iter().enumerate() {
        shares[i % readers].push(line);
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
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdin = consumer.stdin.take().ok_or("the consumer has no stdin")?;
        for line in share {
            writeln!(stdin, "{line}")?;
        }
        consumers.push(consumer);
    }
    let mut reader_rss = 0;
    for consumer in consumers {
        let output = consumer.wait_with_output()?;
        if !output.status.success() {
            return Err(format!("a consumer at site b failed ({})", output.status).into());
        }
        reader_rss = reader_rss.max(reported(&output.stdout, "rss").unwrap_or(0.0) as u64);
    }
    let resolve_s = resolve_started.elapsed().as_secs_f64();
    let stats = sites.sim.stats();
    let transfer_requests = stats.transfer_requests();
    let mut report = serde_json::json!({
        "objects": objects,
        "size": size,
        "task_latency_ms": latency,
        "readers": readers,
        "put_s": put_s,
        "resolve_s": resolve_s,
        "total_s": put_s + resolve_s,
        "wall_s": started.elapsed().as_secs_f64(),
        "tasks": stats.route("POST /v0.10/transfer"),
        "https_requests": stats.https_requests,
        "api_requests": stats.api_requests,
        "transfer_requests": transfer_requests,
        "responses_429": stats.responses_429,
    });
    if let Some(producer_rss) = producer_rss {
        report["producers"] = producers.into();
        let (starts, returns) = first_put_spread.unwrap_or_default();
        report["first_put_start_spread_s"] = starts.into();
        report["first_put_spread_s"] = returns.into();
        report["hosts"] = hosts.into();
        report["state"] = if state_url.is_some() {
            "one PostgreSQL database"
        } else {
            "one SQLite database per host"
        }
        .into();
        report["producer_peak_rss_mb"] = (producer_rss as f64 / 1024.0).into();
        report["reader_peak_rss_mb"] = (reader_rss as f64 / 1024.0).into();
    }
    if args.iter().any(|a| a == "--json") {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// A producer process: puts objects `first..first + objects` at site A (the store
/// configuration from `PS_GLOBUS_BENCH_CONFIG`, the site and identity from the
/// environment), prints one `index<TAB>proxy` line per object, closes the store (so
/// that everything is submitted), then prints the time of its put loop and its peak
/// memory.
fn produce(first: usize, objects: usize, size: usize) -> common::Outcome {
    let config: ps_globus::connector::GlobusConfig =
        serde_json::from_str(&std::env::var("PS_GLOBUS_BENCH_CONFIG")?)?;
    let connector = ps_globus::connector::GlobusConnector::builder(config).build()?;
    // Opening the state database and starting the transfer manager (on first use) is
    // start-up, which the barrier is there to keep out of "at once": 64 processes
    // connecting to one PostgreSQL server on 2 cores took 0.4-2.2 s each.
    ps_globus::block_on(connector.transfer_manager())?;
    let store = Store::builder("bench-globus", connector).build()?;
    // The barrier: every producer is built before any puts.
    println!("ready");
    std::io::stdout().flush()?;
    std::io::stdin().read_line(&mut String::new())?;
    let start = epoch_s();
    let (lines, put_s, put_times) = put_objects(&store, first..first + objects, size)?;
    let first_put = put_times.first().map(|(_, at)| *at);
    store.close()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in lines {
        writeln!(out, "{line}")?;
    }
    for (i, at) in put_times {
        writeln!(out, "put\t{i}\t{at}")?;
    }
    writeln!(out, "time\t{put_s}")?;
    if let Some(at) = first_put {
        writeln!(out, "start\t{start}")?;
        writeln!(out, "first\t{at}")?;
    }
    writeln!(out, "rss\t{}", peak_rss_kb())?;
    Ok(())
}

/// A put loop's `index<TAB>proxy` lines, its time, and when each put returned.
type PutLoop = (Vec<String>, f64, Vec<(usize, f64)>);

/// Seconds since the epoch: comparable across processes.
fn epoch_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Puts the objects `range` one at a time; returns their `index<TAB>proxy` lines, the
/// time of the put loop alone (the proxies are written out after it), and when each put
/// returned ([`epoch_s`]).
fn put_objects(
    store: &Store,
    range: std::ops::Range<usize>,
    size: usize,
) -> Result<PutLoop, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut keys = Vec::with_capacity(range.len());
    let mut put_times = Vec::with_capacity(range.len());
    for i in range.clone() {
        keys.push(store.put(&value(i, size))?);
        put_times.push((i, epoch_s()));
    }
    let put_s = started.elapsed().as_secs_f64();
    let mut lines = Vec::with_capacity(keys.len());
    for (i, key) in range.zip(keys) {
        let proxy = store.proxy_from_key::<Vec<u8>>(key);
        lines.push(format!("{i}\t{}", serde_json::to_string(&proxy)?));
    }
    Ok((lines, put_s, put_times))
}

/// What the producer processes made.
struct Produced {
    /// Their proxy lines, in object order.
    lines: Vec<String>,
    /// When each object's put returned ([`epoch_s`]).
    put_times: Vec<(usize, f64)>,
    /// The largest producer's peak memory (KiB).
    rss_kb: u64,
    /// The longest put loop (seconds).
    put_s: f64,
    /// From the first producer's first put to the last producer's (seconds): their
    /// starts (what the barrier controls) and their returns (what the puts then took).
    first_put_spread: (f64, f64),
}

/// How far apart `times` are (seconds; 0 for none).
fn width(times: &[f64]) -> f64 {
    let (min, max) = times
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    (max - min).max(0.0)
}

/// The producer processes of site A: `hosts` hosts of `producers` each, sharing the
/// state database at `state_url`, else each host its own.
struct Fleet<'a> {
    hosts: usize,
    producers: usize,
    state_url: Option<&'a str>,
}

/// Runs the fleet's producer processes over `objects` objects.
fn spawn_producers(
    sites: &TwoSites,
    fleet: &Fleet<'_>,
    objects: usize,
    size: usize,
    forward: Option<Forward>,
) -> Result<Produced, Box<dyn std::error::Error>> {
    let config = serde_json::to_string(&sites.config)?;
    let mut children = Vec::new();
    let mut first = 0;
    let processes = fleet.hosts * fleet.producers;
    for p in 0..processes {
        let share = objects / processes + usize::from(p < objects % processes);
        let host = format!("host-{}", p / fleet.producers);
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["--producer", "--first", &first.to_string()])
            .args(["--objects", &share.to_string(), "--size", &size.to_string()])
            .envs(sites.env("a"))
            .env("PS_GLOBUS_BENCH_CONFIG", &config);
        if fleet.hosts > 1 || fleet.state_url.is_some() {
            let home = sites.home("a").join(&host);
            command
                .env("PS_GLOBUS_HOST_ID", &host)
                .env("PS_GLOBUS_HOME", home);
        }
        if let Some(url) = fleet.state_url {
            command.env("PS_GLOBUS_STATE_URL", url);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        // Released together below, once every producer is built.
        let mut ready = [0u8; 6];
        let stdout = child.stdout.as_mut().ok_or("a producer without stdout")?;
        std::io::Read::read_exact(stdout, &mut ready)?;
        if &ready != b"ready\n" {
            return Err(format!("a producer at site a said {ready:?}, not ready").into());
        }
        children.push(child);
        first += share;
    }
    for child in &mut children {
        let mut go = child.stdin.take().ok_or("a producer without stdin")?;
        go.write_all(b"go\n")?;
    }
    // Each child's output is drained on its own thread: one waiting on a full pipe
    // would otherwise wait for the children before it to finish.
    let outputs: Vec<_> = children
        .into_iter()
        .map(|child| {
            let forward = forward.clone();
            std::thread::spawn(move || {
                let output = child.wait_with_output()?;
                if let Some(stdin) = forward
                    && let Some(stdin) = stdin.lock().expect("stdin poisoned").as_mut()
                {
                    for line in object_lines(&output.stdout) {
                        writeln!(stdin, "{line}")?;
                    }
                    stdin.flush()?;
                }
                Ok::<_, std::io::Error>(output)
            })
        })
        .collect();
    let mut lines = Vec::with_capacity(objects);
    let mut put_times = Vec::with_capacity(objects);
    let (mut rss, mut put_s) = (0, 0f64);
    let (mut starts, mut firsts) = (Vec::new(), Vec::new());
    for output in outputs {
        let output = output
            .join()
            .map_err(|_| "a producer's reader panicked")??;
        if !output.status.success() {
            return Err(format!("a producer at site a failed ({})", output.status).into());
        }
        rss = rss.max(reported(&output.stdout, "rss").unwrap_or(0.0) as u64);
        put_s = put_s.max(reported(&output.stdout, "time").unwrap_or(0.0));
        starts.extend(reported(&output.stdout, "start"));
        firsts.extend(reported(&output.stdout, "first"));
        put_times.extend(timed(&output.stdout, "put"));
        lines.extend(object_lines(&output.stdout));
    }
    lines.sort_by_key(|l| l.split('\t').next().and_then(|i| i.parse::<usize>().ok()));
    Ok(Produced {
        lines,
        put_times,
        rss_kb: rss,
        put_s,
        first_put_spread: (width(&starts), width(&firsts)),
    })
}

/// This process's peak resident memory so far, in KiB.
fn peak_rss_kb() -> u64 {
    // Linux's high-water mark of the resident set, `VmHWM:    1234 kB`.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The number on the `<name><TAB>number` line a child printed.
fn reported(stdout: &[u8], name: &str) -> Option<f64> {
    String::from_utf8_lossy(stdout).lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix('\t')
            .and_then(|v| v.parse().ok())
    })
}

/// The `index<TAB>proxy` lines a producer printed.
fn object_lines(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| {
            l.split('\t')
                .next()
                .is_some_and(|i| i.parse::<usize>().is_ok())
        })
        .map(String::from)
        .collect()
}

/// The `<name><TAB>index<TAB>seconds` lines a child printed.
fn timed(stdout: &[u8], name: &str) -> Vec<(usize, f64)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let mut fields = l.strip_prefix(name)?.strip_prefix('\t')?.split('\t');
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect()
}

/// Where producers' proxy lines go as each producer ends (the streaming reader's stdin;
/// `None` once closed).
type Forward = std::sync::Arc<std::sync::Mutex<Option<std::process::ChildStdin>>>;

/// The streaming reader (`--consumer --stream`): resolves and verifies each proxy line
/// as it arrives, 64 at a time, and prints `got<TAB>index<TAB>seconds` for each.
async fn consume_streaming(objects: usize, size: usize) -> common::Outcome {
    let (lines, mut incoming) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut work = tokio::task::JoinSet::new();
    while let Some(line) = incoming.recv().await {
        let Some((index, json)) = line.split_once('\t') else {
            continue;
        };
        let index: usize = index.parse()?;
        let proxy: ps_globus::proxy::Proxy<Vec<u8>> = serde_json::from_str(json)?;
        let permit = limit.clone().acquire_owned().await?;
        work.spawn(async move {
            let value = proxy.resolve_async().await.map_err(|e| e.to_string())?;
            drop(permit);
            if *value != self::value(index, size) {
                return Err(format!("object {index} arrived with other bytes"));
            }
            Ok((index, epoch_s()))
        });
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut count = 0;
    while let Some(done) = work.join_next().await {
        let (index, at) = done??;
        writeln!(out, "got\t{index}\t{at}")?;
        count += 1;
    }
    if count != objects {
        return Err(format!("only {count} of {objects} objects resolved").into());
    }
    writeln!(out, "rss\t{}", peak_rss_kb())?;
    Ok(())
}

/// A `--stream` run, its producers done.
struct StreamRun<'a> {
    args: &'a [String],
    sites: &'a TwoSites,
    consumer: std::process::Child,
    produced: Produced,
    fleet: &'a Fleet<'a>,
    started: Instant,
    task_latency_ms: u64,
    size: usize,
}

/// Waits for the streaming reader and prints the report of a `--stream` run: the
/// objects' resolve latency (put returned at A → verified at B) p50, p95 and max besides
/// the usual counts.
fn report_streamed(run: StreamRun<'_>) -> common::Outcome {
    let output = run.consumer.wait_with_output()?;
    if !output.status.success() {
        return Err(format!("the reader at site b failed ({})", output.status).into());
    }
    let put_at: std::collections::HashMap<usize, f64> =
        run.produced.put_times.iter().copied().collect();
    let mut latencies: Vec<f64> = timed(&output.stdout, "got")
        .into_iter()
        .filter_map(|(i, at)| Some((at - put_at.get(&i)?) * 1000.0))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let objects = latencies.len();
    let at = |q: f64| -> f64 {
        let i = ((objects as f64 * q).ceil() as usize).clamp(1, objects.max(1)) - 1;
        latencies
            .get(i)
            .map_or(0.0, |ms| (ms * 10.0).round() / 10.0)
    };
    let stats = run.sites.sim.stats();
    let report = serde_json::json!({
        "objects": objects,
        "size": run.size,
        "task_latency_ms": run.task_latency_ms,
        "hosts": run.fleet.hosts,
        "producers": run.fleet.producers,
        "state": if run.fleet.state_url.is_some() { "one PostgreSQL database" } else { "one SQLite database per host" },
        "first_put_start_spread_s": run.produced.first_put_spread.0,
        "first_put_spread_s": run.produced.first_put_spread.1,
        "put_s": run.produced.put_s,
        "resolve_ms_p50": at(0.50),
        "resolve_ms_p95": at(0.95),
        "resolve_ms_max": at(1.0),
        "wall_s": run.started.elapsed().as_secs_f64(),
        "tasks": stats.route("POST /v0.10/transfer"),
        "api_requests": stats.api_requests,
        "transfer_requests": stats.transfer_requests(),
        "producer_peak_rss_mb": run.produced.rss_kb as f64 / 1024.0,
        "reader_peak_rss_mb": reported(&output.stdout, "rss").unwrap_or(0.0) / 1024.0,
    });
    if run.args.iter().any(|a| a == "--json") {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
