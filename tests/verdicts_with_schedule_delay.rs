//! One real workload per cause of a slow request, with Tokio's scheduling delay recorded (`BLACKBOX_SCHEDULE_DELAY`): `exact`.
//! Each asserts the verdict and that the shares add up to the duration
//! (the cases and their checks: `support::verdicts`).

mod support;

verdict_tests!(true, tokio_blackbox::analysis::Confidence::Exact);
