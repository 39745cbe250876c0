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

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::etl::transform::file_kind;
use crate::etl::{describe_io, output};

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

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Plan {
    Transform,
    /// Not transformed, and why.
    Skip(String),
    /// Cannot be transformed, and why.
    Fail(String),
}

pub struct Discovery {
    /// Every output to make or to report, in the order found.
    pub inputs: Catalog,
    /// The folders outputs go under (one per PATH, or `--out-dir`): where locks live.
    pub output_roots: Vec<PathBuf>,
    /// Things found that are not inputs but deserve a word (symbolic link loops).
    pub warnings: Vec<String>,
}

/// What discovery found, held compactly so that a run over millions of files starts in tens of
/// megabytes: a folder's path is kept once, file names in one arena, and each output in 24 bytes.
/// An [`Input`] is made from it only when the file is handled.
pub struct Catalog {
    out_dir: Option<PathBuf>,
    variants: u32,
    folders: Vec<Folder>,
    /// File names, each followed by a NUL (which no name holds).
    names: Vec<u8>,
    entries: Vec<Entry>,
    /// The plans other than [`Plan::Transform`], each kept once however many files share it.
    notes: Vec<Plan>,
    note_ids: HashMap<Plan, u32>,
    /// Inputs that do not sit in a listed folder (PATHs that are files, what cannot be read).
    whole: Vec<Input>,
}

/// A folder that was listed: its path as walked, and relative to its PATH.
struct Folder {
    path: PathBuf,
    relative: PathBuf,
    /// When outputs go beside the inputs and it holds at least [`LEFTOVERS_FROM`] inputs: what
    /// its listing showed of the temporaries a killed run may have left.
    leftovers: Option<Box<Leftovers>>,
}

/// The temporaries of this run's tag that a folder's listing showed (a killed run's, since no
/// live run of the tag can hold the lock this run takes next), and the folder's times when it
/// was listed: while they are the same, nothing was added to it since, and sweeping it needs no
/// second listing (200,000 names take 0.1 s). On a kernel whose file times are coarse (before
/// Linux 6.13), a temporary made within the same few milliseconds as the folder's last change
/// before the listing can go unseen: it is then removed by the next run, or replaced by this one
/// if it needs the name.
pub struct Leftovers {
    stamp: FolderStamp,
    names: Vec<std::ffi::OsString>,
}

/// Folders with fewer inputs are listed again by the sweep (which costs little), so that a tree
/// of many small folders holds no more per folder.
const LEFTOVERS_FROM: usize = 16;

/// A folder's identity and times: any entry made, removed or renamed in it changes them.
type FolderStamp = (u64, u64, i64, i64, i64, i64);

