//! Streams: a producer publishes objects to a named topic; consumers iterate proxies of
//! them (or their values) in order, as ProxyStore's `StreamProducer`/`StreamConsumer`.
//!
//! The objects go to a [`Store`] like any other; an *event* per object (its position,
//! the store's config and the object's key) goes to the topic's event [`Channel`]:
//!
//! - [`Channel::Redis`]: a Redis stream (`XADD`, read with `XREAD`), for sites that share
//!   a Redis. Unlike pub/sub, a stream keeps its events: a consumer that starts late
//!   replays them from the start, or from a position.
//! - [`Channel::Globus`]: **no broker at all**. Each event is a small self-verifying file
//!   (the event, with the object's key, size and sha256, behind its own checksum)
//!   written at the producer's site beside the objects
//!   (`<store dir>/streams/<topic>/<position>.event`) and sent in the same Globus batch
//!   as the object it announces. Globus copies a task's files in no particular order, so
//!   a consumer takes event *n* only when its file verifies **and** the object it names
//!   is at the consumer's site and verified; and only after event *n − 1*.
//!
//! **Trust.** An event's checksum detects a partial or damaged file, not a forger. On
//! Globus, an event is taken only if it names an object of the channel's own store (its
//! directory, collections and this site's local path), so a file planted in the topic's
//! directory cannot send a consumer to read elsewhere. On Redis, whoever may write to the
//! server may publish events naming any store: give producers and consumers a server
//! (or an ACL user) of their own.
//!
//! Positions count from 0 per topic. [`StreamProducer::close`] publishes the end of the
//! stream; a consumer's iteration then ends. A producer that restarts on a topic (after
//! a crash, say) continues after the last event the topic has: no position is published
//! twice, and on Globus the last event's transfer is enqueued again, in case the crash
//! came between writing it and enqueuing it. One producer per topic at a time.
//!
//! ```no_run
//! use ps_globus::connector::{RedisConfig, RedisConnector};
//! use ps_globus::stream::{Channel, StreamConsumer, StreamProducer};
//! use ps_globus::Store;
//! # ps_globus::block_on(async {
//! let redis = RedisConnector::new(RedisConfig::new("redis.lab.example.org", 6379))?;
//! let store = Store::new("results", redis.clone())?;
//! let channel = Channel::Redis(redis);
//! let mut producer = StreamProducer::open(&store, &channel, "results").await?;
//! producer.send_async(&vec![1.0f64; 1024]).await?;
//! producer.close_async().await?;
//! // Anywhere that reaches the server, from the first event:
//! for proxy in StreamConsumer::<Vec<f64>>::new(&channel, "results")? {
//!     println!("{}", proxy?.len());
//! }
//! # Ok::<(), ps_globus::Error>(())
//! # }).unwrap();
//! ```

mod globus;
mod messages;
mod redis;
mod seal;

pub use messages::{MessageChannel, MessagePublisher, MessageSubscriber};
pub use seal::StreamKey;

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::connector::{GlobusConnector, Key, RedisConnector, is_plain_name};
use crate::error::{Error, Result};
use crate::proxy::{Proxy, Store, StoreConfig, get_or_create_store};
use crate::runtime::block_on;

/// The newest event format this build writes and reads.
pub(crate) const EVENT_VERSION: u16 = 1;

/// Where a topic's events go (see the module docs).
#[derive(Clone, Debug)]
// One per producer or consumer: the size of a Redis client's handle does not matter, and
// a plain variant keeps `Channel::Redis(connector)` simple to write.
#[allow(clippy::large_enum_variant)]
pub enum Channel {
    /// A Redis stream per topic, `<prefix>stream:<topic>`, on this server.
    Redis(RedisConnector),
    /// Event files sent by Globus beside the objects, in this Globus store's directory.
    /// The producer's store must be a Globus store with this connector's configuration.
    Globus(GlobusConnector),
}

/// One event of a topic: an object published at a position, or the end of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The event format version.
    pub v: u16,
    /// The topic.
    pub topic: String,
    /// Its position in the topic, from 0.
    pub position: u64,
    /// When the producer published it (Unix milliseconds, the producer's clock).
    pub published_ms: i64,
    /// The object, or `None` for the end of the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Published>,
}

