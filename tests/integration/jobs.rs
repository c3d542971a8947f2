//! The runtime for side effects: durable jobs (enqueued once, run at their time,
//! retried on the schedule, dead after it, taken over after a lease, each run once
//! across workers) and policies (an effect keyed by its event happens once, even when
//! the policy fails between its effect and its checkpoint).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use commands::jobs::{enqueue, Clock, Job, JobHandler, Jobs, NewJob, Outcome};
use projections::feed::FeedEvent;
use projections::policy::{Policies, Policy, PolicyState};
use serde_json::{json, Value};
use sqlx::PgPool;
use tests::{ManualClock, TestApp};

/// Fails its first `failures` attempts of every job, then succeeds; counts runs by key.
struct Flaky {
    failures: i32,
    runs: Mutex<HashMap<String, u32>>,
}

#[async_trait]
impl JobHandler for Flaky {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn run(&self, job: &Job) -> Outcome {
        *self.runs.lock().unwrap().entry(job.job_key.clone()).or_default() += 1;
        if job.attempts <= self.failures {
            Outcome::Retry { error: format!("attempt {} failed", job.attempts), after: None }
        } else {
            Outcome::Done
        }
    }
}

fn job(key: &str, run_at: DateTime<Utc>, max_attempts: i32) -> NewJob {
    NewJob { kind: "flaky", account: None, key: key.into(), payload: json!({}), run_at, max_attempts }
}

