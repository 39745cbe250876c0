//! Offline augmentation as a user meets it on the command line: `--variants`, level ranges
//! (`--sigma LOW..HIGH`, `--snr-db LOW..HIGH`), `--manifest` and `gen-fake-data`'s ranges: the
//! levels measured in the outputs, their spread, the bytes under `--seed`, and the manifest as
//! csv readers see it.

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

/// A single value, in either spelling (`10` or `10..10`, `--variants 1` or none), is today's run:
/// the same bytes, the same output name, and report lines without per-output levels.
#[test]
fn a_single_level_and_one_variant_are_todays_run() {
    let dir = tempfile::tempdir().unwrap();
    let sounds = dir.path().join("sounds");
    tones(&sounds, "1");
    let report = dir.path().join("report.jsonl");
    run_in(
        dir.path(),
        &[
            "--snr-db",
            "10..10",
            "--seed",
            "1",
            "--report",
            report.to_str().unwrap(),
            "sounds",
        ],
    )
    .expect_code(0);
    let first = fs::read(output_of(&sounds.join("example0.wav"))).unwrap();
    let line = &report_lines(&report)[0];
    assert!(
        line.get("variant").is_none() && line.get("sigma").is_none(),
        "{line}"
    );
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
    assert!(!variant_output_of(&sounds.join("example0.wav"), 0).exists());
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

/// The WAV files below `dir` and their bytes (the lock file holds a process id).
fn wav_files(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = snapshot(dir);
    files.retain(|path, _| path.extension().is_some_and(|e| e == "wav"));
    files
}

/// The ok lines of a report, by output path.
fn ok_lines(report: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    report_lines(report)
        .into_iter()
        .filter(|l| l["status"] == "ok")
        .map(|l| (l["output"].as_str().unwrap().to_string(), l))
        .collect()
}

/// 10·log10(signal power / noise power), the noise being output − input, in the decoded domain.
fn measured_snr_db(input: &Path, output: &Path) -> f64 {
    let (x, y) = (read_wav(input).samples, read_wav(output).samples);
    assert_eq!(x.len(), y.len());
    let signal: f64 = x.iter().map(|v| v * v).sum();
    let noise: f64 = x.iter().zip(&y).map(|(a, b)| (b - a) * (b - a)).sum();
    10.0 * (signal / noise).log10()
}

/// Each of 3 variants gets its own SNR drawn in 10..20 dB: the SNR measured in the output is in
/// the range and is the one the report gives, within 0.2 dB.
#[test]
fn variants_at_an_snr_range_measure_the_level_the_report_gives() {
    let dir = tempfile::tempdir().unwrap();
    let sounds = dir.path().join("sounds");
    // Clip-free tones long enough (22050 frames) for the measured noise power to be within ~1%
    // of the drawn one.
    gen_fake_data(
        &sounds,
        &[
            "--count",
            "4",
            "--duration",
            "0.5",
            "--frequency",
            "300..900",
            "--amplitude",
            "0.5",
            "--seed",
            "3",
        ],
    );
    let report = dir.path().join("report.jsonl");
    let run = run_in(
        dir.path(),
        &[
            "--variants",
            "3",
            "--snr-db",
            "10..20",
            "--seed",
            "11",
            "--report",
            report.to_str().unwrap(),
            "sounds",
        ],
    );
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(12, 0, 0));
    let lines = ok_lines(&report);
    assert_eq!(lines.len(), 12);
    let mut levels = Vec::new();
    for n in 0..4 {
        let input = sounds.join(format!("example{n}.wav"));
        for k in 0..3 {
            let output = variant_output_of(&input, k);
            let line = &lines[&format!("sounds/example{n}-transformed-{k}.wav")];
            assert_eq!(line["variant"], k, "{line}");
            let reported = line["snr_db"].as_f64().unwrap();
            assert!(line["sigma"].as_f64().unwrap() > 0.0, "{line}");
            let measured = measured_snr_db(&input, &output);
            assert!(
                (10.0..=20.0).contains(&measured),
                "{output:?}: {measured} dB"
            );
            assert!(
                (measured - reported).abs() < 0.2,
                "{output:?}: measured {measured} dB, reported {reported} dB"
            );
            levels.push(reported);
        }
    }
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    assert_eq!(levels.len(), 12, "every output has its own level");
}

