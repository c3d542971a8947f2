//! The binary's subcommands.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};
use projections::feed::{read_after, FeedPosition};
use serde_json::json;
use uuid::Uuid;

use crate::app::{connect, Application, Services, MIGRATOR};
use crate::config::Config;

#[derive(Parser)]
#[command(name = "inboxd", version, about = "Omnichannel customer-support inbox: event-sourced, GraphQL.")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GraphQL schema (SDL), as served; `api/schema.graphql` is this.
    Schema,
    #[command(flatten)]
    Configured(Configured),
}

/// The subcommands that act on an environment (its database, its keys).
#[derive(Subcommand)]
enum Configured {
    /// Serve the API and run the projectors.
    Serve,
    /// Apply database migrations.
    Migrate,
    /// Create an account with an administrator and an API token; prints one JSON line.
    Bootstrap {
        #[arg(long)]
        account_name: String,
        #[arg(long)]
        email: String,
        #[arg(long, env = "BOOTSTRAP_PASSWORD", hide_env_values = true)]
        password: String,
        /// The administrator's display name (default: the e-mail's local part).
        #[arg(long)]
        name: Option<String>,
        /// Also an API inbox with a few conversations, so a first look finds something.
        #[arg(long)]
        demo: bool,
    },
    /// Replay the log into copies of a projector's tables beside the live ones, then
    /// switch to them in one short transaction; running servers keep serving the live
    /// tables meanwhile and follow the switch (projectors: directory, inbox_list,
    /// timeline).
    Rebuild {
        /// The projector to rebuild (directory, inbox_list or timeline).
        projector: Option<String>,
        /// Rebuild every projector.
        #[arg(long, conflicts_with = "projector")]
        all: bool,
    },
    /// Measure the write and read paths beside raw PostgreSQL and plain postgres-es
    /// (built with `--features bench`, as `scripts/bench.sh` does)
    /// (creates and drops `inbox_bench_*` databases on the DATABASE_URL server).
    #[cfg(feature = "bench")]
    Bench {
        /// The everyday run: shorter rounds, a smaller generated log (under 3 minutes).
        #[arg(long)]
        quick: bool,
        /// Where the JSON report goes.
        #[arg(long, default_value = "target/bench/report.json")]
        out: std::path::PathBuf,
        /// Run only this case (raw, library, ingest, webhooks, live, rebuild, query); repeatable.
        #[arg(long, value_parser = ["raw", "library", "ingest", "webhooks", "live", "channels", "rebuild", "query"])]
        only: Vec<String>,
    },
    /// Record a digest of the log now if it moved since the last, and print the newest
    /// as one JSON line (what auditors keep).
    Digest {
        /// Print the public key digests are signed with instead (what auditors pin).
        #[arg(long)]
        public_key: bool,
    },
    /// Check the whole log: every stream's chain and, with a digest, that everything it
    /// covered is still there unchanged. Prints what broke; exits 1 if anything did.
    Verify {
        /// A file holding a digest line from `inboxd digest`.
        #[arg(long)]
        digest: Option<std::path::PathBuf>,
    },
    /// Write events as NDJSON to stdout, in feed order.
    Export {
        /// Start after this position: the `position` of a line an export printed (an
        /// `events` cursor is the same); default: the beginning.
        #[arg(long)]
        after: Option<String>,
        /// Stop at this position (inclusive); default: the end.
        #[arg(long)]
        until: Option<String>,
        /// Only this account's events.
        #[arg(long)]
        account: Option<Uuid>,
    },
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Schema => {
                print!("{}", crate::graphql::sdl());
                Ok(())
            }
            Command::Configured(command) => command.run(Config::from_env()?).await,
        }
    }
}

