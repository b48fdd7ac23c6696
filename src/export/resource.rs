//! The resource every exported span carries.

use opentelemetry::{Key, KeyValue};
use opentelemetry_sdk::Resource;

/// The resource of every exported span: the SDK's detectors
/// (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, telemetry.sdk.*) plus
/// `host.name` when they did not set it. Jaeger's clock-skew adjuster shifts
/// child spans that start before their parent unless `host.name` is present,
/// which would distort the timeline.
///
/// # Examples
///
/// ```
/// let r = tokio_blackbox::export::resource();
/// assert!(r.get(&opentelemetry::Key::new("host.name")).is_some());
/// assert!(r.get(&opentelemetry::Key::new("service.name")).is_some());
/// ```
pub fn resource() -> Resource {
    let detected = Resource::builder().build();
    if detected.get(&Key::new("host.name")).is_some() {
        return detected;
    }
    Resource::builder()
        .with_attribute(KeyValue::new("host.name", host_name()))
        .build()
}

/// The resource spans are exported under when the application gave its
/// own (`app`): the environment's [`resource()`] with every attribute of the
/// app's over it, so a service name set in code wins over `unknown_service`.
pub(crate) fn merged(app: Option<&Resource>) -> Resource {
    let base = resource();
    let Some(app) = app else { return base };
    let mut attrs: Vec<KeyValue> = base
        .iter()
        .filter(|(k, _)| app.get(k).is_none())
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    attrs.extend(app.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
    Resource::builder_empty().with_attributes(attrs).build()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
