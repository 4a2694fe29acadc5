//! A TCP proxy between the backend and the server that can lose one reply: once armed, it
//! forwards the server's answer to the first statement whose command tag starts with a given
//! prefix up to, but not including, that answer, and then closes the connection — right
//! after the server committed the statement (its `ReadyForQuery` follows the commit). The
//! client sees a lost connection after a commit that landed: the one case a retry cannot
//! tell apart from a failure.
//!
//! It reads the server's side of the wire protocol message by message (a type byte and a
//! length); the client's side is copied as is. TLS is never requested (the tests connect
//! with `NoTls`), so every server message is typed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy has seen, shared with its connection tasks.
#[derive(Debug, Default)]
struct State {
    /// Lose the reply to the next statement whose tag starts with this.
    armed: Option<String>,
    /// Every command tag the server sent, in order.
    tags: Vec<String>,
    /// Replies lost so far.
    dropped: usize,
}

/// A running proxy; stops accepting when dropped.
pub(crate) struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub(crate) async fn start(upstream: String) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, state).await;
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            state,
            accept,
        })
    }

    /// The `host:port` to connect to instead of the server.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Loses the reply to the next statement whose command tag starts with `tag_prefix`, and
    /// forgets the tags seen so far.
    pub(crate) fn arm(&self, tag_prefix: &str) {
        let mut state = self.lock();
        state.armed = Some(tag_prefix.to_string());
        state.tags.clear();
    }

    /// (command tags seen since [`Proxy::arm`], replies lost).
    pub(crate) fn seen(&self) -> (Vec<String>, usize) {
        let state = self.lock();
        (state.tags.clone(), state.dropped)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies one connection both ways until either side closes or a reply is to be lost.
async fn relay(client: TcpStream, server: TcpStream, state: Arc<Mutex<State>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    // Server → client, message by message. The messages of a reply being lost (from its
    // CommandComplete to its ReadyForQuery) are never forwarded.
    let mut losing = false;
    loop {
        let mut header = [0u8; 5];
        if server_read.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        if server_read.read_exact(&mut body).await.is_err() {
            break;
        }
        match header[0] {
            b'C' => {
                let tag = String::from_utf8_lossy(body.split(|b| *b == 0).next().unwrap_or(&[]))
                    .into_owned();
                let mut st = state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if st
                    .armed
                    .as_ref()
                    .is_some_and(|p| tag.starts_with(p.as_str()))
                {
                    st.armed = None;
                    losing = true;
                }
                st.tags.push(tag);
            }
            b'Z' if losing => {
                // The server committed and is ready for the next statement: the reply is
                // complete on the server's side and lost on the client's.
                state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .dropped += 1;
                break;
            }
            _ => {}
        }
        if losing {
            continue;
        }
        if client_write.write_all(&header).await.is_err()
            || client_write.write_all(&body).await.is_err()
        {
            break;
        }
    }
    upstream.abort();
}
