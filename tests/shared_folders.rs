//! Runs in folders other users can write to (an inbox, a group project folder, a shared volume):
//! a symbolic or hard link planted under any name etl writes — the lock files, the temporary
//! outputs, the output name, a mirrored `--out-dir` folder — never makes etl write another file,
//! and an output never grants more than its input.
//!
//! Each case plants a link pointing at a victim outside the folder, runs the real binary, and
//! checks that the victim's bytes and mode are unchanged and that the run either completed with
//! the right outputs or refused with `refusing PATH: WHY`. Temporary names are predictable
//! (`.NAME-transformed.wav.0of1.etl-tmp`). A link planted there before the run is left alone by
//! the sweep, which removes only what a killed run leaves (regular files with one link), so the
//! worker meets it exactly as it would meet a link planted between the sweep and its open.
//! The planter is this process, and `nobody` (through setpriv) where the tests run as root.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use tempfile::TempDir;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Link {
    Symbolic,
    Hard,
}

impl Link {
    /// The reason etl gives for refusing a name holding this link.
    fn refusal(self) -> &'static str {
        match self {
            Link::Symbolic => "it is a symbolic link",
            Link::Hard => "it has 2 links",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Planter {
    /// The user running the tests (and etl).
    Me,
    /// `nobody`, another user who can write in the folder.
    Nobody,
}

const VICTIM_BYTES: &[u8] = b"victim: etl must never write here\n";
const VICTIM_MODE: u32 = 0o640;
const SEED: &str = "7";

/// A temporary folder holding `sounds/` (writable by everyone, as a shared inbox is), two small
/// inputs in it, and a victim file outside it.
struct Scene {
    dir: TempDir,
    planter: Planter,
}

impl Scene {
    /// `None`, after printing why, when `planter` cannot be played here.
    fn new(planter: Planter) -> Option<Scene> {
        if planter == Planter::Nobody && as_nobody("true").is_none() {
            println!("skipped: planting as nobody needs root and setpriv");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let scene = Scene { dir, planter };
        fs::create_dir(scene.sounds()).unwrap();
        chmod(&scene.sounds(), 0o777);
        for name in ["a.wav", "b.wav"] {
            write_input(&scene.sounds().join(name));
        }
        fs::write(scene.victim(), VICTIM_BYTES).unwrap();
        chmod(&scene.victim(), VICTIM_MODE);
        if planter == Planter::Nobody {
            // Protected hard links let a user link only files they own (or may read and write).
            std::os::unix::fs::chown(scene.victim(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        Some(scene)
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn sounds(&self) -> PathBuf {
        self.root().join("sounds")
    }

    fn victim(&self) -> PathBuf {
        self.root().join("victim")
    }

    /// Plants `link` at `at`, pointing at `target`, as the planter.
    fn plant_to(&self, link: Link, at: &Path, target: &Path) {
        match self.planter {
            Planter::Me => match link {
                Link::Symbolic => std::os::unix::fs::symlink(target, at).unwrap(),
                Link::Hard => fs::hard_link(target, at).unwrap(),
            },
            Planter::Nobody => {
                let (t, a) = (target.to_str().unwrap(), at.to_str().unwrap());
                let args = match link {
                    Link::Symbolic => vec!["-s", t, a],
                    Link::Hard => vec![t, a],
                };
                let status = as_nobody("ln").unwrap().args(&args).status().unwrap();
                assert!(status.success(), "nobody could not plant {a}");
                assert_eq!(fs::symlink_metadata(at).unwrap().uid(), NOBODY);
            }
        }
    }

    fn plant(&self, link: Link, at: &Path) {
        self.plant_to(link, at, &self.victim());
    }

    fn assert_victim_unchanged(&self, case: &str) {
        let victim = self.victim();
        assert_eq!(
            fs::read(&victim).unwrap(),
            VICTIM_BYTES,
            "{case}: victim's bytes changed"
        );
        let mode = fs::metadata(&victim).unwrap().mode() & 0o7777;
        assert_eq!(
            mode, VICTIM_MODE,
            "{case}: victim's mode changed to {mode:o}"
        );
    }

    /// `etl run --no-progress ARGS --seed 7` in the scene's folder, with `env` set.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = etl();
        cmd.current_dir(self.root())
            .args(["run", "--no-progress", "--seed", SEED])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from_output(cmd.output().unwrap())
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn write_input(path: &Path) {
    write_tone(path, spec(1, 8000, 16, false), 4000, 440.0, 0.5);
}

/// A silent 16-bit WAV with `data_len` bytes of samples, written sparse (quick to make at any
/// size).
fn write_silent_wav(path: &Path, data_len: u32) {
    let mut header = Vec::new();
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(36 + data_len).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes()); // PCM
    header.extend_from_slice(&1u16.to_le_bytes()); // mono
    header.extend_from_slice(&8000u32.to_le_bytes());
    header.extend_from_slice(&16000u32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&16u16.to_le_bytes());
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data_len.to_le_bytes());
    fs::write(path, &header).unwrap();
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(header.len() as u64 + data_len as u64).unwrap();
    drop(file);
    settle(path);
}

/// The bytes `etl run --seed 7` gives `name` (one of the scene's inputs) in a clean folder.
fn reference_output(name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("sounds")).unwrap();
    let input = dir.path().join("sounds").join(name);
    write_input(&input);
    run_in(dir.path(), &["sounds", "--seed", SEED]).expect_code(0);
    fs::read(output_of(&input)).unwrap()
}

/// Every variant: links of both kinds, planted by both planters.
fn variants() -> Vec<(Planter, Link)> {
    let mut v = Vec::new();
    for planter in [Planter::Me, Planter::Nobody] {
        for link in [Link::Symbolic, Link::Hard] {
            v.push((planter, link));
        }
    }
    v
}

/// The lines of `stderr` that refuse `path` for `why`.
/// Who gives a whole output its final name: the supervisor after a flush (the default), or the
/// worker itself when nothing is flushed (`--no-fsync`). Both must refuse the same links.
#[derive(Clone, Copy, Debug)]
enum Durability {
    Flushed,
    NoFsync,
}

const DURABILITIES: [Durability; 2] = [Durability::Flushed, Durability::NoFsync];

impl Durability {
    /// `args` with this durability's flag.
    fn with<'a>(self, args: &[&'a str]) -> Vec<&'a str> {
        let mut args = args.to_vec();
        if let Durability::NoFsync = self {
            args.push("--no-fsync");
        }
        args
    }
}

fn with_durabilities(v: Vec<(Planter, Link)>) -> Vec<(Planter, Link, Durability)> {
    v.into_iter()
        .flat_map(|(p, l)| DURABILITIES.map(|d| (p, l, d)))
        .collect()
}

fn refusals(stderr: &str, path: &str, why: &str) -> usize {
    let line = format!("refusing {path}: {why}");
    stderr.lines().filter(|l| l.contains(&line)).count()
}

fn no_outputs_or_temporaries(dir: &Path) -> bool {
    names(dir)
        .iter()
        .all(|n| !n.ends_with("-transformed.wav") && !n.ends_with(".etl-tmp"))
}

#[test]
fn a_link_planted_at_a_lock_file_stops_the_run_before_any_work() {
    for (planter, link) in variants() {
        for (lock, extra) in [
            (".etl.lock", &[][..]),
            (".etl-shard-0of2.lock", &["--shard", "0/2"][..]),
        ] {
            let case = format!("{planter:?} plants a {link:?} link at {lock}");
            let Some(scene) = Scene::new(planter) else {
                return;
            };
            scene.plant(link, &scene.sounds().join(lock));
            let before = names(&scene.sounds());
            let mut args = vec!["sounds"];
            args.extend_from_slice(extra);
            let run = scene.run(&args, &[]);
            run.expect_code(1);
            assert_eq!(
                refusals(&run.stderr, &format!("sounds/{lock}"), link.refusal()),
                1,
                "{case}: no one refusal line\n{}",
                run.stderr
            );
            assert!(run.stdout.is_empty(), "{case}: {}", run.stdout);
            // A shard run takes `.etl.lock` (shared) before its own lock: that file alone may
            // be new.
            let mut after = names(&scene.sounds());
            if !before.contains(&".etl.lock".to_string()) {
                after.retain(|n| n != ".etl.lock");
            }
            assert_eq!(after, before, "{case}: the run wrote in the folder");
            scene.assert_victim_unchanged(&case);
        }
    }
}

#[test]
fn a_fifo_or_a_folder_at_the_lock_stops_the_run_without_hanging() {
    for kind in ["fifo", "folder"] {
        let Some(scene) = Scene::new(Planter::Me) else {
            return;
        };
        let lock = scene.sounds().join(".etl.lock");
        let made = match kind {
            "fifo" => std::process::Command::new("mkfifo").arg(&lock).status(),
            _ => fs::create_dir(&lock).map(|()| std::process::ExitStatus::default()),
        };
        assert!(made.unwrap().success());
        let before = names(&scene.sounds());
        let run = scene.run(&["sounds"], &[]);
        run.expect_code(1);
        assert_eq!(
            refusals(&run.stderr, "sounds/.etl.lock", "it is not a regular file"),
            1,
            "{kind}\n{}",
            run.stderr
        );
        assert_eq!(names(&scene.sounds()), before, "{kind}: the run wrote");
    }
}

#[test]
fn a_link_planted_at_a_whole_files_temporary_is_refused_and_the_other_files_go_on() {
    let expected_b = reference_output("b.wav");
    for (planter, link, durability) in with_durabilities(variants()) {
        for no_tmpfile in [false, true] {
            let case = format!(
                "{planter:?} plants a {link:?} link, ETL_NO_TMPFILE {no_tmpfile}, {durability:?}"
            );
            let Some(scene) = Scene::new(planter) else {
                return;
            };
            let temp = ".a-transformed.wav.0of1.etl-tmp";
            scene.plant(link, &scene.sounds().join(temp));
            // A worker that names its output links it straight to the final name when that
            // is free, and needs the temporary name only to replace an output: there is one.
            let output = scene.sounds().join("a-transformed.wav");
            if let Durability::NoFsync = durability {
                fs::write(&output, b"an earlier output").unwrap();
            }
            let env: &[(&str, &str)] = if no_tmpfile {
                &[("ETL_NO_TMPFILE", "1")]
            } else {
                &[]
            };
            let run = scene.run(&durability.with(&["sounds", "--force"]), env);
            run.expect_code(1);
            assert_eq!(run.counts(), Counts::new(1, 0, 1), "{case}");
            assert_eq!(
                refusals(&run.stderr, &format!("sounds/{temp}"), link.refusal()),
                1,
                "{case}\n{}",
                run.stderr
            );
            match durability {
                Durability::Flushed => assert!(!output.exists(), "{case}"),
                Durability::NoFsync => assert_eq!(
                    fs::read(&output).unwrap(),
                    b"an earlier output",
                    "{case}: the output was touched"
                ),
            }
            assert_eq!(
                fs::read(scene.sounds().join("b-transformed.wav")).unwrap(),
                expected_b,
                "{case}: the other file's output is wrong"
            );
            scene.assert_victim_unchanged(&case);
        }
    }
}

/// Without flushes a worker names a whole output itself, linking it straight to its final name
/// when that name is free: a link planted at the temporary name then changes nothing, and is
/// left where it is (etl does not remove what it did not make).
#[test]
fn a_worker_naming_a_new_output_never_uses_the_temporary_name() {
    for (planter, link) in variants() {
        let case = format!("{planter:?} plants a {link:?} link");
        let Some(scene) = Scene::new(planter) else {
            return;
        };
        let temp = scene.sounds().join(".a-transformed.wav.0of1.etl-tmp");
        scene.plant(link, &temp);
        let run = scene.run(&["sounds", "--no-fsync"], &[]);
        run.expect_code(0);
        assert_eq!(run.counts(), Counts::new(2, 0, 0), "{case}");
        let output = scene.sounds().join("a-transformed.wav");
        assert_eq!(
            fs::read(&output).unwrap(),
            reference_output("a.wav"),
            "{case}"
        );
        assert_eq!(fs::metadata(&output).unwrap().nlink(), 1, "{case}");
        assert!(fs::symlink_metadata(&temp).is_ok(), "{case}: the link went");
        scene.assert_victim_unchanged(&case);
    }
}

#[test]
fn a_link_planted_at_a_split_files_temporary_is_refused_before_any_part_writes() {
    // Files of at least 64 MiB are split into parts when there are two workers or more; the parts
    // share one temporary, which each of them opens (and the first creates).
    let data_len = (64 << 20) + 4096;
    for (planter, link) in variants() {
        let case = format!("{planter:?} plants a {link:?} link at a split file's temporary");
        let Some(scene) = Scene::new(planter) else {
            return;
        };
        fs::remove_file(scene.sounds().join("a.wav")).unwrap();
        fs::remove_file(scene.sounds().join("b.wav")).unwrap();
        write_silent_wav(&scene.sounds().join("big.wav"), data_len);
        let temp = ".big-transformed.wav.0of1.etl-tmp";
        scene.plant(link, &scene.sounds().join(temp));
        let run = scene.run(&["sounds", "-j", "2", "--no-fsync"], &[]);
        run.expect_code(1);
        assert_eq!(run.counts(), Counts::new(0, 0, 1), "{case}");
        assert!(
            refusals(&run.stderr, &format!("sounds/{temp}"), link.refusal()) >= 1,
            "{case}\n{}",
            run.stderr
        );
        assert!(no_outputs_or_temporaries(&scene.sounds()), "{case}");
        scene.assert_victim_unchanged(&case);
        // With the link gone (the failed file's cleanup removed the name), the same run works:
        // the refusal above came from the planted link, not from the split.
        let run = scene.run(&["sounds", "-j", "2", "--no-fsync"], &[]);
        run.expect_code(0);
        let out = scene.sounds().join("big-transformed.wav");
        assert_eq!(fs::metadata(out).unwrap().len(), 44 + data_len as u64);
    }
}

#[test]
fn a_link_planted_at_the_output_name_is_replaced_never_written_through() {
    let expected = reference_output("a.wav");
    // Flushed outputs are named by the supervisor, the others by their worker.
    for (planter, link, durability) in with_durabilities(variants()) {
        let case =
            format!("{planter:?} plants a {link:?} link at the output, --force {durability:?}");
        let Some(scene) = Scene::new(planter) else {
            return;
        };
        let output = scene.sounds().join("a-transformed.wav");
        scene.plant(link, &output);
        let run = scene.run(&durability.with(&["sounds", "--force"]), &[]);
        run.expect_code(0);
        assert_eq!(run.counts(), Counts::new(2, 0, 0), "{case}");
        let meta = fs::symlink_metadata(&output).unwrap();
        assert!(
            meta.file_type().is_file(),
            "{case}: the output is not a file"
        );
        assert_eq!(meta.nlink(), 1, "{case}: the output is still linked");
        assert_eq!(fs::read(&output).unwrap(), expected, "{case}: wrong output");
        scene.assert_victim_unchanged(&case);
    }
}

#[test]
fn a_link_planted_at_a_mirrored_out_dir_folder_is_refused() {
    for (planter, link, durability) in with_durabilities(variants()) {
        let case = format!("{planter:?} plants a {link:?} link at out/sub, {durability:?}");
        let Some(scene) = Scene::new(planter) else {
            return;
        };
        let sub = scene.sounds().join("sub");
        fs::create_dir(&sub).unwrap();
        write_input(&sub.join("c.wav"));
        let out = scene.root().join("out");
        fs::create_dir(&out).unwrap();
        chmod(&out, 0o777);
        // A folder cannot be hard-linked: the hard-link planter links the victim file there.
        let victim_folder = scene.root().join("victim-folder");
        fs::create_dir(&victim_folder).unwrap();
        match link {
            Link::Symbolic => scene.plant_to(link, &out.join("sub"), &victim_folder),
            Link::Hard => scene.plant(link, &out.join("sub")),
        }
        let run = scene.run(&durability.with(&["sounds", "-r", "--out-dir", "out"]), &[]);
        run.expect_code(1);
        assert_eq!(run.counts(), Counts::new(2, 0, 1), "{case}");
        let why = match link {
            Link::Symbolic => "it is a symbolic link",
            Link::Hard => "it is not a folder",
        };
        assert_eq!(
            refusals(&run.stderr, "out/sub", why),
            1,
            "{case}\n{}",
            run.stderr
        );
        assert!(
            names(&victim_folder).is_empty(),
            "{case}: wrote through the link"
        );
        assert!(out.join("a-transformed.wav").is_file(), "{case}");
        scene.assert_victim_unchanged(&case);
    }
}

/// The mode of the output of a `mode` input, run under `umask`, through each kind of temporary,
/// named by the supervisor (flushed) or by the worker (`--no-fsync`).
fn output_mode(input_mode: u32, umask: u32, no_tmpfile: bool, durability: Durability) -> u32 {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("secret.wav");
    write_input(&input);
    chmod(&input, input_mode);
    let mut cmd = etl_with_umask(umask);
    if no_tmpfile {
        cmd.env("ETL_NO_TMPFILE", "1");
    }
    let run = Run::from_output(
        cmd.current_dir(dir.path())
            .args(durability.with(&["run", "--no-progress", "secret.wav"]))
            .output()
            .unwrap(),
    );
    run.expect_code(0);
    fs::metadata(output_of(&input)).unwrap().mode() & 0o7777
}

#[test]
fn an_output_gets_its_inputs_permissions_masked_by_the_umask() {
    for (no_tmpfile, durability) in [false, true]
        .into_iter()
        .flat_map(|t| DURABILITIES.map(|d| (t, d)))
    {
        for (input, umask, expected) in [
            (0o600, 0o022, 0o600),
            (0o644, 0o077, 0o600),
            (0o640, 0o022, 0o640),
            (0o644, 0o022, 0o644),
            (0o664, 0o002, 0o664),
            // Read-only: the output is made private (its owner must be able to write it),
            // then given this mode.
            (0o444, 0o022, 0o444),
        ] {
            assert_eq!(
                output_mode(input, umask, no_tmpfile, durability),
                expected,
                "input {input:o} under umask {umask:o} (ETL_NO_TMPFILE {no_tmpfile}, {durability:?})"
            );
        }
    }
}

/// Gives `dir` the default ACL `u::rw-,g::r--,o::r--` (no named entries): a file made in it
/// gets its mode from this and the mode asked for, not from the umask. False where the file
/// system has no ACLs.
fn set_default_acl(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    // The kernel's posix_acl_xattr format: version 2, then (tag, permissions, id) entries in
    // order of their tag: USER_OBJ, GROUP_OBJ, OTHER.
    let mut value = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 6u16), (0x04, 4), (0x20, 4)] {
        value.extend(tag.to_le_bytes());
        value.extend(perm.to_le_bytes());
        value.extend(u32::MAX.to_le_bytes());
    }
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a buffer that outlive the call.
    let set = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"system.posix_acl_default".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if set == 0 {
        return true;
    }
    let e = std::io::Error::last_os_error();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP),
        "setting the ACL: {e}"
    );
    false
}

