//! Transport security for the device-facing port: TLS, optional mutual TLS against a
//! client CA, and the optional device identity rule: the client certificate (its chain
//! already verified against the client CA in the handshake) must carry a subjectAltName
//! DNS name or URI *exactly* equal to the frame's device_id.
//!
//! Exact means byte for byte: no wildcard (`*.meters.example` names no device) and no case
//! folding (`MTR-1` is not `mtr-1`). DNS matching rules (RFC 6125) are for host names,
//! where case does not matter and wildcards are a convenience; device ids are
//! case-sensitive identities, and a wildcard certificate for a whole fleet would let one
//! extracted key speak for every device.
//!
//! TLS protects the hop; the frame signature still protects the data end to end, so
//! identity is an extra gate, not a replacement for verification.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
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

    /// Whether the certificate names `device_id` exactly (a SAN DNS name or URI equal to
    /// it byte for byte).
    pub fn permits(&self, device_id: &str) -> bool {
        let Some(leaf) = &self.leaf else {
            return false;
        };
        // a wildcard name is never an identity, even for a device id spelt like one
        !device_id.is_empty()
            && !device_id.contains('*')
            && (leaf.valid_dns_names().any(|n| n == device_id)
                || leaf.valid_uri_names().any(|n| n == device_id))
    }
}
