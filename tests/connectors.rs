//! Runs the public connector conformance suite (`ps_globus::conformance`) against every
//! connector of this crate. Each connector reports its own capabilities.

mod support;

use ps_globus::conformance::Harness;
use ps_globus::connector::{
    Connector, FileConnector, LocalConnector, MultiConnector, Policy, RedisConnector,
};

ps_globus::conformance_suite!(globus, || {
    let (sites, connector) = support::sites::connector("a", &support::unique_name("conf"));
    Harness::new(connector).keep(sites)
});

ps_globus::conformance_suite!(local, || Harness::new(LocalConnector::new()));

ps_globus::conformance_suite!(file, || {
    let dir = tempfile::tempdir().unwrap();
    Harness::new(FileConnector::new(dir.path()).unwrap()).keep(dir)
});

ps_globus::conformance_suite!(redis, || {
    let server = support::redis_server::RedisServer::start();
    Harness::new(RedisConnector::new(server.config()).unwrap()).keep(server)
});

// Small objects to Redis, large ones to files: every object outlives the instance.
ps_globus::conformance_suite!(multi_redis_file, || {
    let server = support::redis_server::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let small = Policy {
        max_size: Some(64 << 10),
        priority: 1,
        ..Policy::default()
    };
    let multi = MultiConnector::new([
        (
            "small",
            RedisConnector::new(server.config()).unwrap().config(),
            small,
        ),
        (
            "large",
            FileConnector::new(dir.path()).unwrap().config(),
            Policy::default(),
        ),
    ])
    .unwrap();
    Harness::new(multi).keep(server).keep(dir)
});

// Small objects to Redis, large ones through Globus between two emulated sites.
ps_globus::conformance_suite!(multi_redis_globus, || {
    let server = support::redis_server::RedisServer::start();
    let (sites, globus) = support::sites::connector("a", &support::unique_name("conf-multi"));
    let small = Policy {
        max_size: Some(64 << 10),
        priority: 1,
        ..Policy::default()
    };
    let multi = MultiConnector::new([
        (
            "small",
            RedisConnector::new(server.config()).unwrap().config(),
            small,
        ),
        ("large", globus.config(), Policy::default()),
    ])
    .unwrap();
    Harness::new(multi).keep(server).keep(sites).keep(globus)
});
