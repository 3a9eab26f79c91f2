//! Counters for `GET /metrics`, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::generate::GenerationStats;

#[derive(Default)]
pub(crate) struct Metrics {
    by_status: Mutex<BTreeMap<u16, u64>>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    /// Generation time in microseconds, summed.
    generation_micros: AtomicU64,
    /// Bytes of key/value cache allocated now.
    pub kv_bytes: AtomicU64,
}

/// What is going on now, read when the metrics are written.
pub(crate) struct Gauges {
    pub running: usize,
    pub queued: usize,
    pub loaded_models: usize,
}

impl Metrics {
    pub fn record_status(&self, status: u16) {
        *self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status)
            .or_default() += 1;
    }

    pub fn record_generation(&self, stats: &GenerationStats) {
        self.prompt_tokens
            .fetch_add(stats.prompt_tokens as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(stats.generated_tokens as u64, Ordering::Relaxed);
        self.generation_micros
            .fetch_add(stats.generation_time.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let statuses: Vec<(String, String)> = self
            .by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(s, n)| (format!("{{status=\"{s}\"}}"), n.to_string()))
            .collect();
        metric(
            "abridge_requests_total",
            "counter",
            "Requests answered, by HTTP status.",
            statuses,
        );
        let plain = |v: String| vec![(String::new(), v)];
        let generated = self.generated_tokens.load(Ordering::Relaxed);
        let seconds = self.generation_micros.load(Ordering::Relaxed) as f64 / 1e6;
        metric(
            "abridge_prompt_tokens_total",
            "counter",
            "Prompt tokens of finished generations.",
            plain(self.prompt_tokens.load(Ordering::Relaxed).to_string()),
        );
        metric(
            "abridge_generated_tokens_total",
            "counter",
            "Tokens generated.",
            plain(generated.to_string()),
        );
        metric(
            "abridge_generation_seconds_total",
            "counter",
            "Time spent generating tokens (after the prompt).",
            plain(format!("{seconds:.6}")),
        );
        let rate = if seconds > 0.0 {
            generated as f64 / seconds
        } else {
            0.0
        };
        metric(
            "abridge_generation_tokens_per_second",
            "gauge",
            "Tokens generated per second of generation time, over all requests.",
            plain(format!("{rate:.3}")),
        );
        metric(
            "abridge_requests_running",
            "gauge",
            "Generations running now.",
            plain(gauges.running.to_string()),
        );
        metric(
            "abridge_queue_depth",
            "gauge",
            "Requests waiting for a slot.",
            plain(gauges.queued.to_string()),
        );
        metric(
            "abridge_models_loaded",
            "gauge",
            "Models in memory.",
            plain(gauges.loaded_models.to_string()),
        );
        metric(
            "abridge_kv_cache_bytes",
            "gauge",
            "Bytes of key/value cache allocated by running generations.",
            plain(self.kv_bytes.load(Ordering::Relaxed).to_string()),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.record_status(200);
        m.record_status(200);
        m.record_status(503);
        m.record_generation(&GenerationStats {
            prompt_tokens: 10,
            generated_tokens: 4,
            generation_time: std::time::Duration::from_secs(2),
            ..Default::default()
        });
        let text = m.render(&Gauges {
            running: 1,
            queued: 3,
            loaded_models: 1,
        });
        assert!(text.contains("abridge_requests_total{status=\"200\"} 2\n"));
        assert!(text.contains("abridge_requests_total{status=\"503\"} 1\n"));
        assert!(text.contains("abridge_generation_tokens_per_second 2.000\n"));
        assert!(text.contains("abridge_queue_depth 3\n"));
        assert!(text.contains("# TYPE abridge_kv_cache_bytes gauge\n"));
    }
}
