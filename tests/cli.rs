//! The binary as a newcomer meets it: `schema`, `token`, and the files that document it.

use std::process::Command;

fn switchboard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    // Run from a directory with no `.env`, so that only what the test sets counts.
    command.current_dir(std::env::temp_dir()).env_remove("JWT_SECRET");
    command
}

#[test]
fn schema_command_prints_the_committed_sdl() {
    let output = switchboard().arg("schema").output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/schema.graphql")).unwrap();
    assert!(printed == committed, "schema/schema.graphql is stale: run `cargo run -- schema > schema/schema.graphql`");
    for needle in [
        "orderUpdated(orderId: ID!, after: String): OrderUpdatePayload!",
        "inventoryChanged(productId: ID, after: String): InventoryChangePayload!",
        "notificationCreated(after: String): NotificationPayload!",
        "orderEvents(status: OrderStatus, after: String): OrderEvent!",
        "cursor: String!",
        "sequence: Int!",
        "scalar DateTime",
        "scalar Decimal",
    ] {
        assert!(printed.contains(needle), "missing {needle}");
    }
}

#[test]
fn token_command_signs_with_the_configured_key() {
    let output = switchboard()
        .args(["token", "--sub", "u1", "--role", "staff", "--name", "Ann", "--ttl", "60"])
        .env("JWT_SECRET", "cli-secret")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    let user = switchboard::auth::Keys::new(b"cli-secret", None, None).verify(token.trim()).unwrap();
    assert_eq!(
        (user.id.as_str(), user.role, user.name.as_deref()),
        ("u1", switchboard::auth::Role::Staff, Some("Ann"))
    );
}

#[test]
fn token_command_without_a_secret_explains_itself() {
    let output = switchboard().args(["token", "--sub", "u1"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("JWT_SECRET"));
}

/// `.env.example` lists every variable the configuration reads.
#[test]
fn env_example_names_every_variable() {
    let config = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/config.rs")).unwrap();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
    let variables: Vec<&str> = config.split("env = \"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
    assert!(variables.len() > 15, "{variables:?}");
    for variable in variables {
        assert!(
            example.lines().any(|l| l.trim_start_matches("# ").starts_with(&format!("{variable}="))),
            "{variable} is missing from .env.example"
        );
    }
}

/// The repository's own files, as text, for the checks on its documentation below.
fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rows of the Markdown table under `## {section}` in `text` whose first column is headed
/// `column`: each row's cells, trimmed.
fn table_rows(text: &str, section: &str, column: &str) -> Vec<Vec<String>> {
    let heading = format!("## {section}\n");
    let start = text.find(&heading).unwrap_or_else(|| panic!("no section {section:?}"));
    let rest = &text[start + heading.len()..];
    let rest = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let header = format!("| {column} |");
    let table = rest.find(&header).unwrap_or_else(|| panic!("no table headed {column:?} in {section:?}"));
    rest[table..]
        .lines()
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and the `| --- |` line
        .map(|l| l.trim().trim_matches('|').split(" | ").map(|cell| cell.trim().to_owned()).collect())
        .collect()
}

/// `docs/operations.md` documents every variable the configuration reads, with the default the code
/// has, and nothing the code does not read.
#[test]
fn the_configuration_reference_lists_every_variable_with_its_default() {
    use clap::CommandFactory;
    let mut command = switchboard::config::Cli::command();
    command.build();
    let code: Vec<(String, Option<String>)> = command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let defaults: Vec<_> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
            Some((env, (!defaults.is_empty()).then(|| defaults.join(","))))
        })
        .collect();
    assert!(code.len() > 30, "{code:?}");

    let rows = table_rows(&read("docs/operations.md"), "Configuration", "variable");
    let documented =
        |variable: &str| rows.iter().find(|row| row[0] == format!("`{variable}`")).map(|row| row[1].clone());
    for (variable, default) in &code {
        let cell = documented(variable)
            .unwrap_or_else(|| panic!("{variable} is missing from the table in docs/operations.md"));
        match default {
            Some(default) => {
                assert_eq!(cell, format!("`{default}`"), "the default of {variable} in docs/operations.md")
            }
            None => assert!(cell.starts_with("unset"), "{variable} has no default, but docs/operations.md says {cell}"),
        }
    }
    // Read by the log filter rather than by clap.
    let also_read = ["`RUST_LOG`"];
    for row in &rows {
        assert!(
            also_read.contains(&row[0].as_str()) || code.iter().any(|(v, _)| row[0] == format!("`{v}`")),
            "docs/operations.md documents {}, which the configuration does not read",
            row[0]
        );
    }
}

