//! The floor under every round trip `apm-load rtt` measures: the same
//! loopback hops with no server and no async runtime.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::load::tally;

/// What four loopback hops cost with no server and no runtime: a thread
/// sends `payload` bytes to an echoing thread over TCP and reads them
/// back, twice per round trip (as a round trip through a server is two
/// messages in and two out), blocking reads, Nagle off. At most 20,000
/// round trips or 2 s. The floor under any round trip measured here.
pub fn loopback(payload: usize) -> std::io::Result<Histogram<u64>> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut peer, _) = listener.accept()?;
        peer.set_nodelay(true)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = peer.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            peer.write_all(&buf[..n])?;
        }
    });
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let message = vec![7u8; payload.max(1)];
    let mut back = vec![0u8; message.len()];
    let mut hist = tally::histogram();
    let started = Instant::now();
    for _ in 0..20_000 {
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
        let t = Instant::now();
        for _ in 0..2 {
            conn.write_all(&message)?;
            conn.read_exact(&mut back)?;
        }
        let _ = hist.record((t.elapsed().as_micros() as u64).max(1));
    }
    drop(conn);
    echo.join()
        .map_err(|_| std::io::Error::other("echo thread panicked"))??;
    Ok(hist)
}
