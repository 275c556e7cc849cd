//! Message channels: a topic's messages as opaque bytes, in order, each sealed
//! ([`StreamKey`]). This is what ProxyStore's `MessagePublisher`/`MessageSubscriber`
//! shims of the Python package run on: ProxyStore's events are pickles, so a consumer
//! must take a message only from a holder of the key.
//!
//! - [`MessageChannel::Globus`]: message `n` of a topic is the file
//!   `<store dir>/streams/<topic>/<n, 20 digits>.msg`, written at the producer's site and
//!   sent by Globus in the same batch as the objects put just before it. No broker.
//! - [`MessageChannel::Redis`]: a Redis stream per topic, `<prefix>messages:<topic>`
//!   (replayable: a late subscriber reads from the start). Sealing is optional here: a
//!   channel without a key trusts whoever can write to the server.
//!
//! A message that does not open under the key is dropped and counted
//! ([`MessageSubscriber::rejected`]), never handed on. On Globus the subscriber then
//! keeps waiting for the genuine message at that position (the producer's transfer
//! replaces a planted file); on Redis it reads on (an entry cannot be replaced).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::streams::StreamRangeReply;

use super::redis::READ_COUNT;
use super::seal::{Place, StreamKey};
use crate::connector::{GlobusConnector, RedisConnector};
use crate::error::{Error, Result};
use crate::fsutil::read_regular_file_if_there;

/// The longest a Globus subscriber waits between looks for the next message file.
const SLOWEST_LOOK: Duration = Duration::from_millis(100);

/// Where a topic's messages go (see the module docs).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // as `Channel`: one per publisher or subscriber
pub enum MessageChannel {
    /// Message files sent by Globus beside this store's objects, sealed with the key.
    Globus(GlobusConnector, StreamKey),
    /// A Redis stream per topic on this server; sealed when a key is given.
    Redis(RedisConnector, Option<StreamKey>),
}

impl MessageChannel {
    /// What a message's MAC says it belongs to, besides its topic and position.
    fn name(&self) -> String {
        match self {
            MessageChannel::Globus(globus, _) => {
                format!("globus:{}", globus.globus_config().store_dir)
            }
            MessageChannel::Redis(redis, _) => format!("redis:{}", redis.redis_config().prefix),
        }
    }

    fn key(&self) -> Option<&StreamKey> {
        match self {
            MessageChannel::Globus(_, key) => Some(key),
            MessageChannel::Redis(_, key) => key.as_ref(),
        }
    }

    fn seal(&self, topic: &str, position: u64, message: &[u8]) -> Vec<u8> {
        let channel = self.name();
        match self.key() {
            Some(key) => key.seal(Place::new(&channel, topic, position), message),
            None => message.to_vec(),
        }
    }

    /// The message in `sealed`, if it opens for `topic` at `position`.
    fn open(&self, topic: &str, position: u64, sealed: &[u8]) -> Option<Bytes> {
        let channel = self.name();
        match self.key() {
            Some(key) => key
                .open(Place::new(&channel, topic, position), sealed)
                .map(Bytes::copy_from_slice),
            None => Some(Bytes::copy_from_slice(sealed)),
        }
    }
}

/// Message `position`'s file, relative to the store directory.
fn message_path(topic: &str, position: u64) -> String {
    format!("{}/{position:020}.msg", super::globus::topic_dir(topic))
}

fn redis_stream(redis: &RedisConnector, topic: &str) -> String {
    format!("{}messages:{topic}", redis.redis_config().prefix)
}

/// One Redis stream entry: its position field and its (sealed) message.
fn redis_entry(entry: &redis::streams::StreamId) -> Result<(u64, Vec<u8>)> {
    let bad = || Error::malformed(format!("stream entry {} is not a message", entry.id));
    let position: u64 = entry.get("p").ok_or_else(bad)?;
    let message: Vec<u8> = entry.get("m").ok_or_else(bad)?;
    Ok((position, message))
}

/// Publishes messages to any number of topics of one channel, each topic's in order.
#[derive(Debug)]
pub struct MessagePublisher {
    channel: MessageChannel,
    /// The next position of each topic published to so far.
    next: HashMap<String, u64>,
}

