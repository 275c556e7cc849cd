//! `transfer`, `stage-in`, `stage-out`, `task`, `status`, `config`, `site`, `doctor`:
//! thin commands over `ps_globus::staging`, the Transfer client and the manager.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use ps_globus::config::{Config, SiteConfig};
use ps_globus::staging::{PlannedItem, parse_batch, resolve_address, submit, wait_all};
use ps_globus::state::StateDb;
use ps_globus::transfer::{
    BatchOptions, ItemStatus, ManagerConfig, TaskQuery, TransferClient, TransferManager,
};
use serde_json::json;

use crate::{CliResult, Exit};

/// Options shared by `transfer`, `stage-in` and `stage-out`.
#[derive(Args)]
pub struct TransferArgs {
    /// Source: SITE:PATH, COLLECTION_UUID:PATH, or a local path (the current site).
    #[arg(required_unless_present = "batch")]
    source: Option<String>,
    /// Destination, in the same forms.
    #[arg(required_unless_present = "batch")]
    destination: Option<String>,
    /// One `SRC DST` pair a line (same address forms); `-` reads standard input.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["source", "destination"])]
    batch: Option<String>,
    /// Transfer directories recursively (default: Globus detects files and directories).
    #[arg(short, long)]
    recursive: bool,
    /// Skip files whose destination already matches: exists, size, mtime or checksum.
    #[arg(long, value_parser = ["exists", "size", "mtime", "checksum"])]
    sync_level: Option<String>,
    /// Do not verify checksums after copying (verification is on by default).
    #[arg(long)]
    no_verify_checksum: bool,
    /// Give up at this time (RFC 3339 or `YYYY-MM-DD HH:MM:SS`, UTC).
    #[arg(long)]
    deadline: Option<String>,
    /// The Globus task label (find the tasks again with `task list --label`).
    #[arg(long)]
    label: Option<String>,
    /// Show what would be transferred, submit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the task ids and return instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Stop waiting after this many seconds (the transfer goes on).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Exit code when --timeout expires.
    #[arg(long, default_value_t = 1)]
    timeout_exit_code: u8,
    /// One JSON document on stdout.
    #[arg(long)]
    json: bool,
}

