//! WhatsApp and Messenger inboxes: settings whose secrets never show, the verify
//! handshake, and signed webhooks in the providers' recorded formats stored exactly
//! once, every item of a payload, whatever the redelivery.

use commands::channel::signature::sign;
use serde_json::{json, Value};
use tests::TestApp;

const APP_SECRET: &str = "app-secret-of-the-test-app";
const VERIFY_TOKEN: &str = "verify-me-please";
const ACCESS_TOKEN: &str = "EAAG-access-token-never-shown";

const CREATE: &str = "mutation($input: CreateInboxInput!) { createInbox(input: $input) { id channel \
    whatsapp { phoneNumberId businessAccountId accessTokenSet appSecretSet verifyTokenSet } \
    messenger { pageId humanAgentTag pageAccessTokenSet appSecretSet verifyTokenSet } } }";

async fn whatsapp_inbox(app: &TestApp, phone_number_id: &str) -> String {
    let input = json!({"name": "WhatsApp", "channel": "WHATSAPP", "whatsapp": {
        "phoneNumberId": phone_number_id, "businessAccountId": "102290129340398",
        "accessToken": ACCESS_TOKEN, "appSecret": APP_SECRET, "verifyToken": VERIFY_TOKEN}});
    app.ok(CREATE, json!({ "input": input })).await["createInbox"]["id"].as_str().unwrap().to_string()
}

async fn messenger_inbox(app: &TestApp, page_id: &str) -> String {
    let input = json!({"name": "Messenger", "channel": "MESSENGER", "messenger": {
        "pageId": page_id, "pageAccessToken": ACCESS_TOKEN, "appSecret": APP_SECRET, "verifyToken": VERIFY_TOKEN}});
    app.ok(CREATE, json!({ "input": input })).await["createInbox"]["id"].as_str().unwrap().to_string()
}

/// A text message as a test writes it: `(from, provider id, text)`.
type Text<'a> = (&'a str, &'a str, &'a str);

/// A WhatsApp Cloud API payload as Meta sends it: one change per (phone number id,
/// messages).
fn whatsapp_payload(changes: &[(&str, &[Text])]) -> Vec<u8> {
    let changes: Vec<Value> = changes
        .iter()
        .map(|(phone, messages)| {
            let contacts: Vec<Value> = messages
                .iter()
                .map(|(from, _, _)| json!({"profile": {"name": format!("Contact {from}")}, "wa_id": from}))
                .collect();
            let messages: Vec<Value> = messages
                .iter()
                .map(|(from, id, text)| {
                    json!({"from": from, "id": id, "timestamp": "1749416383", "type": "text", "text": {"body": text}})
                })
                .collect();
            json!({"field": "messages", "value": {"messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone},
                "contacts": contacts, "messages": messages}})
        })
        .collect();
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": changes}]});
    // Meta escapes non-ASCII; the signature is over these bytes whatever they are.
    serde_json::to_vec(&body).unwrap()
}

/// A Messenger payload: one entry per message `(page, psid, mid, text)`.
fn messenger_payload(messages: &[(&str, &str, &str, &str)]) -> Vec<u8> {
    let entry: Vec<Value> = messages
        .iter()
        .map(|(page, psid, mid, text)| {
            json!({"id": page, "time": 1_458_692_752_478u64, "messaging": [{
                "sender": {"id": psid}, "recipient": {"id": page}, "timestamp": 1_458_692_752_478u64,
                "message": {"mid": mid, "text": text}}]})
        })
        .collect();
    serde_json::to_vec(&json!({"object": "page", "entry": entry})).unwrap()
}

async fn post(app: &TestApp, path: &str, body: &[u8], signature: Option<String>) -> (u16, String) {
    let mut request = app
        .client
        .post(format!("{}{path}", app.server.address))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Hub-Signature-256", signature);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn signed(app: &TestApp, path: &str, body: &[u8]) -> u16 {
    post(app, path, body, Some(sign(APP_SECRET, body))).await.0
}