/// Over 300 outputs (100 files × 3 variants) the drawn SNRs are uniform over the range: a
/// Kolmogorov-Smirnov test at 1%.
#[test]
fn levels_drawn_from_a_range_are_uniform_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let sounds = dir.path().join("sounds");
    gen_fake_data(
        &sounds,
        &[
            "--count",
            "100",
            "--duration",
            "0.005",
            "--sample-rate",
            "8000",
        ],
    );
    let report = dir.path().join("report.jsonl");
    run_in(
        dir.path(),
        &[
            "--variants",
            "3",
            "--snr-db",
            "10..20",
            "--seed",
            "17",
            "--report",
            report.to_str().unwrap(),
            "sounds",
        ],
    )
    .expect_code(0);
    let levels: Vec<f64> = ok_lines(&report)
        .values()
        .map(|l| l["snr_db"].as_f64().unwrap())
        .collect();
    assert_eq!(levels.len(), 300);
    assert!(levels.iter().all(|db| (10.0..=20.0).contains(db)));
    let unit: Vec<f64> = levels.iter().map(|db| (db - 10.0) / 10.0).collect();
    let d = ks_uniform_statistic(&unit);
    assert!(d < ks_critical_1pct(unit.len()), "KS statistic {d}");
    // Not all the same: a constant would fail the test above, and so would a draw in one half.
    let below = unit.iter().filter(|u| **u < 0.5).count();
    assert!(
        (100..200).contains(&below),
        "{below} of 300 below the middle"
    );
}

/// Under `--seed`, variant k is the same bytes on a second run, with -j 1 and -j 2, and with
/// `--variants 2` and `--variants 3`.
#[test]
fn a_variant_is_the_same_bytes_whatever_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    gen_fake_data(
        &base,
        &["--count", "6", "--duration", "0.02..0.2", "--seed", "4"],
    );
    let run_into = |name: &str, args: &[&str]| {
        let out = dir.path().join(name);
        let mut all = vec!["--seed", "9", "--snr-db", "5..25", "--out-dir", name];
        all.extend_from_slice(args);
        all.push("base");
        run_in(dir.path(), &all).expect_code(0);
        wav_files(&out)
    };
    let three_j2 = run_into("a", &["--variants", "3", "-j", "2"]);
    let three_j1 = run_into("b", &["--variants", "3", "-j", "1"]);
    let two = run_into("c", &["--variants", "2", "-j", "2"]);
    assert_eq!(three_j2.len(), 18);
    assert!(three_j2 == three_j1, "-j 1 and -j 2 differ");
    assert_eq!(two.len(), 12);
    for (path, bytes) in &two {
        assert!(Some(bytes) == three_j2.get(path), "{path:?} differs");
    }
    let again = run_into("a", &["--variants", "3", "--force"]);
    assert!(again == three_j2, "a second run differs");
    // The variants differ from each other.
    let first = &three_j2[Path::new("example0-transformed-0.wav")];
    assert_ne!(first, &three_j2[Path::new("example0-transformed-1.wav")]);
}

/// `--sigma LOW..HIGH`: each output's σ is drawn in the range, is on its report line, and is the
/// standard deviation of the noise in the output.
#[test]
fn a_sigma_range_gives_each_output_a_sigma_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let sounds = dir.path().join("sounds");
    gen_fake_data(&sounds, &["--count", "3", "--duration", "0.5"]);
    let report = dir.path().join("report.jsonl");
    run_in(
        dir.path(),
        &[
            "--variants",
            "2",
            "--sigma",
            "0.01..0.05",
            "--report",
            report.to_str().unwrap(),
            "sounds",
        ],
    )
    .expect_code(0);
    let lines = ok_lines(&report);
    assert_eq!(lines.len(), 6);
    for (output, line) in &lines {
        let sigma = line["sigma"].as_f64().unwrap();
        assert!((0.01..=0.05).contains(&sigma), "{line}");
        assert!(line.get("snr_db").is_none(), "{line}");
        let output = dir.path().join(output);
        let input = sounds.join(format!(
            "{}.wav",
            output
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .split("-transformed")
                .next()
                .unwrap()
        ));
        let (x, y) = (read_wav(&input).samples, read_wav(&output).samples);
        let noise: Vec<f64> = x.iter().zip(&y).map(|(a, b)| b - a).collect();
        let measured = std(&noise);
        assert!(
            (measured / sigma - 1.0).abs() < 0.03,
            "{output:?}: σ {measured}, reported {sigma}"
        );
    }
}

/// `--manifest`: one row per output, readable by the csv crate, Python's csv and pandas, naming
/// files that exist relative to its folder; a re-run that skips everything writes it complete.
#[test]
fn the_manifest_lists_every_output_and_survives_a_rerun_that_skips() {
    let dir = tempfile::tempdir().unwrap();
    let sounds = dir.path().join("sounds");
    tones(&sounds, "5");
    let args = [
        "--variants",
        "3",
        "--snr-db",
        "10..20",
        "--seed",
        "2",
        "--out-dir",
        "augmented",
        "--manifest",
        "augmented/metadata.csv",
        "sounds",
    ];
    run_in(dir.path(), &args).expect_code(0);
    let manifest = dir.path().join("augmented/metadata.csv");
    let first = fs::read_to_string(&manifest).unwrap();
    let rows = check_manifest(&manifest, 15);
    assert!(
        rows.iter().all(|r| r[3].parse::<f64>().is_ok()),
        "σ measured: {rows:?}"
    );

    // Outputs newer than their inputs are skipped; the manifest still lists them all.
    let rerun = run_in(dir.path(), &args);
    rerun.expect_code(0);
    assert_eq!(rerun.counts(), Counts::new(0, 15, 0));
    let again = check_manifest(&manifest, 15);
    let key = |r: &Vec<String>| (r[0].clone(), r[1].clone(), r[2].clone(), r[4].clone());
    assert_eq!(
        again.iter().map(key).collect::<Vec<_>>(),
        rows.iter().map(key).collect::<Vec<_>>(),
        "{first}"
    );
    assert!(temp_files(&dir.path().join("augmented")).is_empty());
}

