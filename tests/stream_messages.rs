//! Sealed message channels (what the Python package's ProxyStore stream shims run on):
//! in order at the other site over Globus, replayable over Redis, and a message that does
//! not open under the key — planted, sealed with another key, or moved to another
//! position — dropped and counted, never handed on.

use std::time::Duration;

use crate::support::redis_server::RedisServer;
use ps_globus::connector::RedisConnector;
use ps_globus::stream::{MessageChannel, MessagePublisher, MessageSubscriber, StreamKey};

/// A guard against a hang, never a measurement.
const WAIT: Duration = Duration::from_secs(60);

fn key(dir: &tempfile::TempDir, name: &str) -> StreamKey {
    StreamKey::create(&dir.path().join(name)).unwrap()
}

/// Every message from `subscriber` until `count` came.
async fn take(subscriber: &mut MessageSubscriber, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < count {
        let message = subscriber
            .next(WAIT)
            .await
            .unwrap()
            .expect("a message in time");
        got.push(String::from_utf8(message.to_vec()).unwrap());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_globus_messages_reach_the_other_site_in_order_past_a_planted_file() {
    let emu = crate::support::emulator::Emu::start();
    let config = crate::support::sites::config_for(&emu, &crate::support::unique_name("msgs"));
    let (_home, a, b) = crate::support::sites::own_pair(&config, "a", "b");
    let keys = tempfile::tempdir().unwrap();
    let shared = key(&keys, "shared");
    let topic_at_b = emu.root_b().join(&config.store_dir).join("streams/results");
    std::fs::create_dir_all(&topic_at_b).unwrap();
    // Planted at b before anything is published: a pickle that would run code, with the
    // magic bytes and no valid MAC.
    let planted = topic_at_b.join("00000000000000000000.msg");
    let mut forged = b"psgm1".to_vec();
    forged.extend_from_slice(&[0u8; 32]);
    forged.extend_from_slice(b"cos\nsystem\n(S'touch /tmp/owned'\ntR.");
    std::fs::write(&planted, &forged).unwrap();

    let mut subscriber = MessageSubscriber::new(
        MessageChannel::Globus(b.clone(), shared.clone()),
        "results",
        0,
    )
    .unwrap();
    let reading = tokio::spawn(async move {
        let got = take(&mut subscriber, 3).await;
        (got, subscriber.rejected())
    });
    let mut publisher = MessagePublisher::new(MessageChannel::Globus(a.clone(), shared.clone()));
    for i in 0..3 {
        assert_eq!(
            publisher
                .send("results", format!("m{i}").as_bytes())
                .await
                .unwrap(),
            i
        );
    }
    ps_globus::connector::Connector::close(&a).await.unwrap();
    let (got, rejected) = reading.await.unwrap();
    assert_eq!(got, ["m0", "m1", "m2"], "the genuine messages, in order");
    assert!(rejected >= 1, "the planted file was counted");

    // Sealed with another key, or a genuine message moved to another position: dropped.
    let genuine = std::fs::read(topic_at_b.join("00000000000000000001.msg")).unwrap();
    std::fs::write(topic_at_b.join("00000000000000000007.msg"), &genuine).unwrap();
    let stranger = key(&keys, "stranger");
    let mut other = MessagePublisher::new(MessageChannel::Globus(b.clone(), stranger));
    assert_eq!(other.send("intruder", b"x").await.unwrap(), 0);
    let intruder_at_b = emu
        .root_b()
        .join(&config.store_dir)
        .join("streams/intruder");
    std::fs::copy(
        intruder_at_b.join("00000000000000000000.msg"),
        topic_at_b.join("00000000000000000008.msg"),
    )
    .unwrap();
    for position in [7, 8] {
        let mut late = MessageSubscriber::new(
            MessageChannel::Globus(b.clone(), shared.clone()),
            "results",
            position,
        )
        .unwrap();
        assert_eq!(late.next(Duration::from_millis(300)).await.unwrap(), None);
        assert_eq!(late.rejected(), 1, "position {position}: counted once");
        assert_eq!(late.position(), position, "and still waiting there");
    }

    // A publisher that restarts continues after the last genuine message at its site,
    // past a planted later one.
    let topic_at_a = emu.root_a().join(&config.store_dir).join("streams/results");
    std::fs::write(topic_at_a.join("00000000000000000050.msg"), &forged).unwrap();
    let mut restarted = MessagePublisher::new(MessageChannel::Globus(a.clone(), shared));
    assert_eq!(restarted.send("results", b"m3").await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_message_stream_replays_late_and_drops_what_does_not_open() {
    let server = RedisServer::start();
    let redis = RedisConnector::new(server.config()).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let sealed = MessageChannel::Redis(redis.clone(), Some(key(&keys, "k")));
    let mut publisher = MessagePublisher::new(sealed.clone());
    for i in 0..3 {
        publisher
            .send("t", format!("m{i}").as_bytes())
            .await
            .unwrap();
    }
    // A forged entry at the next position, as anyone who can write the server could add.
    let stream = format!("{}messages:t", redis.redis_config().prefix);
    server.cli(&["XADD", &stream, "*", "p", "3", "m", "psgm1 forged"]);
    let mut restarted = MessagePublisher::new(sealed.clone());
    assert_eq!(
        restarted.send("t", b"m3").await.unwrap(),
        3,
        "after the last genuine"
    );

    // A subscriber that starts after it all reads every genuine message, once, in order.
    let mut late = MessageSubscriber::new(sealed.clone(), "t", 0).unwrap();
    assert_eq!(take(&mut late, 4).await, ["m0", "m1", "m2", "m3"]);
    assert_eq!(late.rejected(), 1);
    assert_eq!(late.next(Duration::from_millis(100)).await.unwrap(), None);
    let mut from_two = MessageSubscriber::new(sealed.clone(), "t", 2).unwrap();
    assert_eq!(take(&mut from_two, 2).await, ["m2", "m3"]);

    // A batch brings what is here already, in order, up to its size; then nothing.
    let mut batched = MessageSubscriber::new(sealed.clone(), "t", 0).unwrap();
    let first = batched.next_batch(WAIT, 3).await.unwrap();
    assert_eq!(first, ["m0", "m1", "m2"].map(bytes::Bytes::from).to_vec());
    let rest = batched.next_batch(WAIT, 3).await.unwrap();
    assert_eq!(rest, [bytes::Bytes::from("m3")]);
    assert_eq!(
        batched.rejected(),
        1,
        "the forged entry, dropped inside the batch"
    );
    assert!(
        batched
            .next_batch(Duration::from_millis(50), 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(batched.position(), 4);

    // Without a key, messages pass as they are (whoever writes the server is trusted).
    let plain = MessageChannel::Redis(redis, None);
    let mut publisher = MessagePublisher::new(plain.clone());
    publisher.send("plain", b"raw").await.unwrap();
    let mut subscriber = MessageSubscriber::new(plain, "plain", 0).unwrap();
    assert_eq!(take(&mut subscriber, 1).await, ["raw"]);
}
