//! Finding the inputs: which files a run covers, where each one's output goes, and which are
//! already done.
//!
//! A PATH is a file or a folder. In a folder, every `*.wav` (any case) is an input, except hidden
//! files and our own outputs (`*-transformed.wav`, and `*-transformed-<digits>.wav`, the outputs of
//! `--variants N`, whatever N this run has); `-r` descends into sub-folders, following
//! symbolic links (unless `--no-follow`) but never the same folder twice. Each input has a
//! relative path (to the PATH it was found under): its noise seed and its shard are derived from
//! it, and `--out-dir` mirrors it. A folder or entry that cannot be read is a failed input of its
//! own: the run must not call itself complete when it never saw some of its files.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::etl::describe_io;
use crate::etl::transform::file_kind;

const OUTPUT_SUFFIX: &str = "-transformed.wav";

/// Which part of the files this run takes: those whose relative path hashes to `index` mod `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn takes(&self, relative: &Path) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_64(relative.as_os_str().as_bytes());
        hash % self.count as u64 == self.index as u64
    }

    /// A short tag for file names: `0of1`, `2of3`.
    pub fn tag(&self) -> String {
        format!("{}of{}", self.index, self.count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not INDEX/COUNT (for example 0/4)"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("shard index {i:?} is not a whole number"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("shard count {n:?} is not a whole number"))?;
        if count == 0 {
            return Err("shard count must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "shard index {index} is out of range: indexes run from 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

/// One input file and what the run decided about it.
#[derive(Clone, Debug)]
pub struct Input {
    pub path: PathBuf,
    /// Relative to the PATH it was found under (the file name, for a PATH that is a file).
    pub relative: PathBuf,
    pub output: PathBuf,
    pub size: u64,
    pub status: Plan,
    /// Which of the input's `--variants` outputs this is (0 with one variant).
    pub variant: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    Transform,
    /// Not transformed, and why.
    Skip(String),
    /// Cannot be transformed, and why.
    Fail(String),
}

pub struct Discovery {
    pub inputs: Vec<Input>,
    /// The folders outputs go under (one per PATH, or `--out-dir`): where locks live.
    pub output_roots: Vec<PathBuf>,
    /// Things found that are not inputs but deserve a word (symbolic link loops).
    pub warnings: Vec<String>,
}

pub struct Options<'a> {
    pub paths: &'a [PathBuf],
    pub recursive: bool,
    pub out_dir: Option<&'a Path>,
    pub force: bool,
    pub shard: Shard,
    /// Below a PATH, take no symbolic link, to a file or to a folder (`--no-follow`).
    pub no_follow: bool,
    /// Outputs per input (`--variants`): each is an [`Input`] of its own, planned on its own.
    pub variants: u32,
}

/// A usage error: a PATH that does not exist or cannot be read at all.
#[derive(Debug)]
pub struct MissingPath(pub String);

pub fn discover(opts: &Options) -> Result<Discovery, MissingPath> {
    let mut found = Discovery {
        inputs: Vec::new(),
        output_roots: Vec::new(),
        warnings: Vec::new(),
    };
    for root in opts.paths {
        let meta = match fs::metadata(root) {
            Ok(meta) => meta,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Err(MissingPath(format!(
                    "{}: {}",
                    root.display(),
                    describe_io(&e)
                )));
            }
            // It is there but cannot be read: a failure of this run, not a usage error.
            Err(e) => {
                add_unreadable(root.clone(), unreadable(&e), &mut found);
                continue;
            }
        };
        if meta.is_dir() {
            // A folder that cannot be listed gets no output (nor a lock) of its own.
            if let Err(e) = fs::read_dir(root) {
                let why = format!("cannot list folder: {}", describe_io(&e));
                add_unreadable(root.clone(), why, &mut found);
                continue;
            }
            let out_root = opts.out_dir.unwrap_or(root).to_path_buf();
            push_unique(&mut found.output_roots, out_root);
            let mut visited = HashSet::new();
            walk(opts, root, Path::new(""), &mut visited, &mut found);
        } else {
            let name = root.file_name().map(PathBuf::from).unwrap_or_default();
            let parent = root.parent().filter(|p| !p.as_os_str().is_empty());
            let out_root = opts
                .out_dir
                .or(parent)
                .unwrap_or(Path::new("."))
                .to_path_buf();
            push_unique(&mut found.output_roots, out_root);
            if is_output_name(&name) {
                found.warnings.push(format!(
                    "{}: ignored: a {OUTPUT_SUFFIX} (or -transformed-N.wav) file is an output, never an input",
                    root.display()
                ));
                continue;
            }
            add_input(
                opts,
                root.clone(),
                name,
                meta.len(),
                plan_for(&meta),
                &mut found,
            );
        }
    }
    mark_duplicate_outputs(&mut found.inputs);
    Ok(found)
}

/// What [`input_at`] found at a path.
pub enum Found {
    /// An input under one of the PATHs (or one of them), with what a run would decide for it.
    Input(Input),
    /// A folder that a recursive run would enter: its files may not have been seen.
    Folder(PathBuf),
    /// Nothing a run would take: an output, a temporary, a hidden name, another shard's file,
    /// something gone, or outside every PATH.
    Nothing,
}

/// What a run would make of one `path` seen to change under the PATHs: the same [`Input`] (its
/// relative path, output and plan) that [`discover`] would give it, so that a file taken alone
/// gets the bytes a whole run gives it.
pub fn input_at(opts: &Options, path: &Path) -> Found {
    for root in opts.paths {
        let relative = if path == root {
            match root.file_name() {
                Some(name) if !fs::metadata(root).is_ok_and(|m| m.is_dir()) => PathBuf::from(name),
                _ => continue,
            }
        } else {
            match path.strip_prefix(root) {
                Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
                _ => continue,
            }
        };
        // Hidden names (our temporaries among them) are never inputs, nor is anything below one.
        if relative
            .components()
            .any(|c| c.as_os_str().as_bytes().starts_with(b"."))
        {
            return Found::Nothing;
        }
        let nested = relative.components().count() > 1;
        if nested && !opts.recursive {
            return Found::Nothing;
        }
        if opts.no_follow
            && path != root
            && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
        {
            return Found::Nothing;
        }
        let Ok(meta) = fs::metadata(path) else {
            return Found::Nothing;
        };
        let name = relative.file_name().unwrap_or_default().to_os_string();
        if meta.is_dir() {
            return if opts.recursive {
                Found::Folder(path.to_path_buf())
            } else {
                Found::Nothing
            };
        }
        if path != root && !is_input_name(&name) {
            return Found::Nothing;
        }
        let mut found = Discovery {
            inputs: Vec::new(),
            output_roots: Vec::new(),
            warnings: Vec::new(),
        };
        add_input(
            opts,
            path.to_path_buf(),
            relative,
            meta.len(),
            plan_for(&meta),
            &mut found,
        );
        return found.inputs.pop().map_or(Found::Nothing, Found::Input);
    }
    Found::Nothing
}

/// Regular files are transformed; anything else named like an input fails, saying what it is.
fn plan_for(meta: &fs::Metadata) -> Plan {
    if meta.is_file() {
        Plan::Transform
    } else {
        Plan::Fail(format!(
            "not a regular file: {}",
            file_kind(&meta.file_type())
        ))
    }
}

fn push_unique(list: &mut Vec<PathBuf>, p: PathBuf) {
    if !list.contains(&p) {
        list.push(p);
    }
}

fn walk(
    opts: &Options,
    dir: &Path,
    relative: &Path,
    visited: &mut HashSet<(u64, u64)>,
    found: &mut Discovery,
) {
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) => return add_unreadable(dir.to_path_buf(), unreadable(&e), found),
    };
    if !visited.insert((meta.dev(), meta.ino())) {
        found.warnings.push(format!(
            "{}: skipped: a symbolic link loop (this folder was already visited)",
            dir.display()
        ));
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let why = format!("cannot list folder: {}", describe_io(&e));
            return add_unreadable(dir.to_path_buf(), why, found);
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name()),
            Err(e) => {
                let why = format!("cannot list folder: {}", describe_io(&e));
                return add_unreadable(dir.to_path_buf(), why, found);
            }
        }
    }
    names.sort();
    for name in names {
        if name.as_bytes().starts_with(b".") {
            continue;
        }
        let path = dir.join(&name);
        let rel = relative.join(&name);
        if opts.no_follow && fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            not_followed(opts, path, rel, &name, found);
            continue;
        }
        // Follow symbolic links. A loop among them is only a warning (under -r a link back up
        // the tree is common); a dangling one is reported if it looks like an input; an entry
        // that cannot be looked at, and might have held inputs, is a failure.
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                if is_input_name(&name) || opts.recursive {
                    found
                        .warnings
                        .push(format!("{}: skipped: a symbolic link loop", path.display()));
                }
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if is_input_name(&name) {
                    let why = if fs::symlink_metadata(&path).is_ok() {
                        "a dangling symbolic link".to_string()
                    } else {
                        describe_io(&e)
                    };
                    add_input(opts, path, rel, 0, Plan::Fail(why), found);
                }
                continue;
            }
            Err(e) => {
                if is_input_name(&name) || opts.recursive {
                    add_unreadable(path, describe_io(&e), found);
                }
                continue;
            }
        };
        if meta.is_dir() {
            if opts.recursive {
                walk(opts, &path, &rel, visited, found);
            } else if is_input_name(&name) {
                let why = "not a regular file: a directory (use -r to look inside)".to_string();
                add_input(opts, path, rel, 0, Plan::Fail(why), found);
            }
            continue;
        }
        if !is_input_name(&name) {
            continue;
        }
        add_input(opts, path, rel, meta.len(), plan_for(&meta), found);
    }
}