/// Which side the current site fills in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both sides given.
    Any,
    /// Into the current site.
    In,
    /// Out of the current site.
    Out,
}

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Recent tasks of this identity at Globus.
    List {
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Only tasks with this label.
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One task's document.
    Show {
        task_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Wait for tasks: exit 0 if all succeeded, 1 if any failed. One request per poll
    /// for all of them.
    Wait {
        #[arg(required = true)]
        task_ids: Vec<String>,
        /// Stop waiting after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Exit code when --timeout expires.
        #[arg(long, default_value_t = 1)]
        timeout_exit_code: u8,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        polling_interval: f64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel tasks by id, by label, or all active ones.
    Cancel {
        task_ids: Vec<String>,
        #[arg(long, conflicts_with = "all")]
        label: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// A task's events.
    Events {
        task_id: String,
        #[arg(long)]
        json: bool,
    },
}

fn client() -> Result<TransferClient, Box<dyn std::error::Error>> {
    Ok(TransferClient::new(ps_globus::auth::default_authorizer()?)?)
}

/// The manager of this short-lived process: batches stay open until the command's
/// `flush`, so one command's items share tasks however long it takes to enqueue them.
async fn manager() -> Result<TransferManager, Box<dyn std::error::Error>> {
    let db = StateDb::open_default().await?;
    let config = ManagerConfig {
        quiet: Duration::from_secs(60),
        max_delay: Duration::from_secs(120),
        ..ManagerConfig::default()
    };
    Ok(TransferManager::start(db, client()?, config).await?)
}

fn sync_code(level: &str) -> u8 {
    match level {
        "exists" => 0,
        "size" => 1,
        "mtime" => 2,
        _ => 3,
    }
}

/// `transfer`, `stage-in`, `stage-out`.
pub async fn transfer(args: TransferArgs, direction: Direction) -> CliResult {
    let config = Config::load()?;
    let current = ps_globus::config::current_site(&config.sites).ok();
    let pairs = match &args.batch {
        Some(file) => parse_batch(&crate::read_input(file)?)?,
        None => vec![(
            args.source.clone().expect("clap requires it"),
            args.destination.clone().expect("clap requires it"),
        )],
    };
    let mut items = Vec::with_capacity(pairs.len());
    for (src, dst) in &pairs {
        let local =
            |addr: &str| !addr.contains(':') || addr.starts_with('/') || addr.starts_with('.');
        if direction == Direction::In && !local(dst) {
            return Err("stage-in: the destination must be a local path at this site".into());
        }
        if direction == Direction::Out && !local(src) {
            return Err("stage-out: the source must be a local path at this site".into());
        }
        items.push(PlannedItem {
            source: resolve_address(src, &config, current.as_deref())?,
            destination: resolve_address(dst, &config, current.as_deref())?,
            recursive: args.recursive.then_some(true),
        });
    }
    if args.dry_run {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"dry_run": true, "items": items}))?
            );
        } else {
            for i in &items {
                println!(
                    "{}:{} -> {}:{}",
                    i.source.collection,
                    i.source.path,
                    i.destination.collection,
                    i.destination.path
                );
            }
            eprintln!("dry run: {} item(s), nothing submitted", items.len());
        }
        return Ok(());
    }
    let options = BatchOptions {
        sync_level: args.sync_level.as_deref().map(sync_code),
        verify_checksum: !args.no_verify_checksum,
        deadline: args.deadline.clone(),
        label: args.label.clone(),
        ..BatchOptions::default()
    };
    let manager = manager().await?;
    let handles = submit(&manager, &items, &options).await?;
    let mut labels: Vec<String> = handles.iter().map(|h| h.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let mut task_ids = Vec::new();
    for label in &labels {
        if let Some(task) = manager.batch(label).await?.and_then(|b| b.task_id) {
            task_ids.push(task);
        }
    }
    if args.no_wait {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"items": items.len(), "task_ids": task_ids, "labels": labels})
                )?
            );
        } else {
            for id in &task_ids {
                println!("{id}");
            }
            eprintln!(
                "{} item(s) submitted in {} task(s); wait with `ps-globus task wait {}`",
                items.len(),
                task_ids.len(),
                task_ids.join(" ")
            );
        }
        return Ok(());
    }
    let bar = progress_bar(items.len() as u64, args.json);
    let timeout = Duration::from_secs(args.timeout.unwrap_or(365 * 24 * 3600));
    let waited = tokio::select! {
        waited = wait_all(&manager, &handles, timeout, |_| bar.inc(1)) => waited,
        _ = tokio::signal::ctrl_c() => {
            bar.abandon();
            eprintln!(
                "\nStopped waiting; the transfer goes on. Resume with `ps-globus task wait {ids}`, \
                 or stop it with `ps-globus task cancel {ids}`.",
                ids = task_ids.join(" ")
            );
            return Err(Box::new(Exit(130, String::new())));
        }
    };
    bar.finish_and_clear();
    let statuses = match waited {
        Ok(statuses) => statuses,
        Err(ps_globus::Error::WaitTimeout { .. }) => {
            eprintln!(
                "Transfer has yet to complete after {} seconds (tasks: {})",
                timeout.as_secs(),
                task_ids.join(" ")
            );
            return Err(Box::new(Exit(args.timeout_exit_code, String::new())));
        }
        Err(e) => return Err(e.into()),
    };
    report(&statuses, &task_ids, args.json)
}

fn progress_bar(len: u64, hidden: bool) -> indicatif::ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{bar:40}] {pos}/{len} items {elapsed_precise}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn report(statuses: &[ItemStatus], task_ids: &[String], json_out: bool) -> CliResult {
    let failed: Vec<&ItemStatus> = statuses.iter().filter(|s| s.state != "SUCCEEDED").collect();
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "task_ids": task_ids,
                "items": statuses.len(),
                "succeeded": statuses.len() - failed.len(),
                "failed": failed,
            }))?
        );
    } else {
        eprintln!(
            "{} of {} item(s) succeeded in {} task(s)",
            statuses.len() - failed.len(),
            statuses.len(),
            task_ids.len()
        );
    }
    for f in &failed {
        eprintln!(
            "FAILED {} -> {}: {} {}",
            f.source_path,
            f.destination_path,
            f.code.as_deref().unwrap_or(&f.state),
            f.description.as_deref().unwrap_or("")
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Box::new(Exit(
            1,
            format!("{} item(s) failed", failed.len()),
        )))
    }
}

