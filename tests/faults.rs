//! Supervision under real faults: workers killed with SIGKILL or frozen with SIGSTOP while they
//! work, FIFOs, SIGTERM, SIGINT and SIGKILL to the supervisor, a file-size limit, overlapping runs
//! and workers that keep dying. Every test runs the real `etl` binary on files made by
//! `etl gen-fake-data`, finds the workers through /proc, and afterwards checks what a scheduler
//! and a user care about: the exit code, the lines printed, that no worker process lives on, that
//! no temporary file is left, and that every output on disk is complete.
//!
//! A worker is caught "busy" by stopping it (SIGSTOP) and looking at its open files: if it holds
//! an input and a temporary output, it is in the middle of a file and cannot report it until it
//! is continued. A caught worker that is kept stopped also keeps the run from finishing, which
//! gives the signal and lock tests a run that is reliably in progress.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod common;
use common::{etl_command, is_output_being_written, output_of, temp_files};

/// Longest any single wait in these tests may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; a pid that is gone gives ESRCH, which is fine here.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// `/proc/<pid>/stat` split after the command name: (state, ppid, pgrp).
fn stat(pid: u32) -> Option<(char, u32, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Whether `pid` is a process that still runs (a zombie has finished; only its parent can reap it).
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _, _)| !matches!(state, 'Z' | 'X'))
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live processes in process group `pgid` (each worker leads its own).
fn group_members(pgid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|(s, _, g)| g == pgid && !matches!(s, 'Z' | 'X')))
        .collect()
}

fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(task.path().join("children")) {
                found.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    if found.is_empty() {
        // Kernels without /proc/<pid>/task/<tid>/children: scan for the parent pid.
        found = all_pids()
            .into_iter()
            .filter(|&p| stat(p).is_some_and(|(_, ppid, _)| ppid == pid))
            .collect();
    }
    found
}

fn is_worker(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(b"worker".as_slice()))
        .unwrap_or(false)
}

/// The live worker processes of a supervisor.
fn workers_of(supervisor: u32) -> Vec<u32> {
    children(supervisor)
        .into_iter()
        .filter(|&p| is_worker(p) && alive(p))
        .collect()
}

/// The files a process holds open.
fn open_files(pid: u32) -> Vec<PathBuf> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .collect()
}

/// The signals pending for a process (its own and its thread group's).
fn pending_signals(pid: u32) -> u64 {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .fold(0, |a, b| a | b)
}

