//! Batch operations as the people who schedule `etl` see them: the JSON Lines report, JSON logs,
//! the progress bar (under a real pseudo-terminal, and its absence without one), dry runs,
//! shards run at the same time, shell completions, `--version`, and the files in deploy/,
//! each run for real against the built binary.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

mod common;
use common::{output_of, spec};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const ETL: &str = env!("CARGO_BIN_EXE_etl");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `etl` with a predictable environment: no RUST_LOG or NO_COLOR from the caller's shell.
fn etl() -> Command {
    let mut cmd = Command::new(ETL);
    cmd.env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[track_caller]
fn expect_code(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", show(out));
}

/// `etl gen-fake-data` into `dir`: `count` tones of `seconds`, with extra flags.
fn gen_tones(dir: &Path, count: u32, seconds: f64, extra: &[&str]) {
    let out = run(etl()
        .arg("gen-fake-data")
        .arg("--out-dir")
        .arg(dir)
        .args(["--count", &count.to_string()])
        .args(["--duration", &seconds.to_string()])
        .args(["-j", "2"])
        .args(extra));
    expect_code(&out, 0);
    common::settle(dir);
}

/// A sine tone written with hound: `frames` frames of `channels` channels.
fn write_wav(path: &Path, spec: hound::WavSpec, frames: u32) {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let rate = spec.sample_rate as f64;
    for n in 0..frames {
        let x = 0.5 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / rate).sin();
        for _ in 0..spec.channels {
            match (spec.sample_format, spec.bits_per_sample) {
                (hound::SampleFormat::Float, _) => w.write_sample(x as f32).unwrap(),
                (_, 8) => w.write_sample((x * 127.0).round() as i8).unwrap(),
                (_, 16) => w.write_sample((x * 32767.0).round() as i16).unwrap(),
                (_, bits) => w
                    .write_sample((x * ((1i64 << (bits - 1)) - 1) as f64).round() as i32)
                    .unwrap(),
            }
        }
    }
    w.finalize().unwrap();
    common::settle(path);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A parsed report: the per-file records and the summary.
struct Report {
    records: Vec<Value>,
    summary: Value,
}

/// Reads a JSON Lines report: every line must parse, end with a newline, and the last (only the
/// last) must be `{"summary": {...}}`.
fn read_report(path: &Path) -> Report {
    let raw = fs::read(path).unwrap_or_else(|e| panic!("report {}: {e}", path.display()));
    let body = String::from_utf8(raw).expect("the report is UTF-8");
    assert!(
        body.ends_with('\n'),
        "the report must end with a whole line:\n{body}"
    );
    let mut values: Vec<Value> = body
        .lines()
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("report line {} does not parse ({e}): {line}", n + 1))
        })
        .collect();
    let last = values.pop().expect("the report has a summary line");
    let summary = last
        .get("summary")
        .unwrap_or_else(|| panic!("the last line is not a summary: {last}"))
        .clone();
    assert!(summary.is_object(), "summary is an object: {summary}");
    for v in &values {
        assert!(
            v.get("summary").is_none(),
            "only the last line is a summary"
        );
    }
    Report {
        records: values,
        summary,
    }
}

const RECORD_FIELDS: [&str; 11] = [
    "input",
    "output",
    "status",
    "seconds",
    "frames",
    "channels",
    "sample_rate",
    "clipped",
    "attempts",
    "worker_pid",
    "error",
];

#[track_caller]
fn check_record_fields(r: &Value) {
    let obj = r.as_object().expect("a record is an object");
    for f in RECORD_FIELDS {
        assert!(obj.contains_key(f), "record lacks {f:?}: {r}");
    }
    assert!(r["input"].is_string(), "{r}");
    assert!(r["seconds"].as_f64().is_some_and(|s| s >= 0.0), "{r}");
    assert!(r["attempts"].is_u64(), "{r}");
}

/// The record whose input's file name is `name`.
#[track_caller]
fn record<'a>(report: &'a Report, name: &str) -> &'a Value {
    let found: Vec<&Value> = report
        .records
        .iter()
        .filter(|r| Path::new(r["input"].as_str().unwrap()).file_name() == Some(OsStr::new(name)))
        .collect();
    assert_eq!(found.len(), 1, "one record for {name}: {found:?}");
    found[0]
}

/// Every entry under `dir` (hidden ones included): relative path -> (size, mtime, bytes hash).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u64, SystemTime, u64)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            let hash = if meta.is_file() {
                xxhash_rust::xxh3::xxh3_64(&fs::read(e.path()).unwrap())
            } else {
                0
            };
            out.insert(rel, (meta.len(), meta.modified().unwrap(), hash));
            if meta.is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Temp files our runs leave when something goes wrong.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|p| p.to_string_lossy().ends_with(".etl-tmp"))
        .collect()
}

/// Holds the lock another run would take (flock, as etl does), until dropped.
fn hold_lock(path: &Path) -> File {
    let f = File::create(path).unwrap();
    f.lock().unwrap();
    f
}

fn frames_of(path: &Path) -> (u32, u16, u32) {
    let r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (r.duration(), r.spec().channels, r.spec().sample_rate)
}

/// Runs `cmd` (a shell command line) under a pseudo-terminal with util-linux `script`, and
/// returns everything the terminal received. `None` (with a note) when `script` is missing.
fn under_pty(cmd: &str, env: &[(&str, Option<&str>)]) -> Option<(i32, String)> {
    let mut c = Command::new("script");
    c.args(["-qec", cmd, "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color");
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    match c.stdin(Stdio::null()).output() {
        Ok(out) => Some((out.status.code().unwrap_or(-1), text(&out.stdout))),
        Err(e) => {
            eprintln!("note: cannot run `script` ({e}); pseudo-terminal checks skipped");
            None
        }
    }
}

fn quote(p: &Path) -> String {
    let s = p.to_str().expect("a UTF-8 temp path");
    assert!(!s.contains('\''));
    format!("'{s}'")
}

/// SGR (colour) escape sequences: ESC [ digits/semicolons m.
fn has_color(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len()).any(|i| {
        if b[i] != 0x1b || b.get(i + 1) != Some(&b'[') {
            return false;
        }
        let rest = &b[i + 2..];
        let n = rest
            .iter()
            .take_while(|c| c.is_ascii_digit() || **c == b';')
            .count();
        rest.get(n) == Some(&b'm')
    })
}

