//! Quickstart: pass objects by reference between two processes.
//!
//!     cargo run --release --example quickstart
//!
//! The producer stores objects in a file store and gets back proxies: small references
//! that serialize as "which store, which key", never as the object. It sends the
//! serialized proxies to a consumer process (here: itself, re-executed, over a pipe). The
//! consumer has never seen the store; it rebuilds it from the config inside each proxy,
//! and each proxy turns into its object only when first used.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use ps_globus::connector::FileConnector;
use ps_globus::{Proxy, ProxyOptions, Store};
use serde::{Deserialize, Serialize};

/// A typed object, stored with the store's codec (MessagePack).
#[derive(Debug, Serialize, Deserialize)]
struct Simulation {
    name: String,
    timestep: f64,
    temperatures: Vec<f64>,
}

/// What travels from producer to consumer: references only.
#[derive(Serialize, Deserialize)]
struct Task {
    simulation: Proxy<Simulation>,
    image: Proxy<Vec<u8>>,
    note: Proxy<String>,
}

fn main() -> std::process::ExitCode {
    common::exit_with(run())
}

fn run() -> common::Outcome {
    if std::env::args().nth(1).as_deref() == Some("consume") {
        return consume();
    }
    produce()
}

fn produce() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::new("quickstart", FileConnector::new(dir.path())?)?;
    println!(
        "producer (pid {}): file store 'quickstart' in {}",
        std::process::id(),
        dir.path().display()
    );

    let simulation = Simulation {
        name: "heat-equation".into(),
        timestep: 0.01,
        temperatures: (0..1_000_000)
            .map(|i| 20.0 + (i as f64 * 1e-3).sin())
            .collect(),
    };
    let image: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 256) as u8).collect();

    let start = Instant::now();
    let task = Task {
        simulation: store.proxy(&simulation)?,
        image: store.proxy(&image)?,
        note: store.proxy_with(
            &"used once, then evicted".to_string(),
            &ProxyOptions::default().with_evict(true),
        )?,
    };
    let put = store.metrics().put;
    println!(
        "producer: stored 3 objects ({:.1} MB) in {:.1} ms",
        put.bytes as f64 / 1e6,
        start.elapsed().as_secs_f64() * 1e3
    );

    let wire = serde_json::to_string(&task)?;
    println!(
        "producer: the serialized proxies are {} bytes of JSON; the first one reads:",
        wire.len()
    );
    println!("  {}", serde_json::to_string(&task.simulation)?);

    let mut consumer = Command::new(std::env::current_exe()?)
        .arg("consume")
        .stdin(Stdio::piped())
        .spawn()?;
    consumer
        .stdin
        .take()
        .ok_or("the consumer has no stdin")?
        .write_all(wire.as_bytes())?;
    let status = consumer.wait()?;
    if !status.success() {
        return Err(format!("the consumer failed: {status}").into());
    }

    let note_key = task.note.key().ok_or("the note is not store-backed")?;
    println!(
        "producer: consumer done; the evict-on-resolve note is {}",
        if store.exists(note_key)? {
            "still stored (unexpected)"
        } else {
            "gone from the store"
        }
    );
    Ok(())
}

fn consume() -> Result<(), Box<dyn std::error::Error>> {
    let mut wire = String::new();
    std::io::stdin().read_to_string(&mut wire)?;
    let task: Task = serde_json::from_str(&wire)?;
    let pid = std::process::id();
    println!(
        "consumer (pid {pid}): received 3 proxies; resolved yet? {}",
        task.simulation.is_resolved()
    );

    let start = Instant::now();
    // Plain field access and method calls: each proxy resolves on first use.
    let mean = task.simulation.temperatures.iter().sum::<f64>()
        / task.simulation.temperatures.len() as f64;
    println!(
        "consumer: '{}' has {} temperatures, mean {mean:.4} (resolved in {:.1} ms)",
        task.simulation.name,
        task.simulation.temperatures.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "consumer: image of {} bytes, last byte {}",
        task.image.len(),
        task.image[task.image.len() - 1]
    );
    println!("consumer: note says {:?}", *task.note);
    Ok(())
}