/// `task ...`
pub async fn task(command: TaskCommand) -> CliResult {
    let client = client()?;
    match command {
        TaskCommand::List { limit, label, json } => {
            let query = TaskQuery {
                filter: label.map(|l| format!("label:{l}")),
                orderby: Some("request_time DESC".into()),
                limit: Some(limit),
                ..Default::default()
            };
            let page = client.task_list(&query).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.data)?);
            } else {
                for t in &page.data {
                    println!(
                        "{}  {:<9} {:<8} {}",
                        t.task_id,
                        t.status,
                        t.kind,
                        t.label.as_deref().unwrap_or("")
                    );
                }
            }
        }
        TaskCommand::Show { task_id, json } => {
            let t = client.task(&task_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!("Task ID:           {}", t.task_id);
                println!("Type:              {}", t.kind);
                println!("Status:            {}", t.status);
                println!("Label:             {}", t.label.as_deref().unwrap_or(""));
                println!(
                    "Details:           {}",
                    t.nice_status.as_deref().unwrap_or("")
                );
                println!("Files:             {}", t.files);
                println!("Bytes Transferred: {}", t.bytes_transferred);
                println!("Deadline:          {}", t.deadline.as_deref().unwrap_or(""));
                if let Some(f) = &t.fatal_error {
                    println!("Fatal Error:       {} {}", f.code, f.description);
                }
            }
        }
        TaskCommand::Wait {
            task_ids,
            timeout,
            timeout_exit_code,
            polling_interval,
            json,
        } => {
            let started = std::time::Instant::now();
            let interval = Duration::from_secs_f64(polling_interval.max(0.05));
            loop {
                let tasks = client.tasks_by_id(&task_ids, None).await?;
                let missing: Vec<&String> = task_ids
                    .iter()
                    .filter(|id| !tasks.iter().any(|t| &t.task_id == *id))
                    .collect();
                if !missing.is_empty() {
                    return Err(format!("no such task: {}", missing[0]).into());
                }
                if tasks
                    .iter()
                    .all(|t| matches!(t.status.as_str(), "SUCCEEDED" | "FAILED"))
                {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&tasks)?);
                    }
                    let failed: Vec<_> = tasks.iter().filter(|t| t.status == "FAILED").collect();
                    for t in &failed {
                        let (code, description) = t
                            .fatal_error
                            .as_ref()
                            .map(|f| (f.code.as_str(), f.description.as_str()))
                            .unwrap_or(("FAILED", ""));
                        eprintln!("task {} FAILED: {code} {description}", t.task_id);
                    }
                    return if failed.is_empty() {
                        Ok(())
                    } else {
                        Err(Box::new(Exit(1, String::new())))
                    };
                }
                if let Some(limit) = timeout
                    && started.elapsed() >= Duration::from_secs(limit)
                {
                    eprintln!("Task has yet to complete after {limit} seconds");
                    return Err(Box::new(Exit(timeout_exit_code, String::new())));
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = tokio::signal::ctrl_c() => {
                        eprintln!("\nStopped waiting; the tasks go on.");
                        return Err(Box::new(Exit(130, String::new())));
                    }
                }
            }
        }
        TaskCommand::Cancel {
            task_ids,
            label,
            all,
            json,
        } => {
            let mut ids = task_ids;
            if label.is_some() || all {
                let mut filter = "status:ACTIVE,INACTIVE".to_string();
                if let Some(label) = &label {
                    filter.push_str(&format!("/label:{label}"));
                }
                let query = TaskQuery {
                    filter: Some(filter),
                    limit: Some(1000),
                    ..Default::default()
                };
                ids.extend(
                    client
                        .task_list(&query)
                        .await?
                        .data
                        .into_iter()
                        .map(|t| t.task_id),
                );
            }
            if ids.is_empty() {
                eprintln!("no task to cancel");
            }
            let mut results = Vec::new();
            for id in ids {
                let result = client.cancel(&id).await?;
                if !json {
                    println!("{id}: {}", result.message);
                }
                results
                    .push(json!({"task_id": id, "code": result.code, "message": result.message}));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            }
        }
        TaskCommand::Events { task_id, json } => {
            let events = client.events(&task_id, 1000, false).await?.data;
            if json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                for e in &events {
                    println!("{}  {:<20} {}", e.time, e.code, e.description);
                }
            }
        }
    }
    Ok(())
}

