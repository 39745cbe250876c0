//! Never a wrong output: inputs that change while the run reads them, folders that cannot be read,
//! a scheduler that signals every process of the run, and names that would break a line. Each test
//! makes the fault as a user would meet it, runs the real `etl`, and checks that the output is
//! right or absent, that the exit code, the lines and the report tell the truth, and that nothing
//! is left behind.

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use serde_json::Value;

mod common;
use common::*;

fn etl_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etl"));
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

/// The records of a report (its summary left out) and its summary.
fn records_and_summary(report: &Path) -> (Vec<Value>, Value) {
    let mut lines = report_lines(report);
    let summary = lines.pop().expect("a summary line");
    assert!(summary.get("summary").is_some(), "{summary}");
    (lines, summary["summary"].clone())
}

/// A run's stdout and stderr, from files.
fn finished(out: &Path, err: &Path, status: std::process::ExitStatus) -> Run {
    Run {
        code: status.code().unwrap_or(-1),
        stdout: fs::read_to_string(out).unwrap(),
        stderr: fs::read_to_string(err).unwrap(),
    }
}

/// Starts `etl ARGS` in `cwd` with its output in files there; returns the child and the files.
fn start(
    cwd: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, PathBuf, PathBuf) {
    let out = cwd.join("etl-stdout.txt");
    let err = cwd.join("etl-stderr.txt");
    let child = etl_command()
        .current_dir(cwd)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .expect("start etl");
    (child, out, err)
}

// ---------------------------------------------------------------------------------------------
// A file still being written, split across workers
// ---------------------------------------------------------------------------------------------

/// Appends samples to `path` until `stop` is set (and at most 512 MiB), a little at a time, as
/// a recorder streaming to disk does.
fn grow(path: PathBuf, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        let chunk: Vec<u8> = (0..16384u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut written = 0usize;
        while !stop.load(Ordering::Relaxed) && written < 512 << 20 {
            file.write_all(&chunk).unwrap();
            written += chunk.len();
            thread::sleep(std::time::Duration::from_millis(1));
        }
    })
}

/// Split across two workers: the supervisor looks at the file (and checks the settle time).
#[test]
fn a_growing_file_with_a_placeholder_size_is_skipped_or_fails_never_a_wrong_output() {
    // Files of 1 MiB and more are split, so that the parts of this one run on both workers.
    growing_file(&["-j", "2"], &[("ETL_SPLIT_BYTES", "1048576")], false);
}

/// Whole, without flushes: the supervisor leaves every look to the worker, which checks the
/// settle time on the file it opened.
#[test]
fn a_growing_file_read_whole_by_a_worker_that_names_it_is_skipped_or_fails() {
    growing_file(&["-j", "1", "--no-fsync"], &[], true);
}

/// `etl run` over `in` with `--sigma 0` (outputs equal to their inputs, sample for sample) and
/// a report, with `extra`.
fn identity_run<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--no-progress",
        "in",
        "--sigma",
        "0",
        "--report",
        "report.jsonl",
    ];
    args.extend_from_slice(extra);
    args
}

