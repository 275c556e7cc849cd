//! `lease list|reap|end`: the lease lifetimes of the state database.

use clap::Subcommand;
use ps_globus::proxy::{LeaseReport, end_lease, list_leases, reap_expired_leases};
use ps_globus::state::StateDb;

use super::settings;
use crate::CliResult;
use crate::output::{Output, print_table};

/// The `lease` subcommands.
#[derive(Subcommand)]
pub enum LeaseCommand {
    /// List the leases: store, objects, expiry.
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Evict the objects of every expired lease (also those whose owner died); a cron
    /// job or a workflow's last step may run it.
    Reap,
    /// End a lease now: evict its objects.
    End {
        /// The lease's id (`lease list`).
        id: String,
    },
}

/// One line per lease: what was evicted, what was left, and why.
fn print_report(report: &LeaseReport) {
    let why = report
        .why
        .as_deref()
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    eprintln!(
        "lease {}: evicted {}, left {}{why}",
        report.id, report.evicted, report.left
    );
}

/// `lease ...`
pub async fn run(command: LeaseCommand) -> CliResult {
    let db = StateDb::open_default(settings()).await?;
    match command {
        LeaseCommand::List { out } => {
            let leases = list_leases(&db).await?;
            let now = chrono::Utc::now();
            if out.machine() {
                let data: Vec<serde_json::Value> = leases
                    .iter()
                    .map(|l| {
                        let mut doc = serde_json::to_value(l).unwrap_or_default();
                        doc["state"] = l.state(now).into();
                        doc
                    })
                    .collect();
                return out.emit(&serde_json::json!({ "DATA": data }));
            }
            let rows: Vec<Vec<String>> = leases
                .iter()
                .map(|l| {
                    let state = l.state(now);
                    vec![
                        l.id.clone(),
                        l.store.clone(),
                        l.objects.to_string(),
                        l.expires_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        state.into(),
                    ]
                })
                .collect();
            print_table(&["Lease", "Store", "Objects", "Expires", "State"], &rows);
        }
        LeaseCommand::Reap => {
            let reports = reap_expired_leases(&db).await?;
            for report in &reports {
                print_report(report);
            }
            let ended = reports.iter().filter(|r| r.forgotten).count();
            eprintln!(
                "ended {ended} expired lease(s); left {} for a process that reaches their objects",
                reports.len() - ended
            );
        }
        LeaseCommand::End { id } => {
            let Some(report) = end_lease(&db, &id).await? else {
                return Err(format!(
                    "no lease {id:?} to end (see `ps-globus lease list`; one that is \
                     'ending' is being evicted by another process)"
                )
                .into());
            };
            print_report(&report);
            if !report.forgotten {
                return Err(format!(
                    "lease {id} is not ended here: {} object(s) left",
                    report.left
                )
                .into());
            }
        }
    }
    Ok(())
}