/// `status [--watch]`: what the local state database tracks, with live totals. In a
/// terminal, `--watch` shows a bar per task in flight and an aggregate bar (files,
/// bytes, rate, ETA); elsewhere it prints plain lines.
pub async fn status(watch: bool, json_out: bool) -> CliResult {
    let manager = manager().await?;
    let live = watch && !json_out && std::io::stdout().is_terminal();
    let bars = indicatif::MultiProgress::new();
    let total = bars.add(indicatif::ProgressBar::new(0));
    let mut per_task: std::collections::HashMap<String, indicatif::ProgressBar> =
        Default::default();
    let (mut last_bytes, mut last_time) = (None::<i64>, std::time::Instant::now());
    loop {
        manager.poll_now().await?;
        let batches = manager.batches(100).await?;
        let active: Vec<_> = batches.iter().filter(|b| b.state != "DONE").collect();
        let bytes: i64 = active.iter().map(|b| b.bytes_transferred).sum();
        let files: i64 = active.iter().map(|b| b.files_transferred).sum();
        let total_files: i64 = active.iter().map(|b| b.files).sum();
        let elapsed = last_time.elapsed().as_secs_f64().max(1e-3);
        let rate = last_bytes.map_or(0.0, |b| (bytes - b).max(0) as f64 / elapsed);
        (last_bytes, last_time) = (Some(bytes), std::time::Instant::now());
        if json_out {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "active": active.len(),
                    "bytes_transferred": bytes,
                    "files_transferred": files,
                    "files": total_files,
                    "batches": batches,
                }))?
            );
            return Ok(());
        }
        let summary = format!(
            "in flight: {} task(s), {files}/{total_files} files, {} transferred, {}/s",
            active.len(),
            indicatif::HumanBytes(bytes as u64),
            indicatif::HumanBytes(rate as u64)
        );
        if live {
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} files, ETA {eta}  {msg}",
            ) {
                total.set_style(style.progress_chars("=> "));
            }
            total.set_prefix("all tasks");
            total.set_length(total_files.max(0) as u64);
            total.set_position(files.max(0) as u64);
            total.set_message(summary.clone());
            for b in batches.iter().filter(|b| b.state == "DONE") {
                let id = b.task_id.clone().unwrap_or_else(|| b.label.clone());
                if let Some(bar) = per_task.get(&id).filter(|bar| !bar.is_finished()) {
                    bar.set_position(b.files_transferred.max(0) as u64);
                    bar.finish_with_message(format!(
                        "{} {}",
                        b.status.as_deref().unwrap_or("DONE"),
                        indicatif::HumanBytes(b.bytes_transferred.max(0) as u64)
                    ));
                }
            }
            for b in &active {
                let id = b.task_id.clone().unwrap_or_else(|| b.label.clone());
                let bar = per_task.entry(id.clone()).or_insert_with(|| {
                    let bar = bars.add(indicatif::ProgressBar::new(0));
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "  {prefix} [{bar:30}] {pos}/{len} {msg}",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar.set_prefix(id);
                    bar
                });
                bar.set_length(b.files.max(0) as u64);
                bar.set_position(b.files_transferred.max(0) as u64);
                bar.set_message(format!(
                    "{} {}",
                    b.status.as_deref().unwrap_or(&b.state),
                    indicatif::HumanBytes(b.bytes_transferred.max(0) as u64)
                ));
            }
        } else {
            for b in &batches {
                println!(
                    "{:<38} {:<10} {:<9} {:>6}/{:<6} files {:>12} bytes",
                    b.task_id.as_deref().unwrap_or(&b.label),
                    b.state,
                    b.status.as_deref().unwrap_or("-"),
                    b.files_transferred,
                    b.files,
                    b.bytes_transferred
                );
            }
            println!("{summary}");
        }
        if !watch || active.is_empty() {
            if live {
                for bar in per_task.values() {
                    bar.finish();
                }
                total.finish_and_clear();
                println!("{summary}");
            }
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `config init`: writes a commented starting configuration.
pub fn config_init(force: bool) -> CliResult {
    let path = Config::default_path();
    if path.exists() && !force {
        return Err(format!("{} exists (use --force to overwrite)", path.display()).into());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &path,
        "# ps-globus configuration. See `ps-globus site add --help`.\n\
         # client_id = \"<your native app's client id>\"  # for `ps-globus login`\n\n\
         # [sites.NAME]\n\
         # collection = \"<collection uuid>\"\n\
         # collection_path = \"/projects/x\"\n\
         # local_path = \"/lus/projects/x\"\n\
         # host_regex = \"^login\\\\d+\"\n",
    )?;
    println!("{}", path.display());
    Ok(())
}

/// `site add NAME COLLECTION --collection-path P --local-path L [--host-regex R]`.
#[derive(Args)]
pub struct SiteAddArgs {
    name: String,
    collection: uuid::Uuid,
    /// The collection path that --local-path is.
    #[arg(long)]
    collection_path: String,
    /// Where that path is on this host.
    #[arg(long)]
    local_path: std::path::PathBuf,
    /// Hosts matching this regex are at this site.
    #[arg(long)]
    host_regex: Option<String>,
    /// Do not look the collection up at Globus.
    #[arg(long)]
    no_lookup: bool,
}

/// `site add`.
pub async fn site_add(args: SiteAddArgs) -> CliResult {
    let SiteAddArgs {
        name,
        collection,
        collection_path,
        local_path,
        host_regex,
        no_lookup,
    } = args;
    let path = Config::default_path();
    let mut config = Config::load_from(&path)?;
    if !local_path.is_dir() {
        return Err(format!(
            "local path {} is not a directory here; give the path the collection path maps to on this host",
            local_path.display()
        )
        .into());
    }
    if !collection_path.starts_with('/') {
        return Err("--collection-path must be absolute on the collection".into());
    }
    if let Some(re) = &host_regex {
        regex_lite::Regex::new(re).map_err(|e| format!("--host-regex: {e}"))?;
    }
    if !no_lookup {
        let endpoint = client()?.endpoint(&collection.to_string()).await?;
        eprintln!(
            "collection {collection}: {}",
            endpoint.display_name.as_deref().unwrap_or("(no name)")
        );
    }
    config.sites.insert(
        name.clone(),
        SiteConfig {
            collection,
            collection_path,
            local_path: local_path.canonicalize()?,
            host_regex,
        },
    );
    config.save_to(&path)?;
    eprintln!("site {name} saved in {}", path.display());
    Ok(())
}

/// `doctor`: every check, with a fix for each problem; exit 1 if any failed.
pub async fn doctor(json_out: bool) -> CliResult {
    let mut problems = 0;
    let mut checks = Vec::new();
    let mut check = |ok: bool, what: String, fix: &str| {
        if !ok {
            problems += 1;
        }
        if json_out {
            checks.push(json!({"ok": ok, "check": what, "fix": (!ok).then_some(fix)}));
        } else if ok {
            println!("ok    {what}");
        } else {
            println!("FAIL  {what}\n      fix: {fix}");
        }
    };
    let path = Config::default_path();
    let config = match Config::load_from(&path) {
        Ok(c) => {
            check(true, format!("config {}", path.display()), "");
            c
        }
        Err(e) => {
            check(
                false,
                format!("config: {e}"),
                "fix the file, or `ps-globus config init`",
            );
            Config::default()
        }
    };
    check(
        !config.sites.is_empty(),
        format!("{} site(s) configured", config.sites.len()),
        "`ps-globus site add NAME COLLECTION_UUID --collection-path P --local-path L`",
    );
    match ps_globus::config::current_site(&config.sites) {
        Ok(site) => {
            check(true, format!("current site: {site}"), "");
            let s = &config.sites[&site];
            check(
                s.local_path.is_dir(),
                format!("local path {} exists", s.local_path.display()),
                "mount it, or correct local_path for this site",
            );
        }
        Err(e) => check(false, e.to_string(), "set PS_GLOBUS_SITE or a host_regex"),
    }
    let auth = ps_globus::auth::default_authorizer();
    check(
        auth.is_ok(),
        match &auth {
            Ok(a) => format!("credentials: {}", a.identity()),
            Err(e) => format!("credentials: {e}"),
        },
        "`ps-globus login`, or set PS_GLOBUS_CLIENT_ID and PS_GLOBUS_CLIENT_SECRET",
    );
    if let Ok(auth) = auth {
        let client = TransferClient::new(Arc::clone(&auth))?;
        for (name, site) in &config.sites {
            match client
                .ls(&site.collection.to_string(), &site.collection_path)
                .await
            {
                Ok(_) => check(
                    true,
                    format!("site {name}: {} reachable", site.collection_path),
                    "",
                ),
                Err(e) => {
                    let fix = match &e {
                        ps_globus::Error::ConsentRequired { collections, .. } => {
                            format!(
                                "ps-globus login --collection {}",
                                collections.join(" --collection ")
                            )
                        }
                        e if e.needs_login() => "ps-globus login".into(),
                        _ => "check the collection id and the collection path".into(),
                    };
                    check(false, format!("site {name}: {e}"), &fix)
                }
            }
        }
    }
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"problems": problems, "checks": checks}))?
        );
    }
    if problems > 0 {
        return Err(Box::new(Exit(1, format!("{problems} problem(s)"))));
    }
    Ok(())
}
