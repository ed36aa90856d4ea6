//! A storage outage at a known moment, without stopping the emulator: a TCP relay in front of
//! the shared Azurite that the test can cut (open connections are dropped mid-stream and new
//! ones are closed as soon as they are accepted, as a client sees an unreachable service)
//! and restore. Cutting and restoring take microseconds, where stopping Azurite and starting
//! it again on disk cost about 5 s of Node.js start-up, plus the SIGTERM save.
//!
//! TLS passes through untouched: the relay listens on 127.0.0.1 like Azurite, so the
//! emulator's certificate still names the address the client dials.

use crate::azurite::{Azurite, ACCOUNT};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay to one Azurite; storage is reachable through [`StorageOutage::account_url`]
/// until [`StorageOutage::cut`], and again after [`StorageOutage::restore`].
pub struct StorageOutage {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    /// Bumped at each cut: every relayed connection watches it and drops both ends.
    cuts: watch::Sender<u64>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl StorageOutage {
    /// A relay on a port of its own to `azurite`, which keeps running for everyone else.
    pub async fn in_front_of(azurite: &Azurite) -> StorageOutage {
        Self::to_port(azurite.port()).await
    }

    /// A relay to whatever listens on 127.0.0.1:`port`.
    pub async fn to_port(port: u16) -> StorageOutage {
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let down = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let accept_loop = tokio::spawn({
            let down = down.clone();
            let cuts = cuts.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    // Watch for cuts before looking at the switch, so a cut between the two
                    // is seen by one or the other.
                    let mut cut = cuts.subscribe();
                    if down.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            // Both ends dropped: the client's request or response breaks off.
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        StorageOutage {
            addr,
            down,
            cuts,
            accept_loop,
        }
    }

    /// The account URL through the relay (for `REMINDERS_BLOB_ACCOUNT_URL`).
    pub fn account_url(&self) -> String {
        format!("https://{}/{ACCOUNT}", self.addr)
    }

    /// Storage becomes unreachable now: connections in flight break, new ones are closed.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Storage is reachable again, with everything it held before the cut.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for StorageOutage {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server standing in for the emulator (the relay only needs a port).
    async fn echo() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    async fn round_trip(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        conn.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn a_cut_breaks_open_connections_refuses_new_ones_and_a_restore_relays_again() {
        let relay = StorageOutage::to_port(echo().await).await;
        let mut open = TcpStream::connect(relay.addr).await.unwrap();
        assert_eq!(round_trip(&mut open).await.unwrap(), b"ping");

        relay.cut();
        assert!(
            round_trip(&mut open).await.is_err(),
            "an open connection survived the cut"
        );
        let mut new = TcpStream::connect(relay.addr).await.unwrap();
        assert!(
            round_trip(&mut new).await.is_err(),
            "a new connection was relayed during the cut"
        );

        relay.restore();
        let mut again = TcpStream::connect(relay.addr).await.unwrap();
        assert_eq!(round_trip(&mut again).await.unwrap(), b"ping");
    }
}
