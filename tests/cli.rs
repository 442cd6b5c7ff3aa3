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