/// `--no-follow`: a symbolic link named like an input is skipped, and one to a folder that `-r`
/// would enter is reported, both saying why; other links are ignored like other non-inputs.
fn not_followed(opts: &Options, path: PathBuf, rel: PathBuf, name: &OsStr, found: &mut Discovery) {
    if is_input_name(name) {
        let why = "a symbolic link, not followed (--no-follow)".to_string();
        add_input(opts, path, rel, 0, Plan::Skip(why), found);
    } else if opts.recursive && fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
        found.warnings.push(format!(
            "{}: skipped: a symbolic link to a folder, not followed (--no-follow)",
            path.display()
        ));
    }
}

/// Why a PATH, or something found under one, cannot be read.
fn unreadable(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => "a symbolic link loop".into(),
        _ => format!("cannot read: {}", describe_io(e)),
    }
}

/// A folder or entry that cannot be read is a failure: whatever inputs it holds were never seen.
/// Every shard reports it, as none can tell whose files it holds.
fn add_unreadable(path: PathBuf, why: String, found: &mut Discovery) {
    found.inputs.push(Input {
        relative: path.clone(),
        output: path.clone(),
        path,
        size: 0,
        status: Plan::Fail(why),
        variant: 0,
    });
}

fn add_input(
    opts: &Options,
    path: PathBuf,
    relative: PathBuf,
    size: u64,
    plan: Plan,
    found: &mut Discovery,
) {
    if !opts.shard.takes(&relative) {
        return;
    }
    // A shard takes an input with all its variants; each variant is planned on its own.
    let outputs = output_paths(&path, &relative, opts.out_dir, opts.variants);
    for (variant, output) in (0..).zip(outputs) {
        let status = match &plan {
            Plan::Transform => plan_output(&path, &output, opts.force),
            other => other.clone(),
        };
        found.inputs.push(Input {
            path: path.clone(),
            relative: relative.clone(),
            output,
            size,
            status,
            variant,
        });
    }
}

