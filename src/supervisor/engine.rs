//! The engine: what happens to each file, in one place. Drivers (`run`, `watch`, `gen-fake-data`)
//! hand it files as they find them, at any time; it plans each one, splits it into jobs for the
//! [`Executor`], follows it through its [`Lifecycle`], decides on typed errors what a failure
//! means (start the file again, or fail it), renames finished outputs into place (or, without
//! flushes, lets the worker of a whole file name it), and reports every file once. It never
//! knows which driver feeds it, and never touches samples.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::discover::{Input, Plan};
use super::executor::{Completion, Executor, IdMap, PoolEnd, Step, Task, Waker, WorkerLost};
use super::report::{FileRecord, Reporter, Status};
use super::{make_output_folder, temp_path};
use crate::etl::identity::{self, InputIdentity, Planned};
use crate::etl::levels::LevelSpec;
use crate::etl::manifest::{OutputHeader, Row};
use crate::etl::tone::Tone;
use crate::etl::transform::{NoiseLevel, Stats};
use crate::etl::{describe_io, noise, output};
use crate::protocol::{GenerateJob, JobFailure, PublishTo, ToWorker, TransformJob, WirePath};

/// Files at least this large are split into parts of about this size, so that one large file
/// keeps every worker busy.
pub const SPLIT_BYTES: u64 = 64 << 20;

/// A batch of finished files is committed (flushed once, then renamed) when it holds this many
/// files, this many input bytes, or when its first file has waited [`BATCH_DELAY`]: large enough
/// that one flush serves many files, small enough that lines appear promptly and a trickle of
/// files still commits.
const BATCH_FILES: usize = 256;
const BATCH_BYTES: u64 = 64 << 20;
const BATCH_DELAY: Duration = Duration::from_millis(20);

/// What the engine needs to know about the run, decided before anything runs.
pub struct EngineConfig {
    /// The level of each output: drawn per file and variant when it is a range.
    pub levels: LevelSpec,
    /// Report lines carry each output's `variant`, `sigma` and `snr_db` (with `--variants` above
    /// 1 or a range; otherwise the lines stay as they always were).
    pub per_output_levels: bool,
    /// Keep the manifest rows of what is made and of what is skipped as up to date (only with
    /// `--manifest`: a long `watch` or a million-file run would otherwise hold one per file).
    pub manifest_rows: bool,
    /// A service (`etl watch`): remember each input that failed, as it was then, so that it is
    /// taken again only once it changed ([`Engine::failed_unchanged`]), and which inputs are
    /// being worked on ([`Engine::is_active`]). A run hands each input once, and has no use for
    /// either.
    pub service: bool,
    pub seed: u64,
    pub fsync: bool,
    pub out_dir: Option<PathBuf>,
    /// Times a file that changed while it was being read is started again.
    pub retries: u32,
    /// Worker processes: one alone never gets split files.
    pub jobs: usize,
    /// Names this run's temporaries (its shard, or `gen`).
    pub tag: String,
    /// Files modified less than this long ago are still being written.
    pub settle: Duration,
    /// `--output-format`: `None` keeps each input's.
    pub output_format: Option<crate::etl::wav::Encoding>,
}

/// What a file's jobs make.
#[derive(Clone, Copy)]
enum Work {
    /// Noise added to an input.
    Transform,
    /// A test tone written from nothing.
    Generate(Tone),
}

/// Where one file is in its life.
#[derive(Debug)]
pub enum Lifecycle {
    /// Looked at, not yet sent to a worker.
    Planned,
    /// Its parts are with the executor; `changed` once a part found the input changed.
    Dispatched {
        parts: u32,
        done: u32,
        changed: bool,
    },
    /// Every part finished; the output waits in the batch to be flushed, checked and renamed
    /// into place.
    PartsDone,
    /// The output has its final name.
    Committed,
    Failed(FailReason),
    /// The run stopped before it finished.
    Abandoned,
}

/// Why a file failed: the engine's own error, over those of the layers below.
#[derive(Debug, thiserror::Error)]
pub enum FailReason {
    /// Decided without a worker (not a regular file, an output that is the input...).
    #[error("{0}")]
    Refused(String),
    #[error("cannot create the output folder: {}", describe_io(.0))]
    OutputFolder(std::io::Error),
    #[error("{0}")]
    Job(JobFailure),
    #[error("{0}")]
    WorkerLost(WorkerLost),
    #[error("cannot rename the output into place: {}", describe_io(.0))]
    Publish(std::io::Error),
    #[error("cannot flush the output to disk: {}", describe_io(.0))]
    Flush(std::io::Error),
    /// The input kept changing while it was being read, more times than `--retries`.
    #[error("{}", JobFailure::InputChanged)]
    KeptChanging,
}

/// What [`Engine::decide`] made of a file.
pub enum Decision {
    /// To be transformed: hand the id to [`Engine::dispatch`].
    Planned(u64),
    /// Modified within the settle time: the driver says whether to skip it or look again later.
    StillBeingWritten(Input),
    /// Skipped or failed without a worker, and reported.
    Reported,
}