impl MessagePublisher {
    /// A publisher on `channel`; each topic continues after its last message.
    pub fn new(channel: MessageChannel) -> Self {
        MessagePublisher {
            channel,
            next: HashMap::new(),
        }
    }

    /// Publishes `message` to `topic`; its position.
    pub async fn send(&mut self, topic: &str, message: &[u8]) -> Result<u64> {
        super::check_topic(topic)?;
        let position = match self.next.get(topic) {
            Some(&next) => next,
            None => self.resume(topic).await?,
        };
        let sealed = self.channel.seal(topic, position, message);
        match &self.channel {
            MessageChannel::Globus(globus, _) => {
                let name = format!("{position:020}.msg");
                super::globus::writer(globus, topic)?.write_atomic(&name, &sealed)?;
                globus
                    .send_files(&[(message_path(topic, position), None)], None)
                    .await?;
            }
            MessageChannel::Redis(redis, _) => {
                let mut add = redis::cmd("XADD");
                add.arg(redis_stream(redis, topic))
                    .arg("*")
                    .arg("p")
                    .arg(position)
                    .arg("m")
                    .arg(sealed);
                let _id: String = redis.run("XADD", &add).await?;
            }
        }
        let next = position.checked_add(1).ok_or_else(|| {
            Error::invalid_config(
                "stream topic",
                format!("topic {topic} has no position left"),
            )
        })?;
        self.next.insert(topic.to_owned(), next);
        Ok(position)
    }

    /// Submits the message files still batching (Globus); closing never deletes data.
    pub async fn close(&self) -> Result<()> {
        match &self.channel {
            MessageChannel::Globus(globus, _) => crate::connector::Connector::close(globus).await,
            MessageChannel::Redis(..) => Ok(()),
        }
    }

    /// The position after the topic's last genuine message (0 for a new topic). On Globus
    /// the last message's transfer is enqueued again: a publisher may have died between
    /// writing it and enqueuing it.
    async fn resume(&self, topic: &str) -> Result<u64> {
        let last = match &self.channel {
            MessageChannel::Globus(globus, _) => {
                let opens = |position: u64, sealed: &[u8]| {
                    self.channel.open(topic, position, sealed).is_some()
                };
                let last = super::globus::last_genuine(globus, topic, "msg", opens)?;
                if let Some(last) = last {
                    globus
                        .send_files(&[(message_path(topic, last), None)], None)
                        .await?;
                }
                last
            }
            MessageChannel::Redis(redis, _) => {
                // From the newest entry back, a page at a time, to the first that opens.
                let mut end = "+".to_owned();
                loop {
                    let mut cmd = redis::cmd("XREVRANGE");
                    cmd.arg(redis_stream(redis, topic))
                        .arg(&end)
                        .arg("-")
                        .arg("COUNT")
                        .arg(READ_COUNT);
                    let reply: StreamRangeReply = redis.run("XREVRANGE", &cmd).await?;
                    let Some(oldest) = reply.ids.last() else {
                        break None;
                    };
                    let genuine = reply.ids.iter().find_map(|entry| {
                        let (position, sealed) = redis_entry(entry).ok()?;
                        self.channel
                            .open(topic, position, &sealed)
                            .map(|_| position)
                    });
                    if genuine.is_some() {
                        break genuine;
                    }
                    end = format!("({}", oldest.id);
                }
            }
        };
        Ok(last.map_or(0, |p| p.saturating_add(1)))
    }
}

/// A Redis subscriber's connection, the id of the last entry read, and the entries read
/// but not taken yet (position, sealed message).
type RedisCursor = (RedisConnector, String, VecDeque<(u64, Vec<u8>)>);

/// Reads one topic's messages in order, from a position (see the module docs).
#[derive(Debug)]
pub struct MessageSubscriber {
    channel: MessageChannel,
    topic: String,
    next: u64,
    /// A Redis subscriber's connection of its own (a blocked read holds up nothing
    /// else), the id of the last entry read, and entries read but not taken yet.
    redis: Option<RedisCursor>,
    rejected: u64,
    /// The rejected Globus files seen at the current position, by content, so that one
    /// is counted once.
    seen: HashSet<[u8; 32]>,
}

