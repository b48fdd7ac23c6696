//! TLS for the recorder's exporter: the PEM files the `OTEL_EXPORTER_OTLP_*`
//! variables name, and the gRPC exporter's TLS settings from them (with a
//! `tls-ring` or `tls-aws-lc` feature; without one, an `https` endpoint is
//! an error naming the feature). The OTLP/HTTP client's rustls settings are
//! in [`super::http_client`].

use crate::error::BuildError;

/// The PEM files named by `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`,
/// `..._CLIENT_CERTIFICATE` and `..._CLIENT_KEY`, with the variable each came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TlsFiles {
    /// The CA certificate.
    pub(crate) ca: Option<(&'static str, String)>,
    /// The client certificate.
    pub(crate) client_cert: Option<(&'static str, String)>,
    /// The client key.
    pub(crate) client_key: Option<(&'static str, String)>,
}

/// The error for an `https` endpoint in a build without TLS.
pub(crate) fn no_tls_error() -> BuildError {
    BuildError::MissingFeature {
        what: "an https:// endpoint".into(),
        feature: "tls-ring",
        fix: "turn on `tls-ring` or `tls-aws-lc` (the rustls crypto provider your app already uses), with `tls-roots` for the system's roots",
    }
}

impl TlsFiles {
    /// The contents of a file named by a variable.
    #[cfg_attr(
        not(any(feature = "tls-ring", feature = "tls-aws-lc")),
        allow(dead_code)
    )]
    pub(crate) fn read(&self, (var, path): &(&'static str, String)) -> Result<Vec<u8>, BuildError> {
        std::fs::read(path).map_err(|_| BuildError::InvalidEnv {
            var,
            value: path.clone(),
            expected: "the path of a readable PEM file",
        })
    }

    /// The client certificate and key files, both or neither.
    #[allow(clippy::type_complexity)]
    #[cfg_attr(
        not(any(feature = "tls-ring", feature = "tls-aws-lc")),
        allow(dead_code)
    )]
    pub(crate) fn identity_files(
        &self,
    ) -> Result<Option<(&(&'static str, String), &(&'static str, String))>, BuildError> {
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some((var, path)), None) | (None, Some((var, path))) => Err(BuildError::InvalidEnv {
                var,
                value: path.clone(),
                expected: "both a client certificate and a client key (OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY)",
            }),
        }
    }

    /// The gRPC exporter `builder` with TLS for an `https` endpoint: the
    /// roots the features name, plus the CA certificate and client identity
    /// from the files, when named.
    #[cfg(any(feature = "tls-ring", feature = "tls-aws-lc"))]
    pub(crate) fn with_tls<B: opentelemetry_otlp::WithTonicConfig>(
        &self,
        builder: B,
    ) -> Result<B, BuildError> {
        use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = ClientTlsConfig::new();
        #[cfg(feature = "tls-roots")]
        {
            config = config.with_native_roots();
        }
        #[cfg(feature = "tls-webpki-roots")]
        {
            config = config.with_webpki_roots();
        }
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(self.read(ca)?));
        } else if !cfg!(any(feature = "tls-roots", feature = "tls-webpki-roots")) {
            return Err(BuildError::MissingFeature {
                what: "an https endpoint with no CA file (OTEL_EXPORTER_OTLP_CERTIFICATE)".into(),
                feature: "tls-roots",
                fix: "turn on `tls-roots` (the system's roots) or `tls-webpki-roots`, or name a CA file in OTEL_EXPORTER_OTLP_CERTIFICATE",
            });
        }
        if let Some((cert, key)) = self.identity_files()? {
            config = config.identity(Identity::from_pem(self.read(cert)?, self.read(key)?));
        }
        Ok(builder.with_tls_config(config))
    }

    /// Without a TLS feature an `https` endpoint is an error saying which to add.
    #[cfg(not(any(feature = "tls-ring", feature = "tls-aws-lc")))]
    pub(crate) fn with_tls<B>(&self, _builder: B) -> Result<B, BuildError> {
        Err(no_tls_error())
    }
}