/// Counts the `K/N files` the bar draws.
fn bar_counters(s: &str, total: usize) -> BTreeSet<usize> {
    let pat = format!("/{total} files");
    s.match_indices(&pat)
        .filter_map(|(i, _)| {
            let digits: String = s[..i]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.chars().rev().collect::<String>().parse().ok()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

#[test]
fn report_has_a_line_per_file_that_matches_the_disk_and_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    fs::create_dir(&dir).unwrap();
    write_wav(&dir.join("a.wav"), spec(1, 44100, 32, true), 22050);
    write_wav(&dir.join("b.wav"), spec(2, 48000, 16, false), 12345);
    write_wav(&dir.join("c.wav"), spec(1, 8000, 8, false), 4000);
    // A name that is not UTF-8 must not cost the report its lines.
    let latin1 = dir.join(OsStr::from_bytes(b"caf\xe9.wav"));
    write_wav(&latin1, spec(1, 22050, 24, false), 3000);
    fs::copy(fixture("sox-s16-stereo-44k-1001.wav"), dir.join("sox.wav")).unwrap();
    fs::write(dir.join("x.wav"), "this is not audio\n").unwrap();
    fs::copy(fixture("truncated.wav"), dir.join("truncated.wav")).unwrap();
    common::settle(&dir);

    // c.wav is done already: its output is newer than it, so the run skips it.
    let c = dir.join("c.wav");
    File::options()
        .write(true)
        .open(&c)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    expect_code(&run(etl().arg("run").arg(&c).args(["--seed", "1"])), 0);
    let c_out = fs::read(output_of(&c)).unwrap();

    let report_path = tmp.path().join("reports/sub/report.jsonl");
    let out = run(etl()
        .arg("run")
        .arg(&dir)
        .args(["--seed", "5", "-j", "2", "--report"])
        .arg(&report_path));
    expect_code(&out, 1);
    assert_eq!(
        text(&out.stdout).lines().last(),
        Some("4 ok, 1 skipped, 2 failed"),
        "{}",
        show(&out)
    );

    let report = read_report(&report_path);
    assert_eq!(report.records.len(), 7, "one line per input");
    for r in &report.records {
        check_record_fields(r);
    }

    for name in ["a.wav", "b.wav", "sox.wav"] {
        let r = record(&report, name);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["error"], Value::Null, "{r}");
        let output = PathBuf::from(r["output"].as_str().unwrap());
        assert_eq!(output, output_of(&dir.join(name)), "{r}");
        let (frames, channels, rate) = frames_of(&output);
        assert_eq!(r["frames"], frames, "{r}");
        assert_eq!(r["channels"], channels, "{r}");
        assert_eq!(r["sample_rate"], rate, "{r}");
        assert_eq!(frames_of(&dir.join(name)), (frames, channels, rate));
        assert!(r["clipped"].is_u64(), "{r}");
        assert!(r["attempts"].as_u64().unwrap() >= 1, "{r}");
        assert!(r["worker_pid"].as_u64().unwrap() > 0, "{r}");
    }
    assert_eq!(record(&report, "a.wav")["frames"], 22050);
    assert_eq!(record(&report, "b.wav")["channels"], 2);
    assert_eq!(record(&report, "sox.wav")["frames"], 1001);

    // The non-UTF-8 name: its line is there (the name shown lossily) and its output on disk.
    let r = record(&report, "caf\u{FFFD}.wav");
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["frames"], 3000);
    assert_eq!(frames_of(&output_of(&latin1)).0, 3000);

    let r = record(&report, "c.wav");
    assert_eq!(r["status"], "skipped", "{r}");
    assert_eq!(r["error"], Value::Null, "a skip is not an error: {r}");
    assert!(r["reason"].as_str().unwrap().contains("newer"), "{r}");
    assert_eq!(
        fs::read(output_of(&c)).unwrap(),
        c_out,
        "a skipped output is kept"
    );

    for (name, cause) in [("x.wav", "not a wav"), ("truncated.wav", "truncated")] {
        let r = record(&report, name);
        assert_eq!(r["status"], "failed", "{r}");
        let error = r["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(error.contains(cause), "{name}: error names the cause: {r}");
        assert_eq!(r["output"], Value::Null, "{r}");
        assert_eq!(r["frames"], Value::Null, "{r}");
        assert!(!output_of(&dir.join(name)).exists(), "no output for {name}");
    }
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));

    let s = &report.summary;
    assert_eq!(s["ok"], 4, "{s}");
    assert_eq!(s["skipped"], 1, "{s}");
    assert_eq!(s["failed"], 2, "{s}");
    assert_eq!(s["not_run"], 0, "{s}");
    assert_eq!(s["seed"], 5, "{s}");
    assert_eq!(s["sigma"], 0.1, "{s}");
    assert!(s.get("snr_db").is_none(), "{s}");
    assert_eq!(s["jobs"], 2, "{s}");
    assert_eq!(s["shard"], "0/1", "{s}");
    assert_eq!(s["version"], VERSION, "{s}");
    assert!(s["seconds"].as_f64().is_some_and(|x| x >= 0.0), "{s}");

    // With --snr-db the summary carries that instead of sigma, and a re-run overwrites the report.
    let out = run(etl()
        .arg("run")
        .arg(dir.join("a.wav"))
        .args(["--snr-db", "20", "--force", "-j", "1", "--report"])
        .arg(&report_path));
    expect_code(&out, 0);
    let report = read_report(&report_path);
    assert_eq!(report.records.len(), 1);
    assert_eq!(report.summary["snr_db"], 20.0, "{}", report.summary);
    assert!(report.summary.get("sigma").is_none(), "{}", report.summary);
    assert_eq!(report.summary["jobs"], 1);
    assert!(report.summary["seed"].is_u64(), "a drawn seed is reported");
}