async fn state_of(pool: &PgPool, key: &str) -> (String, i32, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    sqlx::query_as("SELECT state, attempts, run_at, finished_at FROM jobs WHERE job_key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_job_runs_at_its_time_is_retried_on_the_schedule_and_is_dead_after_its_last_attempt() {
    let app = TestApp::spawn().await;
    let clock = ManualClock::new();
    let handler = Arc::new(Flaky { failures: 10, runs: Mutex::default() });
    let jobs =
        Jobs::new(app.pool.clone(), clock.clone(), vec![handler.clone()], Duration::from_secs(60), Duration::ZERO);
    let start = clock.now();
    assert!(enqueue(&app.pool, &job("k", start + chrono::Duration::seconds(10), 3)).await.unwrap());
    assert!(!enqueue(&app.pool, &job("k", start, 3)).await.unwrap(), "the same key is enqueued once");

    assert_eq!(jobs.run_due().await.unwrap(), 0, "not due yet");
    clock.advance(Duration::from_secs(10));
    assert_eq!(jobs.run_due().await.unwrap(), 1);
    let (state, attempts, run_at, _) = state_of(&app.pool, "k").await;
    assert_eq!((state.as_str(), attempts), ("pending", 1));
    let wait = run_at.unwrap() - clock.now();
    assert!(wait <= chrono::Duration::seconds(1), "the first retry comes within a second: {wait}");

    clock.advance(Duration::from_secs(1));
    assert_eq!(jobs.run_due().await.unwrap(), 1);
    let (_, attempts, run_at, _) = state_of(&app.pool, "k").await;
    assert_eq!(attempts, 2);
    assert!(run_at.unwrap() - clock.now() <= chrono::Duration::seconds(3), "the second within three");

    clock.advance(Duration::from_secs(3));
    assert_eq!(jobs.run_due().await.unwrap(), 1);
    let (state, attempts, _, finished) = state_of(&app.pool, "k").await;
    assert_eq!((state.as_str(), attempts), ("dead", 3), "dead after its last attempt");
    let finished_ago = (clock.now() - finished.unwrap()).num_milliseconds();
    assert_eq!(finished_ago, 0, "finished at the clock's time");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(jobs.run_due().await.unwrap(), 0, "a dead job runs no more");
    assert_eq!(handler.runs.lock().unwrap()["k"], 3);

    // Kept for the retention, then pruned.
    assert_eq!(jobs.prune(Duration::from_secs(2 * 3600)).await.unwrap(), 0);
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(jobs.prune(Duration::from_secs(2 * 3600)).await.unwrap(), 1);
}

/// Never returns: a worker that hangs, or dies, mid-attempt.
struct Hangs;

#[async_trait]
impl JobHandler for Hangs {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn run(&self, _: &Job) -> Outcome {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_job_whose_worker_died_runs_again_once_its_lease_has_passed() {
    let app = TestApp::spawn().await;
    let clock = ManualClock::new();
    let lease = Duration::from_secs(30);
    let dying = Jobs::new(app.pool.clone(), clock.clone(), vec![Arc::new(Hangs)], lease, Duration::ZERO);
    enqueue(&app.pool, &job("k", clock.now(), 5)).await.unwrap();
    let worker = tokio::spawn(async move { dying.run_due().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.abort();
    assert_eq!(state_of(&app.pool, "k").await.0, "running");

    let handler = Arc::new(Flaky { failures: 0, runs: Mutex::default() });
    let survivor = Jobs::new(app.pool.clone(), clock.clone(), vec![handler.clone()], lease, Duration::ZERO);
    assert_eq!(survivor.run_due().await.unwrap(), 0, "leased to the other worker");
    clock.advance(lease);
    assert_eq!(survivor.run_due().await.unwrap(), 1, "taken over after the lease");
    let (state, attempts, _, _) = state_of(&app.pool, "k").await;
    assert_eq!((state.as_str(), attempts), ("done", 2));
}

#[tokio::test]
async fn two_workers_with_their_own_connections_run_each_job_once() {
    let app = TestApp::spawn().await;
    let clock = ManualClock::new();
    for n in 0..60 {
        enqueue(&app.pool, &job(&format!("k{n}"), clock.now(), 3)).await.unwrap();
    }
    let handler = Arc::new(Flaky { failures: 0, runs: Mutex::default() });
    let mut workers = Vec::new();
    for _ in 0..2 {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&app.database_url).await.unwrap();
        let jobs = Jobs::new(pool, clock.clone(), vec![handler.clone()], Duration::from_secs(60), Duration::ZERO);
        workers.push(tokio::spawn(async move { while jobs.run_due().await.unwrap() > 0 {} }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let runs = handler.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 60, "{runs:?}");
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
}

/// Enqueues a job per event, keyed by it; while `broken`, fails after its effect (as a
/// crash between the effect and the checkpoint would).
struct FailsAfterItsEffect {
    pool: PgPool,
    broken: AtomicBool,
    reacted: AtomicU32,
}

#[async_trait]
impl Policy for FailsAfterItsEffect {
    fn name(&self) -> &'static str {
        "test_effects"
    }
    fn consumes(&self) -> &'static [&'static str] {
        &["conversation"]
    }
    async fn react(&self, events: &[FeedEvent]) -> anyhow::Result<()> {
        for event in events {
            self.reacted.fetch_add(1, Ordering::SeqCst);
            enqueue(&self.pool, &job(&format!("effect:{}", event.id()), Utc::now(), 3)).await?;
        }
        if self.broken.load(Ordering::SeqCst) {
            anyhow::bail!("injected failure after the effects of {} events", events.len());
        }
        Ok(())
    }
}

async fn get(app: &TestApp, path: &str) -> String {
    app.client.get(format!("{}{path}", app.server.address)).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_policy_failing_between_its_effect_and_its_checkpoint_shows_in_readyz_and_has_each_effect_once() {
    let app = TestApp::spawn().await;
    let policy = Arc::new(FailsAfterItsEffect {
        pool: app.pool.clone(),
        broken: AtomicBool::new(true),
        reacted: AtomicU32::new(0),
    });
    let keyring = app.server.state.keyring.clone();
    let feed = app.server.state.engine.feed().clone();
    let policies = Policies::new(app.pool.clone(), keyring, vec![policy.clone()], feed, Duration::from_millis(20));
    policies.register().await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = policies.clone();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { runner.run(stop).await }
    });
    let inbox = app.create_inbox("Support").await;
    app.receive(&inbox, "c-1", "m-1", "hello").await;
    app.receive(&inbox, "c-1", "m-2", "again").await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'conversation'")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // While it fails: retried, named by /readyz and /metrics, the API still ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let ready: Value = serde_json::from_str(&get(&app, "/readyz").await).unwrap();
        if ready["failing_policies"].as_array().unwrap().iter().any(|p| p == "test_effects")
            || tokio::time::Instant::now() > deadline
        {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(ready["failing_policies"].as_array().unwrap().iter().any(|p| p == "test_effects"), "{ready}");
    assert_eq!(ready["ready"], true, "a failing policy does not take the API down");
    assert!(get(&app, "/metrics").await.contains("inbox_policy_failing{policy=\"test_effects\"} 1"));
    assert!(matches!(policies.status()["test_effects"].state, PolicyState::Retrying { .. }));
    tokio::time::sleep(Duration::from_millis(600)).await;

    policy.broken.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reacted = policies.status()["test_effects"].events_reacted as i64;
        let failing: Option<String> =
            sqlx::query_scalar("SELECT error FROM policy_checkpoints WHERE policy = 'test_effects'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if reacted == events && failing.is_none() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    running.await.unwrap().unwrap();
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE job_key LIKE 'effect:%'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(effects, events, "one effect per event");
    assert!(policy.reacted.load(Ordering::SeqCst) as i64 > events, "the failing event was reacted to again");
    assert!(get(&app, "/metrics").await.contains("inbox_policy_failing{policy=\"test_effects\"} 0"));
}

#[tokio::test]
async fn a_job_is_enqueued_in_the_transaction_of_its_cause_and_not_without_it() {
    use commands::side_write::SideWrites;
    use domain::ids::AccountId;
    use domain::label::{Label, LabelCommand, LabelTitle};

    let app = TestApp::spawn().await;
    let commands = &app.server.state.commands;
    let context = commands::context::CommandContext::now(app.account_id, domain::actor::Actor::User(app.user_id));
    let label = uuid::Uuid::now_v7().to_string();
    let create = |key: &'static str| {
        let context = context.clone();
        let label = label.clone();
        async move {
            let cause = SideWrites::of(job(key, Utc::now(), 3));
            commands
                .execute_with::<Label>(
                    &context,
                    &label,
                    |_| {
                        Ok(LabelCommand::Create {
                            account_id: AccountId(context.account_id),
                            title: LabelTitle::parse("vip").unwrap(),
                            color: "#ff0000".into(),
                            at: context.at,
                        })
                    },
                    &cause,
                )
                .await
        }
    };
    create("with-its-cause").await.unwrap();
    let refused = create("without-a-cause").await;
    assert!(refused.is_err(), "the label exists: the second command is refused");
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT job_key FROM jobs ORDER BY job_key").fetch_all(&app.pool).await.unwrap();
    assert_eq!(keys, ["with-its-cause"], "a refused command enqueues nothing");
}

/// The first job's attempt takes long (the clock moves past the batch's lease) and,
/// meanwhile, another worker takes over the rest of the batch.
struct Slow {
    clock: Arc<ManualClock>,
    other: std::sync::OnceLock<Jobs>,
    slowed: AtomicBool,
    runs: Mutex<HashMap<String, u32>>,
}

#[async_trait]
impl JobHandler for Slow {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn run(&self, job: &Job) -> Outcome {
        *self.runs.lock().unwrap().entry(job.job_key.clone()).or_default() += 1;
        if job.job_key == "first" && !self.slowed.swap(true, Ordering::SeqCst) {
            self.clock.advance(Duration::from_secs(40));
            let other = self.other.get().expect("the other worker");
            // Both leases have passed: the long attempt's job, and the one waiting.
            assert_eq!(other.run_due().await.unwrap(), 2, "the other worker takes both");
        }
        Outcome::Done
    }
}

#[tokio::test]
async fn a_job_left_waiting_in_a_batch_past_its_lease_runs_once() {
    let app = TestApp::spawn().await;
    let clock = ManualClock::new();
    let lease = Duration::from_secs(30);
    let handler = Arc::new(Slow {
        clock: clock.clone(),
        other: std::sync::OnceLock::new(),
        slowed: AtomicBool::new(false),
        runs: Mutex::default(),
    });
    let other = Jobs::new(app.pool.clone(), clock.clone(), vec![handler.clone()], lease, Duration::ZERO);
    assert!(handler.other.set(other).is_ok());
    let worker = Jobs::new(app.pool.clone(), clock.clone(), vec![handler.clone()], lease, Duration::ZERO);
    enqueue(&app.pool, &job("first", clock.now(), 3)).await.unwrap();
    enqueue(&app.pool, &job("second", clock.now() + chrono::Duration::milliseconds(1), 3)).await.unwrap();
    clock.advance(Duration::from_millis(1));
    assert_eq!(worker.run_due().await.unwrap(), 2, "one batch of two");
    let runs = handler.runs.lock().unwrap().clone();
    // An attempt that outlives its lease is taken over (at least once); the job that
    // only waited behind it in the batch is not run a second time.
    assert_eq!((runs["first"], runs["second"]), (2, 1), "{runs:?}");
    assert_eq!(state_of(&app.pool, "second").await.0, "done");
}
