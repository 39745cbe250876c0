//! The command line: every subcommand and flag, with the checks that make a bad value a usage
//! error (exit 2) naming the problem.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::etl::levels::{LevelSpec, Span};
use crate::etl::tone::ToneSpec;
use crate::etl::wav::Encoding;
use crate::etl::wav::Layout;
use crate::supervisor::discover::Shard;

#[derive(Parser, Debug)]
#[command(
    name = "etl",
    version,
    about = "Add Gaussian noise to batches of WAV files, in parallel worker processes",
    after_help = "Exit codes: 0 all files ok or skipped; 1 some files failed; 2 usage error; \
                  75 another run holds the lock; 130 interrupted (SIGINT); 143 terminated (SIGTERM)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More log output on stderr (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Less log output on stderr (-q warnings and errors only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Log format on stderr. RUST_LOG, when set, overrides -v and -q.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Transform WAV files: add noise, clip, write <name>-transformed.wav.
    Run(RunArgs),
    /// Write test tones: example0.wav, example1.wav, ... in a folder.
    GenFakeData(GenArgs),
    /// Generate the test tones that are missing, then transform them, with timings.
    Demo(DemoArgs),
    /// A service: transform what is in the folders, then each new file once it is complete,
    /// until SIGTERM or SIGINT (exit 0). For systemd (Type=notify).
    Watch(WatchArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page etl(1), in roff, from these definitions (for packaging).
    #[command(hide = true)]
    Man,
    /// How the supervisor starts its workers (internal).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        server: String,
        #[arg(long)]
        parent: u32,
    },
}

#[derive(Args, Debug, Clone)]
pub struct NoiseArgs {
    /// Standard deviation of the noise, relative to full scale (1.0); 0 to 1000. LOW..HIGH
    /// draws one per output, uniformly.
    #[arg(long, value_parser = sigma_span, conflicts_with = "snr_db", allow_hyphen_values = true, value_name = "SIGMA|LOW..HIGH")]
    pub sigma: Option<Span>,

    /// Noise level as a signal-to-noise ratio in dB against each file's RMS (all channels);
    /// -300 to 300. LOW..HIGH draws one per output, uniformly in dB.
    #[arg(long, value_parser = snr_db_span, allow_hyphen_values = true, value_name = "DB|LOW..HIGH")]
    pub snr_db: Option<Span>,

