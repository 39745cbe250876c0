//! `etl`: parse the command line, start logging, call the library, map the outcome to an exit code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

use audio_etl::cli::{Cli, Command, LogFormat, ToneArgs};
use audio_etl::supervisor::discover::Shard;
use audio_etl::supervisor::executor::{Executor, ExecutorConfig};
use audio_etl::supervisor::lock::LockError;
use audio_etl::supervisor::report::LogWriter;
use audio_etl::supervisor::{self, GenerateOptions, RunEnd, RunError, RunOptions, WatchOptions};

/// The exit codes, as README.md documents them.
#[derive(Clone, Copy)]
enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Locked = 75,
    Interrupted = 130,
    Terminated = 143,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = log_level(&cli);
    if let Command::Worker { server, parent } = &cli.command {
        init_logging(&level, cli.log_format);
        return match audio_etl::worker::run(server, *parent) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(&level, cli.log_format);
    let progress = cli.quiet == 0 && cli.log_format == LogFormat::Text;
    let worker_args = vec![
        "--log-format".into(),
        format!("{:?}", cli.log_format).to_lowercase(),
        format!("-{}", level_flag(&cli)),
    ];
    let worker_args = worker_args.into_iter().filter(|a| a != "-").collect();

    let exit = match cli.command {
        Command::Run(args) => {
            let jobs = jobs(args.jobs);
            let mut pool = Executor::new(ExecutorConfig {
                workers: jobs,
                retries: args.retries,
                timeout: args.timeout,
                worker_args,
            });
            let opts = RunOptions {
                paths: args.paths,
                levels: args.noise.level_spec(),
                variants: args.variants,
                manifest: args.manifest,
                seed: args.noise.seed,
                out_dir: args.out_dir,
                recursive: args.recursive,
                no_follow: args.no_follow,
                force: args.force,
                shard: args.shard.unwrap_or(Shard::WHOLE),
                report: args.report,
                dry_run: args.dry_run,
                progress: progress && !args.no_progress,
                fsync: !args.no_fsync,
                jobs,
                settle: args.settle,
                retries: args.retries,
                output_format: args.output_format.encoding(),
            };
            conclude(supervisor::run(&mut pool, &opts))
        }
        Command::GenFakeData(args) => {
            let mut pool = Executor::new(pool_config(args.tone.jobs, worker_args));
            conclude(supervisor::generate(
                &mut pool,
                &generate_options(args.out_dir, &args.tone, args.seed, progress),
            ))
        }
        Command::Demo(args) => {
            let mut pool = Executor::new(pool_config(args.tone.jobs, worker_args));
            let generated = supervisor::generate(
                &mut pool,
                &generate_options(args.dir.clone(), &args.tone, args.noise.seed, progress),
            );
            match conclude(generated) {
                Exit::Ok => {
                    // Not println!: it panics when stdout is a pipe whose reader left.
                    let _ = writeln!(std::io::stdout(), "starting etl");
                    let opts = RunOptions {
                        paths: vec![args.dir],
                        levels: args.noise.level_spec(),
                        variants: 1,
                        manifest: None,
                        seed: args.noise.seed,
                        out_dir: None,
                        recursive: false,
                        no_follow: false,
                        force: true,
                        shard: Shard::WHOLE,
                        report: None,
                        dry_run: false,
                        progress,
                        fsync: true,
                        jobs: jobs(args.tone.jobs),
                        // The demo made these files itself, just now, and finished them.
                        settle: std::time::Duration::ZERO,
                        retries: 1,
                        output_format: None,
                    };
                    conclude(supervisor::run(&mut pool, &opts))
                }
                other => other,
            }
        }
        Command::Watch(args) => {
            let jobs = jobs(args.jobs);
            let mut executor = Executor::new(ExecutorConfig {
                workers: jobs,
                retries: args.retries,
                timeout: args.timeout,
                worker_args,
            });
            let opts = WatchOptions {
                run: RunOptions {
                    paths: args.paths,
                    levels: args.noise.level_spec(),
                    variants: 1,
                    manifest: None,
                    seed: args.noise.seed,
                    out_dir: args.out_dir,
                    recursive: args.recursive,
                    no_follow: args.no_follow,
                    force: false,
                    shard: args.shard.unwrap_or(Shard::WHOLE),
                    report: args.report,
                    dry_run: false,
                    progress: false,
                    fsync: !args.no_fsync,
                    jobs,
                    settle: args.settle,
                    retries: args.retries,
                    output_format: args.output_format.encoding(),
                },
                rescan: args.rescan,
                metrics: args.metrics,
            };
            match supervisor::watch(&mut executor, &opts) {
                // A service stopped by SIGTERM or SIGINT has done what it should: the daemon
                // convention is exit 0.
                Ok(RunEnd::Interrupted(..)) => Exit::Ok,
                other => conclude(other),
            }
        }
        Command::Completions { shell } => {
            // clap_complete offers hidden subcommands too: leave out the internal `etl worker`.
            let full = Cli::command();
            let mut cmd = clap::Command::new("etl")
                .version(env!("CARGO_PKG_VERSION"))
                .args(full.get_arguments().cloned())
                .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
            clap_complete::generate(shell, &mut cmd, "etl", &mut std::io::stdout());
            Exit::Ok
        }
        Command::Man => match audio_etl::cli::man_page()
            .and_then(|page| std::io::Write::write_all(&mut std::io::stdout().lock(), &page))
        {
            Ok(()) => Exit::Ok,
            Err(e) => {
                tracing::error!("cannot write the manual page: {e}");
                Exit::Failed
            }
        },
        Command::Worker { .. } => unreachable!("handled above"),
    };
    ExitCode::from(exit as u8)
}

