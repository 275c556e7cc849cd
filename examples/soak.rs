//! A chaos soak: producers at site `a` and consumers at site `b` pass objects through the
//! emulator while faults are injected and processes are killed, then the invariants are
//! checked. `scripts/soak` runs it (CI: one minute on the debug binaries).
//!
//!     cargo run --example soak -- --minutes 5 [--seed N] [--producers 3] [--consumers 2]
//!
//! * The emulator (`ps-globus sim serve --state FILE`, the binary beside this example or
//!   `PS_GLOBUS_BIN`) answers some requests 503 or 429 and cuts some connections; some
//!   files hit a full destination a few times before it clears; objects put in the
//!   `doomed` store hit a fatal, per-object fault (the source is reported missing).
//! * Every few seconds one producer, one consumer or the emulator itself is killed with
//!   SIGKILL and started again (the emulator on the same port, with its state file).
//! * The `soak` store's objects take the HTTPS lane (PUTs cut off by the kills fall back
//!   to Transfer, a killed producer's by the next manager); the doomed store's go by
//!   Transfer, where their fault is.
//! * Producers record each key once `put` returned it (the promise made to a reader);
//!   consumers resolve every recorded key at site `b` and record what they got.
//!
//! At the end it prints the counts and fails on any broken invariant: every object not
//! doomed is verified at `b` with the right bytes; every doomed one failed with its own
//! reason; no wrong bytes; no two Globus tasks for one batch; no process left waiting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ps_globus::Error;
use ps_globus::auth::StaticTokenAuthorizer;
use ps_globus::config::SiteConfig;
use ps_globus::connector::{Connector, GlobusConfig, GlobusConnector, Key, PutOptions};
use ps_globus::error::TransferFailure;

const TOKEN: &str = "soak-static-token";
/// The store whose objects hit a fatal fault (see the emulator's configuration).
const DOOMED: &str = "soak-doomed";
const STORE: &str = "soak";
/// The code a doomed object must fail with.
const DOOMED_CODE: &str = "FILE_NOT_FOUND";
/// How long the wind-down may take before a process counts as left waiting.
const WIND_DOWN: Duration = Duration::from_secs(180);

type Outcome = Result<(), Box<dyn std::error::Error>>;

fn main() -> Outcome {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let work = flag("--work").map(PathBuf::from);
    match flag("--role").as_deref() {
        Some("producer") => producer(&work.ok_or("--work")?, &flag("--id").ok_or("--id")?),
        Some("drain") => drain(&work.ok_or("--work")?),
        Some("consumer") => consumer(
            &work.ok_or("--work")?,
            flag("--id").ok_or("--id")?.parse()?,
            flag("--of").ok_or("--of")?.parse()?,
        ),
        Some(other) => Err(format!("unknown role {other}").into()),
        None => drive(Plan {
            minutes: flag("--minutes").map_or(Ok(1.0), |m| m.parse())?,
            seed: flag("--seed").map_or(Ok(1), |s| s.parse())?,
            producers: flag("--producers").map_or(Ok(3), |n| n.parse())?,
            consumers: flag("--consumers").map_or(Ok(2), |n| n.parse())?,
            work,
        }),
    }
}

struct Plan {
    minutes: f64,
    seed: u64,
    producers: usize,
    consumers: usize,
    work: Option<PathBuf>,
}

/// A small seeded generator (xorshift): the chaos replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The bytes of object `index` of producer `producer`: anyone can recompute them.
fn content(producer: &str, index: u64) -> Vec<u8> {
    let mut rng =
        Rng(0x9E37_79B9_7F4A_7C15 ^ index.wrapping_mul(0x100_0000_01B3) ^ producer.len() as u64);
    for b in producer.bytes() {
        rng.0 = rng.0.rotate_left(8) ^ u64::from(b);
    }
    rng.0 |= 1;
    let size = 1 + rng.below(48 * 1024) as usize;
    (0..size).map(|_| rng.next() as u8).collect()
}

/// Whether object `index` of a producer goes to the doomed store (about one in eight).
fn doomed(index: u64) -> bool {
    index % 8 == 5
}

// ---- the driver ----------------------------------------------------------------------

