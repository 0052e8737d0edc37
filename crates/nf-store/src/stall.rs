//! A reader that gives up when its source goes quiet.
//!
//! ureq bounds a whole call or a whole body in time, not the gap between two reads, so a
//! server that stops sending mid-file (a stalled mirror, a dead proxy) would hang `models
//! pull` forever, and a total limit would cut off slow but healthy downloads of large
//! models. [`StallGuard`] reads its source on a thread of its own and hands the chunks
//! over; when none comes for the stall timeout, the read fails with `TimedOut`. The
//! reading thread stays blocked until its socket closes; the command ends with the error
//! right after, which ends the thread too.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::Duration;

/// Reads `source` with at most `stall` between two chunks.
pub struct StallGuard {
    chunks: Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    stall: Duration,
    ended: bool,
}

impl StallGuard {
    pub fn new<R: Read + Send + 'static>(mut source: R, stall: Duration) -> io::Result<StallGuard> {
        // A few chunks in flight: the reader runs ahead of the disk a little, no more.
        let (tx, chunks) = sync_channel(4);
        std::thread::Builder::new()
            .name("download".into())
            .spawn(move || {
                loop {
                    let mut buf = vec![0u8; 1 << 16];
                    let r = match source.read(&mut buf) {
                        Ok(n) => {
                            buf.truncate(n);
                            Ok(buf)
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e),
                    };
                    let last = !matches!(&r, Ok(b) if !b.is_empty());
                    if tx.send(r).is_err() || last {
                        break;
                    }
                }
            })?;
        Ok(StallGuard {
            chunks,
            chunk: Vec::new(),
            at: 0,
            stall,
            ended: false,
        })
    }
}

impl Read for StallGuard {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.chunks.recv_timeout(self.stall) {
                Ok(Ok(chunk)) if chunk.is_empty() => {
                    self.ended = true;
                    return Ok(0);
                }
                Ok(Ok(chunk)) => (self.chunk, self.at) = (chunk, 0),
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no data for {} s", self.stall.as_secs_f64()),
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.ended = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends its bytes, then blocks forever (a stalled server).
    struct Stalls(io::Cursor<Vec<u8>>);

    impl Read for Stalls {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.0.read(out)? {
                0 => loop {
                    std::thread::park();
                },
                n => Ok(n),
            }
        }
    }

    #[test]
    fn passes_data_through_and_ends_at_the_end() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut g = StallGuard::new(io::Cursor::new(data.clone()), Duration::from_secs(5)).unwrap();
        let mut got = Vec::new();
        g.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn a_silent_source_times_out_after_its_data() {
        let mut g = StallGuard::new(
            Stalls(io::Cursor::new(vec![7; 1000])),
            Duration::from_millis(200),
        )
        .unwrap();
        let mut got = vec![0u8; 1000];
        g.read_exact(&mut got).unwrap();
        let e = g.read(&mut [0u8; 10]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