/// The outputs of an input for `variants` variants: `NAME-transformed.wav` for one,
/// `NAME-transformed-0.wav` .. `NAME-transformed-{N-1}.wav` for more, beside the input or, with
/// `out_dir`, under it at the input's relative path.
pub fn output_paths(
    input: &Path,
    relative: &Path,
    out_dir: Option<&Path>,
    variants: u32,
) -> Vec<PathBuf> {
    let input_name = relative.file_name().unwrap_or(OsStr::new(""));
    let names: Vec<std::ffi::OsString> = if variants <= 1 {
        vec![output_name(input_name)]
    } else {
        (0..variants)
            .map(|k| variant_output_name(input_name, k))
            .collect()
    };
    names
        .into_iter()
        .map(|name| match out_dir {
            Some(out) => out.join(relative).with_file_name(name),
            None => input.with_file_name(name),
        })
        .collect()
}

/// Whether one output of `input` is to be made: transform, or skip because this output is newer
/// than the input (unless `force`), or fail because it is the input. Asked once per output.
pub fn plan_output(input: &Path, output: &Path, force: bool) -> Plan {
    let (Ok(inp), Ok(out)) = (fs::metadata(input), fs::metadata(output)) else {
        return Plan::Transform;
    };
    if (inp.dev(), inp.ino()) == (out.dev(), out.ino()) {
        return Plan::Fail(format!(
            "output {} is the same file as the input",
            output.display()
        ));
    }
    if !force && out.is_file() && out.modified().ok() > inp.modified().ok() {
        return Plan::Skip("output is newer than the input".into());
    }
    Plan::Transform
}

/// Two inputs (say `a.wav` and `a.WAV`) whose outputs would be the same file: the second fails.
fn mark_duplicate_outputs(inputs: &mut [Input]) {
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut first_of: Vec<(PathBuf, PathBuf)> = Vec::new();
    for input in inputs.iter_mut() {
        if !seen.insert(input.output.clone()) {
            let first = first_of
                .iter()
                .find(|(o, _)| *o == input.output)
                .map(|(_, p)| p.display().to_string())
                .unwrap_or_default();
            input.status = Plan::Fail(format!(
                "output {} would also be written for {first}",
                input.output.display()
            ));
        } else {
            first_of.push((input.output.clone(), input.path.clone()));
        }
    }
}

fn is_input_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    bytes.len() > 4
        && bytes[bytes.len() - 4..].eq_ignore_ascii_case(b".wav")
        && !is_output_name(name)
}

