//! One real workload per cause of a slow request, without the scheduling delay (the default): `inferred` from the order of polls.
//! Each asserts the verdict and that the shares add up to the duration
//! (the cases and their checks: `support::verdicts`).

mod support;

verdict_tests!(false, tokio_blackbox::analysis::Confidence::Inferred);