/// A recording that grows while etl runs, split into parts or read whole (`read_whole`).
fn growing_file(extra: &[&'static str], split: &[(&str, &str)], read_whole: bool) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let input_dir = root.join("in");
    fs::create_dir(&input_dir).unwrap();
    let input = input_dir.join("stream.wav");
    let mut bytes = streaming_header(2, 44100, 16);
    bytes.extend((0..4u32 << 20).map(|i| (i % 251) as u8));
    fs::write(&input, &bytes).unwrap();
    let report = root.join("report.jsonl");
    let args = |settle: Option<&'static str>| {
        let mut a = identity_run(extra);
        if let Some(settle) = settle {
            a.extend(["--settle", settle]);
        }
        a
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = grow(input.clone(), stop.clone());

    // By default a file modified within the last second is still being written: skipped, and a
    // dry run says so.
    let dry = run_in(&root, &["in", "--dry-run"]);
    dry.expect_code(0);
    assert_eq!(
        dry.stdout.lines().next(),
        Some("skip in/stream.wav: still being written"),
        "{}",
        dry.stdout
    );
    let run = Run::from_output(
        etl_command()
            .current_dir(&root)
            .args(args(None))
            .envs(split.iter().copied())
            .output()
            .unwrap(),
    );
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(0, 1, 0), "{}", run.stderr);
    let (records, summary) = records_and_summary(&report);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["status"], "skipped");
    assert_eq!(records[0]["reason"], "still being written");
    assert_eq!(summary["skipped"], 1);
    assert!(!output_of(&input).exists());

    // Without the settle time it is read while it grows: it changes under every attempt, and
    // fails without an output.
    let run = Run::from_output(
        etl_command()
            .current_dir(&root)
            .args(args(Some("0")))
            .envs(split.iter().copied())
            .output()
            .unwrap(),
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    if read_whole && run.code == 0 {
        // Read whole in a few milliseconds, an attempt can fall between two of the writer's
        // appends (on a loaded machine): its output is then the file as it was, which only ever
        // grew, so its samples are exactly the start of the input's.
        assert_eq!(run.counts(), Counts::new(1, 0, 0), "{}", run.stderr);
        let out = data_bytes(&output_of(&input));
        assert!(
            !out.is_empty() && out.len().is_multiple_of(4),
            "{}",
            out.len()
        );
        assert!(
            out == fs::read(&input).unwrap()[44..44 + out.len()],
            "the output's samples are not the start of the input's"
        );
        fs::remove_file(output_of(&input)).unwrap();
        return after_the_recording(&root, &input, &input_dir, &args(None), split);
    }
    run.expect_code(1);
    assert_eq!(run.counts(), Counts::new(0, 0, 1), "{}", run.stderr);
    assert!(
        !output_of(&input).exists(),
        "an output of a file that changed"
    );
    assert!(temp_files(&input_dir).is_empty(), "{:?}", names(&input_dir));
    let (records, summary) = records_and_summary(&report);
    assert_eq!(records[0]["status"], "failed");
    assert_eq!(records[0]["error"], "input changed while it was being read");
    assert_eq!(records[0]["attempts"], 2, "retried once (--retries 1)");
    assert_eq!(summary["failed"], 1);
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.contains("input changed while it was being read; starting it again"))
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("ERROR") && l.contains("stream.wav: input changed")),
        "{}",
        run.stderr
    );

    after_the_recording(&root, &input, &input_dir, &args(None), split);
}

/// Once the recording is over, a later run takes it: every byte the file holds, none other.
fn after_the_recording(
    root: &Path,
    input: &Path,
    input_dir: &Path,
    args: &[&str],
    split: &[(&str, &str)],
) {
    settle(input);
    let run = Run::from_output(
        etl_command()
            .current_dir(root)
            .args(args)
            .envs(split.iter().copied())
            .output()
            .unwrap(),
    );
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(1, 0, 0), "{}", run.stderr);
    let final_len = fs::metadata(input).unwrap().len();
    let whole_frames = (final_len - 44) / 4 * 4;
    let out = data_bytes(&output_of(input));
    assert_eq!(out.len() as u64, whole_frames);
    assert!(
        out == fs::read(input).unwrap()[44..44 + whole_frames as usize],
        "the output's samples are not the input's"
    );
    if let Some(info) = libsndfile_info(&output_of(input)) {
        assert_eq!(info, (whole_frames / 4, 2, 44100));
    }
    assert!(temp_files(input_dir).is_empty());
}

// ---------------------------------------------------------------------------------------------
// A file renamed over an input during the run
// ---------------------------------------------------------------------------------------------

/// Whether process `pid` is stopped.
fn stopped(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
    })
}

/// Stops (SIGSTOP) a worker of `supervisor` while it holds `input` open, and returns its pid.
fn stop_a_worker_reading(supervisor: u32, input: &Path) -> u32 {
    let mut caught = None;
    wait_for("a worker reading the input", || {
        assert!(
            process_alive(supervisor),
            "the run ended before a worker was caught reading the input"
        );
        for pid in child_pids(supervisor) {
            if !open_paths(pid).iter().any(|p| p == input) {
                continue;
            }
            send_signal(pid, libc::SIGSTOP);
            // Stopped at once or a moment later: it must still hold the input once stopped.
            let stopped = (0..1000).any(|_| {
                thread::sleep(std::time::Duration::from_millis(1));
                stopped(pid)
            });
            if stopped && open_paths(pid).iter().any(|p| p == input) {
                caught = Some(pid);
                return true;
            }
            send_signal(pid, libc::SIGCONT);
        }
        false
    });
    caught.unwrap()
}

