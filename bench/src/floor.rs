//! `exechub-bench floor`: the machine's floor for one delivery — one small
//! `write` to one TCP socket — to compare the hub's CPU per delivery with.
//!
//! `--sockets` loopback connection pairs (`TCP_NODELAY`); one thread writes
//! `--frame`-byte frames round-robin over them with blocking writes, another
//! drains the receiving ends (a single-threaded tokio runtime, one task per
//! socket). Only the writer thread's CPU time counts (from
//! `/proc/thread-self/stat`), so the reader's cost is not charged to a write.
//!
//! By default the writer writes as fast as it can, so every socket always
//! has data in flight. `--rate` and `--burst` pace it like a fan-out
//! instead — bursts of `--burst` writes (one event to its subscribers),
//! `--rate` writes per second — so each write finds its socket idle, as a
//! hub's deliveries do; that costs the kernel more per write (timers armed
//! and cleared, a reader woken), and is the floor for that traffic.

use std::io::{IoSlice, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::cost::{per_cpu, thousands};
use crate::latency::round3;
use crate::proc::thread_cpu;
use crate::target::raise_fd_limit;

/// Settings of `exechub-bench floor`.
#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Loopback TCP connection pairs.
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Bytes per write.
    #[arg(long, default_value_t = 160)]
    frame: usize,
    /// Writes in total, round-robin over the sockets.
    #[arg(long, default_value_t = 2_000_000)]
    writes: u64,
    /// Writes per second (0: as fast as the writer can).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With `--rate`: writes per burst, to consecutive sockets.
    #[arg(long, default_value_t = 100)]
    burst: u64,
    /// Write each frame as a 2-byte header and the rest with one `writev`
    /// (as a WebSocket frame's header and its shared payload), instead of
    /// one `write`.
    #[arg(long)]
    vectored: bool,
}

/// What the writer thread measured.
#[derive(Debug, Clone, Copy)]
struct Written {
    /// Its CPU time (user + system).
    cpu: Duration,
    /// Its wall time.
    wall: Duration,
}

/// Runs the floor benchmark and prints its report.
///
/// # Errors
/// The sockets could not be set up, a write or read failed, or the reader
/// did not receive every byte written.
pub fn run(args: &FloorArgs) -> Result<()> {
    let sockets = args.sockets.max(1);
    raise_fd_limit(2 * sockets + 1)?;
    let (writers, readers) = pairs(sockets)?;
    let expected = expected_bytes(args, sockets);
    let (written, read) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| drain(readers, &expected));
        let writer = scope.spawn(|| write_all(writers, args));
        let written = writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"));
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"));
        (written, read)
    });
    let (written, read) = (written??, read??);
    let total: u64 = expected.iter().sum();
    if read != total {
        bail!("the reader received {read} of {total} bytes");
    }
    report(args, sockets, written);
    Ok(())
}

/// `n` connected loopback pairs: (the writing ends, the reading ends).
fn pairs(n: usize) -> Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let addr = listener.local_addr()?;
    let (mut writers, mut readers) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let writer = TcpStream::connect(addr).context("connecting a pair")?;
        let (reader, _) = listener.accept()?;
        writer.set_nodelay(true)?;
        reader.set_nodelay(true)?;
        writers.push(writer);
        readers.push(reader);
    }
    Ok((writers, readers))
}

/// Bytes each socket receives: the writes are dealt round-robin.
fn expected_bytes(args: &FloorArgs, sockets: usize) -> Vec<u64> {
    let n = sockets as u64;
    (0..n)
        .map(|i| (args.writes / n + u64::from(i < args.writes % n)) * args.frame as u64)
        .collect()
}

