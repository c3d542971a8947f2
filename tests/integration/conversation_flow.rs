//! The product's core path through the API alone.

use serde_json::json;
use tests::TestApp;

const HISTORY: &str = "query($id: ID!) { conversationHistory(id: $id) { eventType actor recordedAt payload } }";

#[tokio::test]
async fn a_conversation_is_deduplicated_answered_resolved_and_reopened_with_a_full_history() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Website API").await;

    let first = app.receive(&inbox, "customer-1", "a", "My order is late").await;
    let second = app.receive(&inbox, "customer-1", "b", "Order #1234").await;
    let again = app.receive(&inbox, "customer-1", "a", "My order is late").await;
    let conversation = first["conversation"]["id"].as_str().unwrap().to_string();
    assert_eq!(second["conversation"]["id"], first["conversation"]["id"], "one conversation per contact and inbox");
    assert_eq!(again["id"], first["id"], "a redelivered message returns the original");
    assert_eq!(first["conversation"]["displayId"], 1);
    assert_eq!(again["conversation"]["messagesCount"], 2);

    let reply = app
        .ok(
            "mutation($id: ID!) { sendMessage(input: {conversationId: $id, content: \"It ships today\"}) { id messageType private } }",
            json!({ "id": conversation }),
        )
        .await;
    assert_eq!(reply["sendMessage"]["messageType"], "OUTGOING");
    assert_eq!(reply["sendMessage"]["private"], false);
    let note = app
        .ok(
            "mutation($id: ID!) { sendMessage(input: {conversationId: $id, content: \"VIP customer\", private: true}) { id private } }",
            json!({ "id": conversation }),
        )
        .await;
    assert_eq!(note["sendMessage"]["private"], true);

    let resolved = app
        .ok(
            "mutation($id: ID!) { setConversationStatus(input: {conversationId: $id, status: RESOLVED}) { id status } }",
            json!({ "id": conversation }),
        )
        .await;
    assert_eq!(resolved["setConversationStatus"]["status"], "RESOLVED");
    let listed =
        app.ok("{ conversations(filter: {status: RESOLVED}) { edges { node { id status } } } }", json!({})).await;
    assert_eq!(listed["conversations"]["edges"][0]["node"]["id"], conversation.as_str());
    let open = app.ok("{ conversations(filter: {status: OPEN}) { edges { node { id } } } }", json!({})).await;
    assert_eq!(open["conversations"]["edges"].as_array().unwrap().len(), 0);

    let reopened = app.receive(&inbox, "customer-1", "c", "Still not here").await;
    assert_eq!(reopened["conversation"]["id"], conversation.as_str());
    assert_eq!(reopened["conversation"]["status"], "OPEN");

    let data = app
        .ok(
            "query($id: ID!) { conversation(id: $id) { messages { edges { node { content messageType private } } } } }",
            json!({ "id": conversation }),
        )
        .await;
    let timeline: Vec<(String, String, bool)> = data["conversation"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let n = &e["node"];
            (
                n["messageType"].as_str().unwrap().into(),
                n["content"].as_str().unwrap().into(),
                n["private"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        timeline,
        vec![
            ("INCOMING".into(), "My order is late".into(), false),
            ("INCOMING".into(), "Order #1234".into(), false),
            ("OUTGOING".into(), "It ships today".into(), false),
            ("OUTGOING".into(), "VIP customer".into(), true),
            ("ACTIVITY".into(), "Conversation was marked resolved by Ana Admin".into(), false),
            ("INCOMING".into(), "Still not here".into(), false),
        ]
    );

    let history = app.ok(HISTORY, json!({ "id": conversation })).await;
    let steps: Vec<(String, String)> = history["conversationHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["eventType"].as_str().unwrap().into(), e["actor"].as_str().unwrap().split(':').next().unwrap().into())
        })
        .collect();
    let step = |t: &str, a: &str| (t.to_string(), a.to_string());
    assert_eq!(
        steps,
        vec![
            step("ConversationStarted", "contact"),
            step("MessageReceived", "contact"),
            step("MessageReceived", "contact"),
            step("MessageSent", "user"),
            step("MessageSent", "user"),
            step("StatusChanged", "user"),
            step("MessageReceived", "contact"),
            step("StatusChanged", "contact"),
        ]
    );
    let user_actor = format!("user:{}", app.user_id);
    assert_eq!(history["conversationHistory"][3]["actor"], user_actor.as_str());
    assert_eq!(history["conversationHistory"][1]["payload"]["content"], "My order is late");

    // The analysts' feed has every one of those events, in the log's commit order.
    let feed = app.ok("{ events(first: 1000) { edges { node { position eventType aggregateId } } } }", json!({})).await;
    let conversation_events: Vec<&str> = feed["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node"]["aggregateId"] == conversation.as_str())
        .map(|e| e["node"]["eventType"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = steps.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(conversation_events, expected);
}

#[tokio::test]
async fn assignment_adds_an_activity_and_moves_the_conversation_between_assignee_tabs() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let conversation =
        app.receive(&inbox, "c-9", "m1", "help").await["conversation"]["id"].as_str().unwrap().to_string();
    let team = app.ok("mutation { createTeam(input: {name: \"Billing\"}) { id name } }", json!({})).await;
    let team_id = team["createTeam"]["id"].as_str().unwrap().to_string();
    let me = app.user_id.to_string();
    app.ok(
        "mutation($t: ID!, $u: ID!) { addTeamMember(input: {teamId: $t, userId: $u}) { id } }",
        json!({ "t": team_id, "u": me }),
    )
    .await;
    app.ok(
        "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
        json!({ "i": inbox, "u": me }),
    )
    .await;
    let groups = app.ok("{ teams { name members { name } } inboxes { name members { name role } } }", json!({})).await;
    assert_eq!(groups["teams"], json!([{ "name": "Billing", "members": [{ "name": "Ana Admin" }] }]));
    assert_eq!(
        groups["inboxes"],
        json!([{ "name": "Support", "members": [{ "name": "Ana Admin", "role": "ADMINISTRATOR" }] }])
    );

    let assigned = app
        .ok(
            "mutation($c: ID!, $a: ID!, $t: ID!) { assignConversation(input: {conversationId: $c, assigneeId: $a, teamId: $t}) \
             { assignee { id name } team { name } } }",
            json!({ "c": conversation, "a": app.user_id.to_string(), "t": team_id }),
        )
        .await;
    assert_eq!(assigned["assignConversation"]["assignee"]["name"], "Ana Admin");
    assert_eq!(assigned["assignConversation"]["team"]["name"], "Billing");
    let mine = app.ok("{ conversationCounts { mine unassigned all } }", json!({})).await;
    assert_eq!(mine["conversationCounts"], json!({ "mine": 1, "unassigned": 0, "all": 1 }));

    let unassigned = app
        .ok(
            "mutation($c: ID!) { assignConversation(input: {conversationId: $c, assigneeId: null}) { assignee { id } team { name } } }",
            json!({ "c": conversation }),
        )
        .await;
    assert_eq!(unassigned["assignConversation"]["assignee"], serde_json::Value::Null);
    assert_eq!(unassigned["assignConversation"]["team"]["name"], "Billing", "an absent teamId leaves the team");

    let activities = app
        .ok(
            "query($c: ID!) { conversation(id: $c) { messages { edges { node { content messageType } } } } }",
            json!({ "c": conversation }),
        )
        .await;
    let lines: Vec<&str> = activities["conversation"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node"]["messageType"] == "ACTIVITY")
        .map(|e| e["node"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            "Assigned to Billing team by Ana Admin",
            "Ana Admin self-assigned this conversation",
            "Conversation unassigned by Ana Admin"
        ]
    );
}

#[tokio::test]
async fn a_first_messages_answer_shows_the_contact_it_introduced() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Website API").await;
    // Hold the contacts' read model back, so the answer shows the contact only if it
    // waits for that projector.
    let mut held = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE rm_contacts IN SHARE ROW EXCLUSIVE MODE").execute(&mut *held).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        held.commit().await.unwrap();
    });
    let answer = app
        .ok(
            "mutation($input: ReceiveMessageInput!) { receiveMessage(input: $input) { id \
             conversation { contact { id name email } } } }",
            tests::receive_variables(&inbox, "newcomer", "m-1", "Hello"),
        )
        .await;
    release.await.unwrap();
    let contact = &answer["receiveMessage"]["conversation"]["contact"];
    assert_eq!(contact["name"], "Contact newcomer");
    assert_eq!(contact["email"], "newcomer@customer.test");
}