#[test]
fn a_folders_default_acl_does_not_change_an_outputs_mode() {
    for (no_tmpfile, durability) in [false, true]
        .into_iter()
        .flat_map(|t| DURABILITIES.map(|d| (t, d)))
    {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        if !set_default_acl(&out) {
            eprintln!("skipped: {} has no ACLs", out.display());
            return;
        }
        let input = dir.path().join("a.wav");
        write_input(&input);
        chmod(&input, 0o644);
        let mut cmd = etl_with_umask(0o077);
        if no_tmpfile {
            cmd.env("ETL_NO_TMPFILE", "1");
        }
        let run = Run::from_output(
            cmd.current_dir(dir.path())
                .args(durability.with(&["run", "--no-progress", "--out-dir", "out", "a.wav"]))
                .output()
                .unwrap(),
        );
        run.expect_code(0);
        let output = out.join("a-transformed.wav");
        // The ACL alone would give 0644; the input's mode under the umask is 0600.
        let mode = fs::metadata(&output).unwrap().mode() & 0o7777;
        assert_eq!(
            format!("{mode:o}"),
            "600",
            "ETL_NO_TMPFILE {no_tmpfile}, {durability:?}"
        );
        assert_eq!(
            fs::read(&output).unwrap().len(),
            fs::read(&input).unwrap().len()
        );
    }
}