/// Every metric the code records is in `docs/operations.md`'s table of metrics.
#[test]
fn the_metrics_reference_names_every_metric() {
    fn rust_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    let mut files = Vec::new();
    rust_files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut metrics = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("\"switchboard_") {
            let name: String = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            metrics.insert(name);
        }
    }
    assert!(metrics.len() > 10, "{metrics:?}");
    let rows = table_rows(&read("docs/operations.md"), "Health, readiness and metrics", "metric");
    let documented: Vec<&str> =
        rows.iter().map(|row| row[0].trim_matches('`').split('{').next().unwrap_or_default()).collect();
    for metric in &metrics {
        assert!(documented.contains(&metric.as_str()), "{metric} is missing from the metrics in docs/operations.md");
    }
}

/// The repository stands on its own: nothing in it sends a reader to a contract or a folder that
/// someone who clones it does not have.
#[test]
fn the_repository_points_nowhere_outside_itself() {
    // Spelled in pieces, so that this file does not match itself.
    let outside =
        [concat!("..", "/shared"), concat!("shared", "/peers"), concat!("SP", "EC.md"), concat!("shared ", "folder")];
    let spec = concat!("SP", "EC");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs: Vec<std::path::PathBuf> = [
        "docs",
        "src",
        "tests",
        "scripts",
        "bench",
        "examples",
        "migrations",
        "schema",
        ".ci",
        "clients",
        "assets/console",
    ]
    .map(|d| root.join(d))
    .into();
    files.extend(["README.md", "BENCHMARKS.md", ".env.example", "Cargo.toml"].map(|f| root.join(f)));
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "node_modules" && name != "target" {
                    dirs.push(path);
                }
            } else {
                files.push(path);
            }
        }
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for (n, line) in text.lines().enumerate() {
            let found = outside.iter().find(|needle| line.contains(*needle)).copied().or_else(|| {
                // The contract by its old name, as a word of its own.
                line.match_indices(spec)
                    .any(|(at, _)| {
                        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
                        !line[..at].ends_with(word) && !line[at + 4..].starts_with(word)
                    })
                    .then_some(spec)
            });
            if let Some(needle) = found {
                panic!("{}:{}: {needle:?} refers outside the repository: {line}", file.display(), n + 1);
            }
        }
    }
}

/// The anchor GitHub gives a Markdown heading: lowercase, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut found = Vec::new();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            // A repeated heading gets `-1`, `-2`… after its anchor.
            let base = anchor(line.trim_start_matches('#').trim());
            let repeats = seen.entry(base.clone()).or_default();
            found.push(if *repeats == 0 { base } else { format!("{base}-{repeats}") });
            *repeats += 1;
        }
    }
    found
}

/// Every relative link in the README, BENCHMARKS.md and `docs/` leads to a file of the repository, and to a
/// heading of it when it names one.
#[test]
fn links_in_the_docs_lead_somewhere() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    pages.extend(std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()));
    let mut checked = 0;
    for page in pages.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        let text = std::fs::read_to_string(page).unwrap();
        let mut fenced = false;
        for line in text.lines() {
            if line.starts_with("```") {
                fenced = !fenced;
            }
            if fenced {
                continue;
            }
            for (at, _) in line.match_indices("](") {
                let target = &line[at + 2..];
                let target = &target[..target.find(')').unwrap_or(target.len())];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
                let file = if path.is_empty() { page.clone() } else { page.parent().unwrap().join(path) };
                assert!(file.exists(), "{}: the link {target:?} leads to no file", page.display());
                if !fragment.is_empty() {
                    let headings = anchors(&std::fs::read_to_string(&file).unwrap());
                    assert!(
                        headings.iter().any(|a| a == fragment),
                        "{}: the link {target:?} names no heading of {}",
                        page.display(),
                        file.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} links found");
}