#[tokio::test]
async fn a_team_loses_a_member_and_is_deleted_while_its_conversations_keep_their_history() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.agent("bo@acme.test", "AGENT").await;
    let team = app.ok("mutation { createTeam(input: {name: \"Billing\"}) { id } }", json!({})).await["createTeam"]
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    let member = "mutation($t: ID!, $u: ID!) { addTeamMember(input: {teamId: $t, userId: $u}) { id members { id } } }";
    let added = app.ok(member, json!({ "t": team, "u": agent })).await;
    assert_eq!(added["addTeamMember"]["members"].as_array().unwrap().len(), 1);
    let inbox = app.create_inbox("Support").await;
    let received = app.receive(&inbox, "maria", "m1", "my invoice is wrong").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    app.ok(
        "mutation($c: ID!, $t: ID!) { assignConversation(input: {conversationId: $c, teamId: $t}) { id } }",
        json!({ "c": conversation, "t": team }),
    )
    .await;

    let leave =
        "mutation($t: ID!, $u: ID!) { removeTeamMember(input: {teamId: $t, userId: $u}) { id members { id } } }";
    let left = app.ok(leave, json!({ "t": team, "u": agent })).await;
    assert_eq!(left["removeTeamMember"]["members"], json!([]));
    let again = app.gql(leave, json!({ "t": team, "u": agent })).await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "NOT_FOUND", "{again}");

    let deleted =
        app.ok("mutation($t: ID!) { deleteTeam(input: {teamId: $t}) { teamId deleted } }", json!({ "t": team })).await;
    assert_eq!(deleted["deleteTeam"], json!({ "teamId": team, "deleted": true }));
    assert_eq!(app.ok("{ teams { id } }", json!({})).await["teams"], json!([]));
    let handed = app
        .gql(
            "mutation($c: ID!, $t: ID!) { assignConversation(input: {conversationId: $c, teamId: $t}) { id } }",
            json!({ "c": conversation, "t": team }),
        )
        .await;
    assert_eq!(
        handed["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "a deleted team takes no conversation: {handed}"
    );
    let lines = app
        .ok(
            "query($c: ID!) { conversation(id: $c) { messages { edges { node { messageType content } } } } }",
            json!({ "c": conversation }),
        )
        .await;
    assert!(lines.to_string().contains("Assigned to a former team by"), "{lines}");
}