fn drive(plan: Plan) -> Outcome {
    let scratch;
    let work = match &plan.work {
        Some(dir) => dir.clone(),
        None => {
            scratch = tempfile::tempdir()?;
            scratch.path().to_path_buf()
        }
    };
    for dir in ["a", "b", "home-a", "home-b", "ledger", "outcomes", "logs"] {
        std::fs::create_dir_all(work.join(dir))?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(work.join("sim.toml"), sim_config(&work, port, plan.seed))?;
    let mut rng = Rng(plan.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let bin = ps_globus_bin()?;
    let mut emulator = start_emulator(&bin, &work, 0)?;
    std::fs::write(
        work.join("sites.json"),
        serde_json::to_string(&sites(&work, port))?,
    )?;
    let me = std::env::current_exe()?;
    let spawn = |role: &str, id: &str, of: usize, life: u32| -> std::io::Result<Child> {
        let log = std::fs::File::create(work.join(format!("logs/{role}-{id}-{life}.log")))?;
        Command::new(&me)
            .args(["--role", role, "--id", id, "--of", &of.to_string()])
            .arg("--work")
            .arg(&work)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    };
    let names = |n: usize, prefix: &str| (0..n).map(|i| format!("{prefix}{i}")).collect();
    let producer_ids: Vec<String> = names(plan.producers, "p");
    let consumer_ids: Vec<String> = names(plan.consumers, "");
    let mut lives: HashMap<String, u32> = HashMap::new();
    let mut producers: Vec<Child> = producer_ids
        .iter()
        .map(|id| spawn("producer", id, 0, 0))
        .collect::<std::io::Result<_>>()?;
    let mut consumers: Vec<Child> = consumer_ids
        .iter()
        .map(|id| spawn("consumer", id, plan.consumers, 0))
        .collect::<std::io::Result<_>>()?;

    let mut kills: BTreeMap<&str, u32> = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs_f64(plan.minutes * 60.0);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1500 + rng.below(2500)));
        let (kind, index) = match rng.below(10) {
            0..=3 => ("producer", rng.below(producers.len() as u64) as usize),
            4..=7 => ("consumer", rng.below(consumers.len() as u64) as usize),
            _ => ("emulator", 0),
        };
        *kills.entry(kind).or_default() += 1;
        let life = lives.entry(format!("{kind}{index}")).or_default();
        *life += 1;
        match kind {
            "producer" => {
                kill(&mut producers[index]);
                producers[index] = spawn("producer", &producer_ids[index], 0, *life)?;
            }
            "consumer" => {
                kill(&mut consumers[index]);
                consumers[index] = spawn("consumer", &consumer_ids[index], plan.consumers, *life)?;
            }
            _ => {
                kill(&mut emulator);
                emulator = start_emulator(&bin, &work, *life)?;
            }
        }
    }

    // Wind down: producers stop putting and exit (submitting what they hold), then the
    // consumers finish every recorded key and exit.
    std::fs::write(work.join("stop"), b"")?;
    let deadline = Instant::now() + WIND_DOWN;
    let mut left_waiting = wait_all(&mut producers, deadline);
    // Producers that exit hand what is still waiting for admission to the next process
    // using their state database: here, one that does only that.
    let mut drainer = vec![spawn("drain", "0", 0, 0)?];
    left_waiting += wait_all(&mut drainer, deadline);
    std::fs::write(work.join("producers-done"), b"")?;
    left_waiting += wait_all(&mut consumers, deadline);
    let duplicates = duplicate_tasks(port)?;
    kill(&mut emulator);

    let report = check(&work)?;
    let kills: Vec<String> = kills.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "soak: {} objects in {:.1} min (seed {}); killed: {}",
        report.objects,
        plan.minutes,
        plan.seed,
        kills.join(", ")
    );
    println!(
        "soak: verified {} | failed with their reason {} | wrong bytes {} | \
         duplicate Globus tasks {duplicates} | processes left waiting {left_waiting}",
        report.verified, report.failed_as_doomed, report.wrong_bytes
    );
    for problem in &report.problems {
        println!("soak: PROBLEM {problem}");
    }
    let broken = !report.problems.is_empty()
        || report.wrong_bytes > 0
        || duplicates > 0
        || left_waiting > 0
        || report.verified == 0;
    if broken {
        println!("soak: FAILED (work directory {})", work.display());
        if plan.work.is_none() {
            // Keep the evidence.
            let kept = std::env::temp_dir().join(format!("ps-globus-soak-{}", std::process::id()));
            let _ = Command::new("cp").arg("-a").arg(&work).arg(&kept).status();
            println!("soak: logs kept in {}", kept.display());
        }
        return Err("invariants broken".into());
    }
    println!("soak: ok");
    Ok(())
}

