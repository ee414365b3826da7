//! An OTLP logs receiver for the end-to-end tests: it decodes what arrives
//! with the OpenTelemetry project's own protobuf definitions (the
//! `opentelemetry-proto` crate's messages and its tonic gRPC service), over
//! http/protobuf (`POST /v1/logs`, gzip or not) and gRPC.
//!
//! `otlp-receiver [--http ADDR] [--grpc ADDR] [--fail-first N] [--reject N]`: prints
//! `http ADDR` / `grpc ADDR` once listening, then one JSON line per log
//! record received (what the record carries, with its resource, how it came
//! and when), and one `{"refused": …}` line per export it answered with
//! HTTP 503 (`Retry-After: 1`) or gRPC UNAVAILABLE (with a RetryInfo of
//! `--retry-after-s`, 1 by default) (the first N exports).
//! With `--reject N`, every export it takes answers a partial success that
//! rejected N records.
use std::{
    convert::Infallible,
    io::{Read, Write},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::{
    collector::logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    common::v1::{any_value::Value as V, AnyValue},
};
use prost::Message;
use serde_json::{json, Map, Value};

fn value(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Null,
        Some(V::StringValue(s)) => json!(s),
        Some(V::BoolValue(b)) => json!(b),
        Some(V::IntValue(i)) => json!(i),
        Some(V::DoubleValue(d)) => json!(d),
        Some(V::BytesValue(b)) => json!(format!("{b:?}")),
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(value).collect()),
        Some(V::KvlistValue(l)) => Value::Object(
            l.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map(value).unwrap_or(Value::Null),
                    )
                })
                .collect(),
        ),
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Print every log record of a request, one JSON line each.
fn print(req: &ExportLogsServiceRequest, via: &str, encoding: &str, headers: Map<String, Value>) {
    let received = now_ns();
    let mut out = std::io::stdout().lock();
    for rl in &req.resource_logs {
        let resource: Map<String, Value> = rl
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map(value).unwrap_or(Value::Null),
                )
            })
            .collect();
        for sl in &rl.scope_logs {
            let scope = sl
                .scope
                .as_ref()
                .map(|s| json!({"name": s.name, "version": s.version}));
            for l in &sl.log_records {
                let attributes: Map<String, Value> = l
                    .attributes
                    .iter()
                    .map(|kv| {
                        (
                            kv.key.clone(),
                            kv.value.as_ref().map(value).unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                let line = json!({
                    "via": via,
                    "encoding": encoding,
                    "headers": headers,
                    "received_unix_nano": received.to_string(),
                    "resource": resource,
                    "scope": scope,
                    "event_name": l.event_name,
                    "severity_number": l.severity_number,
                    "severity_text": l.severity_text,
                    "body": l.body.as_ref().map(value).unwrap_or(Value::Null),
                    "time_unix_nano": l.time_unix_nano.to_string(),
                    "observed_time_unix_nano": l.observed_time_unix_nano.to_string(),
                    "attributes": attributes,
                });
                let _ = writeln!(out, "{line}");
            }
        }
    }
    let _ = out.flush();
}

fn refused(via: &str) {
    println!(
        "{}",
        json!({"refused": via, "received_unix_nano": now_ns().to_string()})
    );
}

/// The headers a test looks at.
fn picked<'a>(pairs: impl Iterator<Item = (&'a str, String)>) -> Map<String, Value> {
    pairs
        .filter(|(k, _)| matches!(*k, "authorization" | "x-tenant"))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect()
}

struct Grpc {
    fail: Arc<AtomicU64>,
    reject: i64,
    retry_after: u64,
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        if take_failure(&self.fail) {
            refused("grpc");
            // With a RetryInfo, as a Collector under pressure says it.
            return Err(
                <tonic::Status as tonic_types::StatusExt>::with_error_details(
                    tonic::Code::Unavailable,
                    "told to refuse",
                    tonic_types::ErrorDetails::with_retry_info(Some(
                        std::time::Duration::from_secs(self.retry_after),
                    )),
                ),
            );
        }
        let headers = picked(request.metadata().iter().filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                Some((k.as_str(), v.to_str().unwrap_or("").to_owned()))
            }
            _ => None,
        }));
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .to_owned();
        print(request.get_ref(), "grpc", &encoding, headers);
        Ok(tonic::Response::new(taken(self.reject)))
    }
}

fn take_failure(fail: &AtomicU64) -> bool {
    fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The answer to an export taken: a partial success when told to reject some.
fn taken(reject: i64) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: (reject > 0).then(|| {
            opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess {
                rejected_log_records: reject,
                error_message: "told to reject".into(),
            }
        }),
    }
}

async fn http(
    req: hyper::Request<hyper::body::Incoming>,
    fail: Arc<AtomicU64>,
    reject: i64,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let answer = |status: u16, body: Vec<u8>| {
        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        r
    };
    if req.uri().path() != "/v1/logs" || req.method() != hyper::Method::POST {
        return Ok(answer(404, b"not here".to_vec()));
    }
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let headers = picked(
        req.headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("").to_owned())),
    );
    let ctype_ok = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(answer(400, b"body".to_vec())),
    };
    if take_failure(&fail) {
        refused("http");
        let mut r = answer(503, b"told to refuse".to_vec());
        r.headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
        return Ok(r);
    }
    if !ctype_ok {
        return Ok(answer(415, b"content-type".to_vec()));
    }
    let bytes = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return Ok(answer(400, b"gzip".to_vec()));
        }
        out
    } else {
        body.to_vec()
    };
    match ExportLogsServiceRequest::decode(&bytes[..]) {
        Ok(r) => {
            print(&r, "http", if gzip { "gzip" } else { "identity" }, headers);
            let mut resp = answer(200, taken(reject).encode_to_vec());
            resp.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/x-protobuf"),
            );
            Ok(resp)
        }
        Err(e) => Ok(answer(
            400,
            format!("not an ExportLogsServiceRequest: {e}").into_bytes(),
        )),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let fail = Arc::new(AtomicU64::new(
        opt("--fail-first")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    ));
    let reject: i64 = opt("--reject").and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut tasks = Vec::new();
    if let Some(addr) = opt("--http") {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("http {}", listener.local_addr()?);
        let fail = fail.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let fail = fail.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| http(req, fail.clone(), reject));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                        .await;
                });
            }
        }));
    }
    if let Some(addr) = opt("--grpc") {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("grpc {}", listener.local_addr()?);
        let service = LogsServiceServer::new(Grpc {
            fail: fail.clone(),
            reject,
            retry_after: opt("--retry-after-s")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
        })
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tasks.push(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        }));
    }
    let _ = std::io::stdout().flush();
    if tasks.is_empty() {
        anyhow::bail!(
            "usage: otlp-receiver [--http ADDR] [--grpc ADDR] [--fail-first N] [--reject N]"
        );
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
