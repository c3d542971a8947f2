//! The test harness: each test gets its own database (a copy of a migrated template),
//! a real server on port 0, an account with an administrator, and request helpers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use api::app::{Application, MIGRATOR};
use api::config::{Config, Environment};
use api::state::AppState;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod graph_api;
pub mod receiver;
pub mod smtp_sink;
pub mod socket;

/// The test master key (base64 of 32 bytes).
pub const MASTER_KEY: &str = "dGVzdC1tYXN0ZXIta2V5LTMyLWJ5dGVzLWxvbmchISE=";

/// The server every test database lives on.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn database_url(name: &str) -> String {
    api::config::database_url_with_name(&server_url(), name)
}

/// Creates an empty, migrated database for one test: a copy of a template migrated
/// once per set of migrations.
pub async fn create_database() -> String {
    let mut admin =
        PgConnection::connect(&server_url()).await.expect("TEST_DATABASE_URL must reach a PostgreSQL server");
    let template = format!("inbox_template_{}", migrations_fingerprint());
    sqlx::query("SELECT pg_advisory_lock(4242)").execute(&mut admin).await.expect("template lock");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&template)
        .fetch_one(&mut admin)
        .await
        .expect("look up template");
    if !exists {
        let building = format!("{template}_building");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {building}"))
            .execute(&mut admin)
            .await
            .expect("drop partial template");
        sqlx::query(&format!("CREATE DATABASE {building}")).execute(&mut admin).await.expect("create template");
        let pool =
            PgPoolOptions::new().max_connections(1).connect(&database_url(&building)).await.expect("connect template");
        MIGRATOR.run(&pool).await.expect("migrations apply to an empty database");
        pool.close().await;
        sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {template}"))
            .execute(&mut admin)
            .await
            .expect("publish template");
    }
    sqlx::query("SELECT pg_advisory_unlock(4242)").execute(&mut admin).await.expect("template unlock");
    let name = format!("inbox_test_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .execute(&mut admin)
        .await
        .expect("copy template");
    database_url(&name)
}

