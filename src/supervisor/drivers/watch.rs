//! `etl watch`: a service over hot folders. It starts as `etl run` would (everything not yet
//! transformed), then takes inputs as they become complete: filesystem events (inotify, through
//! `notify`) name the files that changed, and a file is taken once it has not changed for the
//! settle time; a periodic rescan catches what events miss (a queue overflow, a network
//! filesystem). Workers stay up between files. It runs under systemd as `Type=notify` (readiness,
//! status, watchdog), appends to its report (SIGHUP reopens it, for logrotate), can serve metrics,
//! and stops cleanly on SIGTERM or SIGINT, in-flight work abandoned and cleaned as `run` does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use sd_notify::NotifyState;

use super::run::{discover_options, engine_config, summary};
use super::{Feed, run_end};
use crate::supervisor::discover::{self, Found, Input, Plan};
use crate::supervisor::engine::{Decision, Engine, EngineConfig};
use crate::supervisor::executor::Executor;
use crate::supervisor::metrics::{Metrics, Snapshot};
use crate::supervisor::report::Reporter;
use crate::supervisor::{RunEnd, RunError, RunOptions, lock};

/// How often the status line, the metrics and the watchdog are brought up to date.
const STATUS_EVERY: Duration = Duration::from_secs(1);

pub struct WatchOptions {
    /// What a run over the same PATHs would take (`force`, `dry_run` and `progress` unused).
    pub run: RunOptions,
    /// How often the PATHs are walked again whatever the events said.
    pub rescan: Duration,
    /// Where to serve metrics for Prometheus.
    pub metrics: Option<SocketAddr>,
}

/// `etl watch`: transform what is there, then what comes, until a signal.
pub fn watch(executor: &mut Executor, opts: &WatchOptions) -> Result<RunEnd, RunError> {
    let start = Instant::now();
    let run = &opts.run;
    // Watching starts before the PATHs are walked for the catch-up, so that nothing falls
    // between the two (a file seen both ways is taken once).
    let (events_tx, events) = mpsc::channel();
    let engine_waker = executor.waker();
    let waker = engine_waker.clone();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = events_tx.send(event);
        waker.wake();
    })
    .map_err(|e| RunError::Fatal(format!("cannot watch for new files: {e}")))?;
    for root in &run.paths {
        let (target, mode) = if root.is_dir() {
            let mode = if run.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            (root.as_path(), mode)
        } else {
            let parent = root.parent().filter(|p| !p.as_os_str().is_empty());
            (
                parent.unwrap_or(Path::new(".")),
                RecursiveMode::NonRecursive,
            )
        };
        if let Err(e) = watcher.watch(target, mode)
            && target.exists()
        {
            tracing::warn!(
                "{}: cannot watch for changes ({e}); only the rescans will see its files",
                target.display()
            );
        }
    }

    let found = discover::discover(&discover_options(run)).map_err(|e| RunError::Usage(e.0))?;
    for w in &found.warnings {
        tracing::warn!("{w}");
    }
    let _lock = lock::acquire(&found.output_roots, run.shard)?;
    let reporter = Reporter::appending(run.report.as_deref())?;
    let metrics = opts
        .metrics
        .map(Metrics::serve)
        .transpose()
        .map_err(RunError::Usage)?;
    let seed = run.seed.unwrap_or_else(rand::random);
    if run.seed.is_none() {
        tracing::info!("seed {seed} (pass --seed {seed} to reproduce these outputs)");
    }
    // SIGHUP asks for the report to be reopened at once: the flag says so, the wake makes it now.
    let reopen = Arc::new(AtomicBool::new(false));
    match signal_hook::iterator::Signals::new([libc::SIGHUP]) {
        Ok(mut signals) => {
            let (reopen, waker) = (Arc::clone(&reopen), engine_waker.clone());
            std::thread::spawn(move || {
                for _ in signals.forever() {
                    reopen.store(true, Ordering::SeqCst);
                    waker.wake();
                }
            });
        }
        Err(e) => tracing::warn!("cannot watch for SIGHUP: {e}"),
    }

    let config = EngineConfig {
        service: true,
        ..engine_config(run, seed)
    };
    let mut engine = Engine::new(executor, config, reporter);
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut service = Service {
        opts,
        roots: run.paths.iter().map(|p| (cwd.join(p), p.clone())).collect(),
        events,
        candidates: HashMap::new(),
        next_due: None,
        rescan_at: Instant::now() + opts.rescan,
        reopen,
        metrics,
        watchdog: sd_notify::watchdog_enabled().map(|d| d / 2),
        status_at: Instant::now(),
        last_status: String::new(),
        catch_up: None,
    };

    // The catch-up: what `etl run` would do, handed to the engine a window at a time (a
    // service started over a million files holds the same memory as one over a thousand).
    let feed = Feed::start(found, &mut engine, &run.shard.tag());
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    tracing::info!(
        "watching {} for new files ({} to catch up on)",
        names(&run.paths),
        feed.len()
    );
    service.catch_up = Some(feed);

    let end = engine.run(|engine| service.turn(engine));
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    drop(watcher);
    engine.abandon_unfinished();
    if let Some(feed) = &service.catch_up {
        engine.reporter.counts.not_run += feed.remaining() as u64;
    }
    service.status(&mut engine, true);

    let summary = summary(&engine, run, start, seed, &end);
    engine
        .reporter
        .finish(start.elapsed().as_secs_f64(), summary, "etl watch");
    Ok(run_end(end, engine.reporter.counts.clone()))
}

