//! The command line with Redis: `doctor` checks each `[redis.NAME]` of the configuration
//! (password from the environment, never printed; a memory policy that drops objects),
//! and `proxy inspect` / `proxy fetch` on a multi store's proxies, in another process.

use crate::command::Setup;
use crate::support::emulator::Emu;
use crate::support::redis_server::{RedisServer, small_to_redis};
use ps_globus::Store;
use ps_globus::config::Config;
use ps_globus::connector::{Connector, FileConnector, RedisConfig};
use serde_json::Value;

const PASSWORD: &str = "correct-horse-battery";

/// The `doctor --json` checks about Redis, and everything it printed.
fn redis_checks(setup: &Setup, env: &[(&str, &str)]) -> (Vec<Value>, String) {
    let (_, stdout, stderr) = setup.run_env(&["doctor", "--json"], env);
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let checks = doc["checks"].as_array().unwrap().iter();
    let redis = checks
        .filter(|c| c["check"].as_str().unwrap().starts_with("redis "))
        .cloned();
    (redis.collect(), format!("{stdout}{stderr}"))
}

fn configure(setup: &Setup, servers: &[(&str, RedisConfig)]) {
    let path = setup.home.path().join("config.toml");
    let mut config = Config::load_from(&path).unwrap();
    for (name, redis) in servers {
        config.redis.insert(name.to_string(), redis.clone());
    }
    config.save_to(&path).unwrap();
}

#[test]
fn doctor_checks_a_password_protected_redis_and_never_prints_the_password() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let mut config = server.config();
    config.password_env = Some("LAB_REDIS_PASSWORD".into());
    configure(&setup, &[("lab", config)]);
    let text = std::fs::read_to_string(setup.home.path().join("config.toml")).unwrap();
    assert!(
        text.contains("[redis.lab]") && text.contains("password_env = \"LAB_REDIS_PASSWORD\""),
        "{text}"
    );

    let (checks, _) = redis_checks(&setup, &[("LAB_REDIS_PASSWORD", PASSWORD)]);
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert_eq!(checks[0]["ok"], true, "{checks:?}");
    let said = checks[0]["check"].as_str().unwrap();
    assert!(
        said.contains(&format!("redis://127.0.0.1:{}/0", server.port)) && said.contains("Redis 7"),
        "{said}"
    );
    assert_eq!(checks[1]["check"], "redis lab: maxmemory-policy noeviction");
    assert_eq!(
        server.cli(&["DBSIZE"]).trim(),
        "0",
        "the probe object is gone"
    );

    let (checks, printed) = redis_checks(&setup, &[("LAB_REDIS_PASSWORD", "wrong")]);
    assert_eq!(checks[0]["ok"], false);
    assert!(
        checks[0]["check"].as_str().unwrap().contains("WRONGPASS"),
        "{checks:?}"
    );
    assert!(
        checks[0]["fix"].as_str().unwrap().contains("password_env"),
        "{checks:?}"
    );
    assert!(
        !printed.contains(PASSWORD) && !printed.contains("\"wrong\""),
        "{printed}"
    );

    let (checks, _) = redis_checks(&setup, &[]);
    assert_eq!(checks[0]["ok"], false);
    assert!(
        checks[0]["check"]
            .as_str()
            .unwrap()
            .contains("LAB_REDIS_PASSWORD (password_env) is not set"),
        "{checks:?}"
    );
}

