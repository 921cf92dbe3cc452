//! The connection cap: at most `max_connections` device connections are open at once.
//!
//! Each accepted connection holds a semaphore permit for as long as it is open. A
//! connection accepted while all permits are held is closed at once (counted in
//! `feeder_edge_connections_refused_total`): the client sees a reset and retries later,
//! and the edge holds no state for it. Waiting for a permit before `accept` (mini-redis'
//! way) would bound the count as well, but leave clients hanging in the kernel's backlog
//! with no signal and nothing counted.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection and its permit (released when the connection is dropped).
pub struct CappedConn {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// Accepted connections, at most `permits` open at once; accept errors pass through.
pub fn capped_incoming(
    listener: TcpListener,
    permits: Arc<Semaphore>,
) -> impl Stream<Item = io::Result<CappedConn>> + Send + 'static {
    futures::stream::unfold((listener, permits), |(listener, permits)| async move {
        loop {
            let io = match listener.accept().await {
                Ok((io, _)) => io,
                Err(e) => return Some((Err(e), (listener, permits))),
            };
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    if let Err(e) = io.set_nodelay(true) {
                        tracing::debug!(error = %e, "set_nodelay");
                    }
                    let conn = CappedConn {
                        io,
                        _permit: permit,
                    };
                    return Some((Ok(conn), (listener, permits)));
                }
                Err(_) => {
                    metrics::counter!("feeder_edge_connections_refused_total").increment(1);
                    drop(io);
                }
            }
        }
    })
}

impl Connected for CappedConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for CappedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
