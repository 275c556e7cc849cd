//! A proxy serialized in one process resolves in another that has never seen its store.
//!
//! The parent test re-executes this test binary, running only the ignored
//! `child_resolves_shipment` test, and hands it the serialized proxies in an environment
//! variable. The child prints what it resolved; the parent checks it.

use std::process::Command;

use crate::support::unique_name;
use ps_globus::connector::{FileConnector, LocalConnector};
use ps_globus::{Error, Proxy, ProxyOptions, Store, get_store};
use serde::{Deserialize, Serialize};

const SHIPMENT_VAR: &str = "PS_GLOBUS_TEST_SHIPMENT";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Measurement {
    name: String,
    values: Vec<f64>,
}

/// What the producer sends: proxies of three kinds of object, the last one single-use.
#[derive(Serialize, Deserialize)]
struct Shipment {
    measurement: Proxy<Measurement>,
    raw: Proxy<Vec<u8>>,
    once: Proxy<String>,
}

/// What the consumer reports back.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    store_was_registered: bool,
    name: String,
    sum: f64,
    raw_len: usize,
    raw_checksum: u64,
    once: String,
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().enumerate().fold(0u64, |acc, (i, b)| {
        acc.wrapping_mul(1_000_003)
            .wrapping_add(*b as u64 ^ i as u64)
    })
}

/// Runs the child test in a new process with `shipment` and returns its stdout and status.
fn run_child(shipment: &str) -> (String, bool) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "cross_process::child_resolves_shipment",
            "--nocapture",
        ])
        .env(SHIPMENT_VAR, shipment)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (format!("{stdout}\n{stderr}"), output.status.success())
}

#[test]
fn file_store_proxies_resolve_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        unique_name("xproc"),
        FileConnector::new(dir.path()).unwrap(),
    )
    .unwrap();
    let raw: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let shipment = Shipment {
        measurement: store
            .proxy(&Measurement {
                name: "temperature".into(),
                values: vec![1.5, 2.5, 3.0],
            })
            .unwrap(),
        raw: store.proxy(&raw).unwrap(),
        once: store
            .proxy_with(
                &String::from("read me once"),
                &ProxyOptions::default().with_evict(true),
            )
            .unwrap(),
    };
    let wire = serde_json::to_string(&shipment).unwrap();
    assert!(wire.len() < 2000, "proxies are small: {} bytes", wire.len());

    let (output, ok) = run_child(&wire);
    assert!(ok, "child failed:\n{output}");
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("REPORT "))
        .unwrap_or_else(|| panic!("no report from the child:\n{output}"));
    let report: Report = serde_json::from_str(line).unwrap();
    assert!(
        !report.store_was_registered,
        "the child had never seen the store"
    );
    assert_eq!(report.name, "temperature");
    assert_eq!(report.sum, 7.0);
    assert_eq!(report.raw_len, raw.len());
    assert_eq!(report.raw_checksum, checksum(&raw));
    assert_eq!(report.once, "read me once");

    // The child evicted the single-use object; the others are still there.
    let once_key = shipment.once.key().unwrap();
    assert!(!store.exists(once_key).unwrap());
    assert!(store.exists(shipment.raw.key().unwrap()).unwrap());
}

#[test]
fn local_store_proxies_fail_clearly_in_another_process() {
    let store = Store::new(unique_name("xlocal"), LocalConnector::new()).unwrap();
    let shipment = Shipment {
        measurement: store
            .proxy(&Measurement {
                name: "x".into(),
                values: vec![],
            })
            .unwrap(),
        raw: store.proxy(&vec![1u8]).unwrap(),
        once: store.proxy(&String::new()).unwrap(),
    };
    let (output, ok) = run_child(&serde_json::to_string(&shipment).unwrap());
    assert!(!ok, "a local store's objects cannot be read elsewhere");
    assert!(output.contains("CHILD-ERROR NotFound"), "{output}");
    assert!(output.contains("live only in the memory"), "{output}");
}

/// The consumer half; run only by the tests above, in a child process.
#[test]
#[ignore = "child process of the cross-process tests, which run it themselves"]
fn child_resolves_shipment() {
    let wire = std::env::var(SHIPMENT_VAR).expect("run by a parent test");
    let shipment: Shipment = serde_json::from_str(&wire).unwrap();
    let store_name = &shipment.measurement.factory().unwrap().store.name;
    let store_was_registered = get_store(store_name).is_some();
    if let Err(e) = shipment.measurement.resolve() {
        let kind = match e {
            Error::NotFound(_) => "NotFound",
            _ => "Other",
        };
        println!("CHILD-ERROR {kind}: {e}");
        std::process::exit(3);
    }
    let report = Report {
        store_was_registered,
        name: shipment.measurement.name.clone(),
        sum: shipment.measurement.values.iter().sum(),
        raw_len: shipment.raw.len(),
        raw_checksum: checksum(&shipment.raw),
        once: shipment.once.to_string(),
    };
    println!("REPORT {}", serde_json::to_string(&report).unwrap());
}