struct FileEntry {
    input: Input,
    work: Work,
    planned: Option<Planned>,
    life: Lifecycle,
    /// Parts sent and not yet come back (a failed file waits for them before its temporary goes).
    in_flight: u32,
    seconds: f64,
    clipped: u64,
    /// Attempts in earlier starts (the file changed under them), and in this one.
    attempts_before: u32,
    attempts: u32,
    worker_pid: Option<u32>,
    /// Times the file was started again because it changed.
    restarts: u32,
    /// The figures of the last part to finish.
    stats: Option<Stats>,
}

/// Running totals, for status lines and metrics.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Input bytes of the files committed.
    pub bytes: u64,
    /// Worker seconds spent on the files committed.
    pub seconds: f64,
}

pub struct Engine<'e> {
    executor: &'e mut Executor,
    config: EngineConfig,
    pub reporter: Reporter,
    pub totals: Totals,
    /// Files the progress bar counts to.
    pub total_files: u64,
    files: IdMap<FileEntry>,
    /// Each job sent: its file and part.
    jobs: IdMap<u64>,
    /// Inputs being worked on, for a service: it never hands the same one twice at once.
    active: HashSet<PathBuf>,
    next_file: u64,
    next_job: u64,
    made_dirs: HashSet<PathBuf>,
    refused_dirs: HashSet<PathBuf>,
    /// Inputs that failed, as they were then: a service takes one again only once it changed.
    failed: HashMap<PathBuf, Option<InputIdentity>>,
    /// The manifest rows of the outputs this run made.
    pub made: Vec<Row>,
    /// Outputs skipped as newer than their input: their manifest rows are read from disk.
    pub up_to_date: Vec<Input>,
    /// Files a worker found still being written, for the driver.
    unsettled: Vec<Input>,
    /// Files whose parts are all done, waiting to be committed together.
    batch: Vec<u64>,
    batch_bytes: u64,
    /// When the batch's first file arrived.
    batch_since: Option<Instant>,
    /// The batch whose flush runs on the flusher thread, while the next one gathers.
    flushing: Option<ReadyBatch>,
    flusher: Option<Flusher>,
}

impl<'e> Engine<'e> {
    pub fn new(executor: &'e mut Executor, config: EngineConfig, reporter: Reporter) -> Self {
        Engine {
            executor,
            config,
            reporter,
            totals: Totals::default(),
            total_files: 0,
            files: IdMap::default(),
            jobs: IdMap::default(),
            active: HashSet::new(),
            next_file: 0,
            next_job: 0,
            made_dirs: HashSet::new(),
            refused_dirs: HashSet::new(),
            failed: HashMap::new(),
            made: Vec::new(),
            up_to_date: Vec::new(),
            unsettled: Vec::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            batch_since: None,
            flushing: None,
            flusher: None,
        }
    }

    pub fn executor(&mut self) -> &mut Executor {
        self.executor
    }

    /// Whether this input is being worked on (kept by a service only).
    pub fn is_active(&self, path: &Path) -> bool {
        debug_assert!(self.config.service);
        self.active.contains(path)
    }

    /// Whether this input failed and has not changed since.
    pub fn failed_unchanged(&self, path: &Path) -> bool {
        self.failed
            .get(path)
            .is_some_and(|then| *then == identity_now(path))
    }

    /// Files planned or in flight.
    pub fn in_progress(&self) -> usize {
        self.files.len()
    }

    /// Output folders that could not be made (never swept: they may be planted links).
    pub fn refused_dirs(&self) -> &HashSet<PathBuf> {
        &self.refused_dirs
    }

    /// Looks at one input found by a driver: skips or fails it up front, or plans it.
    pub fn decide(&mut self, input: Input) -> Decision {
        let plan = input.status.clone();
        let mut planned = None;
        if plan == Plan::Transform && !self.worker_looks(&input) {
            planned = self.look(&input);
            if let Some(p) = &planned
                && p.identity
                    .still_being_written(std::time::SystemTime::now(), self.config.settle)
            {
                return Decision::StillBeingWritten(input);
            }
        }
        let mut refusal = match plan {
            Plan::Fail(why) => Some(FailReason::Refused(why)),
            Plan::Skip(why) => {
                self.report_skip(&input, why);
                if self.config.manifest_rows {
                    self.up_to_date.push(input);
                }
                return Decision::Reported;
            }
            Plan::Transform => None,
        };
        if refusal.is_none()
            && let Err(e) = self.make_folder(output::folder(&input.output))
        {
            refusal = Some(FailReason::OutputFolder(e));
        }
        if let Some(reason) = refusal {
            if self.config.service {
                self.failed
                    .insert(input.path.clone(), identity_now(&input.path));
            }
            let record = FileRecord::new(
                &input.path,
                &input.output,
                Status::Failed,
                Some(reason.to_string()),
            );
            self.reporter.file(record, input.size, self.total_files);
            return Decision::Reported;
        }
        Decision::Planned(self.add(input, Work::Transform, planned))
    }

