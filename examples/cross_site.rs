//! Pass-by-reference between two configured sites: the producer proxies arrays at its
//! site and prints the proxies; the consumer, at another site, reads them and sums.
//!
//!     PS_GLOBUS_SITE=hpc cargo run --example cross_site -- produce 5 \
//!       | PS_GLOBUS_SITE=lab cargo run --example cross_site -- consume
//!
//! The sites come from the configuration file (`ps-globus site add ...`); credentials
//! from the environment (`ps-globus login`, a service identity, or PS_GLOBUS_ACCESS_TOKEN).

mod common;

use std::io::BufRead;

use ps_globus::connector::{GlobusConfig, GlobusConnector};
use ps_globus::{Proxy, Store};

fn main() -> std::process::ExitCode {
    common::exit_with(run())
}

fn run() -> common::Outcome {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("produce") => {
            let n: usize = args.get(2).map_or(Ok(3), |n| n.parse())?;
            let config = GlobusConfig::from_config_file(
                "cross-site-example",
                ps_globus::Settings::global(),
            )?;
            let store = Store::new("cross-site", GlobusConnector::builder(config).build()?)?;
            for i in 0..n {
                let array: Vec<f64> = (0..100_000).map(|x| (x * (i + 1)) as f64).collect();
                // Written here, transfer enqueued; the proxy is ~1 KB of JSON.
                println!("{}", serde_json::to_string(&store.proxy(&array)?)?);
            }
            // Submits what is still batching: a producer must not exit before that.
            store.close()?;
        }
        Some("consume") => {
            for line in std::io::stdin().lock().lines() {
                let proxy: Proxy<Vec<f64>> = serde_json::from_str(&line?)?;
                // Waits for the transfer at this site, checks size and sha256, decodes.
                let sum: f64 = proxy.iter().sum();
                println!("sum {sum}");
            }
        }
        _ => eprintln!("usage: cross_site produce [N] | cross_site consume"),
    }
    Ok(())
}
