//! The supervisor: the parent process. It finds the inputs, takes the run's lock, sweeps what a
//! killed run left behind, plans each file from one look at it (its identity and where its
//! samples are, see [`crate::etl::identity`]), hands jobs to the worker pool (largest first, large
//! files split into block ranges), renames finished outputs into place once the input is seen
//! unchanged, starts again a file that changed, and reports. It never touches samples.

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
use report::{Counts, FileRecord, Reporter, Status, escape_name, escape_text};

use crate::etl::describe_io;
use crate::etl::identity::{self, InputIdentity, Planned};
use crate::etl::tone::Tone;
use crate::etl::transform::NoiseLevel;
use crate::etl::{noise, output};
use crate::protocol::{GenerateJob, JobFailure, ToWorker, TransformJob, WirePath};

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
    /// Take no symbolic link found below a PATH (`--no-follow`).
    pub no_follow: bool,
    pub force: bool,
    pub shard: Shard,
    pub report: Option<PathBuf>,
    pub dry_run: bool,
    pub progress: bool,
    pub fsync: bool,
    pub jobs: usize,
    /// Files modified less than this long ago are skipped as still being written.
    pub settle: std::time::Duration,
    /// Times a file that changed while it was being read is started again.
    pub retries: u32,
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
        lock::LockError::Refused { path, why } => {
            RunError::Fatal(format!("refusing {}: {why}", path.display()))
        }
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
/// What a killed run leaves is a regular file with one link; anything else under such a name
/// (a symbolic or hard link) was planted by someone else and is left for the file that needs
/// the name to refuse, so that the run says so.
fn sweep(dirs: &HashSet<PathBuf>, tag: &str) {
    let suffix = format!(".{tag}{TEMP_SUFFIX}");
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with('.') && name.ends_with(&suffix)) {
                continue;
            }
            let path = entry.path();
            let planted = fs::symlink_metadata(&path)
                .ok()
                .and_then(|m| output::link_refusal(&m));
            if let Some(why) = planted {
                tracing::warn!(
                    "{}: not removed: {why}, which etl never makes",
                    path.display()
                );
                continue;
            }
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

/// Makes the folder an output goes into. Under `--out-dir` the folders below it are made one at
/// a time without following links ([`output::make_folders`]); beside the inputs the folder exists.
fn make_output_folder(dir: &Path, out_dir: Option<&Path>) -> std::io::Result<()> {
    match out_dir.and_then(|root| Some((root, dir.strip_prefix(root).ok()?))) {
        Some((root, relative)) => output::make_folders(root, relative),
        None => fs::create_dir_all(dir),
    }
}

/// What one file is waiting for.
struct FileState {
    parts_left: u32,
    seconds: f64,
    clipped: u64,
    /// Attempts in earlier rounds (the file changed under them), and in this one.
    attempts_before: u32,
    attempts: u32,
    worker_pid: Option<u32>,
    failed: bool,
    done: bool,
    /// A part of this round found the input changed.
    changed: bool,
    /// Times the file was started again because it changed.
    restarts: u32,
    /// What this round planned from.
    planned: Option<Planned>,
}

