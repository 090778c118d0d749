//! `exechub-bench`: drives a running hub over real sockets and measures what
//! its work costs, in CPU-seconds per unit of work read from `/proc` (the hub
//! and the bench share the machine, so wall-clock rates say little).
//!
//! One subcommand per mode:
//! - [`fanout`]: publishers → subscribers; CPU per delivery and per publish,
//!   publish-to-delivery latency, and a check that nothing was lost,
//!   duplicated or reordered.
//! - [`publish`]: HTTP (or WebSocket) publishes over kept connections; CPU per publish.
//! - [`idle`]: thousands of subscribed connections that say nothing; the hub's
//!   memory and CPU per idle connection, and whether it frees them on close.
//! - [`floor`]: the machine's floor — CPU per `write` of one small frame to
//!   one socket — to compare the hub's cost per delivery with.
//!
//! Shared pieces: [`target`] (the hub's address, source addresses, file
//! limits), [`ws`] and [`http`] (clients), [`health`] (`GET /health`),
//! [`proc`] and [`cost`] (CPU and memory from `/proc`, per unit of work),
//! [`latency`] (HdrHistogram quantiles).

mod cost;
mod fanout;
mod floor;
mod health;
mod http;
mod idle;
mod latency;
mod proc;
mod publish;
mod target;
mod ws;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tokio::runtime::{Builder, Runtime};

/// Command line: one subcommand per mode.
#[derive(Debug, Parser)]
#[command(name = "exechub-bench", about)]
struct Cli {
    /// Worker threads of the bench's runtime. One leaves the other core to
    /// the hub it measures; more only if the bench itself is the bottleneck.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// The mode to run.
    #[command(subcommand)]
    command: Command,
}

/// The benchmark modes.
#[derive(Debug, Subcommand)]
enum Command {
    /// Publishers → subscribers: CPU per delivery and per publish, latency, losses.
    Fanout(fanout::FanoutArgs),
    /// HTTP (or WebSocket) publishes over kept connections: CPU per publish.
    Publish(publish::PublishArgs),
    /// Many idle subscribed connections: hub memory and CPU per connection.
    Idle(idle::IdleArgs),
    /// The machine's floor: CPU per small write to one socket.
    Floor(floor::FloorArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Fanout(args) => runtime(cli.threads)?.block_on(fanout::run(args)),
        Command::Publish(args) => runtime(cli.threads)?.block_on(publish::run(args)),
        Command::Idle(args) => runtime(cli.threads)?.block_on(idle::run(args)),
        // Plain threads: the writer's CPU clock must be its own.
        Command::Floor(args) => floor::run(&args),
    }
}

/// A runtime with `threads` workers (a current-thread one for 1).
fn runtime(threads: usize) -> Result<Runtime> {
    let mut builder = if threads <= 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    Ok(builder.enable_all().build()?)
}
