//! Transport security for the device-facing port: TLS, optional mutual TLS against a
//! client CA, and the optional device identity rule (the client certificate must be valid
//! for a DNS name equal to the frame's device_id, checked by webpki on subjectAltName).
//!
//! TLS protects the hop; the frame signature still protects the data end to end, so
//! identity is an extra gate, not a replacement for verification.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsFiles;
use crate::{Error, Result};

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read TLS file {}: {e}", path.display())))
}

/// The server's TLS settings from PEM files.
pub fn server_tls(files: &TlsFiles) -> Result<ServerTlsConfig> {
    let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &files.client_ca {
        tls = tls
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(false);
    }
    Ok(tls)
}

/// The verified client certificate of a call, when mutual TLS gave one.
pub type PeerCerts = Option<Arc<Vec<CertificateDer<'static>>>>;

/// Checks device ids against the client's leaf certificate.
pub struct DeviceIdentity<'a> {
    leaf: Option<webpki::EndEntityCert<'a>>,
}

impl<'a> DeviceIdentity<'a> {
    pub fn new(certs: &'a PeerCerts) -> Self {
        let leaf = certs
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|der| webpki::EndEntityCert::try_from(der).ok());
        Self { leaf }
    }

    /// Whether the certificate names `device_id` (a device id that is not a valid DNS
    /// name never matches).
    pub fn permits(&self, device_id: &str) -> bool {
        let Some(leaf) = &self.leaf else {
            return false;
        };
        match ServerName::try_from(device_id) {
            Ok(name) => leaf.verify_is_valid_for_subject_name(&name).is_ok(),
            Err(_) => false,
        }
    }
}