fn sigmask(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// Waits until `pid` is stopped (true) or gone (false).
fn wait_stopped(pid: u32) -> bool {
    let until = Instant::now() + HANG;
    while Instant::now() < until {
        match stat(pid) {
            Some(('T' | 't', _, _)) => return true,
            Some(('Z' | 'X', _, _)) | None => return false,
            _ => thread::sleep(Duration::from_micros(200)),
        }
    }
    panic!("process {pid} did not stop after SIGSTOP");
}

/// Polls `done` until it holds; panics with `what` if it does not within [`HANG`].
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + HANG;
    while !done() {
        assert!(
            Instant::now() < until,
            "{what}: still not true after {HANG:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A supervisor (`etl run ...`) started in the background, its output going to files. Dropping it
/// kills it and every worker seen, so a failing test leaves nothing behind.
struct Supervisor {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
    /// Every worker seen, and other processes to kill if the test fails.
    seen: HashSet<u32>,
    others: Vec<u32>,
    /// Outputs are written under a temporary name from the start (`ETL_NO_TMPFILE`), not
    /// unnamed until complete.
    named_temps: bool,
}

/// What a finished process left.
#[derive(Debug)]
struct Finished {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn expect_code(&self, code: i32) -> &Finished {
        assert_eq!(
            self.code,
            Some(code),
            "wanted exit code {code}, got {:?} (signal {:?})\n--- stdout\n{}--- stderr\n{}",
            self.code,
            self.signal,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The summary line `N ok, N skipped, N failed[, N not run]`.
    fn counts(&self) -> Counts {
        let line = self
            .stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no stdout; stderr:\n{}", self.stderr));
        parse_counts(line)
            .unwrap_or_else(|| panic!("{line:?} is not a summary line\n{}", self.stdout))
    }

    /// stderr lines that mention `needle`.
    fn stderr_lines_with(&self, needle: &str) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.contains(needle)).collect()
    }
}

#[derive(Debug, Default, PartialEq)]
struct Counts {
    ok: u64,
    skipped: u64,
    failed: u64,
    not_run: u64,
}

fn parse_counts(line: &str) -> Option<Counts> {
    let mut counts = Counts::default();
    for part in line.split(", ") {
        let (n, word) = part.split_once(' ')?;
        let n: u64 = n.parse().ok()?;
        match word {
            "ok" => counts.ok = n,
            "skipped" => counts.skipped = n,
            "failed" => counts.failed = n,
            "not run" => counts.not_run = n,
            _ => return None,
        }
    }
    Some(counts)
}

impl Supervisor {
    /// Starts `etl <args>` with its output in `logs`.
    fn start(logs: &Path, args: &[&str]) -> Supervisor {
        Supervisor::start_command(logs, etl_command(), args)
    }

    /// Starts `cmd <args>` (`etl`, or `sh -c ...` around it) with its output in `logs`.
    fn start_command(logs: &Path, mut cmd: Command, args: &[&str]) -> Supervisor {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stdout = logs.join(format!("stdout-{n}.txt"));
        let stderr = logs.join(format!("stderr-{n}.txt"));
        let named_temps = cmd
            .get_envs()
            .any(|(k, v)| k == "ETL_NO_TMPFILE" && v.is_some());
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start etl");
        Supervisor {
            child,
            stdout,
            stderr,
            status: None,
            seen: HashSet::new(),
            others: Vec::new(),
            named_temps,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status.is_none()
    }

    fn workers(&mut self) -> Vec<u32> {
        let found = workers_of(self.pid());
        self.seen.extend(&found);
        found
    }

    /// Waits for the supervisor to exit; a supervisor that does not is a hang, and fails the test.
    fn finish(&mut self) -> Finished {
        let until = Instant::now() + HANG;
        while self.running() {
            if Instant::now() > until {
                let stderr = fs::read_to_string(&self.stderr).unwrap_or_default();
                panic!("etl did not finish within {HANG:?}: it hangs\n--- stderr\n{stderr}");
            }
            thread::sleep(Duration::from_millis(5));
        }
        let status = self.status.unwrap();
        use std::os::unix::process::ExitStatusExt;
        Finished {
            code: status.code(),
            signal: status.signal(),
            stdout: fs::read_to_string(&self.stdout).unwrap(),
            stderr: fs::read_to_string(&self.stderr).unwrap(),
        }
    }

    /// Stops workers one at a time until one is caught in the middle of a file of `dir` (holding
    /// the input and its temporary output). The caught worker is left stopped. `None` if the run
    /// ended first.
    fn catch_busy(&mut self, dir: &Path, skip: &[u32]) -> Option<Caught> {
        let until = Instant::now() + HANG;
        while Instant::now() < until {
            if !self.running() {
                return None;
            }
            for w in self.workers() {
                if skip.contains(&w) {
                    continue;
                }
                signal(w, libc::SIGSTOP);
                if !wait_stopped(w) {
                    continue;
                }
                let files = open_files(w);
                let input = files.iter().find(|p| {
                    p.parent() == Some(dir)
                        && p.extension().is_some_and(|e| e == "wav")
                        && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                });
                // In the middle of its output: unnamed, or under its temporary name when
                // outputs have one from the start. (An unnamed output gets its temporary name
                // once complete, a moment before its worker lets go of the input.)
                let temp = files.iter().any(|p| {
                    let unnamed = p.to_string_lossy().ends_with(" (deleted)");
                    is_output_being_written(p) && (unnamed || self.named_temps)
                });
                if let (Some(input), true) = (input, temp) {
                    return Some(Caught {
                        pid: w,
                        input: input.clone(),
                    });
                }
                signal(w, libc::SIGCONT);
            }
            thread::yield_now();
        }
        panic!("no worker was ever caught at work within {HANG:?}");
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for &p in &self.others {
            signal(p, libc::SIGKILL);
        }
        if self.running() {
            signal(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
        for &w in &self.seen {
            if is_worker(w) {
                signal(w, libc::SIGKILL);
            }
        }
    }
}

/// A worker stopped in the middle of `input`.
struct Caught {
    pid: u32,
    input: PathBuf,
}

/// Starts `etl run` over `dir` and catches a worker in the middle of a file, rerunning with
/// `--force` if a run was over before any worker could be caught.
fn start_and_catch(scene: &Scene, args: &[&str]) -> (Supervisor, Caught) {
    start_and_catch_with(scene, etl_command, args)
}

fn start_and_catch_with(
    scene: &Scene,
    command: impl Fn() -> Command,
    args: &[&str],
) -> (Supervisor, Caught) {
    for _ in 0..5 {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--force");
        let mut sup = Supervisor::start_command(scene.logs(), command(), &all);
        if let Some(caught) = sup.catch_busy(&scene.dir, &[]) {
            return (sup, caught);
        }
        sup.finish();
    }
    panic!("five runs were over before a worker could be caught at work");
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// A temporary folder: inputs in `in/`, the logs of the processes beside it.
struct Scene {
    _root: TempDir,
    dir: PathBuf,
    logs: PathBuf,
}

impl Scene {
    /// `count` files of a few seconds of stereo audio, made by `etl gen-fake-data`.
    fn new(count: u32) -> Scene {
        Scene::with(count, &["--duration", "3", "--channels", "2"])
    }

    fn with(count: u32, gen_args: &[&str]) -> Scene {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().canonicalize().unwrap();
        let dir = base.join("in");
        let logs = base.join("logs");
        fs::create_dir(&logs).unwrap();
        generate(&dir, count, gen_args);
        // Generation leaves its lock file; the runs take their own.
        Scene {
            _root: root,
            dir,
            logs,
        }
    }

    fn logs(&self) -> &Path {
        &self.logs
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Runs `etl run` to its end.
    fn run(&self, args: &[&str]) -> Finished {
        Supervisor::start(self.logs(), args).finish()
    }
}

fn generate(dir: &Path, count: u32, extra: &[&str]) {
    let out = etl_command()
        .args(["-q", "gen-fake-data", "--out-dir"])
        .arg(dir)
        .args(["--count", &count.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen-fake-data failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::settle(dir);
}

/// Checks that every output in `dir` is complete: hound reads all of it, and it has its input's
/// format, frame count and length. Returns how many outputs there are.
fn check_outputs_complete(dir: &Path) -> usize {
    let mut n = 0;
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix("-transformed.wav") else {
            continue;
        };
        let input = dir.join(format!("{stem}.wav"));
        let inp = hound::WavReader::open(&input).unwrap();
        let mut out = hound::WavReader::open(&path)
            .unwrap_or_else(|e| panic!("{name}: hound cannot read it: {e}"));
        assert_eq!(
            out.spec(),
            inp.spec(),
            "{name}: format differs from its input"
        );
        assert_eq!(
            out.duration(),
            inp.duration(),
            "{name}: frame count differs from its input's"
        );
        let samples = match out.spec().sample_format {
            hound::SampleFormat::Float => out.samples::<f32>().try_fold(0, |n, s| s.map(|_| n + 1)),
            hound::SampleFormat::Int => out.samples::<i32>().try_fold(0, |n, s| s.map(|_| n + 1)),
        }
        .unwrap_or_else(|e| panic!("{name}: cannot read every sample: {e}"));
        assert_eq!(
            samples as u64,
            inp.duration() as u64 * inp.spec().channels as u64,
            "{name}: cannot read every sample"
        );
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            fs::metadata(&input).unwrap().len(),
            "{name}: length differs from its input's"
        );
        n += 1;
    }
    n
}

/// What every run must leave, however it ended: no temporary file, only complete outputs, and no
/// process in any worker's process group.
fn check_clean(dir: &Path, workers: &HashSet<u32>) -> usize {
    assert_eq!(
        temp_files(dir),
        Vec::<String>::new(),
        "temporary files left"
    );
    for &w in workers {
        eventually(&format!("worker {w}'s process group is empty"), || {
            group_members(w).is_empty()
        });
    }
    check_outputs_complete(dir)
}

// ---------------------------------------------------------------------------------------------
// Workers that die
// ---------------------------------------------------------------------------------------------

#[test]
fn a_killed_workers_file_is_retried_and_completes() {
    let scene = Scene::new(32);
    let dir = scene.dir_str();
    let args = ["run", dir, "-j", "2", "--retries", "1", "--no-progress"];
    let (mut sup, first) = start_and_catch(&scene, &args);
    // Freeze the other worker at work too, so the run goes on while we look at the killed one.
    let second = sup
        .catch_busy(&scene.dir, &[first.pid])
        .expect("the run cannot end while a worker is stopped");

    signal(first.pid, libc::SIGKILL);
    // The supervisor reaps it while the run goes on: no zombie lingers.
    eventually(&format!("killed worker {} is reaped", first.pid), || {
        stat(first.pid).is_none()
    });
    assert!(sup.running(), "the run ended while a worker was stopped");
    signal(second.pid, libc::SIGCONT);

    let end = sup.finish();
    end.expect_code(0);
    let input = first.input.display().to_string();
    assert_eq!(end.counts().ok, 32, "{}", end.stdout);
    assert_eq!(
        end.stderr_lines_with(&format!("{input}: worker killed by SIGKILL; retrying"))
            .len(),
        1,
        "{}",
        end.stderr
    );
    assert!(
        end.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{input} completed in"))),
        "{}",
        end.stdout
    );
    assert_eq!(check_clean(&scene.dir, &sup.seen), 32);
}

#[test]
fn a_killed_worker_without_retries_fails_its_file_and_only_it() {
    kill_the_caught_worker_without_retries(&Scene::new(32), 32);
}

/// Tiny files go to a worker many at a time and their results come back in groups, so when a
/// worker dies it may have finished files the supervisor has not heard of yet. Only the file it
/// was working on is charged the attempt (the worker says which one in memory it shares with the
/// supervisor); the others are done again.
#[test]
fn a_killed_worker_holding_results_of_tiny_files_fails_only_the_file_it_was_on() {
    kill_the_caught_worker_without_retries(&Scene::with(600, &["--duration", "0.005"]), 600);
}

/// SIGKILLs a worker caught at work in a run without retries over the `files` of `scene`:
/// exactly the file it was on fails, with one error line naming it, and all others are done.
fn kill_the_caught_worker_without_retries(scene: &Scene, files: usize) {
    let dir = scene.dir_str();
    let args = ["run", dir, "-j", "2", "--retries", "0", "--no-progress"];
    let (mut sup, caught) = start_and_catch(scene, &args);
    signal(caught.pid, libc::SIGKILL);

    let end = sup.finish();
    end.expect_code(1);
    let input = caught.input.display().to_string();
    let killed = end.stderr_lines_with("worker killed by SIGKILL");
    assert_eq!(killed.len(), 1, "{}", end.stderr);
    assert!(killed[0].contains(&format!("{input}: ")), "{}", killed[0]);
    assert!(killed[0].contains("ERROR"), "{}", killed[0]);
    assert_eq!(
        end.counts(),
        Counts {
            ok: files as u64 - 1,
            failed: 1,
            ..Counts::default()
        }
    );
    assert!(!output_of(&caught.input).exists(), "partial output left");
    assert_eq!(check_clean(&scene.dir, &sup.seen), files - 1);
}

#[test]
fn workers_that_keep_dying_stop_the_run_instead_of_spinning() {
    let scene = Scene::new(40);
    let dir = scene.dir_str();
    let mut sup = Supervisor::start(
        scene.logs(),
        &["run", dir, "-j", "2", "--retries", "10", "--no-progress"],
    );
    // Kill every worker as soon as it shows up, for a few seconds at most.
    let until = Instant::now() + Duration::from_secs(8);
    while sup.running() && Instant::now() < until {
        for w in sup.workers() {
            signal(w, libc::SIGKILL);
        }
        thread::sleep(Duration::from_millis(1));
    }
    let end = sup.finish();
    end.expect_code(1);
    assert_eq!(
        end.stderr_lines_with("workers keep dying").len(),
        1,
        "{}",
        end.stderr
    );
    let counts = end.counts();
    assert!(counts.not_run > 0, "{counts:?}");
    assert_eq!(counts.ok + counts.failed + counts.not_run, 40, "{counts:?}");
    let ok = check_clean(&scene.dir, &sup.seen);
    assert_eq!(ok as u64, counts.ok);
}

#[test]
fn replacement_workers_run_the_supervisors_own_binary_even_after_an_upgrade() {
    let scene = Scene::new(32);
    let dir = scene.dir_str();
    let bin = scene.logs().join("bin");
    fs::create_dir(&bin).unwrap();
    let exe = bin.join("etl");
    fs::copy(env!("CARGO_BIN_EXE_etl"), &exe).unwrap();
    let args = ["run", dir, "-j", "2", "--retries", "1", "--no-progress"];
    let (mut sup, caught) = start_and_catch_with(
        &scene,
        || {
            let mut cmd = Command::new(&exe);
            cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
            cmd
        },
        &args,
    );
    // An upgrade replaces the file under the running job with something else entirely.
    let new = bin.join("etl.new");
    fs::write(&new, "#!/bin/sh\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&new, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&new, &exe).unwrap();
    signal(caught.pid, libc::SIGKILL);

    let end = sup.finish();
    end.expect_code(0);
    assert_eq!(end.counts().ok, 32);
    let input = caught.input.display().to_string();
    assert_eq!(
        end.stderr_lines_with(&format!("{input}: worker killed by SIGKILL; retrying"))
            .len(),
        1,
        "{}",
        end.stderr
    );
    assert_eq!(check_clean(&scene.dir, &sup.seen), 32);
}

/// Traces the supervisor `pid` so that every process it forks is killed at birth, before it can
/// run `etl worker`, let alone connect: a worker that dies before its handshake, every time.
/// Stops after `for_at_most` or when the supervisor exits; returns how many it killed. `None` if
/// ptrace is not permitted here.
fn kill_children_at_birth(pid: u32, for_at_most: Duration) -> Option<thread::JoinHandle<u32>> {
    fn wait_traced(pid: libc::pid_t) -> Option<i32> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid(2) on a process this thread traces.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
            if r == pid {
                return Some(status);
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
    }
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let pid = pid as libc::pid_t;
        let options = (libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK) as usize;
        // SAFETY: ptrace(2) requests on processes this thread traces; the only memory written
        // is `child`, a local.
        unsafe {
            let seized = libc::ptrace(
                libc::PTRACE_SEIZE,
                pid,
                std::ptr::null_mut::<libc::c_void>(),
                options as *mut libc::c_void,
            );
            let _ = tx.send(seized == 0);
            if seized != 0 {
                return 0;
            }
            let until = Instant::now() + for_at_most;
            let mut killed = 0;
            // Leaving the loop ends the thread, which detaches the supervisor.
            while Instant::now() < until {
                let Some(status) = wait_traced(pid) else {
                    break;
                };
                if !libc::WIFSTOPPED(status) {
                    break;
                }
                let event = status >> 16;
                let mut inject = 0;
                if event == libc::PTRACE_EVENT_FORK || event == libc::PTRACE_EVENT_VFORK {
                    let mut child: libc::c_ulong = 0;
                    libc::ptrace(
                        libc::PTRACE_GETEVENTMSG,
                        pid,
                        std::ptr::null_mut::<libc::c_void>(),
                        &mut child as *mut libc::c_ulong as *mut libc::c_void,
                    );
                    let child = child as libc::pid_t;
                    libc::kill(child, libc::SIGKILL);
                    // Collect its end, so that its real parent, the supervisor, can reap it.
                    while let Some(st) = wait_traced(child) {
                        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                            break;
                        }
                    }
                    killed += 1;
                } else if event == 0 {
                    // A signal on its way to the supervisor: let it through.
                    inject = libc::WSTOPSIG(status);
                }
                libc::ptrace(
                    libc::PTRACE_CONT,
                    pid,
                    std::ptr::null_mut::<libc::c_void>(),
                    inject as usize as *mut libc::c_void,
                );
            }
            killed
        }
    });
    match rx.recv() {
        Ok(true) => Some(handle),
        _ => {
            let _ = handle.join();
            None
        }
    }
}

#[test]
fn workers_that_die_before_their_handshake_stop_the_run_instead_of_spinning() {
    let scene = Scene::new(48);
    let dir = scene.dir_str();
    // The supervisor runs under sh, so that tracing it does not get in the way of waiting for it.
    let mut sh = Command::new("sh");
    sh.env_remove("RUST_LOG").env("NO_COLOR", "1").args([
        "-c",
        "\"$0\" \"$@\"; exit $?",
        env!("CARGO_BIN_EXE_etl"),
    ]);
    let mut wrapper = Supervisor::start_command(
        scene.logs(),
        sh,
        &["run", dir, "-j", "2", "--retries", "10", "--no-progress"],
    );
    let mut sup = None;
    eventually("sh starts etl", || {
        sup = children(wrapper.pid()).into_iter().find(|&p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"run".as_slice()))
        });
        sup.is_some()
    });
    let sup = sup.unwrap();
    wrapper.others.push(sup);
    let Some(tracer) = kill_children_at_birth(sup, Duration::from_secs(15)) else {
        eprintln!(
            "note: ptrace is not permitted here; skipping the test of workers dying at birth"
        );
        return;
    };
    // Workers started before the tracing began die now; every later one dies at birth.
    for w in children(sup) {
        wrapper.seen.insert(w);
        signal(w, libc::SIGKILL);
    }
    let killed = tracer.join().unwrap();
    let end = wrapper.finish();
    end.expect_code(1);
    assert_eq!(
        end.stderr_lines_with("workers keep dying").len(),
        1,
        "{}",
        end.stderr
    );
    assert!(killed >= 1, "no worker was killed at birth");
    let counts = end.counts();
    assert!(counts.not_run > 0, "{counts:?}");
    assert_eq!(counts.ok + counts.failed + counts.not_run, 48, "{counts:?}");
    assert!(children(sup).is_empty() && !alive(sup));
    assert_eq!(check_clean(&scene.dir, &wrapper.seen) as u64, counts.ok);
}

#[test]
fn a_worker_whose_supervisor_is_gone_exits() {
    // Pid 1 is nobody's parent here: the worker must notice and leave at once.
    let out = etl_command()
        .args(["worker", "--server", "/nonexistent/socket", "--parent", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("supervisor 1 is gone"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Workers that hang
// ---------------------------------------------------------------------------------------------

fn hung_worker(retries: &str) -> (Scene, Caught, Finished, HashSet<u32>) {
    let scene = Scene::new(24);
    let dir = scene.dir_str().to_string();
    let args = [
        "run",
        &dir,
        "-j",
        "2",
        "--timeout",
        "2s",
        "--retries",
        retries,
        "--no-progress",
    ];
    let (mut sup, caught) = start_and_catch(&scene, &args);
    // Left stopped: the worker hangs until the supervisor's deadline.
    let end = sup.finish();
    let seen = sup.seen.clone();
    (scene, caught, end, seen)
}

#[test]
fn a_hung_worker_times_out_and_its_file_fails() {
    let (scene, caught, end, seen) = hung_worker("0");
    end.expect_code(1);
    let input = caught.input.display().to_string();
    assert_eq!(
        end.stderr_lines_with(&format!("{input}: timed out after 2s"))
            .len(),
        1,
        "{}",
        end.stderr
    );
    assert_eq!(
        end.counts(),
        Counts {
            ok: 23,
            failed: 1,
            ..Counts::default()
        }
    );
    assert!(!output_of(&caught.input).exists(), "partial output left");
    assert!(
        group_members(caught.pid).is_empty(),
        "the hung worker lives on"
    );
    assert_eq!(check_clean(&scene.dir, &seen), 23);
}

#[test]
fn a_hung_workers_file_is_retried_after_the_timeout() {
    let (scene, caught, end, seen) = hung_worker("1");
    end.expect_code(0);
    let input = caught.input.display().to_string();
    assert_eq!(
        end.stderr_lines_with(&format!("{input}: timed out after 2s; retrying"))
            .len(),
        1,
        "{}",
        end.stderr
    );
    assert_eq!(end.counts().ok, 24);
    assert!(
        group_members(caught.pid).is_empty(),
        "the hung worker lives on"
    );
    assert_eq!(check_clean(&scene.dir, &seen), 24);
}

#[test]
fn a_fifo_named_like_a_wav_fails_clearly_and_never_hangs() {
    let scene = Scene::with(4, &["--duration", "1"]);
    let fifo = scene.dir.join("x.wav");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);

    // In a folder, and named on the command line.
    for path in [scene.dir_str(), fifo.to_str().unwrap()] {
        let end = scene.run(&["run", path, "--timeout", "5s", "--no-progress"]);
        end.expect_code(1);
        let lines = end.stderr_lines_with("x.wav");
        assert_eq!(lines.len(), 1, "{}", end.stderr);
        assert!(
            lines[0].contains(&format!("{}: not a regular file: a FIFO", fifo.display())),
            "{}",
            lines[0]
        );
        assert_eq!(end.counts().failed, 1);
    }
    let end = scene.run(&["run", scene.dir_str(), "--force", "--no-progress"]);
    assert_eq!(
        end.counts(),
        Counts {
            ok: 4,
            failed: 1,
            ..Counts::default()
        }
    );
    assert_eq!(check_outputs_complete(&scene.dir), 4);
    assert!(temp_files(&scene.dir).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Signals to the supervisor
// ---------------------------------------------------------------------------------------------

/// A run interrupted by `sig` while a worker is stopped in the middle of a file.
fn interrupted(sig: i32, code: i32) {
    let scene = Scene::new(32);
    let dir = scene.dir_str();
    let (mut sup, caught) = start_and_catch(&scene, &["run", dir, "-j", "2", "--no-progress"]);
    signal(sup.pid(), sig);
    let end = sup.finish();
    end.expect_code(code);
    let counts = end.counts();
    // The file in flight was abandoned, not failed.
    assert_eq!(counts.failed, 0, "{}", end.stderr);
    assert!(counts.not_run >= 1, "{counts:?}");
    assert_eq!(counts.ok + counts.not_run, 32, "{counts:?}");
    assert!(
        end.stdout.lines().last().unwrap().ends_with(" not run"),
        "{}",
        end.stdout
    );
    for &w in &sup.seen {
        assert!(!alive(w), "worker {w} lives on");
    }
    assert!(!output_of(&caught.input).exists(), "partial output left");
    assert_eq!(check_clean(&scene.dir, &sup.seen) as u64, counts.ok);
}

#[test]
fn sigterm_stops_the_run_cleanly_with_143() {
    interrupted(libc::SIGTERM, 143);
}

#[test]
fn sigint_stops_the_run_cleanly_with_130() {
    interrupted(libc::SIGINT, 130);
}

/// Traces a worker so that SIGTERM no longer kills it: like a process stuck in the kernel, it
/// stays until SIGKILL. The returned channel gives the wait status it ended with.
fn hold_against_sigterm(pid: u32) -> Option<mpsc::Receiver<i32>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // SAFETY: ptrace(2) and waitpid(2) on a process of ours; no memory is shared.
        let seized = unsafe {
            libc::ptrace(
                libc::PTRACE_SEIZE,
                pid as libc::pid_t,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if seized != 0 {
            let _ = tx.send(-1);
            return;
        }
        let _ = tx.send(0);
        loop {
            let mut status = 0;
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::__WALL) };
            if r < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return;
            }
            // Stops are left as they are; an end is reported.
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                let _ = tx.send(status);
                return;
            }
        }
    });
    match rx.recv() {
        Ok(0) => Some(rx),
        _ => None,
    }
}

/// A run in which a worker cannot be stopped with SIGTERM; `signals` are sent to the supervisor
/// once it has asked that worker to stop. Returns how the run and the worker ended.
fn unkillable_worker(sig: i32, signals: usize) -> Option<(Finished, i32, Scene, HashSet<u32>)> {
    let scene = Scene::new(24);
    let dir = scene.dir_str();
    let (mut sup, caught) = start_and_catch(&scene, &["run", dir, "-j", "2", "--no-progress"]);
    let Some(ended) = hold_against_sigterm(caught.pid) else {
        eprintln!("note: ptrace is not permitted here; skipping the SIGTERM-proof worker test");
        return None;
    };
    signal(sup.pid(), sig);
    eventually("the supervisor sends SIGTERM to the worker", || {
        pending_signals(caught.pid) & sigmask(libc::SIGTERM) != 0
    });
    assert!(alive(caught.pid), "a traced worker died of SIGTERM");
    assert!(sup.running(), "the supervisor left before its worker died");
    for _ in 1..signals {
        signal(sup.pid(), sig);
    }
    let end = sup.finish();
    let status = ended.recv_timeout(HANG).expect("the worker ends");
    let seen = sup.seen.clone();
    Some((end, status, scene, seen))
}

#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let Some((end, status, scene, seen)) = unkillable_worker(libc::SIGTERM, 1) else {
        return;
    };
    end.expect_code(143);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    assert!(end.stderr_lines_with("again").is_empty(), "{}", end.stderr);
    assert_eq!(end.counts().failed, 0);
    check_clean(&scene.dir, &seen);
}

#[test]
fn a_second_sigint_kills_the_workers_at_once() {
    let Some((end, status, scene, seen)) = unkillable_worker(libc::SIGINT, 2) else {
        return;
    };
    end.expect_code(130);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    // The grace period is 5 s; the worker was killed by the second SIGINT, not by its end.
    assert_eq!(
        end.stderr_lines_with("SIGINT again: killing the workers now")
            .len(),
        1,
        "{}",
        end.stderr
    );
    let counts = end.counts();
    assert_eq!(counts.failed, 0);
    assert!(counts.not_run >= 1);
    check_clean(&scene.dir, &seen);
}

#[test]
fn sigkill_to_the_supervisor_takes_its_workers_and_the_next_run_sweeps_up() {
    // Outputs are written unnamed (O_TMPFILE) where the filesystem allows, so the file a worker
    // was killed in the middle of leaves nothing (files finished but not yet renamed have their
    // temporary names); where it does not (ETL_NO_TMPFILE makes it so here), that file has its
    // temporary name too. The next run sweeps them all.
    for unnamed in [true, false] {
        let scene = Scene::new(24);
        let dir = scene.dir_str();
        let command = || {
            let mut cmd = etl_command();
            if !unnamed {
                cmd.env("ETL_NO_TMPFILE", "1");
            }
            cmd
        };
        let (mut sup, caught) =
            start_and_catch_with(&scene, command, &["run", dir, "-j", "2", "--no-progress"]);
        let workers = sup.workers();
        assert!(workers.contains(&caught.pid));
        signal(sup.pid(), libc::SIGKILL);
        let end = sup.finish();
        assert_eq!(end.signal, Some(libc::SIGKILL));
        // Even the stopped one: the kernel kills them when their parent dies.
        for &w in &workers {
            eventually(&format!("worker {w} dies with its supervisor"), || {
                !alive(w)
            });
        }
        let left = temp_files(&scene.dir);
        // `.<name>-transformed.wav.<shard tag>.etl-tmp`
        let caught_temp = format!(
            ".{}.",
            output_of(&caught.input)
                .file_name()
                .unwrap()
                .to_string_lossy()
        );
        let caught_left = left.iter().any(|n| n.starts_with(&caught_temp));
        if unnamed {
            assert!(!caught_left, "the unfinished output has a name: {left:?}");
        } else {
            assert!(
                caught_left,
                "the caught worker's temporary file should be left: {left:?}"
            );
        }

        let next = scene.run(&["run", dir, "-j", "2", "--no-progress"]);
        next.expect_code(0);
        let counts = next.counts();
        assert_eq!(counts.ok + counts.skipped, 24, "{counts:?}");
        assert!(counts.ok >= 1);
        for name in &left {
            assert!(
                next.stderr.contains(name.as_str()),
                "the sweep does not say it removed {name}\n{}",
                next.stderr
            );
        }
        assert_eq!(check_clean(&scene.dir, &HashSet::new()), 24);
    }
}

// ---------------------------------------------------------------------------------------------
// Disks that fill
// ---------------------------------------------------------------------------------------------

#[test]
fn a_file_size_limit_fails_the_big_files_and_only_them() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().canonicalize().unwrap();
    let (dir, logs) = (base.join("in"), base.join("logs"));
    fs::create_dir_all(&logs).unwrap();
    // `ulimit -f 1000` is 512 000 bytes in dash and 1 024 000 in bash: big files exceed both,
    // small ones fit in either.
    for (kind, args) in [
        ("big", ["--duration", "4", "--channels", "2"]),
        ("small", ["--duration", "1", "--channels", "1"]),
    ] {
        let made = base.join(kind);
        generate(&made, 3, &args);
        for i in 0..3 {
            fs::create_dir_all(&dir).unwrap();
            fs::rename(
                made.join(format!("example{i}.wav")),
                dir.join(format!("{kind}{i}.wav")),
            )
            .unwrap();
        }
    }
    let mut sh = Command::new("sh");
    sh.env_remove("RUST_LOG").env("NO_COLOR", "1").args([
        "-c",
        "ulimit -f 1000 && exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_etl"),
    ]);
    let mut sup =
        Supervisor::start_command(&logs, sh, &["run", dir.to_str().unwrap(), "--no-progress"]);
    let end = sup.finish();
    end.expect_code(1);
    assert_eq!(
        end.counts(),
        Counts {
            ok: 3,
            failed: 3,
            ..Counts::default()
        }
    );
    for i in 0..3 {
        let big = dir.join(format!("big{i}.wav"));
        let lines = end.stderr_lines_with(&format!("{}:", big.display()));
        assert_eq!(lines.len(), 1, "{}", end.stderr);
        assert!(lines[0].contains("file-size limit"), "{}", lines[0]);
        // The write failed with EFBIG; the worker was not killed by SIGXFSZ.
        assert!(lines[0].contains("writing the output"), "{}", lines[0]);
        assert!(!output_of(&big).exists(), "partial output left");
        assert!(output_of(&dir.join(format!("small{i}.wav"))).exists());
    }
    assert!(
        end.stderr_lines_with("retrying").is_empty(),
        "{}",
        end.stderr
    );
    assert_eq!(check_clean(&dir, &sup.seen), 3);
}