/// Sends SIGTERM to a running `etl run` once its report has its first whole line.
fn sigterm_after_first_report_line(child: &mut std::process::Child, report_path: &Path) {
    let until = Instant::now() + Duration::from_secs(60);
    while !fs::read(report_path).is_ok_and(|b| b.contains(&b'\n')) {
        assert!(Instant::now() < until, "no report line within a minute");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

/// Starts a run over 24 files of 20 s with one worker, SIGTERMs the supervisor once the report
/// has its first line, and returns the exit code, the report, stdout and the folder. Without
/// flushes: the first line of a flushed run waits for its first flush, which on a loaded machine
/// can take longer than the whole run (the signal then came after the end); and without flushes
/// the workers name the outputs themselves, whose report must still match the disk.
const INTERRUPTED_FILES: u32 = 24;

fn interrupted_run() -> (tempfile::TempDir, PathBuf, Option<i32>, Report, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    gen_tones(&dir, INTERRUPTED_FILES, 20.0, &[]);
    let report_path = tmp.path().join("report.jsonl");
    let mut child = etl()
        .arg("run")
        .arg(&dir)
        .args(["--seed", "3", "-j", "1", "--no-fsync", "--report"])
        .arg(&report_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sigterm_after_first_report_line(&mut child, &report_path);
    let out = child.wait_with_output().unwrap();
    let report = read_report(&report_path);
    (tmp, dir, out.status.code(), report, text(&out.stdout))
}

/// More files than the supervisor hands to its engine at once: those never handed over when the
/// run is stopped are counted as not run, like those in flight.
#[test]
fn a_run_stopped_early_counts_every_file_it_did_not_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("many");
    gen_tones(&dir, 1500, 0.01, &[]);
    // One long file goes first (largest first): the signal comes when it is reported.
    let long = tmp.path().join("long");
    gen_tones(&long, 1, 30.0, &[]);
    fs::rename(long.join("example0.wav"), dir.join("long.wav")).unwrap();
    let report_path = tmp.path().join("report.jsonl");
    let mut child = etl()
        .arg("run")
        .arg(&dir)
        .args(["--seed", "3", "-j", "1", "--settle", "0s", "--report"])
        .arg(&report_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sigterm_after_first_report_line(&mut child, &report_path);
    let status = child.wait().unwrap();
    let report = read_report(&report_path);
    let s = &report.summary;
    let count = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(
        count("ok") + count("skipped") + count("failed"),
        report.records.len() as u64,
        "{s}"
    );
    assert_eq!(report.records.len() as u64 + count("not_run"), 1501, "{s}");
    if status.code() == Some(143) {
        assert!(count("not_run") > 0, "{s}");
    }
    let made = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with("-transformed.wav")
        })
        .count() as u64;
    assert_eq!(made, count("ok"), "{s}");
}

#[test]
fn an_interrupted_run_keeps_a_whole_line_per_finished_file_and_a_summary() {
    let (_tmp, dir, code, report, stdout) = interrupted_run();
    assert_eq!(code, Some(143), "SIGTERM ends with 143\n{stdout}");
    let s = &report.summary;
    assert!(
        s["end"].as_str().unwrap_or_default().contains("SIGTERM"),
        "{s}"
    );
    let not_run = s["not_run"].as_u64().unwrap();
    assert!(not_run > 0, "the run was cut short: {s}");
    let ok: Vec<&Value> = report
        .records
        .iter()
        .filter(|r| r["status"] == "ok")
        .collect();
    assert!(!ok.is_empty());
    assert_eq!(s["ok"], ok.len(), "{s}");
    assert_eq!(
        s["ok"].as_u64().unwrap() + s["failed"].as_u64().unwrap() + s["skipped"].as_u64().unwrap(),
        report.records.len() as u64,
        "{s}"
    );
    assert_eq!(
        report.records.len() as u64 + not_run,
        INTERRUPTED_FILES as u64,
        "{s}"
    );
    for r in &ok {
        check_record_fields(r);
        let output = Path::new(r["output"].as_str().unwrap());
        assert_eq!(r["frames"], frames_of(output).0, "{r}");
    }
    // What is on disk is exactly what the report says finished; nothing half-written remains.
    let outputs: BTreeSet<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-transformed.wav"))
        .collect();
    let reported: BTreeSet<PathBuf> = ok
        .iter()
        .map(|r| PathBuf::from(r["output"].as_str().unwrap()))
        .collect();
    assert_eq!(outputs, reported);
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .contains("not run"),
        "{stdout}"
    );
}

/// Without flushes each worker names its outputs itself, and holds the results of tiny files for
/// a moment to send several together: a SIGTERM to the supervisor, or a SIGINT to every process
/// of the run (as a scheduler may send), must still leave on disk exactly the outputs the report
/// shows, and no temporary.
#[test]
fn a_stopped_run_of_tiny_files_without_flushes_has_on_disk_exactly_what_it_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    gen_tones(&dir, 20_000, 0.002, &[]);
    let report_path = tmp.path().join("report.jsonl");
    let mut stopped = 0;
    for round in 0..4 {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with("-transformed.wav") {
                fs::remove_file(p).unwrap();
            }
        }
        let mut child = etl()
            .arg("run")
            .arg(&dir)
            .args(["--seed", "3", "-j", "2", "--no-fsync", "--settle", "0s"])
            .arg("--report")
            .arg(&report_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A little later each round: some lines in, workers holding results.
        let lines = 1 + round * 2000;
        let until = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none()
            && fs::read(&report_path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
                < lines
        {
            assert!(Instant::now() < until, "no report lines within a minute");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (sig, expected) = if round % 2 == 0 {
            (libc::SIGTERM, 143)
        } else {
            (libc::SIGINT, 130)
        };
        let mut pids = if sig == libc::SIGINT {
            common::child_pids(child.id())
        } else {
            Vec::new()
        };
        pids.push(child.id());
        for pid in pids {
            // SAFETY: kill(2) on our own child and its children.
            unsafe { libc::kill(pid as i32, sig) };
        }
        let code = child.wait().unwrap().code();
        if code == Some(0) {
            continue; // over before the signal
        }
        assert_eq!(code, Some(expected), "round {round}");
        stopped += 1;
        let report = read_report(&report_path);
        let reported: BTreeSet<PathBuf> = report
            .records
            .iter()
            .filter(|r| r["status"] == "ok")
            .map(|r| PathBuf::from(r["output"].as_str().unwrap()))
            .collect();
        assert_eq!(report.records.len(), reported.len(), "round {round}");
        let on_disk: BTreeSet<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with("-transformed.wav"))
            .collect();
        let unreported: Vec<_> = on_disk.difference(&reported).collect();
        let missing: Vec<_> = reported.difference(&on_disk).collect();
        assert!(
            unreported.is_empty() && missing.is_empty(),
            "round {round}: {} outputs on disk not in the report (first {:?}), {} reported not on disk (first {:?})",
            unreported.len(),
            unreported.first(),
            missing.len(),
            missing.first()
        );
        assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
    }
    assert!(stopped >= 2, "only {stopped} of 4 runs were still going");
}

