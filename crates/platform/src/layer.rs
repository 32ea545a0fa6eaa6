//! The tower layer in front of every service (DESIGN.md section 7): authenticates each
//! call (mutual TLS, or the caller header in insecure plaintext mode), holds unary calls
//! to exactly one message, and records in the audit trail every write and every refused
//! call.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    Code, Status,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use crate::{
    access::{CALLER_HEADER, Caller, outcome_of},
    audit::{AuditEntry, AuditSink, AuditSubject},
};

/// How the access layer learns the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authentication {
    /// From the client certificate's common name.
    MutualTls,
    /// From the `x-clearinghouse-caller` header (insecure plaintext mode).
    TrustedHeader,
}

/// The tower layer in front of every service: authenticates, and records in the audit
/// trail every write (the methods in `writes`) and every refused call.
#[derive(Clone)]
pub struct AccessLayer {
    pub authentication: Authentication,
    pub writes: Arc<HashSet<String>>,
    pub audit: AuditSink,
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    layer: AccessLayer,
}

/// Calls anyone may make: health checks and reflection (the contract is public).
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

fn common_name(der: &[u8]) -> Option<String> {
    // A connection presents the same certificate on every call: parse each one once.
    static SEEN: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<Vec<u8>, String>>> =
        std::sync::LazyLock::new(Default::default);
    if let Ok(seen) = SEEN.lock()
        && let Some(name) = seen.get(der)
    {
        return Some(name.clone());
    }
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    if let Ok(mut seen) = SEEN.lock() {
        // Bounded: certificates are renewed, callers come and go.
        if seen.len() >= 4096 {
            seen.clear();
        }
        seen.insert(der.to_vec(), name.clone());
    }
    Some(name)
}

fn identity_of<B>(request: &http::Request<B>, authentication: Authentication) -> Option<String> {
    match authentication {
        Authentication::MutualTls => {
            let info = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()?;
            let certs = info.peer_certs()?;
            common_name(certs.first()?)
        }
        Authentication::TrustedHeader => request
            .headers()
            .get(CALLER_HEADER)?
            .to_str()
            .ok()
            .map(str::to_string),
    }
}

/// A message that does not decode is the caller's fault: tonic says `INTERNAL`, we say
/// `INVALID_ARGUMENT`.
fn reclassify_decode_error<B>(response: &mut http::Response<B>) {
    let headers = response.headers();
    let internal = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"13");
    let undecodable = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| {
            m.starts_with("failed%20to%20decode%20Protobuf%20message")
                || m.starts_with("failed to decode Protobuf message")
        });
    if internal && undecodable {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("3"));
    }
}

impl<S, RB> tower::Service<http::Request<tonic::body::Body>> for AccessService<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<RB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let path = request.uri().path().to_string();
        if is_open(&path) {
            return Box::pin(self.inner.call(request));
        }
        let audit = self.layer.audit.clone();
        let identity = identity_of(&request, self.layer.authentication);
        let caller = match identity.as_deref().map(Caller::parse) {
            Some(Ok(caller)) => caller,
            refused => {
                let (who, why) = match (refused, identity) {
                    (Some(Err(e)), Some(identity)) => (identity, e.to_string()),
                    _ => (
                        "anonymous".to_string(),
                        "a client certificate is required".to_string(),
                    ),
                };
                tracing::warn!(caller = %who, method = %path, "unauthenticated call refused: {why}");
                return Box::pin(async move {
                    audit
                        .record(AuditEntry::now(&who, &path, "", Code::Unauthenticated))
                        .await;
                    Ok(Status::unauthenticated(why).into_http())
                });
            }
        };
        request.extensions_mut().insert(caller.clone());
        let audited_write = self.layer.writes.contains(&path);
        if audited_write {
            request.extensions_mut().insert(crate::audit::AuditContext {
                caller: caller.to_string(),
                method: path.clone(),
            });
        }
        // The service that was polled ready serves this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = if crate::unary::is_unary_request(&path) {
                let (parts, body) = request.into_parts();
                match crate::unary::read_single_message(body).await {
                    Ok(bytes) => {
                        let body = tonic::body::Body::new(http_body_util::Full::new(bytes));
                        inner.call(http::Request::from_parts(parts, body)).await?
                    }
                    Err(status) => status.into_http(),
                }
            } else {
                inner.call(request).await?
            };
            reclassify_decode_error(&mut response);
            let outcome = outcome_of(&response);
            let refused = outcome == Code::PermissionDenied;
            if refused {
                tracing::warn!(caller = %caller, method = %path, "call refused: permission denied");
            }
            let recorded = response
                .extensions()
                .get::<crate::audit::RecordedInTransaction>()
                .is_some();
            if refused || (audited_write && !recorded) {
                let subject = response
                    .extensions()
                    .get::<AuditSubject>()
                    .map(|s| s.0.as_str())
                    .unwrap_or("");
                audit
                    .record(AuditEntry::now(
                        &caller.to_string(),
                        &path,
                        subject,
                        outcome,
                    ))
                    .await;
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_reflection_are_open_nothing_else() {
        assert!(is_open("/grpc.health.v1.Health/Check"));
        assert!(is_open(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_open(
            "/clearinghouse.settlement.v1.SettlementService/Settle"
        ));
        assert!(!is_open("/grpc.health.v1.HealthX/Check"));
    }
}
