//! The HTTP client the recorder hands to `opentelemetry-otlp` for
//! OTLP/HTTP (`with_http_client`): hyper on the export thread's own Tokio
//! runtime, with rustls for `https://` when a `tls-*` feature is on.
//!
//! Why not one of `opentelemetry-otlp`'s client features: Cargo unifies
//! features, and `opentelemetry-otlp` picks its default client by which
//! features are on (`reqwest-client` over `hyper-client` over the default
//! `reqwest-blocking-client`). A library that turns one on switches the
//! *application's* exporter too (the async reqwest client panics on the
//! SDK's batch thread, which has no reactor). Passing a client in code
//! changes nothing for anyone else.
//!
//! Likewise rustls' crypto provider is chosen here explicitly
//! (`builder_with_provider`), never installed for the process.

use super::tls::TlsFiles;
use crate::error::BuildError;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use std::sync::Arc;
use std::time::Duration;

/// The recorder's OTLP/HTTP client: plain or TLS hyper behind one type, as
/// `with_http_client` takes one.
#[derive(Debug, Clone)]
pub(crate) struct OtlpHttpClient(Arc<dyn HttpClient>);

#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        self.0.send_bytes(request).await
    }
}

/// The client for `endpoint`: plain HTTP, or HTTPS with the roots and
/// files of `tls` (only with a `tls-ring` or `tls-aws-lc` feature).
pub(crate) fn client(
    endpoint: &str,
    timeout: Duration,
    tls: &TlsFiles,
) -> Result<OtlpHttpClient, BuildError> {
    if endpoint.starts_with("https:") {
        return https_client(timeout, tls).map(OtlpHttpClient);
    }
    Ok(OtlpHttpClient(Arc::new(
        opentelemetry_http::hyper::HyperClient::with_default_connector(timeout, None),
    )))
}

#[cfg(any(feature = "tls-ring", feature = "tls-aws-lc"))]
fn https_client(timeout: Duration, tls: &TlsFiles) -> Result<Arc<dyn HttpClient>, BuildError> {
    let config = tls.rustls_config()?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Arc::new(opentelemetry_http::hyper::HyperClient::new(
        connector, timeout, None,
    )))
}

#[cfg(not(any(feature = "tls-ring", feature = "tls-aws-lc")))]
fn https_client(_timeout: Duration, _tls: &TlsFiles) -> Result<Arc<dyn HttpClient>, BuildError> {
    Err(super::tls::no_tls_error())
}

#[cfg(any(feature = "tls-ring", feature = "tls-aws-lc"))]
impl TlsFiles {
    /// rustls' settings for an `https` endpoint over OTLP/HTTP: the roots
    /// the features name (system or Mozilla's), plus the CA certificate and
    /// client identity from the files, when named.
    fn rustls_config(&self) -> Result<rustls::ClientConfig, BuildError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        #[cfg(feature = "tls-ring")]
        let provider = rustls::crypto::ring::default_provider();
        #[cfg(all(feature = "tls-aws-lc", not(feature = "tls-ring")))]
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let bad =
            |(var, path): &(&'static str, String), expected: &'static str| BuildError::InvalidEnv {
                var,
                value: path.clone(),
                expected,
            };
        let certs =
            |file: &(&'static str, String)| -> Result<Vec<CertificateDer<'static>>, BuildError> {
                let pem = self.read(file)?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| bad(file, "a PEM file of certificates"))?;
                if certs.is_empty() {
                    return Err(bad(file, "a PEM file of certificates"));
                }
                Ok(certs)
            };
        let mut roots = rustls::RootCertStore::empty();
        #[cfg(feature = "tls-roots")]
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        #[cfg(feature = "tls-webpki-roots")]
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &self.ca {
            for cert in certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|_| bad(ca, "a PEM file of CA certificates"))?;
            }
        }
        if roots.is_empty() {
            return Err(BuildError::MissingFeature {
                what: "an https endpoint with no CA file (OTEL_EXPORTER_OTLP_CERTIFICATE)".into(),
                feature: "tls-roots",
                fix: "turn on `tls-roots` (the system's roots) or `tls-webpki-roots`, or name a CA file in OTEL_EXPORTER_OTLP_CERTIFICATE",
            });
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError::Exporter(Box::new(e)))?
            .with_root_certificates(roots);
        match self.identity_files()? {
            Some((cert, key)) => {
                let chain = certs(cert)?;
                let key_pem = self.read(key)?;
                let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|_| bad(key, "a PEM file with a private key"))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|_| bad(key, "the private key of the client certificate"))
            }
            None => Ok(builder.with_no_client_auth()),
        }
    }
}