fn folder_stamp(meta: &fs::Metadata) -> FolderStamp {
    (
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

impl Leftovers {
    /// The temporaries found in `dir` when it was listed, if it has not changed since.
    pub fn if_unchanged(&self, dir: &Path) -> Option<&[std::ffi::OsString]> {
        let now = fs::metadata(dir).ok()?;
        (folder_stamp(&now) == self.stamp).then_some(&self.names)
    }
}

/// In a folder of at least this many names to look at, a regular file (as its listing tells)
/// is not looked at by discovery: its size is taken when it is handed to the engine
/// ([`Catalog::look`]), while the workers are busy with the files before it, and largest-first
/// order holds within a look-ahead rather than over the whole folder. A folder of a million
/// files then starts its first file after its listing, not after a million looks (on a network
/// filesystem, minutes).
pub const LOOK_LATER_FROM: usize = 4096;

/// The size of an entry whose file is looked at later (see [`LOOK_LATER_FROM`]).
const SIZE_LATER: u64 = u64::MAX;

/// One output of one input.
#[derive(Clone, Copy)]
struct Entry {
    /// Its input's size, or [`SIZE_LATER`].
    size: u64,
    /// Where the name starts in `names`; for an entry of `whole`, its index there.
    name: u32,
    /// Its folder in `folders`, or [`WHOLE`].
    folder: u32,
    variant: u32,
    /// 0 to transform, else `notes[note - 1]`.
    note: u32,
}

const WHOLE: u32 = u32::MAX;

impl Catalog {
    fn new(out_dir: Option<&Path>, variants: u32) -> Catalog {
        Catalog {
            out_dir: out_dir.map(Path::to_path_buf),
            variants,
            folders: Vec::new(),
            names: Vec::new(),
            entries: Vec::new(),
            notes: Vec::new(),
            note_ids: HashMap::new(),
            whole: Vec::new(),
        }
    }

    /// Outputs found: to make, to skip and to fail.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The input bytes behind every output; 0 when some inputs are looked at later (the
    /// progress bar then counts files).
    pub fn total_bytes(&self) -> u64 {
        if self.entries.iter().any(|e| e.size == SIZE_LATER) {
            return 0;
        }
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The size of the `i`th output's input (0 until it is looked at, for one looked at later).
    pub fn size(&self, i: usize) -> u64 {
        match self.entries[i].size {
            SIZE_LATER => 0,
            size => size,
        }
    }

    /// Whether the `i`th output's input is to be looked at before it is handed over
    /// ([`Catalog::look`]).
    pub fn looked_later(&self, i: usize) -> bool {
        self.entries[i].size == SIZE_LATER
    }

    /// Looks at the `i`th output's input, through its folder (kept open in `folder` for the
    /// next entries of the same folder), and keeps its size: 0 for anything but a regular file
    /// now (its worker, or the engine's look, says what it is). The error when it cannot be
    /// looked at (gone since it was listed).
    pub fn look(&mut self, i: usize, folder: &mut Option<(u32, fs::File)>) -> io::Result<()> {
        let e = self.entries[i];
        if e.size != SIZE_LATER {
            return Ok(());
        }
        if folder.as_ref().is_none_or(|(at, _)| *at != e.folder) {
            *folder = Some((
                e.folder,
                fs::File::open(&self.folders[e.folder as usize].path)?,
            ));
        }
        let (_, dir) = folder.as_ref().expect("just opened");
        let size = match kind_at(dir, self.name(e.name))? {
            Some(Kind::File(size)) => size,
            _ => 0,
        };
        // Every variant of the input (entries side by side) has its size.
        let same = |x: &Entry| (x.folder, x.name) == (e.folder, e.name);
        let first = i - self.entries[..i]
            .iter()
            .rev()
            .take_while(|x| same(x))
            .count();
        for entry in self.entries[first..].iter_mut().take_while(|x| same(x)) {
            entry.size = size;
        }
        Ok(())
    }

    /// Whether the `i`th output is to be made (the rest are reported without a worker).
    pub fn to_transform(&self, i: usize) -> bool {
        self.entries[i].note == 0
    }

    /// The `i`th output, in the order found.
    pub fn input(&self, i: usize) -> Input {
        let e = self.entries[i];
        let status = match e.note {
            0 => Plan::Transform,
            n => self.notes[n as usize - 1].clone(),
        };
        if e.folder == WHOLE {
            let mut input = self.whole[e.name as usize].clone();
            input.status = status;
            return input;
        }
        let folder = &self.folders[e.folder as usize];
        let name = self.name(e.name);
        Input {
            path: folder.path.join(name),
            relative: folder.relative.join(name),
            output: self.output(i),
            size: self.size(i),
            status,
            variant: e.variant,
        }
    }

    /// The output of entry `i` (its input's `output`), made without the input's paths: the
    /// rule of [`output_path`] for a listed name.
    fn output(&self, i: usize) -> PathBuf {
        let e = self.entries[i];
        if e.folder == WHOLE {
            return self.whole[e.name as usize].output.clone();
        }
        let folder = &self.folders[e.folder as usize];
        let name = self.name(e.name);
        let name = if self.variants <= 1 {
            output_name(name)
        } else {
            variant_output_name(name, e.variant)
        };
        match self.out_dir.as_deref() {
            Some(out) => out.join(&folder.relative).join(name),
            None => folder.path.join(name),
        }
    }

    /// Every output, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = Input> + '_ {
        (0..self.len()).map(|i| self.input(i))
    }

    /// The listed folders that are output folders, with what their listing showed of the
    /// temporaries a killed run left (see [`Leftovers`]).
    pub fn leftovers(&self) -> HashMap<&Path, &Leftovers> {
        self.folders
            .iter()
            .filter_map(|f| Some((f.path.as_path(), f.leftovers.as_deref()?)))
            .collect()
    }

    /// The folders outputs go into: of the outputs to make only, or of all.
    pub fn output_folders(&self, to_make_only: bool) -> HashSet<PathBuf> {
        let mut used = vec![false; self.folders.len()];
        let mut dirs = HashSet::new();
        for e in &self.entries {
            if e.folder != WHOLE && (e.note == 0 || !to_make_only) {
                used[e.folder as usize] = true;
            }
        }
        for (folder, _) in self.folders.iter().zip(used).filter(|(_, u)| *u) {
            let probe = OsStr::new("x.wav");
            let output = output_path(
                &folder.path.join(probe),
                &folder.relative.join(probe),
                self.out_dir.as_deref(),
                self.variants,
                0,
            );
            dirs.insert(output::folder(&output).to_path_buf());
        }
        for (e, input) in self
            .entries
            .iter()
            .filter(|e| e.folder == WHOLE)
            .map(|e| (e, &self.whole[e.name as usize]))
        {
            // A folder that could not be read has no output of its own.
            if input.output != input.path && (e.note == 0 || !to_make_only) {
                dirs.insert(output::folder(&input.output).to_path_buf());
            }
        }
        dirs
    }

    fn name(&self, at: u32) -> &OsStr {
        let rest = &self.names[at as usize..];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        OsStr::from_bytes(&rest[..end])
    }

    /// Keeps a name; `None` once the arena's 4 GiB are full.
    fn add_name(&mut self, name: &[u8]) -> Option<u32> {
        let at = u32::try_from(self.names.len()).ok()?;
        u32::try_from(self.names.len() + name.len() + 1).ok()?;
        self.names.extend_from_slice(name);
        self.names.push(0);
        Some(at)
    }

    fn note(&mut self, plan: Plan) -> u32 {
        if plan == Plan::Transform {
            return 0;
        }
        if let Some(&id) = self.note_ids.get(&plan) {
            return id;
        }
        self.notes.push(plan.clone());
        let id = self.notes.len() as u32;
        self.note_ids.insert(plan, id);
        id
    }

    fn push_whole(&mut self, input: Input) {
        let note = self.note(input.status.clone());
        let entry = Entry {
            size: input.size,
            name: self.whole.len() as u32,
            folder: WHOLE,
            variant: input.variant,
            note,
        };
        self.whole.push(input);
        self.entries.push(entry);
    }

    fn set_plan(&mut self, i: usize, plan: Plan) {
        self.entries[i].note = self.note(plan);
    }
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
        inputs: Catalog::new(opts.out_dir, opts.variants),
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
            for input in inputs_for(opts, root, &name, Some(&meta), plan_for(&meta)) {
                found.inputs.push_whole(input);
            }
        }
    }
    // Within a folder, outputs that two inputs would share are found as it is listed; across
    // PATHs (which may overlap) only a look over everything finds them.
    if opts.paths.len() > 1 {
        mark_duplicate_outputs(&mut found.inputs);
    }
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
        let plan = plan_for(&meta);
        let mut inputs = inputs_for(opts, path, &relative, Some(&meta), plan);
        return inputs.pop().map_or(Found::Nothing, Found::Input);
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
    // Outputs beside the inputs: this folder is an output folder, and the listing shows what a
    // killed run left in it (taken before the listing, the times tell if anything came since).
    let temp_suffix = format!(".{}{}", opts.shard.tag(), super::TEMP_SUFFIX);
    let mut leftovers = opts.out_dir.is_none().then(|| Leftovers {
        stamp: folder_stamp(&meta),
        names: Vec::new(),
    });
    // The names that may matter, straight into the catalogue's arena (a folder of a million
    // files is listed without a million strings): inputs, and what -r may have to enter.
    let mut listed: Vec<u32> = Vec::new();
    // The names the listing says are not regular files (its entry type; few, in most folders).
    let mut irregular: Vec<u32> = Vec::new();
    // Outputs beside the inputs are in the same listing: an output name not in it needs no
    // look of its own (a fresh run over a million files saves a million failing lookups).
    // Hashes only: one that matches is looked at, as before.
    let mut outputs_here: Vec<u64> = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let why = format!("cannot list folder: {}", describe_io(&e));
                return add_unreadable(dir.to_path_buf(), why, found);
            }
        };
        let name = entry.file_name();
        if name.as_bytes().starts_with(b".") {
            if let Some(leftovers) = leftovers.as_mut()
                && name.as_bytes().ends_with(temp_suffix.as_bytes())
            {
                leftovers.names.push(name);
            }
            continue;
        }
        if opts.out_dir.is_none() && is_output_name(&name) {
            outputs_here.push(xxhash_rust::xxh3::xxh3_64(name.as_bytes()));
        }
        let kind = entry.file_type().ok();
        let may_enter = opts.recursive && kind.is_none_or(|t| t.is_dir() || t.is_symlink());
        if !is_input_name(&name) && !may_enter {
            continue;
        }
        match found.inputs.add_name(name.as_bytes()) {
            Some(at) => {
                listed.push(at);
                if !kind.is_some_and(|t| t.is_file()) {
                    irregular.push(at);
                }
            }
            None => {
                let why = "too many files: their names pass 4 GiB".to_string();
                return add_unreadable(dir.to_path_buf(), why, found);
            }
        }
    }
    let catalog = &found.inputs;
    listed.sort_unstable_by(|&a, &b| catalog.name(a).cmp(catalog.name(b)));
    let folder = found.inputs.folders.len() as u32;
    found.inputs.folders.push(Folder {
        path: dir.to_path_buf(),
        relative: relative.to_path_buf(),
        leftovers: leftovers
            .filter(|_| listed.len() >= LEFTOVERS_FROM)
            .map(Box::new),
    });
    outputs_here.sort_unstable();
    let mut outputs = SharedOutputs::of(&found.inputs, &listed);
    outputs.listed = opts.out_dir.is_none().then_some(outputs_here);
    // Each entry is looked at through the folder (one name to resolve, not the whole path);
    // a link, or anything but a file or a folder, the long way below. In a large folder, the
    // files its listing says are regular are looked at later (see [`LOOK_LATER_FROM`]).
    let handle = fs::File::open(dir).ok();
    let look_later = listed.len() >= LOOK_LATER_FROM;
    for at in listed {
        let name = found.inputs.name(at).to_os_string();
        let entry = Listed {
            folder,
            at,
            path: dir.join(&name),
            relative: relative.join(&name),
        };
        if look_later && is_input_name(&name) && irregular.binary_search(&at).is_err() {
            let plan = Plan::Transform;
            add_listed(opts, entry, SIZE_LATER, None, plan, &mut outputs, found);
            continue;
        }
        match handle
            .as_ref()
            .and_then(|h| kind_at(h, &name).ok().flatten())
        {
            Some(Kind::Folder) if opts.recursive => {
                walk(opts, &entry.path, &entry.relative, visited, found);
                continue;
            }
            Some(Kind::File(size)) if is_input_name(&name) => {
                let plan = Plan::Transform;
                add_listed(opts, entry, size, None, plan, &mut outputs, found);
                continue;
            }
            Some(Kind::File(_)) => continue,
            _ => {}
        }
        let path = &entry.path;
        if opts.no_follow && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            not_followed(opts, entry.path, entry.relative, &name, found);
            continue;
        }
        // Follow symbolic links. A loop among them is only a warning (under -r a link back up
        // the tree is common); a dangling one is reported if it looks like an input; an entry
        // that cannot be looked at, and might have held inputs, is a failure.
        let meta = match fs::metadata(path) {
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
                    let why = if fs::symlink_metadata(path).is_ok() {
                        "a dangling symbolic link".to_string()
                    } else {
                        describe_io(&e)
                    };
                    add_listed(opts, entry, 0, None, Plan::Fail(why), &mut outputs, found);
                }
                continue;
            }
            Err(e) => {
                if is_input_name(&name) || opts.recursive {
                    add_unreadable(entry.path, describe_io(&e), found);
                }
                continue;
            }
        };
        if meta.is_dir() {
            if opts.recursive {
                walk(opts, &entry.path, &entry.relative, visited, found);
            } else if is_input_name(&name) {
                let why = "not a regular file: a directory (use -r to look inside)".to_string();
                add_listed(opts, entry, 0, None, Plan::Fail(why), &mut outputs, found);
            }
            continue;
        }
        if is_input_name(&name) {
            let (size, plan) = (meta.len(), plan_for(&meta));
            add_listed(opts, entry, size, Some(&meta), plan, &mut outputs, found);
        }
    }
}

