//! The access matrix, over every query and mutation the schema has: a resolver added
//! without a row here fails the suite. For each operation, three callers who must not
//! reach account A's data try: nobody, another account's administrator, and an agent
//! of A who is in none of its inboxes. Nothing of A may change, and nothing of A may
//! show in an answer.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use tests::TestApp;

/// What the operation is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Needs no credentials (login, invitations).
    Public,
    /// Acts on the caller's own user (profile, password, tokens, session).
    Own,
    /// An administrator's action on the account (refused to agents).
    Admin,
    /// Names one of A's conversations or inboxes: refused to both outsiders.
    Targeted,
    /// Lists what the caller may see: outsiders see none of A's ids.
    Listing,
}

struct Ids {
    inbox: String,
    conversation: String,
    contact: String,
    agent: String,
    token: String,
    webhook: String,
}

fn operations(ids: &Ids) -> Vec<(&'static str, Kind, String)> {
    let c = &ids.conversation;
    let i = &ids.inbox;
    let w = &ids.webhook;
    vec![
        // Queries.
        ("me", Kind::Own, "{ me { id } }".into()),
        ("apiTokens", Kind::Own, "{ apiTokens { id } }".into()),
        ("conversations", Kind::Listing, "{ conversations { edges { node { id } } } }".into()),
        ("conversationCounts", Kind::Listing, "{ conversationCounts { all } }".into()),
        ("inboxes", Kind::Listing, "{ inboxes { id } }".into()),
        ("agents", Kind::Listing, "{ agents { id } }".into()),
        ("teams", Kind::Listing, "{ teams { id } }".into()),
        ("labels", Kind::Listing, "{ labels { id } }".into()),
        ("customRoles", Kind::Listing, "{ customRoles { id } }".into()),
        ("contacts", Kind::Listing, "{ contacts { edges { node { id } } } }".into()),
        ("liveMetrics", Kind::Listing, "{ liveMetrics { open byInbox { inbox { id } open } byAgent { agent { id } } } }".into()),
        ("conversation", Kind::Targeted, format!("{{ conversation(id: \"{c}\") {{ id }} }}")),
        ("conversationHistory", Kind::Targeted, format!("{{ conversationHistory(id: \"{c}\") {{ eventType }} }}")),
        ("verifyConversationHistory", Kind::Targeted, format!("{{ verifyConversationHistory(id: \"{c}\") {{ intact }} }}")),
        ("inbox", Kind::Targeted, format!("{{ inbox(id: \"{i}\") {{ id }} }}")),
        ("contact", Kind::Targeted, format!("{{ contact(id: \"{}\") {{ id }} }}", ids.contact)),
        ("events", Kind::Admin, "{ events { edges { node { aggregateId } } } }".into()),
        ("auditLog", Kind::Admin, "{ auditLog { edges { node { aggregateId } } } }".into()),
        // Mutations.
        ("login", Kind::Public, "mutation { login(input: {email: \"admin@acme.test\", password: \"wrong password\"}) { token } }".into()),
        ("acceptInvitation", Kind::Public, "mutation { acceptInvitation(input: {token: \"ibi_nope\", password: \"long enough pw\"}) { token } }".into()),
        ("logout", Kind::Own, "mutation { logout { loggedOut } }".into()),
        ("changePassword", Kind::Own, "mutation { changePassword(input: {currentPassword: \"wrong password\", newPassword: \"whatever it is\"}) { changed } }".into()),
        ("createApiToken", Kind::Own, "mutation { createApiToken(input: {name: \"mine\"}) { id } }".into()),
        ("revokeApiToken", Kind::Targeted, format!("mutation {{ revokeApiToken(input: {{id: \"{}\"}}) {{ revoked }} }}", ids.token)),
        ("createInbox", Kind::Admin, "mutation { createInbox(input: {name: \"x\", channel: API}) { id } }".into()),
        ("updateInbox", Kind::Admin, format!("mutation {{ updateInbox(input: {{inboxId: \"{i}\", name: \"renamed\"}}) {{ id }} }}")),
        ("addInboxMember", Kind::Admin, format!("mutation {{ addInboxMember(input: {{inboxId: \"{i}\", userId: \"{}\"}}) {{ id }} }}", ids.agent)),
        ("removeInboxMember", Kind::Admin, format!("mutation {{ removeInboxMember(input: {{inboxId: \"{i}\", userId: \"{}\"}}) {{ id }} }}", ids.agent)),
        ("createTeam", Kind::Admin, "mutation { createTeam(input: {name: \"x\"}) { id } }".into()),
        ("addTeamMember", Kind::Admin, format!("mutation {{ addTeamMember(input: {{teamId: \"{i}\", userId: \"{}\"}}) {{ id }} }}", ids.agent)),
        ("removeTeamMember", Kind::Admin, format!("mutation {{ removeTeamMember(input: {{teamId: \"{i}\", userId: \"{}\"}}) {{ id }} }}", ids.agent)),
        ("updateContact", Kind::Targeted, format!("mutation {{ updateContact(input: {{contactId: \"{}\", name: \"x\"}}) {{ id }} }}", ids.contact)),
        ("deleteLabel", Kind::Admin, format!("mutation {{ deleteLabel(input: {{labelId: \"{i}\"}}) {{ deleted }} }}")),
        ("deleteTeam", Kind::Admin, format!("mutation {{ deleteTeam(input: {{teamId: \"{i}\"}}) {{ deleted }} }}")),
        ("createLabel", Kind::Admin, "mutation { createLabel(input: {title: \"x\", color: \"#ff0000\"}) { id } }".into()),
        ("createAgent", Kind::Admin, "mutation { createAgent(input: {email: \"new@acme.test\", name: \"N\", role: ADMINISTRATOR}) { id } }".into()),
        ("setAgentRole", Kind::Admin, format!("mutation {{ setAgentRole(input: {{userId: \"{}\", role: ADMINISTRATOR}}) {{ id }} }}", ids.agent)),
        ("removeAgent", Kind::Admin, format!("mutation {{ removeAgent(input: {{userId: \"{}\"}}) {{ removed }} }}", ids.agent)),
        ("createCustomRole", Kind::Admin, "mutation { createCustomRole(input: {name: \"x\", permissions: [REPORT_MANAGE]}) { id } }".into()),
        ("receiveMessage", Kind::Targeted, format!("mutation {{ receiveMessage(input: {{inboxId: \"{i}\", contact: {{sourceId: \"z\"}}, sourceId: \"z1\", content: \"spoof\"}}) {{ id }} }}")),
        ("sendMessage", Kind::Targeted, format!("mutation {{ sendMessage(input: {{conversationId: \"{c}\", content: \"hi\"}}) {{ id }} }}")),
        ("uploadAttachment", Kind::Targeted, format!("mutation {{ uploadAttachment(input: {{conversationId: \"{c}\", file: \"#__graphql_file__:0\"}}) {{ id }} }}")),
        ("sendTemplate", Kind::Targeted, format!("mutation {{ sendTemplate(input: {{conversationId: \"{c}\", name: \"x\", language: \"en_US\"}}) {{ id }} }}")),
        ("messageTemplates", Kind::Targeted, format!("{{ messageTemplates(inboxId: \"{i}\") {{ name }} }}")),
        ("syncMessageTemplates", Kind::Admin, format!("mutation {{ syncMessageTemplates(input: {{inboxId: \"{i}\"}}) {{ templates {{ name }} }} }}")),
        ("assignConversation", Kind::Targeted, format!("mutation {{ assignConversation(input: {{conversationId: \"{c}\", assigneeId: null}}) {{ id }} }}")),
        ("setConversationStatus", Kind::Targeted, format!("mutation {{ setConversationStatus(input: {{conversationId: \"{c}\", status: RESOLVED}}) {{ id }} }}")),
        ("setConversationPriority", Kind::Targeted, format!("mutation {{ setConversationPriority(input: {{conversationId: \"{c}\", priority: HIGH}}) {{ id }} }}")),
        ("setConversationLabels", Kind::Targeted, format!("mutation {{ setConversationLabels(input: {{conversationId: \"{c}\", labels: [\"x\"]}}) {{ id }} }}")),
        ("setConversationMuted", Kind::Targeted, format!("mutation {{ setConversationMuted(input: {{conversationId: \"{c}\", muted: true}}) {{ id }} }}")),
        ("setAvailability", Kind::Own, "mutation { setAvailability(input: {status: BUSY}) { status } }".into()),
        ("heartbeat", Kind::Own, "mutation { heartbeat { status } }".into()),
        ("setTyping", Kind::Targeted, format!("mutation {{ setTyping(input: {{conversationId: \"{c}\", on: true}}) {{ on }} }}")),
        ("markConversationRead", Kind::Targeted, format!("mutation {{ markConversationRead(input: {{conversationId: \"{c}\"}}) {{ id }} }}")),
        ("setConversationCustomAttributes", Kind::Targeted, format!("mutation {{ setConversationCustomAttributes(input: {{conversationId: \"{c}\", attributes: {{plan: \"gold\"}}}}) {{ id }} }}")),
        ("eraseAgent", Kind::Admin, format!("mutation {{ eraseAgent(input: {{userId: \"{}\", reason: \"test\"}}) {{ erased }} }}", ids.agent)),
        ("webhooks", Kind::Admin, "{ webhooks { id url } }".into()),
        ("webhookDeliveries", Kind::Admin, format!("{{ webhookDeliveries(webhookId: \"{w}\") {{ edges {{ node {{ id }} }} }} }}")),
        ("createWebhook", Kind::Admin, "mutation { createWebhook(input: {name: \"x\", url: \"http://127.0.0.1:9/x\", events: [\"message_created\"]}) { id } }".into()),
        ("updateWebhook", Kind::Admin, format!("mutation {{ updateWebhook(input: {{webhookId: \"{w}\", name: \"renamed\"}}) {{ webhook {{ id }} }} }}")),
        ("rotateWebhookSecret", Kind::Admin, format!("mutation {{ rotateWebhookSecret(input: {{webhookId: \"{w}\"}}) {{ secret }} }}")),
        ("deleteWebhook", Kind::Admin, format!("mutation {{ deleteWebhook(input: {{webhookId: \"{w}\"}}) {{ webhookId }} }}")),
        ("sendTestWebhook", Kind::Admin, format!("mutation {{ sendTestWebhook(input: {{webhookId: \"{w}\"}}) {{ deliveryId }} }}")),
        ("eraseContact", Kind::Admin, format!("mutation {{ eraseContact(input: {{contactId: \"{}\", reason: \"test\"}}) {{ erased }} }}", ids.contact)),
        // The caller's own notifications: anyone else's are NOT_FOUND (notifications.rs).
        ("notifications", Kind::Listing, "{ notifications { edges { node { id } } } }".into()),
        ("unreadNotificationsCount", Kind::Listing, "{ unreadNotificationsCount }".into()),
        ("notificationSettings", Kind::Own, "{ notificationSettings { type inApp } }".into()),
        ("vapidPublicKey", Kind::Own, "{ vapidPublicKey }".into()),
        ("markNotificationRead", Kind::Own, format!("mutation {{ markNotificationRead(input: {{id: \"{c}\"}}) {{ id }} }}")),
        ("markNotificationUnread", Kind::Own, format!("mutation {{ markNotificationUnread(input: {{id: \"{c}\"}}) {{ id }} }}")),
        ("snoozeNotification", Kind::Own, format!("mutation {{ snoozeNotification(input: {{id: \"{c}\", until: \"2100-01-01T00:00:00Z\"}}) {{ id }} }}")),
        ("markAllNotificationsRead", Kind::Own, "mutation { markAllNotificationsRead { unreadCount } }".into()),
        ("setNotificationSettings", Kind::Own, "mutation { setNotificationSettings(input: {type: MENTIONED, inApp: true, email: false, push: false}) { type } }".into()),
        ("registerPushSubscription", Kind::Own, "mutation { registerPushSubscription(input: {endpoint: \"http://127.0.0.1:9/push\", p256dh: \"x\", auth: \"y\"}) { id } }".into()),
    ]
}

