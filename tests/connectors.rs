//! Runs the public connector conformance suite (`ps_globus::conformance`) against every
//! connector of this crate. Each connector reports its own capabilities.

use ps_globus::conformance::Harness;
use ps_globus::connector::{Connector, FileConnector, LocalConnector, RedisConnector};

ps_globus::conformance_suite!(globus, || {
    let (sites, connector) =
        crate::support::sites::connector("a", &crate::support::unique_name("conf"));
    Harness::new(connector).keep(sites)
});

ps_globus::conformance_suite!(local, || Harness::new(LocalConnector::new()));

ps_globus::conformance_suite!(file, || {
    let dir = tempfile::tempdir().unwrap();
    Harness::new(FileConnector::new(dir.path()).unwrap()).keep(dir)
});

ps_globus::conformance_suite!(redis, || {
    let server = crate::support::redis_server::RedisServer::start();
    Harness::new(RedisConnector::new(server.config()).unwrap()).keep(server)
});

// Small objects to Redis, large ones to files: every object outlives the instance.
ps_globus::conformance_suite!(multi_redis_file, || {
    let server = crate::support::redis_server::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let multi = crate::support::redis_server::small_to_redis(
        &server,
        64 << 10,
        FileConnector::new(dir.path()).unwrap().config(),
    );
    Harness::new(multi).keep(server).keep(dir)
});

// Small objects to Redis, large ones through Globus between two emulated sites.
ps_globus::conformance_suite!(multi_redis_globus, || {
    let server = crate::support::redis_server::RedisServer::start();
    let (sites, globus) =
        crate::support::sites::connector("a", &crate::support::unique_name("conf-multi"));
    let multi = crate::support::redis_server::small_to_redis(&server, 64 << 10, globus.config());
    Harness::new(multi).keep(server).keep(sites).keep(globus)
});

// Endpoints: a connector rebuilt from its config finds its endpoint in the process's own
// PROXYSTORE_HOME (never a directory a proxy names), so the suite runs in a child
// process that has one, each check against a fresh endpoint served in that process.
ps_globus::conformance_suite!(@sequential endpoint_suite_in_a_child, || {
    let home = ps_globus::Settings::global().proxystore_home.clone();
    let running = crate::support::endpoints::serve_new(&home);
    let connector = ps_globus::connector::EndpointConnector::new(ps_globus::connector::EndpointConfig {
        endpoints: vec![running.uuid],
        proxystore_dir: None,
        timeout_ms: None,
    })
    .unwrap();
    Harness::new(connector).keep(running)
});

#[test]
fn the_endpoint_connector_passes_the_suite() {
    let home = tempfile::tempdir().unwrap();
    let out = crate::support::run_child_output(
        "connectors::endpoint_suite_in_a_child",
        "PROXYSTORE_HOME",
        home.path(),
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Every check ran (not a filter that matched nothing).
    assert_eq!(said.matches("conformance: ").count(), 16, "{said}");
}