fn ps_globus_bin() -> std::io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PS_GLOBUS_BIN") {
        return Ok(bin.into());
    }
    // target/<profile>/examples/soak → target/<profile>/ps-globus
    let me = std::env::current_exe()?;
    Ok(me
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("ps-globus"))
        .unwrap_or_else(|| "ps-globus".into()))
}

fn sim_config(work: &Path, port: u16, seed: u64) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
static_token = "{TOKEN}"
seed = {seed}
fail_rate = 0.03
task_latency_ms = 50
fault_retry_ms = 100
state_file = "{state}"

[collections.a]
root = "{a}"
[collections.b]
root = "{b}"

# Fatal for each doomed object: reported missing, so skipped with its own reason.
[[faults]]
kind = "file_not_found"
path = "/{DOOMED}/*"

# Recoverable: a full destination for some files, cleared after a few looks.
[[faults]]
kind = "quota_exceeded"
path = "/{STORE}/*[0-3]"
count = 2

[[faults]]
kind = "http_429"
probability = 0.02

[[faults]]
kind = "connection_reset"
probability = 0.01
"#,
        state = work.join("sim-state.json").display(),
        a = work.join("a").display(),
        b = work.join("b").display(),
    )
}

fn start_emulator(bin: &Path, work: &Path, life: u32) -> std::io::Result<Child> {
    let log = std::fs::File::create(work.join(format!("logs/emulator-{life}.log")))?;
    let mut child = Command::new(bin)
        .args(["sim", "serve", "--config"])
        .arg(work.join("sim.toml"))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    // Serving once it prints its line (the port may take a moment to be free again).
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    if line.trim().is_empty() {
        let _ = child.wait();
        return Err(std::io::Error::other(format!(
            "the emulator did not start: see {}",
            work.join(format!("logs/emulator-{life}.log")).display()
        )));
    }
    Ok(child)
}

fn sites(work: &Path, port: u16) -> GlobusConfig {
    let site = |name: &str| {
        let mut built = SiteConfig::default();
        built.collection = ps_globus_sim::collection_id(name);
        built.collection_path = "/".into();
        built.local_path = work.join(name);
        built.host_regex = None;
        built
    };
    {
        let mut built = GlobusConfig::default();
        built.store_dir = STORE.into();
        built.sites = [("a".to_string(), site("a")), ("b".to_string(), site("b"))].into();
        built.destinations = None;
        built.pull_on_demand = false;
        built.wait_timeout_s = Some(150);
        built.transfer_url = Some(format!("http://127.0.0.1:{port}/"));
        built
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

/// Waits for every child until `deadline`; returns how many were still running (and
/// kills them).
fn wait_all(children: &mut [Child], deadline: Instant) -> usize {
    let mut left = 0;
    for child in children {
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    left += 1;
                    kill(child);
                    break;
                }
            }
        }
    }
    left
}

/// Labels the emulator ran more than one task for (a batch submitted twice).
fn duplicate_tasks(port: u16) -> Result<usize, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // reqwest is built without a default TLS provider (see Cargo.toml).
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let mut labels: HashMap<String, usize> = HashMap::new();
        let mut offset = 0;
        loop {
            let url = format!(
                "http://127.0.0.1:{port}/v0.10/task_list?limit=1000&offset={offset}&filter=type:TRANSFER"
            );
            let page: serde_json::Value = loop {
                // The emulator injects 503s and resets: ask again.
                match http.get(&url).bearer_auth(TOKEN).send().await {
                    Ok(r) if r.status().is_success() => break r.json().await?,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            let tasks = page["DATA"].as_array().cloned().unwrap_or_default();
            for task in &tasks {
                let label = task["label"].as_str().unwrap_or_default().to_owned();
                *labels.entry(label).or_default() += 1;
            }
            offset += tasks.len();
            if tasks.is_empty() || offset >= page["total"].as_u64().unwrap_or(0) as usize {
                break;
            }
        }
        Ok(labels.values().filter(|n| **n > 1).count())
    })
}