impl MessageSubscriber {
    /// A subscriber of `topic` from `position` (0: the first message).
    pub fn new(channel: MessageChannel, topic: &str, position: u64) -> Result<Self> {
        super::check_topic(topic)?;
        let redis = match &channel {
            MessageChannel::Redis(redis, _) => Some((
                RedisConnector::new(redis.redis_config().clone())?,
                "0".to_owned(),
                Default::default(),
            )),
            MessageChannel::Globus(..) => None,
        };
        Ok(MessageSubscriber {
            channel,
            topic: topic.to_owned(),
            next: position,
            redis,
            rejected: 0,
            seen: HashSet::new(),
        })
    }

    /// The position of the next message.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// How many messages were dropped because they did not open under the key.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The next genuine message; `None` if none came within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        let until = crate::runtime::deadline_after(wait);
        let found = match &self.channel {
            MessageChannel::Globus(..) => self.next_globus(until).await?,
            MessageChannel::Redis(..) => self.next_redis(until).await?,
        };
        if found.is_some() {
            self.next = self.next.saturating_add(1);
            // What was rejected was at the position just taken: nothing to remember.
            self.seen.clear();
        }
        Ok(found)
    }

    /// The next genuine message (waiting up to `wait` for it) and those after it that
    /// are here already, up to `max` in all; empty if none came. One call for many small
    /// messages: a caller in another language pays its crossing once.
    pub async fn next_batch(&mut self, wait: Duration, max: usize) -> Result<Vec<Bytes>> {
        let mut batch = Vec::new();
        let Some(first) = self.next(wait).await? else {
            return Ok(batch);
        };
        batch.push(first);
        while batch.len() < max {
            match self.next(Duration::ZERO).await? {
                Some(message) => batch.push(message),
                None => break,
            }
        }
        Ok(batch)
    }

    fn reject(&mut self, position: u64, why: &str) {
        self.rejected += 1;
        tracing::warn!(
            "stream topic {}: message {position} dropped: {why} (rejected so far: {})",
            self.topic,
            self.rejected
        );
    }

    async fn next_globus(&mut self, until: Instant) -> Result<Option<Bytes>> {
        let MessageChannel::Globus(globus, _) = &self.channel else {
            unreachable!("a Globus subscriber");
        };
        let (_, path) = globus.local_object(&message_path(&self.topic, self.next))?;
        let mut look = SLOWEST_LOOK / 20;
        loop {
            if let Some(sealed) = read_regular_file_if_there(&path)? {
                if let Some(message) = self.channel.open(&self.topic, self.next, &sealed) {
                    return Ok(Some(message));
                }
                // A planted file, or one Globus is still writing: either way not taken,
                // and the producer's transfer replaces it. Counted once per content.
                let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&sealed[..]).into();
                if self.seen.insert(digest) {
                    self.reject(self.next, "it does not open under the channel's key");
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(look.min(left)).await;
            look = (look * 2).min(SLOWEST_LOOK);
        }
    }

    async fn next_redis(&mut self, until: Instant) -> Result<Option<Bytes>> {
        loop {
            let queued = self
                .redis
                .as_mut()
                .expect("a Redis subscriber")
                .2
                .pop_front();
            if let Some((position, sealed)) = queued {
                if position != self.next {
                    continue; // an earlier message, or a stray ahead of its place
                }
                match self.channel.open(&self.topic, position, &sealed) {
                    Some(message) => return Ok(Some(message)),
                    // The genuine message of this position may follow.
                    None => self.reject(position, "it does not open under the channel's key"),
                }
                continue;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let (redis, last_id, read) = self.redis.as_mut().expect("a Redis subscriber");
            let longest = redis.redis_config().timeout() / 2;
            let key = redis_stream(redis, &self.topic);
            let entries = super::redis::read_after(redis, &key, last_id, left.min(longest)).await?;
            for entry in entries {
                *last_id = entry.id.clone();
                match redis_entry(&entry) {
                    Ok(found) => read.push_back(found),
                    Err(e) => tracing::warn!("stream topic {}: {e}: skipped", self.topic),
                }
            }
        }
    }
}