#[test]
fn generated_files_follow_the_umask_and_the_lock_is_never_world_writable() {
    for (umask, file_mode, lock_mode) in [
        (0o077, 0o600, 0o600),
        (0o022, 0o644, 0o644),
        (0, 0o666, 0o664),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run = Run::from_output(
            etl_with_umask(umask)
                .current_dir(dir.path())
                .args(["-q", "gen-fake-data", "--out-dir", "g", "--count", "1"])
                .args(["--duration", "0.1"])
                .output()
                .unwrap(),
        );
        run.expect_code(0);
        let mode = |name: &str| {
            fs::metadata(dir.path().join("g").join(name))
                .unwrap()
                .mode()
                & 0o777
        };
        assert_eq!(mode("example0.wav"), file_mode, "umask {umask:o}");
        assert_eq!(mode(".etl.lock"), lock_mode, "umask {umask:o}");
    }
}

/// `sounds/` with a real input, a link to an input outside it, and a link to a folder outside it.
fn folder_with_links_out(root: &Path) -> PathBuf {
    let sounds = root.join("sounds");
    let outside = root.join("outside");
    fs::create_dir_all(sounds.join("sub")).unwrap();
    fs::create_dir(&outside).unwrap();
    write_input(&sounds.join("b.wav"));
    write_input(&outside.join("secret.wav"));
    std::os::unix::fs::symlink("../outside/secret.wav", sounds.join("a.wav")).unwrap();
    std::os::unix::fs::symlink("../../outside", sounds.join("sub/link")).unwrap();
    outside
}

