//! A real browser (Debian's Chromium, driven by playwright-core on Node) as a cross-origin agent UI:
//! CORS on fetches, and a WebSocket whose token rides in a subprotocol.
//!
//! Skips with a printed reason when Node, tests/browser/node_modules or /usr/bin/chromium is
//! missing, unless PORTCULLIS_REQUIRE_BROWSER=1 (as CI sets after installing them).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use crate::common::keys::{self, AUDIENCE, ISSUER, TestKey, claims};
use crate::common::websocket::WsUpstream;
use crate::common::{Options, TestGateway};

fn browser_installed() -> bool {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ok = dir
        .join("node_modules/playwright-core/package.json")
        .exists()
        && Path::new(&std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into())).exists()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var("PORTCULLIS_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "PORTCULLIS_REQUIRE_BROWSER=1 but node, playwright-core or chromium is missing"
        );
        println!(
            "SKIPPED: needs node, `npm ci` in tests/browser and Debian's chromium (apt-get install chromium)"
        );
    }
    ok
}

/// Serves a blank agent UI page on `host:port` (every request, until the test ends).
fn serve_page() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let page = "<!doctype html><title>agent ui</title><p>agent ui</p>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

async fn open_page(page: &str, gateway: &str, token: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/run.js");
    let args = vec![
        script.to_owned(),
        page.to_owned(),
        gateway.to_owned(),
        token.to_owned(),
    ];
    let out =
        tokio::task::spawn_blocking(move || Command::new("node").args(&args).output().unwrap())
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_ui_calls_the_gateway_cross_origin_and_over_a_websocket() {
    if !browser_installed() {
        return;
    }
    let Some(upstream) = WsUpstream::start() else {
        return;
    };
    let page_port = serve_page();
    let listed = format!("http://127.0.0.1:{page_port}");
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::es256("es-1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, keys::jwks(&[&key])).unwrap();
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            extra: format!(
                "[auth]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\n\
                 algorithms = [\"ES256\"]\njwks_file = \"{}\"\n\n\
                 [websocket]\npaths = [\"/v1/realtime\"]\n\n\
                 [cors]\nallowed_origins = [\"{listed}\"]\n\
                 allowed_headers = [\"authorization\", \"content-type\"]\n",
                jwks.display()
            ),
            ..Options::default()
        },
    )
    .await;
    let token = key.sign(&claims("browser-user"));
    let gateway_url = format!("https://localhost:{}", gateway.addr.port());

    // From the listed origin: the answer and the refusal are readable, and the socket opens
    // with the token in a subprotocol, the agent's choice returned, the echo relayed.
    let seen = open_page(&format!("{listed}/"), &gateway_url, &token).await;
    println!("listed origin: {seen}");
    // The agent is a WebSocket server: to a plain GET it answers 426, which the page can read.
    assert_eq!(seen["fetch"]["status"], 426, "{seen}");
    assert_eq!(seen["refusal"]["status"], 401, "{seen}");
    assert_eq!(
        seen["refusal"]["type"], "application/problem+json",
        "{seen}"
    );
    assert_eq!(seen["socket"]["protocol"], "realtime-v1", "{seen}");
    assert_eq!(seen["socket"]["echo"], "hello from the browser", "{seen}");
    assert_eq!(seen["socket"]["close"], 1000, "{seen}");

    // From another origin (the same page, another host name): the browser is given nothing it
    // may read, and the socket is refused at the handshake.
    let other = format!("http://localhost:{page_port}/");
    let seen = open_page(&other, &gateway_url, &token).await;
    println!("unlisted origin: {seen}");
    assert!(seen["fetch"]["error"].is_string(), "{seen}");
    assert!(seen["refusal"]["error"].is_string(), "{seen}");
    assert!(seen["socket"]["error"].is_string(), "{seen}");
    let audit = std::fs::read_to_string(&gateway.audit_path).unwrap();
    assert!(!audit.contains(&token));
    assert!(
        audit.contains("\"decision\":\"origin_forbidden\""),
        "{audit}"
    );
}
