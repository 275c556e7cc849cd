//! User logins against the emulator's Auth API through the real binary: copy-paste and
//! loopback logins, `whoami`, `logout`, the keyring fallback, consents, the advice a
//! failed login gives, and no secret in any log (split from `login.rs`, which drives the
//! same flows through the library).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::login::{APP, browse, emu_with_flagged, no_redirect};
use crate::support::emulator::Emu;
use ps_globus::auth::{FileTokenStore, TRANSFER_RS, TokenSet, TokenStore};

struct Cli {
    home: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Cli {
    fn new(emu: &Emu) -> Cli {
        let home = tempfile::tempdir().unwrap();
        let env = vec![
            ("PS_GLOBUS_HOME".into(), home.path().display().to_string()),
            (
                "PS_GLOBUS_CONFIG".into(),
                home.path().join("config.toml").display().to_string(),
            ),
            ("PS_GLOBUS_AUTH_URL".into(), emu.sim.auth_url().into()),
            (
                "PS_GLOBUS_TRANSFER_URL".into(),
                emu.sim.transfer_url().into(),
            ),
            ("PS_GLOBUS_CLIENT_ID".into(), APP.into()),
            ("PS_GLOBUS_TOKEN_STORE".into(), "file".into()),
            ("BROWSER".into(), "true".into()),
        ];
        Cli { home, env }
    }

    fn token_file(&self) -> PathBuf {
        self.home.path().join("tokens.json")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ps-globus"));
        command
            .args(args)
            .env_remove("PS_GLOBUS_CLIENT_SECRET")
            .env_remove("SSH_TTY")
            .env_remove("SSH_CONNECTION")
            .env_remove("PS_GLOBUS_LOG");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// Runs a command to its end: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `login ARGS`, approving every URL it prints: copy-paste logins get the code
    /// typed on stdin, loopback logins get a browser. Returns (exit code, stderr, codes).
    fn login(&self, args: &[&str]) -> (i32, String, Vec<String>) {
        let mut child = self
            .command(&[&["login"], args].concat())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let (mut text, mut codes, mut line) = (String::new(), Vec::new(), String::new());
        while stderr.read_line(&mut line).unwrap() > 0 {
            if let Some(at) = line.find("http") {
                let url = line[at..].trim();
                if url.contains("/v2/oauth2/authorize") {
                    if url.contains("redirect_uri=http%3A%2F%2Flocalhost") {
                        assert!(browse(url, true).contains("Login complete"));
                    } else {
                        let code = browse(url, false);
                        writeln!(stdin, "{code}").unwrap();
                        codes.push(code);
                    }
                }
            }
            text.push_str(&std::mem::take(&mut line));
        }
        (child.wait().unwrap().code().unwrap_or(-1), text, codes)
    }
}

#[test]
fn cli_copy_paste_login_whoami_logout() {
    let emu = Emu::start();
    let cli = Cli::new(&emu);
    let (code, _, stderr) = cli.run(&["whoami"]);
    assert_eq!(code, 4, "not logged in exits 4: {stderr}");
    assert!(stderr.contains("ps-globus login"), "{stderr}");

    let (code, stderr, codes) = cli.login(&["--no-local-server"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(codes.len(), 1);
    assert!(
        stderr.contains("logged in as user@sim.ps-globus.local"),
        "{stderr}"
    );
    let mode = std::fs::metadata(cli.token_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let (code, stdout, stderr) = cli.run(&["whoami", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["username"], "user@sim.ps-globus.local");
    let servers: Vec<&str> = doc["resource_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resource_server"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["auth.globus.org", "transfer.api.globus.org"]);
    assert_eq!(doc["resource_servers"][1]["refreshable"], true);

    let set = TokenSet::clone(
        &FileTokenStore::new(cli.token_file())
            .load()
            .unwrap()
            .unwrap(),
    );
    let refresh = set.tokens[TRANSFER_RS].refresh_token.clone().unwrap();
    let (code, _, stderr) = cli.run(&["logout"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("4 token(s) revoked"), "{stderr}");
    assert!(!cli.token_file().exists());
    // Revoked at Globus Auth: the refresh token no longer works.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        no_redirect()
            .post(format!("{}v2/oauth2/token", emu.sim.auth_url()))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_id", APP),
            ])
            .send()
            .await
            .unwrap()
            .status()
    });
    // 401 invalid_grant, as Globus answers (the SDK's recorded fixture shows it).
    assert_eq!(status, 401);
    let (code, _, _) = cli.run(&["whoami"]);
    assert_eq!(code, 4);
}

#[test]
fn cli_loopback_login_and_keyring_fallback() {
    let emu = Emu::start();
    let mut cli = Cli::new(&emu);
    // Automatic store choice with no reachable Secret Service: the 0600 file, said so.
    cli.env.retain(|(k, _)| k != "PS_GLOBUS_TOKEN_STORE");
    cli.env.push((
        "DBUS_SESSION_BUS_ADDRESS".into(),
        "unix:path=/nonexistent/ps-globus-test-bus".into(),
    ));
    let (code, stderr, codes) = cli.login(&["--local-server", "-v"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(codes.is_empty(), "no code was typed");
    assert!(stderr.contains("no usable OS keyring"), "{stderr}");
    let mode = std::fs::metadata(cli.token_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let (code, stdout, _) = cli.run(&["whoami"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("user@sim.ps-globus.local"), "{stdout}");
}

#[test]
fn cli_login_explains_missing_app_and_refuses_service_identities() {
    let emu = Emu::start();
    let mut cli = Cli::new(&emu);
    cli.env.retain(|(k, _)| k != "PS_GLOBUS_CLIENT_ID");
    let (code, _, stderr) = cli.run(&["login", "--no-local-server"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("Register one at"), "{stderr}");
    assert!(stderr.contains("PS_GLOBUS_CLIENT_ID"), "{stderr}");

    cli.env.push(("PS_GLOBUS_CLIENT_ID".into(), APP.into()));
    cli.env
        .push(("PS_GLOBUS_CLIENT_SECRET".into(), "shh-secret".into()));
    let mut command = cli.command(&["login"]);
    command.env("PS_GLOBUS_CLIENT_SECRET", "shh-secret");
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("service identity"), "{stderr}");
    assert!(!stderr.contains("shh-secret"));

    let (code, _, _) = cli.run(&["login", "--local-server", "--no-local-server"]);
    assert_eq!(code, 2, "conflicting flags are a usage error");
}

#[test]
fn cli_consent_login_asks_for_the_flagged_collection() {
    let emu = emu_with_flagged(&["a"]);
    let cli = Cli::new(&emu);
    // First login naming a flagged collection: two phases (token, then consent).
    let (code, stderr, codes) = cli.login(&["--no-local-server", "--collection", &emu.a]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(codes.len(), 2, "{stderr}");
    assert!(stderr.contains(&format!("consent held for collection {}", emu.a)));
    let set = FileTokenStore::new(cli.token_file())
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(set.consents, [emu.a.parse().unwrap()].into());
}

#[test]
fn a_trace_level_session_logs_no_secret() {
    let emu = Emu::start();
    let mut cli = Cli::new(&emu);
    cli.env.push(("PS_GLOBUS_LOG".into(), "trace".into()));
    let (code, mut log, codes) = cli.login(&["--no-local-server"]);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging is on: {log}"
    );
    let set = FileTokenStore::new(cli.token_file())
        .load()
        .unwrap()
        .unwrap();
    for args in [&["whoami", "--json"][..], &["logout"][..]] {
        let (code, stdout, stderr) = cli.run(args);
        assert_eq!(code, 0, "{stderr}");
        log.push_str(&stdout);
        log.push_str(&stderr);
    }
    let mut secrets: Vec<String> = codes;
    for token in set.tokens.values() {
        secrets.push(token.access_token.clone());
        secrets.extend(token.refresh_token.clone());
    }
    assert_eq!(secrets.len(), 5, "a code and two token pairs");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret leaked into the log"
        );
    }
    assert!(!log.contains("code_verifier"), "the PKCE verifier leaked");
}

/// Regression: with a text browser as `$BROWSER` (`curl`, `w3m`, `lynx`: the README's
/// emulator idiom, and the "over SSH" case), the `webbrowser` crate runs it in the
/// foreground, and `login` waited for it before serving the loopback redirect the browser
/// was loading: a deadlock. The browser is never waited on now. (The deadline only keeps a
/// regression from hanging the suite.)
#[test]
fn a_text_browser_completes_a_loopback_login_instead_of_deadlocking() {
    let emu = Emu::start();
    let mut cli = Cli::new(&emu);
    cli.env.retain(|(k, _)| k != "BROWSER");
    cli.env
        .push(("BROWSER".into(), "curl -sSL -o /dev/null".into()));
    let mut child = cli
        .command(&["login", "--local-server"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the login deadlocked on its text browser");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let (code, stdout, _) = cli.run(&["whoami"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("user@sim.ps-globus.local"), "{stdout}");
}

/// Regression: a login that failed (here a code that is not the one Globus gave) ended
/// with the hint "run `ps-globus login`", the very command that just failed. It says
/// what to check instead.
#[test]
fn a_failed_login_does_not_tell_the_user_to_log_in() {
    let emu = Emu::start();
    let cli = Cli::new(&emu);
    let mut child = cli
        .command(&["login", "--no-local-server"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "not-the-code").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let hint = stderr
        .lines()
        .find(|l| l.starts_with("hint: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(!hint.contains("run `ps-globus login`"), "{stderr}");
    assert!(hint.contains("try again"), "{stderr}");
}
