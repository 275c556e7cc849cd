//! An emulator with two collections and a plain HTTP client, for tests.

use std::path::{Path, PathBuf};

use ps_globus_sim::{CollectionConfig, FaultConfig, FaultKind, SimConfig, Simulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const TOKEN: &str = "test-static-token";

/// A running emulator with collections `a` and `b` in temporary directories.
pub struct Emu {
    pub sim: Simulator,
    pub http: reqwest::Client,
    pub token: String,
    pub a: String,
    pub b: String,
    pub dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Emu {
    pub fn start() -> Emu {
        Self::with(|_| {})
    }

    /// Starts with the default test config changed by `tweak`.
    pub fn with(tweak: impl FnOnce(&mut SimConfig)) -> Emu {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        Self::start_in(dirs, tweak)
    }

    /// Stops this emulator and starts another on the same collections, with the default
    /// test config changed by `tweak` (a service restart).
    #[allow(dead_code)]
    pub fn restart(self, tweak: impl FnOnce(&mut SimConfig)) -> Emu {
        let Emu { sim, dirs, .. } = self;
        sim.shutdown();
        Self::start_in(dirs, tweak)
    }

    fn start_in(
        (da, db): (tempfile::TempDir, tempfile::TempDir),
        tweak: impl FnOnce(&mut SimConfig),
    ) -> Emu {
        let mut config = SimConfig {
            static_token: Some(TOKEN.into()),
            fault_retry_ms: 20,
            ..SimConfig::default()
        };
        for (name, dir) in [("a", da.path()), ("b", db.path())] {
            config.collections.insert(
                name.into(),
                CollectionConfig {
                    root: dir.to_path_buf(),
                    ..Default::default()
                },
            );
        }
        tweak(&mut config);
        let sim = Simulator::start(config).unwrap();
        // reqwest is built without a default TLS provider (see Cargo.toml).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (a, b) = (
            sim.collection("a").unwrap().id.to_string(),
            sim.collection("b").unwrap().id.to_string(),
        );
        Emu {
            sim,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            token: TOKEN.into(),
            a,
            b,
            dirs: (da, db),
        }
    }

    pub fn root_a(&self) -> &Path {
        self.dirs.0.path()
    }

    pub fn root_b(&self) -> &Path {
        self.dirs.1.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "{}{}",
            self.sim.transfer_url(),
            path.trim_start_matches('/')
        )
    }

    /// A Transfer API call with the test token; returns (status, body as JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(&self.token.clone(), method, path, body).await
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn submission_id(&self) -> String {
        let (status, body) = self.get("/v0.10/submission_id").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["value"].as_str().unwrap().to_owned()
    }

    /// A transfer document from a to b with `items` (source, destination) and `extra` fields.
    pub async fn transfer_doc(&self, items: &[(&str, &str)], extra: Value) -> Value {
        let mut doc = json!({
            "DATA_TYPE": "transfer",
            "submission_id": self.submission_id().await,
            "source_endpoint": self.a,
            "destination_endpoint": self.b,
            "DATA": items.iter().map(|(s, d)| json!({"DATA_TYPE": "transfer_item", "source_path": s, "destination_path": d})).collect::<Vec<_>>(),
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            doc[k] = v;
        }
        doc
    }

    /// Submits a transfer and returns its task id.
    pub async fn submit(&self, items: &[(&str, &str)], extra: Value) -> String {
        let doc = self.transfer_doc(items, extra).await;
        let (status, body) = self.post("/v0.10/transfer", doc).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["code"], "Accepted");
        body["task_id"].as_str().unwrap().to_owned()
    }

    /// The one delete task made so far (failing the test if there are more, or none),
    /// waited for until final; its document.
    pub async fn the_one_delete_task(&self) -> Value {
        let (_, list) = self.get("/v0.10/task_list?filter=type:DELETE").await;
        let deletes = list["DATA"].as_array().unwrap();
        assert_eq!(
            deletes.len(),
            1,
            "the evictions made one delete task: {list}"
        );
        let task = deletes[0]["task_id"].as_str().unwrap();
        self.wait(task, "final").await
    }

    /// Waits (event-driven, in the emulator) until `until` holds for the task; returns its doc.
    pub async fn wait(&self, task: &str, until: &str) -> Value {
        let url = self.url(&format!(
            "/__sim/wait/{task}?until={until}&timeout_ms=60000"
        ));
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "task {task} never reached {until}"
        );
        response.json().await.unwrap()
    }

    pub async fn task(&self, task: &str) -> Value {
        let (status, body) = self.get(&format!("/v0.10/task/{task}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// A client-credentials token for a confidential client registered in the config.
    pub async fn client_token(&self, id: &str, secret: &str, scope: &str) -> String {
        let response = self
            .http
            .post(format!("{}v2/oauth2/token", self.sim.auth_url()))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }
}

/// Writes `bytes` at `root/relative`, creating directories.
pub fn write(root: &Path, relative: &str, bytes: &[u8]) -> PathBuf {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A fault that always fires (probability 1), on a path or a route, `count` times (or always).
pub fn fault(
    kind: FaultKind,
    path: Option<&str>,
    route: Option<&str>,
    count: Option<u64>,
) -> FaultConfig {
    FaultConfig {
        kind,
        path: path.map(Into::into),
        route: route.map(Into::into),
        probability: 1.0,
        after: 0,
        count,
        retry_after: 1,
    }
}
