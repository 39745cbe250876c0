//! Creating an output so that no partial file ever carries a name.
//!
//! A whole output is written into an unnamed file (`O_TMPFILE`) in its destination folder and
//! given its temporary name only once complete: a worker killed half-way leaves nothing on disk,
//! and the costly part of creating a file (allocating its inode) happens without holding the
//! folder's lock. Where the filesystem has no `O_TMPFILE`, or `/proc` is missing, the file is
//! written under its temporary name from the start. Either way the supervisor, which counts what
//! finished, renames the temporary into place, so nothing it did not count ever has a final name.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An output being written.
pub struct NewFile {
    file: File,
    /// Written without a name, to be linked by [`NewFile::finish`].
    unnamed: bool,
    temp: PathBuf,
}

impl NewFile {
    /// Creates the file that will be `temp` once complete.
    pub fn create(temp: &Path) -> io::Result<NewFile> {
        if unnamed_files_work()
            && let Ok(file) = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .open(folder(temp))
        {
            return Ok(NewFile {
                file,
                unnamed: true,
                temp: temp.to_path_buf(),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(temp)?;
        Ok(NewFile {
            file,
            unnamed: false,
            temp: temp.to_path_buf(),
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the complete file its temporary name (it has it already if it was not unnamed).
    pub fn finish(self) -> io::Result<()> {
        if !self.unnamed {
            return Ok(());
        }
        match link(&self.file, &self.temp) {
            // A stale temporary of ours holds the name; only our own run can have made it.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                fs::remove_file(&self.temp)?;
                link(&self.file, &self.temp)
            }
            other => other,
        }
    }

    /// Removes what an unfinished output left: nothing for an unnamed file, the temporary
    /// otherwise.
    pub fn discard(self) {
        if !self.unnamed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// The folder a path is in, `.` for a bare name.
pub fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Flushes the folder holding `path`, so that a name just created in it survives a power loss.
pub fn sync_folder(path: &Path) -> io::Result<()> {
    File::open(folder(path))?.sync_all()
}

/// Links an unnamed open file under `name`, through its `/proc/self/fd` entry (`linkat` with
/// `AT_EMPTY_PATH` would need CAP_DAC_READ_SEARCH).
fn link(file: &File, name: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL");
    let to = CString::new(name.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unnamed files can be published only through `/proc`. `ETL_NO_TMPFILE` set to anything turns
/// them off, to exercise the path taken on filesystems without them.
fn unnamed_files_work() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        std::env::var_os("ETL_NO_TMPFILE").is_none() && Path::new("/proc/self/fd").is_dir()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_output_has_no_name_until_finished_and_then_replaces_a_stale_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(".a-transformed.wav.x.etl-tmp");
        for content in [&b"first"[..], &b"second, longer"[..]] {
            let new = NewFile::create(&temp).unwrap();
            new.file().write_all(content).unwrap();
            if unnamed_files_work() {
                // Linux on a filesystem with O_TMPFILE (ext4, xfs, btrfs, tmpfs).
                assert!(new.unnamed);
                let expected: Vec<String> = if temp.exists() {
                    vec![".a-transformed.wav.x.etl-tmp".into()]
                } else {
                    vec![]
                };
                assert_eq!(names(dir.path()), expected);
            }
            new.finish().unwrap();
            assert_eq!(fs::read(&temp).unwrap(), content);
            assert_eq!(names(dir.path()), [".a-transformed.wav.x.etl-tmp"]);
        }
    }

    #[test]
    fn a_discarded_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(".b.wav.x.etl-tmp");
        let new = NewFile::create(&temp).unwrap();
        new.file().write_all(b"partial").unwrap();
        new.discard();
        assert!(names(dir.path()).is_empty());
    }
}