/// Changes whenever a migration does, so a stale template is never used.
fn migrations_fingerprint() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for migration in MIGRATOR.iter() {
        for byte in migration.checksum.iter() {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

pub fn test_config(database_url: &str) -> Config {
    Config {
        environment: Environment::Development,
        database_url: database_url.to_string(),
        database_max_connections: 8,
        listen_addr: "127.0.0.1:0".parse().expect("loopback address"),
        master_key: MASTER_KEY.to_string(),
        read_your_writes_timeout: Duration::from_secs(5),
        projector_poll: Duration::from_millis(50),
        aggregate_cache_size: 1_000,
        session_ttl: Duration::from_secs(3600),
        redis_url: None,
        trust_forwarded_for: false,
        max_request_bytes: 1024 * 1024,
        graphql_introspection: true,
        graphql_depth_limit: 20,
        graphql_complexity_limit: 100_000,
        graphql_max_fields: 2_000,
        graphql_max_aliases: 50,
        graphql_anonymous_introspection: false,
        tls: None,
        chain_key_id: 1,
        digest_signing_key: None,
        // Tests record digests when they mean to (`inboxd digest`).
        digest_interval: Duration::ZERO,
        digest_push_url: None,
        cors_allowed_origins: Vec::new(),
        // Test receivers listen on loopback.
        outbound_allow_private_targets: true,
        job_workers: 2,
        job_retention: Duration::from_secs(24 * 3600),
        job_lease: Duration::from_secs(60),
        smtp_url: None,
        smtp_from: "inboxd <notifications@acme.test>".into(),
        vapid_subject: "mailto:ops@acme.test".into(),
        // Tests that send through a provider start a fake Graph API and aim here.
        meta_graph_api_url: "http://127.0.0.1:9".into(),
        meta_graph_api_version: "v21.0".into(),
        attachments_dir: std::env::temp_dir().join(format!("inboxd-test-files-{}", Uuid::now_v7())),
    }
}

/// A running server, in this process.
pub struct TestServer {
    pub address: String,
    pub state: AppState,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(database_url: &str) -> TestServer {
        Self::start_with(test_config(database_url)).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let app = Application::build(config).await.expect("application builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().clone();
        let shutdown = app.shutdown_token();
        let task = tokio::spawn(app.run_until_stopped());
        TestServer { address, state, shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("server task").expect("server stops cleanly");
    }
}

/// A test's world: a database, a server, and an account whose administrator calls it.
pub struct TestApp {
    pub database_url: String,
    pub pool: PgPool,
    pub server: TestServer,
    pub account_id: Uuid,
    pub user_id: Uuid,
    pub token: String,
    pub client: reqwest::Client,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// An app whose server runs with the test configuration as `configure` changes it.
    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> TestApp {
        let database_url = create_database().await;
        let mut config = test_config(&database_url);
        configure(&mut config);
        let server = TestServer::start_with(config).await;
        let created = server
            .state
            .commands
            .bootstrap("Acme Support", "admin@acme.test", "correct horse battery", Some("Ana Admin"))
            .await
            .expect("bootstrap");
        let pool = PgPoolOptions::new().max_connections(4).connect(&database_url).await.expect("test pool");
        // Tests start from a settled account: its administrator is already in the read models.
        wait_until_projected(&pool).await;
        TestApp {
            database_url,
            pool,
            server,
            account_id: created.account_id,
            user_id: created.user_id,
            token: created.token,
            client: reqwest::Client::new(),
        }
    }

    /// Runs a GraphQL operation as the account's administrator.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_as(Some(&self.token), query, variables).await
    }

    /// Runs a GraphQL operation with the given token (or none).
    pub async fn gql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        gql_at(&self.client, &self.server.address, token, query, variables).await
    }

    /// Uploads a file to a conversation as a GraphQL multipart request
    /// (`uploadAttachment`); answers the whole response.
    pub async fn upload_as(
        &self,
        token: Option<&str>,
        conversation: &str,
        file_name: &str,
        mime_type: &str,
        bytes: Vec<u8>,
    ) -> Value {
        let operations = json!({
            "query": "mutation($c: ID!, $f: Upload!) { uploadAttachment(input: {conversationId: $c, file: $f}) \
                      { id fileType mimeType fileName fileSize url } }",
            "variables": {"c": conversation, "f": null},
        });
        let file = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_string()).mime_str(mime_type).unwrap();
        let form = reqwest::multipart::Form::new()
            .text("operations", operations.to_string())
            .text("map", json!({"0": ["variables.f"]}).to_string())
            .part("0", file);
        let mut request = self.client.post(format!("{}/graphql", self.server.address)).multipart(form);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the upload is answered");
        response.json().await.expect("a JSON answer")
    }

    /// `data` of a response that must have succeeded.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let response = self.gql(query, variables).await;
        assert!(response.get("errors").is_none(), "unexpected errors: {response}");
        response["data"].clone()
    }

    pub async fn create_inbox(&self, name: &str) -> String {
        let data = self
            .ok(
                "mutation($name: String!) { createInbox(input: {name: $name, channel: API}) { id } }",
                json!({ "name": name }),
            )
            .await;
        data["createInbox"]["id"].as_str().expect("inbox id").to_string()
    }

    /// Delivers an inbound message; returns the `receiveMessage` object.
    pub async fn receive(&self, inbox: &str, contact: &str, source_id: &str, content: &str) -> Value {
        let data = self.ok(RECEIVE, receive_variables(inbox, contact, source_id, content)).await;
        data["receiveMessage"].clone()
    }

    /// Another company on the same deployment, with its own administrator.
    pub async fn other_account(&self) -> commands::account::Bootstrapped {
        self.server
            .state
            .commands
            .bootstrap("Other Co", "boss@other.test", "another long password", None)
            .await
            .expect("another account")
    }

    /// Adds an agent with a password to the account and signs them in: (user id, session token).
    pub async fn agent(&self, email: &str, role: &str) -> (String, String) {
        let created = self
            .ok(
                "mutation($e: String!, $r: Role!) { createAgent(input: {email: $e, name: \"Agent\", role: $r, \
                 password: \"agent password 1\"}) { id } }",
                json!({ "e": email, "r": role }),
            )
            .await;
        let id = created["createAgent"]["id"].as_str().expect("agent id").to_string();
        (id, self.login(email, "agent password 1").await)
    }

    /// Signs in; panics unless it works.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let answer = self
            .gql_as(
                None,
                "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { token } }",
                json!({ "e": email, "p": password }),
            )
            .await;
        answer["data"]["login"]["token"].as_str().unwrap_or_else(|| panic!("login failed: {answer}")).to_string()
    }

    /// Every read-model table, row by row in a stable order, as text.
    pub async fn read_models(&self) -> BTreeMap<String, Vec<String>> {
        read_models(&self.pool).await
    }

    /// Waits until every projector has applied every event in the log.
    pub async fn projected(&self) {
        wait_until_projected(&self.pool).await;
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&self.pool).await.expect("count events")
    }
}

