//! A development certificate authority: the set-up's certificates for the demo and local
//! runs, and each test's own. Never for production: production certificates come from
//! the provinces' and the national platform's own PKI.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// The identity our own services present, to callers and to each other.
pub const SERVICE_IDENTITY: &str = "service:clearinghouse";

/// A CA that issues certificates naming callers (`province:370000`, `national`, ...).
pub struct DevPki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevPki {
    pub fn generate() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "clearinghouse development CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { ca })
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate naming `identity` (its common name), good for both ends of a
    /// connection on loopback (`localhost`, `127.0.0.1`) and, in compose, for the
    /// services' host names.
    pub fn issue(&self, identity: &str) -> anyhow::Result<Issued> {
        let names = [
            "localhost",
            "filing",
            "referral",
            "settlement",
            "fund-ledger",
        ];
        let mut params = CertificateParams::new(names.map(String::from).to_vec())?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, identity);
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem` and, for each `(file name, identity)`, `<name>.pem` and
    /// `<name>.key` (readable by the owner only).
    pub fn write(&self, dir: &Path, identities: &[(&str, &str)]) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.pem"), self.ca_pem())?;
        for (file, identity) in identities {
            let issued = self.issue(identity)?;
            std::fs::write(dir.join(format!("{file}.pem")), &issued.cert_pem)?;
            let key = dir.join(format!("{file}.key"));
            std::fs::write(&key, &issued.key_pem)?;
            restrict(&key)?;
        }
        Ok(())
    }
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The development set: our services (`service`), the national platform (`national`),
/// an operator (`operator`) and every province (`province-370000`, ...).
pub fn dev_identities(provinces: &[String]) -> Vec<(String, String)> {
    let mut set = vec![
        ("service".to_string(), SERVICE_IDENTITY.to_string()),
        ("national".to_string(), "national".to_string()),
        ("operator".to_string(), "operator".to_string()),
    ];
    for p in provinces {
        set.push((format!("province-{p}"), format!("province:{p}")));
    }
    set
}