/// The object an event announces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Published {
    /// The store it is in.
    pub store: StoreConfig,
    /// Its key there.
    pub key: Key,
}

impl Event {
    /// Whether this event ends the stream.
    pub fn is_end(&self) -> bool {
        self.object.is_none()
    }

    /// A proxy of the object (`None` for the end of the stream), in the store the event
    /// names, rebuilt as data from elsewhere (its bindings checked against this process's
    /// configuration). A [`StreamConsumer`] of a Globus channel resolves through the
    /// channel's own store instead ([`StreamConsumer::proxy_of`]).
    pub fn proxy<T>(&self) -> Result<Option<Proxy<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let Some(object) = &self.object else {
            return Ok(None);
        };
        let store = get_or_create_store(&object.store)?;
        Ok(Some(store.proxy_from_key(object.key.clone())))
    }

    fn check(self, topic: &str, position: u64) -> Result<Event> {
        if self.v > EVENT_VERSION {
            return Err(Error::unsupported_version(
                "stream event",
                self.v,
                EVENT_VERSION,
            ));
        }
        if self.topic != topic || self.position != position {
            return Err(Error::malformed(format!(
                "event {}#{} found where {topic}#{position} belongs",
                self.topic, self.position
            )));
        }
        Ok(self)
    }
}

/// Checks a topic name: 1 to 128 characters of `A-Z a-z 0-9 _ -` (it names a file and
/// a Redis key).
fn check_topic(topic: &str) -> Result<()> {
    if is_plain_name(topic, 128) {
        return Ok(());
    }
    Err(Error::invalid_config(
        "stream topic",
        format!("{topic:?} is not 1-128 characters of A-Z a-z 0-9 _ -"),
    ))
}

/// Publishes the objects of one topic (see the module docs).
#[derive(Debug)]
pub struct StreamProducer {
    store: Store,
    channel: Channel,
    topic: String,
    next: u64,
}

impl StreamProducer {
    /// A producer of `topic` that stores objects in `store` and announces them on
    /// `channel`; it continues after the topic's last event.
    pub async fn open(store: &Store, channel: &Channel, topic: &str) -> Result<Self> {
        check_topic(topic)?;
        let next = match channel {
            Channel::Redis(redis) => redis::last_position(redis, topic).await?,
            Channel::Globus(globus) => {
                if store.connector().config() != crate::connector::Connector::config(globus) {
                    return Err(Error::invalid_config(
                        "stream producer",
                        "a Globus channel announces objects of its own Globus store: \
                                  give the producer a store over the same connector",
                    ));
                }
                globus::resume(globus, topic).await?
            }
        }
        .map_or(Some(0), |last| last.checked_add(1))
        .ok_or_else(|| {
            Error::invalid_config(
                "stream producer",
                format!("topic {topic} has no position left after {}", u64::MAX),
            )
        })?;
        Ok(StreamProducer {
            store: store.clone(),
            channel: channel.clone(),
            topic: topic.to_owned(),
            next,
        })
    }

    /// The position the next event gets.
    pub fn next_position(&self) -> u64 {
        self.next
    }

    /// Stores `value` and publishes its event; its position.
    pub fn send<T: Serialize + 'static>(&mut self, value: &T) -> Result<u64> {
        block_on(self.send_async(value))
    }

    /// Async [`send`](Self::send).
    pub async fn send_async<T: Serialize + 'static>(&mut self, value: &T) -> Result<u64> {
        let key = self.store.put_async(value).await?;
        let object = Published {
            store: self.store.config().clone(),
            key,
        };
        self.publish(Some(object)).await
    }

    /// Publishes the end of the stream and submits what is still batching.
    pub fn close(self) -> Result<()> {
        block_on(self.close_async())
    }

    /// Async [`close`](Self::close).
    pub async fn close_async(mut self) -> Result<()> {
        self.publish(None).await?;
        self.store.close_async().await?;
        // The channel's connector may be another instance than the store's, with
        // transfers of its own still batching (the event files).
        if let Channel::Globus(globus) = &self.channel {
            crate::connector::Connector::close(globus).await?;
        }
        Ok(())
    }

    async fn publish(&mut self, object: Option<Published>) -> Result<u64> {
        let event = Event {
            v: EVENT_VERSION,
            topic: self.topic.clone(),
            position: self.next,
            published_ms: chrono::Utc::now().timestamp_millis(),
            object,
        };
        match &self.channel {
            Channel::Redis(redis) => redis::append(redis, &event).await?,
            Channel::Globus(globus) => globus::append(globus, &event).await?,
        }
        self.next = self.next.saturating_add(1);
        Ok(event.position)
    }
}

