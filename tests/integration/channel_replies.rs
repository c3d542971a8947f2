//! Replies out through WhatsApp and Messenger: the providers' documented request
//! shapes, statuses moved only forward by callbacks in any order, retries without a
//! second accepted send, permanent refusals shown on the message, and the 24-hour
//! window enforced before anything is stored.

use std::time::Duration;

use chrono::Utc;
use commands::channel::signature::sign;
use serde_json::{json, Value};
use tests::graph_api::{Answer, GraphApi};
use tests::TestApp;

const APP_SECRET: &str = "app-secret-of-the-test-app";
const ACCESS_TOKEN: &str = "EAAG-access-token";
const PHONE_ID: &str = "106540352242922";
const PAGE_ID: &str = "1234567890";
const WA_ID: &str = "5511911110000";
const PSID: &str = "6789012345";

async fn app_with(graph: &GraphApi) -> TestApp {
    let url = graph.url.clone();
    TestApp::spawn_with(move |config| config.meta_graph_api_url = url).await
}

async fn create(app: &TestApp, input: Value) -> String {
    let created =
        app.ok("mutation($i: CreateInboxInput!) { createInbox(input: $i) { id } }", json!({ "i": input })).await;
    created["createInbox"]["id"].as_str().unwrap().to_string()
}

async fn whatsapp_inbox(app: &TestApp) -> String {
    create(app, json!({"name": "WhatsApp", "channel": "WHATSAPP", "whatsapp": {"phoneNumberId": PHONE_ID,
        "businessAccountId": "102290129340398", "accessToken": ACCESS_TOKEN, "appSecret": APP_SECRET, "verifyToken": "v"}}))
    .await
}

async fn messenger_inbox(app: &TestApp) -> String {
    create(
        app,
        json!({"name": "Messenger", "channel": "MESSENGER", "messenger": {"pageId": PAGE_ID,
        "pageAccessToken": ACCESS_TOKEN, "appSecret": APP_SECRET, "verifyToken": "v"}}),
    )
    .await
}

async fn webhook(app: &TestApp, path: &str, body: Value) {
    let body = serde_json::to_vec(&body).unwrap();
    let response = app
        .client
        .post(format!("{}{path}", app.server.address))
        .header("X-Hub-Signature-256", sign(APP_SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
}

fn whatsapp_change(value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] = json!({"display_phone_number": "15550783881", "phone_number_id": PHONE_ID});
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]})
}

/// The contact writes on WhatsApp, `ago` before now by the provider's clock; answers
/// the conversation's id.
async fn contact_writes(app: &TestApp, ago: chrono::Duration) -> String {
    let timestamp = (Utc::now() - ago).timestamp().to_string();
    let message = json!({"from": WA_ID, "id": format!("wamid.in{timestamp}"), "timestamp": timestamp, "type": "text", "text": {"body": "Oi"}});
    webhook(
        app,
        "/webhooks/whatsapp",
        whatsapp_change(json!({"contacts": [{"profile": {"name": "Ana"}, "wa_id": WA_ID}], "messages": [message]})),
    )
    .await;
    app.projected().await;
    let listed = app.ok("{ conversations { edges { node { id } } } }", json!({})).await;
    listed["conversations"]["edges"][0]["node"]["id"].as_str().unwrap().to_string()
}

/// The contact writes on Messenger at `now` (milliseconds); answers the conversation's id.
async fn messenger_contact_writes(app: &TestApp, inbox: &str, now: i64) -> String {
    let message = json!({"object": "page", "entry": [{"id": PAGE_ID, "time": now, "messaging": [{
        "sender": {"id": PSID}, "recipient": {"id": PAGE_ID}, "timestamp": now, "message": {"mid": "m_in1", "text": "hello"}}]}]});
    webhook(app, &format!("/webhooks/messenger/{inbox}"), message).await;
    app.projected().await;
    let listed = app.ok("{ conversations { edges { node { id } } } }", json!({})).await;
    listed["conversations"]["edges"][0]["node"]["id"].as_str().unwrap().to_string()
}

async fn status_callback(app: &TestApp, provider_id: &str, status: &str) {
    let status = json!({"id": provider_id, "status": status, "timestamp": Utc::now().timestamp().to_string(), "recipient_id": WA_ID});
    webhook(app, "/webhooks/whatsapp", whatsapp_change(json!({"statuses": [status]}))).await;
}

const SEND: &str = "mutation($c: ID!, $text: String!, $private: Boolean) { \
    sendMessage(input: {conversationId: $c, content: $text, private: $private}) { id status } }";

async fn reply(app: &TestApp, conversation: &str, text: &str) -> Value {
    app.gql(SEND, json!({ "c": conversation, "text": text })).await
}