/// What [`kind_at`] saw.
enum Kind {
    /// A regular file, and its size.
    File(u64),
    Folder,
}

/// A regular file or a folder named `name` in the open folder `dir` (not following a link);
/// `None` for anything else; the error when it cannot be looked at.
fn kind_at(dir: &fs::File, name: &OsStr) -> io::Result<Option<Kind>> {
    let name = std::ffi::CString::new(name.as_bytes())?;
    let stat = output::stat_at(dir, &name)?;
    Ok(match stat.st_mode & libc::S_IFMT {
        libc::S_IFREG => Some(Kind::File(stat.st_size as u64)),
        libc::S_IFDIR => Some(Kind::Folder),
        _ => None,
    })
}

/// An input found in a listed folder.
struct Listed {
    folder: u32,
    /// Its name in the catalogue's arena.
    at: u32,
    path: PathBuf,
    relative: PathBuf,
}

/// Inputs of one folder whose outputs would be the same file (`a.wav` and `a.WAV` both give
/// `a-transformed.wav`): their names share a stem (all but the 4-byte extension). Only stems
/// that two names share are kept, and the first input of each: a folder of a million `*.WAV`
/// files keeps nothing.
struct SharedOutputs {
    stems: HashMap<Vec<u8>, Option<PathBuf>>,
    /// When outputs go beside the inputs: the hashes of the output names the folder holds.
    listed: Option<Vec<u64>>,
}

