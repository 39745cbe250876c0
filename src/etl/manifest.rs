//! The dataset manifest (`--manifest PATH`): one CSV row per output, in the layout Hugging Face's
//! `audiofolder` loader and pandas read as they are (`metadata.csv` in the output folder).
//!
//! The columns are `file_name,source,variant,sigma,snr_db,seed,frames,sample_rate,channels`.
//! `file_name` (what `audiofolder` opens) and `source` are relative to the manifest's folder
//! (with `..` where they are outside it); `snr_db` is empty when the level was given as σ, and
//! `sigma` is empty when it is not known (an output skipped as up to date whose level was given
//! as an SNR: its σ depended on the input's RMS). `seed` is the run's `--seed`, which with the
//! source's relative path and the variant gives the output again.
//!
//! The manifest is rebuilt whole on every run from the rows of the outputs on disk (made now, or
//! skipped as up to date, their levels told again by [`crate::etl::levels`] and their shape read
//! from their headers by [`output_header`]), so a re-run that skips finished work still lists
//! every output. It replaces the old one atomically, as an output does: written under a private
//! temporary name created without following a link, flushed, given the umask's mode, renamed,
//! and the folder flushed.

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use super::levels::LevelSpec;
use super::output;
use super::transform::NoiseLevel;
use super::wav;

pub const HEADER: [&str; 9] = [
    "file_name",
    "source",
    "variant",
    "sigma",
    "snr_db",
    "seed",
    "frames",
    "sample_rate",
    "channels",
];

/// One output, as the manifest lists it. Paths are as the run knows them (absolute or relative
/// to the working folder); [`write`] makes them relative to the manifest's folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub output: PathBuf,
    pub source: PathBuf,
    pub variant: u32,
    /// The σ actually used, relative to full scale; `None` when it cannot be known.
    pub sigma: Option<f64>,
    /// The SNR asked for, when the level was given as one.
    pub snr_db: Option<f64>,
    pub seed: u64,
    pub header: OutputHeader,
}

impl Row {
    /// The row of an output this run did not make (skipped as up to date): its level told again
    /// from its file seed and variant by `spec`, its shape read from its header. The σ of an
    /// output whose level is an SNR depended on the input's RMS and is left empty here.
    pub fn for_existing(
        output: &Path,
        source: &Path,
        variant: u32,
        run_seed: u64,
        file_seed: u64,
        spec: &LevelSpec,
    ) -> Result<Row, String> {
        let (sigma, snr_db) = Row::levels(spec.level_for(file_seed, variant), None);
        Ok(Row {
            output: output.to_path_buf(),
            source: source.to_path_buf(),
            variant,
            sigma,
            snr_db,
            seed: run_seed,
            header: output_header(output)?,
        })
    }

    /// The `sigma` and `snr_db` columns of an output made at `level` (as drawn for it) whose σ,
    /// if the run measured it, was `sigma_used`.
    pub fn levels(level: NoiseLevel, sigma_used: Option<f64>) -> (Option<f64>, Option<f64>) {
        match level {
            NoiseLevel::Sigma(s) => (Some(sigma_used.unwrap_or(s)), None),
            NoiseLevel::SnrDb(db) => (sigma_used, Some(db)),
        }
    }
}

/// The shape of an output, as its header tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputHeader {
    pub frames: u64,
    pub sample_rate: u32,
    pub channels: u16,
}

/// Reads the shape of the output at `path` from its WAV header (for an output skipped as up to
/// date, whose row was not made by this run). The error names the file and the cause.
pub fn output_header(path: &Path) -> Result<OutputHeader, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{}: {}", path.display(), super::describe_io(&e)))?;
    let info = wav::probe(&file).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(OutputHeader {
        frames: info.frames(),
        sample_rate: info.layout.sample_rate,
        channels: info.layout.channels,
    })
}

