//! The README as a user reads it: every code block is run by some test (doctests, the
//! Python package's tests, the shell blocks here), the set-up and by-hand commands name
//! what exists, and its `[dependencies]` lines name this crate's features.

/// Every code block of the README is run by some test (`crate::support::readme` says which),
/// and no block is left that none knows.
#[test]
fn every_readme_code_block_runs_in_the_tests() {
    use crate::support::readme::{TWINS, readme, test_source};
    let blocks = readme();
    assert!(blocks.len() >= 14, "{} blocks", blocks.len());
    for block in &blocks {
        let at = format!("README.md line {}", block.line);
        match block.info.as_str() {
            // Doctests: `ps_globus::ReadmeDoctests` compiles and runs it.
            "rust" => {}
            "rust,no_run" => {
                let (_, file, twin) = TWINS
                    .iter()
                    .find(|(line, _, _)| block.code.contains(line))
                    .unwrap_or_else(|| panic!("{at}: a no_run block without an emulator twin"));
                assert!(
                    test_source(file).contains(&format!("fn {twin}(")),
                    "{at}: its twin {twin} is not in {file}"
                );
            }
            "toml" => readme_toml_names_this_crate(&block.code, &at),
            // bindings/python/tests/test_readme.py runs each (and fails on one it does
            // not know).
            "python" => {}
            "sh" => assert!(
                SHELL_RUNNERS
                    .iter()
                    .any(|(line, _)| block.code.contains(line)),
                "{at}: a shell block no test runs"
            ),
            "sh by-hand" => by_hand_commands_exist(&block.code, &at),
            other => panic!("{at}: a block of kind {other:?} that no test runs"),
        }
    }
}

/// The shell blocks `readme_shell_blocks_run_as_written` runs, by a line of each.
const SHELL_RUNNERS: &[(&str, &str)] = &[
    ("ps-globus stage-out", "the cross-facility workflow"),
    (
        "export PS_GLOBUS_STATE_URL=",
        "a facility's PostgreSQL doctor",
    ),
];

/// The README's `[dependencies]` lines name this crate, and features it has.
fn readme_toml_names_this_crate(code: &str, at: &str) {
    let cargo: toml::Table = include_str!("../../Cargo.toml").parse().unwrap();
    let table: toml::Table = code.parse().unwrap_or_else(|e| panic!("{at}: {e}"));
    let ours = &table["dependencies"][cargo["package"]["name"].as_str().unwrap()];
    for feature in ours
        .get("features")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
    {
        let feature = feature.as_str().unwrap();
        assert!(
            cargo["features"].get(feature).is_some(),
            "{at}: no feature {feature}"
        );
    }
}

/// Each command of a by-hand block (set-up, benchmarks, logins) names what exists: a
/// `ps-globus` subcommand (its `--help` answers), an example, a script, the package.
fn by_hand_commands_exist(code: &str, at: &str) {
    let root = crate::support::repo_root();
    let commands = code
        .lines()
        .map(|l| l.split(" #").next().unwrap_or(l).trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("--"));
    for command in commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        let subcommand = match words.as_slice() {
            ["cargo", "run", "--release", "--example", example, ..] => {
                let path = root.join("examples").join(format!("{example}.rs"));
                assert!(path.is_file(), "{at}: no example {example}");
                continue;
            }
            ["cargo", "run", "--release", "--", sub, ..] | ["ps-globus", sub, ..] => *sub,
            [script, ..] if script.contains("scripts/") => {
                let path = root.join(script.trim_start_matches("./"));
                assert!(path.is_file(), "{at}: no script {script}");
                continue;
            }
            ["pip", "install", package, ..] => {
                // `'./bindings/python[proxystore]'`: the directory, without quotes and extras.
                let dir = package
                    .trim_matches('\'')
                    .split('[')
                    .next()
                    .unwrap_or_default();
                assert!(
                    root.join(dir).join("pyproject.toml").is_file(),
                    "{at}: {dir}"
                );
                continue;
            }
            // Lines of a command run on by the previous one, and the emulator's users
            // (globus-cli, the environment): the compatibility tests run those.
            _ => continue,
        };
        let help = std::process::Command::new(env!("CARGO_BIN_EXE_ps-globus"))
            .args([subcommand, "--help"])
            .output()
            .unwrap();
        assert!(
            help.status.success(),
            "{at}: ps-globus {subcommand}: {help:?}"
        );
    }
}

