//! `doctor`: every check of the set-up, with a fix for each problem; exit 1 if any
//! failed.

use std::sync::Arc;

use ps_globus::auth::Authorizer;
use ps_globus::config::Config;
use ps_globus::transfer::TransferClient;
use serde_json::{Value, json};

use super::settings;
use crate::output::Output;
use crate::{CliResult, Exit};

/// The checks made so far, printed as they come (or kept for `--json`).
struct Report {
    json: bool,
    problems: usize,
    checks: Vec<Value>,
}

impl Report {
    fn check(&mut self, ok: bool, what: String, fix: &str) {
        if !ok {
            self.problems += 1;
        }
        if self.json {
            self.checks
                .push(json!({"ok": ok, "check": what, "fix": (!ok).then_some(fix)}));
        } else if ok {
            println!("ok    {what}");
        } else {
            println!("FAIL  {what}\n      fix: {fix}");
        }
    }
}

/// `doctor [-F json|unix]`.
pub async fn doctor(out: Output) -> CliResult {
    let mut report = Report {
        json: out.machine(),
        problems: 0,
        checks: Vec::new(),
    };
    let config = check_config(&mut report);
    check_current_site(&mut report, &config);
    check_state_database(&mut report).await;
    if let Some(auth) = check_credentials(&mut report) {
        check_sites_reachable(&mut report, &config, auth).await?;
    }
    check_redis(&mut report, &config).await;
    if out.machine() {
        out.emit(&json!({"problems": report.problems, "checks": report.checks}))?;
    }
    if report.problems > 0 {
        return Err(Box::new(Exit(1, format!("{} problem(s)", report.problems))));
    }
    Ok(())
}

fn check_config(report: &mut Report) -> Config {
    let path = &settings().config_path;
    let config = match Config::load_from(path) {
        // A missing file reads as an empty configuration; it is still not "ok".
        Ok(c) if !path.exists() => {
            report.check(
                false,
                format!("config {} does not exist", path.display()),
                "`ps-globus config init`, then `ps-globus site add` for each site",
            );
            c
        }
        Ok(c) => {
            report.check(true, format!("config {}", path.display()), "");
            c
        }
        Err(e) => {
            report.check(
                false,
                format!("config: {e}"),
                "fix the file, or `ps-globus config init`",
            );
            Config::default()
        }
    };
    report.check(
        !config.sites.is_empty(),
        format!("{} site(s) configured", config.sites.len()),
        "`ps-globus site add NAME COLLECTION_UUID --collection-path P --local-path L`",
    );
    config
}

fn check_current_site(report: &mut Report, config: &Config) {
    match ps_globus::config::current_site(&config.sites, settings().site.as_deref()) {
        Ok(site) => {
            report.check(true, format!("current site: {site}"), "");
            let s = &config.sites[&site];
            report.check(
                s.local_path.is_dir(),
                format!("local path {} exists", s.local_path.display()),
                "mount it, or correct local_path for this site",
            );
        }
        Err(e) => report.check(false, e.to_string(), "set PS_GLOBUS_SITE or a host_regex"),
    }
}

/// Opens the state database (creating it, as any command would) and says which engine
/// holds it, where, how it runs (journal mode, server version) and at which schema
/// version.
async fn check_state_database(report: &mut Report) {
    let settings = settings();
    let described = async {
        let db = ps_globus::state::StateDb::open_default(settings).await?;
        let mode = db.mode().await?;
        let version = db.schema_version().await?;
        let mut what = format!(
            "state database: {} at {} ({mode}, schema version {version})",
            db.engine(),
            db.path().display()
        );
        // A degraded mode that still works is said, not failed.
        if let Some(warning) = db.warning() {
            what.push_str(&format!("; {warning}"));
        }
        db.close().await;
        Ok::<_, ps_globus::Error>(what)
    };
    match described.await {
        Ok(what) => report.check(true, what, ""),
        Err(e) => report.check(false, format!("state database: {e}"), STATE_FIX),
    }
}