/// The message's status and error as the API shows them (nulls until it is listed).
async fn status_of(app: &TestApp, conversation: &str, message: &str) -> (Value, Value) {
    let data = app
        .ok(
            "query($c: ID!) { conversation(id: $c) { messages { edges { node { id status statusError } } } } }",
            json!({ "c": conversation }),
        )
        .await;
    let edges = data["conversation"]["messages"]["edges"].as_array().unwrap().clone();
    let node = edges.iter().map(|e| &e["node"]).find(|n| n["id"] == message).cloned().unwrap_or_default();
    (node["status"].clone(), node["statusError"].clone())
}

/// Waits (bounded) until the message shows `status`.
async fn wait_for_status(app: &TestApp, conversation: &str, message: &str, status: &str) -> (Value, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = status_of(app, conversation, message).await;
        if found.0 == status || tokio::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_whatsapp_reply_reaches_the_provider_as_documented_and_callbacks_only_move_it_forward() {
    let graph = GraphApi::start(Vec::new()).await;
    let app = app_with(&graph).await;
    whatsapp_inbox(&app).await;
    let conversation = contact_writes(&app, chrono::Duration::minutes(5)).await;
    let note = app.ok(SEND, json!({ "c": conversation, "text": "internal", "private": true })).await;
    assert_eq!(note["sendMessage"]["status"], Value::Null, "a private note has no delivery");
    let sent = reply(&app, &conversation, "Olá! Como posso ajudar?").await;
    assert_eq!(sent["data"]["sendMessage"]["status"], "PENDING", "{sent}");
    let message = sent["data"]["sendMessage"]["id"].as_str().unwrap().to_string();

    let requests = graph.wait_for_sent(1, Duration::from_secs(10)).await;
    assert_eq!(requests.len(), 1, "one send, and the private note never");
    assert_eq!(requests[0].path, format!("/v21.0/{PHONE_ID}/messages"));
    assert_eq!(requests[0].header("authorization"), format!("Bearer {ACCESS_TOKEN}"));
    assert_eq!(
        requests[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID, "type": "text",
               "text": {"preview_url": false, "body": "Olá! Como posso ajudar?"}})
    );
    assert_eq!(wait_for_status(&app, &conversation, &message, "SENT").await.0, "SENT");
    let provider_id = requests[0].accepted_as.clone().unwrap();

    status_callback(&app, &provider_id, "delivered").await;
    assert_eq!(wait_for_status(&app, &conversation, &message, "DELIVERED").await.0, "DELIVERED");
    status_callback(&app, &provider_id, "read").await;
    assert_eq!(wait_for_status(&app, &conversation, &message, "READ").await.0, "READ");
    // A late DELIVERED (and a repeated READ) does not undo READ.
    status_callback(&app, &provider_id, "delivered").await;
    status_callback(&app, &provider_id, "read").await;
    app.projected().await;
    assert_eq!(status_of(&app, &conversation, &message).await.0, "READ");
    let updates: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MessageStatusUpdated'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(updates, 2, "delivered, then read; nothing for the late ones");
    // Every attempt and outcome is in the log, with the channel as its actor.
    let history: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, metadata->>'actor' FROM events WHERE event_type LIKE 'Message%' \
         AND event_type NOT IN ('MessageReceived', 'MessageSent') ORDER BY global_position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expected: Vec<(String, String)> =
        ["MessageDeliveryAttempted", "MessageAcceptedByProvider", "MessageStatusUpdated", "MessageStatusUpdated"]
            .iter()
            .map(|t| (t.to_string(), "channel:whatsapp".to_string()))
            .collect();
    assert_eq!(history, expected);
}

#[tokio::test]
async fn a_provider_500_is_retried_until_one_accepted_send_and_a_429_waits_its_retry_after() {
    let mut throttled = Answer::error(429, 130429, "Rate limit hit");
    throttled.retry_after = Some(2);
    let graph = GraphApi::start(vec![Answer::error(500, 1, "An unknown error occurred"), throttled]).await;
    let app = app_with(&graph).await;
    whatsapp_inbox(&app).await;
    let conversation = contact_writes(&app, chrono::Duration::minutes(1)).await;
    let message = reply(&app, &conversation, "hello").await["data"]["sendMessage"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_for_status(&app, &conversation, &message, "SENT").await.0, "SENT");
    let sent = graph.sent();
    assert_eq!(sent.len(), 3, "500, 429, then accepted");
    assert_eq!(graph.accepted().len(), 1);
    let waited = sent[2].at - sent[1].at;
    assert!(waited >= Duration::from_secs(2), "the 429's Retry-After was honoured: {waited:?}");
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MessageDeliveryAttempted'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 3);
}

#[tokio::test]
async fn a_permanent_refusal_fails_the_message_with_the_providers_reason_and_is_not_retried() {
    let graph = GraphApi::start(vec![Answer::error(400, 131030, "Recipient phone number not in allowed list")]).await;
    let app = app_with(&graph).await;
    whatsapp_inbox(&app).await;
    let conversation = contact_writes(&app, chrono::Duration::minutes(1)).await;
    let message = reply(&app, &conversation, "hello").await["data"]["sendMessage"]["id"].as_str().unwrap().to_string();
    let (status, error) = wait_for_status(&app, &conversation, &message, "FAILED").await;
    assert_eq!(status, "FAILED");
    assert_eq!(error, "131030: Recipient phone number not in allowed list");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(graph.sent().len(), 1, "a permanent refusal is not retried");
}

