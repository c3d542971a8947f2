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
            "mutation($k: ID!) { eraseContact(input: {contactId: $k, reason: \"x\"}) }",
            json!({ "k": contact }),
        )
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let erased = app
        .ok(
            "mutation($k: ID!) { eraseContact(input: {contactId: $k, reason: \"LGPD request 7\"}) }",
            json!({ "k": contact }),
        )
        .await;
    assert_eq!(erased["eraseContact"], true);
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
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM contact_keys").fetch_one(&app.pool).await.unwrap();
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
