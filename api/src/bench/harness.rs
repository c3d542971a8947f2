//! Timed load: N workers run an operation in a loop; after a warm-up, several rounds
//! are measured and the medians reported.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Warm-up, rounds and round length of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub warm_up: Duration,
    pub rounds: usize,
    pub round: Duration,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self { warm_up: Duration::from_secs(1), rounds: 3, round: Duration::from_secs(2) }
        } else {
            Self { warm_up: Duration::from_secs(3), rounds: 5, round: Duration::from_secs(5) }
        }
    }
}

/// One operation of a worker: `(worker, iteration)`; returns how many units (events,
/// commands, messages) it completed.
pub type Operation = Arc<dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = anyhow::Result<u64>> + Send>> + Send + Sync>;

/// What a run measured: units per second per round, and every operation's latency
/// (ms) during the measured rounds.
pub struct Measured {
    pub rates: Vec<f64>,
    pub latencies_ms: Vec<f64>,
}

impl Measured {
    pub fn median_rate(&self) -> f64 {
        median(&self.rates)
    }
}

pub async fn run(plan: Plan, workers: usize, operation: Operation) -> anyhow::Result<Measured> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let units = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (stop, measuring, units, latencies, operation) =
            (stop.clone(), measuring.clone(), units.clone(), latencies.clone(), operation.clone());
        tasks.spawn(async move {
            let mut mine = Vec::new();
            let mut iteration = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let done = operation(worker, iteration).await?;
                if measuring.load(Ordering::Relaxed) {
                    mine.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                units.fetch_add(done, Ordering::Relaxed);
                iteration += 1;
            }
            latencies.lock().expect("latency lock").extend(mine);
            anyhow::Ok(())
        });
    }
    tokio::time::sleep(plan.warm_up).await;
    measuring.store(true, Ordering::Relaxed);
    let mut rates = Vec::new();
    for _ in 0..plan.rounds {
        let before = units.load(Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(plan.round).await;
        let done = units.load(Ordering::Relaxed) - before;
        rates.push(done as f64 / started.elapsed().as_secs_f64());
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let latencies_ms = std::mem::take(&mut *latencies.lock().expect("latency lock"));
    Ok(Measured { rates, latencies_ms })
}

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// The `p`th percentile (nearest rank) of `values`; 0 when there are none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Peak resident set size (MiB) of a running process, from /proc (Linux).
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }
}