/// The file a worker was busy with when SIGTERM came is not broken: it belongs with the files
/// not run, not among the failures (no `failed` line, no ERROR naming it).
#[test]
fn an_interrupted_run_does_not_call_the_file_in_progress_failed() {
    let (_tmp, _dir, code, report, stdout) = interrupted_run();
    assert_eq!(code, Some(143));
    let failed: Vec<&Value> = report
        .records
        .iter()
        .filter(|r| r["status"] == "failed")
        .collect();
    assert!(failed.is_empty(), "{failed:?}\n{stdout}");
    assert_eq!(report.summary["failed"], 0, "{}", report.summary);
}

// ---------------------------------------------------------------------------------------------
// JSON logs
// ---------------------------------------------------------------------------------------------

#[test]
fn json_logs_are_one_object_per_line_with_level_message_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    gen_tones(&dir, 2, 0.2, &[]);
    fs::write(dir.join("x.wav"), "not audio").unwrap();
    common::settle(&dir.join("x.wav"));
    let report_path = tmp.path().join("r.jsonl");
    // No --seed: the drawn seed is logged; -v adds debug lines with fields of their own.
    let out = run(etl()
        .args(["--log-format", "json", "-v", "run"])
        .arg(&dir)
        .args(["-j", "2", "--report"])
        .arg(&report_path));
    expect_code(&out, 1);
    let stderr = text(&out.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l:?}\n{stderr}"))
        })
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    for l in &lines {
        let level = l["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {l}"));
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{l}"
        );
        assert!(l["message"].is_string(), "no message: {l}");
    }
    let x = dir.join("x.wav");
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(errors[0]["file"], x.to_str().unwrap(), "{}", errors[0]);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("not a wav"),
        "{}",
        errors[0]
    );
    // The seed logged is the one the report records.
    let seed = read_report(&report_path).summary["seed"].to_string();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["message"].as_str().unwrap().contains(&seed)),
        "seed {seed} is logged\n{stderr}"
    );
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "-v is honoured"
    );

    // A run refused by the lock says so in JSON too.
    let _lock = hold_lock(&dir.join(".etl.lock"));
    let out = run(etl().args(["--log-format", "json", "run"]).arg(&dir));
    expect_code(&out, 75);
    let stderr = text(&out.stderr);
    let l: Value = serde_json::from_str(stderr.trim()).expect("one JSON line");
    assert_eq!(l["level"], "ERROR");
    assert!(l["message"].as_str().unwrap().contains(".etl.lock"), "{l}");
}

// ---------------------------------------------------------------------------------------------
// The progress bar and escape codes
// ---------------------------------------------------------------------------------------------

fn bar_folder(tmp: &Path) -> PathBuf {
    let dir = tmp.join("s");
    gen_tones(&dir, 4, 1.0, &[]);
    fs::write(dir.join("x.wav"), "not audio").unwrap();
    common::settle(&dir.join("x.wav"));
    dir
}

#[test]
fn progress_bar_is_drawn_on_a_terminal_with_the_file_lines_above_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bar_folder(tmp.path());
    let cmd = format!(
        "{} run {} --seed 1 -j 2",
        quote(Path::new(ETL)),
        quote(&dir)
    );
    let Some((code, tty)) = under_pty(&cmd, &[]) else {
        return;
    };
    assert_eq!(code, 1, "{tty}");
    // The bar: redrawn in place (carriage return, erase line) with a files counter.
    assert!(tty.contains("\r\x1b[2K"), "no redraw in:\n{tty:?}");
    assert!(
        tty.contains("B/s") && tty.contains("ETA"),
        "bytes, rate, ETA: {tty:?}"
    );
    let counters = bar_counters(&tty, 5);
    assert!(counters.contains(&0), "no 0/5 files in {tty:?}");
    assert!(counters.len() >= 2, "the counter advances: {counters:?}");
    // The per-file lines are whole lines (the pty turns \n into \r\n), above the bar.
    for n in 0..4 {
        let line = format!("{}/example{n}.wav completed in ", dir.display());
        let at = tty
            .find(&line)
            .unwrap_or_else(|| panic!("{line} in {tty:?}"));
        let rest = &tty[at + line.len()..];
        let end = rest.find("\r\n").expect("the line ends");
        let secs = &rest[..end];
        assert!(
            secs.ends_with('s') && secs[..secs.len() - 1].parse::<f64>().is_ok(),
            "{secs:?}"
        );
    }
    assert!(tty.contains("4 ok, 0 skipped, 1 failed\r\n"), "{tty:?}");
    // The error log line is coloured on a terminal...
    assert!(has_color(&tty), "colour on a terminal: {tty:?}");
    assert!(tty.contains("x.wav: not a WAV"), "{tty:?}");

    // ...and with NO_COLOR it is not, while the bar still is drawn.
    let Some((code, tty)) = under_pty(&format!("{cmd} --force"), &[("NO_COLOR", Some("1"))]) else {
        return;
    };
    assert_eq!(code, 1, "{tty}");
    assert!(!has_color(&tty), "NO_COLOR: {tty:?}");
    assert!(tty.contains("ERROR "), "{tty:?}");
    assert!(bar_counters(&tty, 5).contains(&0), "{tty:?}");
    assert!(tty.contains("\r\x1b[2K"), "{tty:?}");
}

