//! The README's code blocks, as the tests that run them see them.
//!
//! Every block of README.md is run somewhere in the tests, and the checks here fail on a
//! block no test knows: Rust blocks are doctests (`ps_globus::ReadmeDoctests`; those that
//! need real collections or a Redis server are `no_run` and have a twin test on the
//! emulator, named in [`TWINS`]), Python blocks run in `bindings/python/tests/test_readme.py`,
//! shell blocks run here with bash after a prelude the README does not show (the debug
//! build's binaries for `cargo build/run --release`, a private port and directory for the
//! fixed ones), and `sh by-hand` blocks (set-up, benchmarks, an interactive login) have each
//! command checked against the binaries, examples and scripts they name.

/// One fenced code block.
#[derive(Debug, Clone)]
pub struct Block {
    /// Its info string: `rust,no_run`, `sh by-hand`, ...
    pub info: String,
    /// Its text.
    pub code: String,
    /// Its first line in README.md (1-based).
    pub line: usize,
}

/// Every fenced block of `text`.
pub fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    code: String::new(),
                    line: n + 1,
                })
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.code.push_str(line);
                block.code.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md ends inside a code block");
    blocks
}

/// The README's blocks.
pub fn readme() -> Vec<Block> {
    blocks(include_str!("../../README.md"))
}

/// The twin test of each `no_run` Rust block, by a line of the block: what it does,
/// against the emulator.
pub const TWINS: &[(&str, &str, &str)] = &[
    (
        "GlobusConnector::builder(config).build()?)?;",
        "tests/globus.rs",
        "readme_twin_a_globus_store_proxies_at_one_site_and_resolves_at_the_other",
    ),
    (
        "MultiConnector::from_connectors([",
        "tests/multi.rs",
        "readme_twin_small_objects_through_redis_and_large_ones_through_globus",
    ),
    (
        "TransferManager::start(db, client, ManagerConfig::from_settings(&settings))",
        "tests/manager.rs",
        "readme_twin_the_manager_copies_a_file_between_collections",
    ),
];

/// The source of the test file `path` (relative to the crate).
pub fn test_source(path: &str) -> String {
    std::fs::read_to_string(super::repo_root().join(path)).unwrap()
}