/// Each conversation's contact and its messages' contents, sorted.
async fn conversations(app: &TestApp) -> Vec<(String, Vec<String>)> {
    let data = app
        .ok(
            "{ conversations { edges { node { contact { name } messages { edges { node { content } } } } } } }",
            json!({}),
        )
        .await;
    let mut found: Vec<(String, Vec<String>)> = data["conversations"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            let node = &edge["node"];
            let name = node["contact"]["name"].as_str().unwrap_or("(none)").to_string();
            let mut contents: Vec<String> = node["messages"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["node"]["content"].as_str().unwrap_or_default().to_string())
                .collect();
            contents.sort();
            (name, contents)
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_provider_inbox_shows_whether_its_secrets_are_set_never_their_values_not_even_in_the_log() {
    let app = TestApp::spawn().await;
    let input = json!({"name": "WhatsApp", "channel": "WHATSAPP", "whatsapp": {
        "phoneNumberId": "106540352242922", "businessAccountId": "102290129340398",
        "accessToken": ACCESS_TOKEN, "appSecret": APP_SECRET, "verifyToken": VERIFY_TOKEN}});
    let created = app.ok(CREATE, json!({ "input": input })).await["createInbox"].clone();
    assert_eq!(created["channel"], "WHATSAPP");
    assert_eq!(
        created["whatsapp"],
        json!({"phoneNumberId": "106540352242922", "businessAccountId": "102290129340398",
               "accessTokenSet": true, "appSecretSet": true, "verifyTokenSet": true})
    );
    assert_eq!(created["messenger"], Value::Null);
    let inbox = created["id"].as_str().unwrap();

    let update = "mutation($input: UpdateInboxInput!) { updateInbox(input: $input) { name whatsapp { phoneNumberId businessAccountId } } }";
    let rotated = app
        .ok(
            update,
            json!({"input": {"inboxId": inbox, "name": "WA Brasil", "whatsapp": {"accessToken": "EAAG-rotated"}}}),
        )
        .await;
    assert_eq!(rotated["updateInbox"]["name"], "WA Brasil");
    assert_eq!(rotated["updateInbox"]["whatsapp"]["phoneNumberId"], "106540352242922", "absent fields stay");

    // The log says which secrets changed, and holds none of them.
    let log: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM events WHERE aggregate_type = 'inbox'")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let log = log.join("\n");
    for secret in [ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, "EAAG-rotated"] {
        assert!(!log.contains(secret), "a secret is in the log: {log}");
    }
    assert!(log.contains(r#""secrets_changed": ["access_token"]"#), "{log}");
    let at_rest: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT sealed FROM inbox_channel_secrets").fetch_all(&app.pool).await.unwrap();
    assert_eq!(at_rest.len(), 3);
    assert!(at_rest.iter().all(|s| !String::from_utf8_lossy(s).contains("EAAG")), "secrets are sealed at rest");

    // A number routes to one inbox; a provider inbox needs its settings.
    let again = json!({"name": "Copy", "channel": "WHATSAPP", "whatsapp": {
        "phoneNumberId": "106540352242922", "businessAccountId": "1",
        "accessToken": "t", "appSecret": "s", "verifyToken": "v"}});
    let refused = app.gql(CREATE, json!({ "input": again })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "CONFLICT", "{refused}");
    for (input, message) in [
        (json!({"name": "Bare", "channel": "WHATSAPP"}), "needs its settings"),
        (
            json!({"name": "Half", "channel": "WHATSAPP", "whatsapp": {"phoneNumberId": "1", "businessAccountId": "2", "accessToken": "t"}}),
            "needs its app_secret",
        ),
        (
            json!({"name": "Odd", "channel": "API", "whatsapp": {"phoneNumberId": "1", "businessAccountId": "2"}}),
            "no channel settings",
        ),
        (
            json!({"name": "Bad", "channel": "WHATSAPP", "whatsapp": {"phoneNumberId": "+1 555", "businessAccountId": "2",
                   "accessToken": "t", "appSecret": "s", "verifyToken": "v"}}),
            "numeric id",
        ),
    ] {
        let refused = app.gql(CREATE, json!({ "input": input })).await;
        assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
        assert!(refused["errors"][0]["message"].as_str().unwrap().contains(message), "{refused}");
    }
}

#[tokio::test]
async fn the_verify_handshake_answers_the_challenge_only_for_the_configured_token() {
    let app = TestApp::spawn().await;
    let whatsapp = whatsapp_inbox(&app, "111").await;
    let messenger = messenger_inbox(&app, "222").await;
    let get = |path: String| {
        let client = app.client.clone();
        async move {
            let response = client.get(path).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let base = &app.server.address;
    for path in [
        format!("{base}/webhooks/whatsapp/{whatsapp}"),
        format!("{base}/webhooks/messenger/{messenger}"),
        format!("{base}/webhooks/whatsapp"),
        format!("{base}/webhooks/messenger"),
    ] {
        let ok =
            get(format!("{path}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}")).await;
        assert_eq!(ok, (200, "1158201444".to_string()), "{path}");
        let wrong = get(format!("{path}?hub.mode=subscribe&hub.challenge=1&hub.verify_token=guess")).await;
        assert_eq!(wrong.0, 403, "{path}");
        assert_eq!(get(format!("{path}?hub.challenge=1")).await.0, 403, "{path}");
    }
    // Another provider's inbox, or no inbox at all, does not answer.
    let crossed = get(format!(
        "{base}/webhooks/messenger/{whatsapp}?hub.mode=subscribe&hub.challenge=1&hub.verify_token={VERIFY_TOKEN}"
    ))
    .await;
    assert_eq!(crossed.0, 403);
}

#[tokio::test]
async fn a_whatsapp_message_redelivered_ten_times_at_once_is_stored_once_with_its_contact_and_conversation() {
    let app = TestApp::spawn().await;
    let inbox = whatsapp_inbox(&app, "106540352242922").await;
    let body = whatsapp_payload(&[(
        "106540352242922",
        &[("16505551234", "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRBNjU5OUFFRTA", "Another color?")],
    )]);
    let path = format!("/webhooks/whatsapp/{inbox}");
    let deliveries = (0..10).map(|_| signed(&app, &path, &body));
    let statuses = futures_util::future::join_all(deliveries).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Days later, through the app-level path: still once.
    assert_eq!(signed(&app, "/webhooks/whatsapp", &body).await, 200);
    app.projected().await;
    assert_eq!(
        conversations(&app).await,
        vec![("Contact 16505551234".to_string(), vec!["Another color?".to_string()])]
    );
    let contact = app.ok("{ conversations { edges { node { contact { phone } } } } }", json!({})).await;
    assert_eq!(contact["conversations"]["edges"][0]["node"]["contact"]["phone"], "+16505551234");
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MessageReceived'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(received, 1);
    // The provider's timestamp is kept: the reply window runs from it.
    let sent_at: Option<String> = sqlx::query_scalar(
        "SELECT payload->'MessageReceived'->>'sent_at' FROM events WHERE event_type = 'MessageReceived'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(sent_at.unwrap().starts_with("2025-06-08T20:59:43"));
}

#[tokio::test]
async fn a_messenger_message_redelivered_ten_times_at_once_is_stored_once() {
    let app = TestApp::spawn().await;
    let inbox = messenger_inbox(&app, "222").await;
    let body = messenger_payload(&[("222", "PSID-A", "m_once", "hello once")]);
    let path = format!("/webhooks/messenger/{inbox}");
    let deliveries = (0..10).map(|_| signed(&app, &path, &body));
    let statuses = futures_util::future::join_all(deliveries).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(signed(&app, "/webhooks/messenger", &body).await, 200);
    app.projected().await;
    assert_eq!(conversations(&app).await, vec![("(none)".to_string(), vec!["hello once".to_string()])]);
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MessageReceived'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(received, 1);
}

#[tokio::test]
async fn every_message_of_a_payload_is_stored_three_from_two_contacts_in_two_conversations() {
    let app = TestApp::spawn().await;
    whatsapp_inbox(&app, "111").await;
    let messenger = messenger_inbox(&app, "222").await;
    let whatsapp = whatsapp_payload(&[
        ("111", &[("5511911110000", "wamid.1", "Oi"), ("5511922220000", "wamid.2", "Olá")]),
        ("111", &[("5511911110000", "wamid.3", "Tudo bem?")]),
    ]);
    assert_eq!(signed(&app, "/webhooks/whatsapp", &whatsapp).await, 200);
    let messenger_body = messenger_payload(&[
        ("222", "PSID-A", "m_1", "hello"),
        ("222", "PSID-B", "m_2", "hi there"),
        ("222", "PSID-A", "m_3", "anyone?"),
    ]);
    assert_eq!(signed(&app, &format!("/webhooks/messenger/{messenger}"), &messenger_body).await, 200);
    app.projected().await;
    let found = conversations(&app).await;
    let expected = vec![
        ("(none)".to_string(), vec!["anyone?".to_string(), "hello".to_string()]),
        ("(none)".to_string(), vec!["hi there".to_string()]),
        ("Contact 5511911110000".to_string(), vec!["Oi".to_string(), "Tudo bem?".to_string()]),
        ("Contact 5511922220000".to_string(), vec!["Olá".to_string()]),
    ];
    assert_eq!(found, expected);
}

#[tokio::test]
async fn a_bad_or_missing_signature_is_401_a_malformed_body_400_and_neither_writes_anything() {
    let app = TestApp::spawn().await;
    let whatsapp = whatsapp_inbox(&app, "111").await;
    let messenger = messenger_inbox(&app, "222").await;
    app.projected().await;
    let before = app.event_count().await;
    let wa_body = whatsapp_payload(&[("111", &[("5511911110000", "wamid.1", "Oi")])]);
    let fb_body = messenger_payload(&[("222", "PSID-A", "m_1", "hello")]);
    for (path, body) in [
        (format!("/webhooks/whatsapp/{whatsapp}"), &wa_body),
        ("/webhooks/whatsapp".to_string(), &wa_body),
        (format!("/webhooks/messenger/{messenger}"), &fb_body),
        ("/webhooks/messenger".to_string(), &fb_body),
    ] {
        assert_eq!(post(&app, &path, body, None).await.0, 401, "{path}: no signature");
        assert_eq!(post(&app, &path, body, Some(sign("another-app", body))).await.0, 401, "{path}: another app");
        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        assert_eq!(post(&app, &path, &tampered, Some(sign(APP_SECRET, body))).await.0, 401, "{path}: tampered");
    }
    // Signed but not the provider's envelope: 400.
    for (path, body) in [
        (format!("/webhooks/whatsapp/{whatsapp}"), b"{\"hello\": 1}".to_vec()),
        (format!("/webhooks/messenger/{messenger}"), b"not json".to_vec()),
    ] {
        assert_eq!(signed(&app, &path, &body).await, 400, "{path}");
    }
    // A number no inbox has, and kinds not handled: acknowledged, nothing stored.
    let elsewhere = whatsapp_payload(&[("999", &[("5511911110000", "wamid.9", "Oi")])]);
    assert_eq!(signed(&app, "/webhooks/whatsapp", &elsewhere).await, 200);
    let unsupported = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": "111"},
         "messages": [{"from": "1", "id": "wamid.u", "timestamp": "1749416383", "type": "unsupported", "unsupported": {}}]}},
        {"field": "message_template_status_update", "value": {"event": "APPROVED"}}]}]}))
    .unwrap();
    assert_eq!(signed(&app, &format!("/webhooks/whatsapp/{whatsapp}"), &unsupported).await, 200);
    assert_eq!(post(&app, "/webhooks/whatsapp/not-an-id", &wa_body, Some(sign(APP_SECRET, &wa_body))).await.0, 404);
    assert_eq!(post(&app, "/webhooks/telegram", &wa_body, Some(sign(APP_SECRET, &wa_body))).await.0, 404);
    app.projected().await;
    assert_eq!(app.event_count().await, before, "nothing was written");
}

