//! The server's TLS identity: a private CA made on first start and a server certificate it
//! signs, both kept in `<data_dir>/tls/`. Devices and SDKs are given `ca.pem` to trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Paths of the TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate devices trust.
    pub ca_cert: PathBuf,
    /// The CA private key (0600).
    pub ca_key: PathBuf,
    /// The server certificate chain (server, CA).
    pub server_cert: PathBuf,
    /// The server private key (0600).
    pub server_key: PathBuf,
}

impl TlsFiles {
    /// The files under `data_dir/tls`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key.pem"),
        }
    }

    /// Creates the CA (if missing) and a server certificate for `hostname` (if missing or made
    /// for another name). Returns whether anything was created.
    pub fn ensure(&self, hostname: &str) -> Result<bool> {
        let dir = self.ca_cert.parent().context("tls directory")?;
        crate::fs::create_private_dir(dir)?;
        let mut created = false;
        if !self.ca_cert.exists() || !self.ca_key.exists() {
            let key = KeyPair::generate().context("generating the CA key")?;
            let mut params = ca_params()?;
            params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
            params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
            let cert = params.self_signed(&key).context("signing the CA certificate")?;
            crate::fs::write_private(&self.ca_key, key.serialize_pem().as_bytes())?;
            crate::fs::write_public(&self.ca_cert, cert.pem().as_bytes())?;
            let _ = std::fs::remove_file(&self.server_cert);
            created = true;
        }
        let names_file = self.server_cert.with_extension("names");
        let wanted = server_names(hostname).join(",");
        let current = std::fs::read_to_string(&names_file).unwrap_or_default();
        if created || !self.server_cert.exists() || !self.server_key.exists() || current != wanted {
            self.issue_server_certificate(hostname)?;
            crate::fs::write_public(&names_file, wanted.as_bytes())?;
            created = true;
        }
        Ok(created)
    }

    fn issue_server_certificate(&self, hostname: &str) -> Result<()> {
        let ca_key_pem =
            std::fs::read_to_string(&self.ca_key).with_context(|| format!("reading {}", self.ca_key.display()))?;
        let ca_cert_pem =
            std::fs::read_to_string(&self.ca_cert).with_context(|| format!("reading {}", self.ca_cert.display()))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).context("loading the CA key")?;
        // The issuer's name and key identifier come from the same parameters the CA
        // certificate was made with, so the chain links up.
        let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
        let key = KeyPair::generate().context("generating the server key")?;
        let mut params = CertificateParams::new(server_names(hostname)).context("server certificate names")?;
        // A subject different from the CA's: Python's ssl refuses a chain where they are equal.
        params.distinguished_name.push(DnType::CommonName, hostname);
        params.distinguished_name.push(DnType::OrganizationName, "duhub server");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(825);
        let cert = params.signed_by(&key, &issuer).context("signing the server certificate")?;
        crate::fs::write_private(&self.server_key, key.serialize_pem().as_bytes())?;
        crate::fs::write_public(&self.server_cert, format!("{}{}", cert.pem(), ca_cert_pem).as_bytes())?;
        Ok(())
    }

    /// A rustls server configuration presenting the server certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let certs = CertificateDer::pem_file_iter(&self.server_cert)
            .with_context(|| format!("reading {}", self.server_cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", self.server_cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(&self.server_key)
            .with_context(|| format!("reading {}", self.server_key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("server certificate and key do not match")?;
        Ok(Arc::new(config))
    }
}

/// The CA's distinguished name and usages (validity is set when it is created).
fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.distinguished_name.push(DnType::CommonName, "duhub private CA");
    params.distinguished_name.push(DnType::OrganizationName, "duhub");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Subject alternative names of the server certificate.
fn server_names(hostname: &str) -> Vec<String> {
    let mut names = vec![hostname.to_owned()];
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_owned());
        }
    }
    names
}