#[test]
fn no_bar_and_no_escape_codes_where_they_do_not_belong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bar_folder(tmp.path());
    let clean = |what: &str, s: &str| {
        assert!(!s.contains('\x1b'), "{what}: escape byte in {s:?}");
        assert!(
            !s.replace("\r\n", "\n").contains('\r'),
            "{what}: carriage return in {s:?}"
        );
    };

    // Plain pipes, as under cron, systemd or a pod: no bar, no colour, whatever TERM says.
    for args in [vec!["run"], vec!["--log-format", "json", "run"]] {
        let out = run(etl()
            .env("TERM", "xterm-256color")
            .args(&args)
            .arg(&dir)
            .args(["--seed", "1", "-j", "2", "--force"]));
        expect_code(&out, 1);
        clean("stdout", &text(&out.stdout));
        clean("stderr", &text(&out.stderr));
        assert!(text(&out.stderr).contains("x.wav"), "{}", show(&out));
        assert!(!text(&out.stderr).contains(" files "), "{}", show(&out));
        assert!(!out.stdout.contains(&b'\r') && !out.stderr.contains(&b'\r'));
    }
    let out = run(etl()
        .env("TERM", "xterm-256color")
        .arg("gen-fake-data")
        .arg("--out-dir")
        .arg(tmp.path().join("gen"))
        .args(["--count", "2", "--duration", "0.1"]));
    expect_code(&out, 0);
    for bytes in [&out.stdout, &out.stderr] {
        assert!(
            !bytes.contains(&b'\r') && !bytes.contains(&0x1b),
            "{}",
            show(&out)
        );
    }

    // On a terminal, --no-progress and -q draw no bar (NO_COLOR keeps the error line plain),
    // and a dumb terminal gets neither bar nor colour.
    let etl_cmd = quote(Path::new(ETL));
    for (extra, env) in [
        ("--no-progress", vec![("NO_COLOR", Some("1"))]),
        ("-q", vec![("NO_COLOR", Some("1"))]),
        ("", vec![("TERM", Some("dumb"))]),
    ] {
        let cmd = format!(
            "{etl_cmd} run {} --seed 1 -j 2 --force {extra}",
            quote(&dir)
        );
        let Some((code, tty)) = under_pty(&cmd, &env) else {
            return;
        };
        assert_eq!(code, 1, "{tty}");
        clean(&format!("terminal with {extra:?} {env:?}"), &tty);
        assert!(tty.contains("x.wav"), "{tty:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Dry run
// ---------------------------------------------------------------------------------------------

#[test]
fn dry_run_lists_what_it_would_do_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    gen_tones(&dir, 3, 0.2, &[]);
    fs::create_dir(dir.join("sub")).unwrap();
    write_wav(&dir.join("sub/deep.wav"), spec(2, 8000, 16, false), 800);
    fs::write(dir.join(".hidden.wav"), "hidden").unwrap();
    common::settle(&dir.join(".hidden.wav"));
    fs::create_dir(dir.join("folder.wav")).unwrap();
    // example2 is done already: its output is newer.
    let e2 = dir.join("example2.wav");
    File::options()
        .write(true)
        .open(&e2)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    expect_code(&run(etl().arg("run").arg(&e2)), 0);
    fs::remove_file(dir.join(".etl.lock")).unwrap();
    let before = snapshot(&dir);
    let d = dir.display();

    // -r: into sub/ and folder.wav/ (empty); the report asked for is not written either.
    let out = run(etl()
        .arg("run")
        .arg(&dir)
        .args(["-r", "--dry-run", "--report"])
        .arg(dir.join("report.jsonl")));
    expect_code(&out, 0);
    let stdout = text(&out.stdout);
    for line in [
        format!("transform {d}/example0.wav -> {d}/example0-transformed.wav"),
        format!("transform {d}/example1.wav -> {d}/example1-transformed.wav"),
        format!("transform {d}/sub/deep.wav -> {d}/sub/deep-transformed.wav"),
        format!("skip {d}/example2.wav: output is newer than the input"),
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
    }
    assert!(!stdout.contains(".hidden"), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("dry run: 3 to transform, 1 to skip, 0 would fail"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    assert_eq!(snapshot(&dir), before, "a dry run changed the folder");

    // Without -r, folder.wav would fail, and says why; nothing is created elsewhere either:
    // not the --out-dir, not the report's folder.
    let out_dir = tmp.path().join("elsewhere");
    let out = run(etl()
        .arg("run")
        .arg(&dir)
        .args(["--dry-run", "--out-dir"])
        .arg(&out_dir)
        .arg("--report")
        .arg(tmp.path().join("r/r.jsonl")));
    expect_code(&out, 1);
    let listed = text(&out.stdout);
    assert!(
        listed.contains(&format!(
            "transform {d}/example0.wav -> {}/example0-transformed.wav",
            out_dir.display()
        )),
        "{}",
        show(&out)
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("fail {d}/folder.wav: ")) && l.contains("directory")),
        "{listed}"
    );
    assert!(!listed.contains("deep.wav"), "{listed}");
    assert!(!out_dir.exists());
    assert!(!tmp.path().join("r").exists());
    assert_eq!(snapshot(&dir), before);

    // Shards split the dry run's list: disjoint, and together the whole.
    let whole: BTreeSet<String> = stdout
        .lines()
        .filter(|l| l.starts_with("transform "))
        .map(String::from)
        .collect();
    let mut union = BTreeSet::new();
    for i in 0..3 {
        let out =
            run(etl()
                .arg("run")
                .arg(&dir)
                .args(["-r", "--dry-run", "--shard", &format!("{i}/3")]));
        expect_code(&out, 0);
        for l in text(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("transform "))
        {
            assert!(union.insert(l.to_string()), "{l} in two shards");
        }
    }
    assert_eq!(union, whole);
    assert_eq!(snapshot(&dir), before);
}

// ---------------------------------------------------------------------------------------------
// Shards
// ---------------------------------------------------------------------------------------------

/// The relative inputs a set of reports transformed, each at most once.
fn transformed_by(reports: &[PathBuf], root: &Path) -> Vec<BTreeSet<PathBuf>> {
    reports
        .iter()
        .map(|p| {
            let report = read_report(p);
            let mut set = BTreeSet::new();
            for r in &report.records {
                assert_eq!(r["status"], "ok", "{r}");
                let rel = Path::new(r["input"].as_str().unwrap())
                    .strip_prefix(root)
                    .unwrap()
                    .to_path_buf();
                assert!(set.insert(rel), "twice in one report: {r}");
            }
            set
        })
        .collect()
}

#[test]
fn three_shards_at_once_cover_every_file_once_with_the_bytes_of_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    gen_tones(&a, 8, 0.3, &[]);
    gen_tones(
        &a.join("sub"),
        4,
        0.2,
        &["--format", "i16", "--channels", "2"],
    );
    let b = tmp.path().join("b");
    fs::create_dir_all(b.join("sub")).unwrap();
    let mut inputs = BTreeSet::new();
    for rel in snapshot(&a).into_keys() {
        if rel.extension() == Some(OsStr::new("wav")) {
            fs::copy(a.join(&rel), b.join(&rel)).unwrap();
            common::settle(&b.join(&rel));
            inputs.insert(rel);
        }
    }
    assert_eq!(inputs.len(), 12);

    let reports: Vec<PathBuf> = (0..3)
        .map(|i| tmp.path().join(format!("reports/shard-{i}.jsonl")))
        .collect();
    let children: Vec<_> = (0..3)
        .map(|i| {
            etl()
                .arg("run")
                .arg(&a)
                .args(["-r", "--seed", "42", "-j", "1"])
                .args(["--shard", &format!("{i}/3"), "--report"])
                .arg(&reports[i])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        expect_code(&child.wait_with_output().unwrap(), 0);
    }
    let per_shard = transformed_by(&reports, &a);
    let mut union = BTreeSet::new();
    for (i, set) in per_shard.iter().enumerate() {
        assert!(!set.is_empty(), "shard {i}/3 took no file: {per_shard:?}");
        for rel in set {
            assert!(union.insert(rel.clone()), "{} in two shards", rel.display());
        }
        let s = read_report(&reports[i]).summary;
        assert_eq!(s["shard"], format!("{i}/3"), "{s}");
        assert_eq!(s["ok"], set.len(), "{s}");
    }
    assert_eq!(union, inputs, "the shards together take every file");

    // One unsharded run with the same seed over a copy gives the same bytes, file for file.
    expect_code(
        &run(etl()
            .arg("run")
            .arg(&b)
            .args(["-r", "--seed", "42", "-j", "2"])),
        0,
    );
    let outputs = |root: &Path| -> BTreeSet<PathBuf> {
        snapshot(root)
            .into_keys()
            .filter(|p| p.to_string_lossy().ends_with("-transformed.wav"))
            .collect()
    };
    assert_eq!(outputs(&a), outputs(&b));
    assert_eq!(outputs(&a).len(), 12);
    for rel in outputs(&a) {
        assert!(
            fs::read(a.join(&rel)).unwrap() == fs::read(b.join(&rel)).unwrap(),
            "{} differs between the shards and one run",
            rel.display()
        );
    }

    // The lock is per shard: with 1/3's lock held, 1/3 is refused (75) and 0/3 runs.
    let _held = hold_lock(&a.join(".etl-shard-1of3.lock"));
    let out = run(etl()
        .arg("run")
        .arg(&a)
        .args(["-r", "--force", "--seed", "42", "--shard", "1/3"]));
    expect_code(&out, 75);
    assert!(
        text(&out.stderr).contains(".etl-shard-1of3.lock"),
        "{}",
        show(&out)
    );
    let out = run(etl()
        .arg("run")
        .arg(&a)
        .args(["-r", "--force", "--seed", "42", "--shard", "0/3"]));
    expect_code(&out, 0);
    drop(_held);

    // Shards and an unsharded run of one folder exclude each other: a shard run holds the
    // folder's lock shared, an unsharded run holds it exclusively.
    let whole = a.join(".etl.lock");
    let shared = File::open(&whole).unwrap();
    shared.lock_shared().unwrap();
    let out = run(etl()
        .arg("run")
        .arg(&a)
        .args(["-r", "--force", "--seed", "42"]));
    expect_code(&out, 75);
    assert!(text(&out.stderr).contains("shard runs"), "{}", show(&out));
    let out = run(etl()
        .arg("run")
        .arg(&a)
        .args(["-r", "--force", "--seed", "42", "--shard", "2/3"]));
    expect_code(&out, 0);
    drop(shared);
    let exclusive = hold_lock(&whole);
    let out = run(etl()
        .arg("run")
        .arg(&a)
        .args(["-r", "--force", "--seed", "42", "--shard", "2/3"]));
    expect_code(&out, 75);
    drop(exclusive);
}

#[test]
fn a_bad_shard_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["3/3", "0/0", "x", "1/", "/3", "1.5/3", "-1/3", "0/-3"] {
        let out = run(etl()
            .arg("run")
            .arg(tmp.path())
            .arg(format!("--shard={bad}")));
        expect_code(&out, 2);
        assert!(
            text(&out.stderr).contains("shard"),
            "{bad}: the message names the problem\n{}",
            show(&out)
        );
    }
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

// ---------------------------------------------------------------------------------------------
// Completions and version
// ---------------------------------------------------------------------------------------------

#[test]
fn completions_for_every_shell_and_the_version() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = run(etl().args(["completions", shell]));
        expect_code(&out, 0);
        let script = text(&out.stdout);
        assert!(script.contains("gen-fake-data"), "{shell}");
        assert!(script.contains("shard"), "{shell}: run's flags");
        assert!(script.contains("log-format"), "{shell}: global flags");
        // The internal `etl worker` (its flags are --server and --parent) is not offered.
        assert!(!script.contains("server"), "{shell} offers `etl worker`");
        if shell == "bash" {
            let path =
                std::env::temp_dir().join(format!("etl-completion-{}.bash", std::process::id()));
            fs::write(&path, &script).unwrap();
            let check = run(Command::new("bash").arg("-n").arg(&path));
            let _ = fs::remove_file(&path);
            expect_code(&check, 0);
        }
    }
    expect_code(&run(etl().args(["completions", "tcsh"])), 2);

    let cargo_toml =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let version = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("a version in Cargo.toml");
    for flag in ["--version", "-V"] {
        let out = run(etl().arg(flag));
        expect_code(&out, 0);
        assert_eq!(text(&out.stdout), format!("etl {version}\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// deploy/
// ---------------------------------------------------------------------------------------------

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

/// The folder holding the built `etl`, to put first on PATH.
fn bin_dir() -> PathBuf {
    Path::new(ETL).parent().unwrap().to_path_buf()
}

fn path_with_etl() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    )
}

#[test]
fn deploy_readme_names_every_deploy_file() {
    let readme = fs::read_to_string(deploy("README.md")).unwrap();
    for name in [
        "crontab",
        "etl.service",
        "etl.timer",
        "k8s-indexed-job.yaml",
        "slurm-array.sh",
    ] {
        assert!(deploy(name).is_file(), "{name}");
        assert!(
            readme.contains(&format!("`{name}`")),
            "README.md names {name}"
        );
    }
}

#[test]
fn k8s_indexed_job_parses_and_its_shards_cover_the_folder() {
    let yaml = fs::read_to_string(deploy("k8s-indexed-job.yaml")).unwrap();
    let job: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).expect("the YAML parses");
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let completions = spec["completions"].as_u64().expect("completions");
    assert_eq!(spec["parallelism"].as_u64(), Some(completions));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 15);
    let rules = spec["podFailurePolicy"]["rules"].as_sequence().unwrap();
    assert!(
        rules.iter().any(|r| r["action"].as_str() == Some("FailJob")
            && r["onExitCodes"]["values"]
                .as_sequence()
                .is_some_and(|v| v.iter().any(|c| c.as_u64() == Some(2)))),
        "a usage error (2) fails the Job"
    );
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert!(
        c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|e| e["name"].as_str() == Some("JOB_COMPLETION_INDEX")),
        "the args use $(JOB_COMPLETION_INDEX), so it is declared"
    );
    let args: Vec<String> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().expect("args are strings").to_string())
        .collect();
    let at = args.iter().position(|a| a == "--shard").expect("--shard");
    assert_eq!(
        args[at + 1],
        format!("$(JOB_COMPLETION_INDEX)/{completions}"),
        "{args:?}"
    );
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert!(args.iter().any(|a| a.starts_with(mount)), "{args:?}");

    // Run the container's command for every index, all at once, with the volume in a temp dir.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sounds = args
        .iter()
        .find(|a| a.starts_with(mount) && !a.contains("JOB_COMPLETION_INDEX"))
        .unwrap()
        .replacen(mount, data.to_str().unwrap(), 1);
    gen_tones(Path::new(&sounds), 10, 0.2, &[]);
    let children: Vec<_> = (0..completions)
        .map(|i| {
            let argv: Vec<String> = args
                .iter()
                .map(|a| {
                    a.replace("$(JOB_COMPLETION_INDEX)", &i.to_string())
                        .replacen(mount, data.to_str().unwrap(), 1)
                })
                .collect();
            etl()
                .args(&argv)
                .args(["-j", "1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        expect_code(&out, 0);
        for l in text(&out.stderr).lines() {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        }
    }
    let reports: Vec<PathBuf> = (0..completions)
        .map(|i| data.join(format!("reports/shard-{i}.jsonl")))
        .collect();
    let sets = transformed_by(&reports, Path::new(&sounds));
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<_> = sets.into_iter().flatten().collect();
    assert_eq!(total, 10, "every file once");
    assert_eq!(union.len(), 10);
}

#[test]
fn slurm_array_script_is_valid_bash_and_its_tasks_cover_the_folder() {
    let script = deploy("slurm-array.sh");
    expect_code(&run(Command::new("bash").arg("-n").arg(&script)), 0);
    let body = fs::read_to_string(&script).unwrap();
    let array = body
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH --array=0-"))
        .expect("#SBATCH --array=0-N");
    let tasks: u32 = array.trim().parse::<u32>().unwrap() + 1;
    assert!(
        body.contains(&format!("\nSHARDS={tasks}\n")),
        "SHARDS matches --array"
    );

    // Each array task as Slurm would start it: same script, its own task id.
    let tmp = tempfile::tempdir().unwrap();
    let sounds = tmp.path().join("shared/sounds");
    gen_tones(&sounds, 9, 0.2, &[]);
    let workdir = tmp.path().join("job");
    fs::create_dir(&workdir).unwrap();
    for id in 0..tasks {
        let out = run(Command::new("bash")
            .arg(&script)
            .current_dir(&workdir)
            .env("PATH", path_with_etl())
            .env("SOUNDS", &sounds)
            .env("SLURM_ARRAY_TASK_ID", id.to_string())
            .env("SLURM_ARRAY_TASK_MAX", (tasks - 1).to_string())
            .env("SLURM_CPUS_PER_TASK", "1")
            .env_remove("RUST_LOG"));
        expect_code(&out, 0);
    }
    let reports: Vec<PathBuf> = (0..tasks)
        .map(|i| workdir.join(format!("reports/shard-{i}.jsonl")))
        .collect();
    let sets = transformed_by(&reports, &sounds);
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    assert_eq!(total, 9);
    assert_eq!(sets.into_iter().flatten().collect::<BTreeSet<_>>().len(), 9);
}

#[test]
fn cron_line_is_silent_when_all_is_well_or_locked_and_mails_failures() {
    let crontab = fs::read_to_string(deploy("crontab")).unwrap();
    let mut jobs = Vec::new();
    let mut vars = BTreeMap::new();
    for line in crontab.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            vars.insert(k.to_string(), v.to_string());
            continue;
        }
        // Five schedule fields, then the command: the rest of the line, as it is.
        let mut rest = line;
        for _ in 0..5 {
            let field_end = rest
                .find(char::is_whitespace)
                .expect("five schedule fields");
            rest = rest[field_end..].trim_start();
        }
        jobs.push(rest.to_string());
    }
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert!(!job.contains('%'), "cron turns % into a newline: {job}");
    assert_eq!(vars.get("SHELL").map(String::as_str), Some("/bin/bash"));
    assert!(job.contains(" -q"), "{job}");

    let tmp = tempfile::tempdir().unwrap();
    let sounds = tmp.path().join("sounds");
    gen_tones(&sounds, 3, 0.2, &[]);
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let job = job.replace("/srv/sounds", sounds.to_str().unwrap());
    let cron = || {
        run(Command::new("/bin/bash")
            .arg("-c")
            .arg(&job)
            .env_clear()
            .env("PATH", path_with_etl())
            .env("HOME", &home)
            .env("SHELL", "/bin/bash"))
    };

    // A clean run prints nothing, so cron sends no mail; the report is written.
    let out = cron();
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        show(&out)
    );
    let report = read_report(&home.join("etl-report.jsonl"));
    assert_eq!(report.summary["ok"], 3);
    assert!(output_of(&sounds.join("example0.wav")).exists());

    // Another run holds the lock: exit 75 is dropped silently.
    {
        let _held = hold_lock(&sounds.join(".etl.lock"));
        let out = cron();
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{}",
            show(&out)
        );
    }

    // A broken file: the mail names it, its cause and the exit status.
    fs::write(sounds.join("broken.wav"), "not audio").unwrap();
    common::settle(&sounds.join("broken.wav"));
    let out = cron();
    let mail = text(&out.stdout);
    assert!(mail.contains("broken.wav"), "{}", show(&out));
    assert!(mail.to_lowercase().contains("not a wav"), "{mail}");
    assert!(mail.contains("exited 1"), "{mail}");
    assert!(
        !mail.contains("completed in"),
        "per-file lines stay out of the mail: {mail}"
    );
}

