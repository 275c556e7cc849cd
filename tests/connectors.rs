//! Runs the connector conformance suite (`tests/conformance/`) against every connector.

mod conformance;

use conformance::{Capabilities, Harness, suite};
use ps_globus::connector::{FileConnector, LocalConnector};

suite!(local, || Harness::new(
    LocalConnector::new(),
    Capabilities {
        outlives_instances: false
    }
));

suite!(file, || {
    let dir = tempfile::tempdir().unwrap();
    let connector = FileConnector::new(dir.path()).unwrap();
    Harness::new(
        connector,
        Capabilities {
            outlives_instances: true,
        },
    )
    .keep(dir)
});
