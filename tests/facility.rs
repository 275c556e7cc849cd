//! Several hosts of one facility sharing one PostgreSQL state database.
//!
//! Each "host" is a separate process of this test binary with a host identity of its
//! own (`PS_GLOBUS_HOST_ID`), so a process on another host is judged alive by its
//! heartbeat, never by its pid, exactly as on separate machines. They share one
//! emulator (this process) and one database on the throw-away PostgreSQL server
//! (`support/pg_cluster.rs`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::emulator::{Emu, TOKEN};
use crate::support::managers::fast_retry;
use crate::support::pg_cluster::fresh_database;
use ps_globus::auth::StaticTokenAuthorizer;
use ps_globus::state::StateDb;
use ps_globus::transfer::{
    BatchOptions, ItemSpec, ItemState, ManagerConfig, TransferClient, TransferManager,
};

const LONG: Duration = Duration::from_secs(120);
const HOST_ENV: &str = "PS_GLOBUS_TEST_HOST";
/// The pending-task limit of the emulator and the hosts' managers.
const PENDING_LIMIT: usize = 40;

/// What a host does, and where.
struct Role<'a> {
    emu: &'a Emu,
    url: &'a str,
    host: &'a str,
    /// `enqueue` (COUNT items, then wait for them), `lead` (enqueue COUNT items, flush,
    /// say their ids, then wait to be killed) or `wait` (wait for the ids in ITEMS).
    role: &'a str,
    count: usize,
    prefix: &'a str,
    /// Each item in a batch of its own (a distinct task label), so none coalesce.
    separate: bool,
    /// Items whose batches keep their label, as a Globus store's do.
    keep_label: bool,
    items: String,
}

