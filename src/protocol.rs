//! The messages between the supervisor and its workers. Only paths, numbers and typed errors (a
//! kind and its text) cross the channel, never audio.
//!
//! The handshake: the supervisor opens an `IpcOneShotServer<FromWorker>` and passes its name on the
//! worker's command line; the worker connects and sends [`FromWorker::Hello`] carrying the sender
//! on which it will take [`ToWorker`] messages. The receiver the supervisor gets from `accept()`
//! then carries that worker's results, and closes when the worker dies.
//!
//! Results come back in small groups ([`FromWorker::Done`]): one message per tiny file would cost
//! both sides more than the file. What the supervisor must still know exactly when a worker dies
//! (which job it was running, the only one charged an attempt) the worker keeps in a word of
//! memory shared with the supervisor ([`Progress`]), set before it starts each job.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipc_channel::ipc::{IpcSender, IpcSharedMemory};
use serde::{Deserialize, Serialize};

use crate::etl::identity::InputIdentity;
use crate::etl::tone::Tone;
use crate::etl::transform::{NoiseLevel, Stats};
use crate::etl::wav::WavInfo;

/// A path as raw bytes, so that names which are not UTF-8 cross the channel intact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePath(Vec<u8>);

impl WirePath {
    pub fn to_path(&self) -> PathBuf {
        PathBuf::from(OsString::from_vec(self.0.clone()))
    }
}

impl From<&Path> for WirePath {
    fn from(p: &Path) -> Self {
        WirePath(p.as_os_str().as_bytes().to_vec())
    }
}

/// A job is shared (`Arc`) between the supervisor's queue, which keeps it until it completes
/// (to send it again if its worker dies), and the message that carries it: sending does not copy
/// it. On the wire an `Arc` is just its content.
#[derive(Clone, Serialize, Deserialize)]
pub enum ToWorker {
    Transform(Arc<TransformJob>),
    Generate(Arc<GenerateJob>),
    /// Several small jobs in one message, run in order. Their results come back a few at a time;
    /// the worker's [`Progress`] says which one is running.
    Batch(Vec<ToWorker>),
}

/// One part of one file to transform into `temp_output`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransformJob {
    pub id: u64,
    pub input: WirePath,
    pub temp_output: WirePath,
    pub part: u32,
    pub parts: u32,
    pub level: NoiseLevel,
    pub file_seed: u64,
    pub fsync: bool,
    /// The input as the supervisor planned it; the worker refuses a file that is no longer it.
    pub expect: Option<InputIdentity>,
    /// Where the samples are, as the supervisor found them: every part reads these.
    pub wav: Option<WavInfo>,
    /// `--output-format`: `None` keeps the input's.
    pub output_format: Option<crate::etl::wav::Encoding>,
    /// Set for a whole file when outputs are not flushed: the worker names the output itself.
    pub publish: Option<PublishTo>,
    /// Set when the supervisor did not look at the input (`expect` is `None`): the worker refuses
    /// it as [`JobFailure::StillBeingWritten`] if it was modified less than this long ago.
    pub settle: Option<std::time::Duration>,
}

/// Where a worker names a whole output itself: `output` in its folder, reached from `below`
/// (`--out-dir`) without following a link, as the supervisor would.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishTo {
    pub output: WirePath,
    pub below: Option<WirePath>,
}

/// One tone to write into `temp_output`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenerateJob {
    pub id: u64,
    pub temp_output: WirePath,
    pub tone: Tone,
}

#[derive(Serialize, Deserialize)]
pub enum FromWorker {
    Hello {
        pid: u32,
        jobs: IpcSender<ToWorker>,
        progress: Progress,
    },
    /// The results of jobs that ended, in the order they ran.
    Done(Vec<JobResult>),
}

/// The id of the job a worker started last, and whether it ended, in memory it shares with the
/// supervisor: written by the worker before and after each job (a store, no system call), read
/// by the supervisor once the worker is dead, to tell the job that was running from those that
/// ended but whose results were lost with the worker (an output the worker named itself among
/// them), and from those it never started. A clone maps the same memory again.
#[derive(Clone, Serialize, Deserialize)]
pub struct Progress(IpcSharedMemory);

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    /// No job started yet.
    const NONE: u64 = u64::MAX;

    pub fn new() -> Progress {
        Progress(IpcSharedMemory::from_bytes(&Self::NONE.to_ne_bytes()))
    }

    /// The shared word. The mapping is page-aligned, 8 bytes long, readable and writable in both
    /// processes (`MAP_SHARED` of one memfd).
    fn word(&self) -> &std::sync::atomic::AtomicU64 {
        assert!(self.0.len() >= 8 && self.0.as_ptr().align_offset(8) == 0);
        // SAFETY: checked above: 8 aligned bytes, mapped for as long as `self` lives; every
        // access to them, in either process, is atomic.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.0.as_ptr() as *mut u64) }
    }

    /// Set with a job's id once it has ended.
    const ENDED: u64 = 1 << 63;

    /// The worker: job `id` starts now.
    pub fn started(&self, id: u64) {
        self.word().store(id, std::sync::atomic::Ordering::Release);
    }

    /// The worker: job `id` has ended (its result may still wait to be sent).
    pub fn ended(&self, id: u64) {
        self.word()
            .store(id | Self::ENDED, std::sync::atomic::Ordering::Release);
    }

    /// The supervisor: the job the worker was running, if any: started last, not ended.
    pub fn current(&self) -> Option<u64> {
        let id = self.word().load(std::sync::atomic::Ordering::Acquire);
        (id != Self::NONE && id & Self::ENDED == 0).then_some(id)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobResult {
    pub id: u64,
    pub seconds: f64,
    /// `None` for a generated tone.
    pub outcome: Result<Option<Stats>, JobFailure>,
}

/// Why a job did not succeed: typed, so that the supervisor decides on the kind of failure, never
/// on its words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum JobFailure {
    /// The input is no longer the file that was planned: the whole file is to be done again.
    #[error("input changed while it was being read")]
    InputChanged,
    /// Modified within the settle time, seen by the worker (the supervisor had not looked): the
    /// file is not done now, as if the supervisor had seen it.
    #[error("still being written")]
    StillBeingWritten,
    /// The input is not something etl can read (not a WAV, truncated, unsupported...).
    #[error("{0}")]
    BadInput(String),
    /// An I/O error, reading the input or writing the output, with its errno kept.
    #[error("{message}")]
    Io { errno: Option<i32>, message: String },
}

impl JobFailure {
    /// An I/O failure from `error`, described by `message`.
    pub fn io(error: &std::io::Error, message: String) -> JobFailure {
        JobFailure::Io {
            errno: error.raw_os_error(),
            message,
        }
    }

    /// The kind of an I/O failure, as `std::io` names it.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            JobFailure::Io { errno: Some(e), .. } => {
                Some(std::io::Error::from_raw_os_error(*e).kind())
            }
            JobFailure::Io { errno: None, .. } => Some(std::io::ErrorKind::Other),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_seen_through_every_mapping_of_it() {
        let worker = Progress::new();
        let supervisor = worker.clone();
        assert_eq!(supervisor.current(), None);
        worker.started(0);
        assert_eq!(supervisor.current(), Some(0));
        worker.started(41);
        assert_eq!(supervisor.current(), Some(41));
        worker.ended(41);
        assert_eq!(supervisor.current(), None);
        worker.started(42);
        drop(worker);
        assert_eq!(supervisor.current(), Some(42));
    }
}