#[test]
fn doctor_fails_a_redis_that_is_down_or_would_drop_objects_when_full() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let lossy =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let mut down = RedisServer::start();
    let mut down_config = down.config();
    down_config.timeout_ms = 2000;
    down.stop();
    configure(&setup, &[("lossy", lossy.config()), ("down", down_config)]);

    let (code, stdout, _) = setup.run(&["doctor"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("FAIL  redis lossy: maxmemory-policy allkeys-lru"),
        "{stdout}"
    );
    assert!(stdout.contains("noeviction"), "{stdout}");
    assert!(
        stdout.contains("FAIL  redis down (redis://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("start the server"), "{stdout}");
}

#[test]
fn proxy_inspect_names_the_child_of_a_multi_proxy_and_fetch_reads_it_in_another_process() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let large = FileConnector::new(dir.path()).unwrap().config();
    let multi = small_to_redis(&server, 1024, large);
    let store = Store::new(crate::support::unique_name("cli-multi"), multi).unwrap();
    let tiny = store.proxy(&b"tiny".to_vec()).unwrap();
    let large = store.proxy(&vec![7u8; 5000]).unwrap();
    let file = dir.path().join("proxies.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            serde_json::to_string(&tiny).unwrap(),
            serde_json::to_string(&large).unwrap()
        ),
    )
    .unwrap();

    let doc = setup.json(&["proxy", "inspect", "--json", file.to_str().unwrap()]);
    let data = doc["DATA"].as_array().unwrap();
    assert_eq!(
        (
            data[0]["child"].as_str(),
            data[0]["child_connector"].as_str()
        ),
        (Some("small"), Some("redis"))
    );
    assert_eq!(
        (
            data[1]["child"].as_str(),
            data[1]["child_connector"].as_str()
        ),
        (Some("large"), Some("file"))
    );
    assert_eq!(
        (data[0]["present"].as_bool(), data[1]["present"].as_bool()),
        (Some(true), Some(true))
    );
    let (code, text, _) = setup.run(&["proxy", "inspect", file.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(text.contains("child:      small (redis)"), "{text}");

    let one = dir.path().join("one.json");
    std::fs::write(&one, serde_json::to_string(&tiny).unwrap()).unwrap();
    let out = dir.path().join("bytes");
    let (code, _, stderr) = setup.run(&[
        "proxy",
        "fetch",
        one.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let stored = std::fs::read(&out).unwrap();
    assert!(stored.ends_with(b"tiny"), "{stored:?}");
}

/// `redis add` writes the `[redis.NAME]` table no one should have to write by hand
/// (comments kept, a password only by its variable), `config show` and `redis list`
/// show it, `doctor` checks it, `redis rm` removes it.
#[test]
fn redis_add_list_show_and_rm_keep_the_file_and_doctor_checks_the_server() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let path = setup.home.path().join("config.toml");
    let before = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("# my own comment\n{before}")).unwrap();
    let port = server.port.to_string();
    let (code, _, stderr) = setup.run(&[
        "redis",
        "add",
        "lab",
        "--port",
        &port,
        "--password-env",
        "LAB_REDIS_PASSWORD",
        "--ttl-s",
        "3600",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# my own comment\n"), "{text}");
    assert!(text.contains("[redis.lab]"), "{text}");
    assert!(text.contains(&format!("port = {port}")), "{text}");
    assert!(
        text.contains("password_env = \"LAB_REDIS_PASSWORD\""),
        "{text}"
    );
    assert!(
        text.contains("ttl_s = 3600") && !text.contains("timeout_ms"),
        "{text}"
    );

    let (code, stdout, _) = setup.run(&["config", "show"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("lab   | 127.0.0.1:{port}/0")),
        "{stdout}"
    );
    assert!(
        stdout.contains("current site:  a (PS_GLOBUS_SITE names it)"),
        "{stdout}"
    );
    let (code, stdout, _) = setup.run(&["redis", "list", "-F", "json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["lab"]["password_env"], "LAB_REDIS_PASSWORD");

    let (checks, said) = redis_checks(&setup, &[("LAB_REDIS_PASSWORD", PASSWORD)]);
    assert_eq!(checks[0]["ok"], true, "{said}");
    assert!(!said.contains(PASSWORD));

    let (code, _, stderr) = setup.run(&["redis", "rm", "lab"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !std::fs::read_to_string(&path)
            .unwrap()
            .contains("[redis.lab]")
    );
    let (code, _, stderr) = setup.run(&["redis", "rm", "lab"]);
    assert_eq!(code, 2, "{stderr}");
}
