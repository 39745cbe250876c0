//! `etl watch` as a service, run for real: files dropped into a watched folder while it runs
//! (written slowly, renamed in, put in new sub-folders) come out with the bytes `etl run --seed`
//! gives them, never taken half-written; a worker killed mid-file is retried; SIGTERM stops it
//! with 0 and leaves no worker and no temporary; systemd hears READY=1 and STATUS= on its notify
//! socket; the metrics endpoint answers a real HTTP client; `run` and `watch` exclude each other.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod common;
use common::{etl_command, output_of, report_lines, send_signal, wait_for};

const SEED: &str = "41";

/// A running `etl watch`, its stdout and stderr gathered as they come. Dropped, it is killed.
struct Watch {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Watch {
    /// Starts `etl watch --seed SEED ARGS` in `cwd` and waits until it watches.
    fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Watch {
        let mut child = etl_command()
            .current_dir(cwd)
            .args(["watch", "--seed", SEED])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etl watch starts");
        let gather = |from: Box<dyn std::io::Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let into = Arc::clone(&text);
            thread::spawn(move || {
                for line in BufReader::new(from).lines().map_while(Result::ok) {
                    let mut text = into.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
            text
        };
        let stdout = gather(Box::new(child.stdout.take().unwrap()));
        let stderr = gather(Box::new(child.stderr.take().unwrap()));
        let watch = Watch {
            child,
            stdout,
            stderr,
        };
        wait_for("the watcher to start", || {
            watch.stderr().contains("watching ")
        });
        watch
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `sig` and waits for the exit code.
    fn stop(&mut self, sig: i32) -> i32 {
        send_signal(self.pid(), sig);
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The output threads end with the pipes.
                thread::sleep(Duration::from_millis(50));
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < until, "etl watch did not stop");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mono f32 tone of `seconds`, as bytes, written with hound in a folder of its own.
fn tone_bytes(seconds: f64) -> Vec<u8> {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tone.wav");
    let frames = (44100.0 * seconds) as usize;
    common::write_tone(&path, common::spec(1, 44100, 32, true), frames, 440.0, 0.5);
    fs::read(path).unwrap()
}

/// What `etl run --seed SEED -r` writes for `input`, found at `relative` under the PATH: the file
/// alone, at the same place in a fresh folder.
fn run_output(input: &Path, relative: &str) -> Vec<u8> {
    let fresh = TempDir::new().unwrap();
    let copy = fresh.path().join(relative);
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    fs::copy(input, &copy).unwrap();
    let out = etl_command()
        .args([
            "run",
            "--no-progress",
            "-r",
            "--settle",
            "0",
            "--seed",
            SEED,
        ])
        .arg(fresh.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read(output_of(&copy)).unwrap()
}

/// Waits for `path` to exist; returns how long that took.
fn wait_for_file(path: &Path) -> Duration {
    let start = Instant::now();
    wait_for(&format!("{}", path.display()), || path.exists());
    start.elapsed()
}

/// Every file below `dir`, relative, hidden ones left out.
fn files_below(dir: &Path) -> BTreeSet<String> {
    common::snapshot(dir)
        .into_keys()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.split('/').any(|c| c.starts_with('.')))
        .collect()
}

/// Temporaries anywhere below `dir`.
fn temporaries_below(dir: &Path) -> Vec<PathBuf> {
    common::snapshot(dir)
        .into_keys()
        .filter(|p| p.to_string_lossy().ends_with(".etl-tmp"))
        .collect()
}

/// Waits until a worker of `supervisor` holds a temporary output open: it is mid-file. Returns
/// the worker's pid. The file must take the worker a while (a large one).
fn worker_mid_file(supervisor: u32) -> u32 {
    let mut found = None;
    wait_for("a worker in the middle of a file", || {
        found = common::child_pids(supervisor).into_iter().find(|&w| {
            common::open_paths(w)
                .iter()
                .any(|p| common::is_output_being_written(p))
        });
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn files_written_slowly_renamed_in_or_put_in_new_folders_come_out_as_run_makes_them() {
    let tmp = TempDir::new().unwrap();
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    // Already there: the catch-up takes it.
    fs::write(inbox.join("early.wav"), tone_bytes(0.3)).unwrap();
    common::settle(&inbox.join("early.wav"));

    let report = tmp.path().join("report.jsonl");
    let mut watch = Watch::start(
        tmp.path(),
        &[
            "-r",
            "-j",
            "2",
            "--settle",
            "200ms",
            "--report",
            report.to_str().unwrap(),
            inbox.to_str().unwrap(),
        ],
        &[],
    );
    wait_for_file(&output_of(&inbox.join("early.wav")));

    // Renamed in, whole: taken within 3 s.
    fs::write(staging.join("renamed.wav"), tone_bytes(0.5)).unwrap();
    fs::rename(staging.join("renamed.wav"), inbox.join("renamed.wav")).unwrap();
    let took = wait_for_file(&output_of(&inbox.join("renamed.wav")));
    assert!(
        took < Duration::from_secs(3),
        "renamed file taken after {took:?}"
    );

    // Into a folder made after the start.
    fs::create_dir_all(inbox.join("new/deeper")).unwrap();
    fs::write(staging.join("nested.wav"), tone_bytes(0.4)).unwrap();
    fs::rename(
        staging.join("nested.wav"),
        inbox.join("new/deeper/nested.wav"),
    )
    .unwrap();
    let took = wait_for_file(&output_of(&inbox.join("new/deeper/nested.wav")));
    assert!(
        took < Duration::from_secs(3),
        "nested file taken after {took:?}"
    );

    for (name, relative) in [
        ("early.wav", "early.wav"),
        ("renamed.wav", "renamed.wav"),
        ("new/deeper/nested.wav", "new/deeper/nested.wav"),
    ] {
        let input = inbox.join(name);
        assert_eq!(
            fs::read(output_of(&input)).unwrap(),
            run_output(&input, relative),
            "{name}: not the bytes of etl run --seed {SEED}"
        );
    }
    assert_eq!(watch.stop(libc::SIGTERM), 0, "{}", watch.stderr());
    // Outputs are never taken as inputs: nothing else appeared.
    let expected: BTreeSet<String> = [
        "early.wav",
        "early-transformed.wav",
        "renamed.wav",
        "renamed-transformed.wav",
        "new/deeper/nested.wav",
        "new/deeper/nested-transformed.wav",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(files_below(&inbox), expected);
    let stdout = watch.stdout();
    for name in ["early.wav", "renamed.wav", "nested.wav"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(name) && l.contains(" completed in ")),
            "no line for {name}:\n{stdout}"
        );
    }
    let records = report_lines(&report);
    let ok = records.iter().filter(|r| r["status"] == "ok").count();
    assert_eq!(ok, 3, "{records:?}");
    assert!(records.last().unwrap().get("summary").is_some());
}

#[test]
fn a_file_written_slowly_is_never_taken_half_way() {
    file_written_slowly(&[]);
}

/// Without flushes the supervisor leaves the look at a whole file to its worker, which checks the
/// settle time itself and hands back a file still being written, to be looked at again.
#[test]
fn a_file_written_slowly_is_never_taken_half_way_by_a_worker_that_names_it() {
    file_written_slowly(&["--no-fsync"]);
}

/// A file found at start (not by an event) that is still being written is looked at again once
/// it has settled, not left for the next rescan (minutes away): whether the supervisor sees it
/// still being written, or the worker it leaves the look to (`--no-fsync`).
#[test]
fn a_file_found_still_being_written_at_start_is_taken_once_it_has_settled() {
    for extra in [&[][..], &["--no-fsync"]] {
        let tmp = TempDir::new().unwrap();
        let inbox = tmp.path().join("inbox");
        fs::create_dir(&inbox).unwrap();
        let path = inbox.join("fresh.wav");
        fs::write(&path, tone_bytes(0.5)).unwrap();
        let written = Instant::now();
        let mut args = vec!["-j", "1", "--settle", "1s"];
        args.extend_from_slice(extra);
        args.push(inbox.to_str().unwrap());
        let mut watch = Watch::start(tmp.path(), &args, &[]);
        wait_for_file(&output_of(&path));
        let took = written.elapsed();
        assert!(
            took >= Duration::from_secs(1),
            "{extra:?}: taken {took:?} after it was written"
        );
        assert!(
            took < Duration::from_secs(10),
            "{extra:?}: taken after {took:?}"
        );
        assert_eq!(
            fs::read(output_of(&path)).unwrap(),
            run_output(&path, "fresh.wav"),
            "{extra:?}"
        );
        assert_eq!(watch.stop(libc::SIGTERM), 0, "{}", watch.stderr());
    }
}

/// The output folder removed and made again while the service runs (someone cleared it): the
/// next file's output goes into the folder as it is now, whoever names it (a worker keeps the
/// folders it named outputs in open, and must not keep using one that is gone).
#[test]
fn an_output_folder_made_again_while_watching_gets_the_next_outputs() {
    for extra in [&[][..], &["--no-fsync"]] {
        let tmp = TempDir::new().unwrap();
        let inbox = tmp.path().join("inbox");
        let out = tmp.path().join("out");
        fs::create_dir(&inbox).unwrap();
        fs::create_dir(&out).unwrap();
        let report = tmp.path().join("report.jsonl");
        let mut args = vec![
            "-j",
            "1",
            "--settle",
            "200ms",
            "--out-dir",
            out.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(inbox.to_str().unwrap());
        let mut watch = Watch::start(tmp.path(), &args, &[]);
        let bytes = tone_bytes(0.2);
        fs::write(inbox.join("a.wav"), &bytes).unwrap();
        wait_for_file(&out.join("a-transformed.wav"));
        fs::remove_dir_all(&out).unwrap();
        fs::create_dir(&out).unwrap();
        fs::write(inbox.join("b.wav"), &bytes).unwrap();
        let took = wait_for_file(&out.join("b-transformed.wav"));
        assert!(took < Duration::from_secs(10), "{extra:?}: after {took:?}");
        assert_eq!(
            fs::read(out.join("b-transformed.wav")).unwrap(),
            run_output(&inbox.join("b.wav"), "b.wav"),
            "{extra:?}"
        );
        assert_eq!(watch.stop(libc::SIGTERM), 0, "{}", watch.stderr());
        let records = report_lines(&report);
        assert!(
            records.iter().all(|r| r["status"] != "failed"),
            "{extra:?}: {records:?}"
        );
    }
}

fn file_written_slowly(extra: &[&str]) {
    let tmp = TempDir::new().unwrap();
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let report = tmp.path().join("report.jsonl");
    // The default settle time (1 s): the writer pauses less than that between pieces.
    let mut args = vec!["-j", "1", "--report", report.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(inbox.to_str().unwrap());
    let mut watch = Watch::start(tmp.path(), &args, &[]);
    let bytes = tone_bytes(1.0);
    let path = inbox.join("slow.wav");
    let mut file = fs::File::create(&path).unwrap();
    let pieces = 8;
    let piece = bytes.len().div_ceil(pieces);
    let started = Instant::now();
    for chunk in bytes.chunks(piece) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        thread::sleep(Duration::from_millis(250));
        assert!(
            !output_of(&path).exists(),
            "taken while still being written"
        );
    }
    drop(file);
    assert!(started.elapsed() > Duration::from_secs(1));
    let took = wait_for_file(&output_of(&path));
    assert!(took < Duration::from_secs(3), "taken after {took:?}");
    assert_eq!(
        fs::read(output_of(&path)).unwrap(),
        run_output(&path, "slow.wav")
    );
    assert_eq!(watch.stop(libc::SIGTERM), 0, "{}", watch.stderr());
    let records = report_lines(&report);
    assert!(
        records.iter().all(|r| r["status"] != "failed"),
        "{records:?}"
    );
}

#[test]
fn a_worker_killed_mid_file_while_watching_has_its_file_retried() {
    let tmp = TempDir::new().unwrap();
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let report = tmp.path().join("report.jsonl");
    let mut watch = Watch::start(
        tmp.path(),
        &[
            "-j",
            "1",
            "--settle",
            "200ms",
            "--report",
            report.to_str().unwrap(),
            inbox.to_str().unwrap(),
        ],
        &[],
    );
    let staged = tmp.path().join("big.wav");
    fs::write(&staged, tone_bytes(120.0)).unwrap();
    let input = inbox.join("big.wav");
    fs::rename(&staged, &input).unwrap();
    let worker = worker_mid_file(watch.pid());
    send_signal(worker, libc::SIGKILL);
    wait_for_file(&output_of(&input));
    assert_eq!(
        fs::read(output_of(&input)).unwrap(),
        run_output(&input, "big.wav")
    );
    assert_eq!(watch.stop(libc::SIGTERM), 0, "{}", watch.stderr());
    let records = report_lines(&report);
    let record = records
        .iter()
        .find(|r| r["input"].as_str().is_some_and(|i| i.ends_with("big.wav")))
        .expect("a record for big.wav");
    assert_eq!(record["status"], "ok");
    assert_eq!(record["attempts"], 2, "{record}\n{}", watch.stderr());
    assert!(
        watch.stderr().contains("SIGKILL; retrying"),
        "{}",
        watch.stderr()
    );
}

#[test]
fn sigterm_stops_the_service_with_0_no_worker_left_and_no_temporary() {
    let tmp = TempDir::new().unwrap();
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let report = tmp.path().join("report.jsonl");
    let mut watch = Watch::start(
        tmp.path(),
        &[
            "-j",
            "2",
            "--settle",
            "200ms",
            "--report",
            report.to_str().unwrap(),
            inbox.to_str().unwrap(),
        ],
        &[],
    );
    let staged = tmp.path().join("big.wav");
    fs::write(&staged, tone_bytes(120.0)).unwrap();
    fs::rename(&staged, inbox.join("big.wav")).unwrap();
    worker_mid_file(watch.pid());
    let workers = common::child_pids(watch.pid());
    assert!(!workers.is_empty());
    assert_eq!(watch.stop(libc::SIGTERM), 0, "{}", watch.stderr());
    for w in workers {
        assert!(!common::process_alive(w), "worker {w} outlived the service");
    }
    assert_eq!(temporaries_below(&inbox), Vec::<PathBuf>::new());
    assert!(!output_of(&inbox.join("big.wav")).exists());
    let summary = report_lines(&report).pop().expect("a summary");
    assert_eq!(summary["summary"]["not_run"], 1, "{summary}");
    assert_eq!(summary["summary"]["end"], "interrupted by SIGTERM");
}

/// Starts `etl watch -j JOBS INBOX` as systemd would: a socket to notify, and a watchdog of
/// `watchdog_usec`. Gives the service and the socket it talks to.
fn watch_under_systemd(
    cwd: &Path,
    inbox: &Path,
    jobs: &str,
    watchdog_usec: &str,
) -> (Watch, UnixDatagram) {
    let socket_path = cwd.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let watch = Watch::start(
        cwd,
        &["-j", jobs, inbox.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", watchdog_usec),
        ],
    );
    (watch, socket)
}

#[test]
fn systemd_hears_ready_status_and_watchdog_pings() {
    let tmp = TempDir::new().unwrap();
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let (mut watch, socket) = watch_under_systemd(tmp.path(), &inbox, "1", "400000");
    let mut heard = String::new();
    let mut buf = [0u8; 4096];
    while !(heard.contains("READY=1")
        && heard.contains("STATUS=")
        && heard.matches("WATCHDOG=1").count() >= 2)
    {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}; heard so far:\n{heard}"));
        heard.push_str(&String::from_utf8_lossy(&buf[..n]));
        heard.push('\n');
    }
    assert!(
        heard.contains("STATUS=0 ok, 0 skipped, 0 failed"),
        "{heard}"
    );
    assert_eq!(watch.stop(libc::SIGTERM), 0, "{}", watch.stderr());
}

/// A service catching up on a folder does not hold on to the paths of what it writes itself (each
/// output's unnamed file, temporary and final name raise change events): over a million files it
/// would hold three million paths until the catch-up ends. Its systemd status says how many
/// paths wait.
#[test]
fn catching_up_keeps_no_paths_of_its_own_outputs() {
    let tmp = TempDir::new().unwrap();
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let tone = tone_bytes(0.01);
    const FILES: usize = 400;
    for i in 0..FILES {
        fs::write(inbox.join(format!("clip{i}.wav")), &tone).unwrap();
    }
    common::settle(&inbox);
    let (mut watch, socket) = watch_under_systemd(tmp.path(), &inbox, "2", "100000");
    let done = format!("STATUS={FILES} ok, 0 skipped, 0 failed;");
    let mut statuses: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut hear = |statuses: &mut Vec<String>| -> std::io::Result<()> {
        let n = socket.recv(&mut buf)?;
        let message = String::from_utf8_lossy(&buf[..n]);
        let lines = message.lines().filter(|l| l.starts_with("STATUS="));
        statuses.extend(lines.map(String::from));
        Ok(())
    };
    while !statuses.iter().any(|s| s.starts_with(&done)) {
        if let Err(e) = hear(&mut statuses) {
            panic!("{e}; statuses so far:\n{statuses:#?}");
        }
    }
    // Events of the last outputs may be read after that status: a few more messages.
    for _ in 0..5 {
        let _ = hear(&mut statuses);
    }
    let waiting: Vec<&String> = statuses
        .iter()
        .filter(|s| !s.contains(" 0 waiting to settle"))
        .collect();
    assert!(
        waiting.is_empty(),
        "paths kept while catching up: {waiting:#?}"
    );
    assert_eq!(
        files_below(&inbox)
            .iter()
            .filter(|n| n.ends_with("-transformed.wav"))
            .count(),
        FILES
    );
    assert_eq!(watch.stop(libc::SIGTERM), 0, "{}", watch.stderr());
}

/// The value of the sample `name` in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_are_served_for_prometheus() {
    let tmp = TempDir::new().unwrap();
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut watch = Watch::start(
        tmp.path(),
        &[
            "-j",
            "1",
            "--settle",
            "200ms",
            "--metrics",
            &addr,
            inbox.to_str().unwrap(),
        ],
        &[],
    );
    for n in 0..3 {
        let staged = tmp.path().join(format!("{n}.wav"));
        fs::write(&staged, tone_bytes(0.2)).unwrap();
        fs::rename(&staged, inbox.join(format!("{n}.wav"))).unwrap();
    }
    fs::write(inbox.join("broken.wav"), b"RIFF not really").unwrap();
    let url = format!("http://{addr}/metrics");
    let mut text = String::new();
    wait_for("the metrics to count 3 ok and 1 failed", || {
        let mut response = ureq::get(&url).call().expect("the metrics answer");
        assert_eq!(response.status(), 200);
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(kind.contains("openmetrics-text"), "{kind}");
        text = response.body_mut().read_to_string().unwrap();
        sample(&text, "etl_files_total{status=\"ok\"}") == Some(3.0)
            && sample(&text, "etl_files_total{status=\"failed\"}") == Some(1.0)
    });
    let bytes = sample(&text, "etl_input_bytes_total").unwrap();
    assert_eq!(bytes, 3.0 * tone_bytes(0.2).len() as f64, "{text}");
    assert!(sample(&text, "etl_worker_seconds_total").unwrap() > 0.0);
    assert_eq!(sample(&text, "etl_queue_length"), Some(0.0));
    assert_eq!(sample(&text, "etl_worker_restarts_total"), Some(0.0));
    assert_eq!(watch.stop(libc::SIGINT), 0, "{}", watch.stderr());
}

#[test]
fn run_and_watch_on_one_folder_exclude_each_other_with_75() {
    let tmp = TempDir::new().unwrap();
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let mut watch = Watch::start(tmp.path(), &["-j", "1", inbox.to_str().unwrap()], &[]);
    let run = etl_command()
        .args(["run", "--no-progress"])
        .arg(&inbox)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(75));
    assert_eq!(watch.stop(libc::SIGTERM), 0);

    // And the other way round: a lock held as a run holds it.
    let held = fs::File::create(inbox.join(".etl.lock")).unwrap();
    held.lock().unwrap();
    let second = etl_command()
        .args(["watch", "-j", "1"])
        .arg(&inbox)
        .output()
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}

#[test]
fn the_report_is_appended_to_and_reopened_on_sighup() {
    let tmp = TempDir::new().unwrap();
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let report = tmp.path().join("report.jsonl");
    fs::write(&report, "{\"earlier\":true}\n").unwrap();
    let mut watch = Watch::start(
        tmp.path(),
        &[
            "-j",
            "1",
            "--settle",
            "200ms",
            "--report",
            report.to_str().unwrap(),
            inbox.to_str().unwrap(),
        ],
        &[],
    );
    let drop_file = |name: &str| {
        let staged = tmp.path().join(name);
        fs::write(&staged, tone_bytes(0.2)).unwrap();
        fs::rename(&staged, inbox.join(name)).unwrap();
        wait_for_file(&output_of(&inbox.join(name)));
    };
    drop_file("one.wav");
    wait_for("one.wav's line", || report_lines(&report).len() == 2);
    // logrotate: move the report away, then SIGHUP.
    let rotated = tmp.path().join("report.jsonl.1");
    fs::rename(&report, &rotated).unwrap();
    send_signal(watch.pid(), libc::SIGHUP);
    wait_for("the report to be reopened", || {
        watch.stderr().contains("reopened the report")
    });
    drop_file("two.wav");
    wait_for("two.wav's line", || !report_lines(&report).is_empty());
    assert_eq!(watch.stop(libc::SIGTERM), 0, "{}", watch.stderr());
    let old = report_lines(&rotated);
    assert_eq!(old[0]["earlier"], true);
    assert!(old[1]["input"].as_str().unwrap().ends_with("one.wav"));
    assert_eq!(old.len(), 2, "{old:?}");
    let new = report_lines(&report);
    assert!(new[0]["input"].as_str().unwrap().ends_with("two.wav"));
    assert!(new.last().unwrap().get("summary").is_some());
}

/// `Key=value` settings of a systemd unit, comments left out.
fn unit_settings(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_watch_unit_is_a_notify_service_with_the_sandbox_of_the_run_unit() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let watch = unit_settings(&deploy.join("etl-watch.service"));
    let run = unit_settings(&deploy.join("etl.service"));
    let get = |k: &str| {
        watch
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("Type"), Some("notify"));
    assert!(get("WatchdogSec").is_some());
    assert_eq!(get("KillMode"), Some("mixed"));
    assert!(get("ExecStart").unwrap().contains(" watch "));
    // Every sandboxing setting of etl.service, with the same value.
    let sandbox_from = run
        .iter()
        .position(|(k, _)| k == "NoNewPrivileges")
        .expect("etl.service is sandboxed");
    for setting in &run[sandbox_from..] {
        assert!(
            watch.contains(setting),
            "etl-watch.service lacks {}={}",
            setting.0,
            setting.1
        );
    }
}

/// `--snr-db LOW..HIGH`: each file the service takes gets its own level, drawn as `etl run`
/// draws it for the same seed (the same bytes), and on its report line.
#[test]
fn a_level_range_draws_each_files_level_as_run_does() {
    let tmp = TempDir::new().unwrap();
    let inbox = tmp.path().join("inbox");
    fs::create_dir(&inbox).unwrap();
    let report = tmp.path().join("report.jsonl");
    let mut watch = Watch::start(
        tmp.path(),
        &[
            "-j",
            "1",
            "--settle",
            "200ms",
            "--snr-db",
            "10..20",
            "--report",
            report.to_str().unwrap(),
            inbox.to_str().unwrap(),
        ],
        &[],
    );
    for name in ["one.wav", "two.wav"] {
        let staged = tmp.path().join(name);
        fs::write(&staged, tone_bytes(0.2)).unwrap();
        fs::rename(&staged, inbox.join(name)).unwrap();
        wait_for_file(&output_of(&inbox.join(name)));
    }
    wait_for("both lines", || report_lines(&report).len() == 2);
    assert_eq!(watch.stop(libc::SIGTERM), 0, "{}", watch.stderr());
    let lines = report_lines(&report);
    let levels: Vec<f64> = lines[..2]
        .iter()
        .map(|l| l["snr_db"].as_f64().unwrap())
        .collect();
    assert!(
        levels.iter().all(|db| (10.0..=20.0).contains(db)),
        "{levels:?}"
    );
    assert_ne!(levels[0], levels[1]);
    for name in ["one.wav", "two.wav"] {
        let fresh = TempDir::new().unwrap();
        let copy = fresh.path().join(name);
        fs::copy(inbox.join(name), &copy).unwrap();
        let out = etl_command()
            .args(["run", "--no-progress", "--settle", "0", "--seed", SEED])
            .args(["--snr-db", "10..20"])
            .arg(fresh.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            fs::read(output_of(&copy)).unwrap() == fs::read(output_of(&inbox.join(name))).unwrap(),
            "{name}: watch and run differ"
        );
    }
}
