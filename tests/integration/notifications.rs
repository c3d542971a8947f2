//! Notifications: each type reaches its recipients and never the one who acted;
//! settings decide what is listed and sent; read, unread, all read and snooze move the
//! unread count; nobody reaches another's; the read model is a replay; an e-mail and a
//! web push each arrive once, the push verified by independent implementations.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tests::receiver::{Received, Receiver};
use tests::smtp_sink::SmtpSink;
use tests::{inboxd, TestApp};

use tests::socket::next_message;

const LIST: &str = "query($unread: Boolean) { notifications(first: 50, unreadOnly: $unread) { edges { node { \
    id type read createdAt snoozedUntil actor conversation { id } } } } unreadNotificationsCount }";
const ASSIGN: &str =
    "mutation($c: ID!, $u: ID!) { assignConversation(input: {conversationId: $c, assigneeId: $u}) { id } }";
const SEND: &str = "mutation($c: ID!, $text: String!, $private: Boolean) { \
    sendMessage(input: {conversationId: $c, content: $text, private: $private}) { id } }";
const SETTINGS: &str = "mutation($type: NotificationType!, $inApp: Boolean!, $email: Boolean!, $push: Boolean!) { \
    setNotificationSettings(input: {type: $type, inApp: $inApp, email: $email, push: $push}) { type inApp email push } }";

/// An agent of the account in `inbox`: (user id, token).
async fn member(app: &TestApp, email: &str, inbox: &str) -> (String, String) {
    let (id, token) = app.agent(email, "AGENT").await;
    app.ok(
        "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
        json!({ "i": inbox, "u": id }),
    )
    .await;
    (id, token)
}

/// `data` of a call as `token` that must succeed.
async fn ok_as(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let answer = app.gql_as(Some(token), query, variables).await;
    assert!(answer.get("errors").is_none(), "unexpected errors: {answer}");
    answer["data"].clone()
}

