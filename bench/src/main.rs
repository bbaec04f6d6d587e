//! Satchel's benchmark harness: HTTP throughput of session layers, each measured against bare
//! axum on the same machine in the same run.
//!
//! `satchel-bench run` is the only command a person needs. It starts two copies of this
//! binary, each pinned to its own CPU with `taskset`: a `server` that hosts every contender on
//! its own loopback port, and, once per contender per round, a `load` generator that drives one
//! contender over many keep-alive connections. See `docs/BENCHMARKS.md` for the method.

mod contenders;
mod crypto;
mod load;
mod report;
mod run;
mod server;

use clap::{Parser, Subcommand};

/// Satchel's benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "satchel-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole benchmark: starts the pinned server, drives every contender round by
    /// round, and prints a Markdown report.
    Run(run::RunArgs),
    /// Hosts contenders on loopback ports and prints the ports as one JSON line (started by
    /// `run`; serves until its standard input closes).
    Server(server::ServerArgs),
    /// Drives one contender and prints the counts as one JSON line (started by `run`).
    Load(load::LoadArgs),
    /// Times sealing a session into a cookie and opening it (satchel-cookie, signed and
    /// private) against a plain HMAC-SHA256 over the same bytes, and prints a Markdown table.
    Crypto(crypto::CryptoArgs),
    /// Lists the contenders.
    List {
        /// Print each contender's measured path and setup path (`NAME PATH[:SETUP]`), the form
        /// `load --target NAME=PORT:PATH[:SETUP]` takes, instead of its summary.
        #[arg(long)]
        targets: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run::run(&args),
        Command::Server(args) => server::serve(&args),
        Command::Load(args) => load::load(&args),
        Command::Crypto(args) => crypto::crypto(&args),
        Command::List { targets } => {
            for contender in contenders::all() {
                if targets {
                    let setup = contender
                        .setup_path
                        .map(|p| format!(":{p}"))
                        .unwrap_or_default();
                    println!("{} {}{setup}", contender.name, contender.path);
                } else {
                    println!("{:<22} {}", contender.name, contender.summary);
                }
            }
            Ok(())
        }
    }
}