/// A file modified less than `settle` ago (or that far in the future: a clock ahead) is taken
/// to be still being written.
fn still_being_written(
    identity: &InputIdentity,
    now: std::time::SystemTime,
    settle: std::time::Duration,
) -> bool {
    if settle.is_zero() {
        return false;
    }
    let mtime = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::new(
            identity.mtime_sec.max(0) as u64,
            identity.mtime_nsec.clamp(0, 999_999_999) as u32,
        ))
        .unwrap_or(now);
    let age = now.duration_since(mtime).unwrap_or_else(|e| e.duration());
    age < settle
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
        no_follow: opts.no_follow,
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
        return Ok(dry_run(&found.inputs, opts.settle));
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
        // A folder that could not be read has no output of its own.
        .filter(|i| i.output != i.path)
        .map(|i| output::folder(&i.output).to_path_buf())
        .chain(found.output_roots.iter().cloned())
        .collect();

    let seed = opts.seed.unwrap_or_else(rand::random);
    if opts.seed.is_none() {
        tracing::info!("seed {seed} (pass --seed {seed} to reproduce this run)");
    }

    let record = |input: &Input, status, error: Option<String>| {
        FileRecord::new(&input.path, &input.output, status, error)
    };

    // Files decided without a worker, then the work, largest parts first.
    let mut states: Vec<Option<FileState>> = Vec::with_capacity(inputs.len());
    let mut made_dirs: HashSet<PathBuf> = HashSet::new();
    let mut refused_dirs: HashSet<PathBuf> = HashSet::new();
    let mut round: Vec<usize> = Vec::new();
    let planned_at = std::time::SystemTime::now();
    for (i, input) in inputs.iter().enumerate() {
        states.resize_with(i + 1, || None);
        let mut plan = input.status.clone();
        let mut planned = None;
        if plan == Plan::Transform {
            planned = identity::plan(&input.path).ok();
            if let Some(p) = &planned
                && still_being_written(&p.identity, planned_at, opts.settle)
            {
                plan = Plan::Skip("still being written".into());
            }
        }
        let dir = output::folder(&input.output).to_path_buf();
        if plan == Plan::Transform
            && !made_dirs.contains(&dir)
            && let Err(e) = make_output_folder(&dir, opts.out_dir.as_deref())
                .map(|()| made_dirs.insert(dir.clone()))
        {
            refused_dirs.insert(dir);
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
                states[i] = Some(FileState {
                    parts_left: 0,
                    seconds: 0.0,
                    clipped: 0,
                    attempts_before: 0,
                    attempts: 0,
                    worker_pid: None,
                    failed: false,
                    done: false,
                    changed: false,
                    restarts: 0,
                    planned,
                });
                round.push(i);
            }
        }
    }

    // Swept only now that the folders are checked: never through a link planted as one of them.
    let out_dirs: HashSet<PathBuf> = out_dirs
        .into_iter()
        .filter(|d| !refused_dirs.contains(d))
        .collect();
    sweep(&out_dirs, &tag);

    // A file found changed is done again from the start, with a fresh plan, once the round in
    // which it changed is over (its parts have all ended, so none still writes its temporary).
    let end = loop {
        let mut parts: Vec<(usize, u32, u32, u64)> = Vec::new();
        for &i in &round {
            let state = states[i].as_mut().expect("a file to transform");
            let size = state
                .planned
                .as_ref()
                .map_or(inputs[i].size, |p| p.identity.size);
            let n = split_count(size, opts);
            state.parts_left = n;
            state.changed = false;
            state.attempts_before += state.attempts;
            state.attempts = 0;
            for part in 0..n {
                parts.push((i, part, n, size / n as u64));
            }
        }
        parts.sort_by_key(|p| std::cmp::Reverse(p.3));

        let tasks: Vec<Task> = parts
            .iter()
            .enumerate()
            .map(|(id, &(file, part, n, _))| {
                let input = &inputs[file];
                let planned = states[file].as_ref().and_then(|s| s.planned.as_ref());
                let job = TransformJob {
                    id: id as u64,
                    input: WirePath::from(input.path.as_path()),
                    temp_output: WirePath::from(temp_path(&input.output, &tag).as_path()),
                    part,
                    parts: n,
                    level: opts.level,
                    file_seed: noise::file_seed(
                        seed,
                        input.relative.as_os_str().as_encoded_bytes(),
                    ),
                    fsync: opts.fsync,
                    expect: planned.map(|p| p.identity),
                    wav: planned.and_then(|p| p.wav.clone()),
                    output_format: opts.output_format,
                };
                Task {
                    id: id as u64,
                    message: Box::new(move || ToWorker::Transform(job.clone())),
                }
            })
            .collect();

        let mut changed: Vec<usize> = Vec::new();
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
                r.attempts = state.attempts_before + state.attempts;
                r.worker_pid = state.worker_pid;
                r.seconds = state.seconds;
                reporter.file(r, input.size, total_files);
            };
            let stats = match c.result {
                Err(cause) => return fail(state, cause, &mut reporter),
                Ok(result) => {
                    state.seconds += result.seconds;
                    match result.outcome {
                        Err(JobFailure::Failed(cause)) => {
                            return fail(state, cause, &mut reporter);
                        }
                        Err(JobFailure::InputChanged) => {
                            state.changed = true;
                            None
                        }
                        Ok(stats) => Some(stats.expect("a transform reports its stats")),
                    }
                }
            };
            if let Some(stats) = &stats {
                state.clipped += stats.clipped;
            }
            state.parts_left -= 1;
            if state.parts_left > 0 {
                return;
            }
            // The last look before the output gets its final name: the path must still name the
            // file the workers read.
            let unchanged = state
                .planned
                .as_ref()
                .is_none_or(|p| p.identity.matches_path(&input.path));
            let stats = match stats {
                Some(stats) if unchanged && !state.changed => stats,
                // Done again from the start in the next round.
                _ => {
                    let _ = fs::remove_file(&temp);
                    changed.push(file);
                    return;
                }
            };
            // Only what is counted here gets its final name.
            let mode = output::mode_from_input(&input.path);
            if let Err(e) = output::publish(&temp, &input.output, mode, opts.out_dir.as_deref()) {
                return fail(
                    state,
                    format!(
                        "cannot rename the output into place: {}",
                        describe_io(&e)
                    ),
                    &mut reporter,
                );
            }
            // The data is on disk already; only the name's durability is in question.
            if opts.fsync
                && let Err(e) = output::sync_folder(&input.output)
            {
                tracing::warn!(
                    "{}: cannot flush its folder: {}",
                    input.output.display(),
                    describe_io(&e)
                );
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
            r.attempts = state.attempts_before + state.attempts;
            r.worker_pid = state.worker_pid;
            reporter.file(r, input.size, total_files);
        });
        if end != PoolEnd::Finished {
            break end;
        }
        round.clear();
        for file in changed {
            let input = &inputs[file];
            let state = states[file].as_mut().expect("a file to transform");
            state.restarts += 1;
            if state.restarts > opts.retries {
                state.failed = true;
                let mut r = record(
                    input,
                    Status::Failed,
                    Some(JobFailure::InputChanged.to_string()),
                );
                r.attempts = state.attempts_before + state.attempts;
                r.worker_pid = state.worker_pid;
                r.seconds = state.seconds;
                reporter.file(r, input.size, total_files);
                continue;
            }
            tracing::warn!(
                "{}: input changed while it was being read; starting it again (attempt {} of {})",
                input.path.display(),
                state.restarts + 1,
                opts.retries + 1
            );
            state.planned = identity::plan(&input.path).ok();
            state.clipped = 0;
            round.push(file);
        }
        if round.is_empty() {
            break end;
        }
    };

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
    size.div_ceil(split_bytes()).clamp(1, 4096) as u32
}

