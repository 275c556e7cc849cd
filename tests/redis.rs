//! The Redis connector against real `redis-server` processes (tests/support/redis_server.rs):
//! batches in one command, TTL, prefix and `clear`, a server that goes away or stops
//! answering and comes back, TLS, a Unix socket, and errors the server answers.
//! (Its conformance suite is in tests/connectors.rs; passwords are tested through the
//! command line in tests/cli_redis.rs, where the environment is the child's own.)

use crate::support::redis_server::RedisServer;
use ps_globus::connector::{
    Connector, ConnectorConfig, Key, PutOptions, RedisConfig, RedisConnector,
};
use ps_globus::error::{Remedy, ServerError};
use ps_globus::{Error, ErrorKind, block_on};

fn opts() -> PutOptions {
    PutOptions::default()
}

#[tokio::test]
async fn batches_are_one_command_each_way() {
    let server = RedisServer::start();
    let c = RedisConnector::new(server.config()).unwrap();
    let objects: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100 + i as usize]).collect();
    let refs: Vec<&[u8]> = objects.iter().map(Vec::as_slice).collect();
    let keys = c.put_batch(&refs, &opts()).await.unwrap();
    assert_eq!((server.calls("mset"), server.calls("set")), (1, 0));

    let got = c.get_batch(&keys).await.unwrap();
    assert_eq!((server.calls("mget"), server.calls("get")), (1, 0));
    for (got, want) in got.iter().zip(&objects) {
        assert_eq!(got.as_deref(), Some(&want[..]));
    }
}

#[tokio::test]
async fn a_ttl_sets_every_object_to_expire_and_batches_stay_one_round_trip() {
    let server = RedisServer::start();
    let mut config = server.config();
    config.ttl_s = Some(600);
    let c = RedisConnector::new(config).unwrap();
    let one = c.put(b"one", &opts()).await.unwrap();
    let batch = c.put_batch(&[b"a", b"b", b"c"], &opts()).await.unwrap();
    // The batch is one MULTI/EXEC transaction of SET … PX.
    assert_eq!(server.calls("exec"), 1);
    assert_eq!(server.calls("set"), 4);
    for key in std::iter::once(&one).chain(&batch) {
        let ttl: i64 = server
            .cli(&["PTTL", &format!("ps-globus:{}", key.id())])
            .trim()
            .parse()
            .unwrap();
        assert!((590_000..=600_000).contains(&ttl), "PTTL {ttl}");
    }
}

#[tokio::test]
async fn keys_live_under_the_prefix_and_clear_removes_only_this_connectors_objects() {
    let server = RedisServer::start();
    let mut config = server.config();
    config.prefix = "lab*run[1]:".into(); // glob characters must not widen the match
    let c = RedisConnector::new(config).unwrap();
    let keys = c.put_batch(&[b"x", b"y"], &opts()).await.unwrap();
    for key in &keys {
        assert_eq!(
            server
                .cli(&["GET", &format!("lab*run[1]:{}", key.id())])
                .trim(),
            {
                let v = c.get(key).await.unwrap().unwrap();
                String::from_utf8(v.to_vec()).unwrap()
            }
        );
    }
    // Someone else's keys in the same database, some of them look alike.
    server.cli(&["SET", "user:data", "keep"]);
    server.cli(&["SET", "labXrun1:0123456789abcdef0123456789abcdef", "keep"]);
    server.cli(&["SET", "lab*run[1]:not-an-object-id", "keep"]);
    let other = RedisConnector::new(server.config()).unwrap();
    let others = other.put(b"another prefix", &opts()).await.unwrap();

    assert_eq!(c.clear().await.unwrap(), 2);
    for key in &keys {
        assert!(!c.exists(key).await.unwrap());
    }
    assert_eq!(server.cli(&["DBSIZE"]).trim(), "4");
    assert!(other.exists(&others).await.unwrap());
    assert_eq!(c.clear().await.unwrap(), 0);
}