fn names(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// The watcher's state between turns of the engine's loop.
struct Service<'o> {
    opts: &'o WatchOptions,
    /// Each PATH as events name it (absolute), and as given.
    roots: Vec<(PathBuf, PathBuf)>,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
    /// Paths seen to change, and when to look at them again (once they have settled).
    candidates: HashMap<PathBuf, Instant>,
    /// The earliest of `candidates`, or before it.
    next_due: Option<Instant>,
    rescan_at: Instant,
    /// SIGHUP came: reopen the report.
    reopen: Arc<AtomicBool>,
    metrics: Option<Metrics>,
    /// How often to tell systemd's watchdog that we are alive.
    watchdog: Option<Duration>,
    status_at: Instant,
    last_status: String,
    /// What was there at the start, not all handed to the engine yet. Until it is, changed
    /// paths wait (a file seen both ways is taken once) and there is no rescan.
    catch_up: Option<Feed>,
}

impl Service<'_> {
    fn settle(&self) -> Duration {
        self.opts.run.settle
    }

    /// An event's path named as under the PATH it is in, as a run names it.
    fn as_given(&self, path: &Path) -> Option<PathBuf> {
        self.roots.iter().find_map(|(absolute, given)| {
            let rest = path.strip_prefix(absolute).ok()?;
            Some(if rest.as_os_str().is_empty() {
                given.clone()
            } else {
                given.join(rest)
            })
        })
    }

    /// Whether a changed path may be an input (or a folder of them): our own unnamed outputs,
    /// temporaries and outputs are not, and are not kept (a catch-up over a million files would
    /// otherwise hold three million paths until its end). A PATH itself always is.
    fn may_matter(&self, path: &Path) -> bool {
        self.roots.iter().any(|(_, given)| given == path)
            || discover::may_be_input(path, self.opts.run.recursive)
    }

    /// Looks at `path` at `due` (later, if it changes again before).
    fn arm(&mut self, path: PathBuf, due: Instant) {
        self.candidates.insert(path, due);
        self.next_due = Some(self.next_due.map_or(due, |d| d.min(due)));
    }

    /// Between two events of the engine: new events, settled files, rescans, status.
    fn turn(&mut self, engine: &mut Engine) -> Option<Instant> {
        let now = Instant::now();
        while let Ok(event) = self.events.try_recv() {
            match event {
                Ok(event) => {
                    if event.need_rescan() {
                        self.rescan_at = now;
                    }
                    if is_change(&event.kind) {
                        for path in event.paths {
                            if let Some(path) = self.as_given(&path)
                                && self.may_matter(&path)
                            {
                                self.arm(path, now + self.settle());
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("watching for changes: {e}; looking at every file again");
                    self.rescan_at = now;
                }
            }
        }
        if self.reopen.swap(false, Ordering::SeqCst) {
            engine.reporter.reopen();
        }
        for input in engine.take_unsettled() {
            self.arm(input.path, now + self.settle());
        }
        if let Some(feed) = &mut self.catch_up {
            let mut still = Vec::new();
            if feed.top_up(engine, |_, input: Input| still.push(input.path)) {
                self.catch_up = None;
                self.rescan_at = now + self.opts.rescan;
            }
            for path in still {
                self.arm(path, now + self.settle());
            }
            self.status(engine, false);
            // Called again as each file ends; the changed paths wait for the catch-up's end.
            return Some(self.status_at);
        }
        let mut planned = Vec::new();
        if now >= self.rescan_at {
            self.rescan(engine, &mut planned);
            self.rescan_at = Instant::now() + self.opts.rescan;
        }
        if self.next_due.is_some_and(|d| now >= d) {
            self.take_due(engine, now, &mut planned);
        }
        engine.dispatch(&planned);
        self.status(engine, false);
        [self.next_due, Some(self.rescan_at), Some(self.status_at)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Candidates whose settle time has passed: those complete go to the engine.
    fn take_due(&mut self, engine: &mut Engine, now: Instant, planned: &mut Vec<u64>) {
        let due: Vec<PathBuf> = self
            .candidates
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(path, _)| path.clone())
            .collect();
        let discover_opts = discover_options(&self.opts.run);
        for path in due {
            self.candidates.remove(&path);
            if engine.is_active(&path) {
                // Being worked on: the engine sees a change itself; look again once it is done.
                self.candidates.insert(path, now + self.settle());
                continue;
            }
            match discover::input_at(&discover_opts, &path) {
                Found::Input(input) => self.offer(engine, input, now, planned),
                Found::Folder(_) => self.rescan_at = now,
                Found::Nothing => {}
            }
        }
        self.next_due = self.candidates.values().min().copied();
    }

    /// Walks the PATHs again, for what events missed.
    fn rescan(&mut self, engine: &mut Engine, planned: &mut Vec<u64>) {
        let found = match discover::discover(&discover_options(&self.opts.run)) {
            Ok(found) => found,
            Err(e) => return tracing::warn!("rescan: {}", e.0),
        };
        let now = Instant::now();
        for input in found.inputs.iter() {
            if !engine.is_active(&input.path) && !self.candidates.contains_key(&input.path) {
                self.offer(engine, input, now, planned);
            }
        }
    }

    /// An input seen complete: to the engine, unless a run would skip it (its output is newer,
    /// as after our own commit) or it failed as it is.
    fn offer(&mut self, engine: &mut Engine, input: Input, now: Instant, planned: &mut Vec<u64>) {
        if matches!(input.status, Plan::Skip(_)) || engine.failed_unchanged(&input.path) {
            return;
        }
        match engine.decide(input) {
            Decision::Planned(id) => planned.push(id),
            Decision::StillBeingWritten(input) => self.arm(input.path, now + self.settle()),
            Decision::Reported => {}
        }
    }

    /// The status line for systemd, the metrics, and the watchdog's ping, once a
    /// [`STATUS_EVERY`] (or now, with `force`).
    fn status(&mut self, engine: &mut Engine, force: bool) {
        let now = Instant::now();
        if !force && now < self.status_at {
            return;
        }
        self.status_at = now + self.watchdog.unwrap_or(STATUS_EVERY).min(STATUS_EVERY);
        let snapshot = Snapshot {
            counts: engine.reporter.counts.clone(),
            bytes: engine.totals.bytes,
            seconds: engine.totals.seconds,
            queued: engine.executor().queued(),
            in_progress: engine.in_progress(),
            restarts: engine.executor().deaths(),
        };
        let status = format!(
            "{}; {} in progress, {} waiting to settle, {} worker restarts",
            snapshot.counts,
            snapshot.in_progress,
            self.candidates.len(),
            snapshot.restarts
        );
        if status != self.last_status {
            let _ = sd_notify::notify(&[NotifyState::Status(&status)]);
            self.last_status = status;
        }
        if self.watchdog.is_some() {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.update(&snapshot);
        }
    }
}

/// Events that may mean a file is new or complete: created, written, closed after writing,
/// moved in. Reads, and names moved away, are not.
fn is_change(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    match kind {
        EventKind::Create(_) => true,
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}
