//! One run per job: an OS lock (flock through `File::try_lock`) on a file in each output folder,
//! per shard. The kernel drops it when the holder dies, however it dies, so nothing goes stale.
//! The holder writes its pid into the file only so that a second run can name it.

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
        let path = root.join(lock_name(shard));
        files.push(lock_one(&path)?);
    }
    Ok(RunLock { _files: files })
}

fn lock_one(path: &Path) -> Result<File, LockError> {
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
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another run".to_string()
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
    file.rewind().map_err(io_err)?;
    writeln!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(file)
}
