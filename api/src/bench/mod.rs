//! `inboxd bench`: the write path, the read path and memory, measured side by side
//! with the limits in one run on one PostgreSQL — the raw insert ceiling and the bare
//! libraries (cqrs-es + postgres-es) beside the product end to end.
//!
//! Each case runs in a database of its own (`inbox_bench_*`, recreated every run) on
//! the server `DATABASE_URL` names. Durability is PostgreSQL's default throughout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use commands::context::CommandContext;
use domain::actor::Actor;
use projections::inbox_list::{self, AssigneeFilter, ConversationFilter, ConversationSort};
use rand::RngCore;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::app::{Services, MIGRATOR};
use crate::config::{database_url_with_name, Config};
use harness::{median, peak_rss_mb, percentile, Operation, Plan};
use lag::LagProbe;

mod channels;
pub mod harness;
mod history;
mod lag;
mod library;
mod live;
mod webhooks;

/// Concurrent clients/tasks in the throughput cases.
const CONCURRENCY: usize = 16;
/// Every how many ingested messages the projection lag is sampled.
const LAG_SAMPLE_EVERY: u64 = 10;

pub struct Options {
    pub quick: bool,
    pub out: PathBuf,
    /// Run only these cases (`raw`, `library`, `ingest`, `webhooks`, `live`,
    /// `channels`, `rebuild`, `query`); all if empty.
    pub only: Vec<String>,
}

/// Everything the run measured, keyed as `report.json` names it.
type Report = BTreeMap<&'static str, Value>;

pub async fn run(config: &Config, options: &Options) -> anyhow::Result<()> {
    let plan = Plan::new(options.quick);
    let bench = Bench::new(config, options.quick).await?;
    let mut report = Report::new();
    report.insert("quick", json!(options.quick));
    report.insert("machine", bench.machine().await?);

    let runs = |case: &str| options.only.is_empty() || options.only.iter().any(|o| o == case);

    if runs("raw") {
        eprintln!("bench: 1/6 raw PostgreSQL ceiling");
        let (single, batch10) = bench.raw_ceiling(plan).await?;
        report.insert("pg_ceiling_events_per_s", json!(single));
        report.insert("pg_ceiling_batch10_events_per_s", json!(batch10));
    }
    let library = if runs("library") { Some(bench.plain_library().await?) } else { None };
    if runs("ingest") {
        // With the library case, in alternating rounds: the comparison the targets make.
        let beside = if library.is_some() { " beside 2/6 cqrs-es + postgres-es" } else { "" };
        eprintln!("bench: 3/6 end to end over HTTP{beside}, and 4/6 long conversations");
        bench.ingest(plan, &mut report, library.as_ref()).await?;
    }
    if runs("webhooks") {
        let beside = if library.is_some() { " beside cqrs-es + postgres-es" } else { "" };
        eprintln!("bench: 7/7 ingest with a webhook{beside}, and webhook deliveries");
        bench.webhooks(plan, &mut report, library.as_ref()).await?;
    }
    if runs("live") {
        eprintln!("bench: 8/8 a subscriber on one server, ingest through another");
        bench.live(plan, &mut report).await?;
    }
    if runs("channels") {
        eprintln!("bench: 9/9 signed WhatsApp webhooks beside the API channel");
        bench.channels(plan, &mut report).await?;
    }
    if let Some(library) = &library {
        eprintln!("bench: 2/6 cqrs-es + postgres-es");
        if !runs("ingest") {
            let sixteen = harness::run(plan, CONCURRENCY, library.operation("many")).await?;
            report.insert("postgres_es_commands_per_s", json!(sixteen.median_rate()));
        }
        let one = harness::run(plan, 1, library.operation("one")).await?;
        report.insert("postgres_es_commands_per_s_1_task", json!(one.median_rate()));
    }
    if runs("rebuild") {
        eprintln!("bench: 5/6 rebuild");
        bench.rebuild(&mut report).await?;
    }
    if runs("query") {
        eprintln!("bench: 6/6 inbox query");
        bench.inbox_query(&mut report).await?;
    }

    print_table(&report);
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    std::fs::write(&options.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("failed to write {}", options.out.display()))?;
    eprintln!("bench: wrote {}", options.out.display());
    Ok(())
}

