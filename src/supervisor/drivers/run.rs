//! `etl run`: every input found under the PATHs, once.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use super::{Feed, end_word, run_end};
use crate::etl::levels::LevelSpec;
use crate::etl::manifest::{self, Row};
use crate::etl::{describe_io, noise};
use crate::supervisor::discover::{self, Discovery};
use crate::supervisor::engine::{Engine, EngineConfig};
use crate::supervisor::executor::{Executor, PoolEnd};
use crate::supervisor::report::Reporter;
use crate::supervisor::{RunEnd, RunError, RunOptions, dry_run, lock};

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
        if let Some(manifest) = &opts.manifest {
            tracing::warn!(
                "--dry-run writes nothing: no manifest to {}",
                manifest.display()
            );
        }
        return Ok(dry_run(&found.inputs, opts.settle));
    }

    let _lock = lock::acquire(&found.output_roots, opts.shard)?;
    // The report is opened (and emptied) only by the lock's holder, and before any other work, so
    // that a bad report path stops the run before it has touched anything.
    let total_files = found.inputs.len() as u64;
    let total_bytes = found.inputs.total_bytes();
    let reporter = Reporter::new(
        opts.report.as_deref(),
        opts.progress,
        total_files,
        total_bytes,
        false,
    )?;
    let tag = opts.shard.tag();
    let seed = opts.seed.unwrap_or_else(rand::random);
    if opts.seed.is_none() {
        tracing::info!("seed {seed} (pass --seed {seed} to reproduce this run)");
    }

    let mut engine = Engine::new(executor, engine_config(opts, seed), reporter);
    engine.total_files = total_files;
    let mut feed = Feed::start(found, &mut engine, &tag);
    let end = engine.run(|engine| {
        let still =
            |engine: &mut Engine, input| engine.report_skip(&input, "still being written".into());
        if feed.top_up(engine, still) {
            engine.executor().close();
        }
        None
    });
    // Found still being written by the workers of the last files.
    for input in engine.take_unsettled() {
        engine.report_skip(&input, "still being written".into());
    }
    engine.abandon_unfinished();
    engine.reporter.counts.not_run += feed.remaining() as u64;
    // Written whatever the end: a failed or stopped run lists what is on disk, finished.
    let manifest_failed = opts
        .manifest
        .as_deref()
        .is_some_and(|path| !write_manifest(path, &engine, opts, seed));

    let summary = summary(&engine, opts, start, seed, &end);
    engine
        .reporter
        .finish(start.elapsed().as_secs_f64(), summary, "etl");
    let mut counts = engine.reporter.counts.clone();
    if manifest_failed {
        counts.failed += 1;
    }
    Ok(run_end(end, counts))
}

/// Writes the manifest: a row for every output made by this run, and for every output skipped
/// as up to date (read back from disk). Returns false, having said why, when it cannot.
fn write_manifest(path: &std::path::Path, engine: &Engine, opts: &RunOptions, seed: u64) -> bool {
    if opts.seed.is_none() && !engine.up_to_date.is_empty() && !opts.levels.is_single() {
        tracing::warn!(
            "{}: the levels of outputs skipped as up to date are told from this run's drawn seed; \
             pass the --seed they were made with",
            path.display()
        );
    }
    let mut rows = engine.made.clone();
    for input in &engine.up_to_date {
        let file_seed = noise::file_seed(seed, input.relative.as_os_str().as_encoded_bytes());
        match Row::for_existing(
            &input.output,
            &input.path,
            input.variant,
            seed,
            file_seed,
            &opts.levels,
        ) {
            Ok(row) => rows.push(row),
            Err(e) => tracing::warn!("{e}: left out of the manifest"),
        }
    }
    match manifest::write(path, &rows) {
        Ok(()) => {
            tracing::info!(
                "wrote the manifest {} ({} rows)",
                path.display(),
                rows.len()
            );
            true
        }
        Err(e) => {
            tracing::error!(
                "{}: cannot write the manifest: {}",
                path.display(),
                describe_io(&e)
            );
            false
        }
    }
}

pub(crate) fn discover_options(opts: &RunOptions) -> discover::Options<'_> {
    discover::Options {
        paths: &opts.paths,
        recursive: opts.recursive,
        out_dir: opts.out_dir.as_deref(),
        force: opts.force,
        shard: opts.shard,
        no_follow: opts.no_follow,
        variants: opts.variants,
    }
}

pub(crate) fn engine_config(opts: &RunOptions, seed: u64) -> EngineConfig {
    EngineConfig {
        levels: opts.levels,
        per_output_levels: opts.variants > 1 || !opts.levels.is_single(),
        manifest_rows: opts.manifest.is_some(),
        service: false,
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
    let mut dirs = found.inputs.output_folders(false);
    dirs.extend(found.output_roots.iter().cloned());
    dirs
}

/// The report's last line: counts, time, and what reproduces the run.
pub(crate) fn summary(
    engine: &Engine,
    opts: &RunOptions,
    start: Instant,
    seed: u64,
    end: &PoolEnd,
) -> serde_json::Value {
    let counts = &engine.reporter.counts;
    let mut summary = serde_json::json!({
        "ok": counts.ok,
        "skipped": counts.skipped,
        "failed": counts.failed,
        "not_run": counts.not_run,
        "seconds": start.elapsed().as_secs_f64(),
        "seed": seed,
        "jobs": opts.jobs,
        "shard": opts.shard.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "end": end_word(end),
    });
    summary
        .as_object_mut()
        .unwrap()
        .extend(level_json(opts.levels));
    summary
}

/// The noise level, as the report's summary names it.
pub(crate) fn level_json(levels: LevelSpec) -> serde_json::Map<String, serde_json::Value> {
    let value = match levels {
        LevelSpec::Sigma(s) if s.is_single() => serde_json::json!({ "sigma": s.low }),
        LevelSpec::SnrDb(s) if s.is_single() => serde_json::json!({ "snr_db": s.low }),
        // A range: each output's own level is on its line.
        LevelSpec::Sigma(s) => serde_json::json!({ "sigma_range": [s.low, s.high] }),
        LevelSpec::SnrDb(s) => serde_json::json!({ "snr_db_range": [s.low, s.high] }),
    };
    value.as_object().unwrap().clone()
}