#[test]
fn no_follow_takes_no_symbolic_link_below_a_path_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let outside = folder_with_links_out(dir.path());
    let before = names(&outside);
    let run = run_in(dir.path(), &["sounds", "-r", "--no-follow", "--seed", SEED]);
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(1, 1, 0));
    assert!(
        run.stderr
            .contains("sounds/a.wav: skipped: a symbolic link, not followed (--no-follow)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "sounds/sub/link: skipped: a symbolic link to a folder, not followed (--no-follow)"
        ),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("sounds/a-transformed.wav").exists());
    assert_eq!(names(&outside), before, "wrote outside the PATH");

    // The default is unchanged: both links are followed.
    let run = run_in(dir.path(), &["sounds", "-r", "--seed", SEED]);
    run.expect_code(0);
    assert_eq!(run.counts(), Counts::new(2, 1, 0));
    assert!(dir.path().join("sounds/a-transformed.wav").is_file());
    assert!(outside.join("secret-transformed.wav").is_file());
}

/// Planted as the tests' own user, a symbolic link at the lock is refused the same way when the
/// run is not root: what matters is the link, not who made it.
#[test]
fn an_unprivileged_run_refuses_a_planted_lock_link_too() {
    if as_nobody("true").is_none() {
        println!("skipped: running etl as nobody needs root and setpriv");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o777);
    let sounds = dir.path().join("sounds");
    fs::create_dir(&sounds).unwrap();
    write_input(&sounds.join("a.wav"));
    std::os::unix::fs::chown(&sounds, Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::chown(sounds.join("a.wav"), Some(NOBODY), Some(NOBODY)).unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, VICTIM_BYTES).unwrap();
    chmod(&victim, 0o666);
    std::os::unix::fs::symlink(&victim, sounds.join(".etl.lock")).unwrap();
    let etl_path = assert_cmd::cargo::cargo_bin("etl");
    let out = as_nobody(&etl_path)
        .unwrap()
        .args(["run", "--no-progress"])
        .arg(&sounds)
        .output()
        .unwrap();
    let run = Run::from_output(out);
    run.expect_code(1);
    assert!(
        run.stderr.contains("it is a symbolic link"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read(&victim).unwrap(), VICTIM_BYTES);
}

/// The shipped unit's sandbox, as `systemd-analyze security` rates it (0 safe .. 10 exposed).
/// It rated 8.7 with only `ProtectSystem=`, `PrivateTmp=` and `NoNewPrivileges=`.
#[test]
fn the_systemd_unit_is_sandboxed() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/etl.service");
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
    else {
        println!("skipped: systemd-analyze is not installed");
        return;
    };
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some(level) = said.lines().find_map(|l| {
        l.split("Overall exposure level for etl.service: ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
    }) else {
        // `security --offline` came with systemd 252.
        println!("skipped: this systemd-analyze cannot rate a unit file offline");
        return;
    };
    assert!(level <= 1.0, "etl.service is rated {level}:\n{said}");
}
