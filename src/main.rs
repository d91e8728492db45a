//! The `huddle` binary: command-line interface, configuration loading and wiring of the
//! services. Protocol logic lives in the workspace crates (`signal/`, `turn/`, `sfu/`, ...).

mod admin;
mod bench;
mod cli;
mod config;
mod logging;
mod serve;
mod turn;
mod web;

use std::process::ExitCode;

use clap::Parser;
use huddle_signal::auth::{TokenIssuer, TokenRequest};
use huddle_signal::protocol::Permissions;
use serde_json::json;

use cli::{BenchScenario, Cli, Command, ConfigArgs, Grant};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("huddle: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(
    args: &ConfigArgs,
    overrides: serde_json::Value,
    purpose: config::Purpose,
) -> anyhow::Result<config::Config> {
    config::load(args.config.as_deref(), overrides, args.dev, purpose)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let mut overrides = serde_json::Map::new();
            let mut set = |section: &str, key: &str, value: serde_json::Value| {
                overrides
                    .entry(section.to_owned())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("sections are objects")
                    .insert(key.to_owned(), value);
            };
            if let Some(v) = args.listen {
                set("http", "listen", json!(v.to_string()));
            }
            if let Some(v) = &args.data_dir {
                set("store", "data_dir", json!(v));
            }
            if let Some(v) = &args.store_url {
                set("store", "url", json!(v));
            }
            if let Some(v) = args.log_format {
                set("log", "format", json!(v));
            }
            if let Some(v) = &args.log_level {
                set("log", "level", json!(v));
            }
            let cfg = load(
                &args.config,
                serde_json::Value::Object(overrides),
                config::Purpose::Serve,
            )?;
            logging::init(cfg.log.format, &cfg.log.level);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve::run(cfg, args.config.dev))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig(args) => {
            let cfg = load(&args, json!({}), config::Purpose::Serve)?;
            print!("{}", config::render(&cfg)?);
            eprintln!("huddle: configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(args) => {
            let cfg = load(&args.config, json!({}), config::Purpose::Token)?;
            let secret = cfg
                .auth
                .token_secret
                .as_ref()
                .map(|s| s.expose().as_bytes())
                .unwrap_or_default();
            let issuer = TokenIssuer::new(secret, cfg.auth.token_ttl, cfg.auth.max_token_ttl);
            let grants = Permissions {
                publish: args.grants.contains(&Grant::Publish),
                subscribe: args.grants.contains(&Grant::Subscribe),
                chat: args.grants.contains(&Grant::Chat),
                admin: args.grants.contains(&Grant::Admin),
            };
            let (token, _) = issuer.mint(&TokenRequest {
                identity: args.identity,
                name: args.name,
                room: args.room,
                grants,
                ttl: args.ttl,
            })?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Turn(args) => {
            let mut overrides = turn::overrides(&args);
            if let Some(f) = args.log_format {
                overrides["log"] = json!({ "format": f });
            }
            let cfg = load(&args.config, overrides, config::Purpose::Turn)?;
            logging::init(cfg.log.format, &cfg.log.level);
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if cfg.turn.threads > 0 {
                runtime.worker_threads(cfg.turn.threads);
            }
            runtime
                .enable_all()
                .build()?
                .block_on(turn::run_standalone(cfg.turn))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(args) => {
            let cfg = load(&args.config, json!({}), config::Purpose::Admin)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(admin::run(&args, &cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => match args.scenario {
            BenchScenario::SignalLoad(a) => {
                let runtime = tokio::runtime::Runtime::new()?;
                runtime.block_on(bench::signal_load(a))?;
                Ok(ExitCode::SUCCESS)
            }
            BenchScenario::ChatLoad(a) => {
                let runtime = tokio::runtime::Runtime::new()?;
                runtime.block_on(bench::chat_load(a))?;
                Ok(ExitCode::SUCCESS)
            }
            BenchScenario::SfuLoad(a) => {
                let runtime = tokio::runtime::Runtime::new()?;
                runtime.block_on(bench::sfu_load(a))?;
                Ok(ExitCode::SUCCESS)
            }
            BenchScenario::Call(a) => {
                let runtime = tokio::runtime::Runtime::new()?;
                runtime.block_on(bench::call(a))?;
                Ok(ExitCode::SUCCESS)
            }
            BenchScenario::Sweep(a) => {
                let runtime = tokio::runtime::Runtime::new()?;
                runtime.block_on(bench::sweep(a))?;
                Ok(ExitCode::SUCCESS)
            }
            BenchScenario::TurnLoad(a) => {
                bench::turn_load(a)?;
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}
