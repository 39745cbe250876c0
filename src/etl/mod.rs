//! The transform itself, with no processes in it: reading WAV files, adding noise, writing the
//! result, and synthesising test tones. Everything here works on one file (or one block range of
//! one file) and is called by a worker; the supervisor never touches samples.

pub mod identity;
pub mod kernel;
pub mod levels;
pub mod manifest;
pub mod noise;
pub mod output;
pub mod tone;
pub mod transform;
pub mod wav;

use std::io;

/// An I/O error in words a user can act on, without `Os { code: .. }`.
pub fn describe_io(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EFBIG) => "file too large: the file-size limit (ulimit -f) was reached".into(),
        Some(libc::ENOSPC) => "no space left on device".into(),
        Some(libc::EDQUOT) => "disk quota exceeded".into(),
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied".into(),
        Some(libc::ENOENT) => "no such file or directory".into(),
        Some(libc::EISDIR) => "is a directory".into(),
        Some(libc::EROFS) => "read-only file system".into(),
        Some(libc::EIO) => "input/output error".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}