#[tokio::test]
async fn a_free_form_whatsapp_reply_25_hours_after_the_contacts_message_is_refused_and_nothing_is_stored() {
    let graph = GraphApi::start(Vec::new()).await;
    let app = app_with(&graph).await;
    whatsapp_inbox(&app).await;
    let conversation = contact_writes(&app, chrono::Duration::hours(25)).await;
    let window = app
        .ok("query($c: ID!) { conversation(id: $c) { canReply replyWindowClosesAt } }", json!({ "c": conversation }))
        .await;
    assert_eq!(window["conversation"]["canReply"], false);
    assert!(window["conversation"]["replyWindowClosesAt"].is_string(), "{window}");
    let before = app.event_count().await;
    let refused = reply(&app, &conversation, "hello?").await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "MESSAGING_WINDOW_CLOSED", "{refused}");
    assert_eq!(app.event_count().await, before, "nothing stored as sent");
    // A private note is still fine.
    app.ok(SEND, json!({ "c": conversation, "text": "they went quiet", "private": true })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(graph.sent().is_empty());
}

#[tokio::test]
async fn a_messenger_reply_is_a_response_and_a_callback_that_came_before_its_send_was_recorded_is_applied() {
    let graph = GraphApi::start(Vec::new()).await;
    let app = app_with(&graph).await;
    let inbox = messenger_inbox(&app).await;
    let now = Utc::now().timestamp_millis();
    let conversation = messenger_contact_writes(&app, &inbox, now).await;
    let listed = app.ok("{ conversations { edges { node { id canReply contact { name } } } } }", json!({})).await;
    assert_eq!(listed["conversations"]["edges"][0]["node"]["canReply"], true);
    // A new sender's name is asked of the Graph API with the page's token, once.
    assert_eq!(listed["conversations"]["edges"][0]["node"]["contact"]["name"], "Peter Chang");
    assert_eq!(graph.profile_requests(), vec![(PSID.to_string(), format!("Bearer {ACCESS_TOKEN}"))]);
    // Meta says the page's message was read before we recorded sending it: a
    // watermark a minute ahead.
    let read = json!({"object": "page", "entry": [{"id": PAGE_ID, "messaging": [{
        "sender": {"id": PSID}, "recipient": {"id": PAGE_ID}, "read": {"watermark": now + 60_000}}]}]});
    webhook(&app, "/webhooks/messenger", read).await;
    let sent = reply(&app, &conversation, "hi! how can I help?").await;
    let id = sent["data"]["sendMessage"]["id"].as_str().unwrap().to_string();
    let requests = graph.wait_for_sent(1, Duration::from_secs(10)).await;
    assert_eq!(requests[0].path, format!("/v21.0/{PAGE_ID}/messages"));
    assert_eq!(requests[0].header("authorization"), format!("Bearer {ACCESS_TOKEN}"));
    assert_eq!(
        requests[0].body,
        json!({"recipient": {"id": PSID}, "messaging_type": "RESPONSE", "message": {"text": "hi! how can I help?"}})
    );
    assert_eq!(wait_for_status(&app, &conversation, &id, "READ").await.0, "READ");
    // Our own send echoed back is not stored as a message.
    let echo = json!({"object": "page", "entry": [{"id": PAGE_ID, "messaging": [{
        "sender": {"id": PAGE_ID}, "recipient": {"id": PSID}, "timestamp": now + 1000,
        "message": {"mid": requests[0].accepted_as.clone().unwrap(), "is_echo": true, "app_id": 1, "text": "hi! how can I help?"}}]}]});
    webhook(&app, "/webhooks/messenger", echo).await;
    app.projected().await;
    let messages = app
        .ok(
            "query($c: ID!) { conversation(id: $c) { messages { edges { node { id } } } } }",
            json!({ "c": conversation }),
        )
        .await;
    assert_eq!(messages["conversation"]["messages"]["edges"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn replies_queued_while_the_provider_is_down_survive_a_sigkill_and_each_is_accepted_once() {
    let port = tests::free_port();
    let down = format!("http://127.0.0.1:{port}");
    let app = TestApp::spawn_with({
        let down = down.clone();
        move |config| config.meta_graph_api_url = down
    })
    .await;
    whatsapp_inbox(&app).await;
    let conversation = contact_writes(&app, chrono::Duration::minutes(1)).await;
    let TestApp { server, pool, database_url, token, client, .. } = app;
    server.stop().await;
    let env =
        [("META_GRAPH_API_URL", down.as_str()), ("OUTBOUND_ALLOW_PRIVATE_TARGETS", "true"), ("JOB_LEASE_SECS", "2")];

    // Five replies while the provider is down; the server dies with them queued.
    let (mut first, address) = tests::serve(&database_url, &env).await;
    for n in 0..5 {
        let sent = tests::gql_at(
            &client,
            &address,
            Some(&token),
            SEND,
            json!({ "c": conversation, "text": format!("reply {n}") }),
        )
        .await;
        assert_eq!(sent["data"]["sendMessage"]["status"], "PENDING", "{sent}");
    }
    let attempted = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'MessageDeliveryAttempted'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while attempted().await < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(attempted().await >= 5, "every reply was tried against the provider that is down");
    first.start_kill().expect("SIGKILL the server");
    first.wait().await.unwrap();

    // The provider comes back, then the server: every reply goes out, once.
    let graph = GraphApi::start_on(port, Vec::new()).await;
    let (mut second, _) = tests::serve(&database_url, &env).await;
    let accepted = graph.wait_for_sent(5, Duration::from_secs(30)).await;
    let sent_ids = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'MessageAcceptedByProvider'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sent_ids().await < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent_ids().await, 5);
    // Killed again, and restarted: what was accepted and recorded is never sent again.
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    let (mut third, _) = tests::serve(&database_url, &env).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    third.start_kill().unwrap();
    third.wait().await.unwrap();
    let mut texts: Vec<String> =
        graph.sent().iter().map(|s| s.body["text"]["body"].as_str().unwrap_or_default().to_string()).collect();
    texts.sort();
    assert_eq!(texts, (0..5).map(|n| format!("reply {n}")).collect::<Vec<_>>(), "each reply reached the provider once");
    assert_eq!(accepted.len(), 5);
}

#[tokio::test]
async fn templates_are_synced_with_the_inbox_and_an_approved_one_goes_out_when_the_window_is_closed() {
    let graph = GraphApi::start(Vec::new()).await;
    let app = app_with(&graph).await;
    let inbox = whatsapp_inbox(&app).await;
    // Listed from the provider by a job of the inbox's creation, every page.
    let list = "query($i: ID!) { messageTemplates(inboxId: $i) { name language category status components } }";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = app.ok(list, json!({ "i": inbox })).await["messageTemplates"].clone();
        if listed.as_array().unwrap().len() == 3 || tokio::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hello_world", "order_update", "summer_promo"]);
    assert_eq!(listed[1]["components"][1]["text"], "Hi {{1}}, your order {{2}} ships today.");
    let requests = graph.listed();
    assert_eq!(requests[0].0, "/v21.0/102290129340398/message_templates");
    assert_eq!(requests[0].1, format!("Bearer {ACCESS_TOKEN}"));
    assert_eq!(requests[1].0, "/v21.0/102290129340398/message_templates?after=2", "paging.next is followed");
    let synced = app
        .ok(
            "mutation($i: ID!) { syncMessageTemplates(input: {inboxId: $i}) { templates { name } } }",
            json!({ "i": inbox }),
        )
        .await;
    assert_eq!(synced["syncMessageTemplates"]["templates"].as_array().unwrap().len(), 3);

    // Outside the window a free-form reply is refused and a template goes out.
    let conversation = contact_writes(&app, chrono::Duration::hours(25)).await;
    let refused = reply(&app, &conversation, "are you there?").await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "MESSAGING_WINDOW_CLOSED");
    let send = "mutation($c: ID!, $name: String!, $lang: String!, $components: JSON) { sendTemplate(input: \
        {conversationId: $c, name: $name, language: $lang, components: $components}) { id content status } }";
    let components =
        json!([{"type": "body", "parameters": [{"type": "text", "text": "John"}, {"type": "text", "text": "#42"}]}]);
    let sent = app
        .ok(send, json!({ "c": conversation, "name": "order_update", "lang": "en_US", "components": components }))
        .await;
    assert_eq!(sent["sendTemplate"]["content"], "Hi John, your order #42 ships today.");
    assert_eq!(sent["sendTemplate"]["status"], "PENDING");
    let message = sent["sendTemplate"]["id"].as_str().unwrap().to_string();
    let requests = graph.wait_for_sent(1, Duration::from_secs(10)).await;
    assert_eq!(
        requests[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID, "type": "template",
               "template": {"name": "order_update", "language": {"code": "en_US"}, "components": components}})
    );
    assert_eq!(wait_for_status(&app, &conversation, &message, "SENT").await.0, "SENT");
    // Only approved templates the inbox has.
    let rejected = app.gql(send, json!({ "c": conversation, "name": "summer_promo", "lang": "pt_BR" })).await;
    assert_eq!(rejected["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{rejected}");
    let unknown = app.gql(send, json!({ "c": conversation, "name": "no_such", "lang": "en_US" })).await;
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "NOT_FOUND", "{unknown}");
    // The parameters (they may name the contact) are sealed in the log.
    let stored: String = sqlx::query_scalar(
        "SELECT payload->'MessageSent'->>'template_components' FROM events WHERE event_type = 'MessageSent'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!stored.contains("John"), "{stored}");
}

/// Each message of the conversation: (content, [(fileType, fileName, url)]).
async fn files(app: &TestApp, conversation: &str) -> Vec<(String, Vec<(String, Value, Value)>)> {
    let data = app
        .ok(
            "query($c: ID!) { conversation(id: $c) { messages { edges { node { content \
             attachments { id fileType mimeType fileName fileSize url } } } } } }",
            json!({ "c": conversation }),
        )
        .await;
    data["conversation"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let node = &e["node"];
            let files = node["attachments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["fileType"].as_str().unwrap().to_string(), a["fileName"].clone(), a["url"].clone()))
                .collect();
            (node["content"].as_str().unwrap_or_default().to_string(), files)
        })
        .collect()
}

#[tokio::test]
async fn inbound_media_is_copied_from_the_provider_and_served_by_a_short_lived_link_to_the_account_only() {
    let graph = GraphApi::start(Vec::new()).await;
    let app = app_with(&graph).await;
    whatsapp_inbox(&app).await;
    let now = Utc::now().timestamp().to_string();
    let messages = json!([
        {"from": WA_ID, "id": "wamid.img", "timestamp": now, "type": "image",
         "image": {"id": "MEDIA1", "mime_type": "image/jpeg", "sha256": "x", "caption": "my receipt"}},
        {"from": WA_ID, "id": "wamid.doc", "timestamp": now, "type": "document",
         "document": {"id": "DOC1", "mime_type": "application/pdf", "filename": "invoice.pdf"}},
    ]);
    webhook(
        &app,
        "/webhooks/whatsapp",
        whatsapp_change(json!({"contacts": [{"profile": {"name": "Ana"}, "wa_id": WA_ID}], "messages": messages})),
    )
    .await;
    app.projected().await;
    let listed = app.ok("{ conversations { edges { node { id } } } }", json!({})).await;
    let conversation = listed["conversations"]["edges"][0]["node"]["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        let found = files(&app, &conversation).await;
        let fetched = found.iter().flat_map(|(_, f)| f).filter(|(_, _, url)| url.is_string()).count();
        if fetched == 2 || tokio::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "my receipt");
    assert_eq!((found[0].1[0].0.as_str(), &found[0].1[0].1), ("IMAGE", &Value::Null));
    assert_eq!(found[1].0, "", "a document without a caption is stored too");
    assert_eq!((found[1].1[0].0.as_str(), &found[1].1[0].1), ("FILE", &json!("invoice.pdf")));
    // Fetched through the media endpoint with the inbox's token, then its URL.
    let requests = graph.media_requests();
    assert!(requests.contains(&("/v21.0/MEDIA1".to_string(), format!("Bearer {ACCESS_TOKEN}"))), "{requests:?}");
    assert!(requests.contains(&("/media-bytes/MEDIA1".to_string(), format!("Bearer {ACCESS_TOKEN}"))), "{requests:?}");

    // The link serves the bytes without credentials, as an <img> would load them.
    let url = found[0].1[0].2.as_str().unwrap().to_string();
    let response = app.client.get(format!("{}{url}", app.server.address)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.bytes().await.unwrap().to_vec(), tests::graph_api::media_bytes_of("MEDIA1"));
    // Altered or expired, it is refused.
    let tampered = url.replace("signature=", "signature=00");
    let response = app.client.get(format!("{}{tampered}", app.server.address)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let id: uuid::Uuid = url.trim_start_matches("/attachments/").split('?').next().unwrap().parse().unwrap();
    let expired = app.server.state.attachments.link(id, Utc::now() - chrono::Duration::seconds(1));
    let response = app.client.get(format!("{}{expired}", app.server.address)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    // Another account sees neither the conversation nor its files.
    let other = app.other_account().await;
    let refused = app
        .gql_as(
            Some(&other.token),
            "query($c: ID!) { conversation(id: $c) { messages { edges { node { attachments { url } } } } } }",
            json!({ "c": conversation }),
        )
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "NOT_FOUND", "{refused}");
    // Sealed at rest with the contact's key.
    let sealed: i64 = sqlx::query_scalar("SELECT count(*) FROM attachment_files").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sealed, 2);
}

#[tokio::test]
async fn a_whatsapp_reply_to_the_contacts_message_quotes_it() {
    let graph = GraphApi::start(Vec::new()).await;
    let app = app_with(&graph).await;
    whatsapp_inbox(&app).await;
    let conversation = contact_writes(&app, chrono::Duration::minutes(1)).await;
    let listed = app
        .ok(
            "query($c: ID!) { conversation(id: $c) { messages { edges { node { id } } } } }",
            json!({ "c": conversation }),
        )
        .await;
    let theirs = listed["conversation"]["messages"]["edges"][0]["node"]["id"].as_str().unwrap().to_string();
    // `contact_writes` names its message `wamid.in<timestamp>`.
    let wamid = "wamid.in";
    let quoting = "mutation($c: ID!, $q: ID!) { sendMessage(input: {conversationId: $c, content: \"Yes, in blue\", \
        replyToMessageId: $q}) { id } }";
    app.ok(quoting, json!({ "c": conversation, "q": theirs })).await;
    let requests = graph.wait_for_sent(1, Duration::from_secs(10)).await;
    let quoted = requests[0].body["context"]["message_id"].as_str().unwrap_or_default().to_string();
    assert!(
        quoted.starts_with(wamid) && quoted.len() > wamid.len(),
        "the contact's wamid is quoted: {}",
        requests[0].body
    );
    assert_eq!(requests[0].body["text"]["body"], "Yes, in blue");
    let elsewhere = app.gql(quoting, json!({ "c": conversation, "q": uuid::Uuid::now_v7().to_string() })).await;
    assert_eq!(elsewhere["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{elsewhere}");
}

#[tokio::test]
async fn with_two_servers_a_reply_is_sent_once() {
    let graph = GraphApi::start(Vec::new()).await;
    let app = app_with(&graph).await;
    let mut config = tests::test_config(&app.database_url);
    config.meta_graph_api_url = graph.url.clone();
    let other = tests::TestServer::start_with(config).await;
    whatsapp_inbox(&app).await;
    let conversation = contact_writes(&app, chrono::Duration::minutes(1)).await;
    let sent = tests::gql_at(
        &app.client,
        &other.address,
        Some(&app.token),
        SEND,
        json!({ "c": conversation, "text": "from B" }),
    )
    .await;
    let message = sent["data"]["sendMessage"]["id"].as_str().expect("sent through the other server").to_string();
    assert_eq!(wait_for_status(&app, &conversation, &message, "SENT").await.0, "SENT");
    // Both servers run policies and job workers: the reply still goes out once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(graph.sent().len(), 1);
    other.stop().await;
}

const SEND_FILES: &str = "mutation($c: ID!, $text: String, $files: [ID!], $private: Boolean) { \
    sendMessage(input: {conversationId: $c, content: $text, attachmentIds: $files, private: $private}) \
    { id status content attachments { id fileType fileName url } } }";

/// Uploads a file to the conversation as the app's administrator; answers its id.
async fn upload(app: &TestApp, conversation: &str, name: &str, mime_type: &str, bytes: &[u8]) -> String {
    let answer = app.upload_as(Some(&app.token), conversation, name, mime_type, bytes.to_vec()).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"]["uploadAttachment"]["id"].as_str().unwrap().to_string()
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn an_agents_file_goes_to_whatsapp_as_uploaded_media_with_its_caption() {
    let graph = GraphApi::start(Vec::new()).await;
    let app = app_with(&graph).await;
    whatsapp_inbox(&app).await;
    let conversation = contact_writes(&app, chrono::Duration::minutes(5)).await;
    let pdf = b"%PDF-1.4 the invoice".to_vec();
    let uploaded = app.upload_as(Some(&app.token), &conversation, "invoice.pdf", "application/pdf", pdf.clone()).await;
    let file = &uploaded["data"]["uploadAttachment"];
    assert_eq!(
        (&file["fileType"], &file["mimeType"], &file["fileName"], &file["fileSize"]),
        (&json!("FILE"), &json!("application/pdf"), &json!("invoice.pdf"), &json!(pdf.len())),
        "{uploaded}"
    );
    // The agent can look at it before sending; it is downloaded, not rendered here.
    let url = file["url"].as_str().unwrap();
    let response = app.client.get(format!("{}{url}", app.server.address)).send().await.unwrap();
    assert_eq!(response.headers()["content-disposition"], "attachment");
    assert_eq!(response.bytes().await.unwrap().to_vec(), pdf);
    let id = file["id"].as_str().unwrap().to_string();

    let sent = app.ok(SEND_FILES, json!({ "c": conversation, "text": "Your invoice", "files": [id] })).await;
    let message = &sent["sendMessage"];
    assert_eq!(message["status"], "PENDING");
    assert_eq!(message["attachments"][0]["fileName"], "invoice.pdf", "{sent}");
    let requests = graph.wait_for_sent(1, Duration::from_secs(10)).await;
    // The file went up first, through the media endpoint, with the inbox's token.
    let uploads = graph.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].path, format!("/v21.0/{PHONE_ID}/media"));
    assert_eq!(uploads[0].authorization, format!("Bearer {ACCESS_TOKEN}"));
    assert_eq!(
        (uploads[0].text("messaging_product"), uploads[0].text("type")),
        ("whatsapp".into(), "application/pdf".into())
    );
    let (name, mime_type, bytes) = uploads[0].parts["file"].clone();
    assert_eq!((name.as_deref(), mime_type.as_deref(), bytes), (Some("invoice.pdf"), Some("application/pdf"), pdf));
    assert_eq!(
        requests[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID, "type": "document",
               "document": {"id": uploads[0].id, "caption": "Your invoice", "filename": "invoice.pdf"}})
    );
    let id = message["id"].as_str().unwrap();
    assert_eq!(wait_for_status(&app, &conversation, id, "SENT").await.0, "SENT");
    // The timeline shows the file with the reply.
    let shown = files(&app, &conversation).await;
    assert!(shown.iter().any(|(text, f)| text == "Your invoice" && f[0].1 == "invoice.pdf"), "{shown:?}");
}

