//! What a run planned from, so that it can tell when an input changed under it.
//!
//! The supervisor plans a file (its size, whether and how it is split, where its samples are) from
//! one look at it. A file that is renamed over, still being written, or edited in place during the
//! run would otherwise give an output made of two different files, or of bytes the input never
//! had. So the plan carries the file's identity, and whoever reads the file checks it: a worker on
//! its open descriptor before its first read and after its last, the supervisor on the path before
//! it gives the output its final name.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::transform::{TransformError, open_input};
use super::wav::{self, WavInfo};

/// Which file, and which version of it: device, inode, size and modification time to the
/// nanosecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl InputIdentity {
    pub fn of(meta: &Metadata) -> InputIdentity {
        InputIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    /// True when the open file is still this one, unchanged.
    pub fn matches_file(&self, file: &File) -> io::Result<bool> {
        Ok(InputIdentity::of(&file.metadata()?) == *self)
    }

    /// True when `path` still names this file, unchanged.
    pub fn matches_path(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| InputIdentity::of(&m) == *self)
    }
}

/// What the supervisor planned a file from.
#[derive(Clone, Debug)]
pub struct Planned {
    pub identity: InputIdentity,
    /// Where the samples are, when the header could be read; when it could not, the worker reads
    /// it again and reports why.
    pub wav: Option<WavInfo>,
}

/// Looks at a file once: its identity (taken before the header is read, so that a change while
/// reading it shows as a changed identity later) and its header.
pub fn plan(path: &Path) -> Result<Planned, TransformError> {
    let file = open_input(path)?;
    let meta = file
        .metadata()
        .map_err(|e| TransformError::Input(wav::WavError::Io(e)))?;
    let identity = InputIdentity::of(&meta);
    Ok(Planned {
        identity,
        wav: wav::probe(&file).ok(),
    })
}
