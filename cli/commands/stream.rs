//! `stream tail`: the events of a topic as they arrive at this site; `stream key`: the key
//! that seals a channel's messages.

use std::time::Duration;

use clap::{Args, Subcommand};
use ps_globus::connector::{GlobusConfig, GlobusConnector, RedisConnector};
use ps_globus::stream::{Channel, Event, StreamConsumer, StreamKey};

use super::settings;
use crate::CliResult;

/// The `stream` subcommands.
#[derive(Subcommand)]
pub enum StreamCommand {
    /// Print a topic's events as they arrive at this site, from the first (or `--from`),
    /// until the end of the stream (or `--count` events). An event over Globus is printed
    /// once its file and the object it names are here and verified.
    Tail(Tail),
    /// Make the key that seals stream messages (the Python package's Globus and Redis
    /// stream shims): 64 hex digits in a new file readable by you only. Copy the same
    /// file to every site of the channel (scp); an existing key is never replaced.
    Key(KeyArgs),
}

/// `stream key`'s arguments.
#[derive(Args)]
pub struct KeyArgs {
    /// Where to write it (default: `stream.key` in the state directory, where the
    /// shims look).
    #[arg(long, value_name = "PATH")]
    file: Option<std::path::PathBuf>,
}

/// `stream tail`'s arguments.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("channel").required(true).args(["redis", "globus"])))]
pub struct Tail {
    /// The topic.
    topic: String,
    /// Read the topic from the Redis server of the configuration's `[redis.NAME]` table.
    #[arg(long, value_name = "NAME", conflicts_with = "globus")]
    redis: Option<String>,
    /// Read the topic from the Globus store in STORE_DIR over the configured sites (its
    /// event files at this site).
    #[arg(long, value_name = "STORE_DIR")]
    globus: Option<String>,
    /// Start at this position instead of the first event.
    #[arg(long, value_name = "POSITION", default_value_t = 0)]
    from: u64,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Give up when no event came for this many seconds (default: wait on).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// One JSON object a line (JSON Lines), as each event arrives.
    #[arg(long)]
    json: bool,
    /// `json`: the same as --json (a tail prints as it goes: one document per event);
    /// `text`: a table under a header.
    #[arg(short = 'F', long = "format", value_enum, ignore_case = true)]
    format: Option<crate::output::Format>,
}

/// How long `stream tail` waits for a first event before it says that it waits.
const SAY_WAITING_AFTER: Duration = Duration::from_secs(1);

/// `stream ...`
pub fn run(command: StreamCommand) -> CliResult {
    match command {
        StreamCommand::Tail(tail) => run_tail(tail),
        StreamCommand::Key(args) => {
            let path = args
                .file
                .unwrap_or_else(|| StreamKey::default_path(settings()));
            let key = StreamKey::create(&path)?;
            println!("{}", key.path().display());
            Ok(())
        }
    }
}

fn run_tail(tail: Tail) -> CliResult {
    let channel = match (&tail.redis, &tail.globus) {
        (Some(name), _) => Channel::Redis(RedisConnector::named(settings(), name)?),
        (None, Some(store_dir)) => {
            let config = GlobusConfig::from_config_file(store_dir.as_str(), settings())?;
            Channel::Globus(GlobusConnector::builder(config).build()?)
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let mut consumer = StreamConsumer::<()>::new(&channel, &tail.topic)?.from_position(tail.from);
    if let Some(seconds) = tail.timeout {
        consumer = consumer.wait(Duration::from_secs(seconds));
    }
    let json = tail.json || tail.format == Some(crate::output::Format::Json);
    if tail.format == Some(crate::output::Format::Unix) {
        return Err(crate::Exit(
            2,
            "stream tail prints -F text or -F json (JSON Lines)".into(),
        )
        .into());
    }
    if !json {
        println!(
            "{:>8}  {:<12}  {:>9}  {:>10}  STORE KEY",
            "POSITION", "PUBLISHED", "AGE", "SIZE"
        );
    }
    let mut printed = 0;
    while tail.count.is_none_or(|count| printed < count) {
        let next = ps_globus::block_on(async {
            let next = consumer.next_event();
            tokio::pin!(next);
            if printed > 0 {
                return next.await;
            }
            // A topic nobody published on yet looks like a hang: say that it waits.
            match tokio::time::timeout(SAY_WAITING_AFTER, &mut next).await {
                Ok(first) => first,
                Err(_) => {
                    eprintln!(
                        "no event of topic {:?} at position {} yet: waiting for one \
                         (Ctrl-C to stop, --timeout SECONDS to give up)",
                        tail.topic, tail.from
                    );
                    next.await
                }
            }
        });
        let Some(event) = next? else {
            break;
        };
        print_event(&event, json);
        printed += 1;
        if event.is_end() {
            break;
        }
    }
    Ok(())
}

/// One event: its position, when it was published and how long ago, and its object.
fn print_event(event: &Event, json: bool) {
    let now = chrono::Utc::now().timestamp_millis();
    let age_ms = now - event.published_ms;
    let meta = event.object.as_ref().and_then(|o| o.key.meta());
    let field = |name: &str| meta.and_then(|m| m.get(name)).cloned();
    if json {
        let mut doc = serde_json::json!({
            "topic": event.topic,
            "position": event.position,
            "published_ms": event.published_ms,
            "age_ms": age_ms,
            "end": event.is_end(),
        });
        if let Some(object) = &event.object {
            doc["store"] = object.store.name.clone().into();
            doc["key"] = serde_json::to_value(&object.key).unwrap_or_default();
            doc["size"] = field("size").unwrap_or_default();
            doc["sha256"] = field("sha256").unwrap_or_default();
        }
        println!("{doc}");
        return;
    }
    let published = chrono::DateTime::from_timestamp_millis(event.published_ms)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    match &event.object {
        None => println!("{:>8}  {published:<12}  end of stream", event.position),
        Some(object) => {
            let size = field("size")
                .and_then(|s| s.as_u64())
                .map_or_else(|| "-".into(), |b| indicatif::HumanBytes(b).to_string());
            println!(
                "{:>8}  {published:<12}  {:>9}  {:>10}  {} {}",
                event.position,
                format!("{age_ms} ms"),
                size,
                object.store.name,
                object.key.id()
            );
        }
    }
}