pub const RECEIVE: &str = "mutation($input: ReceiveMessageInput!) { receiveMessage(input: $input) { \
    id content messageType conversation { id displayId status messagesCount } } }";

pub fn receive_variables(inbox: &str, contact: &str, source_id: &str, content: &str) -> Value {
    json!({ "input": {
        "inboxId": inbox,
        "contact": { "sourceId": contact, "name": format!("Contact {contact}"), "email": format!("{contact}@customer.test") },
        "sourceId": source_id,
        "content": content,
    }})
}

pub async fn gql_at(
    client: &reqwest::Client,
    address: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    gql_with(client, address, token, &[], query, variables).await
}

/// A GraphQL call with extra headers (e.g. `X-Account-Id`).
pub async fn gql_with(
    client: &reqwest::Client,
    address: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    query: &str,
    variables: Value,
) -> Value {
    let mut request =
        client.post(format!("{address}/graphql")).json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request reaches the server").json().await.expect("the answer is JSON")
}

/// The read-model tables, from the schema: a new one is compared without being listed.
pub async fn read_models(pool: &PgPool) -> BTreeMap<String, Vec<String>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_name LIKE 'rm\\_%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list read models");
    let mut models = BTreeMap::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t ORDER BY t::text"))
            .fetch_all(pool)
            .await
            .expect("read a read model");
        models.insert(table, rows);
    }
    models
}

pub async fn wait_until_projected(pool: &PgPool) {
    wait_until_projected_within(pool, Duration::from_secs(30)).await
}

/// [`wait_until_projected`], for at most `within`.
pub async fn wait_until_projected_within(pool: &PgPool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM projector_checkpoints c WHERE (c.last_txid, c.last_position) < \
             (SELECT transaction_id, global_position FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1)",
        )
        .fetch_one(pool)
        .await
        .expect("compare checkpoints");
        let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM projector_checkpoints")
            .fetch_one(pool)
            .await
            .expect("count projectors");
        if behind == 0
            && registered
                == projections::all_projectors(&std::sync::Arc::new(projections::keyring::Keyring::new([0; 32]))).len()
                    as i64
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "projectors did not catch up within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The built `inboxd` binary (scripts/test.sh builds it before the tests run).
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("INBOXD_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/inboxd");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p api --bin inboxd` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A command for the binary against a test database.
pub fn inboxd(database_url: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary());
    command
        // Away from the checkout, so a developer's .env (read by inboxd) plays no part.
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", database_url)
        .env("MASTER_KEY", MASTER_KEY)
        .env("APP_ENV", "development")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    command
}

/// A port nothing listens on (for the moment).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

/// `inboxd serve` as its own process (to be killed), with `env` set; its address.
pub async fn serve(database_url: &str, env: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let port = free_port();
    let child = inboxd(database_url)
        .arg("serve")
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .envs(env.iter().copied())
        .spawn()
        .expect("serve starts");
    let address = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{address}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return (child, address);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("inboxd serve did not come up on {address}");
}

/// Time that moves only when the test says (jobs and timers without waiting).
pub struct ManualClock(std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

impl ManualClock {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::Mutex::new(chrono::Utc::now())))
    }
    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock") += chrono::Duration::from_std(by).expect("a duration in range");
    }
}

impl commands::jobs::Clock for ManualClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().expect("clock")
    }
}
