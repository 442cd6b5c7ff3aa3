//! `switchboard [serve] | token | schema`: see `switchboard --help`.

use std::process::ExitCode;

use clap::Parser;
use switchboard::app::Application;
use switchboard::auth::{Keys, Role};
use switchboard::config::{Cli, Command, RoleArg};
use switchboard::{graphql, telemetry};
use tokio_util::sync::CancellationToken;

/// jemalloc with its background purging thread, rather than glibc's malloc: glibc kept all it had
/// grown to for 1,000 sockets × 100 subscriptions (1.15 GB) after every one of them had left,
/// while jemalloc handed it back to the OS within 10 s (1.20 GB → 66 MB), whether or not the server
/// is busy afterwards. mimalloc gave back little until the threads allocated again. jemalloc also
/// costs less per idle connection (6.05 KB against 6.35 KB). The figures are in BENCHMARKS.md.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // `.env` first, so that clap sees its values as environment (it never overrides the real one).
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Schema) => {
            print!("{}", graphql::sdl());
            ExitCode::SUCCESS
        }
        Some(Command::Token(args)) => {
            let Some(secret) = &cli.config.jwt_secret else {
                eprintln!("error: JWT_SECRET is not set, so a token signed now would match no server's key");
                return ExitCode::from(2);
            };
            let keys = Keys::new(secret.as_bytes(), cli.config.jwt_issuer.clone(), cli.config.jwt_audience.clone());
            let role = match args.role {
                RoleArg::Customer => Role::Customer,
                RoleArg::Staff => Role::Staff,
                RoleArg::Admin => Role::Admin,
            };
            println!("{}", keys.sign(&args.sub, role, args.name.as_deref(), args.ttl));
            ExitCode::SUCCESS
        }
        Some(Command::Serve) | None => serve(cli).await,
    }
}

async fn serve(cli: Cli) -> ExitCode {
    telemetry::init_tracing(cli.config.log_format);
    let (app, samples) = match Application::build(cli.config, cli.demo).await {
        Ok(built) => built,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(samples) = samples {
        for (role, sub, token) in samples.0 {
            tracing::info!("sample {} token (sub {sub}, valid 24 h): {token}", role.as_str());
        }
    }
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        }
    });
    match app.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
