//! A prompt-injection classifier server in the shape of Text Embeddings Inference's `/predict`:
//! `{"inputs": "text"}` in, `[{"label": "INJECTION", "score": s}, {"label": "SAFE", "score": 1-s}]`
//! out. It scores by marker words so tests choose the verdict, and it records every text it was
//! asked about. Markers: `zebra-override` scores 0.97; `slow-model` answers after 2 s;
//! `broken-model` answers 500 with an internal message; `garbled-model` answers text that is not
//! JSON; `nested-model` answers in the Inference API's nested form.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// The internal message the broken model answers with; it must never reach a client.
pub const MODEL_ERROR: &str = "CUDA out of memory at layer 7 (model-internal-detail)";

pub struct StubClassifier {
    pub addr: SocketAddr,
    texts: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StubClassifier {
    pub async fn start() -> StubClassifier {
        let texts = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/predict", post(predict))
            .with_state(texts.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StubClassifier { addr, texts, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/predict", self.addr)
    }

    /// Every text asked about, in arrival order.
    pub fn texts(&self) -> Vec<String> {
        self.texts.lock().unwrap().clone()
    }
}

impl Drop for StubClassifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn predict(
    State(texts): State<Arc<Mutex<Vec<String>>>>,
    Json(body): Json<Value>,
) -> Response {
    let text = body["inputs"].as_str().unwrap_or_default().to_owned();
    texts.lock().unwrap().push(text.clone());
    if text.contains("slow-model") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if text.contains("broken-model") {
        return (StatusCode::INTERNAL_SERVER_ERROR, MODEL_ERROR).into_response();
    }
    if text.contains("garbled-model") {
        return (StatusCode::OK, "<html>model warming up</html>").into_response();
    }
    if text.contains("pause-model") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let score = if text.contains("zebra-override") {
        0.97
    } else {
        0.02
    };
    let scores = json!([
        {"label": "INJECTION", "score": score},
        {"label": "SAFE", "score": 1.0 - score},
    ]);
    if text.contains("nested-model") {
        return Json(json!([scores])).into_response();
    }
    Json(scores).into_response()
}
