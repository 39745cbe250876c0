//! The messages between the supervisor and its workers. Only paths, numbers and typed errors (a
//! kind and its text) cross the channel, never audio.
//!
//! The handshake: the supervisor opens an `IpcOneShotServer<FromWorker>` and passes its name on the
//! worker's command line; the worker connects and sends [`FromWorker::Hello`] carrying the sender
//! on which it will take [`ToWorker`] messages. The receiver the supervisor gets from `accept()`
//! then carries that worker's results, and closes when the worker dies.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipc_channel::ipc::IpcSender;
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
    /// Several small jobs in one message, run in order: the worker sends one result per job, as
    /// it finishes each, so the supervisor always knows which one is running.
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
    Hello { pid: u32, jobs: IpcSender<ToWorker> },
    Done(JobResult),
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