impl Role<'_> {
    /// Starts this host; it waits for a line on its stdin before it enqueues.
    fn spawn(&self) -> Host {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--ignored", "--exact", "facility::host", "--nocapture"])
            .env("PS_GLOBUS_HOST_ID", self.host)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let vars = [
            ("URL", self.emu.sim.transfer_url().to_owned()),
            ("DB", self.url.to_owned()),
            ("ROLE", self.role.to_owned()),
            ("COUNT", self.count.to_string()),
            ("PREFIX", self.prefix.to_owned()),
            ("SEPARATE", (self.separate as u8).to_string()),
            ("KEEP_LABEL", (self.keep_label as u8).to_string()),
            ("ITEMS", self.items.clone()),
            ("A", self.emu.a.clone()),
            ("B", self.emu.b.clone()),
        ];
        for (k, v) in vars {
            command.env(format!("{HOST_ENV}_{k}"), v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Host { child, stdout }
    }
}

/// A running host process.
struct Host {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Host {
    fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The value of the next line the host prints that starts with `tag`.
    fn said(&mut self, tag: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stdout.read_line(&mut line).unwrap();
            assert!(read > 0, "the host ended before saying {tag}");
            if let Some(rest) = line.trim_end().strip_prefix(tag) {
                return rest.trim().to_owned();
            }
        }
    }

    fn finish(mut self) {
        assert_eq!(self.said("DONE"), "ok");
        assert!(self.child.wait().unwrap().success());
    }
}

fn manager_config() -> ManagerConfig {
    let mut config = ManagerConfig::default();
    // The emulator's limit, so that only the hosts' shared admission keeps to it.
    config.max_pending_tasks = PENDING_LIMIT;
    config.poll_min = Duration::from_millis(50);
    config.poll_idle = Duration::from_millis(50);
    config.poll_max = Duration::from_millis(200);
    config.lease_ttl = Duration::from_secs(1);
    config
}

/// One host of the tests below (run by them, in a process of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a host process of the facility tests, which run it themselves"]
async fn host() {
    let var = |k: &str| std::env::var(format!("{HOST_ENV}_{k}")).expect("run by a facility test");
    let client =
        TransferClient::with_base_url(&var("URL"), Arc::new(StaticTokenAuthorizer::new(TOKEN)))
            .unwrap()
            .with_retry(fast_retry())
            .unwrap();
    let settings = ps_globus::Settings::from_env();
    let db = StateDb::open_url(&var("DB"), &settings).await.unwrap();
    let mut config = manager_config();
    if var("SEPARATE") == "1" {
        // Every batch goes as soon as it closes, rather than waiting open for one of the
        // identity's 3 running slots (Globus's) to free: so that submissions press on the
        // pending-task limit.
        config.running_slots = 0;
        // Nor do they queue for the request budget (the emulator enforces no rate here).
        config.request_budget = 0.0;
    } else {
        // Batches stay open a little longer than a burst takes to enqueue on a loaded
        // machine, so that every host's is open or closed when the first is claimed.
        config.quiet = Duration::from_millis(200);
        config.max_delay = Duration::from_secs(2);
    }
    let m = TransferManager::start(db, client, config).await.unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let ids: Vec<i64> = match var("ROLE").as_str() {
        "wait" => var("ITEMS")
            .split(',')
            .map(|id| id.parse().unwrap())
            .collect(),
        role => {
            let prefix = var("PREFIX");
            let separate = var("SEPARATE") == "1";
            let enqueues = (0..var("COUNT").parse::<usize>().unwrap()).map(|i| {
                let mut spec = ItemSpec::new(
                    var("A"),
                    format!("/in/{i}"),
                    var("B"),
                    format!("/{prefix}/{i}"),
                );
                if separate {
                    spec = spec.options({
                        let mut built = BatchOptions::default();
                        built.label = Some(format!("{prefix}-{i}"));
                        built
                    });
                } else if var("KEEP_LABEL") == "1" {
                    spec = spec.options({
                        let mut built = BatchOptions::default();
                        built.keep_label = true;
                        built
                    });
                }
                m.enqueue(spec)
            });
            let enqueued = futures_util::future::try_join_all(enqueues).await.unwrap();
            // Every item travels in the batch its answer named (a reader finds the task
            // by that label), wherever the batch was opened.
            for e in &enqueued {
                let status = m.item(e.item).await.unwrap();
                assert_eq!(status.label, e.label, "item {}", e.item);
            }
            let ids: Vec<i64> = enqueued.iter().map(|e| e.item).collect();
            if role == "lead" {
                m.flush().await.unwrap();
                let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
                println!("ITEMS {}", list.join(","));
                std::io::stdout().flush().unwrap();
                std::future::pending::<()>().await;
            }
            ids
        }
    };
    for id in ids {
        let done = m.wait(id, LONG).await.unwrap();
        assert_eq!(done.state, ItemState::Succeeded, "item {id}: {done:?}");
    }
    println!("POLLS {}", m.poll_cycles());
    println!("DONE ok");
    m.shutdown();
}

/// One facility test at a time: each runs several host processes, which must not
/// compete with another test's for the CPU (a late host is a host that missed the burst).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn sources(emu: &Emu, count: usize) {
    for i in 0..count {
        let path = emu.root_a().join(format!("in/{i}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("item {i}")).unwrap();
    }
}

fn delivered(emu: &Emu, prefix: &str, count: usize) {
    for i in 0..count {
        let arrived = std::fs::read(emu.root_b().join(format!("{prefix}/{i}"))).unwrap();
        assert_eq!(arrived, format!("item {i}").as_bytes(), "{prefix}/{i}");
    }
}

/// Runs `hosts` hosts at once, each enqueueing `count` items under its own prefix
/// (all released together), and waits for every one to see its items succeed.
fn run_hosts(emu: &Emu, url: &str, hosts: usize, count: usize, separate: bool) {
    run_hosts_with(emu, url, hosts, count, separate, false)
}

/// [`run_hosts`], with items whose batches keep their label (a Globus store's) when
/// `keep_label`.
fn run_hosts_with(
    emu: &Emu,
    url: &str,
    hosts: usize,
    count: usize,
    separate: bool,
    keep_label: bool,
) {
    let names: Vec<String> = (0..hosts).map(|h| format!("host-{h}")).collect();
    let mut running: Vec<Host> = names
        .iter()
        .map(|name| {
            Role {
                emu,
                url,
                host: name,
                role: "enqueue",
                count,
                prefix: name,
                separate,
                keep_label,
                items: String::new(),
            }
            .spawn()
        })
        .collect();
    for host in &mut running {
        host.go();
    }
    for host in running {
        host.finish();
    }
    for name in &names {
        delivered(emu, name, count);
    }
}

/// Three hosts enqueueing at the same moment make the tasks one host would: every
/// process's waiting batches join the first one claimed for submission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_enqueueing_at_once_coalesce_into_the_tasks_of_one() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let emu = Emu::with(|c| c.task_latency_ms = 300);
    sources(&emu, 300);
    let one = fresh_database().await;
    run_hosts(&emu, &one, 1, 300, false);
    let tasks_of_one_host = emu.sim.stats().tasks();

    let shared = fresh_database().await;
    run_hosts(&emu, &shared, 3, 100, false);
    let tasks_of_three = emu.sim.stats().tasks() - tasks_of_one_host;
    let pool = sqlx::PgPool::connect(&shared).await.unwrap();
    // (owner, state, created, closed, submitted): what to look at when this fails.
    type Batch = (String, String, i64, Option<i64>, Option<i64>);
    let batches: Vec<Batch> = sqlx::query_as(
        "SELECT owner, state, created_at, closed_at, submitted_at FROM batches ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        tasks_of_three <= tasks_of_one_host.max(1),
        "3 hosts x 100 items made {tasks_of_three} tasks; 1 host x 300 made \
         {tasks_of_one_host}: {batches:?}"
    );
    let merged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM batches WHERE state = 'MERGED'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(merged >= 2, "the other hosts' batches joined: {merged}");
}

/// Three hosts putting a Globus store's objects at once (batches that keep their label,
/// so they never merge at submission) share one open batch rather than making a task
/// each, on PostgreSQL and on SQLite, and every item travels under the label its answer
/// named (checked by each host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_putting_at_once_share_open_batches_that_keep_their_label() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let emu = Emu::with(|c| c.task_latency_ms = 300);
    sources(&emu, 40);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("state.db").display());
    for url in [fresh_database().await, sqlite] {
        let before = emu.sim.stats().tasks();
        run_hosts_with(&emu, &url, 3, 40, false, true);
        let tasks = emu.sim.stats().tasks() - before;
        assert!(
            tasks <= 2,
            "3 hosts x 40 shared items made {tasks} tasks ({url})"
        );
    }
}

