//! The library's integration tests, one binary with a module per area (as ripgrep's
//! tests are): it links the library once instead of once per file. `tests/README.md`
//! says how to run one area, one engine, and what each needs. The tests that run the
//! `ps-globus` binary are the command's package's (`cli/tests/`).

mod support;

// Proxies and stores.
mod connectors;
mod cross_process;
mod futures;
mod leases;
mod ownership;
mod proxy;
mod stream_messages;
mod streams;
mod trust;

// Back ends: Globus sites, the multi connector, Redis.
mod globus;
mod https_client;
mod lane;
mod multi;
mod redis;

// The Transfer client, the manager, its state database, hosts sharing it.
mod facility;
mod manager;
mod strict_client;

// Globus Auth: service identities.
mod auth;

// Jobs of a batch scheduler (Slurm) tied to their data.
mod job;

// The emulator itself.
mod sim;
mod sim_auth;
mod sim_https;
mod sim_strict;

// What runs by hand, replayed: the fuzz corpora, the examples.
mod examples;
mod fuzz_corpora;