impl SharedOutputs {
    fn of(catalog: &Catalog, listed: &[u32]) -> SharedOutputs {
        let mut stems = HashMap::new();
        let name = |at: u32| catalog.name(at).as_bytes();
        let stem = |at: u32| &name(at)[..name(at).len() - 4];
        let mut inputs: Vec<u32> = listed
            .iter()
            .copied()
            .filter(|&at| is_input_name(catalog.name(at)))
            .collect();
        // Names that differ only in their extension's case are the only ones that can share a
        // stem; without such an extension there is nothing to look for.
        if inputs.iter().any(|&at| !name(at).ends_with(b".wav")) {
            inputs.sort_unstable_by(|&a, &b| stem(a).cmp(stem(b)));
            for pair in inputs.windows(2) {
                if stem(pair[0]) == stem(pair[1]) {
                    stems.insert(stem(pair[0]).to_vec(), None);
                }
            }
        }
        SharedOutputs {
            stems,
            listed: None,
        }
    }

    /// False when the folder's listing shows that `output` does not exist.
    fn may_exist(&self, output: &Path) -> bool {
        let Some(listed) = &self.listed else {
            return true;
        };
        let name = output.file_name().unwrap_or_default().as_bytes();
        listed
            .binary_search(&xxhash_rust::xxh3::xxh3_64(name))
            .is_ok()
    }

