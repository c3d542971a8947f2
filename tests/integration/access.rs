//! Sessions, credentials, agents' visibility, the audit trail and tamper checks.

use serde_json::{json, Value};
use tests::{gql_with, receive_variables, TestApp};

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {answer}"))
}

const LOGIN: &str = "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { token } }";
const ME: &str = "{ me { id } }";

#[tokio::test]
async fn login_is_refused_with_a_wrong_password_and_locked_after_ten_failures() {
    let app = TestApp::spawn().await;
    let token = app.login("admin@acme.test", "correct horse battery").await;
    let me = app.gql_as(Some(&token), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["id"], app.user_id.to_string());

    let unknown = app.gql_as(None, LOGIN, json!({ "e": "nobody@acme.test", "p": "whatever password" })).await;
    assert_eq!(code(&unknown), "UNAUTHENTICATED");
    for attempt in 1..=10 {
        let wrong = app.gql_as(None, LOGIN, json!({ "e": "admin@acme.test", "p": "wrong password!" })).await;
        assert_eq!(code(&wrong), "UNAUTHENTICATED", "attempt {attempt}: {wrong}");
    }
    let eleventh = app.gql_as(None, LOGIN, json!({ "e": "admin@acme.test", "p": "wrong password!" })).await;
    assert_eq!(code(&eleventh), "RATE_LIMITED");
    let even_right = app.gql_as(None, LOGIN, json!({ "e": "admin@acme.test", "p": "correct horse battery" })).await;
    assert_eq!(code(&even_right), "RATE_LIMITED", "the lock holds for the window, whatever the password");
    let other_user = app.gql_as(None, LOGIN, json!({ "e": "someone@acme.test", "p": "wrong password!" })).await;
    assert_eq!(code(&other_user), "UNAUTHENTICATED", "another e-mail is not locked");
}

#[tokio::test]
async fn a_password_change_ends_every_other_session_and_logout_ends_its_own() {
    let app = TestApp::spawn().await;
    let laptop = app.login("admin@acme.test", "correct horse battery").await;
    let phone = app.login("admin@acme.test", "correct horse battery").await;
    let change = "mutation($c: String!, $n: String!) { changePassword(input: {currentPassword: $c, newPassword: $n}) { changed } }";
    let wrong = app.gql_as(Some(&laptop), change, json!({ "c": "not my password", "n": "a new long password" })).await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED");
    let short = app.gql_as(Some(&laptop), change, json!({ "c": "correct horse battery", "n": "short" })).await;
    assert_eq!(code(&short), "BAD_USER_INPUT");
    assert_eq!(app.gql_as(Some(&phone), ME, json!({})).await["data"]["me"]["id"], app.user_id.to_string());

    let changed =
        app.gql_as(Some(&laptop), change, json!({ "c": "correct horse battery", "n": "a new long password" })).await;
    assert_eq!(changed["data"]["changePassword"]["changed"], true, "{changed}");
    assert_eq!(code(&app.gql_as(Some(&phone), ME, json!({})).await), "UNAUTHENTICATED", "other session ended");
    assert_eq!(app.gql_as(Some(&laptop), ME, json!({})).await["data"]["me"]["id"], app.user_id.to_string());
    assert_eq!(app.gql_as(Some(&app.token), ME, json!({})).await["data"]["me"]["id"], app.user_id.to_string());
    let old = app.gql_as(None, LOGIN, json!({ "e": "admin@acme.test", "p": "correct horse battery" })).await;
    assert_eq!(code(&old), "UNAUTHENTICATED");
    app.login("admin@acme.test", "a new long password").await;

    let out = app.gql_as(Some(&laptop), "mutation { logout { loggedOut } }", json!({})).await;
    assert_eq!(out["data"]["logout"]["loggedOut"], true, "{out}");
    assert_eq!(code(&app.gql_as(Some(&laptop), ME, json!({})).await), "UNAUTHENTICATED");
    let api_logout = app.gql("mutation { logout { loggedOut } }", json!({})).await;
    assert_eq!(code(&api_logout), "BAD_USER_INPUT", "an API token is revoked, not logged out");

    // API tokens survive a password change unless the change revokes them too.
    let session = app.login("admin@acme.test", "a new long password").await;
    let revoking = "mutation($c: String!, $n: String!) { changePassword(input: {currentPassword: $c, \
        newPassword: $n, revokeApiTokens: true}) { changed } }";
    let changed =
        app.gql_as(Some(&session), revoking, json!({ "c": "a new long password", "n": "a third long password" })).await;
    assert_eq!(changed["data"]["changePassword"]["changed"], true, "{changed}");
    assert_eq!(code(&app.gql_as(Some(&app.token), ME, json!({})).await), "UNAUTHENTICATED", "the API token ended too");
    assert_eq!(app.gql_as(Some(&session), ME, json!({})).await["data"]["me"]["id"], app.user_id.to_string());
    let listed = app.gql_as(Some(&session), "{ apiTokens { id } }", json!({})).await;
    assert_eq!(listed["data"]["apiTokens"], json!([]), "{listed}");
}

