//! The deployment files hang together: docker-compose.yml mounts files that
//! exist and parse, publishes only the UIs and the Collector's OTLP ports on
//! 127.0.0.1, pins its images; Tempo's and Grafana's provisioning files have
//! the keys they need and point at the compose services; the Dockerfile
//! builds the example the README runs.
//!
//! No Docker needed: this only reads files.
//! Needs the dev-dependency `serde_yaml_ng = "0.10"`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Yaml;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn yaml_file(path: &Path) -> Yaml {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn json_file(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// `v[k1][k2]...`, panicking with the path when a key is missing.
fn at<'a>(v: &'a Yaml, keys: &[&str], what: &str) -> &'a Yaml {
    let mut cur = v;
    for (i, k) in keys.iter().enumerate() {
        cur = cur
            .get(*k)
            .unwrap_or_else(|| panic!("{what}: missing key {}", keys[..=i].join(".")));
    }
    cur
}

fn s<'a>(v: &'a Yaml, keys: &[&str], what: &str) -> &'a str {
    at(v, keys, what)
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {} is not a string", keys.join(".")))
}

fn compose() -> Yaml {
    yaml_file(&root().join("docker-compose.yml"))
}

fn services(c: &Yaml) -> Vec<(String, &Yaml)> {
    at(c, &["services"], "docker-compose.yml")
        .as_mapping()
        .expect("services is a mapping")
        .iter()
        .map(|(k, v)| (k.as_str().expect("service name").to_string(), v))
        .collect()
}

fn service<'a>(c: &'a Yaml, name: &str) -> &'a Yaml {
    at(c, &["services", name], "docker-compose.yml")
}

/// The short-syntax volume mounts of a service: (host, container).
fn bind_mounts(svc: &Yaml) -> Vec<(String, String)> {
    svc.get("volumes")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter_map(|m| {
            let parts: Vec<&str> = m.split(':').collect();
            (parts.len() >= 2).then(|| (parts[0].to_string(), parts[1].to_string()))
        })
        .collect()
}