/// A file split in many parts (each a job of its own): the supervisor names the output, after a
/// last look at the input.
#[test]
fn an_input_renamed_over_mid_run_gives_the_new_files_output_whole() {
    // Long, and split in many parts, so that a worker is reading it for a good while.
    input_renamed_over_mid_run(&["-j", "2"], &[("ETL_SPLIT_BYTES", "65536")], 4_000_000);
}

/// A whole file without flushes: its worker names the output itself, after its own last look.
#[test]
fn an_input_renamed_over_while_its_worker_reads_it_whole_gives_the_new_files_output() {
    // One worker never splits a file; long, so that it is reading it for a good while.
    input_renamed_over_mid_run(&["-j", "1", "--no-fsync"], &[], 20_000_000);
}

/// Runs `etl` (`identity_run(args)`, `env`) over `in/take.wav`, `frames` of stereo 16-bit;
/// once a worker is reading it, stops every worker (so that none looks at the file while it
/// changes), lets `change` change it, and lets the run finish. The file must be done once more,
/// whole, from what it is now: checked here, as far as every change has it in common (the
/// samples are the new ones: `new` is a file with them). Returns the run and the input.
fn input_changed_mid_run(
    args: &[&str],
    env: &[(&str, &str)],
    frames: usize,
    new: impl FnOnce(&Path) -> PathBuf,
    change: impl FnOnce(&Path, &Path),
) -> (tempfile::TempDir, PathBuf, Run) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let input_dir = root.join("in");
    fs::create_dir(&input_dir).unwrap();
    let input = input_dir.join("take.wav");
    write_tone(&input, spec(2, 44100, 16, false), frames, 440.0, 0.5);
    let new = new(&root);
    let new_data = data_bytes(&new);
    assert!(
        data_bytes(&input) != new_data,
        "the change must change the samples"
    );

    let (mut child, out, err) = start(&root, &identity_run(args), env);
    let mut workers = vec![stop_a_worker_reading(child.id(), &input)];
    for pid in child_pids(child.id()) {
        if !workers.contains(&pid) {
            send_signal(pid, libc::SIGSTOP);
            wait_for("a worker stopped", || stopped(pid));
            workers.push(pid);
        }
    }
    change(&input, &new);
    for pid in workers {
        send_signal(pid, libc::SIGCONT);
    }
    let status = child.wait().unwrap();
    let run = finished(&out, &err, status);

    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(1, 0, 0), "{}", run.stderr);
    assert!(
        data_bytes(&output_of(&input)) == new_data,
        "the output is not the changed file's samples"
    );
    let (records, _) = records_and_summary(&root.join("report.jsonl"));
    assert_eq!(records[0]["status"], "ok");
    assert!(
        run.stderr
            .contains("take.wav: input changed while it was being read; starting it again"),
        "{}",
        run.stderr
    );
    assert!(temp_files(&input_dir).is_empty(), "{:?}", names(&input_dir));
    (dir, input, run)
}

/// Renames a new take over the input: mono 24-bit, another length (a mix of the two would show
/// in the layout, the length or the bytes).
fn input_renamed_over_mid_run(args: &[&str], env: &[(&str, &str)], frames: usize) {
    let new_take = |root: &Path| {
        let new = root.join("take-v2.wav");
        write_tone(&new, spec(1, 48000, 24, false), 900_000, 330.0, 0.25);
        new
    };
    let rename = |input: &Path, new: &Path| fs::rename(new, input).unwrap();
    let (dir, input, _) = input_changed_mid_run(args, env, frames, new_take, rename);
    let wav = read_wav(&output_of(&input));
    assert_eq!(wav.spec, spec(1, 48000, 24, false), "the old file's layout");
    assert_eq!(wav.frames, 900_000);
    if let Some(info) = libsndfile_info(&output_of(&input)) {
        assert_eq!(info, (900_000, 1, 48000));
    }
    let (records, _) = records_and_summary(&dir.path().join("report.jsonl"));
    assert_eq!(records[0]["frames"], 900_000);
    assert_eq!(records[0]["channels"], 1);
}

