//! An endpoint served from this test process (for the connector's conformance run).

use std::path::Path;

use ps_globus::connector::endpoint::config::EndpointFileConfig;
use ps_globus_endpoint::serve::InProcess;

/// Configures a fresh endpoint under `home` and serves it from this process until the
/// result is dropped.
pub fn serve_new(home: &Path) -> InProcess {
    let config = EndpointFileConfig::new(&crate::support::unique_name("ep"), 0).unwrap();
    let dir = ps_globus_endpoint::manage::configure(home, &config).unwrap();
    InProcess::start(&dir).unwrap()
}