struct Report {
    objects: usize,
    verified: usize,
    failed_as_doomed: usize,
    wrong_bytes: usize,
    problems: Vec<String>,
}

/// Reads what producers promised and what consumers got, and judges every object.
fn check(work: &Path) -> Result<Report, Box<dyn std::error::Error>> {
    let promised = ledger(work)?;
    let mut got: HashMap<String, String> = HashMap::new();
    for entry in std::fs::read_dir(work.join("outcomes"))? {
        for line in complete_lines(&entry?.path())? {
            if let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) {
                got.insert(
                    record["key"].as_str().unwrap_or_default().to_owned(),
                    record["got"].as_str().unwrap_or_default().to_owned(),
                );
            }
        }
    }
    let mut report = Report {
        objects: promised.len(),
        verified: 0,
        failed_as_doomed: 0,
        wrong_bytes: 0,
        problems: Vec::new(),
    };
    for entry in &promised {
        let outcome = got.get(&entry.key).map(String::as_str);
        let what = format!("{}#{} ({})", entry.producer, entry.index, entry.key_id);
        match (entry.doomed, outcome) {
            (_, Some("wrong bytes")) => report.wrong_bytes += 1,
            (false, Some("ok")) => report.verified += 1,
            (true, Some(o)) if o == format!("failed {DOOMED_CODE}") => report.failed_as_doomed += 1,
            (_, Some(o)) => report.problems.push(format!("{what}: {o}")),
            (_, None) => report.problems.push(format!("{what}: never resolved")),
        }
    }
    Ok(report)
}

struct Promise {
    producer: String,
    index: u64,
    doomed: bool,
    key: String,
    key_id: String,
}

fn ledger(work: &Path) -> Result<Vec<Promise>, Box<dyn std::error::Error>> {
    let mut promised = Vec::new();
    for entry in std::fs::read_dir(work.join("ledger"))? {
        for line in complete_lines(&entry?.path())? {
            let record: serde_json::Value = serde_json::from_str(&line)?;
            let key = record["key"].as_str().unwrap_or_default().to_owned();
            promised.push(Promise {
                producer: record["producer"].as_str().unwrap_or_default().to_owned(),
                index: record["index"].as_u64().unwrap_or_default(),
                doomed: record["doomed"].as_bool().unwrap_or_default(),
                key_id: key.parse::<Key>()?.id().to_owned(),
                key,
            });
        }
    }
    Ok(promised)
}

/// The lines of a record file that were written whole (a killed writer may leave half
/// of its last line).
fn complete_lines(path: &Path) -> std::io::Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    Ok(whole.lines().map(str::to_owned).collect())
}

/// Cuts a record file back to its last whole line, before appending to it again.
fn append_to(path: &Path) -> std::io::Result<std::fs::File> {
    let whole = complete_lines(path)?;
    let mut text = whole.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text)?;
    std::fs::OpenOptions::new().append(true).open(path)
}

fn connector(
    work: &Path,
    site: &str,
    store_dir: &str,
    home: &str,
) -> Result<GlobusConnector, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(work.join("sites.json"))?;
    let mut config: GlobusConfig = serde_json::from_str(&text)?;
    config.store_dir = store_dir.into();
    if store_dir == DOOMED {
        // Its fatal fault is a Transfer task's: its objects go by Transfer, where the
        // other store's small ones take the HTTPS lane (and its fallbacks) under chaos.
        config.https_max_size = Some(0);
    }
    // The static token serves Transfer and every collection's HTTPS (the lane).
    let token = Arc::new(StaticTokenAuthorizer::new(TOKEN));
    Ok(GlobusConnector::builder(config)
        .site(site)
        .authorizer(token.clone())
        .https_authorizer(token)
        .home(work.join(home))
        .build()?)
}

// ---- a producer ----------------------------------------------------------------------