/// The caller's notifications (newest first) and unread count, once projected.
async fn notifications_of(app: &TestApp, token: &str) -> (Vec<Value>, i64) {
    app.projected().await;
    let data = ok_as(app, token, LIST, json!({})).await;
    let list = data["notifications"]["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()).collect();
    (list, data["unreadNotificationsCount"].as_i64().unwrap())
}

/// The types of the caller's notifications, oldest first.
async fn types_of(app: &TestApp, token: &str) -> Vec<String> {
    let (list, _) = notifications_of(app, token).await;
    list.iter().rev().map(|n| n["type"].as_str().unwrap().to_string()).collect()
}

fn mention(name: &str, user: &str) -> String {
    format!("@[{name}](user:{user})")
}

#[tokio::test]
async fn each_type_reaches_its_recipients_and_never_the_actor() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let (ana, ana_token) = member(&app, "ana@acme.test", &inbox).await;
    let (bo, bo_token) = member(&app, "bo@acme.test", &inbox).await;
    let outsider = app.other_account().await;
    // Bo wants new conversations; Ana keeps the default (off).
    ok_as(
        &app,
        &bo_token,
        SETTINGS,
        json!({ "type": "CONVERSATION_CREATED", "inApp": true, "email": false, "push": false }),
    )
    .await;

    let received = app.receive(&inbox, "c-1", "m-1", "my order is late").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    assert_eq!(types_of(&app, &bo_token).await, ["CONVERSATION_CREATED"]);
    assert_eq!(types_of(&app, &ana_token).await, Vec::<String>::new(), "off by default");
    assert_eq!(types_of(&app, &app.token).await, Vec::<String>::new(), "not a member of the inbox");

    // Assigned by the administrator: Ana is told, by whom.
    app.ok(ASSIGN, json!({ "c": conversation, "u": ana })).await;
    let (list, unread) = notifications_of(&app, &ana_token).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["type"], "CONVERSATION_ASSIGNED");
    assert_eq!(list[0]["actor"], format!("user:{}", app.user_id));
    assert_eq!(list[0]["conversation"]["id"], conversation.as_str());
    assert_eq!((list[0]["read"].clone(), unread), (json!(false), 1));
    // Bo takes it himself: nothing for him.
    ok_as(&app, &bo_token, ASSIGN, json!({ "c": conversation, "u": bo })).await;
    assert_eq!(types_of(&app, &bo_token).await, ["CONVERSATION_CREATED"], "self-assignment tells no one");

    // Ana answers (she takes part now); Bo's note mentions Ana, himself, the
    // administrator and someone of another account, and names Ana without the syntax.
    ok_as(&app, &ana_token, SEND, json!({ "c": conversation, "text": "on it", "private": false })).await;
    let note = format!(
        "{} {} {} {} and plain @Ana",
        mention("Ana", &ana),
        mention("Bo", &bo),
        mention("Admin", &app.user_id.to_string()),
        mention("Stranger", &outsider.user_id.to_string())
    );
    ok_as(&app, &bo_token, SEND, json!({ "c": conversation, "text": note, "private": true })).await;
    // A public reply mentions no one, whatever it says.
    ok_as(&app, &bo_token, SEND, json!({ "c": conversation, "text": mention("Ana", &ana), "private": false })).await;
    assert_eq!(types_of(&app, &ana_token).await, ["CONVERSATION_ASSIGNED", "MENTIONED"]);
    assert_eq!(types_of(&app, &app.token).await, ["MENTIONED"]);
    assert_eq!(types_of(&app, &bo_token).await, ["CONVERSATION_CREATED"], "his own mention of himself");
    let stranger = notifications_of(&app, &outsider.token).await;
    assert_eq!(stranger, (vec![], 0), "mentions reach only agents of the account");

    // The contact writes again: the assignee (Bo) and the participant (Ana) are told,
    // the administrator, who only was mentioned, is not.
    app.receive(&inbox, "c-1", "m-2", "any news?").await;
    assert_eq!(types_of(&app, &ana_token).await, ["CONVERSATION_ASSIGNED", "MENTIONED", "NEW_MESSAGE"]);
    assert_eq!(types_of(&app, &bo_token).await, ["CONVERSATION_CREATED", "NEW_MESSAGE"]);
    assert_eq!(types_of(&app, &app.token).await, ["MENTIONED"]);
    let (list, _) = notifications_of(&app, &ana_token).await;
    assert!(list[0]["actor"].as_str().unwrap().starts_with("contact:"), "{}", list[0]);
}