    /// Makes the folder outputs go into, once; one that cannot be made (a link planted as it,
    /// say) is remembered as refused, and never swept.
    pub fn make_folder(&mut self, dir: &Path) -> std::io::Result<()> {
        if self.made_dirs.contains(dir) {
            return Ok(());
        }
        match make_output_folder(dir, self.config.out_dir.as_deref()) {
            Ok(()) => {
                self.made_dirs.insert(dir.to_path_buf());
                Ok(())
            }
            Err(e) => {
                self.refused_dirs.insert(dir.to_path_buf());
                Err(e)
            }
        }
    }

    /// Whether the supervisor leaves every look at an input to its worker: when the file will be
    /// whole (by the size it was found with) and its worker names the output itself, so that the
    /// last look is the worker's too. The worker then checks the settle time on the descriptor it
    /// opened, and keeps that file's identity through the read ([`Engine::take_unsettled`]
    /// gives back a file it found still being written).
    fn worker_looks(&self, input: &Input) -> bool {
        let parts = split_count(input.size, self.config.jobs, self.level_of(input));
        named_by_worker(self.config.fsync, Work::Transform, parts)
    }

    /// Files a worker found still being written (see [`Engine::worker_looks`]), forgotten by the
    /// engine: the driver skips them, or looks at them again later, as after
    /// [`Decision::StillBeingWritten`].
    pub fn take_unsettled(&mut self) -> Vec<Input> {
        std::mem::take(&mut self.unsettled)
    }

    /// What a file is planned from. One that will not be split needs only its identity (one
    /// `statx`; its worker reads the header, and checks the identity before its first read);
    /// one that will be is planned in full, its header read once for all its parts. `None` when
    /// it is not a regular file or cannot be looked at: its worker finds out why and reports it.
    fn look(&self, input: &Input) -> Option<Planned> {
        let meta = fs::metadata(&input.path).ok()?;
        if !meta.is_file() {
            return None;
        }
        if split_count(meta.len(), self.config.jobs, self.level_of(input)) > 1 {
            return identity::plan(&input.path).ok();
        }
        Some(Planned {
            identity: InputIdentity::of(&meta),
            wav: None,
        })
    }

    /// Reports a file skipped without a worker.
    pub fn report_skip(&mut self, input: &Input, why: String) {
        let record = FileRecord::new(&input.path, &input.output, Status::Skipped, Some(why));
        self.reporter.file(record, input.size, self.total_files);
    }

    /// Plans a test tone to write at `path`.
    pub fn plan_tone(&mut self, path: &Path, tone: Tone) -> u64 {
        let input = Input {
            path: path.to_path_buf(),
            relative: path.file_name().map(PathBuf::from).unwrap_or_default(),
            output: path.to_path_buf(),
            size: 0,
            status: Plan::Transform,
            variant: 0,
        };
        self.add(input, Work::Generate(tone), None)
    }

    fn add(&mut self, input: Input, work: Work, planned: Option<Planned>) -> u64 {
        let id = self.next_file;
        self.next_file += 1;
        if self.config.service {
            self.active.insert(input.path.clone());
        }
        self.files.insert(
            id,
            FileEntry {
                input,
                work,
                planned,
                life: Lifecycle::Planned,
                in_flight: 0,
                seconds: 0.0,
                clipped: 0,
                attempts_before: 0,
                attempts: 0,
                worker_pid: None,
                restarts: 0,
                stats: None,
            },
        );
        id
    }

    /// Sends planned files to the executor, split into parts, largest parts first.
    pub fn dispatch(&mut self, ids: &[u64]) {
        // (file, part, parts, input bytes of the part, how much work it is for the executor)
        let mut parts: Vec<(u64, u32, u32, u64, u64)> = Vec::new();
        for &id in ids {
            let Some(level) = self.files.get(&id).map(|f| self.level_of(&f.input)) else {
                continue;
            };
            let Some(f) = self.files.get_mut(&id) else {
                continue;
            };
            let size = f.planned.as_ref().map_or(f.input.size, |p| p.identity.size);
            let n = match f.work {
                Work::Transform => split_count(size, self.config.jobs, level),
                Work::Generate(_) => 1,
            };
            f.life = Lifecycle::Dispatched {
                parts: n,
                done: 0,
                changed: false,
            };
            f.in_flight += n;
            let work = match f.work {
                Work::Transform => size / n as u64,
                // A tone reads nothing: its work is the bytes it writes.
                Work::Generate(tone) => tone.frames() * tone.layout.frame_bytes(),
            };
            parts.extend((0..n).map(|part| (id, part, n, size / n as u64, work)));
        }
        parts.sort_by_key(|p| std::cmp::Reverse(p.3));
        for (file, part, n, _, size) in parts {
            let job = self.next_job;
            self.next_job += 1;
            self.jobs.insert(job, file);
            let message = self.message(job, file, part, n);
            self.executor.submit(Task {
                id: job,
                message,
                size,
            });
        }
    }