#[tokio::test]
async fn api_tokens_are_listed_without_secrets_and_stop_working_once_revoked() {
    let app = TestApp::spawn().await;
    let created = app.ok("mutation { createApiToken(input: {name: \"CRM sync\"}) { id token } }", json!({})).await;
    let (id, token) =
        (created["createApiToken"]["id"].as_str().unwrap(), created["createApiToken"]["token"].as_str().unwrap());
    assert_eq!(app.gql_as(Some(token), ME, json!({})).await["data"]["me"]["id"], app.user_id.to_string());
    let listed = app.ok("{ apiTokens { id name } }", json!({})).await;
    let names: Vec<&str> =
        listed["apiTokens"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["bootstrap", "CRM sync"]);
    assert!(!listed.to_string().contains(token), "secrets are never listed");

    let revoked =
        app.ok("mutation($id: ID!) { revokeApiToken(input: {id: $id}) { revoked } }", json!({ "id": id })).await;
    assert_eq!(revoked["revokeApiToken"]["revoked"], true);
    assert_eq!(code(&app.gql_as(Some(token), ME, json!({})).await), "UNAUTHENTICATED");
    let again =
        app.gql("mutation($id: ID!) { revokeApiToken(input: {id: $id}) { revoked } }", json!({ "id": id })).await;
    assert_eq!(code(&again), "NOT_FOUND");
}

#[tokio::test]
async fn an_invited_agent_sets_a_password_once_and_signs_in() {
    let app = TestApp::spawn().await;
    let created = app
        .ok(
            "mutation { createAgent(input: {email: \"bo@acme.test\", name: \"Bo\", role: AGENT}) { id invitationToken } }",
            json!({}),
        )
        .await;
    let invitation = created["createAgent"]["invitationToken"].as_str().expect("an invitation").to_string();
    let early = app.gql_as(None, LOGIN, json!({ "e": "bo@acme.test", "p": "anything at all" })).await;
    assert_eq!(code(&early), "UNAUTHENTICATED", "no password yet");
    let accept = "mutation($t: String!, $p: String!) { acceptInvitation(input: {token: $t, password: $p}) { token } }";
    let accepted = app.gql_as(None, accept, json!({ "t": invitation, "p": "bo's own password" })).await;
    let session = accepted["data"]["acceptInvitation"]["token"].as_str().expect("signed in").to_string();
    let me = app.gql_as(Some(&session), "{ me { id role } }", json!({})).await;
    assert_eq!(me["data"]["me"]["id"], created["createAgent"]["id"]);
    assert_eq!(me["data"]["me"]["role"], "AGENT");
    let twice = app.gql_as(None, accept, json!({ "t": invitation, "p": "another password" })).await;
    assert_eq!(code(&twice), "UNAUTHENTICATED", "an invitation is used once");
    app.login("bo@acme.test", "bo's own password").await;
    let duplicate = app
        .gql("mutation { createAgent(input: {email: \"BO@acme.test\", name: \"Bo\", role: AGENT}) { id } }", json!({}))
        .await;
    assert_eq!(code(&duplicate), "CONFLICT");
}

