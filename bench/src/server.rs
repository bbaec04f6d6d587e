//! The server process: every selected contender on its own loopback port, on one thread.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::Ipv4Addr;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

use crate::contenders::{self, Contender};
use crate::report;

/// Arguments of `satchel-bench server`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    /// Contenders to host, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub(crate) contenders: Vec<String>,
}

/// The line the server prints once every contender listens.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ready {
    /// Each contender's port on 127.0.0.1.
    pub(crate) ports: BTreeMap<String, u16>,
    /// The CPUs this process may run on, as the kernel lists them (`0`, `0-1`, …).
    pub(crate) cpus: Option<String>,
}

/// Hosts the contenders until standard input closes.
///
/// The runtime is tokio's `current_thread`: the process is pinned to one CPU, where more
/// worker threads would only take turns.
pub(crate) fn serve(args: &ServerArgs) -> anyhow::Result<()> {
    let selected: Vec<&Contender> = if args.contenders.is_empty() {
        contenders::all().collect()
    } else {
        args.contenders
            .iter()
            .map(|name| {
                contenders::find(name).with_context(|| format!("no contender named {name:?}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let mut ports = BTreeMap::new();
        for contender in selected {
            let serve = contender
                .app()
                .await
                .with_context(|| format!("cannot build contender {}", contender.name))?;
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .context("cannot bind a loopback port")?;
            let port = listener.local_addr()?.port();
            let name = contender.name;
            tokio::spawn(async move {
                if let Err(error) = serve(listener).await {
                    eprintln!("satchel-bench server: {name} stopped: {error}");
                }
            });
            ports.insert(name.to_owned(), port);
        }
        let ready = Ready {
            ports,
            cpus: report::allowed_cpus(),
        };
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, &ready)?;
        writeln!(stdout)?;
        stdout.flush()?;
        drop(stdout);

        // Serve until whoever started us closes our standard input (or exits).
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while stdin
            .read(&mut buf)
            .await
            .context("cannot read standard input")?
            > 0
        {}
        Ok(())
    })
}
