//! The supervisor: the parent process. It finds the inputs, takes the run's lock, sweeps what a
//! killed run left behind, hands jobs to the worker pool (largest first, large files split into
//! block ranges), renames finished outputs into place, and reports. It never touches samples.

pub mod discover;
pub mod lock;
pub mod pool;
pub mod report;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use discover::{Discovery, Input, Plan, Shard};
use pool::{Completion, Pool, PoolEnd, Task};
use report::{Counts, FileRecord, Reporter, Status};

use crate::etl::describe_io;
use crate::etl::tone::Tone;
use crate::etl::transform::NoiseLevel;
use crate::etl::{noise, output};
use crate::protocol::{GenerateJob, ToWorker, TransformJob, WirePath};

/// Files at least this large are split into parts of about this size, so that one large file
/// keeps every worker busy.
pub const SPLIT_BYTES: u64 = 64 << 20;
/// Every temporary output ends with this; the part before names the run kind (shard or `gen`).
const TEMP_SUFFIX: &str = ".etl-tmp";

pub struct RunOptions {
    pub paths: Vec<PathBuf>,
    pub level: NoiseLevel,
    pub seed: Option<u64>,
    pub out_dir: Option<PathBuf>,
    pub recursive: bool,
    pub force: bool,
    pub shard: Shard,
    pub report: Option<PathBuf>,
    pub dry_run: bool,
    pub progress: bool,
    pub fsync: bool,
    pub jobs: usize,
    /// `--output-format`: `None` keeps each input's.
    pub output_format: Option<crate::etl::wav::Encoding>,
}

pub struct GenerateOptions {
    pub out_dir: PathBuf,
    pub count: u32,
    pub tone: Tone,
    pub force: bool,
    pub progress: bool,
}

/// How a run ended, for the exit code.
#[derive(Debug, PartialEq)]
pub enum RunEnd {
    /// Every file was handled; `counts.failed` says whether all went well.
    Completed(Counts),
    /// Stopped by a signal.
    Interrupted(i32, Counts),
    /// Stopped because workers kept dying.
    GaveUp(String, Counts),
}

/// Errors that stop a run before it starts.
#[derive(Debug)]
pub enum RunError {
    /// Bad usage, such as a PATH that does not exist: exit 2.
    Usage(String),
    /// Another run holds the lock: exit 75.
    Locked(String),
    /// Anything else: exit 1.
    Fatal(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Usage(m) | RunError::Locked(m) | RunError::Fatal(m) => f.write_str(m),
        }
    }
}

fn lock_error(e: lock::LockError) -> RunError {
    match e {
        lock::LockError::Held { path, holder } => RunError::Locked(format!(
            "{} is held by {holder}: another run is working on this folder",
            path.display()
        )),
        lock::LockError::Io { path, cause } => {
            RunError::Fatal(format!("cannot take the lock {}: {cause}", path.display()))
        }
    }
}

fn temp_path(output: &Path, tag: &str) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(output.file_name().unwrap_or_default());
    name.push(format!(".{tag}{TEMP_SUFFIX}"));
    output.with_file_name(name)
}

/// Removes temporary files with our own names for `tag` that a killed run left in `dirs`.
/// Only called while holding the lock for that tag, so none of them belongs to a live run.
fn sweep(dirs: &HashSet<PathBuf>, tag: &str) {
    let suffix = format!(".{tag}{TEMP_SUFFIX}");
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(&suffix) {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!("removed {} left by an interrupted run", path.display())
                    }
                    Err(e) => {
                        tracing::warn!("cannot remove {}: {}", path.display(), describe_io(&e))
                    }
                }
            }
        }
    }
}

/// What one file is waiting for.
struct FileState {
    parts_left: u32,
    seconds: f64,
    clipped: u64,
    attempts: u32,
    worker_pid: Option<u32>,
    failed: bool,
    done: bool,
}

