//! The right to be forgotten.

use serde_json::json;
use tests::TestApp;

#[tokio::test]
async fn an_erased_contact_reads_as_erased_everywhere_while_the_conversation_and_its_chain_remain() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let received = app.receive(&inbox, "maria", "m1", "my card ends 4242").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    app.ok(
        "mutation($c: ID!) { sendMessage(input: {conversationId: $c, content: \"thanks Maria\"}) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    app.ok(
        "mutation($c: ID!) { setConversationCustomAttributes(input: {conversationId: $c, attributes: {cpf: \"123.456.789-09\"}}) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    app.projected().await;
    let contact: String =
        sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts").fetch_one(&app.pool).await.unwrap();

    let refused = app
        .gql_as(
            Some(&app.agent("bo@acme.test", "AGENT").await.1),
            "mutation($k: ID!) { eraseContact(input: {contactId: $k, reason: \"x\"}) { erased } }",
            json!({ "k": contact }),
        )
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let erased = app
        .ok(
            "mutation($k: ID!) { eraseContact(input: {contactId: $k, reason: \"LGPD request 7\"}) { erased } }",
            json!({ "k": contact }),
        )
        .await;
    assert_eq!(erased["eraseContact"]["erased"], true);
    app.projected().await;

    let view = app
        .ok(
            "query($c: ID!, $k: ID!) { contact(id: $k) { name email } conversation(id: $c) { status customAttributes \
             messages { edges { node { content contentErased } } } } conversationHistory(id: $c) { payload } events { edges { node { payload } } } }",
            json!({ "c": conversation, "k": contact }),
        )
        .await;
    let text = view.to_string();
    // Phrases random ids and ciphertext cannot contain by chance.
    for secret in ["card ends 4242", "Maria", "maria@customer.test", "Contact maria", "123.456.789-09"] {
        assert!(!text.contains(secret), "{secret} still shows: {text}");
    }
    assert_eq!(view["contact"], json!({ "name": null, "email": null }));
    assert_eq!(view["conversation"]["status"], "OPEN", "the conversation remains");
    let contents: Vec<_> = view["conversation"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["content"].clone())
        .collect();
    assert!(contents.len() >= 2 && contents.iter().all(|c| c.is_null()), "{contents:?}");
    let flags = view["conversation"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["node"]["contentErased"] == true);
    assert!(flags, "every message reads as erased");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM data_keys WHERE subject_id = $1::uuid")
        .bind(&contact)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let identities: i64 =
        sqlx::query_scalar("SELECT count(*) FROM channel_identities").fetch_one(&app.pool).await.unwrap();
    assert_eq!((keys, identities), (0, 0));

    let verify =
        app.ok("query($c: ID!) { verifyConversationHistory(id: $c) { intact } }", json!({ "c": conversation })).await;
    assert_eq!(verify["verifyConversationHistory"]["intact"], true);
    let audit = app.ok("{ auditLog(first: 100) { edges { node { eventType actor } } } }", json!({})).await;
    assert!(audit.to_string().contains("ContactErased"), "{audit}");

    let models = app.read_models().await;
    let export = tests::inboxd(&app.database_url).arg("export").output().await.unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let exported = String::from_utf8(export.stdout).unwrap();
    assert!(exported.contains("ContactErased"), "the export has the erasure itself");
    for secret in ["card ends 4242", "Maria", "maria@customer.test", "thanks Maria", "123.456.789-09"] {
        assert!(!exported.contains(secret), "{secret} is in the export");
        assert!(!format!("{models:?}").contains(secret), "{secret} is in a read model");
    }
    let counts = app.ok("{ conversationCounts { all } }", json!({})).await;
    assert_eq!(counts["conversationCounts"]["all"], 1, "the conversation still counts");
    let rebuilt = tests::inboxd(&app.database_url).args(["rebuild", "--all"]).output().await.unwrap();
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    app.projected().await;
    assert_eq!(app.read_models().await, models, "a replay shows the erasure too");

    let reply = app
        .gql(
            "mutation($c: ID!) { sendMessage(input: {conversationId: $c, content: \"still there?\"}) { id } }",
            json!({ "c": conversation }),
        )
        .await;
    assert_eq!(reply["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{reply}");
    let again = app.receive(&inbox, "maria", "m2", "hello again").await;
    assert_ne!(again["conversation"]["id"], conversation, "a new message starts over with a new contact");
}

const ANA: &str = "Ana Lima";
const ANA_EMAIL: &str = "ana.lima@acme.test";
const ANA_PASSWORD: &str = "ana's long password";

/// Creates Ana, an administrator (so she can be assigned anywhere), who then works
/// on a conversation: assigned to her, then she resolves it and mutes it.
async fn ana_works_a_conversation(app: &TestApp) -> (String, String, String) {
    let created = app
        .ok(
            "mutation($e: String!, $n: String!, $p: String!) { createAgent(input: {email: $e, name: $n, \
             role: ADMINISTRATOR, password: $p}) { id } }",
            json!({ "e": ANA_EMAIL, "n": ANA, "p": ANA_PASSWORD }),
        )
        .await;
    let ana = created["createAgent"]["id"].as_str().unwrap().to_string();
    let token = app.login(ANA_EMAIL, ANA_PASSWORD).await;
    let inbox = app.create_inbox("Support").await;
    let received = app.receive(&inbox, "maria", "m1", "hello").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    app.ok(
        "mutation($c: ID!, $a: ID!) { assignConversation(input: {conversationId: $c, assigneeId: $a}) { id } }",
        json!({ "c": conversation, "a": ana }),
    )
    .await;
    for mutation in [
        "mutation($c: ID!) { setConversationStatus(input: {conversationId: $c, status: RESOLVED}) { id } }",
        "mutation($c: ID!) { setConversationMuted(input: {conversationId: $c, muted: true}) { id } }",
    ] {
        let answer = app.gql_as(Some(&token), mutation, json!({ "c": conversation })).await;
        assert!(answer["errors"].is_null(), "{answer}");
    }
    app.projected().await;
    (ana, token, conversation)
}

async fn activity_lines(app: &TestApp, conversation: &str) -> Vec<String> {
    let view = app
        .ok(
            "query($c: ID!) { conversation(id: $c) { messages { edges { node { content messageType } } } } }",
            json!({ "c": conversation }),
        )
        .await;
    view["conversation"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node"]["messageType"] == "ACTIVITY")
        .map(|e| e["node"]["content"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn staff_names_and_e_mails_are_sealed_in_the_log_and_an_erased_former_agent_reads_as_a_former_agent() {
    let app = TestApp::spawn().await;
    let (ana, token, conversation) = ana_works_a_conversation(&app).await;
    let logged: Vec<String> =
        sqlx::query_scalar("SELECT payload::text || metadata::text FROM events").fetch_all(&app.pool).await.unwrap();
    for row in &logged {
        assert!(!row.contains(ANA) && !row.contains(ANA_EMAIL), "a staff name or e-mail in clear in the log: {row}");
    }
    let lines = activity_lines(&app, &conversation).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("Assigned to Ana Lima by "), "{lines:?}");
    assert_eq!(lines[1..], ["Conversation was marked resolved by Ana Lima", "Ana Lima muted the conversation"]);

    let erase = "mutation($u: ID!) { eraseAgent(input: {userId: $u, reason: \"LGPD request 9\"}) { erased } }";
    let still_member = app.gql(erase, json!({ "u": ana })).await;
    assert_eq!(still_member["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{still_member}");
    let (_, agent) = app.agent("bo@acme.test", "AGENT").await;
    let refused = app.gql_as(Some(&agent), erase, json!({ "u": ana })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    let unknown = app.gql(erase, json!({ "u": uuid::Uuid::now_v7() })).await;
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "NOT_FOUND", "{unknown}");

    app.ok("mutation($u: ID!) { removeAgent(input: {userId: $u}) { removed } }", json!({ "u": ana })).await;
    app.projected().await;
    let removed = activity_lines(&app, &conversation).await;
    assert_eq!(removed, lines, "a removed agent's lines still name them until they are erased");
    assert_eq!(app.ok(erase, json!({ "u": ana })).await["eraseAgent"]["erased"], true);
    assert_eq!(app.ok(erase, json!({ "u": ana })).await["eraseAgent"]["erased"], true, "erasing again changes nothing");
    app.projected().await;

    let lines = activity_lines(&app, &conversation).await;
    assert!(lines[0].starts_with("Assigned to a former agent by "), "{lines:?}");
    assert_eq!(
        lines[1..],
        ["Conversation was marked resolved by a former agent", "a former agent muted the conversation"]
    );
    let view = app
        .ok(
            "{ agents { name email } events(first: 500) { edges { node { payload } } } \
             auditLog(first: 500) { edges { node { eventType payload } } } }",
            json!({}),
        )
        .await;
    let models = app.read_models().await;
    let export = tests::inboxd(&app.database_url).arg("export").output().await.unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let exported = String::from_utf8(export.stdout).unwrap();
    for secret in [ANA, ANA_EMAIL] {
        assert!(!view.to_string().contains(secret), "{secret} still shows: {view}");
        assert!(!format!("{models:?}").contains(secret), "{secret} is in a read model");
        assert!(!exported.contains(secret), "{secret} is in the export");
    }
    assert!(view.to_string().contains("MemberErased"), "the erasure is in the audit trail: {view}");

    // No account has her any more: her login went too.
    let signed_out = app.gql_as(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(signed_out["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{signed_out}");
    let login = app
        .gql_as(
            None,
            "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { token } }",
            json!({ "e": ANA_EMAIL, "p": ANA_PASSWORD }),
        )
        .await;
    assert_eq!(login["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{login}");
    let keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM data_keys WHERE subject_id IN (SELECT (payload -> 'MemberAdded' ->> 'subject')::uuid \
         FROM events WHERE payload -> 'MemberAdded' ->> 'user_id' = $1 UNION SELECT (payload -> 'UserRegistered' \
         ->> 'subject')::uuid FROM events WHERE aggregate_id = $1)",
    )
    .bind(&ana)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(keys, 0, "her data keys are shredded");

    let rebuilt = tests::inboxd(&app.database_url).args(["rebuild", "--all"]).output().await.unwrap();
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    app.projected().await;
    assert_eq!(app.read_models().await, models, "a replay shows the erasure too");
    let verify =
        app.ok("query($c: ID!) { verifyConversationHistory(id: $c) { intact } }", json!({ "c": conversation })).await;
    assert_eq!(verify["verifyConversationHistory"]["intact"], true, "the chain is as it was");

    // The address is free again: it is someone new.
    let again = app
        .ok(
            "mutation($e: String!) { createAgent(input: {email: $e, name: \"Ana L.\", role: AGENT, \
             password: \"a new long password\"}) { id } }",
            json!({ "e": ANA_EMAIL }),
        )
        .await;
    assert_ne!(again["createAgent"]["id"], ana);
}

#[tokio::test]
async fn erasing_a_former_agent_in_one_account_leaves_their_login_and_their_other_account_alone() {
    let app = TestApp::spawn().await;
    let (ana, _, conversation) = ana_works_a_conversation(&app).await;
    let other = app
        .server
        .state
        .commands
        .bootstrap("Other Co", ANA_EMAIL, ANA_PASSWORD, None)
        .await
        .expect("Ana runs another account with the same login");
    assert_eq!(other.user_id.to_string(), ana);
    app.ok("mutation($u: ID!) { removeAgent(input: {userId: $u}) { removed } }", json!({ "u": ana })).await;
    app.ok("mutation($u: ID!) { eraseAgent(input: {userId: $u, reason: \"left\"}) { erased } }", json!({ "u": ana }))
        .await;
    app.projected().await;

    let lines = activity_lines(&app, &conversation).await;
    assert_eq!(lines[2], "a former agent muted the conversation");
    let invitations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM invitations WHERE user_id = $1::uuid AND account_id = $2")
            .bind(&ana)
            .bind(app.account_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(invitations, 0, "the account's invitations to her (which name her) are gone");
    let token = app.login(ANA_EMAIL, ANA_PASSWORD).await;
    let there = app.gql_as(Some(&token), "{ me { id } agents { name email } }", json!({})).await;
    assert_eq!(there["data"]["me"]["id"], ana, "{there}");
    assert_eq!(there["data"]["agents"][0]["email"], ANA_EMAIL, "the other account still knows her: {there}");
}
