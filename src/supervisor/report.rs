//! Telling the user what happened: one line per file on stdout as it completes (in the words of the
//! Python example: `sounds/example0.wav completed in 0.33s`; the lines of the files completed
//! together are written together, see [`Reporter::flush_lines`]), failures on stderr through the log,
//! the total and the counts at the end, a progress bar on a terminal, and an optional JSON Lines
//! report written and flushed file by file, so an interrupted run keeps what finished.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::etl::describe_io;

/// One file's line in the report.
///
/// In the JSON line, `output` is null for a failed file (this run wrote nothing for it), and a
/// skipped file's `error` (why it was skipped) is written as `reason`, with `error` null, so that
/// `error` is set exactly when `status` is `failed`.
#[derive(Debug, Clone)]
pub struct FileRecord {
    pub input: PathBuf,
    /// Where the output goes (or went).
    pub output: PathBuf,
    pub status: Status,
    pub seconds: f64,
    pub frames: Option<u64>,
    pub channels: Option<u16>,
    pub sample_rate: Option<u32>,
    /// The output's encoding (`--output-format` names) and container.
    pub output_format: Option<&'static str>,
    pub output_container: Option<&'static str>,
    pub clipped: Option<u64>,
    pub attempts: u32,
    pub worker_pid: Option<u32>,
    /// Why the file failed or was skipped.
    pub error: Option<String>,
    /// With several variants or a level range: which output of the input this is, the σ
    /// actually used and the SNR asked for (absent otherwise, and from lines without them).
    pub variant: Option<u32>,
    pub sigma: Option<f64>,
    pub snr_db: Option<f64>,
}

impl FileRecord {
    /// A record with no figures yet: for files decided without a worker, or to fill in.
    pub fn new(input: &Path, output: &Path, status: Status, error: Option<String>) -> FileRecord {
        FileRecord {
            input: input.to_path_buf(),
            output: output.to_path_buf(),
            status,
            seconds: 0.0,
            frames: None,
            channels: None,
            sample_rate: None,
            output_format: None,
            output_container: None,
            clipped: None,
            attempts: 0,
            worker_pid: None,
            error,
            variant: None,
            sigma: None,
            snr_db: None,
        }
    }
}

impl Serialize for FileRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (output, error, reason) = match self.status {
            Status::Ok => (Some(&self.output), self.error.as_ref(), None),
            Status::Skipped => (Some(&self.output), None, self.error.as_ref()),
            Status::Failed => (None, self.error.as_ref(), None),
        };
        let mut map = s.serialize_map(None)?;
        // Lossy: a file name that is not UTF-8 must not stop the report (serde refuses such paths).
        map.serialize_entry("input", &self.input.to_string_lossy())?;
        map.serialize_entry("output", &output.map(|o| o.to_string_lossy()))?;
        map.serialize_entry("status", &self.status)?;
        map.serialize_entry("seconds", &self.seconds)?;
        map.serialize_entry("frames", &self.frames)?;
        map.serialize_entry("channels", &self.channels)?;
        map.serialize_entry("sample_rate", &self.sample_rate)?;
        map.serialize_entry("output_format", &self.output_format)?;
        map.serialize_entry("output_container", &self.output_container)?;
        map.serialize_entry("clipped", &self.clipped)?;
        map.serialize_entry("attempts", &self.attempts)?;
        map.serialize_entry("worker_pid", &self.worker_pid)?;
        map.serialize_entry("error", &error)?;
        if let Some(reason) = reason {
            map.serialize_entry("reason", reason)?;
        }
        if let Some(variant) = self.variant {
            map.serialize_entry("variant", &variant)?;
        }
        if let Some(sigma) = self.sigma {
            map.serialize_entry("sigma", &sigma)?;
        }
        if let Some(snr_db) = self.snr_db {
            map.serialize_entry("snr_db", &snr_db)?;
        }
        map.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Failed,
}

/// The counts at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub ok: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Files not finished because the run was stopped.
    pub not_run: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ok, {} skipped, {} failed",
            self.ok, self.skipped, self.failed
        )?;
        if self.not_run > 0 {
            write!(f, ", {} not run", self.not_run)?;
        }
        Ok(())
    }
}