/// `etl run`: transform every input.
pub fn run(pool: &mut Pool, opts: &RunOptions) -> Result<RunEnd, RunError> {
    let start = Instant::now();
    let found: Discovery = discover::discover(&discover::Options {
        paths: &opts.paths,
        recursive: opts.recursive,
        out_dir: opts.out_dir.as_deref(),
        force: opts.force,
        shard: opts.shard,
    })
    .map_err(|e| RunError::Usage(e.0))?;
    for w in &found.warnings {
        tracing::warn!("{w}");
    }
    if opts.dry_run {
        if let Some(report) = &opts.report {
            tracing::warn!(
                "--dry-run writes nothing: no report to {}",
                report.display()
            );
        }
        return Ok(dry_run(&found.inputs));
    }

    let _lock = lock::acquire(&found.output_roots, opts.shard).map_err(lock_error)?;
    // The report is opened (and emptied) only by the lock's holder, and before any other work, so
    // that a bad report path stops the run before it has touched anything.
    let inputs = &found.inputs;
    let total_files = inputs.len() as u64;
    let total_bytes = inputs.iter().map(|i| i.size).sum();
    let mut reporter = Reporter::new(
        opts.report.as_deref(),
        opts.progress,
        total_files,
        total_bytes,
        false,
    )
    .map_err(RunError::Usage)?;
    let tag = opts.shard.tag();
    let out_dirs: HashSet<PathBuf> = found
        .inputs
        .iter()
        .map(|i| output::folder(&i.output).to_path_buf())
        .chain(found.output_roots.iter().cloned())
        .collect();
    sweep(&out_dirs, &tag);

    let seed = opts.seed.unwrap_or_else(rand::random);
    if opts.seed.is_none() {
        tracing::info!("seed {seed} (pass --seed {seed} to reproduce this run)");
    }

    let record = |input: &Input, status, error: Option<String>| {
        FileRecord::new(&input.path, &input.output, status, error)
    };

    // Files decided without a worker, then the work, largest parts first.
    let mut states: Vec<Option<FileState>> = Vec::with_capacity(inputs.len());
    let mut parts: Vec<(usize, u32, u32, u64)> = Vec::new();
    let mut made_dirs: HashSet<PathBuf> = HashSet::new();
    for (i, input) in inputs.iter().enumerate() {
        let mut plan = input.status.clone();
        let dir = output::folder(&input.output).to_path_buf();
        if plan == Plan::Transform
            && !made_dirs.contains(&dir)
            && let Err(e) = fs::create_dir_all(&dir).map(|()| made_dirs.insert(dir))
        {
            plan = Plan::Fail(format!(
                "cannot create the output folder: {}",
                describe_io(&e)
            ));
        }
        match plan {
            Plan::Skip(why) => reporter.file(
                record(input, Status::Skipped, Some(why)),
                input.size,
                total_files,
            ),
            Plan::Fail(why) => reporter.file(
                record(input, Status::Failed, Some(why)),
                input.size,
                total_files,
            ),
            Plan::Transform => {
                let n = split_count(input.size, opts);
                for part in 0..n {
                    parts.push((i, part, n, input.size / n as u64));
                }
                states.resize_with(i + 1, || None);
                states[i] = Some(FileState {
                    parts_left: n,
                    seconds: 0.0,
                    clipped: 0,
                    attempts: 0,
                    worker_pid: None,
                    failed: false,
                    done: false,
                });
                continue;
            }
        }
        states.resize_with(i + 1, || None);
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.3));

    let tasks: Vec<Task> = parts
        .iter()
        .enumerate()
        .map(|(id, &(file, part, n, _))| {
            let input = &inputs[file];
            let job = TransformJob {
                id: id as u64,
                input: WirePath::from(input.path.as_path()),
                temp_output: WirePath::from(temp_path(&input.output, &tag).as_path()),
                part,
                parts: n,
                level: opts.level,
                file_seed: noise::file_seed(seed, input.relative.as_os_str().as_encoded_bytes()),
                fsync: opts.fsync,
                output_format: opts.output_format,
            };
            Task {
                id: id as u64,
                message: Box::new(move || ToWorker::Transform(job.clone())),
            }
        })
        .collect();

    let end = pool.run(tasks, |c: Completion| {
        let (file, _, _, _) = parts[c.id as usize];
        let input = &inputs[file];
        let Some(state) = states[file].as_mut() else {
            return;
        };
        state.attempts = state.attempts.max(c.attempts);
        state.worker_pid = Some(c.worker_pid);
        if state.failed {
            return;
        }
        let temp = temp_path(&input.output, &tag);
        let fail = |state: &mut FileState, why: String, reporter: &mut Reporter| {
            state.failed = true;
            let _ = fs::remove_file(&temp);
            let mut r = record(input, Status::Failed, Some(why));
            r.attempts = state.attempts;
            r.worker_pid = state.worker_pid;
            r.seconds = state.seconds;
            reporter.file(r, input.size, total_files);
        };
        let stats = match c.result {
            Err(cause) => return fail(state, cause, &mut reporter),
            Ok(result) => {
                state.seconds += result.seconds;
                match result.outcome {
                    Err(cause) => return fail(state, cause, &mut reporter),
                    Ok(stats) => stats,
                }
            }
        };
        let stats = stats.expect("a transform reports its stats");
        state.clipped += stats.clipped;
        state.parts_left -= 1;
        if state.parts_left > 0 {
            return;
        }
        // Only what is counted here gets its final name.
        if let Err(e) = fs::rename(&temp, &input.output) {
            return fail(state, format!("cannot rename the output into place: {}", describe_io(&e)), &mut reporter);
        }
        // The data is on disk already; only the name's durability is in question.
        if opts.fsync
            && let Err(e) = output::sync_folder(&input.output)
        {
            tracing::warn!("{}: cannot flush its folder: {}", input.output.display(), describe_io(&e));
        }
        if stats.size_recovered {
            tracing::warn!(
                "{}: the data size in its header was a placeholder; used the {} frames the file holds",
                input.path.display(),
                stats.frames
            );
        }
        state.done = true;
        let mut r = record(input, Status::Ok, None);
        r.seconds = state.seconds;
        r.frames = Some(stats.frames);
        r.channels = Some(stats.layout.channels);
        r.sample_rate = Some(stats.layout.sample_rate);
        r.output_format = Some(stats.output_encoding.name());
        r.output_container = Some(stats.output_container.name());
        r.clipped = Some(state.clipped);
        r.attempts = state.attempts;
        r.worker_pid = state.worker_pid;
        reporter.file(r, input.size, total_files);
    });

    // Whatever did not finish leaves nothing behind.
    for (file, state) in states.iter().enumerate() {
        if let Some(state) = state
            && !state.done
        {
            let _ = fs::remove_file(temp_path(&inputs[file].output, &tag));
            if !state.failed {
                reporter.counts.not_run += 1;
            }
        }
    }

    let level = match opts.level {
        NoiseLevel::Sigma(s) => serde_json::json!({ "sigma": s }),
        NoiseLevel::SnrDb(db) => serde_json::json!({ "snr_db": db }),
    };
    let mut summary = serde_json::json!({
        "ok": reporter.counts.ok,
        "skipped": reporter.counts.skipped,
        "failed": reporter.counts.failed,
        "not_run": reporter.counts.not_run,
        "seconds": start.elapsed().as_secs_f64(),
        "seed": seed,
        "jobs": opts.jobs,
        "shard": opts.shard.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "end": pool_end_word(&end),
    });
    summary
        .as_object_mut()
        .unwrap()
        .extend(level.as_object().unwrap().clone());
    reporter.finish(start.elapsed().as_secs_f64(), summary, "etl");
    let counts = reporter.counts.clone();
    Ok(match end {
        PoolEnd::Finished => RunEnd::Completed(counts),
        PoolEnd::Interrupted(sig) => RunEnd::Interrupted(sig, counts),
        PoolEnd::GaveUp(why) => RunEnd::GaveUp(why, counts),
    })
}