/// Writes the manifest at `path` from `rows` (sorted by `file_name`), replacing any old one
/// atomically. Fails, naming the path, on a path that is not UTF-8 (a CSV cell holds text).
pub fn write(path: &Path, rows: &[Row]) -> io::Result<()> {
    let folder = output::folder(path);
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        lines.push((
            text_of(&relative_to(&row.output, folder)?, &row.output)?,
            text_of(&relative_to(&row.source, folder)?, &row.source)?,
            row,
        ));
    }
    lines.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.variant.cmp(&b.2.variant)));

    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{}: not a file name", path.display())))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let written = (|| {
        let file = output::create_new(&temp)?;
        let mut csv = csv::Writer::from_writer(io::BufWriter::new(&file));
        csv.write_record(HEADER)?;
        let number = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for (file_name, source, row) in &lines {
            csv.write_record([
                file_name.as_str(),
                source.as_str(),
                &row.variant.to_string(),
                &number(row.sigma),
                &number(row.snr_db),
                &row.seed.to_string(),
                &row.header.frames.to_string(),
                &row.header.sample_rate.to_string(),
                &row.header.channels.to_string(),
            ])?;
        }
        csv.into_inner()
            .map_err(|e| io::Error::other(e.to_string()))?
            .flush()?;
        file.sync_all()?;
        output::publish(&temp, path, output::mode_from_umask(), None)?;
        output::sync_folder(path)
    })();
    if written.is_err() {
        // Only ever a private temporary of ours, never the manifest itself.
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(|e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot write the manifest {}: {}",
                path.display(),
                super::describe_io(&e)
            ),
        )
    })
}

fn text_of(relative: &Path, original: &Path) -> io::Result<String> {
    relative.to_str().map(str::to_string).ok_or_else(|| {
        io::Error::other(format!(
            "{}: the name is not UTF-8, which a CSV manifest cannot hold",
            original.display()
        ))
    })
}