// ---------------------------------------------------------------------------------------------
// Overlapping runs
// ---------------------------------------------------------------------------------------------

#[test]
fn one_run_per_folder_and_no_stale_lock() {
    let scene = Scene::new(24);
    let other = Scene::with(3, &["--duration", "1"]);
    let dir = scene.dir_str();
    // The holder cannot finish while its caught worker is stopped.
    let (mut holder, _caught) = start_and_catch(&scene, &["run", dir, "-j", "2", "--no-progress"]);

    let second = scene.run(&["run", dir, "--no-progress"]);
    second.expect_code(75);
    assert!(
        second.stderr.contains(&format!("pid {}", holder.pid())),
        "the holder's pid is not named\n{}",
        second.stderr
    );
    assert!(second.stdout.is_empty(), "{}", second.stdout);

    other
        .run(&["run", other.dir_str(), "--no-progress"])
        .expect_code(0);
    assert_eq!(check_outputs_complete(&other.dir), 3);
    // A shard run of the same folder would write the same outputs: it is refused too.
    let shard = scene.run(&["run", dir, "--shard", "1/2", "--force", "--no-progress"]);
    shard.expect_code(75);
    assert!(
        shard.stderr.contains(&format!("pid {}", holder.pid())),
        "{}",
        shard.stderr
    );

    assert!(holder.running());
    signal(holder.pid(), libc::SIGKILL);
    holder.finish();
    let after = scene.run(&["run", dir, "--no-progress"]);
    after.expect_code(0);
    let counts = after.counts();
    assert_eq!(counts.ok + counts.skipped, 24, "{counts:?}");
    assert_eq!(check_clean(&scene.dir, &holder.seen), 24);
}