#[tokio::test]
async fn files_a_provider_cannot_take_in_one_message_are_refused_and_nothing_is_stored() {
    let graph = GraphApi::start(Vec::new()).await;
    let app = app_with(&graph).await;
    whatsapp_inbox(&app).await;
    let conversation = contact_writes(&app, chrono::Duration::minutes(5)).await;
    let one = upload(&app, &conversation, "a.jpg", "image/jpeg", b"jpeg one").await;
    let two = upload(&app, &conversation, "b.jpg", "image/jpeg", b"jpeg two").await;
    let voice = upload(&app, &conversation, "voice.ogg", "audio/ogg", b"ogg").await;
    let elsewhere = app.create_inbox("API").await;
    let other = app.receive(&elsewhere, "bob", "b-1", "hi").await["conversation"]["id"].as_str().unwrap().to_string();
    let events = app.event_count().await;
    for (files, text, why) in [
        (json!([one, two]), json!(null), "two files in one WhatsApp message"),
        (json!([voice]), json!("listen"), "text with an audio file, which WhatsApp shows without a caption"),
        (json!([uuid::Uuid::now_v7().to_string()]), json!(null), "a file never uploaded"),
        (json!([]), json!(null), "neither text nor a file"),
    ] {
        let answer = app.gql(SEND_FILES, json!({ "c": conversation, "text": text, "files": files })).await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{why}: {answer}");
    }
    // A file uploaded to one conversation is not another's to send.
    let answer = app.gql(SEND_FILES, json!({ "c": other, "files": [one] })).await;
    assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
    assert_eq!(app.event_count().await, events, "nothing was written");
    // A private note is not sent anywhere: it may carry several files.
    let note = app.ok(SEND_FILES, json!({ "c": conversation, "files": [one, two], "private": true })).await;
    assert_eq!(note["sendMessage"]["attachments"].as_array().unwrap().len(), 2, "{note}");
    assert_eq!(note["sendMessage"]["status"], Value::Null);
    app.projected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(graph.sent().is_empty() && graph.uploads().is_empty(), "nothing went to the provider");
}

