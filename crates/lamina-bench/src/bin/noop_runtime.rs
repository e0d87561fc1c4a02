//! The benchmark's no-op function: the smallest native Runtime API client that is still a real
//! one. One keep-alive connection (reopened if lost), HTTP/1.1 by hand, std only, so that what
//! the benchmark measures is the platform and not a runtime library.
//!
//! It answers every event with the event itself, except `{"sleep_ms": N}`, which it answers
//! after N ms with `{"started_us": T}`: the wall-clock microsecond it received the event, for
//! the scale-out measurement.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

struct Reply {
    request_id: String,
    body: Vec<u8>,
}

impl Connection {
    fn open(api: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(api)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn exchange(&mut self, head: &str, body: &[u8]) -> std::io::Result<Reply> {
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body);
        self.writer.write_all(&request)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if line.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let (mut length, mut request_id) = (0usize, String::new());
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("lambda-runtime-aws-request-id") {
                    request_id = value.to_owned();
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(Reply { request_id, body })
    }
}

/// The value of `"sleep_ms"` in an event, if it has one.
fn sleep_ms(event: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(event).ok()?;
    let rest = &text[text.find("\"sleep_ms\"")? + 10..];
    let digits: String = rest
        .trim_start_matches(|c: char| c == ':' || c.is_whitespace())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn serve(api: &str, connection: &mut Connection) -> std::io::Result<()> {
    let next = format!("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: {api}\r\n\r\n");
    loop {
        let event = connection.exchange(&next, b"")?;
        let answer = match sleep_ms(&event.body) {
            Some(ms) => {
                let started = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros());
                std::thread::sleep(Duration::from_millis(ms));
                format!("{{\"started_us\":{started}}}").into_bytes()
            }
            None => event.body,
        };
        let head = format!(
            "POST /2018-06-01/runtime/invocation/{}/response HTTP/1.1\r\nHost: {api}\r\n\
             Content-Length: {}\r\n\r\n",
            event.request_id,
            answer.len()
        );
        connection.exchange(&head, &answer)?;
    }
}

fn main() {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        eprintln!("noop-runtime: AWS_LAMBDA_RUNTIME_API is not set");
        std::process::exit(1);
    };
    loop {
        match Connection::open(&api) {
            Ok(mut connection) => {
                if let Err(err) = serve(&api, &mut connection) {
                    eprintln!("noop-runtime: {err}; reconnecting");
                }
            }
            Err(err) => {
                eprintln!("noop-runtime: cannot reach the Runtime API: {err}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
