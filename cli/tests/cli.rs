//! The `ps-globus` binary: `proxy inspect` and `proxy fetch`, and its exit codes.

use std::process::{Command, Output};

use crate::support::unique_name;
use ps_globus::Store;
use ps_globus::connector::FileConnector;

fn ps_globus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ps-globus"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn inspect_and_fetch_a_serialized_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        unique_name("cli"),
        FileConnector::new(dir.path().join("objects")).unwrap(),
    )
    .unwrap();
    let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    let proxy = store.proxy(&payload).unwrap();
    let proxy_file = dir.path().join("proxy.json");
    std::fs::write(&proxy_file, serde_json::to_string(&proxy).unwrap()).unwrap();
    let proxy_path = proxy_file.to_str().unwrap();

    let out = ps_globus(&["proxy", "inspect", proxy_path, "-F", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = &shown["DATA"][0];
    assert_eq!(shown["store"]["name"], store.name());
    assert_eq!(shown["key"]["id"], proxy.key().unwrap().id());
    assert_eq!(shown["connector"], "file");
    assert_eq!(shown["present"], true);
    // One proxy a line (as the demo's consumer reads them), summarised for people.
    let second = store.proxy(&vec![1u8; 10]).unwrap();
    let lines = format!(
        "0\t{}\n1\t{}\n",
        serde_json::to_string(&proxy).unwrap(),
        serde_json::to_string(&second).unwrap()
    );
    let lines_file = dir.path().join("proxies.txt");
    std::fs::write(&lines_file, lines).unwrap();
    let out = ps_globus(&["proxy", "inspect", lines_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert_eq!(summary.matches("store:      ").count(), 2, "{summary}");
    assert!(
        summary.contains(&format!("object:     {}", second.key().unwrap().id())),
        "{summary}"
    );
    assert!(summary.contains("here:       yes"), "{summary}");

    let fetched = dir.path().join("fetched.bin");
    let out = ps_globus(&[
        "proxy",
        "fetch",
        proxy_path,
        "-o",
        fetched.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&fetched).unwrap(), payload);

    store.evict(proxy.key().unwrap()).unwrap();
    let out = ps_globus(&[
        "proxy",
        "fetch",
        proxy_path,
        "-o",
        fetched.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not in store"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn malformed_input_exits_1_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"v": 1, "store": 3}"#).unwrap();
    let out = ps_globus(&["proxy", "inspect", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("malformed proxy"),
        "{}",
        text(&out.stderr)
    );

    let out = ps_globus(&["proxy", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    // Regression: a missing file said only "No such file or directory (os error 2)".
    let missing = dir.path().join("nope.json");
    let out = ps_globus(&["proxy", "inspect", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot read") && stderr.contains("nope.json"),
        "{stderr}"
    );
    let out = ps_globus(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("ps-globus "));
}

#[test]
fn sim_serve_prints_one_json_line_and_exits_cleanly_on_sigterm() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let collection = dir.path().join("laptop");
    std::fs::create_dir(&collection).unwrap();
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ps-globus"))
        .args([
            "sim",
            "serve",
            "--collection",
            &format!("laptop={}", collection.display()),
            "--collection",
            &format!("closed={}", closed.display()),
            "--no-https",
            "closed",
            "--task-latency-ms",
            "5",
            "--https-latency-ms",
            "1",
        ])
        .env("PS_GLOBUS_SIM_STATIC_TOKEN", "t")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    let url = info["transfer_url"].as_str().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    assert_eq!(info["auth_url"], info["transfer_url"]);
    let laptop = &info["collections"]["laptop"];
    assert_eq!(
        laptop["id"],
        ps_globus_sim::collection_id("laptop").to_string()
    );
    assert_eq!(
        laptop["root"],
        std::fs::canonicalize(&collection)
            .unwrap()
            .display()
            .to_string()
    );
    // Each collection's HTTPS origin, on a port of its own, unless turned off.
    let https = laptop["https_server"].as_str().unwrap();
    assert!(
        https.starts_with("http://127.0.0.1:") && format!("{https}/") != url,
        "{https}"
    );
    assert_eq!(
        info["collections"]["closed"]["https_server"],
        serde_json::Value::Null
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn sim_serve_refuses_bad_settings_with_exit_1() {
    let out = ps_globus(&["sim", "serve", "--collection", "x=/no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a directory"),
        "{}",
        text(&out.stderr)
    );
    let out = ps_globus(&["sim", "serve", "--bandwidth", "fast"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Regression: `sim serve --collection x=A --collection x=B` silently kept the last.
#[test]
fn sim_serve_refuses_a_collection_named_twice() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = format!("x={}", a.path().display());
    let second = format!("x={}", b.path().display());
    let out = ps_globus(&[
        "sim",
        "serve",
        "--collection",
        &first,
        "--collection",
        &second,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--collection x is given twice"),
        "{}",
        text(&out.stderr)
    );
}

/// `--allow` names a collection given with `--collection`; a typo is refused, not
/// silently an open collection.
#[test]
fn sim_serve_refuses_access_rules_for_an_unknown_collection() {
    let a = tempfile::tempdir().unwrap();
    let collection = format!("x={}", a.path().display());
    let out = ps_globus(&[
        "sim",
        "serve",
        "--collection",
        &collection,
        "--allow",
        "y=user@sim.ps-globus.local",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no collection y"),
        "{}",
        text(&out.stderr)
    );
}