/// `path` relative to `base`, both taken as absolute without resolving links (as the user
/// named them), with `..` where `path` is outside `base`.
fn relative_to(path: &Path, base: &Path) -> io::Result<PathBuf> {
    let normal = |p: &Path| -> io::Result<Vec<PathBuf>> {
        let mut parts: Vec<PathBuf> = Vec::new();
        for c in std::path::absolute(p)?.components() {
            match c {
                Component::ParentDir => {
                    parts.pop();
                }
                Component::CurDir => {}
                other => parts.push(PathBuf::from(other.as_os_str())),
            }
        }
        Ok(parts)
    };
    let (path, base) = (normal(path)?, normal(base)?);
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..base.len() {
        out.push("..");
    }
    for part in &path[common..] {
        out.push(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn row(dir: &Path, name: &str, variant: u32, level: NoiseLevel) -> Row {
        let (sigma, snr_db) = Row::levels(level, None);
        Row {
            output: dir.join(name),
            source: dir.join("../in/a, \"quoted\".wav"),
            variant,
            sigma,
            snr_db,
            seed: u64::MAX,
            header: OutputHeader {
                frames: 16000,
                sample_rate: 16000,
                channels: 2,
            },
        }
    }

    fn sample(dir: &Path) -> (PathBuf, Vec<Row>) {
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let rows = vec![
            row(&out, "b-transformed-1.wav", 1, NoiseLevel::SnrDb(12.5)),
            row(&out, "sub/b-transformed-0.wav", 0, NoiseLevel::SnrDb(17.25)),
            row(&out, "a-transformed-0.wav", 0, NoiseLevel::Sigma(0.1)),
        ];
        (out.join("metadata.csv"), rows)
    }

    #[test]
    fn rows_of_existing_outputs_are_told_again_from_seed_and_variant() {
        use crate::etl::levels::Span;
        use crate::etl::tone::{self, Tone};
        use crate::etl::wav::{Encoding, Layout};
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("a-transformed-2.wav");
        let layout = Layout {
            encoding: Encoding::I16,
            channels: 2,
            sample_rate: 8000,
        };
        let made = Tone {
            layout,
            seconds: 0.25,
            frequency: 440.0,
            amplitude: 0.5,
        };
        tone::write(&output, &made).unwrap();
        let spec = LevelSpec::Sigma(Span {
            low: 0.01,
            high: 0.2,
        });
        let file_seed = crate::etl::noise::file_seed(5, b"a.wav");
        let row = Row::for_existing(&output, Path::new("a.wav"), 2, 5, file_seed, &spec).unwrap();
        assert_eq!(
            row.header,
            OutputHeader {
                frames: 2000,
                sample_rate: 8000,
                channels: 2
            }
        );
        let NoiseLevel::Sigma(drawn) = spec.level_for(file_seed, 2) else {
            unreachable!()
        };
        assert_eq!((row.sigma, row.snr_db, row.seed), (Some(drawn), None, 5));

        let snr = LevelSpec::SnrDb(Span::single(15.0));
        let row = Row::for_existing(&output, Path::new("a.wav"), 2, 5, file_seed, &snr).unwrap();
        assert_eq!((row.sigma, row.snr_db), (None, Some(15.0)));

        // An output that is not a WAV file is an error naming it.
        let bad = dir.path().join("b-transformed-0.wav");
        std::fs::write(&bad, b"not a wav").unwrap();
        let err = Row::for_existing(&bad, Path::new("b.wav"), 0, 5, 1, &spec).unwrap_err();
        assert!(
            err.contains("b-transformed-0.wav") && err.contains("not a WAV"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths() {
        let r = |p: &str, b: &str| relative_to(Path::new(p), Path::new(b)).unwrap();
        assert_eq!(r("/a/b/c.wav", "/a"), Path::new("b/c.wav"));
        assert_eq!(r("/a/b/c.wav", "/a/d"), Path::new("../b/c.wav"));
        assert_eq!(r("/a/./b/../c.wav", "/a/"), Path::new("c.wav"));
    }

    #[test]
    fn the_manifest_parses_back_with_one_row_per_output() {
        let dir = tempfile::tempdir().unwrap();
        let (path, rows) = sample(dir.path());
        // An old manifest is replaced whole.
        std::fs::write(&path, "old").unwrap();
        write(&path, &rows).unwrap();
        let mut reader = csv::Reader::from_path(&path).unwrap();
        assert_eq!(
            reader.headers().unwrap(),
            &csv::StringRecord::from(&HEADER[..])
        );
        let got: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        let cells: Vec<Vec<&str>> = got.iter().map(|r| r.iter().collect()).collect();
        let source = "../in/a, \"quoted\".wav";
        let max = u64::MAX.to_string();
        assert_eq!(
            cells,
            vec![
                vec![
                    "a-transformed-0.wav",
                    source,
                    "0",
                    "0.1",
                    "",
                    &max,
                    "16000",
                    "16000",
                    "2"
                ],
                vec![
                    "b-transformed-1.wav",
                    source,
                    "1",
                    "",
                    "12.5",
                    &max,
                    "16000",
                    "16000",
                    "2"
                ],
                vec![
                    "sub/b-transformed-0.wav",
                    source,
                    "0",
                    "",
                    "17.25",
                    &max,
                    "16000",
                    "16000",
                    "2"
                ],
            ]
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !output::umask());
        // No temporary is left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("metadata.csv")]);
    }

    #[test]
    fn a_symbolic_link_at_the_temporary_name_is_refused_and_nothing_is_written_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, rows) = sample(dir.path());
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let temp = path.with_file_name(format!(".metadata.csv.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &temp).unwrap();
        let err = write(&path, &rows).unwrap_err().to_string();
        assert!(
            err.contains("metadata.csv") && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!path.exists());
    }

    /// Python's csv module, and pandas where installed, read the columns and values as written.
    #[test]
    fn python_csv_and_pandas_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, rows) = sample(dir.path());
        write(&path, &rows).unwrap();
        let run = |script: &str| {
            std::process::Command::new("python3")
                .arg("-c")
                .arg(script)
                .arg(&path)
                .output()
        };
        let Ok(out) = run("import csv, sys\n\
            rows = list(csv.DictReader(open(sys.argv[1], newline='')))\n\
            print(list(rows[0].keys())); print(len(rows)); print(rows[0]['source'])")
        else {
            println!("skipped: python3 is not installed");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("{:?}", HEADER).replace('"', "'"));
        assert_eq!(lines[1], "3");
        assert_eq!(lines[2], "../in/a, \"quoted\".wav");

        let pandas = run("import sys, pandas\n\
            df = pandas.read_csv(sys.argv[1])\n\
            print(','.join(df.columns)); print(len(df)); print(df['snr_db'].isna().tolist())\n\
            print(df['sigma'].iloc[0], df['snr_db'].iloc[1], df['seed'].iloc[0], df['channels'].dtype)")
        .unwrap();
        if String::from_utf8_lossy(&pandas.stderr).contains("No module named 'pandas'") {
            println!("skipped the pandas check: pandas is not installed");
            return;
        }
        assert!(
            pandas.status.success(),
            "{}",
            String::from_utf8_lossy(&pandas.stderr)
        );
        let text = String::from_utf8(pandas.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER.join(","));
        assert_eq!(lines[1], "3");
        assert_eq!(lines[2], "[True, False, False]");
        assert_eq!(lines[3], format!("0.1 12.5 {} int64", u64::MAX));
    }
}