fn conclude(result: Result<RunEnd, RunError>) -> Exit {
    match result {
        Ok(RunEnd::Completed(counts)) if counts.failed == 0 => Exit::Ok,
        Ok(RunEnd::Completed(_)) => Exit::Failed,
        Ok(RunEnd::Interrupted(sig, _)) if sig == libc::SIGTERM => Exit::Terminated,
        Ok(RunEnd::Interrupted(..)) => Exit::Interrupted,
        Ok(RunEnd::GaveUp(why, _)) => {
            tracing::error!("{why}");
            Exit::Failed
        }
        Err(e) => {
            tracing::error!("{e}");
            match e {
                RunError::Usage(_) | RunError::Report(_) => Exit::Usage,
                RunError::Lock(LockError::Held { .. }) => Exit::Locked,
                RunError::Lock(_) | RunError::Fatal(_) => Exit::Failed,
            }
        }
    }
}

fn jobs(asked: Option<u16>) -> usize {
    asked
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool_config(jobs_asked: Option<u16>, worker_args: Vec<String>) -> ExecutorConfig {
    ExecutorConfig {
        workers: jobs(jobs_asked),
        retries: 1,
        timeout: None,
        worker_args,
    }
}

fn generate_options(
    out_dir: PathBuf,
    tone: &ToneArgs,
    seed: Option<u64>,
    progress: bool,
) -> GenerateOptions {
    let tones = tone.tone_spec();
    let seed = seed.unwrap_or_else(|| {
        let seed = rand::random();
        if !(tone.duration.is_single() && tone.frequency.is_single()) {
            tracing::info!("seed {seed} (pass --seed {seed} to make the same files again)");
        }
        seed
    });
    GenerateOptions {
        out_dir,
        count: tone.count,
        tones,
        seed,
        force: tone.force,
        progress,
    }
}

fn log_level(cli: &Cli) -> String {
    match (cli.verbose, cli.quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    }
    .to_string()
}

/// The flag that gives a worker the supervisor's level (`v`, `vv`, `q`, ...), empty for the default.
fn level_flag(cli: &Cli) -> String {
    "v".repeat(cli.verbose as usize) + &"q".repeat(cli.quiet as usize)
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colour only on a terminal that can show it (as for the progress bar: not TERM=dumb).
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_some_and(|t| !t.is_empty() && t != "dumb")
        && std::io::stderr().is_terminal();
    // A log line that cannot be written (stderr is a pipe whose reader left: `2>&1 | head`) is
    // dropped: by default tracing-subscriber would report it with `eprintln!`, which panics on
    // that same closed pipe, and the run would die half-way with its temporaries left behind.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .log_internal_errors(false)
        .with_writer(|| LogWriter);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        // Text shows the message alone: it already names the file; the fields are for JSON.
        LogFormat::Text => builder
            .without_time()
            .with_ansi(color)
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
                |w, field, value| {
                    if field.name() == "message" {
                        // One event, one line, whatever the names in it hold.
                        let text = format!("{value:?}");
                        write!(w, "{}", audio_etl::supervisor::report::escape_text(&text))
                    } else {
                        Ok(())
                    }
                },
            ))
            .try_init(),
    };
}