/// A file split in many parts: the supervisor's last look is at the path.
#[test]
fn an_input_rewritten_in_place_to_the_same_size_and_time_mid_run_gives_the_new_output() {
    input_rewritten_in_place_mid_run(&["-j", "2"], &[("ETL_SPLIT_BYTES", "65536")], 4_000_000);
}

/// A whole file without flushes: the worker's last look is at the path too.
#[test]
fn an_input_rewritten_in_place_while_its_worker_reads_it_whole_gives_the_new_output() {
    input_rewritten_in_place_mid_run(&["-j", "1", "--no-fsync"], &[], 20_000_000);
}

/// Rewrites the input in place, as `cp -p` or `rsync --inplace --times` does: same inode, same
/// size, other samples, and its modification time set back to what it was. Only its change time
/// tells.
fn input_rewritten_in_place_mid_run(args: &[&str], env: &[(&str, &str)], frames: usize) {
    let new_take = |root: &Path| {
        let new = root.join("take-v2.wav");
        write_tone(&new, spec(2, 44100, 16, false), frames, 330.0, 0.25);
        new
    };
    let rewrite = |input: &Path, new: &Path| {
        use std::os::unix::fs::FileExt;
        let before = fs::metadata(input).unwrap();
        let new_bytes = fs::read(new).unwrap();
        assert_eq!(before.len(), new_bytes.len() as u64);
        let file = fs::OpenOptions::new().write(true).open(input).unwrap();
        file.write_all_at(&new_bytes, 0).unwrap();
        file.set_modified(before.modified().unwrap()).unwrap();
        let after = fs::metadata(input).unwrap();
        assert_eq!(
            (after.ino(), after.len(), after.modified().unwrap()),
            (before.ino(), before.len(), before.modified().unwrap()),
            "the rewrite must keep the inode, the size and the modification time"
        );
    };
    input_changed_mid_run(args, env, frames, new_take, rewrite);
}

/// In a folder of thousands of files, discovery leaves the look at each regular file until it is
/// handed to a worker. One removed in between is a failure that names it and its cause, as if
/// discovery had seen it gone; every other file is done.
#[test]
fn a_file_removed_from_a_large_folder_before_its_turn_fails_by_name_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (small, many) = (root.join("small"), root.join("many"));
    fs::create_dir(&small).unwrap();
    fs::create_dir(&many).unwrap();
    // First in line (the largest, and in a small folder, looked at up front): a worker stopped
    // reading it holds the run before the last files of `many` are looked at.
    let big = small.join("big.wav");
    write_tone(&big, spec(1, 44100, 16, false), 20_000_000, 440.0, 0.5);
    let count = 6000;
    for n in 0..count {
        write_tone(
            &many.join(format!("f{n:04}.wav")),
            spec(1, 8000, 16, false),
            40,
            440.0,
            0.5,
        );
    }
    let gone = many.join(format!("f{:04}.wav", count - 1));

    let args = [
        "run",
        "--no-progress",
        "small",
        "many",
        "-j",
        "1",
        "--settle",
        "0",
        "--report",
        "report.jsonl",
    ];
    let (mut child, out, err) = start(&root, &args, &[]);
    let worker = stop_a_worker_reading(child.id(), &big);
    fs::remove_file(&gone).unwrap();
    send_signal(worker, libc::SIGCONT);
    let status = child.wait().unwrap();
    let run = finished(&out, &err, status);

    run.expect_code(1);
    assert_eq!(
        run.counts(),
        Counts::new(count as u64, 0, 1),
        "{}",
        run.stderr
    );
    // Named as the PATH gave it.
    let named = format!("many/f{:04}.wav", count - 1);
    let line = format!("{named}: no such file or directory");
    assert!(run.stderr.contains(&line), "{line}\n{}", run.stderr);
    let (records, _) = records_and_summary(&root.join("report.jsonl"));
    let failed: Vec<&Value> = records.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["input"], named.as_str());
    assert!(output_of(&big).is_file());
    let outputs = fs::read_dir(&many)
        .unwrap()
        .filter(|e| is_output_name(&e.as_ref().unwrap().path()))
        .count();
    assert_eq!(outputs, count - 1);
    assert!(!output_of(&gone).exists());
    assert!(temp_files(&many).is_empty());
}

