//! A tiny HTTP/1.1 server on 127.0.0.1 for download tests: fixed routes, each with a status, a
//! body and optionally a body cut short after the headers promised more.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

/// How one path answers.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Send only this many body bytes although Content-Length announces all of them.
    pub cut_at: Option<usize>,
}

impl Route {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            body: body.into(),
            cut_at: None,
        }
    }

    /// An error status with a short body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: b"error".to_vec(),
            cut_at: None,
        }
    }

    /// 200 announcing `body` in full but closing after `cut_at` bytes.
    pub fn truncated(body: impl Into<Vec<u8>>, cut_at: usize) -> Self {
        Self {
            status: 200,
            body: body.into(),
            cut_at: Some(cut_at),
        }
    }
}

/// A running server; it lives as long as the test process (threads are detached).
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl TestServer {
    /// Starts serving `routes` (path → route); unknown paths get 404.
    pub fn start(routes: HashMap<String, Route>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes = Arc::new(routes);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let routes = Arc::clone(&routes);
                thread::spawn(move || serve(stream, &routes));
            }
        });
        Self { base }
    }

    /// Full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn serve(mut stream: TcpStream, routes: &HashMap<String, Route>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let route = routes
        .get(&path)
        .cloned()
        .unwrap_or_else(|| Route::status(404));
    let head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        route.status,
        route.body.len()
    );
    let sent = route.cut_at.unwrap_or(route.body.len());
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&route.body[..sent]);
    let _ = stream.flush();
}