#[tokio::test]
async fn an_agent_sees_and_acts_only_in_inboxes_they_belong_to_from_the_moment_they_join() {
    let app = TestApp::spawn().await;
    let support = app.create_inbox("Support").await;
    let sales = app.create_inbox("Sales").await;
    let in_support =
        app.receive(&support, "c1", "m1", "help").await["conversation"]["id"].as_str().unwrap().to_string();
    let in_sales = app.receive(&sales, "c2", "m2", "price?").await["conversation"]["id"].as_str().unwrap().to_string();
    let (agent_id, agent) = app.agent("bo@acme.test", "AGENT").await;
    let member = "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }";
    app.ok(member, json!({ "i": support, "u": agent_id })).await;

    let list = "{ conversations { edges { node { id } } } inboxes { id } }";
    let seen = app.gql_as(Some(&agent), list, json!({})).await;
    assert_eq!(seen["data"]["conversations"]["edges"], json!([{ "node": { "id": in_support } }]));
    assert_eq!(seen["data"]["inboxes"], json!([{ "id": support }]));
    let read = "query($c: ID!) { conversation(id: $c) { id } }";
    assert_eq!(code(&app.gql_as(Some(&agent), read, json!({ "c": in_sales })).await), "FORBIDDEN");
    let reply = "mutation($c: ID!) { sendMessage(input: {conversationId: $c, content: \"hi\"}) { id } }";
    assert!(app.gql_as(Some(&agent), reply, json!({ "c": in_support })).await.get("errors").is_none());
    assert_eq!(code(&app.gql_as(Some(&agent), reply, json!({ "c": in_sales })).await), "FORBIDDEN");
    let admin_only = app
        .gql_as(Some(&agent), "mutation { createInbox(input: {name: \"x\", channel: API}) { id } }", json!({}))
        .await;
    assert_eq!(code(&admin_only), "FORBIDDEN");

    let leave = "mutation($i: ID!, $u: ID!) { removeInboxMember(input: {inboxId: $i, userId: $u}) { id } }";
    app.ok(leave, json!({ "i": support, "u": agent_id })).await;
    assert_eq!(code(&app.gql_as(Some(&agent), reply, json!({ "c": in_support })).await), "FORBIDDEN", "at once");
    let after = app.gql_as(Some(&agent), list, json!({})).await;
    assert_eq!(after["data"]["conversations"]["edges"], json!([]));
}

