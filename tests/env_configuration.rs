//! `BLACKBOX_*` variables: the threshold read from the real environment is
//! respected, and every malformed value of every variable is a typed error
//! naming the variable, the value and what is accepted.
//!
//! One test function, because the process environment is shared by threads.

use std::time::Duration;
use tokio_blackbox::{Blackbox, BuildError, ENV_VARS};
use tracing_subscriber::prelude::*;

fn set(var: &str, value: &str) {
    // SAFETY: the only test in this binary; no other thread reads the environment.
    unsafe { std::env::set_var(var, value) }
}

fn unset(var: &str) {
    // SAFETY: as above.
    unsafe { std::env::remove_var(var) }
}

/// Opens and closes one request span lasting `d`; returns the slow count after.
fn request_lasting(blackbox: &Blackbox, d: Duration) -> u64 {
    let sub = tracing_subscriber::registry().with(blackbox.layer());
    tracing::subscriber::with_default(sub, || {
        let _span = tracing::info_span!("request").entered();
        std::thread::sleep(d);
    });
    blackbox.stats().slow_requests
}

#[test]
fn environment_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    set(
        "BLACKBOX_DIR",
        dir.path().to_str().expect("utf-8 temp path"),
    );

    // The threshold from the environment is respected.
    set("BLACKBOX_LATENCY_THRESHOLD", "80ms");
    let (blackbox, guard) = Blackbox::builder()
        .with_default_env()
        .build()
        .expect("build");
    assert_eq!(request_lasting(&blackbox, Duration::from_millis(20)), 0);
    assert_eq!(request_lasting(&blackbox, Duration::from_millis(90)), 1);
    drop(guard);

    // Values set in code win over the environment.
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::from_millis(10))
        .with_default_env()
        .build()
        .expect("build");
    assert_eq!(request_lasting(&blackbox, Duration::from_millis(20)), 1);
    drop(guard);

    // Without with_default_env(), the environment is not read (default 500ms).
    let (blackbox, guard) = Blackbox::builder().dir(dir.path()).build().expect("build");
    assert_eq!(request_lasting(&blackbox, Duration::from_millis(90)), 0);
    drop(guard);
    unset("BLACKBOX_LATENCY_THRESHOLD");

    // BLACKBOX_DISABLED turns everything off.
    set("BLACKBOX_DISABLED", "true");
    let (blackbox, guard) = Blackbox::builder()
        .latency_threshold(Duration::ZERO)
        .with_default_env()
        .build()
        .expect("build");
    assert_eq!(request_lasting(&blackbox, Duration::from_millis(1)), 0);
    assert_eq!(blackbox.stats().requests_seen, 0);
    drop(guard);
    unset("BLACKBOX_DISABLED");

    // Every variable: a malformed value is a typed error naming it.
    let bad: &[(&str, &[&str])] = &[
        (
            "BLACKBOX_LATENCY_THRESHOLD",
            &["250", "fast", "-1s", "1e3ms", ""],
        ),
        ("BLACKBOX_WINDOW_BEFORE", &["2", "two seconds"]),
        ("BLACKBOX_WINDOW_AFTER", &["200", "1.s"]),
        (
            "BLACKBOX_BUFFER_MEMORY",
            &[
                "0",
                "1KiB",
                "-5",
                "lots",
                "16 parsecs",
                "99999999999999G",
                "64GiB",
            ],
        ),
        ("BLACKBOX_STUCK_AFTER", &["10", "never", "1ms"]),
        ("BLACKBOX_MAX_CAPTURES_PER_SEC", &["0", "1.5", "x"]),
        ("BLACKBOX_DIR", &[""]),
        ("BLACKBOX_REQUEST_SPANS", &["target:", "a b", ",,"]),
        ("BLACKBOX_SCHEDULE_DELAY", &["maybe", "2"]),
        ("BLACKBOX_DISABLED", &["nope"]),
        ("BLACKBOX_LONG_POLL", &["10", "soon"]),
        ("BLACKBOX_MAX_SPANS_PER_WINDOW", &["0", "many"]),
        ("BLACKBOX_BASELINE_RATIO", &["1.5", "-0.1", "half", "NaN"]),
        (
            "BLACKBOX_CPU_BUDGET",
            &["2", "0%", "150%", "-1%", "much", "NaN%", "0.02"],
        ),
    ];
    assert_eq!(
        bad.len(),
        ENV_VARS.len(),
        "every documented variable is tested"
    );
    for (var, values) in bad {
        for value in *values {
            set(var, value);
            let err = Blackbox::builder()
                .with_default_env()
                .build()
                .expect_err(&format!("{var}={value:?} must fail"));
            match &err {
                BuildError::InvalidEnv {
                    var: v,
                    value: got,
                    expected,
                } => {
                    assert_eq!(v, var);
                    assert_eq!(got, value);
                    assert!(!expected.is_empty());
                }
                other => panic!("{var}={value:?}: expected InvalidEnv, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(var) && msg.contains("expected"), "{msg}");
            unset(var);
        }
    }
    unset("BLACKBOX_DIR");

    // A window longer than the longest window is refused, not cut silently.
    let err = Blackbox::builder()
        .window(Duration::from_secs(20), Duration::from_secs(20))
        .build()
        .expect_err("before + after past the maximum window");
    assert!(err.to_string().contains("window"), "{err}");

    // The per-thread ring settings of earlier versions are refused by name,
    // with what replaces them.
    for old in ["BLACKBOX_EVENTS_PER_THREAD", "BLACKBOX_MAX_THREADS"] {
        set(old, "4096");
        let err = Blackbox::builder()
            .with_default_env()
            .build()
            .expect_err(old);
        assert!(
            matches!(&err, BuildError::RemovedEnv { var, .. } if var == &old),
            "{err:?}"
        );
        assert!(err.to_string().contains("BLACKBOX_BUFFER_MEMORY"), "{err}");
        unset(old);
    }
}
