//! The worker: a child process started by the supervisor (`etl worker`, hidden). It connects to
//! the supervisor's one-shot IPC server, takes one message at a time (one job, or a batch of
//! small ones run in order), runs each job through [`crate::etl`], and sends back each result as
//! soon as that job ends. It exits when its job channel closes, and the kernel kills it if the
//! supervisor dies (PR_SET_PDEATHSIG, set by the supervisor before exec).

use std::path::Path;
use std::time::Instant;

use ipc_channel::ipc::{self, IpcSender};

use crate::etl::{tone, transform};
use crate::protocol::{FromWorker, GenerateJob, JobFailure, JobResult, ToWorker, TransformJob};

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
    to_supervisor
        .send(FromWorker::Hello {
            pid: std::process::id(),
            jobs: jobs_tx,
        })
        .map_err(|e| format!("cannot greet the supervisor: {e}"))?;

    while let Ok(job) = jobs.recv() {
        if run_job(job, &to_supervisor).is_err() {
            break;
        }
    }
    Ok(())
}

/// Runs one job, or each job of a batch in order, sending each result as soon as it is known.
fn run_job(job: ToWorker, to_supervisor: &IpcSender<FromWorker>) -> Result<(), ()> {
    let result = match job {
        ToWorker::Transform(job) => run_transform(&job),
        ToWorker::Generate(job) => run_generate(&job),
        ToWorker::Batch(jobs) => {
            for job in jobs {
                run_job(job, to_supervisor)?;
            }
            return Ok(());
        }
    };
    to_supervisor.send(FromWorker::Done(result)).map_err(|_| ())
}

fn run_transform(job: &TransformJob) -> JobResult {
    let start = Instant::now();
    let (input, temp) = (job.input.to_path(), job.temp_output.to_path());
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
    });
    JobResult {
        id: job.id,
        seconds: start.elapsed().as_secs_f64(),
        outcome: outcome.map(Some).map_err(|e| {
            use crate::etl::wav::WavError;
            use transform::TransformError as E;
            match &e {
                E::Changed => JobFailure::InputChanged,
                E::Output(io) | E::Input(WavError::Io(io)) => JobFailure::io(io, e.to_string()),
                _ => JobFailure::BadInput(e.to_string()),
            }
        }),
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
