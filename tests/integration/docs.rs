//! The docs' examples run as written, against a real server.

use tests::TestApp;

/// Every `bash` block of a Markdown file, in order, as one script.
fn bash_blocks(markdown: &str) -> String {
    let mut script = String::from("set -euo pipefail\n");
    let mut inside = false;
    for line in markdown.lines() {
        match (inside, line.trim_start()) {
            (false, "```bash") => inside = true,
            (true, "```") => inside = false,
            (true, _) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

#[tokio::test]
async fn the_curl_examples_run_as_written() {
    let app = TestApp::spawn().await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples.md");
    let script = bash_blocks(&std::fs::read_to_string(path).expect("docs/examples.md"));
    assert!(script.lines().count() > 50, "the examples were found");
    let output = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("URL", &app.server.address)
        .env("TOKEN", &app.token)
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "an example failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    // The flows did what they say: the snooze, the verification, the documented errors.
    assert!(stdout.contains("\"status\":\"SNOOZED\""), "{stdout}");
    assert!(stdout.contains("\"intact\":true"), "{stdout}");
    assert!(
        stdout.contains("\"code\":\"BAD_USER_INPUT\"") && stdout.contains("\"code\":\"UNAUTHENTICATED\""),
        "{stdout}"
    );
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MessageReceived'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(received, 1, "the redelivered message was received once");
}
