//! Creating an output so that no partial file ever carries a name, and so that no name someone
//! else planted is ever written through.
//!
//! A whole output is written into an unnamed file (`O_TMPFILE`) in its destination folder and
//! given its temporary name only once complete: a worker killed half-way leaves nothing on disk,
//! and the costly part of creating a file (allocating its inode) happens without holding the
//! folder's lock. Where the filesystem has no `O_TMPFILE`, or `/proc` is missing, the file is
//! written under its temporary name from the start. When outputs are made durable, the supervisor
//! renames the temporaries into place after a flush that covers them. Without flushes
//! (`--no-fsync`) there is nothing to wait for, and the worker names a whole output itself
//! ([`NewFile::publish_in`]) right after its last look at the input: linked under its final name
//! at once when that name is free, else under its temporary name and renamed.
//!
//! Output folders may be writable by others (an inbox, a shared volume), who can put a symbolic
//! or hard link under any name etl is about to use. So every name is created exclusively and
//! without following a link (`O_EXCL | O_NOFOLLOW`), a file that must already exist (the
//! temporary shared by the parts of a split file) is used only if it is a regular file of ours
//! with one link, and a temporary is checked to be such a file again just before it is renamed.
//!
//! Modes: an unnamed output is created with its final mode (the input's permission bits, masked
//! by the umask as for `cp`; see [`NewFile::create_with_mode`]): nobody can open it until it is
//! complete and linked, so it needs nothing more at publish. Named temporaries (without
//! `O_TMPFILE`, the shared temporary of a split file, test tones, the manifest) are created 0600
//! and stay so until [`publish`] gives them their final mode, just before their final name.

use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of temporaries: private until they are complete and named.
const TEMP_MODE: u32 = 0o600;

/// An output being written.
pub struct NewFile {
    file: File,
    /// Written without a name, to be linked by [`NewFile::finish`].
    unnamed: bool,
    temp: PathBuf,
    /// The folder a named temporary was made in, when it was made through an open folder.
    dir: Option<OwnedFd>,
    /// The permission bits asked for when it was made.
    mode: u32,
}

impl NewFile {
    /// Creates the file that will be `temp` once complete, private (0600).
    pub fn create(temp: &Path) -> io::Result<NewFile> {
        NewFile::create_with_mode(temp, TEMP_MODE)
    }

    /// Creates the file that will be `temp` once complete. Written unnamed, it gets `mode` at
    /// once (masked by the umask, or set by the folder's default ACL, as any new file): nobody
    /// can open it before it is complete and linked, and [`publish`] then has no mode to change.
    /// Written under its name (no `O_TMPFILE`), it is 0600 until [`publish`].
    pub fn create_with_mode(temp: &Path, mode: u32) -> io::Result<NewFile> {
        NewFile::create_at(None, temp, mode)
    }

    /// [`NewFile::create_with_mode`] in the output folder already open as `dir` (the folder of
    /// `temp`): the unnamed file is made there, not through the folder's path.
    pub fn create_in(dir: &OwnedFd, temp: &Path, mode: u32) -> io::Result<NewFile> {
        NewFile::create_at(Some(dir), temp, mode)
    }