    /// The seed of the input's file, before its variant.
    fn file_seed(&self, input: &Input) -> u64 {
        noise::file_seed(
            self.config.seed,
            input.relative.as_os_str().as_encoded_bytes(),
        )
    }

    /// The noise level of one output: drawn from its file's seed and its variant.
    fn level_of(&self, input: &Input) -> NoiseLevel {
        self.config
            .levels
            .level_for(self.file_seed(input), input.variant)
    }

    fn message(&self, id: u64, file: u64, part: u32, parts: u32) -> ToWorker {
        let f = &self.files[&file];
        let temp_output = WirePath::from(temp_path(&f.input.output, &self.config.tag).as_path());
        let publish = named_by_worker(self.config.fsync, f.work, parts).then(|| PublishTo {
            output: WirePath::from(f.input.output.as_path()),
            below: self.config.out_dir.as_deref().map(WirePath::from),
        });
        let file_seed = self.file_seed(&f.input);
        match f.work {
            Work::Generate(tone) => ToWorker::Generate(Arc::new(GenerateJob {
                id,
                temp_output,
                tone,
            })),
            Work::Transform => ToWorker::Transform(Arc::new(TransformJob {
                id,
                input: WirePath::from(f.input.path.as_path()),
                temp_output,
                part,
                parts,
                level: self.config.levels.level_for(file_seed, f.input.variant),
                // Variant 0's seed is the file seed: one variant gives the bytes it always did.
                file_seed: noise::variant_seed(file_seed, f.input.variant),
                fsync: self.config.fsync,
                expect: f.planned.as_ref().map(|p| p.identity),
                wav: f.planned.as_ref().and_then(|p| p.wav.clone()),
                output_format: self.config.output_format,
                publish,
                settle: f.planned.is_none().then_some(self.config.settle),
            })),
        }
    }

    /// The event loop: runs the executor, handling each job as it ends, and calls `turn` between
    /// events (new files from the driver); `turn` says when it wants to be called next at the
    /// latest. Returns how the executor ended.
    pub fn run(&mut self, mut turn: impl FnMut(&mut Self) -> Option<Instant>) -> PoolEnd {
        loop {
            self.land_flush(false);
            let mut until = turn(self);
            // While a flush runs, the batch gathers: its end wakes the loop.
            if let Some(since) = self.batch_since
                && self.flushing.is_none()
            {
                let due = since + BATCH_DELAY;
                if Instant::now() >= due {
                    self.commit_batch();
                    continue;
                }
                until = Some(until.map_or(due, |u| u.min(due)));
            }
            // Lines of files reported since the last wait go out before this one.
            self.reporter.flush_lines();
            match self.executor.next(until) {
                Step::Completed(c) => self.complete(c),
                Step::Idle => {}
                Step::Ended(end) => {
                    // Files already finished are committed whatever ended the run.
                    self.commit_all();
                    return end;
                }
            }
        }
    }

    fn complete(&mut self, c: Completion) {
        let Some(file) = self.jobs.remove(&c.id) else {
            return;
        };
        let Some(f) = self.files.get_mut(&file) else {
            return;
        };
        f.in_flight -= 1;
        f.attempts = f.attempts.max(c.attempts);
        f.worker_pid = Some(c.worker_pid);
        if matches!(f.life, Lifecycle::Failed(_)) {
            if f.in_flight == 0 {
                self.forget(file);
            }
            return;
        }
        let stats = match c.result {
            Err(lost) => return self.fail(file, FailReason::WorkerLost(lost)),
            Ok(result) => {
                f.seconds += result.seconds;
                match result.outcome {
                    Err(JobFailure::InputChanged) => {
                        if let Lifecycle::Dispatched { changed, .. } = &mut f.life {
                            *changed = true;
                        }
                        None
                    }
                    Err(JobFailure::StillBeingWritten) => return self.unsettled(file),
                    Err(failure) => return self.fail(file, FailReason::Job(failure)),
                    Ok(stats) => stats,
                }
            }
        };
        if let Some(stats) = &stats {
            f.clipped += stats.clipped;
        }
        f.stats = stats;
        let Lifecycle::Dispatched {
            parts,
            done,
            changed,
        } = &mut f.life
        else {
            return;
        };
        *done += 1;
        if *done < *parts {
            return;
        }
        if *changed || (matches!(f.work, Work::Transform) && f.stats.is_none()) {
            let _ = fs::remove_file(temp_path(&f.input.output, &self.config.tag));
            return self.restart(file);
        }
        // Its worker named it: nothing is flushed, so there is nothing to wait for.
        if named_by_worker(self.config.fsync, f.work, *parts) {
            let stats = f.stats.take().expect("a transform's figures");
            return self.committed(file, stats);
        }
        f.life = Lifecycle::PartsDone;
        self.batch_bytes += f.input.size;
        self.batch.push(file);
        self.batch_since.get_or_insert_with(Instant::now);
        if self.batch_full() {
            self.commit_batch();
        }
    }

