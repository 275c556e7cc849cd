//! The command's integration tests, one binary with a module per area: everything that
//! runs the `ps-globus` binary (`CARGO_BIN_EXE_ps-globus` exists only in this package's
//! tests). The helpers shared with the library's tests are `tests/support/`.

#[path = "../../tests/support/mod.rs"]
mod support;

/// Running the binary against an emulator, as a user does.
mod command;

// The commands: proxies, stores, the configuration, Redis, streams.
mod cli;
mod cli_redis;
mod cli_stream;

// A globus-cli user's first hour, the README as written, logins, staging.
mod first_hour;
mod get_put;
mod login;
mod login_cli;
mod readme;
mod staging;

// Jobs of a batch scheduler (Slurm) with their stage-in, and their watcher.
mod job;
mod job_support;
mod job_watch;

// Endpoints and the relay, as processes.
mod endpoint_peering;
mod endpoints;

// The main job and references; leases; many reader processes.
mod demo_and_refs;
mod leases;
mod readers;