    fn create_at(dir: Option<&OwnedFd>, temp: &Path, mode: u32) -> io::Result<NewFile> {
        let unnamed = || {
            let (at, name) = match dir {
                Some(dir) => (dir.as_raw_fd(), c".".to_owned()),
                None => (
                    libc::AT_FDCWD,
                    CString::new(folder(temp).as_os_str().as_bytes()).ok()?,
                ),
            };
            // SAFETY: a valid descriptor (or AT_FDCWD) and a NUL-terminated name; the flags
            // take a mode.
            let fd = unsafe {
                libc::openat(
                    at,
                    name.as_ptr(),
                    libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                    (mode & 0o777) as libc::c_uint,
                )
            };
            // SAFETY: `fd` was just opened and is owned by nothing else.
            (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
        };
        if let Some(file) = unnamed_files_work().then(unnamed).flatten() {
            return Ok(NewFile {
                file,
                unnamed: true,
                temp: temp.to_path_buf(),
                dir: None,
                mode: mode & 0o777,
            });
        }
        // Under its temporary name: made in the open folder, if one is given, never through
        // the folder's path (which someone may have swapped for a link since).
        let (file, dir) = match dir {
            Some(dir) => (
                create_new_at(dir, &c_name(temp)?, temp)?,
                Some(dir.try_clone()?),
            ),
            None => (create_new(temp)?, None),
        };
        Ok(NewFile {
            file,
            unnamed: false,
            temp: temp.to_path_buf(),
            dir,
            mode: TEMP_MODE,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the complete file its final name `output` in its open folder `dir`, with `mode`:
    /// an unnamed file is linked there at once when the name is free (`linkat` never follows
    /// or replaces what holds a name); otherwise it gets its temporary name and is renamed over
    /// what holds the output name ([`publish_in`], which never writes through it either).
    pub fn publish_in(self, dir: &OpenFolder, output: &Path, mode: u32) -> io::Result<()> {
        let OpenFolder { fd: dir, acl } = dir;
        if !self.unnamed {
            return publish_in(dir, &self.temp, output, mode);
        }
        // Made with the input's mode as the umask allowed: the final mode unless it had to stay
        // private. A default ACL of the folder may have given another: then it is looked at.
        let made = match acl {
            false => self.mode & !umask(),
            true => self.file.metadata()?.mode() & 0o7777,
        };
        if made != mode {
            self.file
                .set_permissions(fs::Permissions::from_mode(mode))?;
        }
        match link_in(&self.file, dir, &c_name(output)?) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => return other,
        }
        let temp_name = c_name(&self.temp)?;
        match link_in(&self.file, dir, &temp_name) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                remove_stale_at(dir, &temp_name, &self.temp)?;
                link_in(&self.file, dir, &temp_name)?;
            }
            other => other?,
        }
        publish_in(dir, &self.temp, output, mode)
    }

    /// Gives the complete file its temporary name (it has it already if it was not unnamed).
    pub fn finish(self) -> io::Result<()> {
        if !self.unnamed {
            return Ok(());
        }
        // `linkat` never follows or replaces what holds the name.
        let to = CString::new(self.temp.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let cwd = libc::AT_FDCWD;
        match link(&self.file, cwd, &to) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                remove_stale(&self.temp)?;
                link(&self.file, cwd, &to)
            }
            other => other,
        }
    }

    /// Removes what an unfinished output left: nothing for an unnamed file, the temporary
    /// otherwise.
    pub fn discard(self) {
        if self.unnamed {
            return;
        }
        match (&self.dir, c_name(&self.temp)) {
            // SAFETY: a valid descriptor and a NUL-terminated name that outlives the call.
            (Some(dir), Ok(name)) => unsafe {
                libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0);
            },
            _ => {
                let _ = fs::remove_file(&self.temp);
            }
        }
    }
}

/// Creates `path` as a new private file, never through a link: a regular file with one link
/// already there is a temporary a killed attempt left, and is replaced; anything else is refused.
pub fn create_new(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(TEMP_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            remove_stale(path)?;
            open()
        }
        other => other,
    }
}

/// [`create_new`] for `name` (which is `path`) in the open folder `dir`.
fn create_new_at(dir: &OwnedFd, name: &CStr, path: &Path) -> io::Result<File> {
    let open = || {
        // SAFETY: a valid descriptor and a NUL-terminated name; the flags take a mode.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                TEMP_MODE as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(unsafe { File::from_raw_fd(fd) })
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            remove_stale_at(dir, name, path)?;
            open()
        }
        other => other,
    }
}

/// Opens the temporary that the parts of a split file write side by side, creating it if this
/// part comes first. It is used only if it is a regular file of ours with one link: nothing is
/// written before that is checked.
pub fn open_shared_temp(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(TEMP_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| symlink_refusal(path, e))?;
    check_ours(path, &file.metadata()?)?;
    Ok(file)
}

/// Gives a complete temporary its final mode and renames it to `output`, in the same folder.
/// The rename replaces whatever holds the output name, a link included, and never writes through
/// it. With `below`, the folder is reached from that trusted root without following a link (as
/// [`make_folders`] made it), so a folder swapped for a link since is refused, not renamed into.
pub fn publish(temp: &Path, output: &Path, mode: u32, below: Option<&Path>) -> io::Result<()> {
    let dir = open_folder(folder(output), below)?;
    publish_in(&dir, temp, output, mode)
}