/// The bar currently on screen, so that log lines can be printed above it.
static BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn bar_slot() -> &'static Mutex<Option<ProgressBar>> {
    BAR.get_or_init(|| Mutex::new(None))
}

/// Runs `f` with the progress bar (if any) cleared from the screen, and draws it again after.
pub fn above_bar<R>(f: impl FnOnce() -> R) -> R {
    let bar = bar_slot().lock().ok().and_then(|b| b.clone());
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// Stderr for the log, printed above the progress bar.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        above_bar(|| io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// A path for a line of plain text: control characters written as `\n`, `\t`, `\x1b` (as
/// Rust's `escape_debug` writes them) and bytes that are not UTF-8 as `\xff`, so that one file is
/// always one line. Other characters, non-ASCII ones included, are kept as they are.
pub fn escape_name(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(&escape_text(chunk.valid()));
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// Text for a line of plain text, with its control characters escaped as in [`escape_name`].
pub fn escape_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The report cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("report {}: {}", path.display(), describe_io(cause))]
pub struct ReportError {
    pub path: PathBuf,
    pub cause: io::Error,
}

/// Opens the report: emptied for a run, appended to by a service (and reopened for logrotate).
fn open_report(path: &Path, append: bool) -> Result<File, ReportError> {
    let error = |cause| ReportError {
        path: path.to_path_buf(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(error)
}

pub struct Reporter {
    report: Option<File>,
    report_path: Option<PathBuf>,
    bar: Option<ProgressBar>,
    /// Whether the bar counts bytes (else files).
    by_bytes: bool,
    pub counts: Counts,
    /// No per-file line on stdout (generated tones are logged instead).
    quiet_lines: bool,
    /// Per-file lines not yet written to stdout: whole lines only.
    lines: Vec<u8>,
}

/// Per-file lines held beyond this are written at once.
const LINES_HELD: usize = 64 << 10;

impl Reporter {
    /// `progress`: draw a bar (only honoured when stderr is a terminal).
    pub fn new(
        report: Option<&Path>,
        progress: bool,
        total_files: u64,
        total_bytes: u64,
        quiet_lines: bool,
    ) -> Result<Reporter, ReportError> {
        Self::opened(
            report,
            false,
            progress,
            total_files,
            total_bytes,
            quiet_lines,
        )
    }

    /// A reporter for a service: the report is appended to, and no bar is drawn.
    pub fn appending(report: Option<&Path>) -> Result<Reporter, ReportError> {
        Self::opened(report, true, false, 0, 0, false)
    }

    fn opened(
        report: Option<&Path>,
        append: bool,
        progress: bool,
        total_files: u64,
        total_bytes: u64,
        quiet_lines: bool,
    ) -> Result<Reporter, ReportError> {
        let report_path = report.map(Path::to_path_buf);
        let report = report.map(|path| open_report(path, append)).transpose()?;
        // The bar follows bytes when the sizes are known (a run), else files (generated tones).
        let by_bytes = total_bytes > 0;
        let bar = (progress && io::stderr().is_terminal() && total_files > 0).then(|| {
            let (length, template) = if by_bytes {
                (
                    total_bytes,
                    "{bar:30} {msg} files  {binary_bytes}/{binary_total_bytes}  {binary_bytes_per_sec}  ETA {eta}",
                )
            } else {
                (total_files, "{bar:30} {msg} files  {elapsed}  ETA {eta}")
            };
            let bar =
                ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
            bar.set_message(format!("0/{total_files}"));
            bar.enable_steady_tick(Duration::from_millis(200));
            *bar_slot().lock().unwrap() = Some(bar.clone());
            bar
        });
        Ok(Reporter {
            report,
            report_path,
            bar,
            by_bytes,
            counts: Counts::default(),
            quiet_lines,
            lines: Vec::new(),
        })
    }

    /// Opens the report again by its name (after logrotate moved it away), appending.
    pub fn reopen(&mut self) {
        let Some(path) = self.report_path.clone() else {
            return;
        };
        match open_report(&path, true) {
            Ok(file) => {
                self.report = Some(file);
                tracing::info!("reopened the report {}", path.display());
            }
            Err(e) => tracing::error!("{e}; still writing to the old file"),
        }
    }

    /// Writes one JSON object as a line of the report, outside any file (a service's summary).
    pub fn note(&mut self, value: &serde_json::Value) {
        self.write_line(value);
    }

    /// Records a file that finished, one way or another. `bytes` advances the progress bar.
    pub fn file(&mut self, record: FileRecord, bytes: u64, total_files: u64) {
        match record.status {
            Status::Ok => {
                self.counts.ok += 1;
                if !self.quiet_lines {
                    let _ = writeln!(
                        self.lines,
                        "{} completed in {:.2}s",
                        escape_name(&record.input),
                        record.seconds
                    );
                    if self.lines.len() >= LINES_HELD {
                        self.flush_lines();
                    }
                }
            }
            Status::Skipped => {
                self.counts.skipped += 1;
                tracing::info!(
                    file = %record.input.display(),
                    "{}: skipped: {}",
                    escape_name(&record.input),
                    record.error.as_deref().unwrap_or("")
                );
            }
            Status::Failed => {
                self.counts.failed += 1;
                let cause = record.error.as_deref().unwrap_or("failed");
                tracing::error!(file = %record.input.display(), "{}: {cause}", escape_name(&record.input));
            }
        }
        if let Some(bar) = &self.bar {
            if !self.by_bytes {
                bar.inc(1);
            } else if record.attempts == 0 {
                // Decided without a worker (skipped, or refused up front): not work done, so it
                // leaves the total rather than inflating the rate and the ETA.
                bar.set_length(bar.length().unwrap_or(0).saturating_sub(bytes));
            } else {
                bar.inc(bytes);
            }
            let done = self.counts.ok + self.counts.skipped + self.counts.failed;
            bar.set_message(format!("{done}/{total_files}"));
        }
        self.write_line(&record);
    }

    /// Writes the per-file lines held, in one write: the engine calls it before it waits for
    /// anything, so a line is never held longer than it takes to handle the files completed with
    /// it (a batch renamed into place together), and stdout is written once per batch, not once
    /// per file (a pipe's reader, journald, `tee`, is woken once).
    pub fn flush_lines(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        above_bar(|| {
            let mut out = io::stdout().lock();
            let _ = out.write_all(&self.lines);
            let _ = out.flush();
        });
        self.lines.clear();
    }

    /// Ends the run: the total time and the counts on stdout, and the summary line of the report.
    pub fn finish(&mut self, seconds: f64, summary: serde_json::Value, verb: &str) {
        self.flush_lines();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            *bar_slot().lock().unwrap() = None;
        }
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{verb} took {seconds:.2}s total");
        let _ = writeln!(out, "{}", self.counts);
        self.write_line(&serde_json::json!({ "summary": summary }));
    }

    /// Appends one line with a single write, so that a run killed at any moment leaves only
    /// whole lines behind.
    fn write_line(&mut self, value: &impl Serialize) {
        let Some(report) = self.report.as_mut() else {
            return;
        };
        let written = serde_json::to_vec(value)
            .map_err(io::Error::other)
            .and_then(|mut line| {
                line.push(b'\n');
                report.write_all(&line)
            });
        if let Err(e) = written {
            let path = self.report_path.as_deref().unwrap_or(Path::new("report"));
            tracing::error!(
                "report {}: {}; no longer writing it",
                path.display(),
                describe_io(&e)
            );
            self.report = None;
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.flush_lines();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if let Ok(mut slot) = bar_slot().lock() {
                *slot = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn names_are_one_line_and_keep_printable_characters() {
        let name = OsStr::from_bytes(b"d/a\nb\tc\x1b[31m\xff\xc3\xa9 \xe2\x80\x8a.wav");
        assert_eq!(
            escape_name(Path::new(name)),
            "d/a\\nb\\tc\\x1b[31m\\xff\u{e9} \u{200a}.wav"
        );
        assert_eq!(escape_text("plain é"), "plain é");
        assert_eq!(escape_text("a\u{85}b"), "a\\u{85}b");
    }
}
