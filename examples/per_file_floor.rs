//! The least the kernel must do per file to give every input of a folder an output, with nothing
//! else around it: no supervisor, no messages, no transform, no checks. A yardstick for the cost
//! of a file in `etl run` (bench/README.md, "The per-file floor").
//!
//! `cargo run --release --example per_file_floor -- DIR THREADS MODE`
//!
//! Lists DIR once and looks at every `*.wav` in it (`fstatat`, as discovery does for size and
//! kind), then THREADS threads share the files, each copying its files to `.NAME.floor` in DIR:
//!
//! - `atomic`: `openat` the input, one `pread`, `O_TMPFILE` in the folder, one `pwrite`,
//!   `linkat` to the name, two `close`: an output that appears whole or not at all;
//! - `plain`: `openat` the input, one `pread`, `openat` of the name with `O_CREAT|O_TRUNC`, one
//!   `pwrite`, two `close`: what the Python pool does, an output that can be seen half-written.
//!
//! Prints the seconds of the listing and of the copies. Files over 64 KiB are not copied whole.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, threads, mode] = args.as_slice() else {
        eprintln!("usage: per_file_floor DIR THREADS atomic|plain");
        std::process::exit(2);
    };
    let threads: usize = threads.parse().expect("THREADS is a number");
    let atomic = match mode.as_str() {
        "atomic" => true,
        "plain" => false,
        _ => panic!("MODE is atomic or plain"),
    };
    let start = Instant::now();
    let folder = std::fs::File::open(dir).expect("DIR opens");
    let mut names: Vec<(CString, CString)> = Vec::new();
    for entry in std::fs::read_dir(dir).expect("DIR lists") {
        let name = entry.expect("DIR lists").file_name();
        let bytes = name.as_bytes();
        if bytes.starts_with(b".") || !bytes.ends_with(b".wav") {
            continue;
        }
        let name = CString::new(bytes).unwrap();
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let found = unsafe {
            libc::fstatat(
                folder.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if found == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            let out = [b".", bytes, b".floor"].concat();
            names.push((name, CString::new(out).unwrap()));
        }
    }
    let listed = start.elapsed().as_secs_f64();
    let dirfd = folder.as_raw_fd();
    let copies = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let names = &names;
            s.spawn(move || {
                let mut buf = vec![0u8; 65536];
                for (name, out) in names.iter().skip(t).step_by(threads) {
                    copy(dirfd, name, out, atomic, &mut buf);
                }
            });
        }
    });
    println!(
        "{} files: listing and looks {:.3} s, copies {:.3} s ({} threads, {mode})",
        names.len(),
        listed,
        copies.elapsed().as_secs_f64(),
        threads
    );
}

fn fd(raw: libc::c_int, what: &str) -> OwnedFd {
    assert!(raw >= 0, "{what}: {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn copy(dir: libc::c_int, name: &CString, out: &CString, atomic: bool, buf: &mut [u8]) {
    // SAFETY: plain system calls on descriptors this function owns and on `buf`.
    unsafe {
        let input = fd(
            libc::openat(dir, name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC),
            "open",
        );
        let n = libc::pread(input.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
        assert!(n >= 0, "read");
        let flags = libc::O_WRONLY | libc::O_CLOEXEC;
        let output = if atomic {
            fd(
                libc::openat(dir, c".".as_ptr(), flags | libc::O_TMPFILE, 0o644),
                "O_TMPFILE",
            )
        } else {
            fd(
                libc::openat(
                    dir,
                    out.as_ptr(),
                    flags | libc::O_CREAT | libc::O_TRUNC,
                    0o644,
                ),
                "create",
            )
        };
        let w = libc::pwrite(output.as_raw_fd(), buf.as_ptr().cast(), n as usize, 0);
        assert_eq!(w, n, "write");
        if atomic {
            let linked = libc::linkat(
                output.as_raw_fd(),
                c"".as_ptr(),
                dir,
                out.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            assert_eq!(linked, 0, "linkat: {}", std::io::Error::last_os_error());
        }
    }
}
