//! The worker: a child process started by the supervisor (`etl worker`, hidden). It connects to
//! the supervisor's one-shot IPC server, takes one message at a time (one job, or a batch of
//! small ones run in order), runs each job through [`crate::etl`], and sends back the results a
//! few at a time (see [`Results`]). Before each job it sets its [`Progress`]. It exits when its job
//! channel closes, and the kernel kills it if the supervisor dies (PR_SET_PDEATHSIG, set by the
//! supervisor before exec).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcSender};

use crate::etl::{describe_io, output, tone, transform};
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
    let mut folder = OutputFolder::default();
    while let Ok(message) = jobs.recv() {
        let mut jobs = Vec::new();
        flatten(message, &mut jobs);
        let last = jobs.len().saturating_sub(1);
        for (i, job) in jobs.into_iter().enumerate() {
            let id = job.id();
            progress.started(id);
            let start = Instant::now();
            let result = match job {
                One::Transform(job) => run_transform(&job, &mut folder, &|| results.hold_stop()),
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

/// The output folder a worker names outputs in, kept open from job to job (files of a folder
/// come together). Dropped after any failure, so that a folder removed or replaced since is
/// opened afresh.
#[derive(Default)]
struct OutputFolder {
    open: Option<(PathBuf, Option<PathBuf>, OwnedFd)>,
}

impl OutputFolder {
    fn get(&mut self, folder: &Path, below: Option<PathBuf>) -> std::io::Result<&OwnedFd> {
        let same = matches!(&self.open, Some((f, b, _)) if f == folder && *b == below);
        if !same {
            self.open = None;
            let dir = output::open_folder(folder, below.as_deref())?;
            self.open = Some((folder.to_path_buf(), below, dir));
        }
        Ok(&self.open.as_ref().expect("just opened").2)
    }
}

fn run_transform(job: &TransformJob, folder: &mut OutputFolder, naming: &dyn Fn()) -> JobResult {
    use crate::etl::wav::WavError;
    use transform::TransformError as E;
    let start = Instant::now();
    let (input, temp) = (job.input.to_path(), job.temp_output.to_path());
    let to = job.publish.as_ref().map(|p| p.output.to_path());
    let dir = match (&to, &job.publish) {
        (Some(to), Some(p)) => {
            match folder.get(output::folder(to), p.below.as_ref().map(WirePath::to_path)) {
                Ok(dir) => Some(dir),
                Err(e) => {
                    let why = format!("cannot rename the output into place: {}", describe_io(&e));
                    return JobResult {
                        id: job.id,
                        seconds: start.elapsed().as_secs_f64(),
                        outcome: Err(JobFailure::io(&e, why)),
                    };
                }
            }
        }
        _ => None,
    };
    let outcome = transform::transform(&transform::Request {
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
        publish: dir
            .zip(to.as_deref())
            .map(|(dir, output)| transform::Publish {
                dir,
                output,
                naming,
            }),
        settle: job.settle,
    });
    let outcome = outcome.map(Some).map_err(|e| match &e {
        E::Changed => JobFailure::InputChanged,
        E::StillBeingWritten => JobFailure::StillBeingWritten,
        E::Output(io) | E::Publish(io) | E::Input(WavError::Io(io)) => {
            JobFailure::io(io, e.to_string())
        }
        _ => JobFailure::BadInput(e.to_string()),
    });
    if outcome.is_err() {
        folder.open = None;
    }
    JobResult {
        id: job.id,
        seconds: start.elapsed().as_secs_f64(),
        outcome,
    }
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