#[tokio::test]
async fn settings_decide_what_is_listed_and_the_unread_count_follows_read_unread_all_read_and_snooze() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let (ana, token) = member(&app, "ana@acme.test", &inbox).await;
    let settings = ok_as(&app, &token, "{ notificationSettings { type inApp email push } }", json!({})).await;
    assert_eq!(
        settings["notificationSettings"],
        json!([
            { "type": "CONVERSATION_CREATED", "inApp": false, "email": false, "push": false },
            { "type": "CONVERSATION_ASSIGNED", "inApp": true, "email": true, "push": true },
            { "type": "NEW_MESSAGE", "inApp": true, "email": true, "push": true },
            { "type": "MENTIONED", "inApp": true, "email": true, "push": true },
            { "type": "SLA_MISSED", "inApp": true, "email": true, "push": true },
        ])
    );
    let quiet = json!({ "type": "NEW_MESSAGE", "inApp": false, "email": true, "push": false });
    let set = ok_as(&app, &token, SETTINGS, quiet).await;
    assert_eq!(
        set["setNotificationSettings"],
        json!({ "type": "NEW_MESSAGE", "inApp": false, "email": true, "push": false })
    );

    let mut conversations = Vec::new();
    for n in 1..=3 {
        let received = app.receive(&inbox, &format!("c-{n}"), &format!("m-{n}"), "hello").await;
        let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
        app.ok(ASSIGN, json!({ "c": conversation, "u": ana })).await;
        conversations.push(conversation);
    }
    app.receive(&inbox, "c-1", "m-again", "in-app is off for new messages").await;
    let (list, unread) = notifications_of(&app, &token).await;
    assert_eq!(list.iter().map(|n| n["type"].as_str().unwrap()).collect::<Vec<_>>(), ["CONVERSATION_ASSIGNED"; 3]);
    assert_eq!(unread, 3);
    let ids: Vec<String> = list.iter().map(|n| n["id"].as_str().unwrap().to_string()).collect();

    let mark = |operation: &'static str| {
        format!("mutation($id: ID!) {{ {operation}(input: {{id: $id}}) {{ id read snoozedUntil }} }}")
    };
    let read = ok_as(&app, &token, &mark("markNotificationRead"), json!({ "id": ids[0] })).await;
    assert_eq!(read["markNotificationRead"]["read"], true);
    assert_eq!(notifications_of(&app, &token).await.1, 2);
    let unread_again = ok_as(&app, &token, &mark("markNotificationUnread"), json!({ "id": ids[0] })).await;
    assert_eq!(unread_again["markNotificationUnread"]["read"], false);
    assert_eq!(notifications_of(&app, &token).await.1, 3);
    let all = ok_as(&app, &token, "mutation { markAllNotificationsRead { unreadCount } }", json!({})).await;
    assert_eq!(all["markAllNotificationsRead"]["unreadCount"], 0);
    let only_unread = ok_as(&app, &token, LIST, json!({ "unread": true })).await;
    assert_eq!(only_unread["notifications"]["edges"], json!([]));

    ok_as(&app, &token, &mark("markNotificationUnread"), json!({ "id": ids[1] })).await;
    assert_eq!(notifications_of(&app, &token).await.1, 1);
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let snooze = "mutation($id: ID!, $until: DateTime!) { snoozeNotification(input: {id: $id, until: $until}) { \
                  id read snoozedUntil } }";
    let snoozed = ok_as(&app, &token, snooze, json!({ "id": ids[1], "until": until })).await;
    assert_eq!(snoozed["snoozeNotification"]["read"], false);
    assert!(snoozed["snoozeNotification"]["snoozedUntil"].is_string(), "{snoozed}");
    let (_, unread) = notifications_of(&app, &token).await;
    assert_eq!(unread, 0, "a snoozed notification is not counted until it wakes");
    let only_unread = ok_as(&app, &token, LIST, json!({ "unread": true })).await;
    assert_eq!(only_unread["notifications"]["edges"], json!([]));
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let refused = app.gql_as(Some(&token), snooze, json!({ "id": ids[1], "until": past })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
    // Snoozed for a moment: unread again once it passes.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(5)).to_rfc3339();
    ok_as(&app, &token, snooze, json!({ "id": ids[1], "until": soon })).await;
    assert_eq!(notifications_of(&app, &token).await.1, 0);
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(notifications_of(&app, &token).await.1, 1, "the snooze is over");

    // Pages, newest first, follow the cursor.
    let page = "query($after: String) { notifications(first: 2, after: $after) { \
                edges { cursor node { id } } pageInfo { hasNextPage } } }";
    let first = ok_as(&app, &token, page, json!({})).await["notifications"].clone();
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    let cursor = first["edges"][1]["cursor"].clone();
    let second = ok_as(&app, &token, page, json!({ "after": cursor })).await["notifications"].clone();
    assert_eq!(second["pageInfo"]["hasNextPage"], false);
    let paged: Vec<&str> = [&first, &second]
        .iter()
        .flat_map(|p| p["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap()))
        .collect();
    assert_eq!(paged, ids.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test]
async fn nobody_reaches_another_user_s_notifications_in_this_account_or_another() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let (ana, ana_token) = member(&app, "ana@acme.test", &inbox).await;
    let (_, bo_token) = member(&app, "bo@acme.test", &inbox).await;
    let outsider = app.other_account().await;
    let received = app.receive(&inbox, "c-1", "m-1", "hello").await;
    app.ok(ASSIGN, json!({ "c": received["conversation"]["id"], "u": ana })).await;
    let (list, _) = notifications_of(&app, &ana_token).await;
    let id = list[0]["id"].as_str().unwrap().to_string();

    for (who, token) in [("a colleague", bo_token.as_str()), ("another account", outsider.token.as_str())] {
        for operation in ["markNotificationRead", "markNotificationUnread"] {
            let query = format!("mutation($id: ID!) {{ {operation}(input: {{id: $id}}) {{ id }} }}");
            let answer = app.gql_as(Some(token), &query, json!({ "id": id })).await;
            assert_eq!(answer["errors"][0]["extensions"]["code"], "NOT_FOUND", "{operation} by {who}: {answer}");
        }
        let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let answer = app
            .gql_as(
                Some(token),
                "mutation($id: ID!, $u: DateTime!) { snoozeNotification(input: {id: $id, until: $u}) { id } }",
                json!({ "id": id, "u": until }),
            )
            .await;
        assert_eq!(answer["errors"][0]["extensions"]["code"], "NOT_FOUND", "snooze by {who}: {answer}");
        ok_as(&app, token, "mutation { markAllNotificationsRead { unreadCount } }", json!({})).await;
        let (theirs, _) = notifications_of(&app, token).await;
        assert!(theirs.iter().all(|n| n["id"] != id.as_str()), "{who} lists it");
    }
    let (list, unread) = notifications_of(&app, &ana_token).await;
    assert_eq!((list[0]["read"].clone(), list[0]["snoozedUntil"].clone(), unread), (json!(false), Value::Null, 1));
    let malformed = app
        .gql_as(Some(&ana_token), "mutation { markNotificationRead(input: {id: \"nope\"}) { id } }", json!({}))
        .await;
    assert_eq!(malformed["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{malformed}");
    let anonymous = app.gql_as(None, "{ unreadNotificationsCount }", json!({})).await;
    assert_eq!(anonymous["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{anonymous}");
}

#[tokio::test]
async fn the_notifications_read_model_equals_a_full_replay_erasure_included() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let (ana, ana_token) = member(&app, "ana@acme.test", &inbox).await;
    let (bo, bo_token) = member(&app, "bo@acme.test", &inbox).await;
    ok_as(
        &app,
        &bo_token,
        SETTINGS,
        json!({ "type": "CONVERSATION_CREATED", "inApp": true, "email": false, "push": false }),
    )
    .await;
    let mut conversations = Vec::new();
    for n in 1..=2 {
        let received = app.receive(&inbox, &format!("c-{n}"), &format!("m-{n}"), "hello").await;
        let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
        app.ok(ASSIGN, json!({ "c": conversation, "u": ana })).await;
        let note = format!("{} please look", mention("Bo", &bo));
        ok_as(&app, &ana_token, SEND, json!({ "c": conversation, "text": note, "private": true })).await;
        conversations.push(conversation);
    }
    let (list, _) = notifications_of(&app, &ana_token).await;
    let mark = "mutation($id: ID!) { markNotificationRead(input: {id: $id}) { id } }";
    ok_as(&app, &ana_token, mark, json!({ "id": list[0]["id"] })).await;
    ok_as(&app, &bo_token, "mutation { markAllNotificationsRead { unreadCount } }", json!({})).await;
    assert_eq!(
        types_of(&app, &bo_token).await,
        ["CONVERSATION_CREATED", "MENTIONED", "CONVERSATION_CREATED", "MENTIONED"]
    );
    // The first contact is erased: the mention in a note of theirs goes with their words.
    app.projected().await;
    let contact: String =
        sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts WHERE email = 'c-1@customer.test'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    app.ok(
        "mutation($k: ID!) { eraseContact(input: {contactId: $k, reason: \"request\"}) { erased } }",
        json!({ "k": contact }),
    )
    .await;
    assert_eq!(types_of(&app, &bo_token).await, ["CONVERSATION_CREATED", "CONVERSATION_CREATED", "MENTIONED"]);

    app.projected().await;
    let live = app.read_models().await;
    assert!(live["rm_notifications"].len() == 5, "{:?}", live["rm_notifications"]);
    let output = inboxd(&app.database_url).args(["rebuild", "notifications"]).output().await.expect("rebuild runs");
    assert!(output.status.success(), "rebuild failed: {}", String::from_utf8_lossy(&output.stderr));
    app.projected().await;
    let rebuilt = app.read_models().await;
    for (table, rows) in live.iter().filter(|(table, _)| table.starts_with("rm_notification")) {
        assert_eq!(&rebuilt[table], rows, "{table} differs after a replay");
    }
}

#[tokio::test]
async fn an_email_reaches_the_relay_once_and_only_for_those_who_want_it() {
    let sink = SmtpSink::start().await;
    let url = sink.url.clone();
    let app = TestApp::spawn_with(|config| config.smtp_url = Some(url)).await;
    let inbox = app.create_inbox("Support").await;
    let (ana, ana_token) = member(&app, "ana@acme.test", &inbox).await;
    let (bo, bo_token) = member(&app, "bo@acme.test", &inbox).await;
    ok_as(
        &app,
        &bo_token,
        SETTINGS,
        json!({ "type": "CONVERSATION_ASSIGNED", "inApp": true, "email": false, "push": true }),
    )
    .await;
    let received = app.receive(&inbox, "c-1", "m-1", "hello").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    app.ok(ASSIGN, json!({ "c": conversation, "u": ana })).await;
    let mails = sink.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.to, ["ana@acme.test"]);
    assert_eq!(mail.from, "notifications@acme.test");
    let subject = mail.header("Subject").unwrap();
    assert!(subject.starts_with("Conversation #") && subject.ends_with("was assigned to you"), "{subject}");
    let (list, _) = notifications_of(&app, &ana_token).await;
    let id = list[0]["id"].as_str().unwrap();
    assert_eq!(mail.header("Message-ID").unwrap(), format!("<notification-{id}@inboxd>"));

    // Bo, who wants no e-mail for assignments, gets none; a new message, by default, does.
    app.ok(ASSIGN, json!({ "c": conversation, "u": bo })).await;
    app.receive(&inbox, "c-1", "m-2", "my order 1234 is late").await;
    let mails = sink.wait_for(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails_now = sink.received();
    assert_eq!(mails_now.len(), 2, "once each, and none for Bo's assignment: {mails_now:?}");
    assert_eq!(mails[1].to, ["bo@acme.test"]);
    assert!(mails[1].data.contains("my order 1234 is late"), "{}", mails[1].data);
}

#[tokio::test]
async fn an_erased_contact_s_words_are_never_sent() {
    // The relay is down when the message arrives, and back after the contact is erased.
    let port = tests::free_port();
    let app = TestApp::spawn_with(|config| config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"))).await;
    let inbox = app.create_inbox("Support").await;
    let (ana, _) = member(&app, "ana@acme.test", &inbox).await;
    let received = app.receive(&inbox, "c-1", "m-1", "hello").await;
    app.ok(ASSIGN, json!({ "c": received["conversation"]["id"], "u": ana })).await;
    app.receive(&inbox, "c-1", "m-2", "my card is 4111 1111").await;
    app.projected().await;
    let contact: String =
        sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts WHERE email = 'c-1@customer.test'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    app.ok(
        "mutation($k: ID!) { eraseContact(input: {contactId: $k, reason: \"request\"}) { erased } }",
        json!({ "k": contact }),
    )
    .await;
    let sink = SmtpSink::start_on(port).await;
    let mails = sink.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 2, "the assignment and the new message: {mails:?}");
    let new_message = mails.iter().find(|m| m.header("Subject").unwrap().starts_with("New message")).unwrap();
    assert!(!new_message.data.contains("4111"), "{}", new_message.data);
}

// RFC 8291 Appendix A: the user agent's keys.
const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
const UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const UA_AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// What `tests/fakes/web_push_check.py` makes of a push request, checked as a push
/// service (the VAPID JWT, with `cryptography`) and a browser (`http_ece` decrypts).
fn checked_by_independent_implementations(request: &Received, endpoint: &str, vapid_public_key: &str) -> Value {
    let python = std::env::var("WEBHOOK_VERIFIER_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fakes/web_push_check.py");
    let input = json!({
        "authorization": request.header("authorization"),
        "crypto_key": request.header("crypto-key"),
        "encoding": request.header("content-encoding"),
        "body_b64": base64::engine::general_purpose::STANDARD.encode(&request.body),
        "endpoint": endpoint,
        "ua_private_b64url": UA_PRIVATE,
        "auth_b64url": UA_AUTH,
        "vapid_public_key": vapid_public_key,
    });
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs (scripts/test.sh sets WEBHOOK_VERIFIER_PYTHON)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("the checker did not run: {}", String::from_utf8_lossy(&output.stderr)))
}

#[tokio::test]
async fn a_web_push_reaches_the_push_service_once_signed_and_encrypted_to_the_browser() {
    let app = TestApp::spawn().await;
    let push_service = Receiver::start(&[]).await;
    let inbox = app.create_inbox("Support").await;
    let (ana, token) = member(&app, "ana@acme.test", &inbox).await;
    let register = "mutation($e: String!, $k: String!, $a: String!) { \
                    registerPushSubscription(input: {endpoint: $e, p256dh: $k, auth: $a}) { id } }";
    let bad =
        app.gql_as(Some(&token), register, json!({ "e": push_service.url, "k": UA_PUBLIC, "a": "c2hvcnQ" })).await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{bad}");
    ok_as(&app, &token, register, json!({ "e": push_service.url, "k": UA_PUBLIC, "a": UA_AUTH })).await;
    let key =
        ok_as(&app, &token, "{ vapidPublicKey }", json!({})).await["vapidPublicKey"].as_str().unwrap().to_string();

    let received = app.receive(&inbox, "c-1", "m-1", "hello").await;
    app.ok(ASSIGN, json!({ "c": received["conversation"]["id"], "u": ana })).await;
    let pushed = push_service.wait_for_accepted(1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(push_service.received().len(), 1, "pushed once");
    let request = &pushed[0];
    assert_eq!(request.header("ttl"), "86400");
    let checked = checked_by_independent_implementations(request, &push_service.url, &key);
    assert_eq!(checked["ok"], true, "{checked}");
    let payload: Value = serde_json::from_str(checked["payload"].as_str().unwrap()).unwrap();
    let (list, _) = notifications_of(&app, &token).await;
    assert_eq!(payload["id"], list[0]["id"]);
    assert_eq!(payload["type"], "conversation_assigned");
    assert_eq!(payload["conversationId"], received["conversation"]["id"]);
    // Every process signs with the same key: the master key's.
    let second = tests::TestServer::start(&app.database_url).await;
    let again = tests::gql_at(&app.client, &second.address, Some(&token), "{ vapidPublicKey }", json!({})).await;
    assert_eq!(again["data"]["vapidPublicKey"], key.as_str());
}

#[tokio::test]
async fn a_push_endpoint_aimed_inside_is_refused_as_a_webhook_url_is() {
    let app = TestApp::spawn_with(|config| config.outbound_allow_private_targets = false).await;
    let register = "mutation($e: String!, $k: String!, $a: String!) { \
                    registerPushSubscription(input: {endpoint: $e, p256dh: $k, auth: $a}) { id } }";
    for endpoint in ["http://127.0.0.1:9/push", "http://169.254.169.254/latest", "http://localhost/push"] {
        let refused = app.gql(register, json!({ "e": endpoint, "k": UA_PUBLIC, "a": UA_AUTH })).await;
        assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{endpoint}: {refused}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM push_subscriptions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn notification_created_pushes_the_caller_s_new_notifications_and_never_another_s() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let (ana, ana_token) = member(&app, "ana@acme.test", &inbox).await;
    let (_, bo_token) = member(&app, "bo@acme.test", &inbox).await;
    let subscription = "subscription { notificationCreated { id type read conversation { id } } }";
    let mut sockets = Vec::new();
    for token in [&ana_token, &bo_token] {
        sockets.push(tests::socket::subscribe(&app.server.address, token, subscription, json!({})).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = app.receive(&inbox, "c-1", "m-1", "hello").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    app.ok(ASSIGN, json!({ "c": conversation, "u": ana })).await;

    let pushed = next_message(&mut sockets[0], Duration::from_secs(10)).await.expect("Ana is told");
    assert_eq!(pushed["type"], "next", "{pushed}");
    let notification = &pushed["payload"]["data"]["notificationCreated"];
    assert_eq!(notification["type"], "CONVERSATION_ASSIGNED");
    assert_eq!(notification["conversation"]["id"], conversation.as_str());
    let (list, _) = notifications_of(&app, &ana_token).await;
    assert_eq!(notification["id"], list[0]["id"], "already listed when pushed");
    assert!(next_message(&mut sockets[0], Duration::from_secs(2)).await.is_none(), "once");
    assert!(next_message(&mut sockets[1], Duration::from_secs(1)).await.is_none(), "nothing of Ana's for Bo");
}

#[tokio::test]
async fn a_subscriber_on_another_server_is_told_once_and_the_dashboard_there_follows() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let (ana, ana_token) = member(&app, "ana@acme.test", &inbox).await;
    let second = tests::TestServer::start(&app.database_url).await;
    let notices = "subscription { notificationCreated { id type conversation { id } } }";
    let mut told = tests::socket::subscribe(&second.address, &ana_token, notices, json!({})).await;
    let dashboard = "subscription { liveMetricsUpdated { open unassigned } }";
    let mut figures = tests::socket::subscribe(&second.address, &app.token, dashboard, json!({})).await;
    let first = tests::socket::next_data(&mut figures, "liveMetricsUpdated", Duration::from_secs(5)).await;
    assert_eq!(first, Some(json!({ "open": 0, "unassigned": 0 })), "the figures as they are");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Written through the first server (its projectors), pushed by the second.
    let received = app.receive(&inbox, "c-1", "m-1", "hello").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    let mut pushed = tests::socket::next_data(&mut figures, "liveMetricsUpdated", Duration::from_secs(10)).await;
    if pushed == Some(json!({ "open": 0, "unassigned": 0 })) {
        pushed = tests::socket::next_data(&mut figures, "liveMetricsUpdated", Duration::from_secs(10)).await;
    }
    assert_eq!(pushed, Some(json!({ "open": 1, "unassigned": 1 })), "the new conversation counted there");
    app.ok(ASSIGN, json!({ "c": conversation, "u": ana })).await;
    let notification = tests::socket::next_data(&mut told, "notificationCreated", Duration::from_secs(10))
        .await
        .expect("Ana is told on the other server");
    assert_eq!(notification["type"], "CONVERSATION_ASSIGNED");
    assert_eq!(notification["conversation"]["id"], conversation.as_str());
    let listed = tests::gql_at(&app.client, &second.address, Some(&ana_token), LIST, json!({})).await;
    let first_listed = &listed["data"]["notifications"]["edges"][0]["node"];
    assert_eq!(first_listed["id"], notification["id"], "listed on that server when pushed: {listed}");
    let assigned = tests::socket::next_data(&mut figures, "liveMetricsUpdated", Duration::from_secs(10)).await;
    assert_eq!(assigned, Some(json!({ "open": 1, "unassigned": 0 })));
    assert!(next_message(&mut told, Duration::from_secs(2)).await.is_none(), "told once");
    second.stop().await;
}