    /// The input that took this one's outputs first, if any; else this one takes them.
    fn taken_by(&mut self, name: &OsStr, path: &Path) -> Option<PathBuf> {
        let name = name.as_bytes();
        let first = self
            .stems
            .get_mut(name.get(..name.len().checked_sub(4)?)?)?;
        match first {
            Some(first) => Some(first.clone()),
            None => {
                *first = Some(path.to_path_buf());
                None
            }
        }
    }
}

fn add_listed(
    opts: &Options,
    listed: Listed,
    size: u64,
    meta: Option<&fs::Metadata>,
    plan: Plan,
    outputs: &mut SharedOutputs,
    found: &mut Discovery,
) {
    if !opts.shard.takes(&listed.relative) {
        return;
    }
    let name = found.inputs.name(listed.at).to_os_string();
    let first = outputs.taken_by(&name, &listed.path);
    // A shard takes an input with all its variants; each variant is planned on its own.
    for variant in 0..opts.variants.max(1) {
        let output = output_path(
            &listed.path,
            &listed.relative,
            opts.out_dir,
            opts.variants,
            variant,
        );
        let status = match (&first, &plan) {
            (Some(first), _) => Plan::Fail(format!(
                "output {} would also be written for {}",
                output.display(),
                first.display()
            )),
            (None, Plan::Transform) if !outputs.may_exist(&output) => Plan::Transform,
            (None, Plan::Transform) => plan_output_of(meta, &listed.path, &output, opts.force),
            (None, other) => other.clone(),
        };
        let note = found.inputs.note(status);
        found.inputs.entries.push(Entry {
            size,
            name: listed.at,
            folder: listed.folder,
            variant,
            note,
        });
    }
}

