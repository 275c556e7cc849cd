//! Transfer manager benchmark: N small files through the emulator.
//!
//!     cargo run --release --example bench_transfer -- --items 1000 --size 1024 --task-latency-ms 1000 --json
//!
//! Starts the emulator in-process with a task latency of L ms, writes N files of S bytes
//! in collection A, then — timing from the first enqueue to the last item done —
//! enqueues them all to collection B (from concurrent tokio tasks) and waits for each.
//! Prints `{"items", "size", "task_latency_ms", "wall_s", "tasks", "api_requests"}`
//! (`tasks` and `api_requests` from the emulator's stats). `--sequential` enqueues from
//! one loop instead.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ps_globus::auth::StaticTokenAuthorizer;
use ps_globus::state::StateDb;
use ps_globus::transfer::{ItemSpec, ManagerConfig, TransferClient, TransferManager};
use ps_globus_sim::{CollectionConfig, SimConfig, Simulator};

struct Args {
    items: usize,
    size: usize,
    latency_ms: u64,
    json: bool,
    sequential: bool,
}

fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut args = Args {
        items: 1000,
        size: 1024,
        latency_ms: 1000,
        json: false,
        sequential: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || -> Result<u64, Box<dyn std::error::Error>> {
            let text = it
                .next()
                .ok_or_else(|| common::usage("bench_transfer", format!("{arg} needs a value")))?;
            text.parse::<u64>().map_err(|_| {
                common::usage(
                    "bench_transfer",
                    format!("{arg} takes a number, not {text:?}"),
                )
            })
        };
        match arg.as_str() {
            "--items" => args.items = value()? as usize,
            "--size" => args.size = value()? as usize,
            "--task-latency-ms" => args.latency_ms = value()?,
            "--json" => args.json = true,
            "--sequential" => args.sequential = true,
            other => {
                return Err(common::usage(
                    "bench_transfer",
                    format!("unknown option {other}"),
                ));
            }
        }
    }
    Ok(args)
}

fn main() -> std::process::ExitCode {
    common::exit_with(run())
}

fn run() -> common::Outcome {
    let args = parse_args()?;
    // Collections on tmpfs where there is one: the benchmark measures orchestration, not
    // how fast the local disk creates 2N inodes (ext4 can take ~1 ms each after mass deletes).
    let scratch = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let (a, b, home) = (
        tempfile::tempdir_in(&scratch)?,
        tempfile::tempdir_in(&scratch)?,
        tempfile::tempdir()?,
    );
    let payload = vec![7u8; args.size];
    for i in 0..args.items {
        std::fs::write(a.path().join(format!("f{i}")), &payload)?;
    }
    let mut config = SimConfig {
        static_token: Some("bench".into()),
        task_latency_ms: args.latency_ms,
        ..SimConfig::default()
    };
    for (name, dir) in [("a", a.path()), ("b", b.path())] {
        config.collections.insert(
            name.into(),
            CollectionConfig {
                root: dir.to_path_buf(),
                ..Default::default()
            },
        );
    }
    let sim = Simulator::start(config)?;
    let (src, dst) = (
        sim.collection("a").ok_or("no collection a")?.id.to_string(),
        sim.collection("b").ok_or("no collection b")?.id.to_string(),
    );

    let wall = ps_globus::block_on(async {
        let client = TransferClient::with_base_url(
            sim.transfer_url(),
            Arc::new(StaticTokenAuthorizer::new("bench")),
        )?;
        let db = StateDb::open(home.path().join("state.db")).await?;
        let manager = TransferManager::start(db, client, ManagerConfig::default()).await?;
        let start = Instant::now();
        let items = if args.sequential {
            let mut items = Vec::with_capacity(args.items);
            for i in 0..args.items {
                items.push(
                    manager
                        .enqueue(ItemSpec::new(
                            &src,
                            format!("/f{i}"),
                            &dst,
                            format!("/f{i}"),
                        ))
                        .await?,
                );
            }
            items
        } else {
            let tasks: Vec<_> = (0..args.items)
                .map(|i| {
                    let (m, spec) = (
                        manager.clone(),
                        ItemSpec::new(&src, format!("/f{i}"), &dst, format!("/f{i}")),
                    );
                    ps_globus_spawn(async move { m.enqueue(spec).await })
                })
                .collect();
            let mut items = Vec::with_capacity(args.items);
            for task in tasks {
                items.push(task.await??);
            }
            items
        };
        for item in &items {
            manager.wait(item.item, Duration::from_secs(600)).await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(start.elapsed())
    })?;

    let stats = sim.stats();
    let line = serde_json::json!({
        "items": args.items,
        "size": args.size,
        "task_latency_ms": args.latency_ms,
        "wall_s": (wall.as_secs_f64() * 1000.0).round() / 1000.0,
        "tasks": stats.tasks(),
        "api_requests": stats.api_requests,
    });
    if args.json {
        println!("{line}");
    } else {
        println!("{}", serde_json::to_string_pretty(&line)?);
        eprintln!(
            "requests by route: {:?}; collections in {}",
            stats.by_route,
            scratch.display()
        );
    }
    let arrived = std::fs::read_dir(b.path())?.count();
    if arrived != args.items {
        return Err(format!("only {arrived} of {} files arrived", args.items).into());
    }
    Ok(())
}

/// Spawns on the current (library) runtime: `block_on` entered it.
fn ps_globus_spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::runtime::Handle::current().spawn(future)
}
