//! `etl gen-fake-data`: test tones `example0.wav` .. written on the workers, keeping what exists.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{WINDOW, run_end};
use crate::etl::levels::{LevelSpec, Span};
use crate::etl::tone;
use crate::supervisor::discover::{Input, Plan, Shard};
use crate::supervisor::engine::{Engine, EngineConfig};
use crate::supervisor::executor::Executor;
use crate::supervisor::report::Reporter;
use crate::supervisor::{GenerateOptions, RunEnd, RunError, lock, sweep};

const TAG: &str = "gen";

/// `etl gen-fake-data`: write `example0.wav` .. in `out_dir` on the worker pool.
pub fn generate(executor: &mut Executor, opts: &GenerateOptions) -> Result<RunEnd, RunError> {
    let start = Instant::now();
    let dir = &opts.out_dir;
    let _lock = lock::acquire(std::slice::from_ref(dir), Shard::WHOLE)?;
    sweep(&HashSet::from([dir.clone()]), TAG, &Default::default());
    let reporter = Reporter::new(None, opts.progress, opts.count as u64, 0, true)?;
    let config = EngineConfig {
        service: false,
        levels: LevelSpec::Sigma(Span::single(0.0)),
        per_output_levels: false,
        manifest_rows: false,
        seed: 0,
        fsync: true,
        out_dir: None,
        retries: 1,
        jobs: 1,
        tag: TAG.into(),
        settle: Duration::ZERO,
        output_format: None,
    };
    let mut engine = Engine::new(executor, config, reporter);
    engine.total_files = opts.count as u64;
    if opts.count > 0 {
        tracing::info!(
            "writing example0.wav .. example{}.wav in {}{}",
            opts.count - 1,
            dir.display(),
            if opts.force {
                ""
            } else {
                " (keeping those there)"
            }
        );
    }
    // Planned a window at a time, as a run hands over its inputs: a million tones take the
    // memory of a thousand.
    let mut next = 0;
    let end = engine.run(|engine| {
        if engine.executor().stopping() {
            return None;
        }
        let mut todo = Vec::new();
        while next < opts.count && engine.in_progress() < WINDOW {
            let n = next;
            next += 1;
            let path: PathBuf = dir.join(format!("example{n}.wav"));
            if !opts.force && path.exists() {
                let input = Input {
                    relative: path.clone(),
                    output: path.clone(),
                    path,
                    size: 0,
                    status: Plan::Skip(String::new()),
                    variant: 0,
                };
                engine.report_skip(&input, "exists (use --force to replace it)".into());
            } else {
                todo.push(engine.plan_tone(&path, tone::tone_for(n, opts.seed, &opts.tones)));
            }
        }
        engine.dispatch(&todo);
        if next == opts.count {
            engine.executor().close();
        }
        None
    });
    engine.reporter.counts.not_run += u64::from(opts.count - next);
    engine.abandon_unfinished();
    engine.reporter.finish(
        start.elapsed().as_secs_f64(),
        serde_json::json!({}),
        "gen-fake-data",
    );
    Ok(run_end(end, engine.reporter.counts.clone()))
}
