//! Decisions taken by two servers on one database: whichever process takes a
//! decision, it stands on current state. Every later decision that reads state
//! another process can change joins this family.

use std::collections::BTreeSet;

use api::app::Services;
use commands::context::CommandContext;
use domain::actor::Actor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tests::{gql_at, test_config, TestApp, TestServer};
use uuid::Uuid;

const VIEW: &str = "id status priority labels assignee { id }";

struct Two {
    app: TestApp,
    b: TestServer,
}

impl Two {
    async fn start() -> Two {
        let app = TestApp::spawn().await;
        let b = TestServer::start(&app.database_url).await;
        Two { app, b }
    }

    fn address(&self, server: char) -> &str {
        if server == 'A' {
            &self.app.server.address
        } else {
            &self.b.address
        }
    }

    /// A mutation by the administrator through server `A` or `B`.
    async fn call(&self, server: char, query: &str, variables: Value) -> Value {
        gql_at(&self.app.client, self.address(server), Some(&self.app.token), query, variables).await
    }

    async fn ok(&self, server: char, query: &str, variables: Value) -> Value {
        let answer = self.call(server, query, variables).await;
        assert!(answer.get("errors").is_none(), "unexpected errors through {server}: {answer}");
        answer["data"].clone()
    }

    async fn set_status(&self, server: char, conversation: &str, status: &str) -> Value {
        let query =
            format!("mutation($i: SetConversationStatusInput!) {{ setConversationStatus(input: $i) {{ {VIEW} }} }}");
        self.ok(server, &query, json!({ "i": { "conversationId": conversation, "status": status } })).await
            ["setConversationStatus"]
            .clone()
    }

    async fn assign(&self, server: char, conversation: &str, agent: Option<&str>) -> Value {
        let query = format!("mutation($i: AssignConversationInput!) {{ assignConversation(input: $i) {{ {VIEW} }} }}");
        self.call(server, &query, json!({ "i": { "conversationId": conversation, "assigneeId": agent } })).await
    }

    async fn membership(&self, server: char, inbox: &str, agent: &str, add: bool) {
        let field = if add { "addInboxMember" } else { "removeInboxMember" };
        let query = format!("mutation($i: InboxMemberInput!) {{ {field}(input: $i) {{ id }} }}");
        self.ok(server, &query, json!({ "i": { "inboxId": inbox, "userId": agent } })).await;
    }

    async fn events(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&self.app.pool)
            .await
            .expect("count events")
    }

    /// An inbox with one conversation; returns (inbox, conversation).
    async fn conversation(&self) -> (String, String) {
        let inbox = self.app.create_inbox("Shared").await;
        let received = self.app.receive(&inbox, "c-1", "m-1", "hello").await;
        (inbox, received["conversation"]["id"].as_str().expect("conversation id").to_string())
    }
}

#[tokio::test]
async fn a_status_change_through_a_server_with_a_stale_conversation_is_written_and_answered_as_it_is() {
    let two = Two::start().await;
    let (_, conversation) = two.conversation().await;
    assert_eq!(two.set_status('A', &conversation, "RESOLVED").await["status"], "RESOLVED");
    assert_eq!(two.set_status('B', &conversation, "OPEN").await["status"], "OPEN");
    // A's cached conversation still says RESOLVED: deciding "nothing to change" on it
    // would acknowledge a write that never happens.
    assert_eq!(two.set_status('A', &conversation, "RESOLVED").await["status"], "RESOLVED");
    assert_eq!(two.events("StatusChanged").await, 3, "each acknowledged change is an event");
    let seen = two
        .ok('B', &format!("query($id: ID!) {{ conversation(id: $id) {{ {VIEW} }} }}"), json!({ "id": conversation }))
        .await;
    assert_eq!(seen["conversation"]["status"], "RESOLVED");
}