#[tokio::test]
async fn a_four_megabyte_payload_is_accepted() {
    let app = TestApp::spawn().await;
    let inbox = whatsapp_inbox(&app, "111").await;
    let text = "x".repeat(100_000);
    let messages: Vec<(String, String)> = (0..38).map(|i| (format!("wamid.big{i}"), text.clone())).collect();
    let refs: Vec<(&str, &str, &str)> =
        messages.iter().map(|(id, t)| ("5511911110000", id.as_str(), t.as_str())).collect();
    let body = whatsapp_payload(&[("111", &refs)]);
    assert!(body.len() > 3_800_000 && body.len() < 4 * 1024 * 1024, "{}", body.len());
    assert_eq!(signed(&app, &format!("/webhooks/whatsapp/{inbox}"), &body).await, 200);
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MessageReceived'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(received, 38);
}

#[tokio::test]
async fn redeliveries_spread_over_two_servers_store_the_message_once() {
    let app = TestApp::spawn().await;
    whatsapp_inbox(&app, "111").await;
    let other = tests::TestServer::start(&app.database_url).await;
    let body = whatsapp_payload(&[("111", &[("5511911110000", "wamid.twice", "Oi")])]);
    let signature = sign(APP_SECRET, &body);
    let deliveries = (0..10).map(|n| {
        let address = if n % 2 == 0 { app.server.address.clone() } else { other.address.clone() };
        let (client, body, signature) = (app.client.clone(), body.clone(), signature.clone());
        async move {
            let response = client
                .post(format!("{address}/webhooks/whatsapp"))
                .header("X-Hub-Signature-256", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(deliveries).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    app.projected().await;
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MessageReceived'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(received, 1);
    other.stop().await;
}
