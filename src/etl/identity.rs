//! What a run planned from, so that it can tell when an input changed under it.
//!
//! The supervisor plans a file (its size, whether and how it is split, and for a file it splits,
//! where its samples are) from one look at it. A file that is renamed over, still being written, or edited in place during the
//! run would otherwise give an output made of two different files, or of bytes the input never
//! had. So the plan carries the file's identity, and whoever reads the file checks it: a worker on
//! its open descriptor before its first read and after its last, the supervisor on the path before
//! it gives the output its final name.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::transform::{TransformError, open_input_with_metadata};
use super::wav::{self, WavInfo};

/// Which file, and which version of it: device, inode, size, and its modification and change
/// times to the nanosecond. The change time is the one no program can set back: a file rewritten
/// in place to the same size, its modification time then restored (`cp -p`, `rsync --inplace
/// --times`, `touch -r`), still shows as changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
}

impl InputIdentity {
    pub fn of(meta: &Metadata) -> InputIdentity {
        InputIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime_sec: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    /// True when the open file is still this one, unchanged.
    pub fn matches_file(&self, file: &File) -> io::Result<bool> {
        Ok(InputIdentity::of(&file.metadata()?) == *self)
    }

    /// Modified less than `settle` before `now` (or that far after it: a clock ahead): taken
    /// to be still being written.
    pub fn still_being_written(&self, now: std::time::SystemTime, settle: Duration) -> bool {
        if settle.is_zero() {
            return false;
        }
        let mtime = std::time::UNIX_EPOCH
            .checked_add(Duration::new(
                self.mtime_sec.max(0) as u64,
                self.mtime_nsec.clamp(0, 999_999_999) as u32,
            ))
            .unwrap_or(now);
        let age = now.duration_since(mtime).unwrap_or_else(|e| e.duration());
        age < settle
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
    /// Where the samples are, when the header was read (the supervisor reads it only for a file
    /// it splits, so that all parts read the same samples) and could be; otherwise the worker
    /// reads it, and reports why if it cannot.
    pub wav: Option<WavInfo>,
}

/// Looks at a file once: its identity (taken before the header is read, so that a change while
/// reading it shows as a changed identity later) and its header.
pub fn plan(path: &Path) -> Result<Planned, TransformError> {
    let (file, meta) = open_input_with_metadata(path)?;
    let identity = InputIdentity::of(&meta);
    Ok(Planned {
        identity,
        wav: wav::probe_with_len(&file, identity.size).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etl::transform::{self, NoiseLevel, Request, TransformError};
    use crate::etl::wav::{Container, Encoding, Layout, fmt_chunk_for, header};
    use std::io::Write;

    fn request<'a>(input: &'a Path, out: &'a Path, planned: &'a Planned) -> Request<'a> {
        Request {
            input,
            temp_output: out,
            part: 0,
            parts: 1,
            level: NoiseLevel::Sigma(0.0),
            file_seed: 1,
            fsync: false,
            expect: Some(planned.identity),
            wav: planned.wav.as_ref(),
            output_format: None,
            publish: None,
            settle: None,
        }
    }

    #[test]
    fn a_file_that_grew_after_planning_is_refused_and_its_plan_is_never_read_past() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.wav");
        let out = dir.path().join(".a-transformed.wav.t.etl-tmp");
        let layout = Layout {
            encoding: Encoding::I16,
            channels: 1,
            sample_rate: 8000,
        };
        // A streaming writer's header: the data size is a placeholder.
        let mut bytes = header(Container::Riff, &fmt_chunk_for(layout), 0)
            .unwrap()
            .bytes;
        let at = bytes.len() - 4;
        bytes[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[7u8; 400]);
        std::fs::write(&input, &bytes).unwrap();
        let planned = plan(&input).unwrap();
        assert_eq!(planned.wav.as_ref().unwrap().data_len, 400);

        std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .unwrap()
            .write_all(&[9u8; 4000])
            .unwrap();
        let err = transform::transform(&request(&input, &out, &planned)).unwrap_err();
        assert!(matches!(err, TransformError::Changed), "{err}");
        assert_eq!(err.to_string(), "input changed while it was being read");
        assert!(!out.exists());

        // Without the identity, the plan alone still bounds what is read: 200 frames, not 2200.
        let mut unchecked = request(&input, &out, &planned);
        unchecked.expect = None;
        let stats = transform::transform(&unchecked).unwrap();
        assert_eq!(stats.frames, 200);
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 44 + 400);
    }

    #[test]
    fn a_file_replaced_after_planning_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.wav");
        let out = dir.path().join(".a-transformed.wav.t.etl-tmp");
        let layout = Layout {
            encoding: Encoding::U8,
            channels: 1,
            sample_rate: 8000,
        };
        let mut bytes = header(Container::Riff, &fmt_chunk_for(layout), 10)
            .unwrap()
            .bytes;
        bytes.extend_from_slice(&[1u8; 10]);
        std::fs::write(&input, &bytes).unwrap();
        let planned = plan(&input).unwrap();
        let other = dir.path().join("b.wav");
        std::fs::write(&other, &bytes).unwrap();
        std::fs::rename(&other, &input).unwrap();
        assert!(!planned.identity.matches_path(&input));
        let err = transform::transform(&request(&input, &out, &planned)).unwrap_err();
        assert!(matches!(err, TransformError::Changed), "{err}");
    }
}