#[tokio::test]
async fn an_assignment_through_a_server_with_a_stale_conversation_is_written() {
    let two = Two::start().await;
    let (inbox, conversation) = two.conversation().await;
    let (x, _) = two.app.agent("x@acme.test", "AGENT").await;
    let (y, _) = two.app.agent("y@acme.test", "AGENT").await;
    for agent in [&x, &y] {
        two.membership('A', &inbox, agent, true).await;
    }
    let assigned = |answer: Value| answer["data"]["assignConversation"]["assignee"]["id"].clone();
    assert_eq!(assigned(two.assign('A', &conversation, Some(&x)).await), json!(x));
    assert_eq!(assigned(two.assign('B', &conversation, Some(&y)).await), json!(y));
    assert_eq!(assigned(two.assign('A', &conversation, Some(&x)).await), json!(x));
    assert_eq!(two.events("AssigneeChanged").await, 3);
}

#[tokio::test]
async fn an_assignment_to_an_agent_another_server_removed_from_the_inbox_is_refused() {
    let two = Two::start().await;
    let (inbox, conversation) = two.conversation().await;
    let (x, _) = two.app.agent("x@acme.test", "AGENT").await;
    two.membership('A', &inbox, &x, true).await;
    two.membership('B', &inbox, &x, false).await;
    // A read the inbox when X was a member, and has cached it since.
    let answer = two.assign('A', &conversation, Some(&x)).await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{answer}");
    assert_eq!(two.events("AssigneeChanged").await, 0, "nothing is written for a member who is gone");
    let metrics =
        two.app.client.get(format!("{}/metrics", two.address('A'))).send().await.unwrap().text().await.unwrap();
    let redone = metrics.lines().find_map(|l| l.strip_prefix("inbox_decisions_redone_total ")).unwrap();
    assert!(redone.parse::<u64>().unwrap() >= 1, "A decided again, and says so: {metrics}");
}

#[tokio::test]
async fn an_assignment_deciding_while_a_removal_commits_waits_for_it_and_is_refused() {
    let two = Two::start().await;
    let (inbox, conversation) = two.conversation().await;
    let (x, _) = two.app.agent("x@acme.test", "AGENT").await;
    two.membership('A', &inbox, &x, true).await;
    // A has read (and cached) the inbox with X in it.
    assert!(two.assign('A', &conversation, Some(&x)).await.get("errors").is_none());
    assert!(two.assign('A', &conversation, None).await.get("errors").is_none());

    // Another process's removal of X, caught in flight: its transaction holds what a
    // removal holds (the inbox stream's write lock) and has written, not committed.
    let mut removal = two.app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(commands::guard::lock_key("inbox", &inbox))
        .execute(&mut *removal)
        .await
        .unwrap();
    let version: i64 =
        sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = 'inbox' AND aggregate_id = $1")
            .bind(&inbox)
            .fetch_one(&mut *removal)
            .await
            .unwrap();
    let payload =
        json!({ "InboxMemberRemoved": { "account_id": two.app.account_id, "user_id": x, "at": chrono::Utc::now() } });
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
         account_id, hash) VALUES ('inbox', $1, $2, 'InboxMemberRemoved', '1', $3, '{\"actor\": \"system\"}', $4, $5)",
    )
    .bind(&inbox)
    .bind(version + 1)
    .bind(&payload)
    .bind(two.app.account_id)
    .bind(vec![1u8; 33])
    .execute(&mut *removal)
    .await
    .unwrap();
    sqlx::query("DELETE FROM inbox_memberships WHERE inbox_id = $1::uuid AND user_id = $2::uuid")
        .bind(&inbox)
        .bind(&x)
        .execute(&mut *removal)
        .await
        .unwrap();

    let assigning = {
        let (client, address, token) = (two.app.client.clone(), two.address('A').to_string(), two.app.token.clone());
        let variables = json!({ "i": { "conversationId": conversation, "assigneeId": x } });
        tokio::spawn(async move {
            let query =
                format!("mutation($i: AssignConversationInput!) {{ assignConversation(input: $i) {{ {VIEW} }} }}");
            gql_at(&client, &address, Some(&token), &query, variables).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!assigning.is_finished(), "the assignment waits for the removal in flight");
    removal.commit().await.unwrap();
    let answer = assigning.await.unwrap();
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "decided again, on X gone: {answer}");
    let to_x: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'AssigneeChanged' AND payload -> 'AssigneeChanged' ->> 'to' = $1",
    )
    .bind(&x)
    .fetch_one(&two.app.pool)
    .await
    .unwrap();
    assert_eq!(to_x, 1, "only the assignment made while X was a member");
}

