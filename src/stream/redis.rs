//! The Redis event channel: one Redis stream per topic, `<prefix>stream:<topic>`, one
//! entry per event (field `event`: the event's JSON). Readers `XREAD` on a connection of
//! their own, so that a blocked read never holds up the object commands of the store.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use redis::streams::{StreamRangeReply, StreamReadReply};

use super::Event;
use crate::connector::RedisConnector;
use crate::error::{Error, Result};

/// How many entries one `XREAD` asks for.
pub(super) const READ_COUNT: usize = 256;

/// The Redis key of `topic`'s stream.
fn stream_key(redis: &RedisConnector, topic: &str) -> String {
    format!("{}stream:{topic}", redis.redis_config().prefix)
}

fn decode(entry: &redis::streams::StreamId) -> Result<Event> {
    let json: Vec<u8> = entry
        .get("event")
        .ok_or_else(|| Error::malformed(format!("stream entry {} has no event", entry.id)))?;
    serde_json::from_slice(&json)
        .map_err(|e| Error::malformed(format!("stream entry {}: {e}", entry.id)))
}

/// The position of the topic's last event, if it has any.
pub(super) async fn last_position(redis: &RedisConnector, topic: &str) -> Result<Option<u64>> {
    let mut last = redis::cmd("XREVRANGE");
    last.arg(stream_key(redis, topic))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    let reply: StreamRangeReply = redis.run("XREVRANGE", &last).await?;
    reply
        .ids
        .first()
        .map(|e| decode(e).map(|e| e.position))
        .transpose()
}

/// Appends `event` to its topic's stream.
pub(super) async fn append(redis: &RedisConnector, event: &Event) -> Result<()> {
    let json = serde_json::to_vec(event).map_err(|e| Error::encode("json", e))?;
    let mut add = redis::cmd("XADD");
    add.arg(stream_key(redis, &event.topic))
        .arg("*")
        .arg("event")
        .arg(json);
    let _id: String = redis.run("XADD", &add).await?;
    Ok(())
}

/// Up to [`READ_COUNT`] entries of the stream `key` after the entry `last_id`, waiting
/// up to `block` for the first (`XREAD BLOCK`).
pub(super) async fn read_after(
    redis: &RedisConnector,
    key: &str,
    last_id: &str,
    block: Duration,
) -> Result<Vec<redis::streams::StreamId>> {
    let mut xread = redis::cmd("XREAD");
    xread
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(block.max(Duration::from_millis(1)).as_millis() as u64)
        .arg("STREAMS")
        .arg(key)
        .arg(last_id);
    let reply: Option<StreamReadReply> = redis.run_on_runtime("XREAD", &xread).await?;
    Ok(reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .collect())
}

/// A reader's place in a stream, on a connection of its own.
pub(super) struct Cursor {
    redis: RedisConnector,
    /// The id of the last entry read (`0`: before the first).
    last_id: String,
    read: VecDeque<Event>,
}

impl Cursor {
    pub(super) fn new(redis: &RedisConnector) -> Result<Cursor> {
        Ok(Cursor {
            redis: RedisConnector::new(redis.redis_config().clone())?,
            last_id: "0".into(),
            read: VecDeque::new(),
        })
    }

    /// The event at `position`, skipping earlier ones; `None` if none came by `until`.
    pub(super) async fn read(
        &mut self,
        topic: &str,
        position: u64,
        until: Instant,
    ) -> Result<Option<Event>> {
        // Each blocking read stays well inside the connection's response timeout.
        let longest = self.redis.redis_config().timeout() / 2;
        loop {
            while let Some(event) = self.read.pop_front() {
                if event.position >= position {
                    return Ok(Some(event));
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let key = stream_key(&self.redis, topic);
            let read = read_after(&self.redis, &key, &self.last_id, left.min(longest)).await?;
            for entry in read {
                self.last_id = entry.id.clone();
                self.read.push_back(decode(&entry)?);
            }
        }
    }
}
