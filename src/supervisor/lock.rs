//! One run per job: an OS lock (flock through `File::try_lock`) on a file in each output folder,
//! per shard. The kernel drops it when the holder dies, however it dies, so nothing goes stale.
//!
//! An unsharded run holds `.etl.lock` exclusively. A shard run holds `.etl.lock` shared (so shards
//! run side by side, but never beside an unsharded run of the same folder) and its own
//! `.etl-shard-IofN.lock` exclusively. An exclusive holder writes its pid into the file only so
//! that a second run can name it; shared holders empty it.
//!
//! The output folder may be writable by others, so the lock file is opened without following a
//! symbolic link and used only if it is a regular file with one link: a link planted there would
//! otherwise have the run truncate and write another file. Anything else stops the run before
//! it has done any work. The file is created not world-writable (0664 masked by the umask), so
//! users who share a group, and a umask of 002, share the lock as before.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::discover::Shard;
use crate::etl::describe_io;
use crate::etl::output::link_refusal;

pub struct RunLock {
    _files: Vec<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds the lock: exit 75.
    #[error("{} is held by {holder}: another run is working on this folder", path.display())]
    Held { path: PathBuf, holder: String },
    /// The name holds something the run must not write through (a link, a folder...): exit 1.
    #[error("refusing {}: {why}", path.display())]
    Refused { path: PathBuf, why: String },
    #[error("cannot take the lock {}: {cause}", path.display())]
    Io { path: PathBuf, cause: String },
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
        .mode(0o664)
        // O_NONBLOCK: a FIFO planted at the name must not hang the open.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => LockError::Refused {
                path: path.to_path_buf(),
                why: "it is a symbolic link".into(),
            },
            Some(libc::EISDIR) => LockError::Refused {
                path: path.to_path_buf(),
                why: "it is not a regular file".into(),
            },
            _ => io_err(e),
        })?;
    let meta = file.metadata().map_err(io_err)?;
    if let Some(why) = link_refusal(&meta) {
        return Err(LockError::Refused {
            path: path.to_path_buf(),
            why,
        });
    }
    // A lock file made world-writable by an older version: tighten it if it is ours.
    // SAFETY: geteuid cannot fail; fchmod is a plain call on an open descriptor.
    if meta.mode() & 0o002 != 0 && meta.uid() == unsafe { libc::geteuid() } {
        unsafe { libc::fchmod(file.as_raw_fd(), (meta.mode() & 0o775) as libc::mode_t) };
    }
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
