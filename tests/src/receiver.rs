//! A webhook receiver for tests: answers each request with the next status of its
//! script (then 200), and keeps every request it got.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

/// One request as received, and the status it was answered with.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Script {
    statuses: VecDeque<u16>,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on a loopback port; `statuses` answer the first requests, in order.
    pub async fn start(statuses: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        Self::serve(listener, statuses)
    }

    /// Listens on `port` (a receiver that comes back where one was down).
    pub async fn start_on(port: u16, statuses: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the port");
        Self::serve(listener, statuses)
    }

    fn serve(listener: tokio::net::TcpListener, statuses: &[u16]) -> Receiver {
        let port = listener.local_addr().expect("address").port();
        let script =
            Arc::new(Mutex::new(Script { statuses: statuses.iter().copied().collect(), received: Vec::new() }));
        let app = Router::new().route("/hook", post(answer)).with_state(script.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the receiver serves");
        });
        Receiver { url: format!("http://127.0.0.1:{port}/hook"), script, task: Arc::new(task) }
    }

    /// Drops what is left of the script: every request from now on is accepted.
    pub fn accept_from_now(&self) {
        self.script.lock().expect("script").statuses.clear();
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().expect("script").received.clone()
    }

    /// The requests it accepted (2xx).
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| (200..300).contains(&r.status)).collect()
    }

    /// Waits (at most `timeout`) until it has accepted `n` requests.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let accepted = self.accepted();
            if accepted.len() >= n || tokio::time::Instant::now() > deadline {
                return accepted;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn answer(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut script = script.lock().expect("script");
    let status = script.statuses.pop_front().unwrap_or(200);
    script.received.push(Received { headers, body, status });
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}
