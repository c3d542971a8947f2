//! Timed load: N workers run an operation in a loop; after a warm-up, several rounds
//! are measured and the medians reported.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// What a run measured: units per second per round, every operation's latency (ms)
/// during the measured rounds, and when each round ran (an operation started in one is
/// measured; what it caused elsewhere is judged by the same windows).
pub struct Measured {
    pub rates: Vec<f64>,
    pub latencies_ms: Vec<f64>,
    pub windows: Vec<(Instant, Instant)>,
}

impl Measured {
    /// Whether `at` falls in a measured round (not the warm-up, not a pause).
    pub fn measured_at(&self, at: Instant) -> bool {
        self.windows.iter().any(|(from, to)| (*from..*to).contains(&at))
    }

    pub fn median_rate(&self) -> f64 {
        median(&self.rates)
    }
}

pub async fn run(plan: Plan, workers: usize, operation: Operation) -> anyhow::Result<Measured> {
    let mut measured = run_alternating(plan, vec![(workers, operation)]).await?;
    Ok(measured.remove(0))
}

/// One case of [`run_alternating`]: its workers run only while it is active.
struct Case {
    active: tokio::sync::watch::Sender<bool>,
    measuring: AtomicBool,
    units: AtomicU64,
    in_flight: AtomicUsize,
    latencies: Mutex<Vec<f64>>,
}

impl Case {
    /// Stops handing out operations and waits for those under way to end, so the next
    /// case's round has the machine to itself.
    async fn pause(&self) {
        self.active.send_replace(false);
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Measures several cases in alternating rounds (a round of each in turn, after a
/// warm-up of each), so a stretch in which the machine runs slow weighs on every case
/// alike: on a shared VM, cases measured one after the other minutes apart differ by
/// more than the effects compared. Returns one [`Measured`] per case, in order.
pub async fn run_alternating(plan: Plan, cases: Vec<(usize, Operation)>) -> anyhow::Result<Vec<Measured>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let mut states = Vec::new();
    for (workers, operation) in cases {
        let case = Arc::new(Case {
            active: tokio::sync::watch::Sender::new(false),
            measuring: AtomicBool::new(false),
            units: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            latencies: Mutex::new(Vec::new()),
        });
        for worker in 0..workers {
            let (stop, case, operation) = (stop.clone(), case.clone(), operation.clone());
            let mut active = case.active.subscribe();
            tasks.spawn(async move {
                let mut mine = Vec::new();
                let mut iteration = 0u64;
                loop {
                    active.wait_for(|on| *on).await?;
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    // Counted before the flag is read again: `pause` sees every
                    // operation that could start in this case's time.
                    case.in_flight.fetch_add(1, Ordering::SeqCst);
                    if !*active.borrow() {
                        case.in_flight.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                    let started = Instant::now();
                    let done = operation(worker, iteration).await;
                    if case.measuring.load(Ordering::Relaxed) {
                        mine.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    case.in_flight.fetch_sub(1, Ordering::SeqCst);
                    case.units.fetch_add(done?, Ordering::Relaxed);
                    iteration += 1;
                }
                case.latencies.lock().expect("latency lock").extend(mine);
                anyhow::Ok(())
            });
        }
        states.push(case);
    }
    for case in &states {
        case.active.send_replace(true);
        tokio::time::sleep(plan.warm_up).await;
        case.pause().await;
    }
    let mut rates = vec![Vec::new(); states.len()];
    let mut windows = vec![Vec::new(); states.len()];
    for _ in 0..plan.rounds {
        for ((case, rates), windows) in states.iter().zip(&mut rates).zip(&mut windows) {
            case.measuring.store(true, Ordering::Relaxed);
            let before = case.units.load(Ordering::Relaxed);
            let started = Instant::now();
            case.active.send_replace(true);
            tokio::time::sleep(plan.round).await;
            let done = case.units.load(Ordering::Relaxed) - before;
            rates.push(done as f64 / started.elapsed().as_secs_f64());
            windows.push((started, Instant::now()));
            case.pause().await;
            case.measuring.store(false, Ordering::Relaxed);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for case in &states {
        case.active.send_replace(true);
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(states
        .iter()
        .zip(rates)
        .zip(windows)
        .map(|((case, rates), windows)| Measured {
            rates,
            latencies_ms: std::mem::take(&mut *case.latencies.lock().expect("latency lock")),
            windows,
        })
        .collect())
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
    status_mb(pid, "VmHWM:")
}

/// Resident set size (MiB) of a running process now.
pub fn rss_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmRSS:")
}

fn status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
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

    #[tokio::test]
    async fn alternating_cases_never_run_at_once_and_each_gets_every_round() {
        let running: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let overlapped = Arc::new(AtomicBool::new(false));
        let case = |me: usize| -> Operation {
            let (running, overlapped) = (running.clone(), overlapped.clone());
            Arc::new(move |_, _| {
                let (running, overlapped) = (running.clone(), overlapped.clone());
                Box::pin(async move {
                    running[me].fetch_add(1, Ordering::SeqCst);
                    if running[1 - me].load(Ordering::SeqCst) > 0 {
                        overlapped.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    running[me].fetch_sub(1, Ordering::SeqCst);
                    Ok(1)
                })
            })
        };
        let plan = Plan { warm_up: Duration::from_millis(20), rounds: 3, round: Duration::from_millis(30) };
        let measured = run_alternating(plan, vec![(4, case(0)), (4, case(1))]).await.unwrap();
        assert!(!overlapped.load(Ordering::SeqCst), "one case ran during the other's time");
        assert_eq!(measured.len(), 2);
        for case in &measured {
            assert_eq!(case.rates.len(), 3);
            assert!(case.rates.iter().all(|rate| *rate > 0.0), "every round did work: {:?}", case.rates);
            assert!(!case.latencies_ms.is_empty());
        }
    }
}