/// Opens an output folder to publish into, flush and check names in. With `below`, it is reached
/// from that trusted root without following a link (see [`publish`]).
pub fn open_folder(dir: &Path, below: Option<&Path>) -> io::Result<OwnedFd> {
    match below.and_then(|root| Some((root, dir.strip_prefix(root).ok()?))) {
        Some((root, relative)) => walk_folders(root, relative, false),
        None => Ok(File::open(dir)?.into()),
    }
}

/// An output folder kept open, and whether it has a default ACL (which, not the umask, then
/// decides the mode of a file made in it).
pub struct OpenFolder {
    pub fd: OwnedFd,
    pub acl: bool,
}

impl OpenFolder {
    /// [`open_folder`], and a look at its default ACL.
    pub fn open(dir: &Path, below: Option<&Path>) -> io::Result<OpenFolder> {
        let fd = open_folder(dir, below)?;
        // SAFETY: a valid descriptor and a NUL-terminated name; a zero-sized buffer asks for
        // the value's size only.
        let size = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                c"system.posix_acl_default".as_ptr(),
                std::ptr::null_mut(),
                0,
            )
        };
        // ENODATA: none; ENOTSUP: the file system has no ACLs. Anything else: taken to have one.
        let acl = size >= 0
            || !matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::ENODATA | libc::EOPNOTSUPP)
            );
        Ok(OpenFolder { fd, acl })
    }
}

/// The file system device a folder opened with [`open_folder`] is on.
pub fn device_of(dir: &OwnedFd) -> io::Result<u64> {
    // SAFETY: `stat` is plain memory that fstat fills in, on an open descriptor.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(dir.as_raw_fd(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.st_dev)
}

