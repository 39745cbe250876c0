//! A run killed at any point (SIGKILL to the supervisor, to workers, or both) leaves only whole
//! outputs under final names: every `*-transformed.wav` is byte for byte the one an uninterrupted
//! run makes, anything else it left is a hidden temporary, and the next run sweeps those and
//! finishes the work.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SEED: &str = "7";

/// How the runs of a test make their outputs.
#[derive(Clone, Copy)]
enum Mode {
    /// Flushed, and the files split into parts (small parts, so that kills land between parts
    /// too): the supervisor names each output after the flush.
    SplitFlushed,
    /// Whole files without flushes: each worker names its outputs itself.
    WholeNoFsync,
}

impl Mode {
    fn command(self) -> std::process::Command {
        let mut cmd = etl_command();
        cmd.args(["run", "--no-progress", "-j", "2", "--seed", SEED]);
        match self {
            Mode::SplitFlushed => cmd.env("ETL_SPLIT_BYTES", "65536"),
            Mode::WholeNoFsync => cmd.arg("--no-fsync"),
        };
        cmd
    }
}

fn run_to_end(data: &Path, mode: Mode) -> Run {
    Run::from_output(mode.command().arg(data).output().unwrap())
}

/// What a run left in `dir` besides its inputs: names that are not hidden, and hidden ones.
fn outputs_and_leftovers(dir: &Path) -> (Vec<String>, Vec<String>) {
    names(dir)
        .into_iter()
        .filter(|n| !n.starts_with("in-") || n.ends_with("-transformed.wav"))
        .partition(|n| !n.starts_with('.'))
}

/// A small generator for the kill points, seeded from the clock and printed so a failure can be
/// replayed by setting `KILL_SEED`.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn a_run_killed_anywhere_leaves_only_whole_outputs_and_the_next_run_finishes() {
    killed_anywhere(Mode::SplitFlushed);
}

#[test]
fn a_run_whose_workers_name_outputs_killed_anywhere_leaves_only_whole_outputs() {
    killed_anywhere(Mode::WholeNoFsync);
}

fn killed_anywhere(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    gen_fake_data(&source, &["--count", "16", "--duration", "0.5"]);
    let tones: Vec<String> = names(&source)
        .into_iter()
        .filter(|n| n.ends_with(".wav"))
        .collect();
    for (i, name) in tones.iter().enumerate() {
        fs::rename(source.join(name), source.join(format!("in-{i:02}.wav"))).unwrap();
    }
    let copy_inputs = |to: &Path| {
        fs::create_dir_all(to).unwrap();
        for name in names(&source).iter().filter(|n| n.starts_with("in-")) {
            fs::copy(source.join(name), to.join(name)).unwrap();
        }
        settle(to);
    };
    let reference = dir.path().join("reference/in");
    copy_inputs(&reference);
    run_to_end(&reference, mode).expect_code(0);
    let expected = snapshot(&reference);
    assert_eq!(
        expected
            .keys()
            .filter(|p| p.to_string_lossy().ends_with("-transformed.wav"))
            .count(),
        16
    );

    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill points from KILL_SEED={seed}");
    let mut dice = Dice(seed);
    for round in 0..12 {
        let data = dir.path().join(format!("round{round}/in"));
        copy_inputs(&data);
        let mut child = mode
            .command()
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let supervisor = child.id();
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(dice.below(250)));
        let mut workers = child_pids(supervisor);
        let how = round % 3;
        if how != 0 {
            // A worker (or all of them), then, for one round in two of these, the supervisor.
            let victims = if how == 1 {
                &workers[..workers.len().min(1)]
            } else {
                &workers[..]
            };
            for &w in victims {
                send_signal(w, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(dice.below(100)));
        }
        if how != 2 {
            workers.extend(child_pids(supervisor));
            send_signal(supervisor, libc::SIGKILL);
        }
        child.wait().unwrap();
        // Orphaned workers must be gone before the next run, which would otherwise race them.
        wait_for("the workers of a killed run to go", || {
            workers.iter().all(|&w| !process_alive(w))
        });
        let (outputs, leftovers) = outputs_and_leftovers(&data);
        for name in &outputs {
            assert_eq!(
                Some(&fs::read(data.join(name)).unwrap()),
                expected.get(Path::new(name)),
                "round {round} (kill seed {seed}, {} ms in): {name} is not the whole output",
                started.elapsed().as_millis()
            );
        }
        for name in &leftovers {
            assert!(
                name.ends_with(".etl-tmp") || name == ".etl.lock",
                "round {round}: {name} left, not a hidden temporary (or the run's lock)"
            );
        }
        // The next run finishes the work and sweeps what the killed one left.
        run_to_end(&data, mode).expect_code(0);
        assert_eq!(
            names(&data),
            names(&reference),
            "round {round}: the run after the kill did not finish the work cleanly"
        );
        for (name, bytes) in &expected {
            if name.as_os_str() != ".etl.lock" {
                assert!(
                    &fs::read(data.join(name)).unwrap() == bytes,
                    "round {round}: {} differs after the next run",
                    name.display()
                );
            }
        }
    }
}
