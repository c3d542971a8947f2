//! The live dashboard: its counters equal a recount of the conversations after a long
//! random history and after a rebuild; it is pushed when it changes, coalesced, and
//! only to those who may see it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tests::{inboxd, TestApp};
use uuid::Uuid;

use tests::socket::{next_data, next_message, Socket};

const METRICS: &str = "query($i: ID, $t: ID) { liveMetrics(inboxId: $i, teamId: $t) { \
    open unattended unassigned pending snoozed oldestWaitingSince longestWaitSeconds \
    byInbox { inbox { id } open unattended unassigned } byTeam { team { id } open unattended unassigned } \
    byAgent { agent { id } open } } }";

/// A conversation as the inbox list shows it: what the dashboard counts.
#[derive(sqlx::FromRow)]
struct Listed {
    inbox_id: Uuid,
    team_id: Option<Uuid>,
    assignee_id: Option<Uuid>,
    status: String,
    first_reply_at: Option<DateTime<Utc>>,
    waiting_since: Option<DateTime<Utc>>,
}

/// The dashboard counted again from the inbox list's rows, shaped as `METRICS` answers.
async fn recount(app: &TestApp, inboxes: Option<&[&str]>, team: Option<&str>) -> Value {
    let rows: Vec<Listed> = sqlx::query_as(
        "SELECT inbox_id, team_id, assignee_id, status, first_reply_at, waiting_since FROM rm_conversations \
         WHERE account_id = $1",
    )
    .bind(app.account_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let (mut open, mut unattended, mut unassigned, mut pending, mut snoozed) = (0, 0, 0, 0, 0);
    let mut oldest: Option<DateTime<Utc>> = None;
    let mut by_inbox: BTreeMap<String, [i64; 3]> = BTreeMap::new();
    let mut by_team: BTreeMap<String, [i64; 3]> = BTreeMap::new();
    let mut by_agent: BTreeMap<String, i64> = BTreeMap::new();
    for row in rows {
        let inbox = row.inbox_id.to_string();
        if inboxes.is_some_and(|i| !i.contains(&inbox.as_str()))
            || team.is_some_and(|t| row.team_id.map(|id| id.to_string()).as_deref() != Some(t))
        {
            continue;
        }
        match row.status.as_str() {
            "pending" => pending += 1,
            "snoozed" => snoozed += 1,
            "open" => {
                let figures = [
                    1,
                    i64::from(row.first_reply_at.is_none() || row.waiting_since.is_some()),
                    i64::from(row.assignee_id.is_none()),
                ];
                open += figures[0];
                unattended += figures[1];
                unassigned += figures[2];
                if let Some(since) = row.waiting_since {
                    oldest = Some(oldest.map_or(since, |o| o.min(since)));
                }
                let mut places = vec![by_inbox.entry(inbox).or_default()];
                if let Some(team) = row.team_id {
                    places.push(by_team.entry(team.to_string()).or_default());
                }
                for place in places {
                    for (sum, n) in place.iter_mut().zip(figures) {
                        *sum += n;
                    }
                }
                if let Some(agent) = row.assignee_id {
                    *by_agent.entry(agent.to_string()).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let figures = |key: &str, places: BTreeMap<String, [i64; 3]>| -> Vec<Value> {
        places
            .into_iter()
            .map(|(id, [o, u, n])| json!({ key: { "id": id }, "open": o, "unattended": u, "unassigned": n }))
            .collect()
    };
    json!({
        "open": open, "unattended": unattended, "unassigned": unassigned, "pending": pending, "snoozed": snoozed,
        "oldestWaitingSince": oldest.map(|o| o.to_rfc3339()),
        "byInbox": figures("inbox", by_inbox),
        "byTeam": figures("team", by_team),
        "byAgent": by_agent.into_iter().map(|(id, o)| json!({ "agent": { "id": id }, "open": o })).collect::<Vec<_>>(),
    })
}

/// An answer in the recount's shape: lists by id, the time as RFC 3339, and
/// `longestWaitSeconds` (checked against `oldestWaitingSince`) left out.
fn normalized(mut metrics: Value) -> Value {
    let oldest = metrics["oldestWaitingSince"]
        .as_str()
        .map(|at| DateTime::parse_from_rfc3339(at).expect("a time").with_timezone(&Utc));
    let longest = metrics["longestWaitSeconds"].as_i64();
    match oldest {
        Some(oldest) => {
            let waited = (Utc::now() - oldest).num_seconds();
            let longest = longest.expect("a longest wait when something waits");
            assert!((0..=10).contains(&(waited - longest)), "longest wait {longest} s, but waiting for {waited} s");
        }
        None => assert_eq!(longest, None, "no longest wait when nothing waits"),
    }
    let object = metrics.as_object_mut().unwrap();
    object.remove("longestWaitSeconds");
    object.insert("oldestWaitingSince".into(), json!(oldest.map(|o| o.to_rfc3339())));
    for (list, key) in [("byInbox", "inbox"), ("byTeam", "team"), ("byAgent", "agent")] {
        let entries = object[list].as_array_mut().unwrap();
        entries.sort_by_key(|e| e[key]["id"].as_str().unwrap().to_string());
    }
    metrics
}

async fn metrics_as(app: &TestApp, token: &str, inbox: Option<&str>, team: Option<&str>) -> Value {
    let answer = app.gql_as(Some(token), METRICS, json!({ "i": inbox, "t": team })).await;
    assert!(answer["errors"].is_null(), "{answer}");
    normalized(answer["data"]["liveMetrics"].clone())
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

/// Three inboxes, two teams, the administrator and two agents, each agent a member of
/// two inboxes; a random history of conversations in them.
struct World {
    inboxes: Vec<String>,
    teams: Vec<String>,
    /// Each agent's id, token (the administrator's is the app's), and inboxes.
    agents: Vec<(String, String, Vec<usize>)>,
    /// Each conversation's id and inbox, and its contact's source id.
    conversations: Vec<(String, usize, String)>,
}

impl World {
    async fn build(app: &TestApp) -> World {
        let mut inboxes = Vec::new();
        for name in ["Support", "Sales", "Billing"] {
            inboxes.push(app.create_inbox(name).await);
        }
        let mut teams = Vec::new();
        for name in ["Tier 1", "Tier 2"] {
            let team =
                app.ok("mutation($n: String!) { createTeam(input: {name: $n}) { id } }", json!({ "n": name })).await;
            teams.push(team["createTeam"]["id"].as_str().unwrap().to_string());
        }
        let mut agents = vec![(app.user_id.to_string(), app.token.clone(), vec![0, 1, 2])];
        for (n, member_of) in [(1, vec![0, 1]), (2, vec![1, 2])] {
            let (id, token) = app.agent(&format!("agent{n}@acme.test"), "AGENT").await;
            for inbox in &member_of {
                app.ok(
                    "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
                    json!({ "i": inboxes[*inbox], "u": id }),
                )
                .await;
            }
            agents.push((id, token, member_of));
        }
        World { inboxes, teams, agents, conversations: Vec::new() }
    }

    /// One random operation: a contact writes (a new conversation, or to theirs), a
    /// reply, a private note, an assignment, a team, a status, muting, or what counts
    /// nothing (priority, labels, attributes).
    async fn operate(&mut self, app: &TestApp, rng: &mut StdRng, step: usize) {
        if self.conversations.is_empty() || rng.gen_bool(0.15) {
            let inbox = rng.gen_range(0..self.inboxes.len());
            let contact = format!("contact-{step}");
            let received = app.receive(&self.inboxes[inbox], &contact, &format!("m-{step}"), "a question").await;
            let id = received["conversation"]["id"].as_str().unwrap().to_string();
            self.conversations.push((id, inbox, contact));
            return;
        }
        let (conversation, inbox, contact) = self.conversations[rng.gen_range(0..self.conversations.len())].clone();
        let c = conversation.as_str();
        match rng.gen_range(0..11) {
            0 | 1 => {
                let received = app.receive(&self.inboxes[inbox], &contact, &format!("m-{step}"), "more").await;
                let id = received["conversation"]["id"].as_str().unwrap().to_string();
                if !self.conversations.iter().any(|(known, _, _)| *known == id) {
                    self.conversations.push((id, inbox, contact));
                }
            }
            2 | 3 => {
                let private = rng.gen_bool(0.3);
                app.ok(
                    "mutation($c: ID!, $p: Boolean) { sendMessage(input: {conversationId: $c, content: \"reply\", \
                     private: $p}) { id } }",
                    json!({ "c": c, "p": private }),
                )
                .await;
            }
            4 => {
                let members: Vec<&String> =
                    self.agents.iter().filter(|(_, _, of)| of.contains(&inbox)).map(|(id, _, _)| id).collect();
                let agent = rng.gen_bool(0.8).then(|| members[rng.gen_range(0..members.len())]);
                app.ok(
                    "mutation($c: ID!, $u: ID) { assignConversation(input: {conversationId: $c, assigneeId: $u}) { id } }",
                    json!({ "c": c, "u": agent }),
                )
                .await;
            }
            5 => {
                let team = rng.gen_bool(0.7).then(|| &self.teams[rng.gen_range(0..self.teams.len())]);
                app.ok(
                    "mutation($c: ID!, $t: ID) { assignConversation(input: {conversationId: $c, teamId: $t}) { id } }",
                    json!({ "c": c, "t": team }),
                )
                .await;
            }
            // What moves no counter, and muting (a muted conversation stays snoozed or
            // resolved when the contact writes).
            6 => {
                let muted = rng.gen_bool(0.5);
                app.ok(
                    "mutation($c: ID!, $m: Boolean!) { setConversationMuted(input: {conversationId: $c, muted: $m}) \
                     { id } }",
                    json!({ "c": c, "m": muted }),
                )
                .await;
            }
            7 => {
                let mutation = [
                    "mutation($c: ID!) { setConversationPriority(input: {conversationId: $c, priority: HIGH}) { id } }",
                    "mutation($c: ID!) { setConversationLabels(input: {conversationId: $c, labels: [\"vip\"]}) { id } }",
                    "mutation($c: ID!) { setConversationCustomAttributes(input: {conversationId: $c, attributes: \
                     {plan: \"gold\"}}) { id } }",
                ][rng.gen_range(0..3)];
                app.ok(mutation, json!({ "c": c })).await;
            }
            _ => {
                let status = ["OPEN", "PENDING", "SNOOZED", "RESOLVED"][rng.gen_range(0..4)];
                let until = (status == "SNOOZED" && rng.gen_bool(0.5))
                    .then(|| (Utc::now() + chrono::Duration::hours(2)).to_rfc3339());
                app.ok(
                    "mutation($c: ID!, $s: ConversationStatus!, $u: DateTime) { setConversationStatus(input: \
                     {conversationId: $c, status: $s, snoozedUntil: $u}) { id } }",
                    json!({ "c": c, "s": status, "u": until }),
                )
                .await;
            }
        }
    }

    /// Every way of asking compared with the recount: the whole account, an inbox, a
    /// team, both, and each agent (their inboxes only).
    async fn assert_recounted(&self, app: &TestApp, when: &str) {
        let (inboxes, teams) = (&self.inboxes, &self.teams);
        let all = metrics_as(app, &app.token, None, None).await;
        assert!(all["open"].as_i64().unwrap() > 0 && !all["byTeam"].as_array().unwrap().is_empty(), "{all}");
        assert_eq!(all, recount(app, None, None).await, "{when}: the whole account");
        let one = Some(inboxes[1].as_str());
        assert_eq!(metrics_as(app, &app.token, one, None).await, recount(app, Some(&[&inboxes[1]]), None).await);
        let team = Some(teams[0].as_str());
        assert_eq!(metrics_as(app, &app.token, None, team).await, recount(app, None, team).await, "{when}: a team");
        assert_eq!(
            metrics_as(app, &app.token, one, team).await,
            recount(app, Some(&[&inboxes[1]]), team).await,
            "{when}: an inbox and a team"
        );
        for (id, token, member_of) in &self.agents[1..] {
            let theirs: Vec<&str> = member_of.iter().map(|i| inboxes[*i].as_str()).collect();
            assert_eq!(
                metrics_as(app, token, None, None).await,
                recount(app, Some(&theirs), None).await,
                "{when}: agent {id}, their inboxes"
            );
        }
    }
}

#[tokio::test]
async fn live_metrics_equal_a_recount_of_the_conversations_after_a_random_history_and_after_a_rebuild() {
    let app = TestApp::spawn().await;
    let mut world = World::build(&app).await;
    let seed: u64 = std::env::var("LIVE_METRICS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("live metrics seed {seed} (LIVE_METRICS_SEED to repeat)");
    let mut rng = StdRng::seed_from_u64(seed);
    for step in 0..1_000 {
        world.operate(&app, &mut rng, step).await;
    }
    app.projected().await;
    world.assert_recounted(&app, "live").await;
    let live = app.read_models().await;

    let output = inboxd(&app.database_url).args(["rebuild", "live_metrics"]).output().await.expect("rebuild runs");
    assert!(output.status.success(), "rebuild failed: {}", String::from_utf8_lossy(&output.stderr));
    app.projected().await;
    let rebuilt = app.read_models().await;
    for table in ["rm_live_conversations", "rm_live_counts"] {
        assert!(!live[table].is_empty(), "{table} is filled");
        assert_eq!(rebuilt[table], live[table], "{table} differs after the rebuild");
    }
    world.assert_recounted(&app, "rebuilt").await;
}

#[tokio::test]
async fn the_live_metrics_are_for_those_who_see_every_conversation_of_the_inboxes_counted() {
    let app = TestApp::spawn().await;
    let support = app.create_inbox("Support").await;
    let sales = app.create_inbox("Sales").await;
    let team = app.ok("mutation { createTeam(input: {name: \"Tier 1\"}) { id } }", json!({})).await["createTeam"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.receive(&sales, "someone", "m-1", "a question").await;
    let (agent, token) = app.agent("support@acme.test", "AGENT").await;
    app.ok(
        "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
        json!({ "i": support, "u": agent }),
    )
    .await;
    let ask = |token: String, inbox: Option<&str>, team: Option<&str>| {
        let variables = json!({ "i": inbox, "t": team });
        let app = &app;
        async move { app.gql_as(Some(&token), METRICS, variables).await }
    };

    // An agent sees their inbox's figures, not another's.
    let theirs = ask(token.clone(), None, None).await;
    assert_eq!(theirs["data"]["liveMetrics"]["open"], 0, "{theirs}");
    assert!(!theirs.to_string().contains(&sales), "{theirs}");
    assert_eq!(code(&ask(token.clone(), Some(&sales), None).await), "FORBIDDEN");
    assert_eq!(ask(app.token.clone(), None, None).await["data"]["liveMetrics"]["open"], 1);

    // A role that sees only some of the inbox's conversations may not read counts of all.
    let role = app
        .ok("mutation { createCustomRole(input: {name: \"Own\", permissions: [CONVERSATION_PARTICIPATING_MANAGE]}) { id } }", json!({}))
        .await["createCustomRole"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.ok(
        "mutation($u: ID!, $r: ID!) { setAgentRole(input: {userId: $u, role: AGENT, customRoleId: $r}) { id } }",
        json!({ "u": agent, "r": role }),
    )
    .await;
    assert_eq!(code(&ask(token.clone(), None, None).await), "FORBIDDEN");

    // Another account's ids are not found; a malformed one is the caller's mistake.
    let other = app.other_account().await;
    assert_eq!(code(&ask(other.token.clone(), Some(&sales), None).await), "NOT_FOUND");
    assert_eq!(code(&ask(other.token.clone(), None, Some(&team)).await), "NOT_FOUND");
    assert_eq!(code(&ask(app.token.clone(), Some("not-an-id"), None).await), "BAD_USER_INPUT");
    let outsider = ask(other.token.clone(), None, None).await;
    assert_eq!(outsider["data"]["liveMetrics"]["open"], 0, "{outsider}");
}

const UPDATED: &str = "subscription($i: ID) { liveMetricsUpdated(inboxId: $i) { open unattended \
    byInbox { inbox { id } open } } }";

async fn watch(app: &TestApp, token: &str, inbox: Option<&str>) -> Socket {
    tests::socket::subscribe(&app.server.address, token, UPDATED, json!({ "i": inbox })).await
}

/// The next push, if one comes within `within`.
async fn next_push(socket: &mut Socket, within: Duration) -> Option<Value> {
    next_data(socket, "liveMetricsUpdated", within).await
}

/// Pushes (and when each came) until one has `open` conversations.
async fn until_open(socket: &mut Socket, open: i64) -> Vec<(Instant, Value)> {
    let mut pushes = Vec::new();
    while pushes.last().is_none_or(|(_, p): &(Instant, Value)| p["open"] != open) {
        let push = next_push(socket, Duration::from_secs(10)).await;
        pushes.push((Instant::now(), push.unwrap_or_else(|| panic!("no push with {open} open: {pushes:?}"))));
    }
    pushes
}

#[tokio::test]
async fn changes_are_pushed_coalesced_and_only_to_those_who_may_see_them() {
    let app = TestApp::spawn().await;
    let support = app.create_inbox("Support").await;
    let sales = app.create_inbox("Sales").await;
    let (agent, token) = app.agent("support@acme.test", "AGENT").await;
    app.ok(
        "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
        json!({ "i": support, "u": agent }),
    )
    .await;
    let other = app.other_account().await;
    let mut admin = watch(&app, &app.token, None).await;
    let mut member = watch(&app, &token, None).await;
    let mut outsider = watch(&app, &other.token, None).await;
    let mut refused = watch(&app, &token, Some(&sales)).await;
    let answer = next_message(&mut refused, Duration::from_secs(5)).await.unwrap();
    let refusal = &answer["payload"]["errors"][0]["extensions"]["code"];
    assert_eq!(refusal, "FORBIDDEN", "an agent may not watch another inbox: {answer}");
    // Each is pushed the figures as they are first.
    for socket in [&mut admin, &mut member, &mut outsider] {
        let first = next_push(socket, Duration::from_secs(5)).await.expect("the figures as they are");
        assert_eq!(first["open"], 0, "{first}");
    }

    app.receive(&sales, "s-1", "s-1", "a question to sales").await;
    let pushed = until_open(&mut admin, 1).await;
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0].1["byInbox"], json!([{ "inbox": { "id": sales }, "open": 1 }]));
    // Nothing changed of what the others may see (their screens' agents arriving
    // online may be pushed: availability is on the dashboard too).
    for (socket, within) in [(&mut member, 1500), (&mut outsider, 100)] {
        while let Some(pushed) = next_push(socket, Duration::from_millis(within)).await {
            assert_eq!((&pushed["open"], &pushed["byInbox"]), (&json!(0), &json!([])), "{pushed}");
        }
    }

    // A burst, watched as it happens: pushes at most every 250 ms, the last one as the
    // query answers.
    let burst = async {
        for n in 0..8 {
            let variables = tests::receive_variables(&support, &format!("c-{n}"), &format!("m-{n}"), "burst");
            app.ok(tests::RECEIVE, variables).await;
        }
    };
    let ((), pushed) = tokio::join!(burst, until_open(&mut admin, 9));
    for pair in pushed.windows(2) {
        let apart = pair[1].0 - pair[0].0;
        assert!(apart >= Duration::from_millis(200), "two pushes {apart:?} apart: {pushed:?}");
    }
    let asked = app.ok("{ liveMetrics { open unattended byInbox { inbox { id } open } } }", json!({})).await;
    let mut last = pushed.last().unwrap().1.clone();
    let mut expected = asked["liveMetrics"].clone();
    for metrics in [&mut last, &mut expected] {
        metrics["byInbox"].as_array_mut().unwrap().sort_by_key(|e| e["inbox"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(last, expected);

    // The member sees their inbox's figures only; the other account nothing of these.
    let theirs = until_open(&mut member, 8).await;
    for (_, push) in &theirs {
        assert!(!push.to_string().contains(&sales), "{push}");
    }
    assert_eq!(theirs.last().unwrap().1["byInbox"], json!([{ "inbox": { "id": support }, "open": 8 }]));
    assert_eq!(next_push(&mut outsider, Duration::from_millis(1000)).await, None);
    // Nothing more comes when nothing changes.
    assert_eq!(next_push(&mut admin, Duration::from_millis(100)).await, None);
}

#[tokio::test]
async fn the_dashboard_counts_the_agents_in_view_by_availability_and_pushes_their_changes() {
    let app = TestApp::spawn().await;
    let support = app.create_inbox("Support").await;
    let member = "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }";
    let mut agents = Vec::new();
    for name in ["online", "busy", "away"] {
        let (id, token) = app.agent(&format!("{name}@acme.test"), "AGENT").await;
        app.ok(member, json!({ "i": support, "u": id })).await;
        agents.push((id, token));
    }
    // An agent of no inbox in view is not counted for it.
    let (_, elsewhere) = app.agent("elsewhere@acme.test", "AGENT").await;
    let choose = "mutation($s: AvailabilityStatus!) { setAvailability(input: {status: $s}) { status } }";
    app.gql_as(Some(&elsewhere), choose, json!({ "s": "ONLINE" })).await;
    let figures = "query($i: ID) { liveMetrics(inboxId: $i) { agentsOnline agentsBusy agentsOffline \
        byAgent { agent { id } open availability } } }";
    let mut socket = tests::socket::subscribe(
        &app.server.address,
        &app.token,
        "subscription($i: ID) { liveMetricsUpdated(inboxId: $i) { agentsOnline agentsBusy agentsOffline } }",
        json!({ "i": support }),
    )
    .await;
    let first = next_data(&mut socket, "liveMetricsUpdated", Duration::from_secs(5)).await.expect("the figures now");
    assert_eq!(first, json!({ "agentsOnline": 0, "agentsBusy": 0, "agentsOffline": 3 }));

    // Conversations assigned to two of them: byAgent lists agents with open ones.
    let assign =
        "mutation($c: ID!, $u: ID!) { assignConversation(input: {conversationId: $c, assigneeId: $u}) { id } }";
    for (n, (agent, _)) in agents.iter().take(2).enumerate() {
        let received = app.receive(&support, &format!("c-{n}"), &format!("m-{n}"), "hello").await;
        app.ok(assign, json!({ "c": received["conversation"]["id"], "u": agent })).await;
    }
    let answer = app.gql_as(Some(&agents[0].1), choose, json!({ "s": "ONLINE" })).await;
    assert_eq!(answer["data"]["setAvailability"]["status"], "ONLINE", "{answer}");
    app.gql_as(Some(&agents[1].1), choose, json!({ "s": "BUSY" })).await;
    let shown = app.ok(figures, json!({ "i": support })).await["liveMetrics"].clone();
    assert_eq!(
        (&shown["agentsOnline"], &shown["agentsBusy"], &shown["agentsOffline"]),
        (&json!(1), &json!(1), &json!(1))
    );
    let by_agent: BTreeMap<String, String> = shown["byAgent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["agent"]["id"].as_str().unwrap().to_string(), a["availability"].as_str().unwrap().to_string()))
        .collect();
    let expected: BTreeMap<String, String> =
        agents.iter().map(|(id, _)| id.clone()).zip(["ONLINE", "BUSY"].map(String::from)).collect();
    assert_eq!(by_agent, expected);

    // The subscription hears of it (coalesced: the last push is the state now).
    let mut last = first;
    while last != json!({ "agentsOnline": 1, "agentsBusy": 1, "agentsOffline": 1 }) {
        last = next_data(&mut socket, "liveMetricsUpdated", Duration::from_secs(5)).await.expect("pushed on change");
    }
}