#[tokio::test]
async fn uploads_are_refused_to_outsiders_too_large_or_forged_without_storing_anything() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("API").await;
    let conversation =
        app.receive(&inbox, "ana", "a-1", "hello").await["conversation"]["id"].as_str().unwrap().to_string();
    let kept = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM attachment_files").fetch_one(&app.pool).await.unwrap();
        n
    };
    let anonymous = app.upload_as(None, &conversation, "a.png", "image/png", b"png".to_vec()).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED", "{anonymous}");
    let other = app.other_account().await;
    let foreign = app.upload_as(Some(&other.token), &conversation, "a.png", "image/png", b"png".to_vec()).await;
    assert_eq!(code(&foreign), "NOT_FOUND", "{foreign}");
    let (_, agent_token) = app.agent("not-in-the-inbox@acme.test", "AGENT").await;
    let outsider = app.upload_as(Some(&agent_token), &conversation, "a.png", "image/png", b"png".to_vec()).await;
    assert_eq!(code(&outsider), "FORBIDDEN", "{outsider}");
    let large = vec![0u8; commands::attachments::MAX_FILE_BYTES + 1];
    let too_large = app.upload_as(Some(&app.token), &conversation, "big.bin", "application/octet-stream", large).await;
    assert_eq!(code(&too_large), "PAYLOAD_TOO_LARGE", "{too_large}");
    let empty = app.upload_as(Some(&app.token), &conversation, "empty.txt", "text/plain", Vec::new()).await;
    assert_eq!(code(&empty), "BAD_USER_INPUT", "{empty}");
    // A file reference written by hand, without a file in the request.
    for forged in ["#__graphql_file__:7", "#__graphql_file__:x", "#__graphql_file__:0", "a file"] {
        let answer = app
            .gql(
                "mutation($c: ID!, $f: Upload!) { uploadAttachment(input: {conversationId: $c, file: $f}) { id } }",
                json!({ "c": conversation, "f": forged }),
            )
            .await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{forged}: {answer}");
    }
    assert_eq!(kept().await, 0, "nothing was kept");
    // The server is still there, and takes a good one.
    let good = app.upload_as(Some(&app.token), &conversation, "ok.png", "image/png", b"png".to_vec()).await;
    assert_eq!(good["data"]["uploadAttachment"]["fileType"], "IMAGE", "{good}");
    assert_eq!(kept().await, 1);
}

