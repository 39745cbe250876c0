//! Creating an output so that no partial file ever carries its final name.
//!
//! A whole output is written into an unnamed file (`O_TMPFILE`) in its destination folder and
//! linked under its final name once complete: a worker killed half-way leaves nothing on disk,
//! and the costly part of creating a file (allocating its inode) happens without holding the
//! folder's lock, so many workers creating files in one folder do not queue on it. Where the
//! filesystem has no `O_TMPFILE`, or `/proc` is missing, the file is written under a hidden
//! temporary name and renamed. Replacing an existing output goes through the temporary name too,
//! since a link cannot replace a file and a rename can, atomically.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An output being written.
pub struct NewFile {
    file: File,
    /// Written without a name, to be linked by [`NewFile::publish`].
    unnamed: bool,
    temp: PathBuf,
}

impl NewFile {
    /// Creates the file that will become `output`, with `temp` as its temporary name if one is
    /// needed. `temp` must be in the same folder as `output`.
    pub fn create(output: &Path, temp: &Path) -> io::Result<NewFile> {
        if unnamed_files_work()
            && let Ok(file) = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .open(folder(output))
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

    /// Gives the complete file its final name, replacing what was there, and, with `fsync`,
    /// makes the name durable (the caller has already flushed the data). On error nothing is
    /// left under either name.
    pub fn publish(self, output: &Path, fsync: bool) -> io::Result<()> {
        if self.unnamed {
            match link(&self.file, output) {
                Ok(()) => {
                    if fsync {
                        sync_folder(output)?;
                    }
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            // A stale temporary of ours may hold the name; only our own run can have made it.
            match fs::remove_file(&self.temp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            link(&self.file, &self.temp)?;
        }
        if let Err(e) = fs::rename(&self.temp, output) {
            let _ = fs::remove_file(&self.temp);
            return Err(e);
        }
        if fsync {
            sync_folder(output)?;
        }
        Ok(())
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
    fn an_output_has_no_name_until_published_and_then_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a-transformed.wav");
        let temp = dir.path().join(".a-transformed.wav.x.etl-tmp");
        for content in [&b"first"[..], &b"second, longer"[..]] {
            let new = NewFile::create(&out, &temp).unwrap();
            new.file().write_all(content).unwrap();
            if unnamed_files_work() {
                // Linux on a filesystem with O_TMPFILE (ext4, xfs, btrfs, tmpfs).
                assert!(new.unnamed);
                let expected: Vec<String> = if out.exists() {
                    vec!["a-transformed.wav".into()]
                } else {
                    vec![]
                };
                assert_eq!(names(dir.path()), expected);
            }
            new.publish(&out, true).unwrap();
            assert_eq!(fs::read(&out).unwrap(), content);
            assert_eq!(names(dir.path()), ["a-transformed.wav"]);
        }
    }

    #[test]
    fn a_discarded_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.wav");
        let temp = dir.path().join(".b.wav.x.etl-tmp");
        let new = NewFile::create(&out, &temp).unwrap();
        new.file().write_all(b"partial").unwrap();
        new.discard();
        assert!(names(dir.path()).is_empty());
    }
}
