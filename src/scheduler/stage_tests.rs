//! Staged files' words and their verification; waiting for real ones is in
//! `cli/tests/job.rs`.

use super::*;

fn file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> StagedFile {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let (size, sha256) = expected_of(&path).unwrap();
    StagedFile {
        item: 7,
        path,
        size: Some(size),
        sha256: Some(sha256),
    }
}

#[test]
fn a_staged_file_survives_its_word_paths_with_colons_included() {
    let known = StagedFile {
        item: 42,
        path: "/scratch/run:3/in.h5".into(),
        size: Some(11),
        sha256: Some("ab".repeat(32)),
    };
    assert_eq!(StagedFile::parse_word(&known.to_word()).unwrap(), known);
    let unknown = StagedFile {
        item: 1,
        path: "/x".into(),
        size: None,
        sha256: None,
    };
    assert_eq!(unknown.to_word(), OsString::from("1:-:-:/x"));
    assert_eq!(StagedFile::parse_word(&unknown.to_word()).unwrap(), unknown);
    for bad in [
        "",
        "x:-:-:/p",
        "1:-:-:",
        "1:-:nothex:/p",
        "1:ten:-:/p",
        "1:-:-",
    ] {
        let e = StagedFile::parse_word(OsStr::new(bad)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn an_arrived_file_must_be_the_staged_bytes_in_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = file(dir.path(), "in.h5", b"input bytes");
    good.verify().unwrap();

    let mut changed = good.clone();
    std::fs::write(&changed.path, b"input bytez").unwrap();
    let e = changed.verify().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert!(e.to_string().contains("sha256"), "{e}");
    changed.size = Some(3);
    assert!(
        changed
            .verify()
            .unwrap_err()
            .to_string()
            .contains("11 bytes arrived, 3")
    );

    // A link planted where the file should arrive is refused, whatever it points at.
    let target = file(dir.path(), "elsewhere", b"input bytes");
    let link = dir.path().join("linked.h5");
    std::os::unix::fs::symlink(&target.path, &link).unwrap();
    let linked = StagedFile {
        path: link,
        ..target
    };
    let e = linked.verify().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert!(e.to_string().contains("not a regular file"), "{e}");

    let missing = StagedFile {
        path: dir.path().join("never"),
        ..good
    };
    assert_eq!(missing.verify().unwrap_err().kind(), ErrorKind::Integrity);
}