#[test]
fn an_input_that_keeps_being_replaced_fails_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let input_dir = root.join("in");
    fs::create_dir(&input_dir).unwrap();
    let input = input_dir.join("take.wav");
    // Long, and split in many parts, so that a worker is reading it for a good while.
    write_tone(&input, spec(2, 44100, 16, false), 4_000_000, 440.0, 0.5);
    let report = root.join("report.jsonl");
    let (mut child, out, err) = start(
        &root,
        &[
            "run",
            "--no-progress",
            "in",
            "-j",
            "2",
            "--report",
            "report.jsonl",
        ],
        &[("ETL_SPLIT_BYTES", "65536")],
    );
    // Replaced during the first attempt and again during the second.
    for take in 0..2 {
        if take == 1 {
            // The second replacement must land in the second attempt, not in a part of the first
            // one that is still running: the restart is logged once all of those have ended.
            wait_for("the restart", || {
                fs::read_to_string(&err).is_ok_and(|e| e.contains("starting it again"))
            });
        }
        let worker = stop_a_worker_reading(child.id(), &input);
        let next = root.join(format!("take-{take}.wav"));
        write_tone(
            &next,
            spec(2, 44100, 16, false),
            1_000_000 + take * 10,
            440.0,
            0.5,
        );
        fs::rename(&next, &input).unwrap();
        send_signal(worker, libc::SIGCONT);
    }
    let status = child.wait().unwrap();
    let run = finished(&out, &err, status);
    run.expect_code(1);
    assert_eq!(run.counts(), Counts::new(0, 0, 1), "{}", run.stderr);
    assert!(!output_of(&input).exists());
    assert!(temp_files(&input_dir).is_empty(), "{:?}", names(&input_dir));
    let (records, summary) = records_and_summary(&report);
    assert_eq!(records[0]["error"], "input changed while it was being read");
    assert_eq!(summary["failed"], 1);
}

// ---------------------------------------------------------------------------------------------
// Folders that cannot be read
// ---------------------------------------------------------------------------------------------