#[tokio::test]
async fn a_server_that_goes_away_is_a_network_error_and_the_connector_recovers_when_it_returns() {
    let mut server = RedisServer::start();
    let c = RedisConnector::new(server.config()).unwrap();
    let before = c.put(b"before", &opts()).await.unwrap();

    server.stop();
    for result in [
        c.get(&before).await.map(|_| ()),
        c.exists(&before).await.map(|_| ()),
        c.put(b"while down", &opts()).await.map(|_| ()),
    ] {
        let e = result.unwrap_err();
        assert!(matches!(e, Error::Unreachable(_)), "{e:?}");
        assert!(e.to_string().contains("(after 3 retries)"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Unreachable);
        assert!(e.is_transient());
        assert!(
            e.to_string()
                .contains(&format!("redis://127.0.0.1:{}/0", server.port)),
            "{e}"
        );
    }

    server.restart();
    // Persistence is off, so the restarted server is empty: the old object is gone,
    // and that is a plain "not there", not an error.
    assert_eq!(c.get(&before).await.unwrap(), None);
    let after = c.put(b"after", &opts()).await.unwrap();
    assert_eq!(c.get(&after).await.unwrap().as_deref(), Some(&b"after"[..]));
}

/// A caller inside `block_on` (the Python package, the blocking API) sends its commands
/// on blocking connections from its own thread: the same answers, the same typed errors,
/// and the same recovery as the runtime's connection (a pooled connection the server
/// dropped is not used again).
#[test]
fn commands_from_a_blocking_caller_answer_fail_and_recover_as_async_ones() {
    let mut server = RedisServer::start();
    let mut config = server.config();
    config.timeout_ms = 300;
    let c = RedisConnector::new(config).unwrap();
    let key = block_on(c.put(b"small", &opts())).unwrap();
    assert_eq!(
        block_on(c.get(&key)).unwrap().as_deref(),
        Some(&b"small"[..])
    );
    assert!(block_on(c.exists(&key)).unwrap());

    server.pause();
    let e = block_on(c.get(&key)).unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    server.resume();
    assert_eq!(
        block_on(c.get(&key)).unwrap().as_deref(),
        Some(&b"small"[..])
    );

    server.stop();
    let e = block_on(c.put(b"while down", &opts())).unwrap_err();
    assert!(matches!(e, Error::Unreachable(_)), "{e:?}");
    assert!(e.to_string().contains("(after 3 retries)"), "{e}");
    server.restart();
    // The pooled connections died with the old server; the next command gets a new one.
    let after = block_on(c.put(b"after", &opts())).unwrap();
    assert_eq!(
        block_on(c.get(&after)).unwrap().as_deref(),
        Some(&b"after"[..])
    );
    block_on(c.evict(&after)).unwrap();
    assert!(!block_on(c.exists(&after)).unwrap());
}

#[tokio::test]
async fn a_server_that_stops_answering_is_a_timeout_and_answers_again_after() {
    let server = RedisServer::start();
    let mut config = server.config();
    config.timeout_ms = 300;
    let c = RedisConnector::new(config).unwrap();
    let key = c.put(b"frozen", &opts()).await.unwrap();

    server.pause();
    let e = c.get(&key).await.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    assert!(e.to_string().contains("Redis at redis://127.0.0.1"), "{e}");
    server.resume();
    assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(&b"frozen"[..]));
}

#[tokio::test]
async fn a_full_server_answers_oom_which_is_a_server_error_with_advice() {
    let server =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let c = RedisConnector::new(server.config()).unwrap();
    let big = vec![7u8; 3 << 20];
    // The first large value may still fit under the limit; the next one cannot.
    let e = loop {
        if let Err(e) = c.put(&big, &opts()).await {
            break e;
        }
    };
    match e.downcast_ref::<ServerError>() {
        Some(ServerError {
            code, operation, ..
        }) => {
            assert_eq!(code, "OOM");
            assert_eq!(operation, "SET");
        }
        None => panic!("{e:?}"),
    }
    assert_eq!(e.kind(), ErrorKind::Service);
    assert!(
        matches!(e.remedy(), Some(Remedy::Advice(a)) if a.contains("maxmemory")),
        "{e}"
    );
    assert_eq!(
        c.maxmemory_policy().await.unwrap().as_deref(),
        Some("noeviction")
    );
}

#[tokio::test]
async fn tls_with_a_private_ca_round_trips_and_plain_tcp_to_it_fails() {
    let server = RedisServer::start_tls();
    let c = RedisConnector::new(server.config()).unwrap();
    assert!(c.config().options["tls"].as_bool().unwrap());
    let key = c.put(b"over tls", &opts()).await.unwrap();
    assert_eq!(
        c.get(&key).await.unwrap().as_deref(),
        Some(&b"over tls"[..])
    );
    let rebuilt = c.config().build().unwrap();
    assert!(rebuilt.exists(&key).await.unwrap());

    // Without the CA the server's certificate is not trusted.
    let mut untrusted = server.config();
    untrusted.tls_ca_file = None;
    let mut untrusted = RedisConnector::new(untrusted).unwrap();
    assert!(untrusted.ping().await.is_err());
    // Plain TCP to a TLS port gets no answer that makes sense.
    let mut plain = server.config();
    plain.tls = false;
    plain.tls_ca_file = None;
    plain.timeout_ms = 500;
    untrusted = RedisConnector::new(plain).unwrap();
    assert!(untrusted.get(&key).await.is_err());
}