#[tokio::test]
async fn an_agents_image_goes_to_messenger_as_an_uploaded_attachment() {
    let graph = GraphApi::start(Vec::new()).await;
    let app = app_with(&graph).await;
    let inbox = messenger_inbox(&app).await;
    let conversation = messenger_contact_writes(&app, &inbox, Utc::now().timestamp_millis()).await;
    let photo = upload(&app, &conversation, "photo.png", "image/png", b"png bytes").await;
    // Messenger shows no text beside a file.
    let answer = app.gql(SEND_FILES, json!({ "c": conversation, "text": "look", "files": [photo] })).await;
    assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
    let sent = app.ok(SEND_FILES, json!({ "c": conversation, "files": [photo] })).await;
    let requests = graph.wait_for_sent(1, Duration::from_secs(10)).await;
    let uploads = graph.uploads();
    assert_eq!(uploads[0].path, format!("/v21.0/{PAGE_ID}/message_attachments"));
    assert_eq!(uploads[0].authorization, format!("Bearer {ACCESS_TOKEN}"));
    let described: Value = serde_json::from_str(&uploads[0].text("message")).unwrap();
    assert_eq!(described, json!({"attachment": {"type": "image", "payload": {"is_reusable": false}}}));
    assert_eq!(uploads[0].parts["filedata"].2, b"png bytes");
    assert_eq!(
        requests[0].body,
        json!({"recipient": {"id": PSID}, "messaging_type": "RESPONSE",
               "message": {"attachment": {"type": "image", "payload": {"attachment_id": uploads[0].id}}}})
    );
    let id = sent["sendMessage"]["id"].as_str().unwrap();
    assert_eq!(wait_for_status(&app, &conversation, id, "SENT").await.0, "SENT");
}

