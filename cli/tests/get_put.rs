//! `ps-globus get` and `put`: one file over a collection's HTTPS, with no Transfer task;
//! an interrupted get resumed by range; the refusals and their exit codes.

use crate::command::Setup;
use crate::support::emulator::Emu;

const CLIENT: &str = "c3c3c3c3-0000-4000-8000-000000000003";
const SECRET: &str = "get-put-client-secret";

/// A file of `len` bytes whose content says where each byte sits.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn put_and_get_move_a_file_over_https_with_no_task_and_a_get_resumes_by_range() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let data = pattern((9 << 20) + 13); // two ranges of 8 MiB at most
    let local = setup.home.path().join("data.bin");
    std::fs::write(&local, &data).unwrap();
    std::fs::create_dir(emu.root_a().join("up")).unwrap();

    let (code, out, err) = setup.run(&["put", local.to_str().unwrap(), "a:/up/data.bin"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("Sent {} bytes", data.len())), "{out}");
    assert_eq!(
        std::fs::read(emu.root_a().join("up/data.bin")).unwrap(),
        data
    );

    let back = setup.home.path().join("back.bin");
    let (code, out, err) = setup.run(&["get", "a:/up/data.bin", back.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("Received {} bytes", data.len())),
        "{out}"
    );
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let stats = emu.sim.stats();
    assert_eq!(stats.tasks(), 0, "no Transfer task");
    assert_eq!(stats.route("HTTPS GET"), 2, "two ranges");

    // An interrupted get left its first MiB and 13 bytes: the next one asks only for
    // the rest, 8 MiB, in one range.
    let again = setup.home.path().join("again.bin");
    let mut part = again.as_os_str().to_owned();
    part.push(".part");
    std::fs::write(&part, &data[..(1 << 20) + 13]).unwrap();
    let (code, _, err) = setup.run(&[
        "get",
        &format!("{}:/up/data.bin", emu.a),
        again.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&again).unwrap(), data);
    assert!(!std::path::Path::new(&part).exists());
    assert_eq!(
        emu.sim.stats().route("HTTPS GET"),
        3,
        "one range for the rest"
    );
}

#[test]
fn refusals_say_what_is_wrong_and_a_token_without_the_scope_exits_4_with_the_login() {
    let emu = Emu::with(|c| {
        c.clients.insert(CLIENT.into(), SECRET.into());
        c.collections.get_mut("b").unwrap().disable_https = true;
    });
    let setup = Setup::new(&emu);
    let local = setup.home.path().join("x");
    std::fs::write(&local, b"x").unwrap();

    let (code, _, err) = setup.run(&["get", "a:/missing", local.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no such file"), "{err}");
    let (code, _, err) = setup.run(&["put", local.to_str().unwrap(), "b:/x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HTTPS disabled"), "{err}");
    let (code, _, err) = setup.run(&["get", &format!("{}:relative", emu.a), "y"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HTTPS paths are absolute"), "{err}");

    // A Transfer token is no token for the collection: exit 4, and the login to run.
    let transfer_only = "urn:globus:auth:scope:transfer.api.globus.org:all";
    let token = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(emu.client_token(CLIENT, SECRET, transfer_only));
    let (code, _, err) = setup.run_env(
        &["put", local.to_str().unwrap(), "a:/x"],
        &[("PS_GLOBUS_ACCESS_TOKEN", token.as_str())],
    );
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!("ps-globus login --collection {}", emu.a)),
        "{err}"
    );
    assert!(!emu.root_a().join("x").exists());
}

/// `transfer --https-max-size`: a small file here goes by PUT, a larger one by a task;
/// `stage-in --https-max-size` fetches a small file by GET; a failing PUT goes by Transfer.
#[test]
fn transfer_and_stage_in_send_small_files_over_https_when_asked() {
    let emu = Emu::start();
    let mut setup = Setup::new(&emu);
    crate::support::emulator::write(emu.root_a(), "in/small.txt", b"small");
    crate::support::emulator::write(emu.root_a(), "in/big.bin", &pattern(2000));
    let batch = setup.home.path().join("batch.txt");
    std::fs::write(
        &batch,
        "a:/in/small.txt b:/out/small.txt\na:/in/big.bin b:/out/big.bin\n",
    )
    .unwrap();
    let args = ["transfer", "--https-max-size", "1000", "--batch"];
    let doc = setup.json(&[&args[..], &[batch.to_str().unwrap(), "--json"]].concat());
    assert_eq!(doc["succeeded"], 2, "{doc}");
    assert_eq!(
        std::fs::read(emu.root_b().join("out/small.txt")).unwrap(),
        b"small"
    );
    assert_eq!(
        std::fs::read(emu.root_b().join("out/big.bin")).unwrap(),
        pattern(2000)
    );
    let stats = emu.sim.stats();
    assert_eq!(stats.route("HTTPS PUT"), 1, "the small file by HTTPS");
    assert_eq!(
        stats.route("POST /v0.10/transfer"),
        1,
        "the large one by a task"
    );

    setup.site = "b".into();
    let here = emu
        .root_b()
        .canonicalize()
        .unwrap()
        .join("staged/small.txt");
    let (code, _, err) = setup.run(&[
        "stage-in",
        "--https-max-size",
        "1000",
        "a:/in/small.txt",
        here.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&here).unwrap(), b"small");
    let stats = emu.sim.stats();
    assert_eq!(stats.route("HTTPS GET"), 1);
    assert_eq!(
        stats.route("POST /v0.10/transfer"),
        1,
        "no task for the stage-in"
    );
}

#[test]
fn a_transfer_whose_put_fails_goes_by_a_task_and_succeeds() {
    let emu = Emu::with(|c| {
        c.faults.push(crate::support::emulator::fault(
            ps_globus_sim::FaultKind::Http503,
            None,
            Some("HTTPS PUT"),
            None,
        ))
    });
    let setup = Setup::new(&emu);
    crate::support::emulator::write(emu.root_a(), "in/x", b"falls back");
    let (code, _, err) = setup.run(&[
        "transfer",
        "--https-max-size",
        "1000",
        "a:/in/x",
        "b:/out/x",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(emu.root_b().join("out/x")).unwrap(),
        b"falls back"
    );
    let stats = emu.sim.stats();
    assert_eq!(stats.route("HTTPS PUT"), 2, "tried, retried once");
    assert_eq!(stats.route("POST /v0.10/transfer"), 1);
}
