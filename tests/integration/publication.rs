//! What a projector's commit made queryable reaches every process, in order: through
//! PostgreSQL NOTIFY, and through Redis pub/sub when it is configured.

use std::collections::HashMap;
use std::time::Duration;

use commands::context::CommandContext;
use commands::inbound::InboundMessage;
use domain::actor::Actor;
use domain::contact::ContactDetails;
use domain::values::{Channel, MessageContent};
use projections::feed::FeedPosition;
use projections::publication::Published;
use tests::{create_database, test_config, TestServer};

async fn publications_reach_both_processes_in_order(redis_url: Option<String>) {
    let database = create_database().await;
    let config = || api::config::Config { redis_url: redis_url.clone(), ..test_config(&database) };
    let one = TestServer::start_with(config()).await;
    let two = TestServer::start_with(config()).await;
    let mut heard_by_one = one.state.engine.publisher().subscribe();
    let mut heard_by_two = two.state.engine.publisher().subscribe();

    let commands = &one.state.commands;
    let created = commands.bootstrap("Acme", "admin@acme.test", "correct horse battery", None).await.unwrap();
    let context = CommandContext::now(created.account_id, Actor::User(created.user_id));
    let (inbox, _) = commands.create_inbox(&context, "Support", Channel::Api, None).await.unwrap();
    for n in 0..30 {
        let server = if n % 2 == 0 { &one } else { &two };
        let message = InboundMessage {
            inbox_id: inbox,
            contact_source_id: format!("c-{}", n % 4),
            contact: ContactDetails { name: Some(format!("Customer {}", n % 4)), email: None, phone: None },
            source_id: format!("m-{n}"),
            content: MessageContent::parse(format!("message {n}")).unwrap(),
            attachments: Vec::new(),
            sent_at: None,
        };
        server.state.commands.receive_message(&context, message).await.unwrap();
    }
    // How far each projector's publications must reach: its last event (one that
    // consumed nothing here publishes nothing).
    let mut last_consumed = HashMap::new();
    for projector in projections::all_projectors(&one.state.keyring) {
        let last: Option<(i64, i64)> = sqlx::query_as(
            "SELECT transaction_id::text::bigint, global_position FROM events WHERE aggregate_type = ANY($1) \
             ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1",
        )
        .bind(projector.consumes())
        .fetch_optional(&one.state.pool)
        .await
        .unwrap();
        if let Some((transaction_id, global_position)) = last {
            last_consumed.insert(projector.name().to_string(), FeedPosition { transaction_id, global_position });
        }
    }

    // Each process hears every projector's batches, whichever process ran them.
    for (process, heard) in [("one", &mut heard_by_one), ("two", &mut heard_by_two)] {
        let mut by_projector: HashMap<String, Vec<Published>> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let behind = |heard: &HashMap<String, Vec<Published>>| {
            last_consumed.iter().any(|(p, last)| heard.get(p).and_then(|b| b.last()).is_none_or(|b| b.through < *last))
        };
        while behind(&by_projector) {
            let published = tokio::time::timeout_at(deadline, heard.recv())
                .await
                .unwrap_or_else(|_| panic!("{process} heard only {by_projector:?}, not up to {last_consumed:?}"))
                .expect("no publication lost");
            by_projector.entry(published.projector.clone()).or_default().push(published);
        }
        for (projector, batches) in &by_projector {
            let mut previous = FeedPosition::START;
            for batch in batches {
                assert!(batch.after >= previous, "{process}/{projector}: {batch:?} after {previous:?}");
                assert!(batch.through > batch.after && batch.events > 0, "{process}/{projector}: {batch:?}");
                previous = batch.through;
            }
        }
    }
    // Each projector runs in one process, and both processes heard them all: whatever
    // one of them does not run, it heard through the fan-out.
    let runs_in_one =
        one.state.engine.status().values().filter(|s| s.state == projections::engine::RunnerState::Running).count();
    let runs_in_two =
        two.state.engine.status().values().filter(|s| s.state == projections::engine::RunnerState::Running).count();
    let projectors = projections::all_projectors(&one.state.keyring).len();
    assert_eq!(runs_in_one + runs_in_two, projectors, "each projector runs in one process");
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn what_a_commit_made_queryable_reaches_every_process_in_order_through_postgres() {
    publications_reach_both_processes_in_order(None).await;
}

#[tokio::test]
async fn what_a_commit_made_queryable_reaches_every_process_in_order_through_redis() {
    let redis = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL (scripts/test.sh finds or starts a Redis)");
    publications_reach_both_processes_in_order(Some(redis)).await;
}