/// What to do when the state database cannot be opened or read.
const STATE_FIX: &str = "make PS_GLOBUS_HOME (or the default state directory) a writable \
    directory on a local disk with free space; with a state_url (PS_GLOBUS_STATE_URL or \
    the configuration file), check that its server answers and its user may create tables";

fn check_credentials(report: &mut Report) -> Option<Arc<dyn Authorizer>> {
    let auth = ps_globus::auth::default_authorizer(settings());
    report.check(
        auth.is_ok(),
        match &auth {
            Ok(a) => format!("credentials: {}", a.identity()),
            Err(e) => format!("credentials: {e}"),
        },
        "`ps-globus login`, or set PS_GLOBUS_CLIENT_ID and PS_GLOBUS_CLIENT_SECRET",
    );
    auth.ok()
}

async fn check_sites_reachable(
    report: &mut Report,
    config: &Config,
    auth: Arc<dyn Authorizer>,
) -> CliResult {
    let client = TransferClient::new(settings(), auth)?;
    for (name, site) in &config.sites {
        match client
            .ls(&site.collection.to_string(), &site.collection_path)
            .await
        {
            Ok(_) => report.check(
                true,
                format!("site {name}: {} reachable", site.collection_path),
                "",
            ),
            Err(e) => {
                let fix = match (&e, crate::hint::hint(&e)) {
                    (_, Some(hint)) if e.needs_login() => hint,
                    (ps_globus::Error::Unreachable(_), _) => format!(
                        "the Transfer service at {} does not answer: check the network, and \
                         PS_GLOBUS_TRANSFER_URL if you set it (an emulator must be running: \
                         `ps-globus sim serve`)",
                        settings().transfer_url
                    ),
                    _ => "check the collection id and the collection path".into(),
                };
                report.check(false, format!("site {name}: {e}"), &fix)
            }
        }
    }
    Ok(())
}

/// Each configured Redis server (`[redis.NAME]`): it answers, a probe object goes in,
/// comes back and goes away, and its memory policy cannot silently drop objects.
async fn check_redis(report: &mut Report, config: &Config) {
    use ps_globus::connector::{Connector, PutOptions, RedisConnector};
    for (name, redis) in &config.redis {
        let what = format!("redis {name} ({})", redis.url());
        let connector = match RedisConnector::new(redis.clone()) {
            Ok(c) => c,
            Err(e) => {
                report.check(false, format!("{what}: {e}"), "fix the [redis] table");
                continue;
            }
        };
        let started = std::time::Instant::now();
        let probe = async {
            let version = connector.ping().await?;
            let data = b"ps-globus doctor probe";
            let key = connector.put(data, &PutOptions::default()).await?;
            let back = connector.get(&key).await?;
            connector.evict(&key).await?;
            let intact = back.as_deref() == Some(&data[..]);
            Ok::<_, ps_globus::Error>((version, intact))
        };
        match probe.await {
            Ok((version, true)) => report.check(
                true,
                format!(
                    "{what}: Redis {version}, put/get/evict in {:.1} ms",
                    started.elapsed().as_secs_f64() * 1e3
                ),
                "",
            ),
            Ok((_, false)) => report.check(
                false,
                format!("{what}: a probe object came back changed or not at all"),
                "check that nothing else writes under this prefix, and the server's memory policy",
            ),
            Err(e) => {
                let fix = crate::hint::hint(&e).unwrap_or_else(|| match e {
                    ps_globus::Error::Unreachable(_) | ps_globus::Error::Timeout(_) => {
                        "start the server, or check host, port, tls and the firewall".into()
                    }
                    _ => "check the [redis] table".into(),
                });
                report.check(false, format!("{what}: {e}"), &fix);
                continue;
            }
        }
        if let Ok(Some(policy)) = connector.maxmemory_policy().await {
            report.check(
                !policy.starts_with("allkeys-"),
                format!("redis {name}: maxmemory-policy {policy}"),
                "this policy evicts objects that proxies still name when the server is full: \
                 set maxmemory-policy noeviction (puts then fail with OOM instead)",
            );
        }
    }
}