/// Reads the manifest with the csv crate (and Python's csv and pandas, where installed): the
/// header, `expected` rows, each naming an output that exists relative to the manifest's folder
/// and a source that exists. Returns the rows.
fn check_manifest(manifest: &Path, expected: usize) -> Vec<Vec<String>> {
    let folder = manifest.parent().unwrap();
    let mut reader = csv::Reader::from_path(manifest).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "file_name",
            "source",
            "variant",
            "sigma",
            "snr_db",
            "seed",
            "frames",
            "sample_rate",
            "channels"
        ]
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), expected);
    for row in &rows {
        assert!(folder.join(&row[0]).is_file(), "{row:?}");
        assert!(folder.join(&row[1]).is_file(), "{row:?}");
        let frames: u64 = row[6].parse().unwrap();
        assert_eq!(
            frames as usize,
            read_wav(&folder.join(&row[0])).frames,
            "{row:?}"
        );
    }
    let python = |script: &str| {
        let out = std::process::Command::new("python3")
            .args(["-c", script, manifest.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    if have("python3", "--version") {
        let count = python(
            "import csv, os, sys\n\
             rows = list(csv.DictReader(open(sys.argv[1], newline='')))\n\
             d = os.path.dirname(sys.argv[1])\n\
             assert all(os.path.isfile(os.path.join(d, r['file_name'])) for r in rows)\n\
             print(len(rows))",
        );
        assert_eq!(count.trim(), expected.to_string());
    } else {
        println!("skipped: python3 is not installed (the manifest is not read with Python's csv)");
    }
    let have_pandas = std::process::Command::new("python3")
        .args(["-c", "import pandas"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have_pandas {
        let out = python(
            "import sys, pandas\n\
             df = pandas.read_csv(sys.argv[1])\n\
             assert list(df.columns)[0] == 'file_name'\n\
             assert df['variant'].dtype.kind == 'i' and df['frames'].dtype.kind == 'i'\n\
             assert df['snr_db'].between(10, 20).all()\n\
             print(len(df), df['file_name'].nunique())",
        );
        assert_eq!(out.trim(), format!("{expected} {expected}"));
    } else {
        println!("skipped: pandas is not installed (the manifest is not read with pandas)");
    }
    rows
}

/// `gen-fake-data --frequency LOW..HIGH --duration LOW..HIGH`: files of varied lengths, in the
/// range, the same under the same `--seed`.
#[test]
fn gen_fake_data_draws_durations_and_frequencies_from_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        gen_fake_data(
            &out,
            &[
                "--count",
                "8",
                "--duration",
                "0.01..0.1",
                "--frequency",
                "100..1000",
                "--sample-rate",
                "8000",
                "--seed",
                seed,
            ],
        );
        wav_files(&out)
    };
    let a = make("a", "1");
    assert!(a == make("b", "1"), "the same seed made other files");
    assert!(a != make("c", "2"), "another seed made the same files");
    let mut frames: Vec<usize> = (0..8)
        .map(|n| read_wav(&dir.path().join(format!("a/example{n}.wav"))).frames)
        .collect();
    assert!(frames.iter().all(|f| (80..=800).contains(f)), "{frames:?}");
    frames.sort();
    frames.dedup();
    assert!(frames.len() > 4, "varied lengths: {frames:?}");
}

/// `--shard`: a shard takes an input with all its variants, and the shards together make every
/// output once, with the bytes of a whole run.
#[test]
fn a_shard_takes_an_input_with_all_its_variants() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    tones(&base, "8");
    let common = ["--seed", "5", "--variants", "2", "--sigma", "0.01..0.1"];
    let mut whole = common.to_vec();
    whole.extend(["--out-dir", "whole", "base"]);
    run_in(dir.path(), &whole).expect_code(0);
    let mut made = 0;
    for shard in ["0/2", "1/2"] {
        let mut args = common.to_vec();
        args.extend(["--shard", shard, "--out-dir", "sharded", "base"]);
        let run = run_in(dir.path(), &args);
        run.expect_code(0);
        made += run.counts().ok;
        // After each shard, every input has both of its variants or neither.
        let sharded = dir.path().join("sharded");
        for n in 0..8 {
            let [zero, one] = [0, 1]
                .map(|k| variant_output_of(&sharded.join(format!("example{n}.wav")), k).exists());
            assert_eq!(zero, one, "{shard}: example{n}.wav's variants were split");
        }
    }
    assert_eq!(made, 16);
    assert!(wav_files(&dir.path().join("sharded")) == wav_files(&dir.path().join("whole")));
}
