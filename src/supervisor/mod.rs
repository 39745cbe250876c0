//! The supervisor: the parent process. It never touches samples. It is layered as drivers over
//! one engine over an executor:
//!
//! - [`drivers`] (`run`, `watch`, `gen-fake-data`) turn options into files to do (found at the
//!   start, or as they appear) and decide the exit code;
//! - the [`engine`] plans each file from one look at it (its identity and where its samples are,
//!   see [`crate::etl::identity`]), splits large ones into parts, follows each through its
//!   lifecycle, starts again a file that changed, renames finished outputs into place once the
//!   input is seen unchanged (a worker names a whole file's output itself when nothing is to be
//!   flushed first), and reports;
//! - the [`executor`] owns the worker processes and knows jobs by id only.

pub mod discover;
pub mod drivers;
pub mod engine;
pub mod executor;
pub mod lock;
pub mod metrics;
pub mod report;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use discover::{Plan, Shard};
use report::{Counts, escape_name, escape_text};

use crate::etl::describe_io;
use crate::etl::identity::InputIdentity;
use crate::etl::output;

pub use drivers::generate::generate;
pub use drivers::run::run;
pub use drivers::watch::{WatchOptions, watch};

/// Every temporary output ends with this; the part before names the run kind (shard or `gen`).
const TEMP_SUFFIX: &str = ".etl-tmp";

pub struct RunOptions {
    pub paths: Vec<PathBuf>,
    /// The noise level: one value, or a range drawn per output.
    pub levels: crate::etl::levels::LevelSpec,
    /// Outputs per input (`--variants`).
    pub variants: u32,
    /// Where to write the dataset manifest (`--manifest`).
    pub manifest: Option<PathBuf>,
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
    /// Each file's tone is drawn from this and `seed`.
    pub tones: crate::etl::tone::ToneSpec,
    pub seed: u64,
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
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad usage, such as a PATH that does not exist: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The lock: exit 75 when another run holds it, else 1.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// The report cannot be written: exit 2.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// Anything else: exit 1.
    #[error("{0}")]
    Fatal(String),
}

pub(crate) fn temp_path(output: &Path, tag: &str) -> PathBuf {
    let file_name = output.file_name().unwrap_or_default();
    let mut name = std::ffi::OsString::with_capacity(file_name.len() + tag.len() + 16);
    name.push(".");
    name.push(file_name);
    name.push(".");
    name.push(tag);
    name.push(TEMP_SUFFIX);
    output.with_file_name(name)
}

/// Removes temporary files with our own names for `tag` that a killed run left in `dirs`.
/// Only called while holding the lock for that tag, so none of them belongs to a live run.
/// What a killed run leaves is a regular file with one link; anything else under such a name
/// (a symbolic or hard link) was planted by someone else and is left for the file that needs
/// the name to refuse, so that the run says so. A folder in `listed` whose listing by discovery
/// still stands is not listed again.
pub(crate) fn sweep(
    dirs: &HashSet<PathBuf>,
    tag: &str,
    listed: &HashMap<&Path, &discover::Leftovers>,
) {
    let suffix = format!(".{tag}{TEMP_SUFFIX}");
    for dir in dirs {
        let names: Box<dyn Iterator<Item = std::ffi::OsString>> = match listed
            .get(dir.as_path())
            .and_then(|found| found.if_unchanged(dir))
        {
            Some(names) => Box::new(names.iter().cloned()),
            None => match fs::read_dir(dir) {
                Ok(entries) => Box::new(entries.flatten().map(|entry| entry.file_name())),
                Err(_) => continue,
            },
        };
        for name in names {
            let lossy = name.to_string_lossy();
            if !(lossy.starts_with('.') && lossy.ends_with(&suffix)) {
                continue;
            }
            let path = dir.join(&name);
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
pub(crate) fn make_output_folder(dir: &Path, out_dir: Option<&Path>) -> std::io::Result<()> {
    match out_dir.and_then(|root| Some((root, dir.strip_prefix(root).ok()?))) {
        Some((root, relative)) => output::make_folders(root, relative),
        None => fs::create_dir_all(dir),
    }
}

/// `--dry-run`: say what would happen, write nothing.
pub(crate) fn dry_run(inputs: &discover::Catalog, settle: std::time::Duration) -> RunEnd {
    let mut counts = Counts::default();
    let mut out = std::io::stdout().lock();
    let now = std::time::SystemTime::now();
    for input in inputs.iter() {
        let mut plan = input.status.clone();
        if plan == Plan::Transform
            && fs::metadata(&input.path)
                .is_ok_and(|m| InputIdentity::of(&m).still_being_written(now, settle))
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
            ctime_sec: since.as_secs() as i64,
            ctime_nsec: since.subsec_nanos() as i64,
        }
    }

    #[test]
    fn files_modified_within_the_settle_time_are_still_being_written() {
        let now = SystemTime::now();
        let second = Duration::from_secs(1);
        let recent = modified_at(now - Duration::from_millis(300));
        let old = modified_at(now - Duration::from_secs(5));
        let ahead = modified_at(now + Duration::from_millis(300));
        assert!(recent.still_being_written(now, second));
        assert!(ahead.still_being_written(now, second));
        assert!(!old.still_being_written(now, second));
        assert!(!recent.still_being_written(now, Duration::ZERO));
    }
}
