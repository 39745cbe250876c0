//! One run per job: an OS lock (flock through `File::try_lock`) on a file in each output folder,
//! per shard. The kernel drops it when the holder dies, however it dies, so nothing goes stale.
//!
//! An unsharded run holds `.etl.lock` exclusively. A shard run holds `.etl.lock` shared (so shards
//! run side by side, but never beside an unsharded run of the same folder) and its own
//! `.etl-shard-IofN.lock` exclusively. An exclusive holder writes its pid into the file only so
//! that a second run can name it; shared holders empty it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::discover::Shard;
use crate::etl::describe_io;

pub struct RunLock {
    _files: Vec<File>,
}

pub enum LockError {
    /// Another run holds the lock: exit 75.
    Held {
        path: PathBuf,
        holder: String,
    },
    Io {
        path: PathBuf,
        cause: String,
    },
}

pub fn lock_name(shard: Shard) -> String {
    if shard == Shard::WHOLE {
        ".etl.lock".into()
    } else {
        format!(".etl-shard-{}.lock", shard.tag())
    }
}

/// Takes the lock in every folder of `roots`, creating the folders if needed.
pub fn acquire(roots: &[PathBuf], shard: Shard) -> Result<RunLock, LockError> {
    let mut files = Vec::new();
    for root in roots {
        let whole = root.join(lock_name(Shard::WHOLE));
        if shard == Shard::WHOLE {
            files.push(lock_one(&whole, Mode::Exclusive)?);
        } else {
            files.push(lock_one(&whole, Mode::Shared)?);
            files.push(lock_one(&root.join(lock_name(shard)), Mode::Exclusive)?);
        }
    }
    Ok(RunLock { _files: files })
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Exclusive,
    Shared,
}

fn lock_one(path: &Path, mode: Mode) -> Result<File, LockError> {
    let io_err = |e: std::io::Error| LockError::Io {
        path: path.to_path_buf(),
        cause: describe_io(&e),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err)?;
    let taken = match mode {
        Mode::Exclusive => file.try_lock(),
        Mode::Shared => file.try_lock_shared(),
    };
    match taken {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "shard runs (--shard) of this folder".to_string()
            } else {
                format!("the run with pid {holder}")
            };
            return Err(LockError::Held {
                path: path.to_path_buf(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
    }
    file.set_len(0).map_err(io_err)?;
    if mode == Mode::Exclusive {
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
    }
    Ok(file)
}