impl Configured {
    async fn run(self, config: Config) -> anyhow::Result<()> {
        match self {
            Configured::Serve => Application::build(config).await?.run_until_stopped().await,
            Configured::Migrate => {
                let pool = connect(&config).await?;
                MIGRATOR.run(&pool).await.context("failed to apply migrations")?;
                tracing::info!("migrations applied");
                Ok(())
            }
            Configured::Bootstrap { account_name, email, password, name, demo } => {
                let services = Services::build(&config).await?;
                let created =
                    services.state.commands.bootstrap(&account_name, &email, &password, name.as_deref()).await?;
                if demo {
                    seed_demo(&services.state.commands, &created).await?;
                }
                // Serving processes project it at once rather than at their next poll.
                services.state.engine.wake_remote().await;
                let line =
                    json!({ "account_id": created.account_id, "user_id": created.user_id, "token": created.token });
                println!("{line}");
                Ok(())
            }
            Configured::Rebuild { projector, all } => {
                let services = Services::build(&config).await?;
                let engine = &services.state.engine;
                let names: Vec<String> = match (projector, all) {
                    (Some(name), false) => vec![name],
                    (None, true) => engine.projector_names().into_iter().map(String::from).collect(),
                    _ => anyhow::bail!("name a projector ({}) or pass --all", engine.projector_names().join(", ")),
                };
                for name in names {
                    let started = std::time::Instant::now();
                    let applied = engine.rebuild(&name).await?;
                    let seconds = started.elapsed().as_secs_f64();
                    tracing::info!(projector = %name, applied, seconds, "rebuilt");
                    println!("{}", json!({ "projector": name, "events_applied": applied, "seconds": seconds }));
                }
                Ok(())
            }
            Configured::Digest { public_key } => {
                let services = Services::build(&config).await?;
                let digests = &services.state.digests;
                if public_key {
                    let key = digests.key();
                    println!("{}", json!({ "key_id": key.key_id(), "public_key": key.public_key() }));
                    return Ok(());
                }
                let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
                digests.tick(config.digest_push_url.as_deref().map(|url| (&client, url))).await?;
                let latest = digests.latest().await?.context("the log is empty: there is nothing to digest yet")?;
                println!("{}", latest.line());
                Ok(())
            }
            Configured::Verify { digest } => {
                let services = Services::build(&config).await?;
                let digests = &services.state.digests;
                let digest = match digest {
                    Some(path) => {
                        let line = std::fs::read_to_string(&path)
                            .with_context(|| format!("failed to read the digest in {}", path.display()))?;
                        Some(commands::digest::Digest::parse(&line, digests.key())?)
                    }
                    None => None,
                };
                let report = services.state.commands.store().verify_whole_log(digests, digest.as_ref()).await?;
                for problem in &report.problems {
                    println!("{}", json!({ "broken": problem }));
                }
                let summary = json!({
                    "intact": report.problems.is_empty(),
                    "streams": report.streams,
                    "events": report.events,
                    "problems": report.problems.len(),
                    "digest": digest.as_ref().map(|d| d.digest),
                });
                println!("{summary}");
                if !report.problems.is_empty() {
                    std::process::exit(1);
                }
                Ok(())
            }
            #[cfg(feature = "bench")]
            Configured::Bench { quick, out, only } => {
                crate::bench::run(&config, &crate::bench::Options { quick, out, only }).await
            }
            Configured::Export { after, until, account } => {
                let services = Services::build(&config).await?;
                let parse =
                    |c: &str| c.parse::<FeedPosition>().context("--after/--until take a position from `events`");
                let mut position = after.as_deref().map(parse).transpose()?.unwrap_or(FeedPosition::START);
                let until = until.as_deref().map(parse).transpose()?;
                let mut conn = services.state.pool.acquire().await?;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                loop {
                    let events = read_after(&mut conn, &services.state.keyring, account, position, 1000).await?;
                    let Some(last) = events.last() else { break };
                    position = last.position;
                    for event in &events {
                        if until.is_some_and(|u| event.position > u) {
                            out.flush()?;
                            return Ok(());
                        }
                        let line = json!({
                            "position": event.position.to_string(),
                            "global_position": event.position.global_position,
                            "aggregate_type": event.aggregate_type,
                            "aggregate_id": event.aggregate_id,
                            "sequence": event.sequence,
                            "account_id": event.account_id,
                            "event_type": event.event_type,
                            "event_version": event.event_version,
                            "recorded_at": event.recorded_at,
                            "actor": event.recorded_actor(),
                            "payload": event.payload,
                            "metadata": event.metadata,
                        });
                        writeln!(out, "{line}")?;
                    }
                }
                out.flush()?;
                Ok(())
            }
        }
    }
}

/// A demo account's first contents, through the same commands the API runs: an API
/// inbox and three customers' conversations, one of them answered.
async fn seed_demo(commands: &commands::Commands, account: &commands::account::Bootstrapped) -> anyhow::Result<()> {
    use commands::context::CommandContext;
    use commands::conversation::Reply;
    use commands::inbound::InboundMessage;
    use domain::actor::Actor;
    use domain::contact::ContactDetails;
    use domain::values::{Channel, MessageContent};

    let admin = CommandContext::now(account.account_id, Actor::User(account.user_id));
    let (inbox, _) = commands.create_inbox(&admin, "Website", Channel::Api, None).await?;
    let customers = [
        ("ana", "Ana Souza", "ana@example.com", "Hi! My order #1042 has not arrived yet."),
        ("li", "Li Wei", "li@example.com", "Can I change the delivery address of my order?"),
        ("sam", "Sam Okafor", "sam@example.com", "The app logs me out every few minutes."),
    ];
    let mut first = None;
    for (source, name, email, text) in customers {
        let contact = ContactDetails { name: Some(name.into()), email: Some(email.into()), phone: None };
        let message = InboundMessage {
            inbox_id: inbox,
            contact_source_id: source.into(),
            contact,
            source_id: format!("{source}-1"),
            content: MessageContent::parse(text)?,
            attachments: Vec::new(),
            sent_at: None,
        };
        let received =
            commands.receive_message(&CommandContext::now(account.account_id, Actor::System), message).await?;
        first.get_or_insert(received.conversation_id);
    }
    if let Some(conversation) = first {
        let reply = MessageContent::parse("Sorry for the wait, Ana: it left our warehouse this morning.")?;
        let reply = Reply { content: reply, ..Reply::default() };
        commands.send_message(&admin, conversation, reply).await?;
    }
    Ok(())
}