    /// The batch holds as many files or bytes as one flush should cover.
    fn batch_full(&self) -> bool {
        self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES
    }

    /// Commits the finished files of the batch (group commit): each output folder is opened
    /// once, then ONE flush covers all their data (a `syncfs` per filesystem, on a folder's
    /// descriptor, run by the flusher thread while the workers go on and the next batch gathers),
    /// then each output's input is checked once more, the output renamed into place and reported
    /// ([`Engine::publish`]), then each output folder is flushed. No output gets its final name
    /// before its data is on disk, and none without its report line right after. One flush runs
    /// at a time: while it does, the batch waits and grows.
    fn commit_batch(&mut self) {
        if self.flushing.is_some() {
            return;
        }
        let files = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.batch_since = None;
        if files.is_empty() {
            return;
        }
        // Each folder once for the whole batch: its descriptor serves the checks, the renames
        // and the flushes.
        let mut batch = ReadyBatch {
            placed: Vec::with_capacity(files.len()),
            folders: Vec::new(),
        };
        let mut index: HashMap<(PathBuf, bool), usize> = HashMap::new();
        for file in files {
            let f = &self.files[&file];
            let below = match f.work {
                Work::Transform => self.config.out_dir.as_deref(),
                Work::Generate(_) => None,
            };
            let path = output::folder(&f.input.output).to_path_buf();
            let at = *index
                .entry((path.clone(), below.is_some()))
                .or_insert_with(|| {
                    let opened = output::open_folder(&path, below)
                        .and_then(|dir| Ok((output::device_of(&dir)?, dir)));
                    batch.folders.push(BatchFolder {
                        path,
                        opened,
                        synced: false,
                        renamed: false,
                    });
                    batch.folders.len() - 1
                });
            match &batch.folders[at].opened {
                Ok(_) => batch.placed.push((file, at)),
                Err(e) => self.fail(file, FailReason::Publish(copy_error(e))),
            }
        }
        if !self.config.fsync {
            return self.publish(batch);
        }
        // One descriptor per filesystem goes to the flusher.
        let mut filesystems: Vec<(OwnedFd, u64)> = Vec::new();
        for (dev, dir) in batch.folders.iter().filter_map(|b| b.opened.as_ref().ok()) {
            if filesystems.iter().any(|(_, d)| d == dev) {
                continue;
            }
            // A folder that cannot be shared with the thread is flushed file by file.
            if let Ok(dir) = dir.try_clone() {
                filesystems.push((dir, *dev));
            }
        }
        let waker = self.executor.waker();
        let flusher = self.flusher.get_or_insert_with(|| Flusher::start(waker));
        let sent = flusher
            .requests
            .send(FlushRequest::FileSystems(filesystems))
            .is_ok();
        self.flushing = Some(batch);
        if !sent {
            // The thread is gone (it never panics): every file is flushed on its own.
            self.flushed(Vec::new());
        }
    }

    /// Renames the batch whose flush has ended into place, when it has; with `wait`, waits for
    /// it. Then starts the next batch's flush if that batch is due.
    fn land_flush(&mut self, wait: bool) {
        let Some(flusher) = &self.flusher else {
            return;
        };
        if self.flushing.is_none() {
            return;
        }
        let synced = if wait {
            flusher.results.recv().ok()
        } else {
            match flusher.results.try_recv() {
                Ok(synced) => Some(synced),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => None,
            }
        };
        self.flushed(synced.unwrap_or_default());
        let waited = self
            .batch_since
            .is_some_and(|since| since.elapsed() >= BATCH_DELAY);
        if self.batch_full() || waited {
            self.commit_batch();
        }
    }

    /// Commits every finished file, waiting for the flushes (the folders' too): the run is
    /// ending.
    fn commit_all(&mut self) {
        loop {
            self.reporter.flush_lines();
            self.land_flush(true);
            if self.batch.is_empty() && self.flushing.is_none() {
                break;
            }
            self.commit_batch();
        }
        if let Some(flusher) = self.flusher.take() {
            flusher.finish();
        }
    }

    /// The flush of the batch's filesystems ended: `synced` lists the devices flushed. Outputs
    /// on the others are flushed one by one (failing those that cannot be), then all are
    /// published.
    fn flushed(&mut self, synced: Vec<u64>) {
        let Some(mut batch) = self.flushing.take() else {
            return;
        };
        for folder in &mut batch.folders {
            folder.synced = folder
                .opened
                .as_ref()
                .is_ok_and(|(dev, _)| synced.contains(dev));
        }
        batch.placed = self.flush_unsynced(std::mem::take(&mut batch.placed), &batch.folders);
        self.publish(batch);
    }