#[tokio::test]
async fn a_custom_role_limits_an_agent_to_unassigned_and_own_conversations() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let role = app
        .ok(
            "mutation { createCustomRole(input: {name: \"Triage\", permissions: [CONVERSATION_UNASSIGNED_MANAGE]}) { id permissions } }",
            json!({}),
        )
        .await;
    let role_id = role["createCustomRole"]["id"].as_str().unwrap().to_string();
    let (agent_id, agent) = app.agent("tri@acme.test", "AGENT").await;
    app.ok(
        "mutation($u: ID!, $r: ID!) { setAgentRole(input: {userId: $u, role: AGENT, customRoleId: $r}) { id } }",
        json!({ "u": agent_id, "r": role_id }),
    )
    .await;
    app.ok(
        "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
        json!({ "i": inbox, "u": agent_id }),
    )
    .await;
    let open = app.receive(&inbox, "c1", "m1", "new").await["conversation"]["id"].as_str().unwrap().to_string();
    let taken = app.receive(&inbox, "c2", "m2", "taken").await["conversation"]["id"].as_str().unwrap().to_string();
    app.ok(
        "mutation($c: ID!, $u: ID!) { assignConversation(input: {conversationId: $c, assigneeId: $u}) { id } }",
        json!({ "c": taken, "u": app.user_id.to_string() }),
    )
    .await;
    let seen = app.gql_as(Some(&agent), "{ conversations { edges { node { id } } } }", json!({})).await;
    assert_eq!(seen["data"]["conversations"]["edges"], json!([{ "node": { "id": open } }]));
    let read = "query($c: ID!) { conversation(id: $c) { id } }";
    assert_eq!(code(&app.gql_as(Some(&agent), read, json!({ "c": taken })).await), "FORBIDDEN");
    let contacts = app.gql_as(Some(&agent), "{ contacts { edges { cursor } } }", json!({})).await;
    assert_eq!(code(&contacts), "FORBIDDEN", "no contact_manage permission");

    // Whatever operation reaches an object, the object is authorized for the caller.
    let details = "{ conversations { edges { node { id contact { name email phone } } } } }";
    let answer = app.gql_as(Some(&agent), details, json!({})).await;
    assert_eq!(code(&answer), "FORBIDDEN", "no contact details through a conversation: {answer}");
    assert!(!answer.to_string().contains("@customer.test"), "{answer}");
    let events = app.event_count().await;
    let through_delivery = "mutation($input: ReceiveMessageInput!) { receiveMessage(input: $input) { id \
        conversation { id messages { edges { node { content private } } } contact { email } } } }";
    let answer = app.gql_as(Some(&agent), through_delivery, receive_variables(&inbox, "c2", "fake", "fake")).await;
    assert_eq!(code(&answer), "FORBIDDEN", "{answer}");
    assert!(!answer.to_string().contains("taken"), "nothing of the conversation shows: {answer}");
    assert_eq!(app.event_count().await, events, "and no message was added");
    let through_message =
        "query($c: ID!) { conversation(id: $c) { messages { edges { node { conversation { id status } } } } } }";
    let own = app.gql_as(Some(&agent), through_message, json!({ "c": open })).await;
    assert!(own.get("errors").is_none(), "their own conversation, reached through its messages: {own}");
}

#[tokio::test]
async fn a_user_of_two_accounts_picks_one_by_header_and_cannot_name_a_foreign_one() {
    let app = TestApp::spawn().await;
    let second = app
        .server
        .state
        .commands
        .bootstrap("Second Co", "admin@acme.test", "correct horse battery", None)
        .await
        .expect("same user, second account");
    let other = app.other_account().await;
    app.projected().await;
    let session = app.login("admin@acme.test", "correct horse battery").await;
    let me = "{ me { id } inboxes { id } }";
    let client = reqwest::Client::new();
    let address = &app.server.address;
    let first_account = gql_with(&client, address, Some(&session), &[], me, json!({})).await;
    assert_eq!(first_account["data"]["me"]["id"], app.user_id.to_string());
    let in_second =
        gql_with(&client, address, Some(&session), &[("x-account-id", &second.account_id.to_string())], me, json!({}))
            .await;
    assert_eq!(in_second["data"]["me"]["id"], app.user_id.to_string(), "{in_second}");
    let foreign =
        gql_with(&client, address, Some(&session), &[("x-account-id", &other.account_id.to_string())], me, json!({}))
            .await;
    assert_eq!(code(&foreign), "FORBIDDEN");
    let pinned = gql_with(
        &client,
        address,
        Some(&app.token),
        &[("x-account-id", &second.account_id.to_string())],
        me,
        json!({}),
    )
    .await;
    assert_eq!(code(&pinned), "FORBIDDEN", "an API token acts only in its own account");
    let garbage = gql_with(&client, address, Some(&session), &[("x-account-id", "acme")], me, json!({})).await;
    assert_eq!(code(&garbage), "BAD_USER_INPUT");
}