#[tokio::test]
async fn a_deleted_label_leaves_the_list_while_conversations_keep_its_title_and_it_can_be_defined_again() {
    let app = TestApp::spawn().await;
    let create = "mutation { createLabel(input: {title: \"vip\", color: \"#ff0000\"}) { id } }";
    let label = app.ok(create, json!({})).await["createLabel"]["id"].as_str().unwrap().to_string();
    let inbox = app.create_inbox("Support").await;
    let received = app.receive(&inbox, "maria", "m1", "hello").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    app.ok(
        "mutation($c: ID!) { setConversationLabels(input: {conversationId: $c, labels: [\"vip\"]}) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    let delete = "mutation($l: ID!) { deleteLabel(input: {labelId: $l}) { labelId deleted } }";
    assert_eq!(app.ok(delete, json!({ "l": label })).await["deleteLabel"]["deleted"], true);
    assert_eq!(app.ok("{ labels { id } }", json!({})).await["labels"], json!([]));
    let again = app.gql(delete, json!({ "l": label })).await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "NOT_FOUND", "{again}");
    let kept = app.ok("query($c: ID!) { conversation(id: $c) { labels } }", json!({ "c": conversation })).await;
    assert_eq!(kept["conversation"]["labels"], json!(["vip"]), "the conversation keeps the title");
    let redefined = app.ok(create, json!({})).await;
    assert_eq!(redefined["createLabel"]["id"], label, "the title can be defined again");
}