#[tokio::test]
async fn a_unix_socket_works_and_its_config_rebuilds() {
    let server = RedisServer::start();
    let c = RedisConnector::new(RedisConfig::unix(server.socket())).unwrap();
    let key = c.put(b"by socket", &opts()).await.unwrap();
    let json = serde_json::to_string(&c.config()).unwrap();
    let rebuilt = serde_json::from_str::<ConnectorConfig>(&json)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        rebuilt.get(&key).await.unwrap().as_deref(),
        Some(&b"by socket"[..])
    );
    assert!(c.ping().await.unwrap().starts_with('7'));
}

/// Configurations a user wrote (local ones: a proxy's are judged by the trust boundary).
#[test]
fn configs_that_cannot_work_are_refused_with_what_to_change() {
    let refused = |json: serde_json::Value| {
        let e = ConnectorConfig {
            kind: "redis".into(),
            options: json,
        }
        .build_local()
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        e.to_string()
    };
    let message = refused(serde_json::json!({"host": "h", "password": "hunter2"}));
    assert!(
        message.contains("password_env") && !message.contains("hunter2"),
        "{message}"
    );
    let message = refused(serde_json::json!({"password_env": "hunter2!"}));
    assert!(
        message.contains("not an environment variable name"),
        "{message}"
    );
    let message =
        refused(serde_json::json!({"password_env": "PS_GLOBUS_TEST_SURELY_UNSET_VARIABLE"}));
    assert!(
        message.contains("PS_GLOBUS_TEST_SURELY_UNSET_VARIABLE") && message.contains("not set"),
        "{message}"
    );
    assert!(refused(serde_json::json!({"socket": "relative.sock"})).contains("absolute"));
    assert!(refused(serde_json::json!({"tls_ca_file": "/ca.pem"})).contains("tls is not"));
    assert!(refused(serde_json::json!({"ttl_s": 0})).contains("positive"));
    assert!(refused(serde_json::json!({"hots": "typo"})).contains("hots"));
}

#[tokio::test]
async fn keys_of_other_connectors_and_malformed_ids_never_reach_the_server() {
    let server = RedisServer::start();
    let c = RedisConnector::new(server.config()).unwrap();
    let foreign = Key::new("file", Key::new_id()).unwrap();
    assert!(matches!(c.get(&foreign).await, Err(Error::InvalidInput(_))));
    assert!(matches!(
        c.get_batch(&[foreign]).await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(server.calls("get") + server.calls("mget"), 0);
}

#[tokio::test]
async fn an_object_larger_than_the_server_accepts_is_a_server_error_not_a_lost_connection() {
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "1mb"]);
    let c = RedisConnector::new(server.config()).unwrap();
    // Regression (flaky before): the server answers the error and closes the connection
    // while the value is still arriving; the reset that follows could discard the answer,
    // and the put read as a lost connection. Several sizes, several times.
    for size in [2 << 20, 8 << 20, 2 << 20, 32 << 20] {
        let e = c.put(&vec![0u8; size], &opts()).await.unwrap_err();
        assert!(
            e.downcast_ref::<ServerError>()
                .is_some_and(|s| s.code == "ERR" && s.message.contains("bulk length")),
            "{size}: {e:?}"
        );
        assert!(
            matches!(e.remedy(), Some(Remedy::Advice(a)) if a.contains("proto-max-bulk-len")),
            "{e}"
        );
    }
    assert_eq!(server.calls("set"), 0);
    // The connection the server dropped is remade for the next command.
    assert_eq!(
        c.get(&c.put(b"small", &opts()).await.unwrap())
            .await
            .unwrap()
            .as_deref(),
        Some(&b"small"[..])
    );
}

#[test]
fn a_connector_outlives_the_runtime_that_first_used_it() {
    // A proxy's store (and its connector) is cached for the process, while callers come
    // and go with runtimes of their own: the connection must not die with the first.
    let server = RedisServer::start();
    let c = RedisConnector::new(server.config()).unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let key = first.block_on(c.put(b"kept", &opts())).unwrap();
    drop(first);
    let second = runtime();
    let got = second.block_on(c.get(&key)).unwrap();
    assert_eq!(got.as_deref(), Some(&b"kept"[..]));
    // Not by reconnecting: one connection of ours, and redis-cli's own for this question.
    let stats = server.cli(&["INFO", "stats"]);
    let connections = stats
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap();
    assert_eq!(connections.trim(), "2", "{stats}");
}