/// `--no-follow`: a symbolic link named like an input is skipped, and one to a folder that `-r`
/// would enter is reported, both saying why; other links are ignored like other non-inputs.
fn not_followed(opts: &Options, path: PathBuf, rel: PathBuf, name: &OsStr, found: &mut Discovery) {
    if is_input_name(name) {
        let why = "a symbolic link, not followed (--no-follow)".to_string();
        for input in inputs_for(opts, &path, &rel, None, Plan::Skip(why)) {
            found.inputs.push_whole(input);
        }
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
    found.inputs.push_whole(Input {
        relative: path.clone(),
        output: path.clone(),
        path,
        size: 0,
        status: Plan::Fail(why),
        variant: 0,
    });
}

/// The outputs of one input (one per variant), each planned, if this shard takes the input.
fn inputs_for(
    opts: &Options,
    path: &Path,
    relative: &Path,
    meta: Option<&fs::Metadata>,
    plan: Plan,
) -> Vec<Input> {
    if !opts.shard.takes(relative) {
        return Vec::new();
    }
    let size = meta.map_or(0, |m| m.len());
    (0..opts.variants.max(1))
        .map(|variant| {
            let output = output_path(path, relative, opts.out_dir, opts.variants, variant);
            let status = match &plan {
                Plan::Transform => plan_output_of(meta, path, &output, opts.force),
                other => other.clone(),
            };
            Input {
                path: path.to_path_buf(),
                relative: relative.to_path_buf(),
                output,
                size,
                status,
                variant,
            }
        })
        .collect()
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
    (0..variants.max(1))
        .map(|k| output_path(input, relative, out_dir, variants, k))
        .collect()
}

/// The output of one variant of an input (see [`output_paths`]).
pub fn output_path(
    input: &Path,
    relative: &Path,
    out_dir: Option<&Path>,
    variants: u32,
    variant: u32,
) -> PathBuf {
    let input_name = relative.file_name().unwrap_or(OsStr::new(""));
    let name = if variants <= 1 {
        output_name(input_name)
    } else {
        variant_output_name(input_name, variant)
    };
    match out_dir {
        Some(out) => out.join(relative).with_file_name(name),
        None => input.with_file_name(name),
    }
}

/// Whether one output of `input` is to be made: transform, or skip because this output is newer
/// than the input (unless `force`), or fail because it is the input. Asked once per output.
pub fn plan_output(input: &Path, output: &Path, force: bool) -> Plan {
    plan_output_of(None, input, output, force)
}

/// [`plan_output`], with the input's metadata when it was just read.
fn plan_output_of(
    input_meta: Option<&fs::Metadata>,
    input: &Path,
    output: &Path,
    force: bool,
) -> Plan {
    let Ok(out) = fs::metadata(output) else {
        return Plan::Transform;
    };
    let inp = match input_meta {
        Some(meta) => meta.clone(),
        None => match fs::metadata(input) {
            Ok(meta) => meta,
            Err(_) => return Plan::Transform,
        },
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

/// Two inputs found under different PATHs (which may overlap) whose outputs would be the same
/// file: the second fails. Outputs are told apart by a hash of their path, and only a hash seen
/// before is compared in full.
fn mark_duplicate_outputs(catalog: &mut Catalog) {
    let mut first_of: HashMap<u64, u32> = HashMap::new();
    // Outputs whose hash was another's first: compared in full (practically never used).
    let mut collided: Vec<usize> = Vec::new();
    for i in 0..catalog.len() {
        let output = catalog.output(i);
        let hash = xxhash_rust::xxh3::xxh3_64(output.as_os_str().as_bytes());
        let candidates = first_of.get(&hash).map(|&j| j as usize).into_iter();
        let first = candidates
            .chain(collided.iter().copied())
            .find(|&j| catalog.output(j) == output);
        if let Some(first) = first {
            let why = format!(
                "output {} would also be written for {}",
                output.display(),
                catalog.input(first).path.display()
            );
            catalog.set_plan(i, Plan::Fail(why));
        } else if let std::collections::hash_map::Entry::Vacant(slot) = first_of.entry(hash) {
            slot.insert(i as u32);
        } else {
            collided.push(i);
        }
    }
}

/// Whether a path seen to change below the PATHs may matter to [`input_at`]: false for what it
/// would never take, so that a service does not hold on to the paths of what it writes itself
/// (its temporaries, hidden; its unnamed outputs, which events name `#INODE`; its outputs). A
/// name an input cannot have may still be a folder with `-r`: that one is looked at.
pub fn may_be_input(path: &Path, recursive: bool) -> bool {
    let Some(name) = path.file_name() else {
        return true;
    };
    if name.as_bytes().starts_with(b".") {
        return false;
    }
    if is_input_name(name) {
        return true;
    }
    recursive && fs::metadata(path).is_ok_and(|m| m.is_dir())
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
    fn only_names_an_input_can_have_or_folders_under_r_may_be_inputs() {
        let tmp = tempfile::TempDir::new().unwrap();
        let (folder, sub) = (tmp.path().join("x-transformed.wav"), tmp.path().join("sub"));
        fs::create_dir(&folder).unwrap();
        fs::create_dir(&sub).unwrap();
        for recursive in [false, true] {
            assert!(may_be_input(&tmp.path().join("a.wav"), recursive));
            assert!(may_be_input(&tmp.path().join("B.WAV"), recursive));
            // Our temporaries, our unnamed outputs as events name them, our outputs.
            let temp = tmp.path().join(".a-transformed.wav.0of1.etl-tmp");
            assert!(!may_be_input(&temp, recursive));
            assert!(!may_be_input(&tmp.path().join("#10027095"), recursive));
            assert!(!may_be_input(
                &tmp.path().join("a-transformed.wav"),
                recursive
            ));
            assert!(!may_be_input(
                &tmp.path().join("a-transformed-2.wav"),
                recursive
            ));
            // A folder, whatever its name, only matters below -r.
            assert_eq!(may_be_input(&folder, recursive), recursive);
            assert_eq!(may_be_input(&sub, recursive), recursive);
        }
    }

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

    fn opts<'a>(paths: &'a [PathBuf], out_dir: Option<&'a Path>, variants: u32) -> Options<'a> {
        Options {
            paths,
            recursive: true,
            out_dir,
            force: false,
            shard: Shard::WHOLE,
            no_follow: false,
            variants,
        }
    }

    #[test]
    fn a_large_folders_regular_files_are_looked_at_later_and_the_rest_at_once() {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = tmp.path().join("sounds");
        fs::create_dir(&dir).unwrap();
        let size_of = |n: usize| (n % 7 + 1) as u64;
        for n in 0..LOOK_LATER_FROM {
            fs::write(
                dir.join(format!("f{n:04}.wav")),
                vec![0u8; size_of(n) as usize],
            )
            .unwrap();
        }
        std::os::unix::fs::symlink("f0003.wav", dir.join("link.wav")).unwrap();
        let fifo = std::ffi::CString::new(dir.join("pipe.wav").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

        let paths = [dir.clone()];
        let mut catalog = discover(&opts(&paths, None, 2)).unwrap().inputs;
        assert_eq!(catalog.len(), 2 * (LOOK_LATER_FROM + 2));
        assert_eq!(catalog.total_bytes(), 0, "the bar counts files");
        let mut entries: HashMap<String, Vec<usize>> = HashMap::new();
        for i in 0..catalog.len() {
            let name = catalog.input(i).path.file_name().unwrap().to_owned();
            entries
                .entry(name.into_string().unwrap())
                .or_default()
                .push(i);
        }
        let by_name = |_: &Catalog, name: &str| entries[name].clone();
        // Looked at by discovery: the link (followed) and the FIFO (refused).
        for i in by_name(&catalog, "link.wav") {
            assert!(!catalog.looked_later(i));
            assert_eq!(catalog.input(i).size, size_of(3));
        }
        for i in by_name(&catalog, "pipe.wav") {
            assert!(!catalog.looked_later(i));
            assert!(matches!(catalog.input(i).status, Plan::Fail(ref why) if why.contains("FIFO")));
        }
        // The regular files, later: one is gone and one is a folder by then.
        fs::remove_file(dir.join("f0010.wav")).unwrap();
        fs::remove_file(dir.join("f0011.wav")).unwrap();
        fs::create_dir(dir.join("f0011.wav")).unwrap();
        let mut folder = None;
        for n in 0..LOOK_LATER_FROM {
            let name = format!("f{n:04}.wav");
            let [first, second] = by_name(&catalog, &name)[..] else {
                panic!("two variants of {name}");
            };
            assert!(catalog.looked_later(first) && catalog.looked_later(second));
            assert_eq!(catalog.input(first).size, 0);
            // The second variant first: the look serves both.
            let looked = catalog.look(second, &mut folder);
            match n {
                10 => {
                    let e = looked.unwrap_err();
                    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
                    continue;
                }
                _ => looked.unwrap(),
            }
            // A folder by now is not a regular file: no size.
            let expected = if n == 11 { 0 } else { size_of(n) };
            for i in [first, second] {
                assert!(!catalog.looked_later(i));
                assert_eq!(catalog.input(i).size, expected, "{name}");
            }
        }

        // A smaller folder is looked at whole by discovery.
        fs::remove_file(dir.join("f0000.wav")).unwrap();
        fs::remove_dir(dir.join("f0011.wav")).unwrap();
        let catalog = discover(&opts(&paths, None, 1)).unwrap().inputs;
        assert!((0..catalog.len()).all(|i| !catalog.looked_later(i)));
        let files = (1..LOOK_LATER_FROM).filter(|&n| n != 10 && n != 11);
        let expected: u64 = files.map(size_of).sum::<u64>() + size_of(3);
        assert_eq!(catalog.total_bytes(), expected);
    }

    #[test]
    fn a_listed_inputs_output_follows_the_naming_rule() {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = tmp.path().join("sounds");
        fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        for name in ["a.wav", "B.WAV", "sub/c.wav", "sub/deeper/d.Wav"] {
            fs::write(dir.join(name), b"x").unwrap();
        }
        let out = tmp.path().join("out");
        let paths = [dir.clone(), dir.join("sub/c.wav")];
        for (out_dir, variants) in [
            (None, 1),
            (Some(out.as_path()), 1),
            (None, 3),
            (Some(&out), 2),
        ] {
            let found = discover(&opts(&paths, out_dir, variants)).unwrap();
            let catalog = &found.inputs;
            assert_eq!(catalog.len(), 5 * variants as usize);
            for i in 0..catalog.len() {
                let input = catalog.input(i);
                let expected = output_path(
                    &input.path,
                    &input.relative,
                    out_dir,
                    variants,
                    input.variant,
                );
                assert_eq!(input.output, expected, "{out_dir:?} {variants}");
                assert_eq!(catalog.output(i), expected, "{out_dir:?} {variants}");
            }
        }
    }

    #[test]
    fn a_listing_shows_the_runs_leftovers_until_the_folder_changes() {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = tmp.path().join("sounds");
        fs::create_dir(&dir).unwrap();
        for i in 0..LEFTOVERS_FROM {
            fs::write(dir.join(format!("{i}.wav")), b"x").unwrap();
        }
        for name in [
            "a.wav",
            ".a-transformed.wav.0of1.etl-tmp",
            // Another shard's, and a name that is not a temporary.
            ".b-transformed.wav.1of2.etl-tmp",
            ".0of1.etl-tmp.txt",
        ] {
            fs::write(dir.join(name), b"x").unwrap();
        }
        let paths = [dir.clone()];
        let found = discover(&opts(&paths, None, 1)).unwrap();
        let listed = found.inputs.leftovers();
        let leftovers = listed[dir.as_path()];
        assert_eq!(
            leftovers.if_unchanged(&dir).unwrap(),
            [std::ffi::OsString::from(".a-transformed.wav.0of1.etl-tmp")]
        );
        // Anything made in the folder since: it must be listed again. (A kernel without
        // fine-grained file times gives a change within the same tick as the last the same
        // time: past it.)
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.join(".c-transformed.wav.0of1.etl-tmp"), b"x").unwrap();
        assert!(leftovers.if_unchanged(&dir).is_none());

        // With --out-dir, the folders listed are not where outputs go; a small folder is
        // listed again.
        let out = tmp.path().join("out");
        let found = discover(&opts(&paths, Some(&out), 1)).unwrap();
        assert!(found.inputs.leftovers().is_empty());
        let small = tmp.path().join("small");
        fs::create_dir(&small).unwrap();
        fs::write(small.join("a.wav"), b"x").unwrap();
        let found = discover(&opts(&[small], None, 1)).unwrap();
        assert!(found.inputs.leftovers().is_empty());
    }

    fn plans(found: &Discovery) -> Vec<(PathBuf, PathBuf, Plan)> {
        found
            .inputs
            .iter()
            .map(|i| (i.path, i.output, i.status))
            .collect()
    }

    #[test]
    fn inputs_that_would_share_an_output_fail_after_the_first() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "a.WAV",
            "a.wav",
            "a.Wav",
            "b.wav",
            "b-transformed.wav",
            ".c.wav",
            "d.WAV",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let paths = [dir.path().to_path_buf()];
        let found = discover(&opts(&paths, None, 1)).unwrap();
        let out = |n: &str| dir.path().join(n);
        assert_eq!(
            plans(&found),
            vec![
                (out("a.WAV"), out("a-transformed.wav"), Plan::Transform),
                (
                    out("a.Wav"),
                    out("a-transformed.wav"),
                    Plan::Fail(format!(
                        "output {} would also be written for {}",
                        out("a-transformed.wav").display(),
                        out("a.WAV").display()
                    ))
                ),
                (
                    out("a.wav"),
                    out("a-transformed.wav"),
                    Plan::Fail(format!(
                        "output {} would also be written for {}",
                        out("a-transformed.wav").display(),
                        out("a.WAV").display()
                    ))
                ),
                (out("b.wav"), out("b-transformed.wav"), Plan::Transform),
                (out("d.WAV"), out("d-transformed.wav"), Plan::Transform),
            ]
        );
        assert_eq!(found.inputs.total_bytes(), 5);
    }

    #[test]
    fn overlapping_paths_give_each_output_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/x.wav"), b"xx").unwrap();
        let paths = [dir.path().to_path_buf(), dir.path().join("sub/x.wav")];
        let found = discover(&opts(&paths, None, 1)).unwrap();
        let x = dir.path().join("sub/x.wav");
        let output = dir.path().join("sub/x-transformed.wav");
        assert_eq!(
            plans(&found),
            vec![
                (x.clone(), output.clone(), Plan::Transform),
                (
                    x.clone(),
                    output.clone(),
                    Plan::Fail(format!(
                        "output {} would also be written for {}",
                        output.display(),
                        x.display()
                    ))
                ),
            ]
        );
    }

    #[test]
    fn the_catalogue_gives_back_each_variant_under_out_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in/deep")).unwrap();
        std::fs::write(dir.path().join("in/deep/s.wav"), b"123").unwrap();
        std::fs::write(dir.path().join("in/t.wav"), b"1").unwrap();
        let paths = [dir.path().join("in")];
        let out = dir.path().join("out");
        let found = discover(&opts(&paths, Some(&out), 2)).unwrap();
        let got: Vec<(PathBuf, PathBuf, u32, u64)> = found
            .inputs
            .iter()
            .map(|i| (i.relative, i.output, i.variant, i.size))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "deep/s.wav".into(),
                    out.join("deep/s-transformed-0.wav"),
                    0,
                    3
                ),
                (
                    "deep/s.wav".into(),
                    out.join("deep/s-transformed-1.wav"),
                    1,
                    3
                ),
                ("t.wav".into(), out.join("t-transformed-0.wav"), 0, 1),
                ("t.wav".into(), out.join("t-transformed-1.wav"), 1, 1),
            ]
        );
        let folders = found.inputs.output_folders(true);
        assert_eq!(folders, HashSet::from([out.join("deep"), out.clone()]));
        // Each output costs 24 bytes besides its name, kept once for all its variants.
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }

    #[test]
    fn outputs_in_the_listing_are_checked_and_others_are_not_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for name in ["a.wav", "b.wav", "c.wav"] {
            let path = dir.path().join(name);
            std::fs::write(&path, b"in").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        // a's output is newer than a; c's output is c itself.
        std::fs::write(dir.path().join("a-transformed.wav"), b"out").unwrap();
        std::os::unix::fs::symlink("c.wav", dir.path().join("c-transformed.wav")).unwrap();
        let paths = [dir.path().to_path_buf()];
        let statuses: Vec<Plan> = discover(&opts(&paths, None, 1))
            .unwrap()
            .inputs
            .iter()
            .map(|i| i.status)
            .collect();
        assert_eq!(
            statuses,
            vec![
                Plan::Skip("output is newer than the input".into()),
                Plan::Transform,
                Plan::Fail(format!(
                    "output {} is the same file as the input",
                    dir.path().join("c-transformed.wav").display()
                )),
            ]
        );
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