#[tokio::test]
async fn conversation_history_verifies_intact_until_an_event_is_altered_behind_the_stores_back() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let conversation =
        app.receive(&inbox, "c", "m1", "hello").await["conversation"]["id"].as_str().unwrap().to_string();
    app.receive(&inbox, "c", "m2", "anyone?").await;
    let verify = "query($c: ID!) { verifyConversationHistory(id: $c) { intact events firstBrokenSequence } }";
    let intact = app.ok(verify, json!({ "c": conversation })).await;
    assert_eq!(intact["verifyConversationHistory"]["intact"], true, "{intact}");
    assert!(intact["verifyConversationHistory"]["events"].as_i64().unwrap() >= 2);

    // A superuser edit that bypasses the immutability trigger, as an attacker with
    // database access would.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
    sqlx::query(
        "UPDATE events SET metadata = metadata || '{\"actor\": \"user:forged\"}' \
         WHERE aggregate_type = 'conversation' AND aggregate_id = $1 AND sequence = 2",
    )
    .bind(&conversation)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let broken = app.ok(verify, json!({ "c": conversation })).await;
    assert_eq!(broken["verifyConversationHistory"]["intact"], false);
    assert_eq!(broken["verifyConversationHistory"]["firstBrokenSequence"], 2);
}

#[tokio::test]
async fn the_audit_log_lists_administrative_changes_with_their_actor_for_administrators_only() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let (agent_id, _) = app.agent("bo@acme.test", "AGENT").await;
    app.ok(
        "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
        json!({ "i": inbox, "u": agent_id }),
    )
    .await;
    app.ok(
        "mutation($u: ID!) { setAgentRole(input: {userId: $u, role: ADMINISTRATOR}) { id } }",
        json!({ "u": agent_id }),
    )
    .await;
    let renamed = app
        .ok(
            "mutation($i: ID!) { updateInbox(input: {inboxId: $i, name: \"Help desk\"}) { name } }",
            json!({ "i": inbox }),
        )
        .await;
    assert_eq!(renamed["updateInbox"]["name"], "Help desk");
    app.receive(&inbox, "c", "m", "not an administrative change").await;
    app.projected().await;
    let log = app.ok("{ auditLog(first: 100) { edges { node { eventType actor } } } }", json!({})).await;
    let events: Vec<(String, String)> = log["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["node"]["eventType"].as_str().unwrap().into(), e["node"]["actor"].as_str().unwrap().into()))
        .collect();
    let admin = format!("user:{}", app.user_id);
    for expected in ["InboxCreated", "MemberAdded", "InboxMemberAdded", "MemberRoleChanged", "InboxRenamed"] {
        assert!(events.contains(&(expected.to_string(), admin.clone())), "{expected} by {admin} in {events:?}");
    }
    assert!(events.iter().any(|(t, a)| t == "SignedIn" && a == &format!("user:{agent_id}")));
    assert!(events.iter().all(|(t, _)| t != "MessageReceived" && t != "ConversationOpened"), "{events:?}");
    let by_agent = app
        .ok(
            "query($u: ID!) { auditLog(filter: {actorId: $u}) { edges { node { eventType actor } } } }",
            json!({ "u": agent_id }),
        )
        .await;
    let agent_actor = format!("user:{agent_id}");
    let agent_events = by_agent["auditLog"]["edges"].as_array().unwrap();
    assert!(!agent_events.is_empty() && agent_events.iter().all(|e| e["node"]["actor"] == agent_actor.as_str()));
    let roles = app
        .ok("{ auditLog(filter: {eventTypes: [\"MemberRoleChanged\"]}) { edges { node { eventType } } } }", json!({}))
        .await;
    assert_eq!(roles["auditLog"]["edges"], json!([{ "node": { "eventType": "MemberRoleChanged" } }]));
    let (_, plain) = app.agent("cy@acme.test", "AGENT").await;
    assert_eq!(code(&app.gql_as(Some(&plain), "{ auditLog { edges { cursor } } }", json!({})).await), "FORBIDDEN");
}

#[tokio::test]
async fn oversized_requests_are_refused_as_payload_too_large() {
    let app = TestApp::spawn().await;
    for size in [2 * 1024 * 1024, 10 * 1024 * 1024] {
        let body = json!({ "query": "{ me { id } }", "variables": { "pad": "x".repeat(size) } });
        let answer = app
            .client
            .post(format!("{}/graphql", app.server.address))
            .bearer_auth(&app.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 413);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(code(&body), "PAYLOAD_TOO_LARGE");
    }
}