    /// Checks each input of a flushed batch a last time, renames its output into place and
    /// reports it, then flushes each folder that got a name.
    fn publish(&mut self, batch: ReadyBatch) {
        let ReadyBatch {
            placed,
            mut folders,
        } = batch;
        for (file, at) in placed {
            let Ok((_, dir)) = &folders[at].opened else {
                continue;
            };
            let Some(mode) = self.still_unchanged(file) else {
                continue;
            };
            let published = match self.files.get(&file).map(|f| f.work) {
                Some(Work::Transform) => self.commit_transform(file, dir, mode),
                Some(Work::Generate(_)) => self.commit_tone(file, dir, mode),
                None => false,
            };
            folders[at].renamed |= published;
        }
        // The names' durability: one flush per folder, after all its renames, on the flusher
        // thread (in order: before the next batch's flush), waited for when the run ends.
        if !self.config.fsync {
            return;
        }
        let renamed: Vec<NamedFolder> = folders
            .into_iter()
            .filter_map(|folder| match folder {
                BatchFolder {
                    path,
                    opened: Ok((dev, dir)),
                    renamed: true,
                    ..
                } => Some(NamedFolder { dir, dev, path }),
                _ => None,
            })
            .collect();
        if renamed.is_empty() {
            return;
        }
        match &self.flusher {
            Some(flusher) => {
                if let Err(mpsc::SendError(FlushRequest::Folders(renamed))) =
                    flusher.requests.send(FlushRequest::Folders(renamed))
                {
                    sync_folders(renamed);
                }
            }
            None => sync_folders(renamed),
        }
    }

    /// The last look before the output gets its final name: the path must still name the file
    /// the workers read, else the file is started again. Gives the mode the output is to have,
    /// from that same look (the input's permission bits, masked by the umask).
    fn still_unchanged(&mut self, file: u64) -> Option<u32> {
        let f = self.files.get_mut(&file).expect("a file in the batch");
        if let Work::Generate(_) = f.work {
            return Some(output::mode_from_umask());
        }
        let now = fs::metadata(&f.input.path);
        let unchanged = match &f.planned {
            Some(p) => now
                .as_ref()
                .is_ok_and(|m| InputIdentity::of(m) == p.identity),
            None => true,
        };
        if !unchanged {
            let _ = fs::remove_file(temp_path(&f.input.output, &self.config.tag));
            self.restart(file);
            return None;
        }
        Some(output::mode_from_metadata(now.ok().as_ref()))
    }

    /// Flushes, one by one, the outputs of the batch whose filesystem's flush failed (or never
    /// ran). Returns the outputs flushed, failing the others.
    fn flush_unsynced(
        &mut self,
        placed: Vec<(u64, usize)>,
        folders: &[BatchFolder],
    ) -> Vec<(u64, usize)> {
        let mut flushed = Vec::with_capacity(placed.len());
        for (file, at) in placed {
            if folders[at].synced {
                flushed.push((file, at));
                continue;
            }
            let Ok((_, dir)) = &folders[at].opened else {
                continue;
            };
            let temp = temp_path(&self.files[&file].input.output, &self.config.tag);
            match output::flush_at(dir, &temp) {
                Ok(()) => flushed.push((file, at)),
                Err(e) => self.fail(file, FailReason::Flush(e)),
            }
        }
        flushed
    }

    /// Renames a flushed output into place and reports it; whether it got its name.
    fn commit_transform(&mut self, file: u64, dir: &OwnedFd, mode: u32) -> bool {
        let f = self.files.get_mut(&file).expect("a file in the batch");
        let temp = temp_path(&f.input.output, &self.config.tag);
        let Some(stats) = f.stats.take() else {
            let _ = fs::remove_file(&temp);
            self.restart(file);
            return false;
        };
        if let Err(e) = output::publish_in(dir, &temp, &f.input.output, mode) {
            self.fail(file, FailReason::Publish(e));
            return false;
        }
        self.committed(file, stats);
        true
    }

