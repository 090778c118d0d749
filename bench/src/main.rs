//! `exechub-bench`: drives a running hub over real sockets and measures it.
//!
//! Two modes, one subcommand each:
//! - [`fanout`]: publishers → subscribers over WebSocket; publish throughput
//!   and publish-to-delivery latency.
//! - [`idle`]: thousands of subscribed connections that say nothing; the hub's
//!   memory and CPU per idle connection, and whether it frees them on close.
//!
//! Shared pieces: [`ws`] (WebSocket helpers both modes use) and [`proc`]
//! (reading another process's memory and CPU from `/proc`).

mod fanout;
mod idle;
mod proc;
mod ws;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tokio::runtime::Builder;

/// Command line: one subcommand per mode.
#[derive(Debug, Parser)]
#[command(name = "exechub-bench", about)]
struct Cli {
    /// The mode to run.
    #[command(subcommand)]
    command: Command,
}

/// The benchmark modes.
#[derive(Debug, Subcommand)]
enum Command {
    /// Publishers → subscribers over WebSocket: throughput and latency.
    Fanout(fanout::FanoutArgs),
    /// Many idle subscribed connections: hub memory and CPU per connection.
    Idle(idle::IdleArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        // Fan-out saturates the hub from many tasks: all cores, as before.
        Command::Fanout(args) => Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(fanout::run(args)),
        // Idle mostly waits; one thread leaves the cores to the hub it measures.
        Command::Idle(args) => Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(idle::run(args)),
    }
}
