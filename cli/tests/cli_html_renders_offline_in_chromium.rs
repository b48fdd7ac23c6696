//! `blackbox html` writes a page that renders in real headless Chromium from
//! `file://`, shows the lanes, the slow request and the blocking
//! neighbour's long poll, and loads nothing from anywhere.
//!
//! Needs Chromium: `apt-get install -y chromium` (Debian), or set
//! `BLACKBOX_CHROMIUM` to the browser's path. The screenshot for a person to
//! look at is saved as `<target>/tmp/blackbox-html/small.png`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("BLACKBOX_CHROMIUM") {
        return p.into();
    }
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        if let Some(dir) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .find(|d| d.join(name).is_file())
        {
            return dir.join(name);
        }
    }
    panic!(
        "no Chromium found: install it (`apt-get install -y chromium`) or set BLACKBOX_CHROMIUM"
    );
}

/// Runs headless Chromium on `page` with `args`; returns stdout and stderr.
fn headless(page: &Path, args: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--window-size=1400,900",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes the page of `small.bbx` as `<name>.html` (one per test: they run in parallel).
fn write_page(name: &str) -> (PathBuf, String) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("blackbox-html");
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join(format!("{name}.html"));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/small.bbx");
    let status = Command::new(env!("CARGO_BIN_EXE_blackbox"))
        .arg("html")
        .arg(&fixture)
        .arg("-o")
        .arg(&page)
        .status()
        .unwrap();
    assert!(status.success());
    let html = std::fs::read_to_string(&page).unwrap();
    (page, html)
}

#[test]
fn page_names_nothing_outside_itself() {
    let (_, html) = write_page("static");
    assert!(
        html.contains(r#"<meta http-equiv="Content-Security-Policy" content="default-src 'none';"#),
        "the page must forbid every fetch"
    );
    for needle in [
        "http:",
        "https:",
        "src=",
        "href=",
        "url(",
        "@import",
        "fetch(",
        "XMLHttpRequest",
        "WebSocket",
        "import(",
    ] {
        assert!(!html.contains(needle), "the page contains {needle:?}");
    }
}

#[test]
fn page_renders_lanes_request_and_long_poll() {
    let (page, _) = write_page("dom");
    let (dom, log) = headless(&page, &["--dump-dom".to_string()]);
    assert!(
        dom.contains(r#"data-rendered="true""#),
        "the script did not finish:\n{log}"
    );
    assert!(
        dom.contains(r#"data-resources="0""#),
        "the page loaded resources:\n{dom}"
    );
    assert!(
        !log.contains("Refused to"),
        "a fetch was blocked by the CSP:\n{log}"
    );
    assert!(!log.contains("Uncaught"), "a script error:\n{log}");

    // A lane per worker thread, and the tasks.
    assert_eq!(
        dom.matches(r#"class="label lane worker""#).count(),
        3,
        "{dom}"
    );
    for task in [
        support::fixtures::TASK_HANDLER,
        support::fixtures::TASK_QUERY,
        support::fixtures::TASK_CACHE,
    ] {
        assert!(
            dom.contains(&format!(r#"data-task="{task}""#)),
            "no lane for task {task}"
        );
    }
    // The request's own tasks are marked as such.
    assert!(dom.contains(&format!(
        r#"class="label task own" data-task="{}""#,
        support::fixtures::TASK_HANDLER
    )));
    // The slow request, above the lanes and in the list.
    assert!(dom.contains(&format!(
        r#"class="label request slow" data-trace="{}""#,
        support::fixtures::TRACE_ID
    )));
    assert!(dom.contains("GET /orders"));
    // The verdict is the page's headline and in the request's row.
    assert!(
        dom.contains(r#"id="verdict""#) && dom.contains("blocked worker: task src/cache.rs:77"),
        "no verdict headline:\n{dom}"
    );
    assert!(dom.contains(r#"class="verdict" title="blocked_worker (exact): own_cpu"#));
    // The blocking neighbour's 200 ms poll.
    let at = dom
        .find(&format!(
            r#"class="clickable long-poll" data-task="{}""#,
            support::fixtures::TASK_CACHE
        ))
        .expect("the long poll is listed");
    let row = &dom[at..at + dom[at..].find("</tr>").unwrap()];
    assert!(
        row.contains("src/cache.rs:77:13") && row.contains("200.0 ms"),
        "{row}"
    );
}

#[test]
fn page_screenshot_for_people() {
    let (page, _) = write_page("small");
    let png = page.with_extension("png");
    let _ = std::fs::remove_file(&png);
    headless(&page, &[format!("--screenshot={}", png.display())]);
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "an empty screenshot"
    );
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn hovering_a_poll_shows_task_location_duration_and_delay() {
    let (page, html) = write_page("hover");
    // Move the mouse over the middle of the neighbour's 200 ms poll on lane 1
    // (+0.35 s to +0.55 s of a 1 s file), as a person would.
    let probe = r#"<script>
setTimeout(() => {
  const c = document.getElementById("canvas"), r = c.getBoundingClientRect();
  const lane = document.querySelector('.label.lane[data-lane="1"]');
  const y = r.top + parseFloat(lane.style.top) + 10;
  const x = r.left + r.width * 0.45;
  c.dispatchEvent(new MouseEvent("mousemove", {clientX: x, clientY: y, bubbles: true}));
}, 10);
</script>
</body>"#;
    std::fs::write(&page, html.replace("</body>", probe)).unwrap();
    let (dom, log) = headless(&page, &["--dump-dom".to_string()]);
    let at = dom.find(r#"<div id="tip""#).expect("the tooltip element");
    let tip: String = dom[at..].chars().take(1500).collect();
    assert!(
        !tip.starts_with(r#"<div id="tip" hidden"#),
        "no tooltip shown:\n{tip}\n{log}"
    );
    for want in [
        "task 5",
        "src/cache.rs:77:13",
        "200.0 ms",
        "long poll",
        "scheduling delay",
        "15.0 µs",
    ] {
        assert!(tip.contains(want), "{want:?} not in the tooltip:\n{tip}");
    }
}