/// Puts objects at site `a` until the driver says stop, recording each key once `put`
/// returned it; a restarted producer goes on from its last recorded object.
fn producer(work: &Path, id: &str) -> Outcome {
    let path = work.join(format!("ledger/{id}.jsonl"));
    let mut next = complete_lines(&path)?.len() as u64;
    let mut ledger = append_to(&path)?;
    let stores = [
        connector(work, "a", STORE, "home-a")?,
        connector(work, "a", DOOMED, "home-a")?,
    ];
    let salt = id
        .bytes()
        .fold(0x5EED_u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut rng = Rng(salt ^ ((next + 1) * 0x9E37_79B9));
    while !work.join("stop").exists() {
        // A burst of puts (they share a batch), then a pause: a workflow step's outputs.
        for _ in 0..1 + rng.below(12) {
            let store = &stores[usize::from(doomed(next))];
            let key = ps_globus::block_on(store.put(&content(id, next), &PutOptions::default()))?;
            let record = serde_json::json!({
                "producer": id, "index": next, "doomed": doomed(next), "key": key.to_string(),
            });
            writeln!(ledger, "{record}")?;
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
    }
    // Dropping the connectors submits what they still hold back.
    drop(stores);
    Ok(())
}

// ---- the next process ----------------------------------------------------------------

/// What the next process to use the producers' state database does: it submits what
/// they left (batches still waiting for admission when they exited, or left open by a
/// killed one), then exits once nothing is left to submit.
fn drain(work: &Path) -> Outcome {
    use ps_globus::state::StateDb;
    use ps_globus::transfer::{BatchState, ManagerConfig, TransferClient, TransferManager};
    let sites: GlobusConfig =
        serde_json::from_str(&std::fs::read_to_string(work.join("sites.json"))?)?;
    let url = sites.transfer_url.clone().ok_or("a transfer URL")?;
    ps_globus::block_on(async {
        let db = StateDb::open(work.join("home-a/state.db")).await?;
        let client =
            TransferClient::with_base_url(&url, Arc::new(StaticTokenAuthorizer::new(TOKEN)))?;
        let manager = TransferManager::start(db, client, ManagerConfig::default()).await?;
        loop {
            let left = manager
                .batches(1_000_000)
                .await?
                .iter()
                .filter(|b| {
                    matches!(
                        b.state,
                        BatchState::Open | BatchState::Ready | BatchState::Submitting
                    )
                })
                .count();
            if left == 0 {
                return Ok::<(), Error>(());
            }
            manager.flush().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })?;
    Ok(())
}

// ---- a consumer ----------------------------------------------------------------------

/// Resolves, at site `b`, every recorded key that falls to it (by key, among `of`
/// consumers), and records what it got; ends once the producers are done and every key
/// has an outcome.
fn consumer(work: &Path, id: usize, of: usize) -> Outcome {
    let path = work.join(format!("outcomes/{id}.jsonl"));
    let mut done: BTreeSet<String> = complete_lines(&path)?
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["key"].as_str().map(str::to_owned))
        .collect();
    let outcomes = Arc::new(std::sync::Mutex::new(append_to(&path)?));
    let stores = Arc::new([
        connector(work, "b", STORE, "home-b")?,
        connector(work, "b", DOOMED, "home-b")?,
    ]);
    ps_globus::block_on(async {
        let mut running = tokio::task::JoinSet::new();
        loop {
            let finished = work.join("producers-done").exists();
            for promise in ledger(work).map_err(|e| e.to_string())? {
                let mine = promise.key_id.bytes().map(usize::from).sum::<usize>() % of == id;
                if !mine || !done.insert(promise.key.clone()) {
                    continue;
                }
                let (stores, outcomes) = (stores.clone(), outcomes.clone());
                running.spawn(async move {
                    let store = &stores[usize::from(promise.doomed)];
                    let key: Key = promise.key.parse().expect("a recorded key");
                    let got = match store.get(&key).await {
                        Ok(Some(bytes)) if bytes == content(&promise.producer, promise.index) => {
                            "ok".to_owned()
                        }
                        Ok(Some(_)) => "wrong bytes".to_owned(),
                        Ok(None) => "missing".to_owned(),
                        Err(e) => match e.downcast_ref::<TransferFailure>() {
                            Some(failure) => format!("failed {}", failure.code),
                            None => format!("error {:?}: {e}", e.kind()),
                        },
                    };
                    let record = serde_json::json!({"key": promise.key, "got": got});
                    let mut file = outcomes.lock().expect("outcomes");
                    writeln!(file, "{record}").expect("record an outcome");
                });
            }
            while running.try_join_next().is_some() {}
            if finished && running.is_empty() {
                return Ok::<(), String>(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })?;
    Ok(())
}