/// [`SPLIT_BYTES`], unless `ETL_SPLIT_BYTES` sets another size: small files can then be split,
/// to exercise splitting without writing hundreds of megabytes.
fn split_bytes() -> u64 {
    static BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("ETL_SPLIT_BYTES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&b: &u64| b > 0)
            .unwrap_or(SPLIT_BYTES)
    })
}

/// `--dry-run`: say what would happen, write nothing.
fn dry_run(inputs: &[Input], settle: std::time::Duration) -> RunEnd {
    let mut counts = Counts::default();
    let mut out = std::io::stdout().lock();
    let now = std::time::SystemTime::now();
    for input in inputs {
        let mut plan = input.status.clone();
        if plan == Plan::Transform
            && fs::metadata(&input.path)
                .is_ok_and(|m| still_being_written(&InputIdentity::of(&m), now, settle))
        {
            plan = Plan::Skip("still being written".into());
        }
        let line = match &plan {
            Plan::Transform => {
                counts.ok += 1;
                format!(
                    "transform {} -> {}",
                    escape_name(&input.path),
                    escape_name(&input.output)
                )
            }
            Plan::Skip(why) => {
                counts.skipped += 1;
                format!("skip {}: {}", escape_name(&input.path), escape_text(why))
            }
            Plan::Fail(why) => {
                counts.failed += 1;
                format!("fail {}: {}", escape_name(&input.path), escape_text(why))
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
        let result = c
            .result
            .and_then(|r| r.outcome.map(|_| ()).map_err(|e| e.to_string()))
            .and_then(|()| {
                output::publish(&temp, path, output::mode_from_umask(), None).map_err(|e| {
                    format!("cannot rename the output into place: {}", describe_io(&e))
                })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn modified_at(t: SystemTime) -> InputIdentity {
        let since = t.duration_since(UNIX_EPOCH).unwrap();
        InputIdentity {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_sec: since.as_secs() as i64,
            mtime_nsec: since.subsec_nanos() as i64,
        }
    }

    #[test]
    fn files_modified_within_the_settle_time_are_still_being_written() {
        let now = SystemTime::now();
        let second = Duration::from_secs(1);
        let recent = modified_at(now - Duration::from_millis(300));
        let old = modified_at(now - Duration::from_secs(5));
        let ahead = modified_at(now + Duration::from_millis(300));
        assert!(still_being_written(&recent, now, second));
        assert!(still_being_written(&ahead, now, second));
        assert!(!still_being_written(&old, now, second));
        assert!(!still_being_written(&recent, now, Duration::ZERO));
    }
}
