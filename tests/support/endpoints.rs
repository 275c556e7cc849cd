//! An endpoint served from this test process (for the connector's conformance run).

use std::path::Path;
use std::time::{Duration, Instant};

use ps_globus::connector::endpoint::config::EndpointFileConfig;
use uuid::Uuid;

/// A running endpoint; stopped when dropped (its objects stay in its directory).
pub struct Running {
    pub uuid: Uuid,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Configures a fresh endpoint under `home` and serves it on the library's runtime,
    /// returning once its configuration names its host (it is listening by then).
    pub fn start(home: &Path) -> Running {
        let name = crate::support::unique_name("ep");
        let config = EndpointFileConfig::new(&name, 0).unwrap();
        let dir = ps_globus_endpoint::manage::configure(home, &config).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = dir.clone();
        let task = ps_globus::internal::handle().spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            ps_globus_endpoint::serve::run(&serving, shutdown).await
        });
        let limit = Instant::now() + Duration::from_secs(20);
        while !EndpointFileConfig::load(&dir).is_ok_and(|c| c.host.is_some()) {
            assert!(!task.is_finished(), "the endpoint stopped at start");
            assert!(Instant::now() < limit, "the endpoint did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Running {
            uuid: config.uuid,
            stop: Some(stop),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