fn code(answer: &Value) -> Option<&str> {
    answer["errors"][0]["extensions"]["code"].as_str()
}

async fn schema_operations(app: &TestApp) -> BTreeSet<String> {
    let schema =
        app.ok("{ __schema { queryType { fields { name } } mutationType { fields { name } } } }", json!({})).await;
    ["queryType", "mutationType"]
        .iter()
        .flat_map(|root| schema["__schema"][root]["fields"].as_array().unwrap().clone())
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

/// Account A's events and read-model rows, to prove nothing of A changed.
async fn account_state(app: &TestApp) -> (i64, std::collections::BTreeMap<String, Vec<String>>) {
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE account_id = $1")
        .bind(app.account_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    app.projected().await;
    let account = app.account_id.to_string();
    let mut models = app.read_models().await;
    for rows in models.values_mut() {
        rows.retain(|row| row.contains(&account));
    }
    (events, models)
}

#[tokio::test]
async fn every_operation_refuses_outsiders_and_changes_nothing_of_the_account() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Private").await;
    let received = app.receive(&inbox, "secret-contact", "m1", "confidential").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    // The answer did not ask for the contact, so the contacts' read model may still be behind.
    app.projected().await;
    let contact: String = sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts WHERE account_id = $1")
        .bind(app.account_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (agent, agent_token) = app.agent("outsider@acme.test", "AGENT").await;
    let token = app.ok("mutation { createApiToken(input: {name: \"A's\"}) { id } }", json!({})).await["createApiToken"]
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    let webhook = app
        .ok("mutation { createWebhook(input: {name: \"A's\", url: \"http://127.0.0.1:9/a-secret-path\", events: [\"contact_updated\"]}) { id } }", json!({}))
        .await["createWebhook"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = app.other_account().await;
    let ids = Ids {
        inbox: inbox.clone(),
        conversation: conversation.clone(),
        contact: contact.clone(),
        agent,
        token,
        webhook: webhook.clone(),
    };

    let table = operations(&ids);
    let listed: BTreeSet<String> = table.iter().map(|(name, _, _)| name.to_string()).collect();
    assert_eq!(schema_operations(&app).await, listed, "every operation of the schema has a row in the matrix");
    // Subscriptions are checked over WebSocket (`subscriptions.rs`): outsiders, non-members
    // and revoked tokens receive nothing. A new one must join that test.
    let subscriptions = app.ok("{ __schema { subscriptionType { fields { name } } } }", json!({})).await;
    let roots: Vec<&str> = subscriptions["__schema"]["subscriptionType"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(roots, crate::subscriptions::CHECKED, "every subscription is in the access checks of subscriptions.rs");

    // Nothing of A may show to the outsiders: its conversation, inbox or contact ids.
    let secrets = [conversation.as_str(), inbox.as_str(), contact.as_str(), "confidential", &webhook, "a-secret-path"];
    let before = account_state(&app).await;
    for (name, kind, operation) in &table {
        let anonymous = app.gql_as(None, operation, json!({})).await;
        if *kind != Kind::Public {
            assert_eq!(code(&anonymous), Some("UNAUTHENTICATED"), "{name} without credentials: {anonymous}");
        }
        for (who, token) in
            [("another account's administrator", other.token.as_str()), ("a non-member agent", &agent_token)]
        {
            let expected: &[&str] = match (kind, who.starts_with("another")) {
                // The caller's own things (logging out would end this test's session).
                (Kind::Public | Kind::Own, _) => continue,
                (Kind::Targeted, true) => &["NOT_FOUND"],
                // One's own token list has no other user's token in it.
                (Kind::Targeted, false) if *name == "revokeApiToken" => &["NOT_FOUND"],
                (Kind::Targeted, false) => &["FORBIDDEN"],
                (Kind::Admin, false) => &["FORBIDDEN"],
                // Acting in their own account is their right; naming A's things is not.
                (Kind::Admin, true) => &["NOT_FOUND", "FORBIDDEN", ""],
                (Kind::Listing, _) => &["", "FORBIDDEN"],
            };
            let answer = app.gql_as(Some(token), operation, json!({})).await;
            let got = code(&answer).unwrap_or("");
            assert!(expected.contains(&got), "{name} by {who}: expected one of {expected:?}, got {answer}");
            for secret in secrets {
                assert!(!answer.to_string().contains(secret), "{name} by {who} shows A's {secret}: {answer}");
            }
        }
    }
    assert_eq!(account_state(&app).await, before, "nothing of account A changed");
}

/// A selection of every field of `type_name` down to `depth` object levels, from the
/// introspected `types`: leaves are scalars and enums; a field that needs an argument
/// other than `first` is left out (the roots pass theirs).
fn everything(types: &[Value], type_name: &str, depth: usize) -> Option<String> {
    let ty = types.iter().find(|t| t["name"] == type_name)?;
    let mut parts = Vec::new();
    for field in ty["fields"].as_array()? {
        let needs_args = field["args"].as_array().unwrap().iter().any(|a| a["type"]["kind"] == "NON_NULL");
        if needs_args {
            continue;
        }
        let mut of = &field["type"];
        while of["kind"] == "NON_NULL" || of["kind"] == "LIST" {
            of = &of["ofType"];
        }
        let name = field["name"].as_str().unwrap();
        match of["kind"].as_str() {
            Some("SCALAR" | "ENUM") => parts.push(name.to_string()),
            Some("OBJECT") if depth > 0 => {
                if let Some(inner) = everything(types, of["name"].as_str().unwrap(), depth - 1) {
                    let first = field["args"].as_array().unwrap().iter().any(|a| a["name"] == "first");
                    parts.push(format!("{name}{} {{ {inner} }}", if first { "(first: 5)" } else { "" }));
                }
            }
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Every object reachable from every answer is authorized for the caller: an agent
/// whose role lets them see only their own conversations, and no contact details,
/// walks every field of every query root, and every mutation that answers with an
/// object, five object levels deep (connections count as levels), and sees nothing of a conversation that is not
/// theirs nor any contact's e-mail or phone, whichever path they take.
#[tokio::test]
async fn no_path_through_any_answer_reaches_what_the_caller_may_not_see() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let role = app
        .ok("mutation { createCustomRole(input: {name: \"Own\", permissions: [CONVERSATION_PARTICIPATING_MANAGE]}) { id } }", json!({}))
        .await;
    let role = role["createCustomRole"]["id"].as_str().unwrap().to_string();
    let (agent, token) = app.agent("own@acme.test", "AGENT").await;
    app.ok(
        "mutation($u: ID!, $r: ID!) { setAgentRole(input: {userId: $u, role: AGENT, customRoleId: $r}) { id } }",
        json!({ "u": agent, "r": role }),
    )
    .await;
    app.ok(
        "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
        json!({ "i": inbox, "u": agent }),
    )
    .await;
    let mine =
        app.receive(&inbox, "mine", "m-1", "about my case").await["conversation"]["id"].as_str().unwrap().to_string();
    let theirs =
        app.receive(&inbox, "theirs", "t-1", "secret-theirs").await["conversation"]["id"].as_str().unwrap().to_string();
    let assign =
        "mutation($c: ID!, $u: ID!) { assignConversation(input: {conversationId: $c, assigneeId: $u}) { id } }";
    app.ok(assign, json!({ "c": mine, "u": agent })).await;
    app.ok(assign, json!({ "c": theirs, "u": app.user_id.to_string() })).await;
    app.projected().await;
    let contact: String =
        sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts WHERE email = 'theirs@customer.test'")
            .fetch_one(&app.pool)
            .await
            .unwrap();

    let schema = app
        .ok("{ __schema { types { name kind fields { name args { name type { kind } } type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }", json!({}))
        .await;
    let types = schema["__schema"]["types"].as_array().unwrap().clone();
    // Arguments naming the conversation the agent may not see (and its contact, inbox).
    let arguments = |field: &str| -> Option<String> {
        Some(match field {
            "conversation" | "conversationHistory" | "verifyConversationHistory" => format!("(id: \"{theirs}\")"),
            "contact" => format!("(id: \"{contact}\")"),
            "inbox" => format!("(id: \"{inbox}\")"),
            "sendMessage" => format!("(input: {{conversationId: \"{theirs}\", content: \"x\"}})"),
            "sendTemplate" => format!("(input: {{conversationId: \"{theirs}\", name: \"x\", language: \"en_US\"}})"),
            "messageTemplates" => format!("(inboxId: \"{inbox}\")"),
            "setConversationStatus" => format!("(input: {{conversationId: \"{theirs}\", status: OPEN}})"),
            "setConversationPriority" => format!("(input: {{conversationId: \"{theirs}\", priority: LOW}})"),
            "setConversationLabels" => format!("(input: {{conversationId: \"{theirs}\", labels: []}})"),
            "setConversationMuted" => format!("(input: {{conversationId: \"{theirs}\", muted: false}})"),
            "markConversationRead" => format!("(input: {{conversationId: \"{theirs}\"}})"),
            "setTyping" => format!("(input: {{conversationId: \"{theirs}\", on: true}})"),
            "assignConversation" => format!("(input: {{conversationId: \"{theirs}\", assigneeId: \"{agent}\"}})"),
            "receiveMessage" => format!("(input: {{inboxId: \"{inbox}\", contact: {{sourceId: \"theirs\"}}, sourceId: \"again\", content: \"x\"}})"),
            _ => return None,
        })
    };
    let events = app.event_count().await;
    let mut walked = 0;
    for (root, keyword) in [("QueryRoot", "query"), ("MutationRoot", "mutation")] {
        let root = types.iter().find(|t| t["name"] == root).unwrap();
        for field in root["fields"].as_array().unwrap() {
            let name = field["name"].as_str().unwrap();
            let needs_args = field["args"].as_array().unwrap().iter().any(|a| a["type"]["kind"] == "NON_NULL");
            let args = match (needs_args, arguments(name)) {
                (true, Some(args)) => args,
                (true, None) => continue,
                (false, _) if keyword == "mutation" => continue,
                (false, _) => String::new(),
            };
            let mut of = &field["type"];
            while of["kind"] == "NON_NULL" || of["kind"] == "LIST" {
                of = &of["ofType"];
            }
            let selection = match of["kind"].as_str() {
                Some("OBJECT") => match everything(&types, of["name"].as_str().unwrap(), 5) {
                    Some(inner) => format!(" {{ {inner} }}"),
                    None => continue,
                },
                _ => String::new(),
            };
            let query = format!("{keyword} {{ {name}{args}{selection} }}");
            let answer = app.gql_as(Some(&token), &query, json!({})).await;
            let refused_unrun = answer["errors"].as_array().into_iter().flatten().any(|e| {
                let message = e["message"].as_str().unwrap_or("");
                message.contains("complex") || message.contains("expanded") || message.contains("nested too deep")
            });
            assert!(!refused_unrun, "the walk must run, not be refused by the request limits: {query}\n{answer}");
            for secret in ["secret-theirs", "theirs@customer.test", "mine@customer.test", theirs.as_str()] {
                assert!(!answer.to_string().contains(secret), "{name} shows {secret}: {query}\n{answer}");
            }
            walked += 1;
        }
    }
    assert!(walked >= 20, "every root was walked ({walked})");
    assert_eq!(app.event_count().await, events, "no refused mutation wrote anything");
}
