//! Offline augmentation as a user meets it on the command line: `--variants`, level ranges
//! (`--sigma LOW..HIGH`, `--snr-db LOW..HIGH`), `--manifest` and `gen-fake-data`'s ranges parse
//! and are checked, a variant's output is never taken as an input, and flags the run cannot act
//! on yet are a usage error rather than silently ignored.

use std::fs;
use std::path::Path;

mod common;
use common::*;

fn tones(dir: &Path, count: &str) {
    gen_fake_data(
        dir,
        &[
            "--count",
            count,
            "--duration",
            "0.05",
            "--sample-rate",
            "8000",
            "--format",
            "i16",
        ],
    );
}

#[test]
fn bad_ranges_are_usage_errors_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--sigma", "0.2..0.1"][..], "is an empty range"),
        (&["--sigma", "0..2000"][..], "at most 1000"),
        (&["--sigma", "-1..1"][..], "negative"),
        (&["--sigma", "0.1..x"][..], "is not a number"),
        (&["--snr-db", "20..10"][..], "is an empty range"),
        (&["--snr-db", "-400..10"][..], "from -300 to 300"),
        (&["--snr-db", "..10"][..], "not a range LOW..HIGH"),
        (&["--variants", "0"][..], "--variants"),
    ] {
        let mut all = args.to_vec();
        all.push(".");
        let run = run_in(dir.path(), &all);
        run.expect_code(2);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    let run = etl_in(dir.path(), &["gen-fake-data", "--duration", "2..1"]);
    run.expect_code(2);
    assert!(run.stderr.contains("is an empty range"), "{}", run.stderr);
}

/// Until the run acts on them, these flags stop it with a usage error and write nothing.
#[test]
fn flags_the_run_cannot_act_on_yet_are_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let sounds = dir.path().join("sounds");
    tones(&sounds, "1");
    for (args, says) in [
        (&["--variants", "3"][..], "--variants"),
        (&["--sigma", "0.01..0.1"][..], "range"),
        (&["--snr-db", "-20..-10"][..], "range"),
        (&["--manifest", "sounds/metadata.csv"][..], "--manifest"),
    ] {
        let mut all = args.to_vec();
        all.push("sounds");
        let run = run_in(dir.path(), &all);
        run.expect_code(2);
        assert!(
            run.stderr.contains(says) && run.stderr.contains("not supported"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            !output_of(&sounds.join("example0.wav")).exists(),
            "{args:?}"
        );
        assert!(!sounds.join("metadata.csv").exists());
    }
    let run = etl_in(
        dir.path(),
        &[
            "gen-fake-data",
            "--out-dir",
            "g",
            "--frequency",
            "200..2000",
        ],
    );
    run.expect_code(2);
    assert!(run.stderr.contains("--frequency"), "{}", run.stderr);
    assert!(!dir.path().join("g").exists());

    // A single value, in either spelling, is today's run.
    run_in(dir.path(), &["--snr-db", "10..10", "--seed", "1", "sounds"]).expect_code(0);
    let first = fs::read(output_of(&sounds.join("example0.wav"))).unwrap();
    run_in(
        dir.path(),
        &[
            "--force",
            "--snr-db",
            "10",
            "--seed",
            "1",
            "--variants",
            "1",
            "sounds",
        ],
    )
    .expect_code(0);
    assert_eq!(
        fs::read(output_of(&sounds.join("example0.wav"))).unwrap(),
        first
    );
}

/// `NAME-transformed-<digits>.wav` is a variant's output: a run with one variant neither takes it
/// as an input nor touches it.
#[test]
fn outputs_of_variants_are_never_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let sounds = dir.path().join("sounds");
    tones(&sounds, "1");
    let variant = sounds.join("example0-transformed-2.wav");
    fs::copy(sounds.join("example0.wav"), &variant).unwrap();
    let before = fs::read(&variant).unwrap();
    let run = run_in(dir.path(), &["--settle", "0", "sounds"]);
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(1, 0, 0));
    assert_eq!(fs::read(&variant).unwrap(), before);
    assert!(
        !sounds
            .join("example0-transformed-2-transformed.wav")
            .exists()
    );

    // Named as a PATH, it is ignored with a word saying why.
    let run = run_in(
        dir.path(),
        &["--settle", "0", "sounds/example0-transformed-2.wav"],
    );
    assert!(
        run.stderr.contains("is an output, never an input"),
        "{}",
        run.stderr
    );
    assert!(
        !sounds
            .join("example0-transformed-2-transformed.wav")
            .exists()
    );
}
