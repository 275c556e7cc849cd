//! Runs the public connector conformance suite (`ps_globus::conformance`) against every
//! connector of this crate. Each connector reports its own capabilities.

mod support;

use ps_globus::conformance::Harness;
use ps_globus::connector::{FileConnector, LocalConnector, RedisConnector};

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
