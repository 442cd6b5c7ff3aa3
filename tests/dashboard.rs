//! The Grafana dashboard in `deploy/grafana/switchboard.json` queries only metrics that the
//! server exports: a renamed or removed metric fails here rather than as an empty panel.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// Every `switchboard_...` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchboard_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches('_');
        if name.starts_with("switchboard_") {
            names.insert(name.to_owned()); // not `switchboard_.*`, a pattern
        }
        rest = &tail[end.max(1)..];
    }
    names
}

/// The metric names the code exports: every `"switchboard_..."` string literal under `src/`.
fn exported() -> BTreeSet<String> {
    fn walk(dir: &Path, names: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                for literal in source.split('"').skip(1).step_by(2) {
                    if literal.starts_with("switchboard_")
                        && literal.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    {
                        names.insert(literal.to_owned());
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut names);
    names
}

/// Every query expression in the dashboard (panel targets and template variables), with where.
fn expressions(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            let here = map.get("title").and_then(Value::as_str).map_or_else(|| at.to_owned(), str::to_owned);
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", Value::String(expr)) => out.push((here.clone(), expr.clone())),
                    _ => expressions(v, &here, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, at, out)),
        _ => {}
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/switchboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    let exported = exported();
    assert!(exported.contains("switchboard_ws_connections"), "the scan finds the code's metrics: {exported:?}");
    let mut found = Vec::new();
    expressions(&dashboard["panels"], "panels", &mut found);
    expressions(&dashboard["templating"], "templating", &mut found);
    assert!(found.len() > 20, "the dashboard has its queries: {found:?}");
    let mut queried = BTreeSet::new();
    for (panel, expr) in &found {
        for name in metric_names(expr) {
            assert!(exported.contains(&name), "panel {panel:?} queries {name}, which the server does not export");
            queried.insert(name);
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
}

#[test]
fn panels_have_unique_ids_and_use_the_datasource_variable() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/switchboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().expect("an id")).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
    }
}