/// `*-transformed.wav`, or a variant's `*-transformed-<digits>.wav` (any case).
fn is_output_name(name: impl AsRef<OsStr>) -> bool {
    let bytes = name.as_ref().as_bytes();
    let ends_with = |b: &[u8], suffix: &[u8]| {
        b.len() >= suffix.len() && b[b.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    if ends_with(bytes, OUTPUT_SUFFIX.as_bytes()) {
        return true;
    }
    if !ends_with(bytes, b".wav") {
        return false;
    }
    let stem = &bytes[..bytes.len() - 4];
    let digits = stem.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && ends_with(&stem[..stem.len() - digits], b"-transformed-")
}

/// `x.wav` and `x.WAV` give `x-transformed.wav`; a name without `.wav` keeps all of it as the stem.
fn output_name(input_name: &OsStr) -> std::ffi::OsString {
    let bytes = input_name.as_bytes();
    let stem = if bytes.len() > 4 && bytes[bytes.len() - 4..].eq_ignore_ascii_case(b".wav") {
        &bytes[..bytes.len() - 4]
    } else {
        bytes
    };
    let mut out = stem.to_vec();
    out.extend_from_slice(OUTPUT_SUFFIX.as_bytes());
    std::ffi::OsString::from(OsStr::from_bytes(&out))
}

/// `x.wav` and variant 2 give `x-transformed-2.wav`.
fn variant_output_name(input_name: &OsStr, variant: u32) -> std::ffi::OsString {
    let single = output_name(input_name);
    let bytes = single.as_bytes();
    let mut out = bytes[..bytes.len() - 4].to_vec();
    out.extend_from_slice(format!("-{variant}.wav").as_bytes());
    std::ffi::OsString::from(OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_input_name(OsStr::new("a.WAV")));
        assert!(!is_input_name(OsStr::new("a-transformed.wav")));
        assert!(!is_input_name(OsStr::new("a-TRANSFORMED.WAV")));
        assert!(!is_input_name(OsStr::new(".wav")));
        assert_eq!(output_name(OsStr::new("x.Wav")), "x-transformed.wav");
        // Every variant's output is an output, whatever this run's --variants.
        assert!(!is_input_name(OsStr::new("a-transformed-0.wav")));
        assert!(!is_input_name(OsStr::new("a-Transformed-123.WAV")));
        assert!(is_output_name("a-transformed-7.wav"));
        assert!(is_input_name(OsStr::new("a-transformed-.wav")));
        assert!(is_input_name(OsStr::new("a-transformed-1x.wav")));
        assert!(is_input_name(OsStr::new("take-2.wav")));
        assert!(is_input_name(OsStr::new("transformed-2.wav")));
        assert_eq!(
            variant_output_name(OsStr::new("x.WAV"), 3),
            "x-transformed-3.wav"
        );
        assert_eq!(
            variant_output_name(OsStr::new("raw"), 0),
            "raw-transformed-0.wav"
        );
    }

    #[test]
    fn output_paths_for_one_and_for_several_variants() {
        let input = Path::new("/data/in/sub/a.wav");
        let relative = Path::new("sub/a.wav");
        assert_eq!(
            output_paths(input, relative, None, 1),
            vec![PathBuf::from("/data/in/sub/a-transformed.wav")]
        );
        assert_eq!(
            output_paths(input, relative, None, 3),
            ["0", "1", "2"]
                .map(|k| PathBuf::from(format!("/data/in/sub/a-transformed-{k}.wav")))
                .to_vec()
        );
        assert_eq!(
            output_paths(input, relative, Some(Path::new("out")), 2),
            vec![
                PathBuf::from("out/sub/a-transformed-0.wav"),
                PathBuf::from("out/sub/a-transformed-1.wav")
            ]
        );
    }

    #[test]
    fn the_skip_check_is_per_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.wav");
        std::fs::write(&input, b"in").unwrap();
        let outputs = output_paths(&input, Path::new("a.wav"), None, 3);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::open(&input)
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::fs::write(&outputs[1], b"out").unwrap();
        let plans: Vec<Plan> = outputs
            .iter()
            .map(|o| plan_output(&input, o, false))
            .collect();
        assert_eq!(
            plans,
            vec![
                Plan::Transform,
                Plan::Skip("output is newer than the input".into()),
                Plan::Transform
            ]
        );
        assert_eq!(plan_output(&input, &outputs[1], true), Plan::Transform);
    }

    #[test]
    fn shards_parse_and_partition() {
        assert!("3/3".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for n in 0..100 {
            let p = PathBuf::from(format!("d/f{n}.wav"));
            assert_eq!(shards.iter().filter(|s| s.takes(&p)).count(), 1);
        }
    }
}