#[tokio::test]
async fn a_caller_whose_access_changed_unannounced_is_judged_on_the_access_they_have_now() {
    let two = Two::start().await;
    let (inbox, conversation) = two.conversation().await;
    let (x, token) = two.app.agent("x@acme.test", "AGENT").await;
    two.membership('A', &inbox, &x, true).await;
    let reply = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }";
    let send = |text: &str| json!({ "i": { "conversationId": conversation, "content": text } });
    let answer = gql_at(&two.app.client, two.address('A'), Some(&token), reply, send("first")).await;
    assert!(answer.get("errors").is_none(), "a member may reply: {answer}");

    // A process that tells nobody (its notifications lost) takes X out of the inbox;
    // A's cached principal still lists it.
    let silent = Services::build(&test_config(&two.app.database_url)).await.expect("a second process");
    let context = CommandContext::now(two.app.account_id, Actor::User(two.app.user_id));
    silent.state.commands.remove_inbox_member(&context, inbox.parse().unwrap(), x.parse().unwrap()).await.unwrap();

    let answer = gql_at(&two.app.client, two.address('A'), Some(&token), reply, send("second")).await;
    let code = &answer["errors"][0]["extensions"]["code"];
    assert!(code == "FORBIDDEN" || code == "NOT_FOUND", "a removed member may not reply: {answer}");
    assert_eq!(two.events("MessageSent").await, 1, "only the reply sent while a member is written");
}

/// What the conversation and its inbox should be after each acknowledged change.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    status: &'static str,
    priority: &'static str,
    labels: BTreeSet<&'static str>,
    assignee: Option<String>,
    members: BTreeSet<String>,
}