/// The writer thread: every write, timed by this thread's own CPU clock.
fn write_all(mut sockets: Vec<TcpStream>, args: &FloorArgs) -> Result<Written> {
    let frame = vec![b'x'; args.frame];
    let n = sockets.len();
    let burst = args.burst.max(1);
    // The pause between bursts when paced.
    let interval =
        (args.rate > 0).then(|| Duration::from_secs_f64(burst as f64 / args.rate as f64));
    let (cpu_before, started) = (thread_cpu()?, Instant::now());
    for k in 0..args.writes {
        if let Some(interval) = interval
            && k % burst == 0
        {
            let due = started + interval.mul_f64((k / burst) as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let socket = &mut sockets[(k % n as u64) as usize];
        match args.vectored {
            true => {
                let (header, payload) = frame.split_at(2.min(frame.len()));
                let parts = [IoSlice::new(header), IoSlice::new(payload)];
                // A blocking socket takes a small frame whole.
                let written = socket.write_vectored(&parts)?;
                if written < frame.len() {
                    socket.write_all(&frame[written..])?;
                }
            }
            false => socket.write_all(&frame)?,
        }
    }
    let wall = started.elapsed();
    Ok(Written {
        cpu: thread_cpu()?.saturating_sub(cpu_before),
        wall,
    })
}

/// The reader thread: reads every socket until it has its expected bytes;
/// returns the bytes read in total.
fn drain(sockets: Vec<TcpStream>, expected: &[u64]) -> Result<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let mut tasks = Vec::with_capacity(sockets.len());
        for (socket, &want) in sockets.into_iter().zip(expected) {
            socket.set_nonblocking(true)?;
            let mut socket = tokio::net::TcpStream::from_std(socket)?;
            tasks.push(tokio::spawn(async move {
                let (mut buf, mut got) = (vec![0u8; 16 * 1024], 0u64);
                while got < want {
                    match socket.read(&mut buf).await? {
                        0 => break,
                        n => got += n as u64,
                    }
                }
                std::io::Result::Ok(got)
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await??;
        }
        Ok(total)
    })
}

#[allow(clippy::print_stdout)]
fn report(args: &FloorArgs, sockets: usize, written: Written) {
    let (per_s, us) = per_cpu(args.writes, written.cpu);
    let wall = written.wall.as_secs_f64();
    let paced = match args.rate {
        0 => String::from("as fast as possible"),
        rate => format!("paced: {rate} writes/s in bursts of {}", args.burst.max(1)),
    };
    println!(
        "floor: {} writes of {} B round-robin over {sockets} loopback TCP sockets (TCP_NODELAY), \
         {paced}, in {wall:.2} s ({}/s wall)",
        args.writes,
        args.frame,
        thousands(args.writes as f64 / wall)
    );
    println!(
        "writer thread CPU {:.3} s: {us:.2} µs per write, {} writes per CPU-second",
        written.cpu.as_secs_f64(),
        thousands(per_s)
    );
    println!(
        "{}",
        json!({
            "mode": "floor",
            "sockets": sockets,
            "frame": args.frame,
            "writes": args.writes,
            "rate": args.rate,
            "burst": args.burst,
            "wall_s": round3(wall),
            "writer_cpu_s": round3(written.cpu.as_secs_f64()),
            "us_per_write": round3(us),
            "writes_per_cpu_s": per_s.round(),
        })
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_dealt_round_robin() {
        let args = FloorArgs {
            sockets: 3,
            frame: 10,
            writes: 7,
            rate: 0,
            burst: 1,
            vectored: false,
        };
        assert_eq!(expected_bytes(&args, 3), vec![30, 20, 20]);
    }

    #[test]
    fn a_small_run_delivers_every_byte() {
        let args = FloorArgs {
            sockets: 4,
            frame: 160,
            writes: 1000,
            rate: 0,
            burst: 1,
            vectored: false,
        };
        run(&args).unwrap();
        let paced = FloorArgs {
            rate: 20_000,
            burst: 4,
            ..args.clone()
        };
        run(&paced).unwrap();
        let vectored = FloorArgs {
            vectored: true,
            ..args
        };
        run(&vectored).unwrap();
    }
}