#[tokio::test]
async fn an_agent_corrects_a_contact_and_the_new_details_are_sealed_in_the_log() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    app.receive(&inbox, "maria", "m1", "hello").await;
    app.projected().await;
    let contact: String =
        sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts").fetch_one(&app.pool).await.unwrap();
    let update = "mutation($k: ID!) { updateContact(input: {contactId: $k, name: \"Maria Costa Lima\", \
                  email: \"maria.lima@example.org\"}) { id name email phone } }";
    let updated = app.ok(update, json!({ "k": contact })).await;
    assert_eq!(
        updated["updateContact"],
        json!({ "id": contact, "name": "Maria Costa Lima", "email": "maria.lima@example.org", "phone": null })
    );
    let listed = app.ok("{ conversations { edges { node { contact { name } } } } }", json!({})).await;
    assert_eq!(listed["conversations"]["edges"][0]["node"]["contact"]["name"], "Maria Costa Lima");
    let logged: Vec<String> =
        sqlx::query_scalar("SELECT payload::text FROM events WHERE event_type = 'ContactUpdated'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(logged.len(), 1);
    assert!(!logged[0].contains("maria.lima") && !logged[0].contains("Costa Lima"), "sealed: {}", logged[0]);
    let bad = app
        .gql(
            "mutation($k: ID!) { updateContact(input: {contactId: $k, email: \"not an address\"}) { id } }",
            json!({ "k": contact }),
        )
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{bad}");
    let unknown = app.gql(update, json!({ "k": uuid::Uuid::now_v7() })).await;
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "NOT_FOUND", "{unknown}");
}

#[tokio::test]
async fn contacts_are_found_by_a_name_word_an_address_or_a_number_through_a_keyed_index() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let receive = |contact: &str, name: &str, email: &str, phone: &str| {
        json!({ "input": { "inboxId": inbox, "contact": { "sourceId": contact, "name": name, "email": email, "phone": phone },
                           "sourceId": format!("{contact}-1"), "content": "hello" } })
    };
    for variables in [
        receive("a", "Maria Costa", "maria@example.com", "+55 11 99999-0000"),
        receive("b", "João Costa", "joao@example.com", "+55 21 98888-1111"),
    ] {
        app.ok(tests::RECEIVE, variables).await;
    }
    app.projected().await;
    let search = "query($s: String!) { contacts(search: $s) { edges { node { name } } } }";
    let names = |answer: serde_json::Value| -> Vec<String> {
        answer["contacts"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(app.ok(search, json!({ "s": "costa" })).await), ["João Costa", "Maria Costa"]);
    assert_eq!(names(app.ok(search, json!({ "s": "maria costa" })).await), ["Maria Costa"]);
    assert_eq!(names(app.ok(search, json!({ "s": "JOAO@example.com" })).await), ["João Costa"]);
    assert_eq!(names(app.ok(search, json!({ "s": "5511999990000" })).await), ["Maria Costa"]);
    assert!(names(app.ok(search, json!({ "s": "cost" })).await).is_empty(), "whole words only");
    let nothing = app.gql(search, json!({ "s": " ?! " })).await;
    assert_eq!(nothing["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{nothing}");

    let terms: Vec<String> =
        sqlx::query_scalar("SELECT term FROM rm_contact_terms").fetch_all(&app.pool).await.unwrap();
    assert!(!terms.is_empty() && terms.iter().all(|t| !t.contains("costa") && !t.contains("example")), "{terms:?}");

    // Corrected and erased contacts are found as they are now.
    let maria: String =
        sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts WHERE email = 'maria@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    app.ok(
        "mutation($k: ID!) { updateContact(input: {contactId: $k, name: \"Maria Lima\"}) { id } }",
        json!({ "k": maria }),
    )
    .await;
    assert_eq!(names(app.ok(search, json!({ "s": "lima" })).await), ["Maria Lima"]);
    assert_eq!(names(app.ok(search, json!({ "s": "costa" })).await), ["João Costa"]);
    let joao: String = sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts WHERE email = 'joao@example.com'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    app.ok(
        "mutation($k: ID!) { eraseContact(input: {contactId: $k, reason: \"request\"}) { erased } }",
        json!({ "k": joao }),
    )
    .await;
    assert!(names(app.ok(search, json!({ "s": "costa" })).await).is_empty(), "an erased contact is not found");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_contact_terms WHERE contact_id = $1::uuid")
        .bind(&joao)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