#[tokio::test]
async fn random_interleavings_through_two_servers_write_every_acknowledged_change_and_answer_what_they_decided() {
    let two = Two::start().await;
    let (inbox, conversation) = two.conversation().await;
    let mut agents = Vec::new();
    for n in 0..3 {
        agents.push(two.app.agent(&format!("agent{n}@acme.test"), "AGENT").await.0);
    }
    let seed: u64 = std::env::var("INTERLEAVING_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("interleaving seed {seed} (INTERLEAVING_SEED to repeat)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model =
        Model { status: "OPEN", priority: "NONE", labels: BTreeSet::new(), assignee: None, members: BTreeSet::new() };
    let labels = ["vip", "billing", "bug"];
    let mut changes = 0;
    for step in 0..80 {
        let server = if rng.gen_bool(0.5) { 'A' } else { 'B' };
        let before = model.clone();
        let answer = match rng.gen_range(0..5) {
            0 => {
                let status = ["OPEN", "PENDING", "RESOLVED"][rng.gen_range(0..3)];
                model.status = status;
                Some(two.set_status(server, &conversation, status).await)
            }
            1 => {
                let priority = ["NONE", "LOW", "HIGH", "URGENT"][rng.gen_range(0..4)];
                model.priority = priority;
                let query = format!(
                    "mutation($i: SetConversationPriorityInput!) {{ setConversationPriority(input: $i) {{ {VIEW} }} }}"
                );
                let vars = json!({ "i": { "conversationId": conversation, "priority": priority } });
                Some(two.ok(server, &query, vars).await["setConversationPriority"].clone())
            }
            2 => {
                let chosen: BTreeSet<&'static str> = labels.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
                model.labels = chosen.clone();
                let query = format!(
                    "mutation($i: SetConversationLabelsInput!) {{ setConversationLabels(input: $i) {{ {VIEW} }} }}"
                );
                let vars = json!({ "i": { "conversationId": conversation, "labels": chosen } });
                Some(two.ok(server, &query, vars).await["setConversationLabels"].clone())
            }
            3 => {
                let agent = agents[rng.gen_range(0..agents.len())].clone();
                let answer = two.assign(server, &conversation, Some(&agent)).await;
                if model.members.contains(&agent) {
                    model.assignee = Some(agent);
                    assert!(answer.get("errors").is_none(), "step {step}: a member is assignable: {answer}");
                    Some(answer["data"]["assignConversation"].clone())
                } else {
                    let code = &answer["errors"][0]["extensions"]["code"];
                    assert_eq!(code, "BAD_USER_INPUT", "step {step}: a non-member is refused: {answer}");
                    None
                }
            }
            _ => {
                let agent = agents[rng.gen_range(0..agents.len())].clone();
                let add = !model.members.contains(&agent);
                two.membership(server, &inbox, &agent, add).await;
                if add {
                    model.members.insert(agent);
                } else {
                    model.members.remove(&agent);
                }
                None
            }
        };
        if model != before {
            changes += 1;
        }
        if let Some(answer) = answer {
            assert_eq!(answer["status"], model.status, "step {step} through {server}: {answer}");
            assert_eq!(answer["priority"], model.priority, "step {step} through {server}: {answer}");
            let answered: BTreeSet<&str> =
                answer["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
            assert_eq!(answered, model.labels, "step {step} through {server}");
            assert_eq!(answer["assignee"]["id"].as_str().map(str::to_string), model.assignee, "step {step}");
        }
    }
    let written: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type IN ('StatusChanged', 'PriorityChanged', 'LabelsChanged', \
         'AssigneeChanged', 'InboxMemberAdded', 'InboxMemberRemoved')",
    )
    .fetch_one(&two.app.pool)
    .await
    .unwrap();
    assert_eq!(written, changes, "one event per acknowledged change, none for the rest (seed {seed})");
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox_memberships WHERE inbox_id = $1")
        .bind(inbox.parse::<Uuid>().unwrap())
        .fetch_one(&two.app.pool)
        .await
        .unwrap();
    assert_eq!(members, model.members.len() as i64);

    two.app.projected().await;
    let live = two.app.read_models().await;
    two.b.stop().await;
    let output = tests::inboxd(&two.app.database_url).args(["rebuild", "--all"]).output().await.unwrap();
    assert!(output.status.success(), "rebuild failed: {}", String::from_utf8_lossy(&output.stderr));
    two.app.projected().await;
    assert_eq!(two.app.read_models().await, live, "the read models equal a replay (seed {seed})");
}

#[tokio::test]
async fn a_reply_retried_through_the_other_server_with_its_client_message_id_lands_once() {
    let two = Two::start().await;
    let (_, conversation) = two.conversation().await;
    // B holds the conversation in its cache from before A's reply.
    let priority = "mutation($c: ID!) { setConversationPriority(input: {conversationId: $c, priority: LOW}) { id } }";
    two.ok('B', priority, json!({ "c": conversation })).await;
    let reply = "mutation($c: ID!) { sendMessage(input: {conversationId: $c, content: \"on it\", clientMessageId: \"r-1\"}) { id } }";
    let first = two.ok('A', reply, json!({ "c": conversation })).await;
    let again = two.ok('B', reply, json!({ "c": conversation })).await;
    assert_eq!(first["sendMessage"]["id"], again["sendMessage"]["id"], "the retry answers the reply already sent");
    assert_eq!(two.events("MessageSent").await, 1);
}

#[tokio::test]
async fn a_team_deleted_through_one_server_takes_no_member_through_the_other() {
    let two = Two::start().await;
    let (x, _) = two.app.agent("x@acme.test", "AGENT").await;
    let (y, _) = two.app.agent("y@acme.test", "AGENT").await;
    let team = two.ok('A', "mutation { createTeam(input: {name: \"Billing\"}) { id } }", json!({})).await["createTeam"]
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    let add = "mutation($t: ID!, $u: ID!) { addTeamMember(input: {teamId: $t, userId: $u}) { id } }";
    // A has the team cached from this change.
    two.ok('A', add, json!({ "t": team, "u": x })).await;
    two.ok('B', "mutation($t: ID!) { deleteTeam(input: {teamId: $t}) { deleted } }", json!({ "t": team })).await;
    let answer = two.call('A', add, json!({ "t": team, "u": y })).await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "NOT_FOUND", "{answer}");
    assert_eq!(two.events("TeamMemberAdded").await, 1, "nothing is added to a deleted team");
}
