//! The order of the system calls that make outputs durable, as strace sees them: no output gets
//! its final name before a flush that covers its data has returned (one flush for a batch of
//! files), and each output folder is flushed after its renames. Skipped, with a line saying so, where strace is missing.

mod common;

use common::*;
use std::path::Path;

/// The flush that covers the data written through `fd` in thread `pid` before line `written`
/// (the call that named it) and that returned before line `before`: an fsync or fdatasync of that
/// descriptor in that thread, or a syncfs anywhere that started after `written`.
fn covering_flush<'a>(
    calls: &'a [Syscall],
    pid: u32,
    fd: i32,
    written: &Syscall,
    before: usize,
) -> Option<&'a Syscall> {
    // The descriptor's file is the one last opened under that number before it was named.
    let opened = calls
        .iter()
        .filter(|c| c.pid == pid && c.ret == fd as i64 && c.end < written.start)
        .map(|c| c.end)
        .max()
        .unwrap_or(0);
    calls.iter().find(|c| {
        c.end < before
            && c.ret == 0
            && match c.name.as_str() {
                "fsync" | "fdatasync" => {
                    c.pid == pid && c.start > opened && c.fd(0).is_some_and(|(f, _)| f == fd)
                }
                "syncfs" => c.start > written.end,
                _ => false,
            }
    })
}

#[test]
fn every_output_is_flushed_before_its_final_name_and_its_folder_after() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in");
    gen_fake_data(&data, &["--count", "6", "--duration", "0.05"]);
    let data_s = data.to_str().unwrap();
    let Some((run, calls)) = etl_traced(
        dir.path(),
        STRACE_DURABILITY_CALLS,
        &["run", "--no-progress", "-j", "2", data_s],
    ) else {
        return;
    };
    run.expect_code(0);
    assert_eq!(run.counts().ok, 6);

    let renames: Vec<&Syscall> = calls
        .iter()
        .filter(|c| c.name.starts_with("rename") && c.ret == 0)
        .filter(|c| {
            c.paths()
                .last()
                .is_some_and(|p| p.ends_with("-transformed.wav"))
        })
        .collect();
    assert_eq!(
        renames.len(),
        6,
        "one rename to a final name per output: {:#?}",
        calls
            .iter()
            .filter(|c| c.name.starts_with("rename"))
            .collect::<Vec<_>>()
    );
    for rename in &renames {
        let paths = rename.paths();
        let (temp, output) = (&paths[0], &paths[paths.len() - 1]);
        assert!(
            Path::new(output).exists(),
            "{output} was renamed into place"
        );
        // The temporary got its name from the unnamed file the worker wrote: linked by its
        // descriptor (`linkat(7, "", ..., AT_EMPTY_PATH)`) or through `/proc/self/fd/7`.
        let link = calls
            .iter()
            .find(|c| c.name == "linkat" && c.ret == 0 && c.paths().last() == Some(temp))
            .unwrap_or_else(|| panic!("no linkat made {temp}"));
        let from = &link.paths()[0];
        let fd: i32 = match from.strip_prefix("/proc/self/fd/") {
            Some(n) => n.parse().ok(),
            None if from.is_empty() && link.args.iter().any(|a| a.contains("AT_EMPTY_PATH")) => {
                link.fd(0).map(|(fd, _)| fd)
            }
            None => None,
        }
        .unwrap_or_else(|| panic!("{temp} was linked from {from:?}: {link:?}"));
        assert!(link.end < rename.start);
        let flush = covering_flush(&calls, link.pid, fd, link, rename.start);
        assert!(
            flush.is_some(),
            "{output} got its final name (line {}) before any flush of its data returned",
            rename.start + 1
        );
    }

    // Group commit: the data is flushed for many files at once (a syncfs), never file by file.
    let per_file: Vec<&Syscall> = calls
        .iter()
        .filter(|c| matches!(c.name.as_str(), "fsync" | "fdatasync") && c.ret == 0)
        .filter(|c| {
            c.fd(0)
                .and_then(|(_, p)| p)
                .is_none_or(|p| !Path::new(&p).is_dir())
        })
        .collect();
    assert!(
        per_file.is_empty(),
        "outputs flushed one by one: {per_file:#?}"
    );
    assert!(
        calls.iter().any(|c| c.name == "syncfs" && c.ret == 0),
        "no shared flush"
    );

    // The folder holding the names is flushed after the last rename into it.
    let last_rename = renames.iter().map(|c| c.end).max().unwrap();
    let folder = std::fs::canonicalize(&data).unwrap();
    let folder_flushed = calls.iter().any(|c| {
        matches!(c.name.as_str(), "fsync" | "fdatasync" | "syncfs")
            && c.ret == 0
            && c.start > last_rename
            && c.fd(0)
                .and_then(|(_, p)| p)
                .is_some_and(|p| Path::new(&p) == folder)
    });
    assert!(
        folder_flushed,
        "{} was not flushed after its last rename",
        folder.display()
    );
}

#[test]
fn the_strace_parser_joins_interrupted_calls_and_resolves_folder_descriptors() {
    let log = "\
10 openat(AT_FDCWD</w>, \"/w/d\", O_RDWR|O_CLOEXEC|O_TMPFILE, 0600 <unfinished ...>
11 fsync(7</w/d/x.wav>) = 0
10 <... openat resumed>) = 6</w/d/#12 (deleted)>
10 renameat(5</w/d>, \".a, b.etl-tmp\", 5</w/d>, \"a-transformed.wav\")    = 0
11 unlink(\"/w/d/gone\") = -1 ENOENT (No such file or directory)
11 +++ exited with 0 +++
";
    let calls = parse_strace(log);
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!((calls[0].name.as_str(), calls[0].pid), ("fsync", 11));
    assert_eq!(calls[0].fd(0), Some((7, Some("/w/d/x.wav".into()))));
    let open = &calls[1];
    assert_eq!(
        (open.name.as_str(), open.start, open.end, open.ret),
        ("openat", 0, 2, 6)
    );
    assert_eq!(
        calls[2].paths(),
        ["/w/d/.a, b.etl-tmp", "/w/d/a-transformed.wav"]
    );
    assert_eq!(
        (calls[3].ret, calls[3].errno.as_deref()),
        (-1, Some("ENOENT"))
    );
}
