//! GraphQL limits, the introspection switch, and TLS termination.

use serde_json::{json, Value};
use tests::{create_database, test_config, TestApp, TestServer};

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {answer}"))
}

/// graphql-js's `getIntrospectionQuery()`, as GraphiQL and code generators send it.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name } } } } } } }
}"#;

#[tokio::test]
async fn the_standard_introspection_and_a_full_inbox_page_fit_the_limits_and_abuse_does_not() {
    let app = TestApp::spawn().await;
    let schema = app.gql(INTROSPECTION, json!({})).await;
    assert!(schema.get("errors").is_none(), "{schema}");
    assert!(schema["data"]["__schema"]["types"].as_array().unwrap().len() > 20);

    let page = "{ conversations(first: 50) { edges { cursor node { id displayId status priority labels \
        contact { id name email } assignee { id name } \
        messages(first: 100) { edges { cursor node { id content messageType private createdAt } } pageInfo { hasNextPage endCursor } } } } \
        pageInfo { hasNextPage endCursor } } }";
    let answer = app.gql(page, json!({})).await;
    assert!(answer.get("errors").is_none(), "{answer}");

    let wide = format!("{{ {} }}", (0..25_000).map(|n| format!("a{n}: me {{ id }}")).collect::<Vec<_>>().join(" "));
    let refused = app.gql(&wide, json!({})).await;
    assert_eq!(code(&refused), "BAD_USER_INPUT");
    let deep = format!("{{ __schema {{ types {{ {}name{} }} }} }}", "ofType { ".repeat(25), " }".repeat(25));
    assert_eq!(code(&app.gql(&deep, json!({})).await), "BAD_USER_INPUT");
}

#[tokio::test]
async fn introspection_can_be_switched_off_for_production() {
    let database_url = create_database().await;
    let mut config = test_config(&database_url);
    config.graphql_introspection = false;
    let server = TestServer::start_with(config).await;
    let client = reqwest::Client::new();
    let answer = tests::gql_at(&client, &server.address, None, "{ __schema { types { name } } }", json!({})).await;
    assert!(answer["data"]["__schema"].is_null(), "the schema is not described: {answer}");
    let ordinary = tests::gql_at(&client, &server.address, None, "{ me { id } }", json!({})).await;
    assert_eq!(code(&ordinary), "UNAUTHENTICATED", "everything else works as before");
    server.stop().await;
}