/// [`publish`] in a folder already open (`dir`, the folder of `temp` and `output`). The
/// temporary is looked at once without following a link (`fstatat` with `AT_SYMLINK_NOFOLLOW`)
/// and must be a regular file of ours with one link; only if its mode is not yet `mode` is it
/// opened (`O_NOFOLLOW`, checked again on the descriptor) to change it. Then it is renamed.
pub fn publish_in(dir: &OwnedFd, temp: &Path, output: &Path, mode: u32) -> io::Result<()> {
    let (temp_name, output_name) = (c_name(temp)?, c_name(output)?);
    let stat = stat_at(dir, &temp_name)?;
    if let Some(why) = stat_refusal(&stat) {
        return Err(refused(temp, &why));
    }
    if stat.st_mode & 0o7777 != mode {
        let file = open_at(dir, &temp_name, temp)?;
        check_ours(temp, &file.metadata()?)?;
        // SAFETY: a plain system call on an open descriptor.
        if unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: a valid descriptor and NUL-terminated names that outlive the call.
    let renamed = unsafe {
        libc::renameat(
            dir.as_raw_fd(),
            temp_name.as_ptr(),
            dir.as_raw_fd(),
            output_name.as_ptr(),
        )
    };
    if renamed != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the temporary `temp` (named `name` in `dir`) read-only, never through a link: to change
/// its mode or to flush it on its own.
pub fn open_at(dir: &OwnedFd, name: &std::ffi::CStr, temp: &Path) -> io::Result<File> {
    // SAFETY: a valid descriptor and a NUL-terminated name that outlives the call.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) => refused(temp, "it is a symbolic link"),
            _ => e,
        });
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The last component of `path`, for the `*at` calls.
pub fn c_name(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.file_name().unwrap_or_default().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// What `name` in the open folder `dir` is, without following a link.
pub fn stat_at(dir: impl AsFd, name: &std::ffi::CStr) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain memory that fstatat fills in; the name is NUL-terminated.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let looked = unsafe {
        libc::fstatat(
            dir.as_fd().as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if looked != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat)
}

/// [`check_ours`] on what `fstatat` saw: why it is not a regular file of ours with one link.
fn stat_refusal(stat: &libc::stat) -> Option<String> {
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFLNK => return Some("it is a symbolic link".into()),
        libc::S_IFREG => {}
        _ => return Some("it is not a regular file".into()),
    }
    if stat.st_nlink > 1 {
        return Some(format!("it has {} links", stat.st_nlink));
    }
    if stat.st_uid != effective_uid() {
        return Some(format!("it belongs to another user (uid {})", stat.st_uid));
    }
    None
}

/// Creates the folders of `relative` below `root`, one at a time relative to the folder above
/// (`mkdirat`, then `openat` with `O_NOFOLLOW | O_DIRECTORY`): a symbolic link planted as one of
/// them is refused, never followed. `root` itself is trusted (it was given on the command line).
pub fn make_folders(root: &Path, relative: &Path) -> io::Result<()> {
    fs::create_dir_all(root)?;
    walk_folders(root, relative, true).map(drop)
}

/// Opens the folder `relative` below `root` one level at a time without following a link,
/// making the missing levels if `make`.
fn walk_folders(root: &Path, relative: &Path, make: bool) -> io::Result<OwnedFd> {
    let mut dir: OwnedFd = File::open(root)?.into();
    let mut walked = root.to_path_buf();
    for part in relative.components() {
        let std::path::Component::Normal(name) = part else {
            continue;
        };
        walked.push(name);
        let c_name = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid descriptor and a NUL-terminated name that outlives the calls.
        let made = if make {
            unsafe { libc::mkdirat(dir.as_raw_fd(), c_name.as_ptr(), 0o777) }
        } else {
            0
        };
        if made != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c_name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
                return Err(e);
            }
            // Linux says ENOTDIR for a link under O_DIRECTORY: look at the name itself.
            // SAFETY: `stat` is plain memory that fstatat fills in.
            let mut stat: libc::stat = unsafe { std::mem::zeroed() };
            let looked = unsafe {
                libc::fstatat(
                    dir.as_raw_fd(),
                    c_name.as_ptr(),
                    &mut stat,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            let is_link = looked == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFLNK;
            return Err(if is_link {
                refused(&walked, "it is a symbolic link")
            } else {
                refused(&walked, "it is not a folder")
            });
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    Ok(dir)
}

/// The mode an output of `input` gets: the input's permission bits masked by the umask, as `cp`
/// gives a copy (so never more than the input grants). 0600 if the input cannot be read.
pub fn mode_from_input(input: &Path) -> u32 {
    mode_from_metadata(fs::metadata(input).ok().as_ref())
}

/// [`mode_from_input`] from a look at the input already taken (`None`: it could not be looked at).
pub fn mode_from_metadata(input: Option<&fs::Metadata>) -> u32 {
    match input {
        Some(meta) => meta.mode() & 0o777 & !umask(),
        None => TEMP_MODE,
    }
}

/// The mode a worker creates an unnamed output of an input with `input_mode` with: the input's
/// permission bits (the kernel applies the umask, as for any new file, which gives the mode
/// [`mode_from_input`] says), provided that leaves its owner free to read and write it (the
/// supervisor may have to open it to flush it on its own); 0600 otherwise, and [`publish`] sets
/// the final mode.
pub fn unnamed_mode(input_mode: u32) -> u32 {
    let mode = input_mode & 0o777;
    if mode & !umask() & 0o600 == 0o600 {
        mode
    } else {
        TEMP_MODE
    }
}

/// The mode of a new file with no input to follow (`gen-fake-data`): 0666 masked by the umask.
pub fn mode_from_umask() -> u32 {
    0o666 & !umask()
}

/// This process's umask, read once.
pub fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        // /proc shows it without changing it; setting it to read it back is racy with threads.
        let from_proc = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        });
        from_proc.unwrap_or_else(|| {
            // SAFETY: plain system calls; the old mask is put back at once.
            unsafe {
                let old = libc::umask(0o077);
                libc::umask(old);
                old as u32
            }
        })
    })
}

/// The error that refuses to use `path`, in the words the user sees: `refusing PATH: WHY`.
pub fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::other(format!("refusing {}: {why}", path.display()))
}

/// Why a file at a name etl is about to use or lock is not one it may write, if it is not:
/// it must be a regular file with one link (a hard link would let a write reach another name).
pub fn link_refusal(meta: &fs::Metadata) -> Option<String> {
    if meta.file_type().is_symlink() {
        Some("it is a symbolic link".into())
    } else if !meta.file_type().is_file() {
        Some("it is not a regular file".into())
    } else if meta.nlink() > 1 {
        Some(format!("it has {} links", meta.nlink()))
    } else {
        None
    }
}

