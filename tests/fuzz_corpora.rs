//! Replays every fuzz seed (`fuzz/seeds/<target>/`, hand-written valid inputs) and
//! corpus (`fuzz/corpus/<target>/`, what `scripts/fuzz` kept) through its target's body
//! in `ps_globus::fuzzing`, so that CI checks them: a panic here is a regression of a
//! bug the fuzzer once found, or of an input that once worked.

use ps_globus::fuzzing::Target;

/// The library's fuzz targets and the emulator's.
fn targets() -> impl Iterator<Item = &'static (&'static str, Target)> {
    ps_globus::fuzzing::TARGETS
        .iter()
        .chain(ps_globus_sim::FUZZ_TARGETS)
}

#[test]
fn every_fuzz_seed_and_corpus_replays_without_a_panic() {
    let root = crate::support::repo_root().join("fuzz");
    for (name, target) in targets() {
        for kind in ["seeds", "corpus"] {
            let dir = root.join(kind).join(name);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}: every target keeps {kind}", dir.display()));
            let mut count = 0;
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let caught = std::panic::catch_unwind(|| target(&data));
                assert!(caught.is_ok(), "{name}: {} panics", path.display());
                count += 1;
            }
            assert!(count > 0, "{}: empty, it checks nothing", dir.display());
        }
    }
}

/// The targets are the ones the fuzz crate builds: a target without a corpus, or a
/// corpus without a target, is a mistake.
#[test]
fn every_fuzz_target_has_a_binary_and_a_corpus() {
    let root = crate::support::repo_root().join("fuzz");
    for (name, _) in targets() {
        assert!(
            root.join(format!("fuzz_targets/{name}.rs")).is_file(),
            "{name}"
        );
    }
    for entry in std::fs::read_dir(root.join("corpus")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            targets().any(|(t, _)| *t == name),
            "corpus {name} has no target"
        );
    }
}
