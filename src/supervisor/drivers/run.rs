//! `etl run`: every input found under the PATHs, once.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use super::{end_word, run_end};
use crate::etl::output;
use crate::etl::transform::NoiseLevel;
use crate::supervisor::discover::{self, Discovery};
use crate::supervisor::engine::{Decision, Engine, EngineConfig};
use crate::supervisor::executor::Executor;
use crate::supervisor::report::Reporter;
use crate::supervisor::{RunEnd, RunError, RunOptions, dry_run, lock, sweep};

/// `etl run`: transform every input.
pub fn run(executor: &mut Executor, opts: &RunOptions) -> Result<RunEnd, RunError> {
    let start = Instant::now();
    let found: Discovery =
        discover::discover(&discover_options(opts)).map_err(|e| RunError::Usage(e.0))?;
    for w in &found.warnings {
        tracing::warn!("{w}");
    }
    if opts.dry_run {
        if let Some(report) = &opts.report {
            tracing::warn!(
                "--dry-run writes nothing: no report to {}",
                report.display()
            );
        }
        return Ok(dry_run(&found.inputs, opts.settle));
    }

    let _lock = lock::acquire(&found.output_roots, opts.shard)?;
    // The report is opened (and emptied) only by the lock's holder, and before any other work, so
    // that a bad report path stops the run before it has touched anything.
    let total_files = found.inputs.len() as u64;
    let total_bytes = found.inputs.iter().map(|i| i.size).sum();
    let reporter = Reporter::new(
        opts.report.as_deref(),
        opts.progress,
        total_files,
        total_bytes,
        false,
    )?;
    let tag = opts.shard.tag();
    let out_dirs = output_dirs(&found);
    let seed = opts.seed.unwrap_or_else(rand::random);
    if opts.seed.is_none() {
        tracing::info!("seed {seed} (pass --seed {seed} to reproduce this run)");
    }

    let mut engine = Engine::new(executor, engine_config(opts, seed), reporter);
    engine.total_files = total_files;
    // Files decided without a worker, then the work, largest parts first.
    let mut planned = Vec::new();
    for input in found.inputs {
        match engine.decide(input) {
            Decision::Planned(id) => planned.push(id),
            Decision::StillBeingWritten(input) => {
                engine.report_skip(&input, "still being written".into())
            }
            Decision::Reported => {}
        }
    }
    // Swept only now that the folders are checked: never through a link planted as one of them.
    let out_dirs: HashSet<PathBuf> = out_dirs
        .into_iter()
        .filter(|d| !engine.refused_dirs().contains(d))
        .collect();
    sweep(&out_dirs, &tag);
    engine.dispatch(&planned);
    engine.executor().close();
    let end = engine.run(|_| None);
    engine.abandon_unfinished();

    let mut summary = serde_json::json!({
        "ok": engine.reporter.counts.ok,
        "skipped": engine.reporter.counts.skipped,
        "failed": engine.reporter.counts.failed,
        "not_run": engine.reporter.counts.not_run,
        "seconds": start.elapsed().as_secs_f64(),
        "seed": seed,
        "jobs": opts.jobs,
        "shard": opts.shard.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "end": end_word(&end),
    });
    summary
        .as_object_mut()
        .unwrap()
        .extend(level_json(opts.level));
    engine
        .reporter
        .finish(start.elapsed().as_secs_f64(), summary, "etl");
    Ok(run_end(end, engine.reporter.counts.clone()))
}

pub(crate) fn discover_options(opts: &RunOptions) -> discover::Options<'_> {
    discover::Options {
        paths: &opts.paths,
        recursive: opts.recursive,
        out_dir: opts.out_dir.as_deref(),
        force: opts.force,
        shard: opts.shard,
        no_follow: opts.no_follow,
    }
}

pub(crate) fn engine_config(opts: &RunOptions, seed: u64) -> EngineConfig {
    EngineConfig {
        level: opts.level,
        seed,
        fsync: opts.fsync,
        out_dir: opts.out_dir.clone(),
        retries: opts.retries,
        jobs: opts.jobs,
        tag: opts.shard.tag(),
        settle: opts.settle,
        output_format: opts.output_format,
    }
}

/// The folders outputs go into, where temporaries of a killed run may lie.
pub(crate) fn output_dirs(found: &Discovery) -> HashSet<PathBuf> {
    found
        .inputs
        .iter()
        // A folder that could not be read has no output of its own.
        .filter(|i| i.output != i.path)
        .map(|i| output::folder(&i.output).to_path_buf())
        .chain(found.output_roots.iter().cloned())
        .collect()
}

/// The noise level, as the report's summary names it.
pub(crate) fn level_json(level: NoiseLevel) -> serde_json::Map<String, serde_json::Value> {
    let value = match level {
        NoiseLevel::Sigma(s) => serde_json::json!({ "sigma": s }),
        NoiseLevel::SnrDb(db) => serde_json::json!({ "snr_db": db }),
    };
    value.as_object().unwrap().clone()
}