/// A README shell block run with bash in a directory of its own: `cargo build
/// --release` is the tests' own build, `cargo run --release [--example X]` runs the
/// debug binaries, and `rewrite` makes fixed paths and ports private. Its exit status,
/// stdout and stderr.
fn run_readme_shell(
    code: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_ps-globus"));
    let examples = bin.parent().unwrap().join("examples");
    if !examples.join("cross_site").is_file() {
        // `cargo test --test first_hour` builds no examples (a plain `cargo test` does).
        let built = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["build", "--example", "cross_site"])
            .current_dir(crate::support::repo_root())
            .status()
            .unwrap();
        assert!(built.success());
    }
    let prelude = format!(
        r#"set -euo pipefail
export PATH="{bin_dir}:$PATH"
cargo() {{
  case "$1 $2" in
    "build --release") return 0 ;;
    "run --release")
      shift 2
      if [ "$1" = "--example" ]; then
        local example="$2"; shift 2; [ "${{1:-}}" = "--" ] && shift
        "{examples}/$example" "$@"
      else
        [ "${{1:-}}" = "--" ] && shift
        ps-globus "$@"
      fi ;;
    *) echo "README harness: cargo $* is not expected" >&2; return 1 ;;
  esac
}}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
"#,
        bin_dir = bin.parent().unwrap().display(),
        examples = examples.display(),
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(prelude + code)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The README block that holds `line`.
fn readme_block(line: &str) -> String {
    crate::support::readme::readme()
        .into_iter()
        .find(|b| b.code.contains(line))
        .unwrap_or_else(|| panic!("no README block holds {line:?}"))
        .code
}

#[test]
fn readme_the_cross_facility_workflow_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let xf = dir.path().join("xf");
    let code = readme_block(SHELL_RUNNERS[0].0)
        .replace("/tmp/xf", &xf.display().to_string())
        .replace("127.0.0.1:8123", &format!("127.0.0.1:{port}"));
    let (status, stdout, stderr) = run_readme_shell(&code, dir.path(), &[]);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    assert_eq!(
        std::fs::read_to_string(xf.join("lab/results/output.dat")).unwrap(),
        "result\n"
    );
    assert_eq!(
        std::fs::read_to_string(xf.join("hpc/run/input.dat")).unwrap(),
        "input data\n"
    );
}

#[test]
fn readme_a_facilitys_postgresql_doctor_line_is_what_doctor_prints() {
    let dir = tempfile::tempdir().unwrap();
    let url = ps_globus::block_on(crate::support::pg_cluster::fresh_database());
    let readme_url = "postgres://psg@db.facility.example:5432/psg";
    let code = readme_block(SHELL_RUNNERS[1].0);
    // The README's sample line, with the test server's URL and version for its own.
    let sample = code
        .lines()
        .find_map(|l| l.split_once("# \"").map(|(_, s)| s.trim_end_matches('"')))
        .unwrap()
        .to_owned();
    let run = code.replace(readme_url, &url) + "\n";
    let config = dir.path().join("config.toml");
    let (_, stdout, stderr) = run_readme_shell(
        // doctor fails on what this bare set-up lacks (sites); the line is what counts.
        &run.replace("ps-globus doctor", "ps-globus doctor || true"),
        dir.path(),
        &[("PS_GLOBUS_CONFIG", config.to_str().unwrap())],
    );
    let printed = stdout
        .lines()
        .chain(stderr.lines())
        .find_map(|l| l.find("state database: ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("{stdout}\n{stderr}"))
        .to_owned();
    let redacted = ps_globus::internal::redact_url(&url);
    let version = |s: &str| s.rsplit_once("schema version ").map(|(_, v)| v.to_owned());
    assert!(
        printed.starts_with(&format!(
            "state database: PostgreSQL at {redacted} (server "
        )),
        "{printed}"
    );
    assert_eq!(
        version(&printed),
        version(&sample),
        "{printed} vs the README's {sample}"
    );
}