    /// Seed for the noise: the same seed gives the same bytes whatever -j. Drawn and logged if
    /// not given.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl NoiseArgs {
    /// The level asked for, one value or a range: σ 0.1 when neither flag is given.
    pub fn level_spec(&self) -> LevelSpec {
        match (self.sigma, self.snr_db) {
            (_, Some(db)) => LevelSpec::SnrDb(db),
            (Some(s), None) => LevelSpec::Sigma(s),
            (None, None) => LevelSpec::Sigma(Span::single(0.1)),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// WAV files, or folders of them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    #[command(flatten)]
    pub noise: NoiseArgs,

    /// Worker processes [default: the available parallelism].
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub jobs: Option<u16>,

    /// Write outputs under DIR, mirroring the folders below each PATH, instead of beside inputs.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,

    /// Descend into sub-folders.
    #[arg(short, long)]
    pub recursive: bool,

    /// Transform even when an output newer than its input exists.
    #[arg(long)]
    pub force: bool,

    /// Times a file is retried on a fresh worker after its worker died or timed out, and times it
    /// is started again after it changed while it was being read.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub retries: u32,

    /// Longest time one file may take (30s, 2m, 1h); the worker is then stopped.
    #[arg(long, value_parser = positive_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// Write a JSON Lines report: one object per file as it finishes, then a summary.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Say what would be transformed or skipped, and why; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Take only the files whose relative path hashes to INDEX of COUNT shards (INDEX from 0).
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<Shard>,

    /// Skip fsync of outputs before they are renamed into place (faster; a power loss may then
    /// leave an output that looks done but is not).
    #[arg(long)]
    pub no_fsync: bool,

    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Take no symbolic link found below a PATH, to a file or to a folder (for folders other
    /// users can write to); the PATHs themselves are still followed.
    #[arg(long)]
    pub no_follow: bool,
    /// Skip files modified less than this long ago (1s, 500ms, 2m) as still being written; 0 takes
    /// every file.
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION")]
    pub settle: Duration,
    /// Encoding of the outputs: `same` as each input, or convert (the noise is added in the
    /// input's scale, then encoded). f32 keeps the noise's precision for 8-bit and G.711 inputs.
    #[arg(long, value_enum, default_value_t = OutputFormatArg::Same, value_name = "FORMAT")]
    pub output_format: OutputFormatArg,

    /// Outputs per input, each with its own noise (and level, from a range): NAME-transformed-0.wav
    /// .. NAME-transformed-{N-1}.wav. With 1, NAME-transformed.wav.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000), value_name = "N")]
    pub variants: u32,

    /// Write a CSV dataset manifest: one row per output (file_name, source, variant, sigma,
    /// snr_db, seed, frames, sample_rate, channels); metadata.csv in the output folder suits
    /// Hugging Face's audiofolder and pandas.
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormatArg {
    Same,
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
    Alaw,
    Ulaw,
}

impl OutputFormatArg {
    /// The encoding to convert to, `None` for `same`.
    pub fn encoding(self) -> Option<Encoding> {
        Some(match self {
            OutputFormatArg::Same => return None,
            OutputFormatArg::U8 => Encoding::U8,
            OutputFormatArg::I16 => Encoding::I16,
            OutputFormatArg::I24 => Encoding::I24,
            OutputFormatArg::I32 => Encoding::I32,
            OutputFormatArg::F32 => Encoding::F32,
            OutputFormatArg::F64 => Encoding::F64,
            OutputFormatArg::Alaw => Encoding::ALaw,
            OutputFormatArg::Ulaw => Encoding::MuLaw,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Folders (or files) to watch.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    #[command(flatten)]
    pub noise: NoiseArgs,

    /// Worker processes, kept running between files [default: the available parallelism].
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub jobs: Option<u16>,

    /// Write outputs under DIR, mirroring the folders below each PATH, instead of beside inputs.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,

    /// Watch sub-folders too, new ones included.
    #[arg(short, long)]
    pub recursive: bool,

    /// Times a file is retried on a fresh worker after its worker died or timed out, and times it
    /// is started again after it changed while it was being read.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub retries: u32,

    /// Longest time one file may take (30s, 2m, 1h); the worker is then stopped.
    #[arg(long, value_parser = positive_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// Append a JSON Lines report: one object per file as it finishes; SIGHUP reopens it.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Take only the files whose relative path hashes to INDEX of COUNT shards (INDEX from 0).
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<Shard>,

    /// Skip fsync of outputs before they are renamed into place.
    #[arg(long)]
    pub no_fsync: bool,

    /// Take no symbolic link found below a PATH, to a file or to a folder.
    #[arg(long)]
    pub no_follow: bool,

    /// A file is taken once it has not changed for this long (1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION")]
    pub settle: Duration,

    /// Encoding of the outputs: `same` as each input, or convert (as `etl run`).
    #[arg(long, value_enum, default_value_t = OutputFormatArg::Same, value_name = "FORMAT")]
    pub output_format: OutputFormatArg,

    /// Walk the PATHs again this often, for changes that events missed (5min, 1h).
    #[arg(long, default_value = "5min", value_parser = positive_duration, value_name = "DURATION")]
    pub rescan: Duration,

    /// Serve metrics for Prometheus on ADDR (such as 127.0.0.1:9464), at /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Args, Debug, Clone)]
pub struct ToneArgs {
    /// Number of files.
    #[arg(long, default_value_t = 24, value_name = "N")]
    pub count: u32,

    /// Length of each file in seconds (fractions allowed); LOW..HIGH draws one per file.
    #[arg(long, default_value = "240", value_parser = positive_span, value_name = "SECONDS|LOW..HIGH")]
    pub duration: Span,

    /// Tone frequency in Hz; LOW..HIGH draws one per file.
    #[arg(long, default_value = "440", value_parser = positive_span, value_name = "HZ|LOW..HIGH")]
    pub frequency: Span,

    /// Peak amplitude relative to full scale, from 0 to 1.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    pub amplitude: f64,

    /// Samples per second.
    #[arg(long, default_value_t = 44100, value_parser = clap::value_parser!(u32).range(1..), value_name = "HZ")]
    pub sample_rate: u32,

    /// Channels (the same tone on each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub channels: u16,

    /// Sample format.
    #[arg(long, value_enum, default_value_t = FormatArg::F32)]
    pub format: FormatArg,

    /// Worker processes [default: the available parallelism].
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub jobs: Option<u16>,

    /// Replace files that exist.
    #[arg(long)]
    pub force: bool,
}

impl ToneArgs {
    /// The tones asked for: each file's is [`crate::etl::tone::tone_for`] of this.
    pub fn tone_spec(&self) -> ToneSpec {
        ToneSpec {
            layout: Layout {
                encoding: self.format.into(),
                channels: self.channels,
                sample_rate: self.sample_rate,
            },
            seconds: self.duration,
            frequency: self.frequency,
            amplitude: self.amplitude,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// Folder to write into.
    #[arg(long, default_value = "sounds", value_name = "DIR")]
    pub out_dir: PathBuf,

    #[command(flatten)]
    pub tone: ToneArgs,

    /// Seed for the ranges of --duration and --frequency: the same seed gives the same files.
    /// Drawn and logged if not given.
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Folder of the test tones and their outputs.
    #[arg(long, default_value = "sounds", value_name = "DIR")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub tone: ToneArgs,

    #[command(flatten)]
    pub noise: NoiseArgs,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    F32,
    I16,
    I24,
    I32,
    U8,
    F64,
    Alaw,
    Ulaw,
}

impl From<FormatArg> for Encoding {
    fn from(f: FormatArg) -> Encoding {
        match f {
            FormatArg::F32 => Encoding::F32,
            FormatArg::I16 => Encoding::I16,
            FormatArg::I24 => Encoding::I24,
            FormatArg::I32 => Encoding::I32,
            FormatArg::U8 => Encoding::U8,
            FormatArg::F64 => Encoding::F64,
            FormatArg::Alaw => Encoding::ALaw,
            FormatArg::Ulaw => Encoding::MuLaw,
        }
    }
}

fn finite(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s} is not a finite number"))
    }
}

/// Beyond these the noise is all clipping (or far below the least bit of any format), and beyond
/// about ±6000 dB the SNR's sigma is no longer a finite number.
const MAX_SIGMA: f64 = 1000.0;
const MAX_SNR_DB: f64 = 300.0;

fn sigma(s: &str) -> Result<f64, String> {
    let v = non_negative(s)?;
    if v <= MAX_SIGMA {
        Ok(v)
    } else {
        Err(format!("{s} is too large; it must be at most {MAX_SIGMA}"))
    }
}

fn snr_db(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v.abs() <= MAX_SNR_DB {
        Ok(v)
    } else {
        Err(format!(
            "{s} dB is out of range; it must be from -{MAX_SNR_DB} to {MAX_SNR_DB}"
        ))
    }
}

fn sigma_span(s: &str) -> Result<Span, String> {
    Span::parse(s, sigma)
}

fn snr_db_span(s: &str) -> Result<Span, String> {
    Span::parse(s, snr_db)
}

fn positive_span(s: &str) -> Result<Span, String> {
    Span::parse(s, positive)
}

fn non_negative(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{s} is negative; it must be 0 or more"))
    }
}

fn positive(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{s} must be more than 0"))
    }
}

fn unit_interval(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is outside 0 to 1"))
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as 1s, 500ms or 2m: {e}"))
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as 30s, 2m or 1h: {e}"))?;
    if d.is_zero() {
        Err("a timeout of 0 would stop every file at once".into())
    } else {
        Ok(d)
    }
}

/// etl(1): one page with every public subcommand (their synopsis, description and options under
/// COMMANDS), so that `man etl` tells everything and there is one file to install. Regenerated by
/// `cargo run -q -- man > doc/etl.1`; tests/manpage.rs checks the copy in the repository.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    type Render = fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>;
    // Each rendered part repeats a two-line preamble (the one in the title part serves the page)
    // and, after the title, opens with its `.SH` heading: keep the heading or drop it.
    fn part(man: &clap_mangen::Man, render: Render, heading: bool) -> std::io::Result<Vec<u8>> {
        let mut roff = Vec::new();
        render(man, &mut roff)?;
        let text = String::from_utf8_lossy(&roff);
        let mut lines = text
            .lines()
            .skip_while(|l| l.starts_with(".ie ") || l.starts_with(".el "))
            .peekable();
        if !heading && lines.peek().is_some_and(|l| l.starts_with(".SH ")) {
            lines.next();
        }
        Ok(lines
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes())
    }
    use clap_mangen::Man;
    // `etl help` is clap's own; the page is the help.
    let mut cli = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    cli.build();
    let top = Man::new(cli.clone()).date("");
    let mut page = Vec::new();
    top.render_title(&mut page)?;
    for render in [
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ] {
        page.extend(part(&top, render, true)?);
    }
    page.extend_from_slice(b".SH COMMANDS\n");
    for sub in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        // The global options and --help are told once, above.
        let sub = sub.clone().mut_args(|a| {
            let told_above = a.is_global_set() || a.get_id() == "help";
            a.hide(told_above)
        });
        let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_string();
        page.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
        let man = Man::new(sub);
        for render in [
            Man::render_synopsis_section,
            Man::render_description_section,
            Man::render_options_section,
        ] {
            let body = part(&man, render, false)?;
            if !body.is_empty() {
                page.extend_from_slice(b".PP\n");
                page.extend(body);
            }
        }
    }
    page.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    page.extend(part(&top, Man::render_extra_section, false)?);
    page.extend(part(&top, Man::render_version_section, true)?);
    Ok(page)
}