fn pool_end_word(end: &PoolEnd) -> String {
    match end {
        PoolEnd::Finished => "finished".into(),
        PoolEnd::Interrupted(sig) => format!("interrupted by {}", pool::signal_name(*sig)),
        PoolEnd::GaveUp(why) => why.clone(),
    }
}

/// How many parts a file is split into.
fn split_count(size: u64, opts: &RunOptions) -> u32 {
    // With --snr-db every part would first read the whole file for its RMS.
    if opts.jobs < 2 || matches!(opts.level, NoiseLevel::SnrDb(_)) {
        return 1;
    }
    size.div_ceil(SPLIT_BYTES).clamp(1, 4096) as u32
}

/// `--dry-run`: say what would happen, write nothing.
fn dry_run(inputs: &[Input]) -> RunEnd {
    let mut counts = Counts::default();
    let mut out = std::io::stdout().lock();
    for input in inputs {
        let line = match &input.status {
            Plan::Transform => {
                counts.ok += 1;
                format!(
                    "transform {} -> {}",
                    input.path.display(),
                    input.output.display()
                )
            }
            Plan::Skip(why) => {
                counts.skipped += 1;
                format!("skip {}: {why}", input.path.display())
            }
            Plan::Fail(why) => {
                counts.failed += 1;
                format!("fail {}: {why}", input.path.display())
            }
        };
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "dry run: {} to transform, {} to skip, {} would fail",
        counts.ok, counts.skipped, counts.failed
    );
    RunEnd::Completed(Counts {
        ok: 0,
        skipped: counts.ok + counts.skipped,
        failed: counts.failed,
        not_run: 0,
    })
}