struct Bench {
    config: Config,
    quick: bool,
    master_key: String,
}

/// A JSON object with the ~300-byte payload of a sealed incoming message.
fn sample_payload() -> Value {
    json!({ "MessageReceived": {
        "message_id": Uuid::now_v7(),
        "contact_id": Uuid::now_v7(),
        "content": format!("v1:{}", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo".repeat(5)),
        "waiting_since": "2026-11-24T10:00:00.000000Z",
        "at": "2026-11-24T10:00:00.000000Z",
    }})
}

impl Bench {
    async fn new(config: &Config, quick: bool) -> anyhow::Result<Self> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let master_key = base64::engine::general_purpose::STANDARD.encode(key);
        Ok(Self { config: config.clone(), quick, master_key })
    }

    /// Drops and recreates a database of the benchmark's, migrated.
    async fn database(&self, name: &str) -> anyhow::Result<(String, PgPool)> {
        let admin = PgPoolOptions::new().max_connections(1).connect(&self.config.database_url).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .context("failed to create a bench database")?;
        admin.close().await;
        let url = database_url_with_name(&self.config.database_url, name);
        let pool = PgPoolOptions::new().max_connections(CONCURRENCY as u32).connect(&url).await?;
        MIGRATOR.run(&pool).await?;
        Ok((url, pool))
    }

    fn config_for(&self, url: &str) -> Config {
        Config { database_url: url.to_string(), master_key: self.master_key.clone(), ..self.config.clone() }
    }

    fn inboxd(&self, url: &str) -> tokio::process::Command {
        let exe = std::env::current_exe().expect("the running binary's path");
        let mut command = tokio::process::Command::new(exe);
        command
            .env("DATABASE_URL", url)
            .env("MASTER_KEY", &self.master_key)
            .env("APP_ENV", "development")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        command
    }

    async fn machine(&self) -> anyhow::Result<Value> {
        let pool = PgPoolOptions::new().max_connections(1).connect(&self.config.database_url).await?;
        let setting = |name: &'static str| {
            let pool = pool.clone();
            async move { sqlx::query_scalar::<_, String>(&format!("SHOW {name}")).fetch_one(&pool).await }
        };
        let memory_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| (kb / 1024.0).round());
        Ok(json!({
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "memory_mb": memory_mb,
            "postgres_version": setting("server_version").await?,
            "fsync": setting("fsync").await?,
            "synchronous_commit": setting("synchronous_commit").await?,
            "concurrency": CONCURRENCY,
        }))
    }

    /// Case 1: single-row INSERT transactions into a table shaped like `events`, and
    /// 10 rows per transaction.
    async fn raw_ceiling(&self, plan: Plan) -> anyhow::Result<(f64, f64)> {
        let (_, pool) = self.database("inbox_bench_raw").await?;
        sqlx::query("CREATE TABLE raw_events (LIKE events INCLUDING ALL)").execute(&pool).await?;
        sqlx::query("CREATE TRIGGER raw_immutable BEFORE UPDATE OR DELETE ON raw_events FOR EACH ROW EXECUTE FUNCTION events_are_immutable()")
            .execute(&pool)
            .await?;
        let metadata = json!({ "actor": Actor::Contact(Uuid::now_v7()).to_string(), "correlation_id": Uuid::now_v7(), "occurred_at": "2026-11-24T10:00:00Z" });
        let account = Uuid::now_v7();
        let single = {
            let (pool, metadata) = (pool.clone(), metadata.clone());
            harness::run(plan, CONCURRENCY, Arc::new(move |worker, i| {
                let (pool, metadata) = (pool.clone(), metadata.clone());
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO raw_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, account_id) \
                         VALUES ('conversation', $1, $2, 'MessageReceived', '1', $3, $4, $5)",
                    )
                    .bind(format!("single-{worker}"))
                    .bind(i as i64 + 1)
                    .bind(sample_payload())
                    .bind(metadata)
                    .bind(account)
                    .execute(&pool)
                    .await?;
                    Ok(1)
                })
            }))
            .await?
        };
        let batch = {
            let (pool, metadata) = (pool.clone(), metadata.clone());
            harness::run(plan, CONCURRENCY, Arc::new(move |worker, i| {
                let (pool, metadata) = (pool.clone(), metadata.clone());
                Box::pin(async move {
                    let sequences: Vec<i64> = (1..=10).map(|n| i as i64 * 10 + n).collect();
                    sqlx::query(
                        "INSERT INTO raw_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, account_id) \
                         SELECT 'conversation', $1, s, 'MessageReceived', '1', p, $4, $5 FROM UNNEST($2::bigint[], $3::jsonb[]) AS t(s, p)",
                    )
                    .bind(format!("batch-{worker}"))
                    .bind(sequences)
                    .bind((0..10).map(|_| sample_payload()).collect::<Vec<_>>())
                    .bind(metadata)
                    .bind(account)
                    .execute(&pool)
                    .await?;
                    Ok(10)
                })
            }))
            .await?
        };
        Ok((single.median_rate(), batch.median_rate()))
    }

    /// Case 2: cqrs-es + postgres-es, one `MessageReceived` per command, conversations
    /// of ten messages, in a database of its own.
    async fn plain_library(&self) -> anyhow::Result<PlainLibrary> {
        let (_, pool) = self.database("inbox_bench_library").await?;
        // postgres-es's own default pool size.
        let pool = PgPoolOptions::new().max_connections(10).connect_with((*pool.connect_options()).clone()).await?;
        Ok(PlainLibrary { cqrs: Arc::new(postgres_es::postgres_cqrs::<library::PlainConversation>(pool, vec![], ())) })
    }

    /// Cases 3, 4 and 7 (ingest memory): the real server in its own process, 16 HTTP
    /// clients sending `receiveMessage`; then one more message on long conversations.
    async fn ingest(&self, plan: Plan, report: &mut Report, library: Option<&PlainLibrary>) -> anyhow::Result<()> {
        let served = self.served_account("inbox_bench_ingest", &[]).await?;
        let Served { url, pool, token, account, server, client, inbox } = served;
        let (lag, watch) = LagProbe::start(pool.clone());
        let sender = Sender {
            client: client.clone(),
            endpoint: server.graphql.clone(),
            token: token.clone(),
            inbox: inbox.clone(),
            watch,
        };
        let ingest = receiving(sender.clone());
        let mut cases = vec![(CONCURRENCY, ingest)];
        cases.extend(library.map(|library| (CONCURRENCY, library.operation("many"))));
        let mut results = harness::run_alternating(plan, cases).await?.into_iter();
        let measured = results.next().context("no ingest measurement")?;
        if let Some(library) = results.next() {
            report.insert("postgres_es_commands_per_s", json!(library.median_rate()));
        }
        let lags = lag.finish().await?;
        report.insert("ingest_messages_per_s", json!(measured.median_rate()));
        report.insert("ingest_p50_ms", json!(percentile(&measured.latencies_ms, 50.0)));
        report.insert("ingest_p99_ms", json!(percentile(&measured.latencies_ms, 99.0)));
        report.insert("projection_lag_p50_ms", json!(percentile(&lags, 50.0)));
        report.insert("projection_lag_p99_ms", json!(percentile(&lags, 99.0)));
        report.insert("ingest_peak_rss_mb", json!(server.peak_rss_mb()));

        // Beside it, the transport alone: an authenticated request that touches no
        // table, so the share of HTTP + GraphQL in an ingested message shows.
        let transport = {
            let (client, endpoint, token) = (client.clone(), server.graphql.clone(), token.clone());
            harness::run(
                plan,
                CONCURRENCY,
                Arc::new(move |_, _| {
                    let (client, endpoint, token) = (client.clone(), endpoint.clone(), token.clone());
                    Box::pin(async move {
                        graphql_at(&client, &endpoint, &token, "{ __typename }", json!({})).await?;
                        Ok(1)
                    })
                }),
            )
            .await?
        };
        report.insert("http_graphql_requests_per_s", json!(transport.median_rate()));

        // Case 4: long conversations, written directly, then one more message each.
        let services = Services::build(&self.config_for(&url)).await?;
        let mut long = BTreeMap::new();
        let inbox_id: Uuid = inbox.parse()?;
        for length in [10usize, 1000, 10_000] {
            let prefix = format!("long{length}");
            history::generate(&services.state.commands, account, inbox_id, &prefix, 1, length).await?;
            let contact = format!("{prefix}-0");
            let mut latencies = Vec::new();
            let samples = if self.quick { 10 } else { 30 };
            // A warm-up: the server loads the conversation into memory, and its
            // projectors catch up on the generated history before anything is timed.
            receive(&client, &server.graphql, &token, &inbox, &contact, "warm-up").await?;
            caught_up(&pool).await?;
            for n in 0..samples {
                let started = Instant::now();
                receive(&client, &server.graphql, &token, &inbox, &contact, &format!("extra-{n}")).await?;
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            long.insert(length.to_string(), json!(median(&latencies)));
        }
        report.insert("long_conversation_ms", json!(long));
        server.stop().await;
        Ok(())
    }

    /// A database of its own with an account, the real server on it (with `env`), and
    /// an API inbox.
    async fn served_account(&self, database: &str, env: &[(&str, &str)]) -> anyhow::Result<Served> {
        let (url, pool) = self.database(database).await?;
        let output = self
            .inboxd(&url)
            .args([
                "bootstrap",
                "--account-name",
                "Bench",
                "--email",
                "bench@example.com",
                "--password",
                "bench-password-1",
            ])
            .output()
            .await?;
        if !output.status.success() {
            bail!("bootstrap failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let created: Value = serde_json::from_slice(&output.stdout).context("bootstrap printed no JSON")?;
        let token = created["token"].as_str().context("no token")?.to_string();
        let account: Uuid = created["account_id"].as_str().context("no account")?.parse()?;
        let mut command = self.inboxd(&url);
        command.envs(env.iter().copied());
        let server = Server::start(command).await?;
        let client = reqwest::Client::new();
        let inbox = server
            .graphql(
                &client,
                &token,
                "mutation { createInbox(input: {name: \"Bench\", channel: API}) { id } }",
                json!({}),
            )
            .await?["createInbox"]["id"]
            .as_str()
            .context("no inbox id")?
            .to_string();
        Ok(Served { url, pool, token, account, server, client, inbox })
    }

    /// Cases 5 and 7 (rebuild memory): each projector rebuilt by `inboxd rebuild` over
    /// a generated log (1,000,000+ events; 120,000 in quick mode).
    async fn rebuild(&self, report: &mut Report) -> anyhow::Result<()> {
        let (url, pool) = self.database("inbox_bench_rebuild").await?;
        let services = Services::build(&self.config_for(&url)).await?;
        let commands = &services.state.commands;
        let created = commands.bootstrap("Rebuild", "rebuild@example.com", "bench-password-1", None).await?;
        let context = CommandContext::now(created.account_id, Actor::User(created.user_id));
        let (inbox, _) = commands.create_inbox(&context, "Rebuild", domain::values::Channel::Api, None).await?;
        let conversations = if self.quick { 5_000 } else { 42_000 };
        let started = Instant::now();
        history::generate(commands, created.account_id, inbox, "r", conversations, 10).await?;
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await?;
        eprintln!("bench: generated {events} events in {:.1} s", started.elapsed().as_secs_f64());
        report.insert("rebuild_events", json!(events));
        let mut rates = BTreeMap::new();
        let mut peak = 0.0f64;
        for projector in ["inbox_list", "timeline", "directory"] {
            let mut child =
                self.inboxd(&url).args(["rebuild", projector]).stdout(std::process::Stdio::piped()).spawn()?;
            let pid = child.id().context("rebuild exited at once")?;
            let started = Instant::now();
            let mut rss = 0.0f64;
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                rss = rss.max(peak_rss_mb(pid).unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let seconds = started.elapsed().as_secs_f64();
            if !status.success() {
                bail!("rebuild {projector} failed");
            }
            rates.insert(projector, json!(events as f64 / seconds));
            peak = peak.max(rss);
            if projector == "inbox_list" {
                report.insert("rebuild_events_per_s", json!(events as f64 / seconds));
                report.insert("rebuild_peak_rss_mb", json!(rss));
            }
        }
        report.insert("rebuild_events_per_s_by_projector", json!(rates));

        // Digests of the same log: the first ones cover it whole, then one after each
        // ~10,000 new events (what the digest schedule pays), then the auditor's check.
        let digests = &services.state.digests;
        let started = Instant::now();
        digests.tick(None).await?;
        report.insert("digest_initial_s", json!(started.elapsed().as_secs_f64()));
        let per_conversation = (events as usize / conversations).max(1);
        let mut times = Vec::new();
        let mut moved = 0;
        for round in 0..3 {
            let prefix = format!("digest-{round}");
            moved =
                history::generate(commands, created.account_id, inbox, &prefix, 10_000 / per_conversation, 10).await?;
            let started = Instant::now();
            digests.tick(None).await?.context("no digest was recorded after new events")?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        report.insert("digest_ms_after_new_events", json!(median(&times)));
        report.insert("digest_new_events", json!(moved));
        let latest = digests.latest().await?;
        let started = Instant::now();
        let checked = commands.store().verify_whole_log(digests, latest.as_ref()).await?;
        if !checked.problems.is_empty() {
            bail!("the generated log does not verify: {:?}", checked.problems.first());
        }
        report.insert("verify_log_events_per_s", json!(checked.events as f64 / started.elapsed().as_secs_f64()));
        Ok(())
    }

    /// Case 6: the inbox list over 1,000,000 conversations, filtered by status and
    /// assignee: the first page and a deep keyset page.
    async fn inbox_query(&self, report: &mut Report) -> anyhow::Result<()> {
        let (_, pool) = self.database("inbox_bench_query").await?;
        let conversations: i64 = 1_000_000;
        let account = Uuid::now_v7();
        let agents: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
        let inboxes: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let started = Instant::now();
        sqlx::query(
            "INSERT INTO rm_conversations (conversation_id, account_id, display_id, inbox_id, contact_id, status, priority, \
             priority_rank, assignee_id, labels, waiting_since, created_at, last_activity_at, messages_count) \
             SELECT gen_random_uuid(), $1, g, ($3::uuid[])[1 + g % 5], gen_random_uuid(), \
               (ARRAY['open','open','open','pending','resolved','snoozed'])[1 + g % 6], 'none', 0, \
               CASE WHEN g % 4 = 0 THEN NULL ELSE ($2::uuid[])[1 + g % 20] END, \
               CASE WHEN g % 10 = 0 THEN ARRAY['vip'] ELSE '{}' END, \
               now() - make_interval(secs => g), now() - make_interval(secs => g), \
               now() - make_interval(secs => (g * 7919) % $4), 3 \
             FROM generate_series(1, $4) AS g",
        )
        .bind(account)
        .bind(&agents)
        .bind(&inboxes)
        .bind(conversations)
        .execute(&pool)
        .await?;
        sqlx::query("ANALYZE rm_conversations").execute(&pool).await?;
        eprintln!("bench: {conversations} conversations in {:.1} s", started.elapsed().as_secs_f64());
        let filter = ConversationFilter {
            status: Some(domain::values::Status::Open),
            assignee: Some(AssigneeFilter::Agent(agents[3])),
            ..ConversationFilter::default()
        };
        let sort = ConversationSort::LastActivity;
        let deep = inbox_list::list(&pool, account, &filter, sort, None, 5_000).await?;
        let deep_cursor = sort.cursor(deep.last().context("the filter matched nothing")?);
        let mut latencies = Vec::new();
        for n in 0..400 {
            let after = if n % 2 == 0 { None } else { Some(deep_cursor.as_str()) };
            let started = Instant::now();
            let page = inbox_list::list(&pool, account, &filter, sort, after, 26).await?;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            if page.len() != 26 {
                bail!("the inbox query returned {} rows, not a full page", page.len());
            }
        }
        report.insert("inbox_query_p50_ms", json!(percentile(&latencies, 50.0)));
        report.insert("inbox_query_p99_ms", json!(percentile(&latencies, 99.0)));
        report.insert("inbox_query_conversations", json!(conversations));
        Ok(())
    }
}

/// Waits until every projector's checkpoint has reached the head of the log.
async fn caught_up(pool: &PgPool) -> anyhow::Result<()> {
    for _ in 0..600 {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projector_checkpoints WHERE (last_txid, last_position) < \
             (SELECT transaction_id, global_position FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1)",
        )
        .fetch_one(pool)
        .await?;
        if behind == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the projectors did not catch up within 30 s")
}

/// The bare libraries, set up for case 2.
struct PlainLibrary {
    cqrs: Arc<postgres_es::PostgresCqrs<library::PlainConversation>>,
}

impl PlainLibrary {
    /// A task's command: one message on its current conversation (ten per conversation).
    fn operation(&self, tag: &'static str) -> Operation {
        let cqrs = self.cqrs.clone();
        Arc::new(move |worker, i| {
            let cqrs = cqrs.clone();
            Box::pin(async move {
                let id = format!("{tag}-{worker}-{}", i / 10);
                let command = library::ReceiveMessage {
                    message_id: Uuid::now_v7().to_string(),
                    content: "Hello, where is my order?".into(),
                };
                cqrs.execute(&id, command).await.map_err(|e| anyhow::anyhow!("postgres-es command failed: {e}"))?;
                Ok(1)
            })
        })
    }
}

/// An account on a served database.
struct Served {
    url: String,
    pool: PgPool,
    token: String,
    account: Uuid,
    server: Server,
    client: reqwest::Client,
    inbox: String,
}

/// What each ingest client works with.
#[derive(Clone)]
struct Sender {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    token: String,
    inbox: String,
    watch: lag::Watch,
}

/// A client's operation: one message, ten per contact, its projection lag sampled.
fn receiving(sender: Sender) -> Operation {
    Arc::new(move |worker, i| {
        let Sender { client, endpoint, token, inbox, watch } = sender.clone();
        Box::pin(async move {
            let contact = format!("w{worker}-c{}", i / 10);
            let answer = receive(&client, &endpoint, &token, &inbox, &contact, &format!("m{i}")).await?;
            if i % LAG_SAMPLE_EVERY == 0 {
                let id: Uuid = answer["receiveMessage"]["id"].as_str().context("no message id")?.parse()?;
                watch.message(id, Instant::now());
            }
            Ok(1)
        })
    })
}

const RECEIVE: &str = "mutation($input: ReceiveMessageInput!) { receiveMessage(input: $input) { id } }";

async fn receive(
    client: &reqwest::Client,
    endpoint: &reqwest::Url,
    token: &str,
    inbox: &str,
    contact: &str,
    source_id: &str,
) -> anyhow::Result<Value> {
    let variables = json!({ "input": {
        "inboxId": inbox,
        "contact": { "sourceId": contact, "name": format!("Customer {contact}") },
        "sourceId": source_id,
        "content": "Hello, my order has not arrived yet and the tracking page shows no update since Monday.",
    }});
    graphql_at(client, endpoint, token, RECEIVE, variables).await
}

async fn graphql_at(
    client: &reqwest::Client,
    endpoint: &reqwest::Url,
    token: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let answer: Value = client
        .post(endpoint.clone())
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await?
        .json()
        .await?;
    if answer.get("errors").is_some() {
        bail!("GraphQL error: {answer}");
    }
    Ok(answer["data"].clone())
}

/// `inboxd serve` in a child process, on a free port.
struct Server {
    child: tokio::process::Child,
    /// Its GraphQL endpoint, parsed once: a load generator parsing a URL per request
    /// spends on it the cores the server runs on.
    graphql: reqwest::Url,
}

impl Server {
    async fn start(mut command: tokio::process::Command) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = command.arg("serve").env("LISTEN_ADDR", format!("127.0.0.1:{port}")).spawn()?;
        let address = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if client.get(format!("{address}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(Self { child, graphql: format!("{address}/graphql").parse()? });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the server did not become ready")
    }

    async fn graphql(
        &self,
        client: &reqwest::Client,
        token: &str,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Value> {
        graphql_at(client, &self.graphql, token, query, variables).await
    }

    fn peak_rss_mb(&self) -> f64 {
        self.child.id().and_then(peak_rss_mb).unwrap_or(0.0)
    }

    fn rss_mb(&self) -> f64 {
        self.child.id().and_then(harness::rss_mb).unwrap_or(0.0)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The targets, each with whether this run met it.
fn print_table(report: &Report) {
    let number = |key: &str| report.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let long = |key: &str| {
        report.get("long_conversation_ms").and_then(|l| l.get(key)).and_then(Value::as_f64).unwrap_or(f64::NAN)
    };
    let rows: Vec<(&str, String, String, Option<bool>)> = vec![
        ("pg_ceiling_events_per_s", format!("{:.0}", number("pg_ceiling_events_per_s")), "(limit)".into(), None),
        (
            "pg_ceiling_batch10_events_per_s",
            format!("{:.0}", number("pg_ceiling_batch10_events_per_s")),
            "(limit)".into(),
            None,
        ),
        (
            "postgres_es_commands_per_s",
            format!("{:.0}", number("postgres_es_commands_per_s")),
            "(baseline)".into(),
            None,
        ),
        (
            "postgres_es_commands_per_s_1_task",
            format!("{:.0}", number("postgres_es_commands_per_s_1_task")),
            "(baseline)".into(),
            None,
        ),
        (
            "ingest_messages_per_s",
            format!("{:.0}", number("ingest_messages_per_s")),
            format!(">= {:.0}", number("postgres_es_commands_per_s")),
            Some(number("ingest_messages_per_s") >= number("postgres_es_commands_per_s")),
        ),
        (
            "http_graphql_requests_per_s",
            format!("{:.0}", number("http_graphql_requests_per_s")),
            "(transport)".into(),
            None,
        ),
        ("ingest_p50_ms", format!("{:.2}", number("ingest_p50_ms")), "".into(), None),
        (
            "ingest_p99_ms",
            format!("{:.2}", number("ingest_p99_ms")),
            "< 25".into(),
            Some(number("ingest_p99_ms") < 25.0),
        ),
        ("projection_lag_p50_ms", format!("{:.2}", number("projection_lag_p50_ms")), "".into(), None),
        (
            "projection_lag_p99_ms",
            format!("{:.2}", number("projection_lag_p99_ms")),
            "< 100".into(),
            Some(number("projection_lag_p99_ms") < 100.0),
        ),
        ("long_conversation_ms[10]", format!("{:.2}", long("10")), "".into(), None),
        ("long_conversation_ms[1000]", format!("{:.2}", long("1000")), "".into(), None),
        (
            "long_conversation_ms[10000]",
            format!("{:.2}", long("10000")),
            format!("<= {:.2}", 2.0 * long("10")),
            Some(long("10000") <= 2.0 * long("10")),
        ),
        (
            "rebuild_events_per_s",
            format!("{:.0}", number("rebuild_events_per_s")),
            ">= 50000".into(),
            Some(number("rebuild_events_per_s") >= 50_000.0),
        ),
        ("inbox_query_p50_ms", format!("{:.2}", number("inbox_query_p50_ms")), "".into(), None),
        (
            "inbox_query_p99_ms",
            format!("{:.2}", number("inbox_query_p99_ms")),
            "< 10".into(),
            Some(number("inbox_query_p99_ms") < 10.0),
        ),
        (
            "ingest_peak_rss_mb",
            format!("{:.1}", number("ingest_peak_rss_mb")),
            "< 256".into(),
            Some(number("ingest_peak_rss_mb") < 256.0),
        ),
        ("rebuild_peak_rss_mb", format!("{:.1}", number("rebuild_peak_rss_mb")), "".into(), None),
        ("digest_initial_s", format!("{:.2}", number("digest_initial_s")), "".into(), None),
        (
            "digest_ms_after_new_events",
            format!("{:.1} ({:.0} events)", number("digest_ms_after_new_events"), number("digest_new_events")),
            "".into(),
            None,
        ),
        ("verify_log_events_per_s", format!("{:.0}", number("verify_log_events_per_s")), "".into(), None),
        (
            "ingest_with_webhook_messages_per_s",
            format!("{:.0}", number("ingest_with_webhook_messages_per_s")),
            format!(">= {:.0}", number("postgres_es_commands_per_s_beside_webhook")),
            Some(number("ingest_with_webhook_messages_per_s") >= number("postgres_es_commands_per_s_beside_webhook")),
        ),
        ("webhook_drain_after_ingest_s", format!("{:.2}", number("webhook_drain_after_ingest_s")), "".into(), None),
        ("webhook_deliveries_per_s", format!("{:.0}", number("webhook_deliveries_per_s")), "".into(), None),
        (
            "whatsapp_webhook_messages_per_s",
            format!("{:.0}", number("whatsapp_webhook_messages_per_s")),
            format!("({:.2}x API)", number("whatsapp_webhook_to_api_ingest")),
            None,
        ),
        (
            "api_ingest_beside_whatsapp_messages_per_s",
            format!("{:.0}", number("api_ingest_beside_whatsapp_messages_per_s")),
            "".into(),
            None,
        ),
        (
            "subscription_load_messages_per_s",
            format!("{:.0}", number("subscription_load_messages_per_s")),
            "(load)".into(),
            None,
        ),
        (
            "subscription_latency_2_clients_p99_ms",
            format!("{:.2}", number("subscription_latency_2_clients_p99_ms")),
            "".into(),
            None,
        ),
        ("subscription_latency_p50_ms", format!("{:.2}", number("subscription_latency_p50_ms")), "".into(), None),
        (
            "subscription_latency_p99_ms",
            format!("{:.2}", number("subscription_latency_p99_ms")),
            "< 100".into(),
            Some(number("subscription_latency_p99_ms") < 100.0),
        ),
        (
            "broadcast_lost_deliveries",
            format!("{:.0}", number("broadcast_lost_deliveries")),
            "0".into(),
            Some(number("broadcast_lost_deliveries") == 0.0),
        ),
        ("broadcast_delivery_p50_ms", format!("{:.2}", number("broadcast_delivery_p50_ms")), "".into(), None),
        ("broadcast_delivery_p99_ms", format!("{:.2}", number("broadcast_delivery_p99_ms")), "".into(), None),
        (
            "broadcast_server_rss_mb",
            format!(
                "{:.1} (+{:.1})",
                number("broadcast_server_rss_mb"),
                number("broadcast_server_rss_mb") - number("broadcast_server_rss_before_mb")
            ),
            "".into(),
            None,
        ),
    ];
    println!("{:<34} {:>12}  {:<12} met", "measure", "value", "target");
    for (name, value, target, met) in rows {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!("{name:<34} {value:>12}  {target:<12} {met}");
    }
    if let Some(rates) = report.get("rebuild_events_per_s_by_projector").and_then(Value::as_object) {
        for (projector, rate) in rates {
            println!("{:<34} {:>12.0}", format!("rebuild[{projector}] events/s"), rate.as_f64().unwrap_or(f64::NAN));
        }
    }
}
