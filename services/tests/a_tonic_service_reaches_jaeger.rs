//! The service of `src/bin/tonic-service.rs` (tonic with tower-http's
//! `TraceLayer::new_for_grpc()`, a global `EnvFilter`, its own OTLP pipeline,
//! tokio-blackbox added as the README says) as a real process against a
//! real Jaeger v2, over OTLP/HTTP: it exits 0 with no panic, and each slow
//! `Quote` call's trace holds a `blackbox.window` (or the reference to the
//! capture that covered it) under the app's gRPC request span, under the
//! service name set in code.

mod common;

use common::peers::Jaeger;
use common::{assert_clean_exit, run_service, stat};
use tokio_blackbox_services::{QuoteRequest, quote};

const SERVICE: &str = "pricing";

/// Three slow calls (500 ms of pricing work) and six fast ones, over one
/// connection, as a gRPC client makes them.
fn drive(addr: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        for round in 0..3 {
            for (item, work_ms) in [("book", 500), ("pen", 1), ("ink", 1)] {
                let request = QuoteRequest {
                    item: item.into(),
                    work_ms,
                };
                let reply = quote(channel.clone(), request)
                    .await
                    .unwrap_or_else(|s| panic!("Quote {item} (round {round}): {s}"));
                assert_eq!(reply.cents, 100 + item.len() as u64);
            }
        }
    });
}

#[test]
fn a_tonic_service_and_its_windows_reach_jaeger() {
    let jaeger = Jaeger::start();
    let run = run_service(
        env!("CARGO_BIN_EXE_tonic-service"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http_url()),
            ("RUST_LOG", "info,tower_http=debug".into()),
        ],
        drive,
    );
    assert_clean_exit(&run);
    assert_eq!(stat(&run, "requests_seen"), 9, "every call seen");
    assert_eq!(stat(&run, "slow_requests"), 3);
    assert_eq!(stat(&run, "export_failures"), 0);
    assert_eq!(stat(&run, "windows_unlinked"), 0);
    common::check_slow_traces(&jaeger, SERVICE, 3);
}