    /// Reports a file whose output has its final name, and forgets it.
    fn committed(&mut self, file: u64, stats: Stats) {
        let f = self.files.get_mut(&file).expect("a file in flight");
        if stats.size_recovered {
            tracing::warn!(
                "{}: the data size in its header was a placeholder; used the {} frames the file holds",
                f.input.path.display(),
                stats.frames
            );
        }
        f.life = Lifecycle::Committed;
        let mut r = FileRecord::new(&f.input.path, &f.input.output, Status::Ok, None);
        r.seconds = f.seconds;
        r.frames = Some(stats.frames);
        r.channels = Some(stats.layout.channels);
        r.sample_rate = Some(stats.layout.sample_rate);
        r.output_format = Some(stats.output_encoding.name());
        r.output_container = Some(stats.output_container.name());
        r.clipped = Some(f.clipped);
        r.attempts = f.attempts_before + f.attempts;
        r.worker_pid = f.worker_pid;
        let levels = (self.config.per_output_levels || self.config.manifest_rows)
            .then(|| Row::levels(self.level_of(&self.files[&file].input), Some(stats.sigma)));
        let f = self.files.get_mut(&file).expect("a file in flight");
        let (sigma, snr_db) = levels.unwrap_or_default();
        if self.config.per_output_levels {
            r.variant = Some(f.input.variant);
            r.sigma = sigma;
            r.snr_db = snr_db;
        }
        if self.config.manifest_rows {
            self.made.push(Row {
                output: f.input.output.clone(),
                source: f.input.path.clone(),
                variant: f.input.variant,
                sigma,
                snr_db,
                seed: self.config.seed,
                header: OutputHeader {
                    frames: stats.frames,
                    sample_rate: stats.layout.sample_rate,
                    channels: stats.layout.channels,
                },
            });
        }
        if !self.failed.is_empty() {
            self.failed.remove(&f.input.path);
        }
        self.totals.bytes += f.input.size;
        self.totals.seconds += f.seconds;
        let size = f.input.size;
        self.reporter.file(r, size, self.total_files);
        self.forget(file);
    }

    fn commit_tone(&mut self, file: u64, dir: &OwnedFd, mode: u32) -> bool {
        let f = &self.files[&file];
        let path = f.input.output.clone();
        let temp = temp_path(&path, &self.config.tag);
        if let Err(e) = output::publish_in(dir, &temp, &path, mode) {
            self.fail(file, FailReason::Publish(e));
            return false;
        }
        tracing::info!("created {}", path.display());
        let record = FileRecord::new(&path, &path, Status::Ok, None);
        self.reporter.file(record, 0, self.total_files);
        self.forget(file);
        true
    }

    /// A file a worker found still being written goes back to the driver, unreported.
    fn unsettled(&mut self, file: u64) {
        if let Some(f) = self.files.remove(&file) {
            self.active.remove(&f.input.path);
            self.unsettled.push(f.input);
        }
    }

    /// A file that changed while it was read is done again from the start, with a fresh plan,
    /// once all its parts have ended (so that none still writes its temporary).
    fn restart(&mut self, file: u64) {
        let retries = self.config.retries;
        let f = self.files.get_mut(&file).expect("a file in flight");
        f.restarts += 1;
        if f.restarts > retries {
            return self.fail(file, FailReason::KeptChanging);
        }
        tracing::warn!(
            "{}: input changed while it was being read; starting it again (attempt {} of {})",
            f.input.path.display(),
            f.restarts + 1,
            retries + 1
        );
        f.planned = identity::plan(&f.input.path).ok();
        f.clipped = 0;
        f.attempts_before += f.attempts;
        f.attempts = 0;
        f.life = Lifecycle::Planned;
        self.dispatch(&[file]);
    }

    fn fail(&mut self, file: u64, reason: FailReason) {
        let f = self.files.get_mut(&file).expect("a file in flight");
        let _ = fs::remove_file(temp_path(&f.input.output, &self.config.tag));
        let mut r = FileRecord::new(
            &f.input.path,
            &f.input.output,
            Status::Failed,
            Some(reason.to_string()),
        );
        if let Work::Transform = f.work {
            r.attempts = f.attempts_before + f.attempts;
            r.worker_pid = f.worker_pid;
            r.seconds = f.seconds;
        }
        let size = f.input.size;
        f.life = Lifecycle::Failed(reason);
        if matches!(f.work, Work::Transform) && self.config.service {
            self.failed
                .insert(f.input.path.clone(), identity_now(&f.input.path));
        }
        let gone = f.in_flight == 0;
        self.reporter.file(r, size, self.total_files);
        if gone {
            self.forget(file);
        }
    }

    /// Drops a file the engine is done with; a failed one's temporary goes with it.
    fn forget(&mut self, file: u64) {
        if let Some(f) = self.files.remove(&file) {
            if !matches!(f.life, Lifecycle::Committed) {
                let _ = fs::remove_file(temp_path(&f.input.output, &self.config.tag));
            }
            if self.config.service {
                self.active.remove(&f.input.path);
            }
        }
    }

    /// Once the executor has ended: whatever did not finish leaves nothing behind, and what
    /// had not failed is counted as not run.
    pub fn abandon_unfinished(&mut self) {
        let ids: Vec<u64> = self.files.keys().copied().collect();
        for id in ids {
            let f = self.files.get_mut(&id).expect("a listed file");
            if !matches!(f.life, Lifecycle::Failed(_)) {
                f.life = Lifecycle::Abandoned;
                self.reporter.counts.not_run += 1;
            }
            self.forget(id);
        }
        self.jobs.clear();
    }
}