fn env_of(svc: &Yaml) -> Vec<(String, String)> {
    match svc.get("environment") {
        Some(Yaml::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Yaml::String(s) => s.clone(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    other => panic!("environment value {other:?} is not a scalar"),
                };
                (k.as_str().unwrap().to_string(), v)
            })
            .collect(),
        Some(Yaml::Sequence(seq)) => seq
            .iter()
            .map(|e| {
                let e = e.as_str().expect("environment entry is a string");
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn env_get(svc: &Yaml, key: &str) -> Option<String> {
    env_of(svc)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Parses a file by its extension; panics if it does not parse.
fn check_parses(path: &Path) {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => {
            yaml_file(path);
        }
        Some("json") => {
            json_file(path);
        }
        _ => {}
    }
}

#[test]
fn compose_has_the_demo_stack() {
    let c = compose();
    let names: BTreeSet<String> = services(&c).into_iter().map(|(n, _)| n).collect();
    for needed in ["demo", "otel-collector", "jaeger", "tempo", "grafana"] {
        assert!(
            names.contains(needed),
            "docker-compose.yml lacks service {needed} (has {names:?})"
        );
    }
}

#[test]
fn compose_images_are_pinned() {
    let c = compose();
    for (name, svc) in services(&c) {
        if svc.get("build").is_some() {
            continue;
        }
        let image = s(svc, &["image"], &format!("service {name}"));
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("service {name}: image {image} has no tag"));
        assert!(
            tag != "latest" && !tag.is_empty(),
            "service {name}: image {image} is not pinned"
        );
    }
    assert_eq!(
        s(service(&c, "jaeger"), &["image"], "jaeger"),
        "jaegertracing/jaeger:2.13.0"
    );
    let tempo = s(service(&c, "tempo"), &["image"], "tempo");
    assert!(
        tempo.starts_with("grafana/tempo:3."),
        "Tempo must be 3.x (deploy/tempo/tempo.yaml is a 3.x config): {tempo}"
    );
    let otelcol = s(service(&c, "otel-collector"), &["image"], "otel-collector");
    assert!(
        otelcol.starts_with("otel/opentelemetry-collector-contrib:"),
        "{otelcol}"
    );
    // The configs use 0.161 component names (otlp_grpc, load_balancing);
    // keep the image at the release tools/otelcol/builder-config.yaml pins.
    let manifest = read("tools/otelcol/builder-config.yaml");
    let version = otelcol.rsplit_once(':').unwrap().1;
    assert!(
        manifest.contains(&format!("tailsamplingprocessor v{version}")),
        "collector image {otelcol} is not the release in tools/otelcol/builder-config.yaml"
    );
}

#[test]
fn compose_publishes_only_uis_and_otlp_on_loopback() {
    let c = compose();
    let mut published = BTreeSet::new();
    for (name, svc) in services(&c) {
        for p in svc
            .get("ports")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
        {
            let p = match p {
                Yaml::String(s) => s.clone(),
                other => panic!(
                    "service {name}: use the \"127.0.0.1:HOST:CONTAINER\" port syntax, not {other:?}"
                ),
            };
            assert!(
                p.starts_with("127.0.0.1:"),
                "service {name} publishes {p} beyond 127.0.0.1"
            );
            let host_port = p.split(':').nth(1).unwrap().to_string();
            published.insert((name.clone(), host_port));
        }
    }
    let expected: BTreeSet<(String, String)> = [
        ("grafana", "3000"),
        ("jaeger", "16686"),
        ("otel-collector", "4317"),
        ("otel-collector", "4318"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(published, expected, "published ports");
}

#[test]
fn compose_mounts_exist_and_parse() {
    let c = compose();
    let mut mounted = 0;
    for (name, svc) in services(&c) {
        for (host, _container) in bind_mounts(svc) {
            if !(host.starts_with("./") || host.starts_with("../") || host.starts_with('/')) {
                // A named volume: must be declared.
                assert!(
                    at(&c, &["volumes"], "docker-compose.yml")
                        .get(host.as_str())
                        .is_some(),
                    "service {name} uses volume {host}, not declared under volumes:"
                );
                continue;
            }
            let path = root().join(&host);
            assert!(
                path.exists(),
                "service {name} mounts {host}, which does not exist"
            );
            if path.is_dir() {
                for f in files_under(&path) {
                    check_parses(&f);
                }
            } else {
                check_parses(&path);
            }
            mounted += 1;
        }
        if let Some(build) = svc.get("build") {
            let ctx = build.get("context").and_then(Yaml::as_str).unwrap_or(".");
            let dockerfile = build
                .get("dockerfile")
                .and_then(Yaml::as_str)
                .unwrap_or("Dockerfile");
            assert!(
                root().join(ctx).join(dockerfile).is_file(),
                "service {name}: {ctx}/{dockerfile} missing"
            );
        }
    }
    assert!(
        mounted >= 3,
        "expected the collector, tempo and grafana config mounts"
    );
}

#[test]
fn collector_service_runs_the_repo_config_with_known_variables() {
    let c = compose();
    let col = service(&c, "otel-collector");
    let mounts = bind_mounts(col);
    let (host, container) = mounts
        .iter()
        .find(|(h, _)| h.ends_with("collector-config/otelcol.yaml"))
        .expect("otel-collector mounts collector-config/otelcol.yaml");
    let command: Vec<&str> = at(col, &["command"], "otel-collector")
        .as_sequence()
        .expect("command is a list")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        command
            .iter()
            .any(|a| *a == format!("--config={container}")),
        "otel-collector must run --config={container}, has {command:?}"
    );
    let config = fs::read_to_string(root().join(host)).unwrap();
    for (k, _) in env_of(col) {
        assert!(
            config.contains(&format!("${{env:{k}")),
            "otel-collector sets {k}, which {host} does not read"
        );
    }
    // Receivers listen on the compose network; exporters reach services.
    assert_eq!(
        env_get(col, "OTELCOL_OTLP_GRPC_ENDPOINT").as_deref(),
        Some("0.0.0.0:4317")
    );
    assert_eq!(
        env_get(col, "OTELCOL_OTLP_HTTP_ENDPOINT").as_deref(),
        Some("0.0.0.0:4318")
    );
    for (var, svc) in [
        ("OTELCOL_JAEGER_ENDPOINT", "jaeger"),
        ("OTELCOL_TEMPO_ENDPOINT", "tempo"),
    ] {
        let v = env_get(col, var).unwrap_or_else(|| panic!("otel-collector does not set {var}"));
        assert_eq!(v, format!("{svc}:4317"), "{var}");
        service(&c, svc);
    }
    // The demo sends to the Collector.
    let demo = service(&c, "demo");
    assert_eq!(
        env_get(demo, "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("http://otel-collector:4317")
    );
    let demo_cmd = format!("{:?}", at(demo, &["command"], "demo"));
    assert!(
        demo_cmd.contains("--duration"),
        "demo runs with a --duration: {demo_cmd}"
    );
}

#[test]
fn tempo_config_is_a_3x_monolithic_config() {
    let c = compose();
    let tempo_svc = service(&c, "tempo");
    let (host, container) = bind_mounts(tempo_svc)
        .into_iter()
        .find(|(h, _)| h.ends_with("deploy/tempo/tempo.yaml"))
        .expect("tempo mounts deploy/tempo/tempo.yaml");
    let command = format!("{:?}", at(tempo_svc, &["command"], "tempo"));
    assert!(
        command.contains(&format!("-config.file={container}")),
        "tempo runs -config.file={container}: {command}"
    );

    let t = yaml_file(&root().join(&host));
    let what = "deploy/tempo/tempo.yaml";
    // Tempo 3.x has none of these; Tempo refuses unknown blocks.
    for gone in [
        "ingester",
        "ingester_client",
        "compactor",
        "metrics_generator_client",
    ] {
        assert!(
            t.get(gone).is_none(),
            "{what}: `{gone}` is a Tempo 2.x block, removed in 3.0"
        );
    }
    let text = read(&host);
    assert!(
        !text.lines().any(|l| !l.trim_start().starts_with('#')
            && (l.contains("local-blocks") || l.contains("local_blocks"))),
        "{what}: the local-blocks processor is gone in Tempo 3.0"
    );
    assert_eq!(
        at(&t, &["server", "http_listen_port"], what).as_u64(),
        Some(3200)
    );
    let grpc = s(
        &t,
        &[
            "distributor",
            "receivers",
            "otlp",
            "protocols",
            "grpc",
            "endpoint",
        ],
        what,
    );
    assert!(
        grpc.ends_with(":4317"),
        "{what}: OTLP gRPC receiver on {grpc}, the Collector sends to tempo:4317"
    );
    assert_eq!(s(&t, &["storage", "trace", "backend"], what), "local");
    // WAL and blocks on the mounted volume.
    let data_mount = bind_mounts(tempo_svc)
        .into_iter()
        .find(|(h, _)| !h.starts_with('.') && !h.starts_with('/'))
        .map(|(_, c)| c)
        .expect("tempo has a named data volume");
    for key in [
        ["storage", "trace", "wal", "path"],
        ["storage", "trace", "local", "path"],
    ] {
        let p = s(&t, &key, what);
        assert!(
            p.starts_with(&data_mount),
            "{what}: {} = {p} is not on the data volume {data_mount}",
            key.join(".")
        );
    }
}

struct Datasource {
    uid: String,
    kind: String,
    url: String,
}

fn grafana_datasources() -> Vec<Datasource> {
    let dir = root().join("deploy/grafana/provisioning/datasources");
    let mut out = Vec::new();
    for f in files_under(&dir) {
        let y = yaml_file(&f);
        let what = f.display().to_string();
        assert_eq!(
            at(&y, &["apiVersion"], &what).as_u64(),
            Some(1),
            "{what}: apiVersion"
        );
        for ds in at(&y, &["datasources"], &what)
            .as_sequence()
            .expect("datasources is a list")
        {
            for k in ["name", "uid", "type", "url", "access"] {
                assert!(
                    ds.get(k).and_then(Yaml::as_str).is_some(),
                    "{what}: a data source lacks {k}"
                );
            }
            out.push(Datasource {
                uid: s(ds, &["uid"], &what).to_string(),
                kind: s(ds, &["type"], &what).to_string(),
                url: s(ds, &["url"], &what).to_string(),
            });
        }
    }
    out
}

#[test]
fn grafana_datasources_point_at_the_compose_services() {
    let c = compose();
    let ds = grafana_datasources();
    let tempo = ds
        .iter()
        .find(|d| d.kind == "tempo")
        .expect("a Tempo data source");
    let jaeger = ds
        .iter()
        .find(|d| d.kind == "jaeger")
        .expect("a Jaeger data source");
    assert_eq!(tempo.url, "http://tempo:3200");
    assert_eq!(jaeger.url, "http://jaeger:16686");
    for d in &ds {
        let host = d
            .url
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap();
        service(&c, host);
    }
    let uids: BTreeSet<&str> = ds.iter().map(|d| d.uid.as_str()).collect();
    assert_eq!(uids.len(), ds.len(), "data source uids are unique");
}

#[test]
fn grafana_dashboard_is_provisioned_and_uses_traceql_metrics() {
    let c = compose();
    let grafana = service(&c, "grafana");
    let (host, container) = bind_mounts(grafana)
        .into_iter()
        .find(|(h, _)| h.ends_with("deploy/grafana/provisioning"))
        .expect("grafana mounts deploy/grafana/provisioning");
    assert_eq!(container, "/etc/grafana/provisioning");

    let providers_file = root().join(&host).join("dashboards/dashboards.yaml");
    let p = yaml_file(&providers_file);
    let what = providers_file.display().to_string();
    assert_eq!(at(&p, &["apiVersion"], &what).as_u64(), Some(1));
    let providers = at(&p, &["providers"], &what)
        .as_sequence()
        .expect("providers is a list");
    assert!(!providers.is_empty());
    let mut dashboards = Vec::new();
    for prov in providers {
        assert_eq!(s(prov, &["type"], &what), "file");
        let path = s(prov, &["options", "path"], &what);
        let rel = path.strip_prefix(&container).unwrap_or_else(|| {
            panic!("{what}: provider path {path} is not inside the mounted {container}")
        });
        let dir = root().join(&host).join(rel.trim_start_matches('/'));
        let jsons: Vec<PathBuf> = files_under(&dir)
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
            .collect();
        assert!(
            !jsons.is_empty(),
            "{what}: no dashboard JSON in {}",
            dir.display()
        );
        dashboards.extend(jsons);
    }

    if let Some(home) = env_get(grafana, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH") {
        let rel = home
            .strip_prefix(&container)
            .expect("home dashboard inside the provisioning mount");
        assert!(
            root()
                .join(&host)
                .join(rel.trim_start_matches('/'))
                .is_file(),
            "home dashboard {home} missing"
        );
    }

    let uids: BTreeSet<String> = grafana_datasources().into_iter().map(|d| d.uid).collect();
    let mut queries = Vec::new();
    let mut panel_types = Vec::new();
    for f in &dashboards {
        let d = json_file(f);
        assert!(
            d["uid"].is_string() && d["title"].is_string(),
            "{}: uid and title",
            f.display()
        );
        for panel in d["panels"].as_array().expect("panels") {
            panel_types.push(panel["type"].as_str().unwrap_or("").to_string());
            let mut refs = vec![&panel["datasource"]];
            for t in panel["targets"].as_array().into_iter().flatten() {
                refs.push(&t["datasource"]);
                if let Some(q) = t["query"].as_str() {
                    queries.push((t.clone(), q.to_string()));
                }
            }
            for r in refs {
                if let Some(uid) = r["uid"].as_str() {
                    assert!(
                        uids.contains(uid),
                        "{}: panel {} uses unknown data source {uid}",
                        f.display(),
                        panel["title"]
                    );
                }
            }
        }
    }
    assert!(
        queries
            .iter()
            .any(|(t, q)| q.contains(r#"{ name = "blackbox.window" }"#)
                && q.contains("rate()")
                && t["metricsQueryType"] == "range"),
        "a TraceQL metrics query on blackbox.window over time: {queries:?}"
    );
    assert!(
        panel_types.iter().any(|t| t == "table"),
        "a table of captured requests"
    );
}

#[test]
fn dockerfile_builds_the_example_the_readme_runs() {
    let dockerfile = read("Dockerfile");
    let build: Vec<&str> = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("the Dockerfile runs `cargo build`")
        .split_whitespace()
        .collect();
    assert!(
        build.contains(&"--release"),
        "Dockerfile builds with --release: {build:?}"
    );
    let example = build
        .iter()
        .position(|w| *w == "--example")
        .and_then(|i| build.get(i + 1))
        .expect("Dockerfile builds an --example");

    let readme = read("README.md");
    let run_line = readme
        .lines()
        .find(|l| l.contains("cargo run") && l.contains("--example"))
        .expect("README.md shows `cargo run --release --example ...`");
    let run: Vec<&str> = run_line.split_whitespace().collect();
    assert!(
        run.contains(&"--release"),
        "README runs the demo with --release: {run_line}"
    );
    let readme_example = run
        .iter()
        .position(|w| *w == "--example")
        .and_then(|i| run.get(i + 1))
        .expect("README names the example");
    assert_eq!(
        example.trim_matches('`'),
        readme_example.trim_matches('`'),
        "Dockerfile and README build different examples"
    );
    let src = root()
        .join("examples")
        .join(format!("{}.rs", example.trim_matches('`')));
    assert!(src.is_file(), "{} does not exist", src.display());
    // The image's binary is the one built.
    assert!(
        dockerfile.contains(&format!("target/release/examples/{example}")),
        "Dockerfile copies the built example"
    );
}

#[test]
fn tail_sampling_is_the_same_in_the_single_and_two_tier_configs() {
    let single = yaml_file(&root().join("collector-config/otelcol.yaml"));
    let tier = yaml_file(&root().join("collector-config/otelcol-tailsampling-tier.yaml"));
    let a = at(&single, &["processors", "tail_sampling"], "otelcol.yaml");
    let b = at(
        &tier,
        &["processors", "tail_sampling"],
        "otelcol-tailsampling-tier.yaml",
    );
    assert_eq!(
        a, b,
        "the tail_sampling settings of otelcol.yaml and otelcol-tailsampling-tier.yaml differ"
    );
    let lb = yaml_file(&root().join("collector-config/otelcol-loadbalancing.yaml"));
    assert_eq!(
        s(
            &lb,
            &["exporters", "load_balancing", "routing_key"],
            "otelcol-loadbalancing.yaml"
        ),
        "traceID"
    );
}