#[tokio::test]
async fn the_server_terminates_tls_with_the_configured_certificate() {
    let dir = std::env::temp_dir().join(format!("inbox-tls-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let database_url = create_database().await;
    let mut config = test_config(&database_url);
    config.tls = Some(api::config::TlsFiles { cert_path: cert, key_path: key });
    let server = TestServer::start_with(config).await;
    let https = server.address.replace("http://", "https://");
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let health = client.get(format!("{https}/healthz")).send().await.expect("an HTTPS answer");
    assert!(health.headers().get("strict-transport-security").is_some(), "browsers keep to HTTPS");
    assert_eq!(health.text().await.unwrap(), "ok");
    let answer = tests::gql_at(&client, &https, None, "{ __typename }", json!({})).await;
    assert_eq!(answer["data"]["__typename"], "QueryRoot", "GraphQL over HTTPS: {answer}");
    let plain = reqwest::Client::new().get(format!("{}/healthz", server.address)).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "plain HTTP is not served on the TLS port");
    server.stop().await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn answers_carry_security_headers_and_the_console_loads_nothing_from_elsewhere() {
    let app = TestApp::spawn().await;
    let answer = app
        .client
        .post(format!("{}/graphql", app.server.address))
        .bearer_auth(&app.token)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(answer.headers().get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
    }
    assert!(answer.headers().get("strict-transport-security").is_none(), "HSTS only when serving TLS");

    let page = app.client.get(format!("{}/graphql", app.server.address)).send().await.unwrap();
    let csp = page.headers().get("content-security-policy").unwrap().to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "no asset from another origin: {html}");
    for asset in ["/graphql/console.js", "/graphql/console.css"] {
        assert!(html.contains(asset), "{asset}");
        let served = app.client.get(format!("{}{asset}", app.server.address)).send().await.unwrap();
        assert_eq!(served.status(), 200, "{asset}");
        assert!(!served.text().await.unwrap().contains("https://"), "{asset} fetches nothing from elsewhere");
    }
}

#[tokio::test]
async fn the_root_points_to_the_console_and_cors_lets_only_configured_origins_in() {
    let app = TestApp::spawn().await;
    let root = app.client.get(format!("{}/", app.server.address)).send().await.unwrap();
    assert_eq!(root.status(), 200);
    assert!(root.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(root.text().await.unwrap().contains("href=\"/graphql\""), "the page links the console");

    let preflight = |address: String| {
        let client = app.client.clone();
        async move {
            client
                .request(reqwest::Method::OPTIONS, format!("{address}/graphql"))
                .header("origin", "http://localhost:3000")
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization,content-type")
                .send()
                .await
                .unwrap()
        }
    };
    let closed = preflight(app.server.address.clone()).await;
    assert!(closed.headers().get("access-control-allow-origin").is_none(), "no origin is allowed by default");

    let config = api::config::Config {
        cors_allowed_origins: vec!["http://localhost:3000".into()],
        ..tests::test_config(&app.database_url)
    };
    let open = tests::TestServer::start_with(config).await;
    let allowed = preflight(open.address.clone()).await;
    assert_eq!(allowed.headers()["access-control-allow-origin"], "http://localhost:3000");
    let allowed_headers = allowed.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(allowed_headers.contains("authorization"), "{allowed_headers}");
    let other = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/graphql", open.address))
        .header("origin", "http://evil.test")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none(), "another origin is not let in");
    open.stop().await;
}

#[tokio::test]
async fn a_database_error_in_a_resolver_reaches_the_client_as_internal_without_its_text() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    app.receive(&inbox, "maria", "m1", "hello").await;
    app.projected().await;
    let contact: String =
        sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts").fetch_one(&app.pool).await.unwrap();
    // The read model is gone from under the server (an operator's mistake, a bad migration).
    sqlx::query("ALTER TABLE rm_contacts RENAME TO rm_contacts_elsewhere").execute(&app.pool).await.unwrap();
    let asked = [
        ("query($k: ID!) { contact(id: $k) { id name } }", json!({ "k": contact })),
        ("{ contacts { edges { node { id } } } }", json!({})),
    ];
    for (query, variables) in asked {
        let answer = app.gql(query, variables).await;
        let error = &answer["errors"][0];
        assert_eq!(error["extensions"]["code"], "INTERNAL", "{answer}");
        assert_eq!(error["message"], "internal error", "{answer}");
        assert!(!answer.to_string().contains("rm_contacts"), "no database text reaches the client: {answer}");
    }
    let malformed = app.gql("{ conversations(first: \"many\") { edges { node { id } } } }", json!({})).await;
    assert_eq!(malformed["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{malformed}");
}

#[tokio::test]
async fn metrics_count_requests_by_operation_and_outcome_with_latency_in_flight_pool_and_lag() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        app.ok("query Me { me { id } }", json!({})).await;
    }
    let refused = app.gql_as(None, "query Me { me { id } }", json!({})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{refused}");
    let metrics = app.client.get(format!("{}/metrics", app.server.address)).send().await.unwrap().text().await.unwrap();
    for expected in [
        "inbox_graphql_requests_total{operation=\"Me\",code=\"OK\"} 3",
        "inbox_graphql_requests_total{operation=\"Me\",code=\"UNAUTHENTICATED\"} 1",
        "inbox_graphql_request_duration_seconds_count{code=\"OK\"} 3",
        "inbox_graphql_request_duration_seconds_bucket{code=\"OK\",le=\"+Inf\"} 3",
        "inbox_graphql_requests_in_flight 0",
        "inbox_db_pool_idle_connections ",
        "inbox_projector_lag_events{projector=\"timeline\"} ",
    ] {
        assert!(metrics.contains(expected), "{expected} missing from:\n{metrics}");
    }
}