/// `etl gen-fake-data`: write `example0.wav` .. in `out_dir` on the worker pool, keeping what exists.
pub fn generate(pool: &mut Pool, opts: &GenerateOptions) -> Result<RunEnd, RunError> {
    let start = Instant::now();
    let dir = &opts.out_dir;
    let _lock = lock::acquire(std::slice::from_ref(dir), Shard::WHOLE).map_err(lock_error)?;
    const TAG: &str = "gen";
    sweep(&HashSet::from([dir.clone()]), TAG);
    let mut reporter =
        Reporter::new(None, opts.progress, opts.count as u64, 0, true).map_err(RunError::Fatal)?;
    let names: Vec<PathBuf> = (0..opts.count)
        .map(|n| dir.join(format!("example{n}.wav")))
        .collect();
    let record = |path: &Path, status, error| FileRecord::new(path, path, status, error);
    let mut todo = Vec::new();
    for path in &names {
        if !opts.force && path.exists() {
            reporter.file(
                record(
                    path,
                    Status::Skipped,
                    Some("exists (use --force to replace it)".into()),
                ),
                0,
                opts.count as u64,
            );
        } else {
            todo.push(path.clone());
        }
    }
    if !todo.is_empty() {
        tracing::info!("generating {} files in {}", todo.len(), dir.display());
    }
    let tasks = todo
        .iter()
        .enumerate()
        .map(|(id, path)| {
            let job = GenerateJob {
                id: id as u64,
                temp_output: WirePath::from(temp_path(path, TAG).as_path()),
                tone: opts.tone,
            };
            Task {
                id: id as u64,
                message: Box::new(move || ToWorker::Generate(job.clone())),
            }
        })
        .collect();
    let mut done = vec![false; todo.len()];
    let end = pool.run(tasks, |c| {
        let path = &todo[c.id as usize];
        let temp = temp_path(path, TAG);
        let result = c.result.and_then(|r| r.outcome.map(|_| ())).and_then(|()| {
            fs::rename(&temp, path)
                .map_err(|e| format!("cannot rename the output into place: {}", describe_io(&e)))
        });
        match result {
            Ok(()) => {
                done[c.id as usize] = true;
                tracing::info!("created {}", path.display());
                reporter.file(record(path, Status::Ok, None), 0, opts.count as u64);
            }
            Err(why) => {
                let _ = fs::remove_file(&temp);
                reporter.file(
                    record(path, Status::Failed, Some(why)),
                    0,
                    opts.count as u64,
                );
            }
        }
    });
    for (path, done) in todo.iter().zip(&done) {
        if !done {
            let _ = fs::remove_file(temp_path(path, TAG));
        }
    }
    reporter.counts.not_run = done.iter().filter(|d| !**d).count() as u64
        - (reporter.counts.failed.min(todo.len() as u64));
    reporter.finish(
        start.elapsed().as_secs_f64(),
        serde_json::json!({}),
        "gen-fake-data",
    );
    let counts = reporter.counts.clone();
    Ok(match end {
        PoolEnd::Finished => RunEnd::Completed(counts),
        PoolEnd::Interrupted(sig) => RunEnd::Interrupted(sig, counts),
        PoolEnd::GaveUp(why) => RunEnd::GaveUp(why, counts),
    })
}