#[tokio::test]
async fn uploads_never_sent_are_swept_after_a_week_and_sent_ones_stay() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("API").await;
    let conversation =
        app.receive(&inbox, "ana", "a-1", "hello").await["conversation"]["id"].as_str().unwrap().to_string();
    let sent = upload(&app, &conversation, "sent.png", "image/png", b"sent").await;
    let abandoned = upload(&app, &conversation, "abandoned.png", "image/png", b"abandoned").await;
    let fresh = upload(&app, &conversation, "fresh.png", "image/png", b"fresh").await;
    app.ok(SEND_FILES, json!({ "c": conversation, "text": "here", "files": [sent] })).await;
    // Eight days pass for the first two.
    sqlx::query("UPDATE attachment_files SET stored_at = now() - interval '8 days' WHERE attachment_id = ANY($1)")
        .bind(vec![sent.parse::<uuid::Uuid>().unwrap(), abandoned.parse().unwrap()])
        .execute(&app.pool)
        .await
        .unwrap();
    let attachments = &app.server.state.attachments;
    assert_eq!(attachments.sweep_unsent(commands::attachments::UNSENT_RETENTION).await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT attachment_id::text FROM attachment_files ORDER BY stored_at")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![sent.clone(), fresh.clone()], "the abandoned one is gone, the sent and the fresh stay");
    for (id, found) in [(&abandoned, None), (&sent, Some(b"sent".to_vec()))] {
        let opened = attachments.open(id.parse().unwrap()).await.unwrap();
        assert_eq!(opened.map(|(_, bytes)| bytes), found);
    }
    // Its file went with it; the message still shows the sent one.
    let file = app.server.state.attachments.link(abandoned.parse().unwrap(), Utc::now() + chrono::Duration::minutes(1));
    let response = app.client.get(format!("{}{file}", app.server.address)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    // Sending the swept one now is refused, nothing written.
    let answer = app.gql(SEND_FILES, json!({ "c": conversation, "files": [abandoned] })).await;
    assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
}

#[tokio::test]
async fn with_two_servers_a_file_uploaded_through_one_is_sent_through_the_other_once() {
    let graph = GraphApi::start(Vec::new()).await;
    // Every process sees the same attachment directory, as production requires.
    let files = std::env::temp_dir().join(format!("inboxd-shared-files-{}", uuid::Uuid::now_v7()));
    let (url, dir) = (graph.url.clone(), files.clone());
    let app = TestApp::spawn_with(move |config| {
        config.meta_graph_api_url = url;
        config.attachments_dir = dir;
    })
    .await;
    let mut config = tests::test_config(&app.database_url);
    config.meta_graph_api_url = graph.url.clone();
    config.attachments_dir = files;
    let other = tests::TestServer::start_with(config).await;
    whatsapp_inbox(&app).await;
    let conversation = contact_writes(&app, chrono::Duration::minutes(1)).await;
    let photo = upload(&app, &conversation, "photo.jpg", "image/jpeg", b"jpeg bytes").await;
    let sent = tests::gql_at(
        &app.client,
        &other.address,
        Some(&app.token),
        SEND_FILES,
        json!({ "c": conversation, "text": "as promised", "files": [photo] }),
    )
    .await;
    let message = sent["data"]["sendMessage"]["id"].as_str().expect("sent through the other server").to_string();
    assert_eq!(wait_for_status(&app, &conversation, &message, "SENT").await.0, "SENT");
    // Both servers run policies and job workers: one upload, one send naming it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let uploads = graph.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].parts["file"].2, b"jpeg bytes");
    let requests = graph.sent();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body["image"], json!({"id": uploads[0].id, "caption": "as promised"}));
    other.stop().await;
}