/// The pending-task limit holds for the identity as a whole: three hosts submitting 100
/// tasks each never have more than the limit pending at Globus (the emulator refuses
/// one more with 409 `PendingTaskLimit`), and every task is submitted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_with_100_tasks_each_keep_the_pending_task_limit() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let emu = Emu::with(|c| {
        // The emulator runs 3 tasks of a user at a time, as Globus does: 300 tasks of
        // 200 ms take 20 s, while the hosts submit them in a few, so that they queue
        // against the limit (40 here, Globus's 100 in life: the same code, a shorter test).
        c.task_latency_ms = 200;
        c.pending_cap = PENDING_LIMIT;
        c.rate_limit = None;
    });
    sources(&emu, 100);
    let url = fresh_database().await;
    run_hosts(&emu, &url, 3, 100, true);
    let stats = emu.sim.stats();
    assert_eq!(stats.tasks(), 300, "one task per batch, none twice");
    assert_eq!(
        stats.by_status.get(&409).copied().unwrap_or(0),
        0,
        "no submission over the limit: {:?}",
        stats.by_status
    );
}

/// A host killed while it holds the poller lease: another host takes the lease over once
/// it expires (the database's clock, not a pid), reports the outcome of the dead host's
/// task, and nothing is submitted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_holding_the_poller_lease_is_replaced_and_nothing_is_submitted_twice() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let emu = Emu::with(|c| c.task_latency_ms = 1500);
    sources(&emu, 20);
    let url = fresh_database().await;
    let role = |host, role, items: String| Role {
        emu: &emu,
        url: &url,
        host,
        role,
        count: 20,
        prefix: "led",
        separate: false,
        keep_label: false,
        items,
    };
    let mut leader = role("host-a", "lead", String::new()).spawn();
    leader.go();
    let items = leader.said("ITEMS");
    assert_eq!(
        emu.sim.stats().tasks(),
        1,
        "flushed: the batch is at Globus"
    );
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();

    let mut heir = role("host-b", "wait", items).spawn();
    heir.go();
    let polls: u64 = heir.said("POLLS").parse().unwrap();
    assert!(polls > 0, "the second host polled: it holds the lease now");
    heir.finish();
    delivered(&emu, "led", 20);
    assert_eq!(emu.sim.stats().tasks(), 1, "nothing was submitted twice");
}
