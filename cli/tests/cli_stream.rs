//! `ps-globus stream tail`: a topic's events as they arrive at this site, over Redis and
//! over Globus (at the other site, started before the producer), as text and JSON Lines.

use crate::command::Setup;
use crate::support::emulator::Emu;
use crate::support::redis_server::RedisServer;
use ps_globus::Store;
use ps_globus::config::Config;
use ps_globus::connector::RedisConnector;
use ps_globus::stream::{Channel, StreamProducer};
use serde_json::Value;

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn tail_prints_a_redis_topic_to_its_end_from_any_position() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let server = RedisServer::start();
    let path = setup.home.path().join("config.toml");
    let mut config = Config::load_from(&path).unwrap();
    config.redis.insert("lab".into(), server.config());
    config.save_to(&path).unwrap();

    let redis = RedisConnector::new(server.config()).unwrap();
    let store = Store::new(crate::support::unique_name("tail-redis"), redis.clone()).unwrap();
    ps_globus::block_on(async {
        let channel = Channel::Redis(redis);
        let mut producer = StreamProducer::open(&store, &channel, "results").await?;
        for i in 0..3u32 {
            producer.send_async(&i).await?;
        }
        producer.close_async().await
    })
    .unwrap();

    let (code, stdout, stderr) =
        setup.run(&["stream", "tail", "results", "--redis", "lab", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let events = json_lines(&stdout);
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1, 2, 3]);
    assert_eq!(events[3]["end"], true);
    assert_eq!(events[0]["end"], false);
    assert_eq!(events[0]["key"]["kind"], "redis");

    let (code, stdout, _) = setup.run(&[
        "stream", "tail", "results", "--redis", "lab", "--from", "2", "--count", "1",
    ]);
    assert_eq!(code, 0);
    // A header, then the event.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].trim_start().starts_with("POSITION  PUBLISHED"),
        "{stdout}"
    );
    assert!(lines[1].trim_start().starts_with("2 "), "{stdout}");
    // `-F json` is --json: JSON Lines.
    let (code, stdout, stderr) = setup.run(&[
        "stream", "tail", "results", "--redis", "lab", "--from", "2", "-F", "JSON",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let positions: Vec<u64> = json_lines(&stdout)
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [2, 3]);

    let (code, stdout, _) =
        setup.run(&["stream", "tail", "results", "--redis", "lab", "--from", "3"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("end of stream"), "{stdout}");
    // Regression: a timeout too far to add to the clock panicked; it is a far deadline.
    let (code, stdout, stderr) = setup.run(&[
        "stream",
        "tail",
        "results",
        "--redis",
        "lab",
        "--from",
        "3",
        "--timeout",
        "18446744073709551615",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("end of stream"), "{stdout}");

    let (code, _, stderr) = setup.run(&[
        "stream",
        "tail",
        "empty",
        "--redis",
        "lab",
        "--timeout",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("event 0 of topic empty"), "{stderr}");
    let (code, _, stderr) = setup.run(&["stream", "tail", "results"]);
    assert_eq!(code, 2, "a channel is required: {stderr}");
    // Regression: the error named only --redis.
    assert!(
        stderr.contains("--redis") && stderr.contains("--globus"),
        "{stderr}"
    );
}

#[test]
fn tail_at_the_other_site_prints_globus_events_as_they_arrive() {
    let emu = Emu::start();
    let mut setup = Setup::new(&emu);
    setup.site = "b".into();
    let store_dir = crate::support::unique_name("tail");
    let config = crate::support::sites::config_for(&emu, &store_dir);
    let (_home, a, _b) = crate::support::sites::own_pair(&config, "a", "b");

    // The tail starts first, at b, and waits for events.
    let tail = setup
        .command(&[
            "stream",
            "tail",
            "events",
            "--globus",
            &store_dir,
            "--json",
            "--timeout",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let store = Store::new(crate::support::unique_name("tail-globus"), a.clone()).unwrap();
    ps_globus::block_on(async {
        let channel = Channel::Globus(a);
        let mut producer = StreamProducer::open(&store, &channel, "events").await?;
        for i in 0..4u64 {
            producer.send_async(&vec![i; 1000]).await?;
        }
        producer.close_async().await
    })
    .unwrap();
    let (code, stdout, stderr) = crate::command::finished(tail.wait_with_output().unwrap());
    assert_eq!(code, 0, "{stderr}");
    let events = json_lines(&stdout);
    assert_eq!(events.len(), 5, "{stdout}");
    for (n, event) in events.iter().take(4).enumerate() {
        assert_eq!(event["position"], n as u64);
        assert_eq!(event["key"]["meta"]["source"], "a");
        assert!(event["size"].as_u64().unwrap() >= 1000, "{event}");
        assert_eq!(event["sha256"].as_str().unwrap().len(), 64);
    }
    assert_eq!(events[4]["end"], true);
}

/// A tail of a topic nobody published on yet says that it waits, instead of looking
/// hung, and still gives up at its --timeout.
#[test]
fn tail_of_a_topic_without_events_says_it_is_waiting() {
    let emu = Emu::start();
    let mut setup = Setup::new(&emu);
    setup.site = "b".into();
    let store_dir = crate::support::unique_name("quiet");
    let (code, stdout, stderr) = setup.run(&[
        "stream",
        "tail",
        "nobody-publishes",
        "--globus",
        &store_dir,
        "--timeout",
        "3",
    ]);
    assert_eq!(stdout.lines().count(), 1, "the header alone: {stdout}");
    assert!(
        stderr.contains("no event of topic \"nobody-publishes\" at position 0 yet: waiting"),
        "{stderr}"
    );
    assert_ne!(code, 0, "{stderr}");
}

#[test]
fn stream_key_makes_an_owner_only_key_once_and_never_replaces_it() {
    use std::os::unix::fs::PermissionsExt;
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let (code, made, err) = setup.run(&["stream", "key"]);
    assert_eq!(code, 0, "{err}");
    let path = std::path::PathBuf::from(made.trim());
    assert!(path.starts_with(setup.home.path()), "{made}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read_to_string(&path).unwrap();
    assert_eq!(first.trim().len(), 64);
    ps_globus::stream::StreamKey::load(&path).unwrap();
    let (code, _, again) = setup.run(&["stream", "key"]);
    assert_ne!(code, 0);
    assert!(again.contains("File exists"), "{again}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        first,
        "not replaced"
    );
    let elsewhere = setup.home.path().join("keys/site-b.key");
    let (code, made, err) = setup.run(&["stream", "key", "--file", elsewhere.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(made.trim(), elsewhere.to_str().unwrap());
}
