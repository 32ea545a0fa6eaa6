//! Who is calling and whether they may (DESIGN.md section 7): mutual TLS on every server,
//! the caller named by its client certificate, one layer that authenticates every call and
//! records refusals and writes in the audit trail, and the one authorization check each
//! handler makes against the data it touches.

use std::{
    collections::HashSet,
    future::Future,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

pub use clearinghouse_domain::access::{Action, Caller, permits};
use serde::{Deserialize, Serialize};
use tonic::{
    Code, Status,
    transport::{
        Certificate, ClientTlsConfig, Identity, ServerTlsConfig,
        server::{TcpConnectInfo, TlsConnectInfo},
    },
};

use crate::audit::{AuditEntry, AuditSink};

/// In insecure plaintext mode only: the header naming the caller.
pub const CALLER_HEADER: &str = "x-clearinghouse-caller";

/// The server's TLS material: its certificate and key, and the CA that signs every
/// caller's certificate (and ours). Paths to PEM files.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TlsConfig {
    pub ca_cert: String,
    pub cert: String,
    pub key: String,
    /// Serve without TLS and take the caller from the `x-clearinghouse-caller` header.
    /// For local experiments only: anyone can claim to be anyone.
    pub insecure_plaintext: bool,
}

impl TlsConfig {
    /// The material under `dir` as the set-up writes it: `ca.pem`, `<name>.pem`,
    /// `<name>.key`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        let file = |f: String| dir.join(f).display().to_string();
        Self {
            ca_cert: file("ca.pem".into()),
            cert: file(format!("{name}.pem")),
            key: file(format!("{name}.key")),
            insecure_plaintext: false,
        }
    }

    fn read(&self) -> anyhow::Result<(Certificate, Identity)> {
        anyhow::ensure!(
            !self.ca_cert.is_empty() && !self.cert.is_empty() && !self.key.is_empty(),
            "tls.ca_cert, tls.cert and tls.key are required (or tls.insecure_plaintext = true \
             for local experiments)"
        );
        let read = |path: &str| {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))
        };
        let ca = Certificate::from_pem(read(&self.ca_cert)?);
        let identity = Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        Ok((ca, identity))
    }

    /// The server side: our certificate, callers' certificates checked against the CA.
    /// A call without a certificate still connects, so that it can be told
    /// `UNAUTHENTICATED` (and health checks answered); no other call is served to it.
    pub fn server(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        if self.insecure_plaintext {
            return Ok(None);
        }
        let (ca, identity) = self.read()?;
        Ok(Some(
            ServerTlsConfig::new()
                .identity(identity)
                .client_ca_root(ca)
                .client_auth_optional(true),
        ))
    }

    /// The client side, for our own calls to another service: our certificate as the
    /// client's, the CA as the only trust anchor.
    pub fn client(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        if self.insecure_plaintext {
            return Ok(None);
        }
        let (ca, identity) = self.read()?;
        Ok(Some(
            ClientTlsConfig::new().ca_certificate(ca).identity(identity),
        ))
    }

    /// `https://` or, in insecure plaintext mode, `http://`.
    pub fn scheme(&self) -> &'static str {
        if self.insecure_plaintext {
            "http"
        } else {
            "https"
        }
    }
}

/// A channel to one of our servers at `addr` over mutual TLS with `tls`' certificate as
/// the caller's (plaintext in insecure mode).
pub async fn channel(
    addr: std::net::SocketAddr,
    tls: &TlsConfig,
) -> anyhow::Result<tonic::transport::Channel> {
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(format!("{}://{addr}", tls.scheme()))?;
    if let Some(client) = tls.client()? {
        endpoint = endpoint.tls_config(client)?;
    }
    Ok(endpoint.connect().await?)
}

/// The caller the access layer authenticated.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))
}

/// `PERMISSION_DENIED` unless `caller` may do `action`. The access layer logs and audits
/// every refusal with the caller and the method.
pub fn authorize(caller: &Caller, action: Action) -> Result<(), Status> {
    if permits(caller, action) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{caller} may not do this: {}",
            describe(action)
        )))
    }
}

/// [`caller`] then [`authorize`].
pub fn authorize_request<T>(request: &tonic::Request<T>, action: Action) -> Result<Caller, Status> {
    let caller = caller(request)?;
    authorize(&caller, action)?;
    Ok(caller)
}

fn describe(action: Action) -> String {
    match action {
        Action::WriteAsInsured { insured } => {
            format!("only the insured place's province writes for region {insured}")
        }
        Action::WriteAsTreatment { treatment } => {
            format!("only the treatment place's province acts for region {treatment}")
        }
        // Reads name no region: a refusal must not tell where someone else's person lives.
        Action::ReadPerson { .. } => {
            "only the insured place or the national platform reads this person".into()
        }
        Action::ReadCase { .. } => {
            "only its insured or treatment place or the national platform reads this".into()
        }
        Action::CheckEligibility { .. } => {
            "only the insured or the treatment place asks about this person".into()
        }
        Action::ReadReference => "reference data".into(),
        Action::WriteOwnAccount { province } => {
            format!("only province {province} acts on its own account")
        }
        Action::ReadAccounts { province: Some(p) } => {
            format!("only province {p}, the national platform or operators read its accounts")
        }
        Action::ReadAccounts { province: None } => {
            "only the national platform or operators read every province's accounts".into()
        }
        Action::OperateClearing => "clearing is the national platform's".into(),
        Action::Supervise => "supervision is the national platform's and operators'".into(),
    }
}

/// A name for what a write touched, recorded in the audit trail when the handler puts it
/// on its response's extensions.
#[derive(Debug, Clone)]
pub struct AuditSubject(pub String);

/// Attaches an [`AuditSubject`] to a response.
pub fn with_subject<T>(message: T, subject: impl Into<String>) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    response
        .extensions_mut()
        .insert(AuditSubject(subject.into()));
    response
}

/// A response whose audit entry was written in the write's transaction
/// ([`crate::audit::record_in`]).
pub fn recorded<T>(message: T, subject: impl Into<String>) -> tonic::Response<T> {
    let mut response = with_subject(message, subject);
    response
        .extensions_mut()
        .insert(crate::audit::RecordedInTransaction);
    response
}

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

/// The status of a unary answer: an error is sent "trailers-only", in the headers;
/// success comes in trailers, so a missing header means OK.
pub(crate) fn outcome_of<B>(response: &http::Response<B>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from)
        .unwrap_or(Code::Ok)
}

/// The gRPC name of a code, as the audit trail records it (`PERMISSION_DENIED`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
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

    #[test]
    fn plaintext_needs_no_files_tls_does() {
        let plain = TlsConfig {
            insecure_plaintext: true,
            ..TlsConfig::default()
        };
        assert!(plain.server().unwrap().is_none());
        assert_eq!(plain.scheme(), "http");
        let error = TlsConfig::default().server().unwrap_err().to_string();
        assert!(error.contains("tls.insecure_plaintext"), "{error}");
    }
}
