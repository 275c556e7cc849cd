//! Redis benchmark: the Redis connector's put, get and put_batch against one server,
//! beside the same commands sent by the `redis` crate on a plain connection (the floor),
//! measured in the same run; `redis-benchmark` is the external yardstick
//! (`scripts/bench-patterns` prints it beside these).
//!
//!     cargo run --release --example bench_redis -- --port 6379 [--sizes 1024,1048576] [--rounds 200]
//!
//! One JSON line per workload: `{"workload", "size", "per_op_us"}` (the median of 3 runs
//! of `rounds` operations; a batch counts one operation per object).
//!
//! - `connector.put.<bytes>`, `connector.get.<bytes>`: one object at a time.
//! - `connector.put_batch.<bytes>`: `rounds` objects in one `put_batch` (one MSET).
//! - `floor.set.<bytes>`: `SET` on one plain async connection, one at a time.

use std::time::{Duration, Instant};

use ps_globus::connector::{Connector, PutOptions, RedisConfig, RedisConnector};

fn median(mut runs: Vec<Duration>, per: usize) -> f64 {
    runs.sort();
    runs[runs.len() / 2].as_secs_f64() * 1e6 / per as f64
}

fn report(workload: &str, size: usize, per_op_us: f64) {
    println!(
        "{}",
        serde_json::json!({"workload": format!("{workload}.{size}"), "size": size,
                           "per_op_us": (per_op_us * 10.0).round() / 10.0})
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ps_globus::Result<()> {
    let mut port = 6379u16;
    let mut sizes = vec![1024usize, 1 << 20];
    let mut rounds = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--port" => port = value.parse().expect("--port N"),
            "--sizes" => {
                sizes = value
                    .split(',')
                    .map(|s| s.parse().expect("a size"))
                    .collect()
            }
            "--rounds" => rounds = value.parse().expect("--rounds N"),
            other => panic!("unknown option {other}"),
        }
    }
    let connector = RedisConnector::new(RedisConfig::new("127.0.0.1", port))?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("a URL");
    let mut plain = client
        .get_multiplexed_async_connection()
        .await
        .expect("the server answers");
    let options = PutOptions::default();
    for size in sizes {
        let data = vec![7u8; size];
        let rounds = if size >= 1 << 20 {
            rounds.min(50)
        } else {
            rounds
        };
        let (mut puts, mut gets, mut batches, mut floors) = (vec![], vec![], vec![], vec![]);
        for _ in 0..3 {
            let started = Instant::now();
            let mut keys = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                keys.push(connector.put(&data, &options).await?);
            }
            puts.push(started.elapsed());
            let started = Instant::now();
            for key in &keys {
                connector.get(key).await?.expect("stored");
            }
            gets.push(started.elapsed());
            let objects: Vec<&[u8]> = (0..rounds).map(|_| &data[..]).collect();
            let started = Instant::now();
            let batch = connector.put_batch(&objects, &options).await?;
            batches.push(started.elapsed());
            let started = Instant::now();
            for n in 0..rounds {
                let _: () = redis::cmd("SET")
                    .arg(format!("bench-floor-{n}"))
                    .arg(&data[..])
                    .query_async(&mut plain)
                    .await
                    .expect("SET");
            }
            floors.push(started.elapsed());
            for key in keys.iter().chain(&batch) {
                connector.evict(key).await?;
            }
        }
        report("connector.put", size, median(puts, rounds));
        report("connector.get", size, median(gets, rounds));
        report("connector.put_batch", size, median(batches, rounds));
        report("floor.set", size, median(floors, rounds));
    }
    Ok(())
}