/// A batch of finished files on its way to their final names: what [`Engine::commit_batch`]
/// prepared, kept while the flusher thread flushes their data.
struct ReadyBatch {
    /// Each file, with the index of its folder in `folders`.
    placed: Vec<(u64, usize)>,
    folders: Vec<BatchFolder>,
}

/// The thread that flushes batches (`syncfs`, one per filesystem) and then their folders, so
/// that the main thread keeps the workers fed meanwhile: a flush of tens of megabytes takes
/// longer than the jobs a worker holds. Requests are served in order.
///
/// A folder's flush waits up to [`BATCH_DELAY`] for the next batch: a `syncfs` of its file
/// system that starts after the renames covers their names too (it writes every dirty block of
/// the file system, the folder's among them, then flushes the disk's cache), so a run of
/// batches costs one flush of the disk each instead of two.
struct Flusher {
    requests: mpsc::Sender<FlushRequest>,
    /// For each [`FlushRequest::FileSystems`], the devices flushed.
    results: mpsc::Receiver<Vec<u64>>,
    thread: std::thread::JoinHandle<()>,
}

enum FlushRequest {
    /// A descriptor per file system to flush; answered.
    FileSystems(Vec<(OwnedFd, u64)>),
    /// Folders to flush after renames into them; a failure is logged.
    Folders(Vec<NamedFolder>),
}

/// A folder outputs were renamed into, open, with its device.
struct NamedFolder {
    dir: OwnedFd,
    dev: u64,
    path: PathBuf,
}

impl Flusher {
    fn start(waker: Waker) -> Self {
        let (requests, incoming) = mpsc::channel::<FlushRequest>();
        let (answer, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("flusher".into())
            .spawn(move || {
                // Folders whose names wait for a flush, and since when: never longer than the
                // batch delay, whatever else comes meanwhile (another file system's batches).
                let mut pending: Vec<NamedFolder> = Vec::new();
                let mut since = Instant::now();
                loop {
                    if !pending.is_empty() && since.elapsed() >= BATCH_DELAY {
                        sync_folders(std::mem::take(&mut pending));
                    }
                    let request = if pending.is_empty() {
                        incoming
                            .recv()
                            .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                    } else {
                        incoming.recv_timeout(BATCH_DELAY.saturating_sub(since.elapsed()))
                    };
                    match request {
                        Ok(FlushRequest::FileSystems(filesystems)) => {
                            let synced: Vec<u64> = filesystems
                                .iter()
                                .filter(|(dir, _)| output::sync_filesystem(dir).is_ok())
                                .map(|(_, dev)| *dev)
                                .collect();
                            pending.retain(|f| !synced.contains(&f.dev));
                            if answer.send(synced).is_err() {
                                return sync_folders(pending);
                            }
                            waker.wake();
                        }
                        Ok(FlushRequest::Folders(folders)) => {
                            if pending.is_empty() {
                                since = Instant::now();
                            }
                            pending.extend(folders);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            sync_folders(std::mem::take(&mut pending))
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            return sync_folders(pending);
                        }
                    }
                }
            })
            .expect("cannot start the flusher thread");
        Flusher {
            requests,
            results,
            thread,
        }
    }

    /// Waits for what was asked of the thread, and ends it.
    fn finish(self) {
        drop(self.requests);
        let _ = self.thread.join();
    }
}

/// Flushes folders after renames into them (the names' durability); a failure is logged, as the
/// outputs are complete and named.
fn sync_folders(folders: Vec<NamedFolder>) {
    for NamedFolder { dir, path, .. } in folders {
        // SAFETY: a plain system call on an open descriptor.
        if unsafe { libc::fsync(dir.as_raw_fd()) } != 0 {
            tracing::warn!(
                "{}: cannot flush the folder: {}",
                path.display(),
                describe_io(&std::io::Error::last_os_error())
            );
        }
    }
}

/// An output folder of a batch being committed.
struct BatchFolder {
    path: PathBuf,
    /// Its device and descriptor, or why it could not be opened.
    opened: std::io::Result<(u64, OwnedFd)>,
    /// The flush of its filesystem succeeded.
    synced: bool,
    /// An output got its name in it.
    renamed: bool,
}

/// The same error again, for each file it concerns.
fn copy_error(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// Whether the worker of a file gives its output the final name itself: when the file is a whole
/// transform and nothing is to be flushed before the name (the output is then named right after
/// the worker's last look at the input, and the supervisor only reports it).
fn named_by_worker(fsync: bool, work: Work, parts: u32) -> bool {
    !fsync && parts == 1 && matches!(work, Work::Transform)
}

fn identity_now(path: &Path) -> Option<InputIdentity> {
    fs::metadata(path).ok().map(|m| InputIdentity::of(&m))
}

/// How many parts a file is split into.
fn split_count(size: u64, jobs: usize, level: NoiseLevel) -> u32 {
    // With --snr-db every part would first read the whole file for its RMS.
    if jobs < 2 || matches!(level, NoiseLevel::SnrDb(_)) {
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
