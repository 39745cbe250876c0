//! Metrics for Prometheus (`etl watch --metrics ADDR`): the service's counts in the OpenMetrics
//! text format, encoded by `prometheus-client` and served by `tiny_http` on a thread of its own,
//! so that a scrape never waits on the engine and the engine never waits on a scrape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::report::Counts;

/// The figures the engine keeps, as last exported: counters only ever go up by the difference.
#[derive(Default, Clone)]
pub struct Snapshot {
    pub counts: Counts,
    pub bytes: u64,
    pub seconds: f64,
    pub queued: usize,
    pub in_progress: usize,
    pub restarts: u64,
}

pub struct Metrics {
    files: Family<Vec<(String, String)>, Counter>,
    bytes: Counter,
    seconds: Counter<f64, AtomicU64>,
    queued: Gauge<i64, AtomicI64>,
    in_progress: Gauge<i64, AtomicI64>,
    restarts: Counter,
    last: Snapshot,
}

impl Metrics {
    /// Starts serving `/metrics` on `addr`.
    pub fn serve(addr: SocketAddr) -> Result<Metrics, String> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?;
        let metrics = Metrics {
            files: Family::default(),
            bytes: Counter::default(),
            seconds: Counter::default(),
            queued: Gauge::default(),
            in_progress: Gauge::default(),
            restarts: Counter::default(),
            last: Snapshot::default(),
        };
        let mut registry = Registry::with_prefix("etl");
        registry.register(
            "files",
            "Files handled, by status (ok, skipped, failed, not_run)",
            metrics.files.clone(),
        );
        registry.register(
            "input_bytes",
            "Bytes of the inputs transformed",
            metrics.bytes.clone(),
        );
        registry.register(
            "worker_seconds",
            "Worker time spent on the files transformed",
            metrics.seconds.clone(),
        );
        registry.register(
            "queue_length",
            "Jobs waiting for a worker",
            metrics.queued.clone(),
        );
        registry.register(
            "files_in_progress",
            "Files planned or being transformed",
            metrics.in_progress.clone(),
        );
        registry.register(
            "worker_restarts",
            "Workers that died without being asked to, and were replaced",
            metrics.restarts.clone(),
        );
        let registry = Arc::new(registry);
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let mut body = String::new();
                let response = if request.url() != "/metrics" {
                    tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                } else if encode(&mut body, &registry).is_ok() {
                    let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                    let header = tiny_http::Header::from_bytes("Content-Type", kind)
                        .expect("a valid header");
                    tiny_http::Response::from_string(body).with_header(header)
                } else {
                    tiny_http::Response::from_string("cannot encode\n").with_status_code(500)
                };
                let _ = request.respond(response);
            }
        });
        tracing::info!("metrics on http://{addr}/metrics");
        Ok(metrics)
    }

    /// Brings the metrics up to `now`.
    pub fn update(&mut self, now: &Snapshot) {
        let last = &self.last;
        for (status, new, old) in [
            ("ok", now.counts.ok, last.counts.ok),
            ("skipped", now.counts.skipped, last.counts.skipped),
            ("failed", now.counts.failed, last.counts.failed),
            ("not_run", now.counts.not_run, last.counts.not_run),
        ] {
            let counter = self
                .files
                .get_or_create(&vec![("status".to_string(), status.to_string())]);
            counter.inc_by(new.saturating_sub(old));
        }
        self.bytes.inc_by(now.bytes.saturating_sub(last.bytes));
        self.seconds.inc_by((now.seconds - last.seconds).max(0.0));
        self.restarts
            .inc_by(now.restarts.saturating_sub(last.restarts));
        self.queued.set(now.queued as i64);
        self.in_progress.set(now.in_progress as i64);
        self.last = now.clone();
    }
}
