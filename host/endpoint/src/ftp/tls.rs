//! rustls client configuration for FTPS: a CA file, the public web roots, or a pinned
//! certificate. There is deliberately no way to switch verification off.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::TlsSettings;
use crate::error::{Error, Result};

/// `sha256` of a DER certificate as lowercase hex.
pub(super) fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn normalise_pin(pin: &str) -> String {
    pin.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase()
}

pub(super) fn connector(s: &TlsSettings) -> Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let config = if let Some(pin) = &s.pinned_sha256 {
        let pin = normalise_pin(pin);
        if pin.len() != 64 {
            return Err(Error::Config(
                "pinned_sha256 must be a SHA-256 (64 hex digits)".into(),
            ));
        }
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert { pin, provider }))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &s.ca_file {
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| Error::Config(format!("CA file {}: {e}", ca.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| Error::Config(format!("CA file {}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("CA file {}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(Error::Config(format!(
                    "CA file {} holds no certificate",
                    ca.display()
                )));
            }
        } else {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts exactly one certificate, by its SHA-256, and checks the handshake signatures
/// against it (so the peer must hold its private key).
#[derive(Debug)]
struct PinnedCert {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate sha256 {got} is not the pinned one"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