/// Polls `check` on the answer of `query` at `address` until it holds, for at most 5 s:
/// another process learns of the change by NOTIFY, a few milliseconds later.
async fn eventually(app: &TestApp, address: &str, token: &str, query: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = tests::gql_at(&app.client, address, Some(token), query, json!({})).await;
        if check(&answer) || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_revocation_and_an_erasure_in_one_server_take_effect_in_another() {
    let app = TestApp::spawn().await;
    let second = tests::TestServer::start(&app.database_url).await;
    let created = app.ok("mutation { createApiToken(input: {name: \"sync\"}) { id token } }", json!({})).await;
    let (id, token) =
        (created["createApiToken"]["id"].as_str().unwrap(), created["createApiToken"]["token"].as_str().unwrap());
    // The second server resolves (and caches) the token…
    let me = tests::gql_at(&app.client, &second.address, Some(token), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["id"], app.user_id.to_string());
    // …the first revokes it…
    app.ok("mutation($id: ID!) { revokeApiToken(input: {id: $id}) { revoked } }", json!({ "id": id })).await;
    // …and the second refuses it.
    let refused =
        eventually(&app, &second.address, token, ME, |a| a["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED")
            .await;
    assert_eq!(code(&refused), "UNAUTHENTICATED", "{refused}");

    let inbox = app.create_inbox("Support").await;
    let conversation = app.receive(&inbox, "ana", "m1", "my address is Rua Azul 12").await["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let history = format!("{{ conversationHistory(id: \"{conversation}\") {{ payload }} }}");
    let opened = tests::gql_at(&app.client, &second.address, Some(&app.token), &history, json!({})).await;
    assert!(opened.to_string().contains("Rua Azul 12"), "the second server opens (and caches) the key: {opened}");
    app.projected().await;
    let contact: String =
        sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts").fetch_one(&app.pool).await.unwrap();
    app.ok(
        "mutation($k: ID!) { eraseContact(input: {contactId: $k, reason: \"request\"}) { erased } }",
        json!({ "k": contact }),
    )
    .await;
    let erased =
        eventually(&app, &second.address, &app.token, &history, |a| !a.to_string().contains("Rua Azul 12")).await;
    assert!(!erased.to_string().contains("Rua Azul 12"), "the second server forgot the key: {erased}");
    second.stop().await;
}

/// Two servers sharing the test Redis, trusting `X-Forwarded-For`: each test gives
/// its attempts an address of its own, since Redis's counters outlive a test's
/// database and other tests share them.
async fn servers_sharing_redis() -> (tests::TestServer, tests::TestServer, String) {
    let redis = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL (scripts/test.sh finds or starts a Redis)");
    let database_url = tests::create_database().await;
    let start = || {
        let mut config = tests::test_config(&database_url);
        config.redis_url = Some(redis.clone());
        config.trust_forwarded_for = true;
        tests::TestServer::start_with(config)
    };
    let id = uuid::Uuid::now_v7().as_u128();
    let from = format!("10.{}.{}.{}", (id >> 16) as u8, (id >> 8) as u8, id as u8);
    (start().await, start().await, from)
}

async fn login_from(client: &reqwest::Client, address: &str, from: &str, email: &str, password: &str) -> Value {
    let headers = [("x-forwarded-for", from)];
    tests::gql_with(client, address, None, &headers, LOGIN, json!({ "e": email, "p": password })).await
}

#[tokio::test]
async fn with_redis_the_login_lock_is_shared_by_every_server() {
    let (first, second, from) = servers_sharing_redis().await;
    let email = format!("lock-{}@acme.test", uuid::Uuid::now_v7());
    first.state.commands.bootstrap("Locked Co", &email, "the right password", None).await.unwrap();
    let client = reqwest::Client::new();
    for n in 1..=10 {
        let address = if n % 2 == 0 { &first.address } else { &second.address };
        let answer = login_from(&client, address, &from, &email, "wrong password").await;
        assert_eq!(code(&answer), "UNAUTHENTICATED", "attempt {n}");
    }
    for server in [&first, &second] {
        assert_eq!(
            code(&login_from(&client, &server.address, &from, &email, "the right password").await),
            "RATE_LIMITED"
        );
    }
    // The counters are kept under keyed hashes: no e-mail or address in Redis.
    let redis = redis::Client::open(std::env::var("TEST_REDIS_URL").unwrap()).unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("ratelimit:login*").query_async(&mut redis).await.unwrap();
    assert!(!keys.is_empty(), "the login counters are in Redis");
    assert!(keys.iter().all(|k| !k.contains(&email) && !k.contains(&from) && !k.contains('@')), "{keys:?}");
    first.stop().await;
    second.stop().await;
}

/// Forty wrong passwords at once through two servers sharing Redis: each attempt is
/// counted before its password is checked, so at most ten are checked, and a right
/// password sent after them is refused too.
#[tokio::test]
async fn parallel_wrong_passwords_cannot_outrun_the_login_lock() {
    let (first, second, from) = servers_sharing_redis().await;
    let email = format!("burst-{}@acme.test", uuid::Uuid::now_v7());
    first.state.commands.bootstrap("Burst Co", &email, "the right password", None).await.unwrap();
    let client = reqwest::Client::new();
    let mut attempts = tokio::task::JoinSet::new();
    for n in 0..40 {
        let address = if n % 2 == 0 { first.address.clone() } else { second.address.clone() };
        let (client, email, from) = (client.clone(), email.clone(), from.clone());
        attempts.spawn(async move { login_from(&client, &address, &from, &email, "wrong password").await });
    }
    let mut codes = std::collections::BTreeMap::new();
    while let Some(answer) = attempts.join_next().await {
        *codes.entry(code(&answer.unwrap()).to_string()).or_insert(0) += 1;
    }
    // An attempt refused while others were in flight is counted for a moment too, so
    // fewer than ten may be checked; never more.
    let checked = codes.get("UNAUTHENTICATED").copied().unwrap_or(0);
    assert!((1..=10).contains(&checked), "at most ten passwords were checked: {codes:?}");
    assert_eq!(codes.get("RATE_LIMITED").copied().unwrap_or(0), 40 - checked, "{codes:?}");
    for _ in checked..10 {
        assert_eq!(
            code(&login_from(&client, &first.address, &from, &email, "wrong password").await),
            "UNAUTHENTICATED"
        );
    }
    assert_eq!(code(&login_from(&client, &first.address, &from, &email, "the right password").await), "RATE_LIMITED");
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_removed_agent_is_refused_and_token_creation_is_rate_limited() {
    let app = TestApp::spawn().await;
    let (agent_id, agent) = app.agent("bo@acme.test", "AGENT").await;
    assert_eq!(app.gql_as(Some(&agent), ME, json!({})).await["data"]["me"]["id"], agent_id.as_str());
    let removed =
        app.ok("mutation($u: ID!) { removeAgent(input: {userId: $u}) { removed } }", json!({ "u": agent_id })).await;
    assert_eq!(removed["removeAgent"]["removed"], true);
    assert_eq!(code(&app.gql_as(Some(&agent), ME, json!({})).await), "UNAUTHENTICATED", "refused at once");
    let last_admin = app
        .gql(
            "mutation($u: ID!) { removeAgent(input: {userId: $u}) { removed } }",
            json!({ "u": app.user_id.to_string() }),
        )
        .await;
    assert_eq!(code(&last_admin), "BAD_USER_INPUT", "the last administrator stays");

    let create = "mutation { createApiToken(input: {name: \"script\"}) { id } }";
    for n in 1..=20 {
        let answer = app.gql(create, json!({})).await;
        assert!(answer.get("errors").is_none(), "token {n}: {answer}");
    }
    assert_eq!(code(&app.gql(create, json!({})).await), "RATE_LIMITED", "the 21st token in an hour");
}

const CREATE_AGENT: &str = "mutation($e: String!, $p: String) { createAgent(input: {email: $e, name: \"Someone\", \
    role: ADMINISTRATOR, password: $p}) { id invitationToken } }";
const ACCEPT: &str =
    "mutation($t: String!, $p: String!) { acceptInvitation(input: {token: $t, password: $p}) { token } }";

/// Another account's administrator cannot pull a user into their account: the user
/// joins only by accepting with their own password, and their default login stays the
/// account they joined first.
#[tokio::test]
async fn joining_a_second_account_needs_the_users_own_acceptance() {
    let app = TestApp::spawn().await;
    let other = app.other_account().await;
    let invited = gql_with(
        &app.client,
        &app.server.address,
        Some(&other.token),
        &[],
        CREATE_AGENT,
        json!({ "e": "admin@acme.test", "p": "a password they chose" }),
    )
    .await;
    let token = invited["data"]["createAgent"]["invitationToken"].as_str().expect("an invitation").to_string();
    app.projected().await;

    let session = app.login("admin@acme.test", "correct horse battery").await;
    let header = [("x-account-id", other.account_id.to_string())];
    let header: Vec<(&str, &str)> = header.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let there = gql_with(&app.client, &app.server.address, Some(&session), &header, ME, json!({})).await;
    assert_eq!(code(&there), "FORBIDDEN", "not a member before accepting: {there}");
    let listed =
        gql_with(&app.client, &app.server.address, Some(&other.token), &[], "{ agents { email } }", json!({})).await;
    assert!(!listed.to_string().contains("admin@acme.test"), "{listed}");

    let wrong = app.gql_as(None, ACCEPT, json!({ "t": token, "p": "a password they chose" })).await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED", "the administrator's password is not theirs: {wrong}");
    let accepted = app.gql_as(None, ACCEPT, json!({ "t": token, "p": "correct horse battery" })).await;
    assert!(accepted.get("errors").is_none(), "{accepted}");
    app.projected().await;
    let there = gql_with(&app.client, &app.server.address, Some(&session), &header, ME, json!({})).await;
    assert_eq!(there["data"]["me"]["id"], app.user_id.to_string(), "a member once accepted: {there}");

    let default = app.login("admin@acme.test", "correct horse battery").await;
    let agents = app.gql_as(Some(&default), "{ agents { email } }", json!({})).await;
    let own = app.gql("{ agents { email } }", json!({})).await;
    assert_eq!(agents["data"], own["data"], "the default account is the one joined first");
}

/// Whether an e-mail already has a login anywhere is not the business of an
/// administrator: `createAgent` answers alike.
#[tokio::test]
async fn creating_an_agent_answers_alike_whether_or_not_the_e_mail_is_known() {
    let app = TestApp::spawn().await;
    let other = app.other_account().await;
    let shape = |answer: &Value| {
        let created = &answer["data"]["createAgent"];
        assert!(answer.get("errors").is_none(), "{answer}");
        (created["id"].is_string(), created["invitationToken"].as_str().map(|t| t.len()))
    };
    let mut shapes = Vec::new();
    for (email, password) in [
        ("new-one@else.test", json!(null)),
        ("new-two@else.test", json!("a long new password")),
        ("admin@acme.test", json!(null)),
        ("admin@acme.test", json!("a long new password")),
    ] {
        let answer = gql_with(
            &app.client,
            &app.server.address,
            Some(&other.token),
            &[],
            CREATE_AGENT,
            json!({ "e": email, "p": password }),
        )
        .await;
        shapes.push(shape(&answer));
    }
    assert!(shapes.iter().all(|s| *s == shapes[0]), "{shapes:?}");
    // A new user with a password signs in at once, as before.
    let signed_in = app.gql_as(None, LOGIN, json!({ "e": "new-two@else.test", "p": "a long new password" })).await;
    assert!(signed_in["data"]["login"]["token"].is_string(), "{signed_in}");
}
