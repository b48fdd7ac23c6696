//! Gzip on the wire when the endpoint accepts it (issue 25).
//!
//! With no `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION` set (and the `gzip`
//! feature, on by default), the recorder's exporter sends gzip first: the
//! Collector's, Jaeger's and Tempo's OTLP receivers accept it on gRPC and
//! HTTP, and it makes a window about five times smaller. A receiver that
//! does not (a gRPC server without gzip answers `Unimplemented`; an HTTP
//! one 415, or 400 when it reads the compressed body as protobuf) is
//! answered by sending the same batch again uncompressed: when that is
//! accepted, every later export goes uncompressed. Until one export has
//! gone through either way, the batch is kept for that second try; after,
//! nothing is copied. A setting of `gzip` or `none` is used as it is.

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// No export has gone through yet.
const UNKNOWN: u8 = 0;
/// The endpoint took a gzip export.
const ACCEPTED: u8 = 1;
/// The endpoint refused gzip and took the same batch uncompressed.
const REFUSED: u8 = 2;

/// Two exporters to one endpoint, one compressing and one not: gzip until
/// the endpoint refuses it (see the module).
#[derive(Debug)]
pub(crate) struct GzipUnlessRefused<E> {
    gzip: E,
    plain: E,
    state: AtomicU8,
}

impl<E> GzipUnlessRefused<E> {
    pub(crate) fn new(gzip: E, plain: E) -> GzipUnlessRefused<E> {
        GzipUnlessRefused {
            gzip,
            plain,
            state: AtomicU8::new(UNKNOWN),
        }
    }

    /// `Some(true)` once the endpoint took gzip, `Some(false)` once it
    /// refused it, `None` before.
    #[cfg(test)]
    fn gzip_accepted(&self) -> Option<bool> {
        match self.state.load(Ordering::Relaxed) {
            ACCEPTED => Some(true),
            REFUSED => Some(false),
            _ => None,
        }
    }
}

/// How `opentelemetry-otlp` reports a receiver that cannot read gzip: gRPC
/// `Unimplemented` (tonic's and grpc-go's answer to an unknown
/// `grpc-encoding`), HTTP 415, or HTTP 400 (the body read as protobuf).
fn refuses_gzip(e: &OTelSdkError) -> bool {
    match e {
        OTelSdkError::InternalFailure(m) => {
            m.contains("gRPC code: Unimplemented")
                || m.contains("status code: 415")
                || m.contains("status code: 400")
        }
        _ => false,
    }
}

impl<E: SpanExporter> SpanExporter for GzipUnlessRefused<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self.state.load(Ordering::Relaxed) {
            ACCEPTED => self.gzip.export(batch).await,
            REFUSED => self.plain.export(batch).await,
            _ => {
                let again = batch.clone();
                match self.gzip.export(batch).await {
                    Ok(()) => {
                        self.state.store(ACCEPTED, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) if refuses_gzip(&e) => {
                        let plain = self.plain.export(again).await;
                        if plain.is_ok() {
                            self.state.store(REFUSED, Ordering::Relaxed);
                        }
                        plain
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let gzip = self.gzip.shutdown_with_timeout(timeout);
        let plain = self.plain.shutdown_with_timeout(timeout);
        gzip.and(plain)
    }

    fn force_flush(&self) -> OTelSdkResult {
        let gzip = self.gzip.force_flush();
        let plain = self.plain.force_flush();
        gzip.and(plain)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.gzip.set_resource(resource);
        self.plain.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An exporter that answers `reply` and records the batch sizes it saw.
    #[derive(Debug, Clone)]
    struct Fake {
        reply: Option<&'static str>,
        seen: Arc<Mutex<Vec<usize>>>,
    }

    impl Fake {
        fn new(reply: Option<&'static str>) -> Fake {
            Fake {
                reply,
                seen: Arc::default(),
            }
        }
        fn seen(&self) -> Vec<usize> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl SpanExporter for Fake {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.seen.lock().unwrap().push(batch.len());
            match self.reply {
                None => Ok(()),
                Some(m) => Err(OTelSdkError::InternalFailure(m.into())),
            }
        }
    }

    fn batch() -> Vec<SpanData> {
        let w = crate::export::testing::window(1, 2, 1);
        crate::export::otlp::window_spans(&w, crate::export::otlp::Budget::default()).0
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn an_endpoint_that_takes_gzip_gets_gzip_only() {
        let (gz, plain) = (Fake::new(None), Fake::new(None));
        let e = GzipUnlessRefused::new(gz.clone(), plain.clone());
        let n = batch().len();
        assert!(run(e.export(batch())).is_ok());
        assert!(run(e.export(batch())).is_ok());
        assert_eq!(e.gzip_accepted(), Some(true));
        assert_eq!((gz.seen(), plain.seen()), (vec![n, n], vec![]));
    }

    #[test]
    fn an_endpoint_that_refuses_gzip_gets_the_batch_again_uncompressed() {
        for refusal in [
            "TonicTracesClient export failed with gRPC code: Unimplemented",
            "HTTP export failed with status code: 415",
            "HTTP export failed with status code: 400",
        ] {
            let (gz, plain) = (Fake::new(Some(refusal)), Fake::new(None));
            let e = GzipUnlessRefused::new(gz.clone(), plain.clone());
            let n = batch().len();
            assert!(run(e.export(batch())).is_ok(), "{refusal}");
            assert_eq!(e.gzip_accepted(), Some(false));
            // From then on, uncompressed only.
            assert!(run(e.export(batch())).is_ok());
            assert_eq!(
                (gz.seen(), plain.seen()),
                (vec![n], vec![n, n]),
                "{refusal}"
            );
        }
    }

    #[test]
    fn other_failures_are_the_endpoints_not_gzips() {
        // Down: no second try, and gzip is tried again next time.
        let down = "TonicTracesClient export failed with gRPC code: Unavailable";
        let (gz, plain) = (Fake::new(Some(down)), Fake::new(None));
        let e = GzipUnlessRefused::new(gz.clone(), plain.clone());
        assert!(run(e.export(batch())).is_err());
        assert_eq!(e.gzip_accepted(), None);
        assert!(plain.seen().is_empty());
        // Refused both ways: the error is the uncompressed try's, and gzip
        // is not given up.
        let no = "TonicTracesClient export failed with gRPC code: Unimplemented";
        let (gz, plain) = (Fake::new(Some(no)), Fake::new(Some(no)));
        let e = GzipUnlessRefused::new(gz.clone(), plain.clone());
        assert!(run(e.export(batch())).is_err());
        assert_eq!(e.gzip_accepted(), None);
        assert_eq!((gz.seen().len(), plain.seen().len()), (1, 1));
    }
}
