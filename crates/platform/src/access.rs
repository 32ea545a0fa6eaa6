//! Who is calling and whether they may (DESIGN.md section 7): mutual TLS on every server,
//! the caller named by its client certificate, and the one authorization check each
//! handler makes against the data it touches. The layer in front of every service that
//! authenticates each call and audits it is [`crate::layer`].

use std::path::Path;

pub use clearinghouse_domain::access::{Action, Caller, permits};
use serde::{Deserialize, Serialize};
use tonic::{
    Code, Status,
    transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig},
};

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

#[cfg(test)]
mod tests {
    use super::*;

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
