//! Runs the connector conformance suite (`tests/conformance/`) against every connector.

mod conformance;
mod support;

use conformance::{Capabilities, Harness, suite};
use ps_globus::connector::{FileConnector, LocalConnector};

suite!(globus, || {
    let (sites, connector) = support::sites::connector("a", &support::unique_name("conf"));
    Harness::new(
        connector,
        Capabilities {
            outlives_instances: true,
            max_key_len: 600,
        },
    )
    .keep(sites)
});

suite!(local, || Harness::new(
    LocalConnector::new(),
    Capabilities {
        outlives_instances: false,
        max_key_len: 200,
    }
));

suite!(file, || {
    let dir = tempfile::tempdir().unwrap();
    let connector = FileConnector::new(dir.path()).unwrap();
    Harness::new(
        connector,
        Capabilities {
            outlives_instances: true,
            max_key_len: 200,
        },
    )
    .keep(dir)
});
