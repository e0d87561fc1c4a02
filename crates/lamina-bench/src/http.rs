//! HTTP for the harness: SigV4-signed requests over keep-alive HTTP/1.1 connections, a load
//! loop that records every latency, and the floor: a bare hyper server answering `{}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The key pair the harness's servers are started with.
pub const ACCESS_KEY: &str = "LKIABENCHBENCHBENCH0";
pub const SECRET_KEY: &str = "lamina-bench-secret-key";

/// A request ready to send again and again: signed once (a SigV4 signature stays valid for
/// minutes), so the client's signing cost stays out of the measurement while the server still
/// verifies every request.
#[derive(Clone)]
pub struct Prepared {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Prepared {
    /// An unsigned request (for the floor).
    pub fn plain(method: Method, address: SocketAddr, path: &str, body: Bytes) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::HOST,
            address.to_string().parse().expect("a host"),
        );
        Self {
            method,
            path: path.to_owned(),
            headers,
            body,
        }
    }

    /// A request signed for Lamina's Lambda API.
    pub fn signed(
        method: Method,
        address: SocketAddr,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<Self> {
        Self::signed_for("lambda", method, address, path, body, &[])
    }

    /// A request signed for `service`, with `extra` headers (signed too).
    pub fn signed_for(
        service: &str,
        method: Method,
        address: SocketAddr,
        path: &str,
        body: Bytes,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let host = address.to_string();
        let url = format!("http://{host}{path}");
        let identity =
            aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "bench")
                .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .context("signing parameters")?
            .into();
        let headers: Vec<(&str, &str)> = [("host", host.as_str())]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let signable = SignableRequest::new(
            method.as_str(),
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .context("a signable request")?;
        let (instructions, _) = sign(signable, &params).context("signing")?.into_parts();
        let mut request = Request::builder().method(method.clone()).uri(path);
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(()).context("a request")?;
        instructions.apply_to_request_http1x(&mut request);
        Ok(Self {
            method,
            path: path.to_owned(),
            headers: request.headers().clone(),
            body,
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.parse().expect("a valid path");
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

/// A response: status, headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Connection {
    pub async fn open(address: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    pub async fn send(&mut self, request: &Prepared) -> anyhow::Result<Answer> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request.request()).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// What a load run saw.
pub struct Load {
    /// Every request's latency, sorted.
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    pub errors: u64,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// `clients` connections send `request` back to back: `warmup` unrecorded, then `duration`
/// recorded. A response other than 2xx counts as an error.
pub async fn load(
    address: SocketAddr,
    request: Arc<Prepared>,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Load> {
    let start = Instant::now();
    let (record_from, stop_at) = (start + warmup, start + warmup + duration);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(address).await?;
            let (mut latencies, mut errors) = (Vec::with_capacity(1 << 16), 0u64);
            loop {
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let answer = connection.send(&request).await?;
                if sent >= record_from {
                    if (200..300).contains(&answer.status) {
                        latencies.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut all = Load {
        latencies: Vec::new(),
        elapsed: duration,
        errors: 0,
    };
    for task in tasks {
        let (latencies, errors) = task.await??;
        all.latencies.extend(latencies);
        all.errors += errors;
    }
    all.latencies.sort_unstable();
    Ok(all)
}

/// The floor: a hyper HTTP/1.1 server answering every request with `{}`, nothing else.
/// Runs until the process exits; prints its address on stdout.
pub async fn floor_server() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"{}"),
                    )))
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