/// Refuses a temporary that is not a regular file of this user with one link.
fn check_ours(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if let Some(why) = link_refusal(meta) {
        return Err(refused(path, &why));
    }
    if meta.uid() != effective_uid() {
        return Err(refused(
            path,
            &format!("it belongs to another user (uid {})", meta.uid()),
        ));
    }
    Ok(())
}

/// This process's effective user id, asked once (it never changes during a run): a system call
/// per published file otherwise.
fn effective_uid() -> u32 {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // SAFETY: geteuid cannot fail.
    *EUID.get_or_init(|| unsafe { libc::geteuid() })
}

/// Turns the `ELOOP` of an `O_NOFOLLOW` open on a symbolic link into the refusal that says so.
fn symlink_refusal(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP)
        && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    {
        refused(path, "it is a symbolic link")
    } else {
        e
    }
}

/// Removes what holds a temporary name if it is what a killed attempt leaves (a regular file
/// with one link); refuses anything else, which etl never makes. Removing a name never writes
/// through it, but a planted link is reported rather than silently cleared.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if let Some(why) = link_refusal(&meta) {
        return Err(refused(path, &why));
    }
    fs::remove_file(path)
}

/// [`remove_stale`] for `name` (which is `path`) in the open folder `dir`.
fn remove_stale_at(dir: &OwnedFd, name: &CStr, path: &Path) -> io::Result<()> {
    if let Some(why) = stat_refusal(&stat_at(dir, name)?) {
        return Err(refused(path, &why));
    }
    // SAFETY: a valid descriptor and a NUL-terminated name that outlives the call.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

/// Flushes the data of one temporary on its own, opened read-only in its folder `dir` without
/// following a link: the fallback when the flush of its whole file system failed.
pub fn flush_at(dir: &OwnedFd, temp: &Path) -> io::Result<()> {
    open_at(dir, &c_name(temp)?, temp)?.sync_data()
}

/// Flushes the whole filesystem `file` is on (`syncfs`): every dirty page and inode on it. How a
/// batch of outputs is made durable: measured on ext4 (BENCHMARKS.md, "Flushing a batch"), 2000
/// files of 44 KB took 1.14× the time of no flush at all with one `syncfs`, 3.8× with early
/// `sync_file_range` then `fdatasync` of each, and 9× with an fsync of each. `syncfs` also writes
/// what other processes left dirty on the filesystem, and says only that some write-back failed,
/// not which: when it fails, each file is flushed on its own ([`flush_at`]), so that the error
/// lands on the files it concerns.
pub fn sync_filesystem(file: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: a plain system call on an open descriptor.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Links an unnamed open file under `name` (relative to the folder `dir`, or to the current one
/// for `AT_FDCWD`): by its descriptor (`linkat` with `AT_EMPTY_PATH`, which Linux allows since
/// 6.10 to the process that opened the file, and before only with CAP_DAC_READ_SEARCH), else
/// through its `/proc/self/fd` entry, a path lookup in `/proc` that costs more than the link
/// itself. Once the first fails, only the second is tried.
fn link(file: &File, dir: libc::c_int, to: &CStr) -> io::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static BY_DESCRIPTOR: AtomicBool = AtomicBool::new(true);
    let mut refused = false;
    if BY_DESCRIPTOR.load(Ordering::Relaxed) {
        // SAFETY: valid descriptors, an empty and a NUL-terminated name that outlive the call.
        let r = unsafe {
            libc::linkat(
                file.as_raw_fd(),
                c"".as_ptr(),
                dir,
                to.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // Refused for want of the capability: ENOENT (or EPERM where a security module says
        // so), which a missing folder gives too; any other error is the link's own.
        if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EPERM)) {
            return Err(e);
        }
        refused = true;
    }
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL");
    // SAFETY: valid descriptors and NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            dir,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if refused {
        // The same link through /proc worked: it was the capability.
        BY_DESCRIPTOR.store(false, Ordering::Relaxed);
    }
    Ok(())
}

/// [`link`] under `name` in the open folder `dir`.
fn link_in(file: &File, dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    link(file, dir.as_raw_fd(), name)
}

/// Unnamed files are used only where they can always be linked: through `/proc` if not by their
/// descriptor (see [`link`]). `ETL_NO_TMPFILE` set to anything turns
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
    use std::os::unix::fs::PermissionsExt;

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

    #[test]
    fn temporaries_are_private_until_published_with_their_final_mode() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        let whole = dir.path().join(".w.0of1.etl-tmp");
        NewFile::create(&whole).unwrap().finish().unwrap();
        assert_eq!(mode(&whole), 0o600);
        let named = dir.path().join(".n.0of1.etl-tmp");
        drop(create_new(&named).unwrap());
        assert_eq!(mode(&named), 0o600);
        let shared = dir.path().join(".s.0of1.etl-tmp");
        drop(open_shared_temp(&shared).unwrap());
        assert_eq!(mode(&shared), 0o600);
        let output = dir.path().join("s-transformed.wav");
        publish(&shared, &output, 0o640, None).unwrap();
        assert_eq!(mode(&output), 0o640);
    }

    #[test]
    fn an_unnamed_output_has_its_final_mode_from_the_start_and_a_named_one_gets_it_at_publish() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        let wanted = 0o640 & !umask();
        let temp = dir.path().join(".u.0of1.etl-tmp");
        let new = NewFile::create_with_mode(&temp, unnamed_mode(0o100640)).unwrap();
        let unnamed = new.unnamed;
        new.finish().unwrap();
        if unnamed {
            assert_eq!(mode(&temp), wanted);
        } else {
            assert_eq!(mode(&temp), 0o600);
        }
        let output = dir.path().join("u-transformed.wav");
        publish(&temp, &output, wanted, None).unwrap();
        assert_eq!(mode(&output), wanted);
        // An owner who could not read it (to flush it) gets a private temporary instead.
        assert_eq!(unnamed_mode(0o444), 0o600);
        assert_eq!(unnamed_mode(0o4755), 0o755);
    }

    #[test]
    fn a_hard_linked_or_foreign_temporary_is_never_published() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(".h.0of1.etl-tmp");
        drop(create_new(&temp).unwrap());
        fs::hard_link(&temp, dir.path().join("elsewhere")).unwrap();
        let output = dir.path().join("h-transformed.wav");
        let e = publish(&temp, &output, 0o600, None).unwrap_err();
        assert!(e.to_string().ends_with("it has 2 links"), "{e}");
        assert!(!output.exists());
        let folder = dir.path().join("sub");
        fs::create_dir(&folder).unwrap();
        let e = publish(&folder, &dir.path().join("x"), 0o600, None).unwrap_err();
        assert!(e.to_string().ends_with("it is not a regular file"), "{e}");
    }

    #[test]
    fn a_link_in_place_of_a_finished_temporary_is_never_published() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"victim").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        let temp = dir.path().join(".a.0of1.etl-tmp");
        std::os::unix::fs::symlink(&victim, &temp).unwrap();
        let output = dir.path().join("a-transformed.wav");
        let e = publish(&temp, &output, 0o600, None).unwrap_err();
        assert!(e.to_string().ends_with("it is a symbolic link"), "{e}");
        assert!(!output.exists());
        assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o777, 0o644);
    }

    #[test]
    fn a_folder_swapped_for_a_link_after_it_was_made_is_not_published_into() {
        let dir = tempfile::tempdir().unwrap();
        let (root, elsewhere) = (dir.path().join("out"), dir.path().join("elsewhere"));
        make_folders(&root, Path::new("sub")).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        let temp = root.join("sub/.a.0of1.etl-tmp");
        drop(create_new(&temp).unwrap());
        // Swapped: the temporary now sits where the link points.
        fs::rename(
            root.join("sub/.a.0of1.etl-tmp"),
            elsewhere.join(".a.0of1.etl-tmp"),
        )
        .unwrap();
        fs::remove_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("sub")).unwrap();
        let output = root.join("sub/a-transformed.wav");
        let e = publish(&temp, &output, 0o644, Some(&root)).unwrap_err();
        assert!(e.to_string().ends_with("sub: it is a symbolic link"), "{e}");
        assert!(!elsewhere.join("a-transformed.wav").exists());
        // Without the trusted root the same call follows the link: the check is what stops it.
        publish(&temp, &output, 0o644, None).unwrap();
        assert!(elsewhere.join("a-transformed.wav").exists());
    }
}