/// Reads one topic's events in order (see the module docs); as an iterator, proxies of
/// their objects, ending at the end of the stream.
pub struct StreamConsumer<T> {
    reader: Reader,
    topic: String,
    next: u64,
    wait: Duration,
    ended: bool,
    _value: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for StreamConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConsumer")
            .field("topic", &self.topic)
            .field("next", &self.next)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// A channel's reading side, with its cursor.
enum Reader {
    Redis(Box<redis::Cursor>),
    Globus(GlobusConnector),
}

impl<T> StreamConsumer<T> {
    /// A consumer of `topic` from its first event (a late consumer replays them all).
    pub fn new(channel: &Channel, topic: &str) -> Result<Self> {
        check_topic(topic)?;
        let reader = match channel {
            Channel::Redis(redis) => Reader::Redis(Box::new(redis::Cursor::new(redis)?)),
            Channel::Globus(globus) => Reader::Globus(globus.clone()),
        };
        Ok(StreamConsumer {
            reader,
            topic: topic.to_owned(),
            next: 0,
            wait: crate::connector::DEFAULT_WAIT,
            ended: false,
            _value: PhantomData,
        })
    }

    /// Starts at `position` instead of the first event.
    pub fn from_position(mut self, position: u64) -> Self {
        self.next = position;
        self
    }

    /// How long one event is waited for before [`Error::Timeout`] (default: a day).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The position of the next event.
    pub fn next_position(&self) -> u64 {
        self.next
    }

    /// The next event (an end event once, then `None`); waits for it up to the consumer's
    /// wait, then fails with [`Error::Timeout`].
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        if self.ended {
            return Ok(None);
        }
        let until = crate::runtime::deadline_after(self.wait);
        let event = match &mut self.reader {
            Reader::Redis(cursor) => cursor.read(&self.topic, self.next, until).await?,
            Reader::Globus(globus) => globus::read(globus, &self.topic, self.next, until).await?,
        };
        let Some(event) = event else {
            return Err(Error::timeout(
                format!("event {} of topic {}", self.next, self.topic),
                self.wait,
            ));
        };
        let event = event.check(&self.topic, self.next)?;
        self.next = self.next.saturating_add(1);
        self.ended = event.is_end();
        Ok(Some(event))
    }
}

impl<T> StreamConsumer<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// A proxy of `event`'s object (`None` for the end of the stream). On a Globus channel
    /// only the event's *key* is taken, and resolved through the channel's own store: an
    /// event file anyone could plant says which object, never which store, service URL or
    /// options (see `docs/THREAT-MODEL.md`). On Redis, as [`Event::proxy`].
    pub fn proxy_of(&self, event: &Event) -> Result<Option<Proxy<T>>> {
        let Some(object) = &event.object else {
            return Ok(None);
        };
        match &self.reader {
            Reader::Globus(globus) => {
                let connector: std::sync::Arc<dyn crate::connector::Connector> =
                    std::sync::Arc::new(globus.clone());
                let store = Store::builder(&object.store.name, connector)
                    .codec(object.store.codec)
                    .register(false)
                    .build()?;
                Ok(Some(store.proxy_from_key(object.key.clone())))
            }
            Reader::Redis(_) => event.proxy(),
        }
    }
}

impl<T> Iterator for StreamConsumer<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    type Item = Result<Proxy<T>>;

    /// The next object's proxy; `None` after the end of the stream.
    fn next(&mut self) -> Option<Self::Item> {
        match block_on(self.next_event()) {
            Ok(Some(event)) => self.proxy_of(&event).transpose(),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