#[test]
fn a_folder_that_cannot_be_listed_fails_the_run() {
    let Some(_) = as_nobody(Path::new(env!("CARGO_BIN_EXE_etl"))) else {
        println!("skipped: cannot run as the user nobody here (needs root and setpriv)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let input_dir = root.join("in");
    fs::create_dir_all(input_dir.join("locked")).unwrap();
    write_tone(
        &input_dir.join("a.wav"),
        spec(1, 8000, 16, false),
        800,
        440.0,
        0.5,
    );
    write_tone(
        &input_dir.join("locked/b.wav"),
        spec(1, 8000, 16, false),
        800,
        440.0,
        0.5,
    );
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(chown.success());
    fs::set_permissions(input_dir.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();

    let etl = Path::new(env!("CARGO_BIN_EXE_etl"));
    let nobody = |args: &[&str]| {
        Run::from_output(
            as_nobody(etl)
                .unwrap()
                .current_dir(&root)
                .args(args)
                .output()
                .unwrap(),
        )
    };
    // Under -r: the sub-folder's files were never seen, so the run did not do its job.
    let run = nobody(&[
        "run",
        "--no-progress",
        "-r",
        "in",
        "--report",
        "report.jsonl",
    ]);
    run.expect_code(1);
    assert_eq!(run.counts(), Counts::new(1, 0, 1), "{}", run.stderr);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("ERROR"))
        .collect();
    assert_eq!(
        errors,
        ["ERROR in/locked: cannot list folder: permission denied"],
        "{}",
        run.stderr
    );
    let (records, summary) = records_and_summary(&root.join("report.jsonl"));
    let locked: Vec<&Value> = records.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(locked.len(), 1, "{records:?}");
    assert_eq!(locked[0]["input"], "in/locked");
    assert_eq!(locked[0]["output"], Value::Null);
    assert_eq!(locked[0]["error"], "cannot list folder: permission denied");
    assert_eq!(summary["failed"], 1);
    assert!(output_of(&input_dir.join("a.wav")).exists());

    // The folder given as the PATH itself.
    let run = nobody(&["run", "--no-progress", "in/locked"]);
    run.expect_code(1);
    assert_eq!(run.counts(), Counts::new(0, 0, 1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("ERROR in/locked: cannot list folder: permission denied"),
        "{}",
        run.stderr
    );

    fs::set_permissions(input_dir.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        names(&input_dir.join("locked")),
        ["b.wav"],
        "nothing written in it"
    );
    assert!(temp_files(&input_dir).is_empty());
}

#[test]
fn symbolic_link_loops_are_named_as_loops() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let input_dir = root.join("in");
    fs::create_dir_all(input_dir.join("sub")).unwrap();
    write_tone(
        &input_dir.join("a.wav"),
        spec(1, 8000, 16, false),
        800,
        440.0,
        0.5,
    );
    std::os::unix::fs::symlink("loop.wav", input_dir.join("loop.wav")).unwrap();
    std::os::unix::fs::symlink("..", input_dir.join("sub/up")).unwrap();

    // Met under -r: a warning that says loop, and the run goes on.
    let run = run_in(&root, &["-r", "in"]);
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(1, 0, 0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("WARN in/loop.wav: skipped: a symbolic link loop"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("dangling"), "{}", run.stderr);

    // Given as a PATH: a failure.
    let run = run_in(&root, &["in/loop.wav", "--report", "report.jsonl"]);
    run.expect_code(1);
    assert_eq!(run.counts(), Counts::new(0, 0, 1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("ERROR in/loop.wav: a symbolic link loop"),
        "{}",
        run.stderr
    );
    let (records, _) = records_and_summary(&root.join("report.jsonl"));
    assert_eq!(records[0]["status"], "failed");
    assert_eq!(records[0]["error"], "a symbolic link loop");
}

// ---------------------------------------------------------------------------------------------
// A scheduler that signals every process of the run
// ---------------------------------------------------------------------------------------------

/// Runs `etl` on 40 files again and again, stopping it with `sig` as soon as it has finished a
/// file, by `signal_all(supervisor, sig)`; checks each interrupted run. Returns how many were
/// interrupted (a run may end before the signal).
fn cancel_runs(iterations: usize, sig: i32, signal_all: impl Fn(u32, i32)) -> usize {
    let (code, name) = match sig {
        libc::SIGTERM => (143, "SIGTERM"),
        _ => (130, "SIGINT"),
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let input_dir = root.join("in");
    gen_fake_data(
        &input_dir,
        &[
            "--count",
            "40",
            "--duration",
            "4",
            "--channels",
            "2",
            "--format",
            "i16",
        ],
    );
    let report = root.join("report.jsonl");
    let mut interrupted = 0;
    for _ in 0..iterations {
        let _ = fs::remove_file(&report);
        // Each run starts with no output, so that what is on disk afterwards is what it made.
        for output in outputs_in(&input_dir) {
            fs::remove_file(output).unwrap();
        }
        let (mut child, out, err) = start(
            &root,
            &[
                "run",
                "--no-progress",
                "in",
                "-j",
                "2",
                "--force",
                "--no-fsync",
                "--report",
                "report.jsonl",
            ],
            &[],
        );
        let supervisor = child.id();
        let mut workers = Vec::new();
        wait_for("a finished file", || {
            workers.extend(child_pids(supervisor));
            !report_lines(&report).is_empty() || child.try_wait().unwrap().is_some()
        });
        signal_all(supervisor, sig);
        let status = child.wait().unwrap();
        let run = finished(&out, &err, status);
        if run.code == 0 {
            continue; // it was over before the signal
        }
        interrupted += 1;
        run.expect_code(code);
        assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
        let warnings: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("WARN")
                    && !l.contains(&format!("{name}: stopping workers"))
            })
            .collect();
        assert!(warnings.is_empty(), "{}", run.stderr);
        let (records, summary) = records_and_summary(&report);
        assert_eq!(summary["end"], format!("interrupted by {name}"));
        assert_eq!(summary["failed"], 0, "{}", run.stderr);
        assert!(records.iter().all(|r| r["status"] == "ok"), "{records:?}");
        for r in &records {
            let input = root.join(r["input"].as_str().unwrap());
            let output = read_wav(&output_of(&input));
            assert_eq!(output.frames, 4 * 44100, "{}", input.display());
        }
        assert_eq!(records.len() as u64, run.counts().ok);
        // What is on disk is what the report shows (the workers name their own outputs here).
        let reported: std::collections::BTreeSet<PathBuf> = records
            .iter()
            .map(|r| output_of(&root.join(r["input"].as_str().unwrap())))
            .collect();
        assert_eq!(outputs_in(&input_dir), reported, "{}", run.stderr);
        assert!(temp_files(&input_dir).is_empty(), "{:?}", names(&input_dir));
        for w in workers.iter().chain([&supervisor]) {
            wait_for("the run's processes to be gone", || !process_alive(*w));
        }
    }
    println!("{interrupted} of {iterations} runs were interrupted");
    interrupted
}

/// The outputs in `dir`.
fn outputs_in(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-transformed.wav"))
        .collect()
}

#[test]
fn sigterm_to_the_process_group_stops_the_run_without_a_retry() {
    let interrupted = cancel_runs(10, libc::SIGTERM, |supervisor, sig| {
        // kill -TERM -- -PGID: the supervisor leads its group.
        // SAFETY: kill(2) with a negative pid signals a process group; no memory effects.
        unsafe {
            libc::kill(-(supervisor as i32), sig);
        }
    });
    assert!(
        interrupted >= 5,
        "only {interrupted} of 10 runs were still going"
    );
}

#[test]
fn sigterm_to_every_process_at_once_stops_the_run_without_a_retry() {
    let interrupted = cancel_runs(15, libc::SIGTERM, |supervisor, sig| {
        // As scancel or a cgroup kill: every process of the run, workers first.
        let mut pids = child_pids(supervisor);
        pids.push(supervisor);
        for pid in pids {
            send_signal(pid, sig);
        }
    });
    assert!(
        interrupted >= 7,
        "only {interrupted} of 15 runs were still going"
    );
}

#[test]
fn sigint_to_every_process_at_once_stops_the_run_without_a_retry() {
    let interrupted = cancel_runs(10, libc::SIGINT, |supervisor, sig| {
        let mut pids = child_pids(supervisor);
        pids.push(supervisor);
        for pid in pids {
            send_signal(pid, sig);
        }
    });
    assert!(
        interrupted >= 5,
        "only {interrupted} of 10 runs were still going"
    );
}

// ---------------------------------------------------------------------------------------------
// Names that would break a line
// ---------------------------------------------------------------------------------------------

#[test]
fn a_name_with_a_newline_is_one_line_in_plain_text_and_exact_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let input_dir = root.join("in");
    fs::create_dir(&input_dir).unwrap();
    let good = input_dir.join("two\nlines\t\u{1b}[31mred é.wav");
    write_tone(&good, spec(1, 8000, 16, false), 800, 440.0, 0.5);
    let bad = input_dir.join(std::ffi::OsStr::from_bytes(b"not\naudio\xff.wav"));
    fs::write(&bad, "text, not audio\n").unwrap();
    settle(&bad);

    let run = run_in(&root, &["in", "--report", "report.jsonl"]);
    run.expect_code(1);
    assert_eq!(run.counts(), Counts::new(1, 0, 1), "{}", run.stderr);
    assert_eq!(
        run.completed(),
        ["in/two\\nlines\\t\\x1b[31mred é.wav"],
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains('\u{1b}'));
    // Every line of the log names its file: none starts half-way through a name.
    for line in run.stderr.lines() {
        assert!(
            ["INFO", "WARN", "ERROR"]
                .iter()
                .any(|l| line.trim_start().starts_with(l)),
            "{line:?} in\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr
            .lines()
            .any(|l| l == "ERROR in/not\\naudio\\xff.wav: not a WAV file: no RIFF/WAVE header"),
        "{}",
        run.stderr
    );
    // The report is JSON: the name as it is.
    let (records, _) = records_and_summary(&root.join("report.jsonl"));
    let inputs: Vec<&str> = records
        .iter()
        .map(|r| r["input"].as_str().unwrap())
        .collect();
    assert!(
        inputs.contains(&"in/two\nlines\t\u{1b}[31mred é.wav"),
        "{inputs:?}"
    );
    assert!(output_of(&good).exists());
    assert!(temp_files(&input_dir).is_empty());
}
