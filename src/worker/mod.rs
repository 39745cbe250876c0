//! The worker: a child process started by the supervisor (`etl worker`, hidden). It connects to
//! the supervisor's one-shot IPC server, takes one message at a time (one job, or a batch of
//! small ones run in order), runs each job through [`crate::etl`], and sends back the results a
//! few at a time (see [`Results`]). A whole file's output that needs no flush it names itself,
//! in an output folder it keeps open ([`OutputFolders`]); otherwise the supervisor does. Before
//! and after each job it sets its [`Progress`]. It exits when its job channel closes, and the
//! kernel kills it if the supervisor dies (PR_SET_PDEATHSIG, set by the supervisor before exec).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcSender};

use crate::etl::transform::TransformError;
use crate::etl::{output, tone, transform};
use crate::protocol::{
    FromWorker, GenerateJob, JobFailure, JobResult, Progress, ToWorker, TransformJob, WirePath,
};

/// Runs the worker loop until the supervisor closes the channel. Returns an error only when the
/// handshake fails.
pub fn run(server: &str, parent_pid: u32) -> Result<(), String> {
    // The death signal set before exec does not cover a parent that died before it was set.
    if std::os::unix::process::parent_id() != parent_pid {
        return Err(format!("supervisor {parent_pid} is gone"));
    }
    // A file-size limit must fail the write with EFBIG, not kill the worker. SIGTERM is how the
    // supervisor stops a worker: make sure it kills, even if an ignored SIGTERM was inherited.
    // SAFETY: setting a signal's disposition to SIG_IGN or SIG_DFL has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }

    let to_supervisor = IpcSender::<FromWorker>::connect(server.to_string())
        .map_err(|e| format!("cannot connect to the supervisor: {e}"))?;
    let (jobs_tx, jobs) = ipc::channel::<ToWorker>().map_err(|e| e.to_string())?;
    let progress = Progress::new();
    // The supervisor gets its own mapping of the same memory (the message carries a descriptor).
    to_supervisor
        .send(FromWorker::Hello {
            pid: std::process::id(),
            jobs: jobs_tx,
            progress: progress.clone(),
        })
        .map_err(|e| format!("cannot greet the supervisor: {e}"))?;

    let mut results = Results {
        to_supervisor,
        unsent: Vec::new(),
        since: Instant::now(),
        stop_held: std::cell::Cell::new(false),
    };
    let mut folders = OutputFolders::default();
    while let Ok(message) = jobs.recv() {
        let mut jobs = Vec::new();
        flatten(message, &mut jobs);
        let last = jobs.len().saturating_sub(1);
        for (i, job) in jobs.into_iter().enumerate() {
            let id = job.id();
            progress.started(id);
            let start = Instant::now();
            let result = match job {
                One::Transform(job) => run_transform(&job, &mut folders, &|| results.hold_stop()),
                One::Generate(job) => run_generate(&job),
            };
            progress.ended(id);
            if results.add(result, start.elapsed(), i == last).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// One job of a message.
enum One {
    Transform(std::sync::Arc<TransformJob>),
    Generate(std::sync::Arc<GenerateJob>),
}

impl One {
    fn id(&self) -> u64 {
        match self {
            One::Transform(job) => job.id,
            One::Generate(job) => job.id,
        }
    }
}

/// The jobs of a message, in the order they are to run.
fn flatten(message: ToWorker, jobs: &mut Vec<One>) {
    match message {
        ToWorker::Transform(job) => jobs.push(One::Transform(job)),
        ToWorker::Generate(job) => jobs.push(One::Generate(job)),
        ToWorker::Batch(batch) => batch.into_iter().for_each(|m| flatten(m, jobs)),
    }
}

/// A result waits to be sent with others only if its job took less than this (a tiny file: the
/// next is likely tiny too)...
const HOLD_BELOW: Duration = Duration::from_millis(1);
/// ...at most this many of them...
const RESULTS_PER_MESSAGE: usize = 32;
/// ...and the first of them at most about this long (checked as each job ends).
const RESULTS_DELAY: Duration = Duration::from_millis(2);

/// Results not sent yet. Tiny files end every few microseconds, and a message each would cost
/// both processes more than the file: their results go a few at a time. Any other result goes at
/// once, with those held, and so do those of the last job of a message: the worker never waits
/// for its next message holding a result, and a result waits for at most one more job, a small
/// one (the supervisor puts only small jobs together in a message, sends a large one alone, and a
/// job of unknown length, such as a FIFO, only to a worker that holds nothing). The count is a
/// quarter of what a worker may hold, so results come back (and more work is sent) while it still
/// has plenty (16 and 64 measured 0.52 and 0.49 s against 0.50 s for 50,000 tiny files, `-j 2`).
struct Results {
    to_supervisor: IpcSender<FromWorker>,
    unsent: Vec<JobResult>,
    since: Instant,
    /// SIGTERM and SIGINT are blocked: an output was named whose result is not sent yet.
    stop_held: std::cell::Cell<bool>,
}

impl Results {
    /// Holds off SIGTERM and SIGINT (SIGTERM is how the supervisor stops a worker; either is how
    /// systemd, Slurm or a user may stop every process of the run) from the moment this worker
    /// names an output until the result that says so is sent, which is at most a few
    /// milliseconds later: a stopped worker never leaves a named output that the report does not
    /// show. A signal that came meanwhile acts right after the send. (SIGKILL cannot be held
    /// off: that file is then done again, see `Progress`.)
    fn hold_stop(&self) {
        if !self.stop_held.replace(true) {
            set_stop_signals_blocked(true);
        }
    }

    /// Adds the result of a job that took `took`, and sends what is held unless it may wait.
    /// Fails when the supervisor is gone.
    fn add(&mut self, result: JobResult, took: Duration, last: bool) -> Result<(), ()> {
        if self.unsent.is_empty() {
            self.since = Instant::now();
        }
        self.unsent.push(result);
        let may_wait = !last
            && took < HOLD_BELOW
            && self.unsent.len() < RESULTS_PER_MESSAGE
            && self.since.elapsed() < RESULTS_DELAY;
        if !may_wait {
            let results = std::mem::take(&mut self.unsent);
            self.to_supervisor
                .send(FromWorker::Done(results))
                .map_err(|_| ())?;
            if self.stop_held.replace(false) {
                set_stop_signals_blocked(false);
            }
        }
        Ok(())
    }
}

fn set_stop_signals_blocked(blocked: bool) {
    // SAFETY: `set` is plain memory that sigemptyset initialises; changing this thread's mask
    // (the worker's only thread) has no other precondition.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let how = if blocked {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// The output folders a worker names outputs in, kept open from job to job: with `--out-dir`
/// each is reached level by level from that root, which is worth doing once per folder, not
/// once per file (files are handed out largest first, so folders interleave). At most
/// [`OutputFolders::KEPT`] are kept. A folder kept open may have been removed (and made again)
/// since: a job that fails in one is run once more in the folder opened afresh.
#[derive(Default)]
struct OutputFolders {
    open: HashMap<PathBuf, output::OpenFolder>,
}

impl OutputFolders {
    const KEPT: usize = 64;

    /// The folder open, and whether it was kept from an earlier job.
    fn get(
        &mut self,
        folder: &Path,
        below: Option<&Path>,
    ) -> std::io::Result<(&output::OpenFolder, bool)> {
        let kept = self.open.contains_key(folder);
        if !kept {
            if self.open.len() >= Self::KEPT {
                self.open.clear();
            }
            let dir = output::OpenFolder::open(folder, below)?;
            self.open.insert(folder.to_path_buf(), dir);
        }
        Ok((&self.open[folder], kept))
    }
}

fn run_transform(job: &TransformJob, folders: &mut OutputFolders, naming: &dyn Fn()) -> JobResult {
    let start = Instant::now();
    let outcome = match &job.publish {
        None => transform_into(job, None, naming),
        Some(to) => {
            let output = to.output.to_path();
            let folder = output::folder(&output);
            let below = to.below.as_ref().map(WirePath::to_path);
            loop {
                let (dir, kept) = match folders.get(folder, below.as_deref()) {
                    Ok(got) => got,
                    Err(e) => break Err(TransformError::Publish(e)),
                };
                let outcome = transform_into(job, Some((dir, &output)), naming);
                if outcome.is_ok() {
                    break outcome;
                }
                folders.open.remove(folder);
                // A folder kept open that is gone (removed, perhaps made again since): once more
                // in the folder as it is now.
                let gone = matches!(&outcome,
                    Err(TransformError::Output(e) | TransformError::Publish(e))
                        if e.raw_os_error() == Some(libc::ENOENT));
                if !(kept && gone) {
                    break outcome;
                }
            }
        }
    };
    JobResult {
        id: job.id,
        seconds: start.elapsed().as_secs_f64(),
        outcome: outcome.map(Some).map_err(|e| {
            use crate::etl::wav::WavError;
            use TransformError as E;
            match &e {
                E::Changed => JobFailure::InputChanged,
                E::StillBeingWritten => JobFailure::StillBeingWritten,
                E::Output(io) | E::Publish(io) | E::Input(WavError::Io(io)) => {
                    JobFailure::io(io, e.to_string())
                }
                _ => JobFailure::BadInput(e.to_string()),
            }
        }),
    }
}

/// Runs a transform job; with `to`, names the output `to.1` in the open folder `to.0`.
fn transform_into(
    job: &TransformJob,
    to: Option<(&output::OpenFolder, &Path)>,
    naming: &dyn Fn(),
) -> Result<transform::Stats, TransformError> {
    let (input, temp) = (job.input.to_path(), job.temp_output.to_path());
    transform::transform(&transform::Request {
        input: &input,
        temp_output: &temp,
        part: job.part,
        parts: job.parts,
        level: job.level,
        file_seed: job.file_seed,
        fsync: job.fsync,
        expect: job.expect,
        wav: job.wav.as_ref(),
        output_format: job.output_format,
        publish: to.map(|(dir, output)| transform::Publish {
            dir,
            output,
            naming,
        }),
        settle: job.settle,
    })
}

fn run_generate(job: &GenerateJob) -> JobResult {
    let start = Instant::now();
    let temp = job.temp_output.to_path();
    let outcome = tone::write(Path::new(&temp), &job.tone)
        .map(|()| None)
        .map_err(|e| {
            let message = format!("writing the output: {}", crate::etl::describe_io(&e));
            JobFailure::io(&e, message)
        });
    JobResult {
        id: job.id,
        seconds: start.elapsed().as_secs_f64(),
        outcome,
    }
}