/// `Key=Value` lines of a unit file, in order.
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_units_are_sound_and_their_command_runs() {
    let service = fs::read_to_string(deploy("etl.service")).unwrap();
    let timer = fs::read_to_string(deploy("etl.timer")).unwrap();
    let settings = unit_settings(&service);
    let get = |k: &str| -> Option<&str> {
        settings
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("Type"), Some("oneshot"));
    assert_eq!(get("KillMode"), Some("mixed"));
    let stop = humantime::parse_duration(get("TimeoutStopSec").unwrap()).unwrap();
    // etl stops within its 5 s grace plus a few seconds of cleanup.
    assert!(stop >= Duration::from_secs(15), "{stop:?}");
    assert!(
        get("RestartPreventExitStatus")
            .unwrap()
            .split(' ')
            .any(|c| c == "2"),
        "a usage error is not retried"
    );
    assert!(
        unit_settings(&timer)
            .iter()
            .any(|(k, v)| k == "Unit" && v == "etl.service")
    );

    // The ExecStart command, run against a temp folder instead of /srv/sounds.
    let exec = get("ExecStart").unwrap();
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/local/bin/etl");
    let tmp = tempfile::tempdir().unwrap();
    let sounds = tmp.path().join("srv/sounds");
    let logs = tmp.path().join("var/log/etl");
    gen_tones(&sounds, 2, 0.2, &[]);
    let args: Vec<String> = argv[1..]
        .iter()
        .map(|a| {
            a.replace("/srv/sounds", sounds.to_str().unwrap())
                .replace("/var/log/etl", logs.to_str().unwrap())
        })
        .collect();
    let out = run(etl().args(&args));
    expect_code(&out, 0);
    for l in text(&out.stderr).lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("journald gets JSON: {e}: {l}"));
    }
    assert_eq!(read_report(&logs.join("report.jsonl")).summary["ok"], 2);

    // systemd's own check, with ExecStart pointing at the built binary.
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("note: systemd-analyze is not installed; `systemd-analyze verify` skipped");
        return;
    };
    assert!(version.status.success());
    let units = tmp.path().join("units");
    fs::create_dir(&units).unwrap();
    fs::write(
        units.join("etl.service"),
        service.replace("/usr/local/bin/etl", ETL),
    )
    .unwrap();
    fs::write(units.join("etl.timer"), &timer).unwrap();
    let verify = |names: &[&str]| {
        run(Command::new("systemd-analyze")
            .arg("verify")
            .args(names)
            .current_dir(&units))
    };
    let out = verify(&["etl.service", "etl.timer"]);
    expect_code(&out, 0);
    // verify exits 0 even for unknown keys or bad values ("..., ignoring"): none allowed.
    let said = text(&out.stderr) + &text(&out.stdout);
    let complaints: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("etl.") || l.contains(units.to_str().unwrap()))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze: {complaints:?}");

    // The check bites: a unit whose binary is missing, or with a bad setting, is refused.
    if !Path::new("/usr/local/bin/etl").exists() {
        fs::write(units.join("missing.service"), &service).unwrap();
        assert!(!verify(&["missing.service"]).status.success());
    }
    let bad = service
        .replace("KillMode=mixed", "KillMode=mixd")
        .replace("/usr/local/bin/etl", ETL);
    fs::write(units.join("bad.service"), bad).unwrap();
    let said = text(&verify(&["bad.service"]).stderr);
    assert!(
        said.contains("bad.service") && said.contains("ignoring"),
        "{said}"
    );
}
