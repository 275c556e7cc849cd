//! Many reader processes on one host (one state database) against the strict emulator
//! at Globus's default rate limit: they share one watcher and one request budget, so
//! none is throttled, and every object arrives verified. (`bench_globus --readers 64`
//! is the full-size run, by hand.)

use std::io::Write;
use std::process::{Command, Stdio};

use ps_globus::Store;
use ps_globus_sim::TwoSites;

#[test]
fn reader_processes_sharing_a_database_stay_under_the_rate_limit() {
    const OBJECTS: usize = 96;
    const READERS: usize = 8;
    const MAX_SIZE: usize = 4096;
    let sites = TwoSites::start(1000).unwrap();
    assert_eq!(sites.sim.config().rate_limit, Some(20), "the default limit");
    let store = Store::builder("many-readers", sites.producer().unwrap())
        .build()
        .unwrap();
    let mut shares = vec![String::new(); READERS];
    for index in 0..OBJECTS {
        let proxy = store
            .proxy(&ps_globus_sim::demo::object(index, MAX_SIZE))
            .unwrap();
        let line = format!("{index}\t{}\n", serde_json::to_string(&proxy).unwrap());
        shares[index % READERS].push_str(&line);
    }
    let readers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let mut child = Command::new(env!("CARGO_BIN_EXE_ps-globus"))
                .args(["demo-consumer", "--max-size", &MAX_SIZE.to_string()])
                .envs(sites.consumer_env())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(share.as_bytes())
                .unwrap();
            child
        })
        .collect();
    let mut verified = 0;
    for reader in readers {
        let out = reader.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        verified += summary["objects"].as_u64().unwrap();
    }
    assert_eq!(
        verified, OBJECTS as u64,
        "every object resolved and verified"
    );
    let stats = sites.sim.stats();
    assert_eq!(stats.responses_429, 0, "{stats:?}");
}