/// Regression: a future whose value's TTL ran out read as "not set yet", so every later
/// resolve waited the whole resolve timeout (a day by default). A settled mark outlives
/// the value by a day: a reader fails at once. (Waiting out the one-second TTL is the
/// behaviour under test.)
#[tokio::test]
async fn a_future_whose_ttl_ran_out_fails_instead_of_waiting() {
    let server = RedisServer::start();
    let mut config = server.config();
    config.ttl_s = Some(1);
    let c = RedisConnector::new(config).unwrap();
    let key = c.new_key(&opts()).unwrap();
    c.set(&key, b"short-lived").await.unwrap();
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match c.get(&key).await {
            Ok(Some(value)) => {
                assert_eq!(&value[..], b"short-lived");
                assert!(std::time::Instant::now() < limit, "the TTL never ran out");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(None) => panic!("an expired future reads as not set: its readers would wait"),
            Err(e) => {
                assert!(matches!(e, Error::NotFound(_)), "{e}");
                assert!(e.to_string().contains("TTL"), "{e}");
                break;
            }
        }
    }
}

/// Regression: `exists` of a future's key said `false` while the server was unreachable;
/// it says unreachable, as every other call does.
#[tokio::test]
async fn exists_on_an_unreachable_server_is_an_error_not_false() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = RedisConfig::new("127.0.0.1", port);
    config.timeout_ms = 500;
    let c = RedisConnector::new(config).unwrap();
    for key in [Key::generate("redis"), c.new_key(&opts()).unwrap()] {
        let e = c.exists(&key).await.unwrap_err();
        assert!(
            matches!(e, Error::Unreachable(_) | Error::Timeout(_)),
            "{e}"
        );
    }
}

/// Regression: a large value went through the multiplexed connection, copied three times
/// into fresh memory (a 1 MiB `put_batch` took 2.5 ms an object, three times ProxyStore's).
/// Large values now go by a blocking connection that writes them as they lie: this
/// checks that path's answers, not its speed (that is `examples/bench_redis.rs`'s job):
/// every byte back, batches over several `MSET`s, expiry kept, over TCP, TLS, a Unix
/// socket and with a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_round_trip_by_the_bulk_path_on_every_transport() {
    let pattern = |n: usize, seed: u8| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    let plain = RedisServer::start();
    let tls = RedisServer::start_tls();
    // The password comes from a variable every process has (setting one in a test that
    // runs beside others would be unsound): HOME's value.
    let home = std::env::var("HOME").expect("HOME is set");
    let locked = RedisServer::start_with(&["--requirepass", &home]);
    let mut with_password = locked.config();
    with_password.password_env = Some("HOME".into());
    for (name, config, server) in [
        ("tcp", plain.config(), &plain),
        ("tls", tls.config(), &tls),
        ("unix", RedisConfig::unix(plain.socket()), &plain),
        ("password", with_password, &locked),
    ] {
        let c = RedisConnector::new(config).unwrap();
        // Async callers copy large values to a blocking thread; a caller inside
        // `block_on` (the Python package, the blocking API) writes them from where they
        // are, on its own thread.
        let options = opts();
        for blocking in [false, true] {
            let name = format!("{name}, blocking: {blocking}");
            let one = pattern(3 << 20, 1);
            let put = c.put(&one, &options);
            let key = if blocking { block_on(put) } else { put.await }.unwrap();
            assert_eq!(
                c.get(&key).await.unwrap().as_deref(),
                Some(&one[..]),
                "{name}"
            );
            // 20 MiB and 1 MiB objects: more than one MSET of at most 16 MiB.
            let objects: Vec<Vec<u8>> = (0..6)
                .map(|i| pattern(if i == 2 { 20 << 20 } else { 1 << 20 }, i))
                .collect();
            let slices: Vec<&[u8]> = objects.iter().map(Vec::as_slice).collect();
            let msets = server.calls("mset");
            let put = c.put_batch(&slices, &options);
            let keys = if blocking { block_on(put) } else { put.await }.unwrap();
            assert!(
                server.calls("mset") >= msets + 2,
                "{name}: one MSET per chunk"
            );
            let back = c.get_batch(&keys).await.unwrap();
            for (got, want) in back.iter().zip(&objects) {
                assert_eq!(got.as_deref(), Some(&want[..]), "{name}");
            }
        }
    }
    // Objects that expire keep their expiry on the bulk path.
    let mut expiring = plain.config();
    expiring.ttl_s = Some(600);
    let c = RedisConnector::new(expiring).unwrap();
    let big = pattern(1 << 20, 9);
    let keys = c.put_batch(&[&big[..], &big[..]], &opts()).await.unwrap();
    let single = c.put(&big, &opts()).await.unwrap();
    let blocking = block_on(c.put(&big, &opts())).unwrap();
    for key in keys.iter().chain([&single, &blocking]) {
        let ttl: i64 = plain
            .cli(&["PTTL", &format!("ps-globus:{}", key.id())])
            .trim()
            .parse()
            .unwrap();
        assert!(ttl > 500_000 && ttl <= 600_000, "{ttl}");
    }
}
