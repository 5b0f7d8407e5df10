//! The one HTTP server every subcommand uses (the webhook's over TLS): HTTP/1.1 with keep-alive and hard limits on what a
//! client may send, because the verifier faces every request a gateway forwards.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use futures::FutureExt;
use futures::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::error::{Error, Result};
use crate::tls::CertificateFiles;

/// Largest request head (request line and headers) accepted; a larger one gets `431`.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most headers in one request; more get `431`.
pub const MAX_HEADERS: usize = 64;
/// Hyper's own limit, which refuses a request of more headers than this with `431` before any
/// service sees it (see [`too_many_headers`]).
const HYPER_MAX_HEADERS: usize = 100;
/// Largest request body accepted; a larger one gets `413`.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// A client that has not sent its whole request head by then is disconnected (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish their requests after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr`; the address actually bound is logged with `what` so tests and people can find
/// it when the port was 0.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    let http_error = |source| Error::Http { addr: addr.to_string(), source };
    let listener = TcpListener::bind(addr).await.map_err(http_error)?;
    let bound = listener.local_addr().map_err(http_error)?;
    tracing::info!(addr = %bound, "serving {what}");
    Ok(listener)
}

/// `431` for a request of more than [`MAX_HEADERS`] header lines, closing the connection as
/// hyper does for its own limits. Counted here rather than by hyper's `max_headers`, which
/// makes hyper fill a header array of that length for every request, a tenth of the
/// verifier's work per request; above [`HYPER_MAX_HEADERS`] hyper refuses by itself.
fn too_many_headers(headers: &HeaderMap) -> Option<Response<Body>> {
    const _: () = assert!(MAX_HEADERS <= HYPER_MAX_HEADERS);
    if headers.len() <= MAX_HEADERS {
        return None;
    }
    let mut refused = Response::new(Body::empty());
    *refused.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    refused.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(refused)
}

/// What answers the requests of a connection, given the peer's address.
pub trait Respond: Clone + Send + 'static {
    fn respond(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send + use<Self>;
}

/// A router: each request carries the peer address as [`ConnectInfo`].
impl Respond for Router {
    fn respond(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send + use<> {
        request.extensions_mut().insert(ConnectInfo(peer));
        self.clone().oneshot(request).map(|answered| answered.unwrap_or_else(|never| match never {}))
    }
}

/// Serves `responder` on `listener` until `shutdown` turns true, then lets open requests finish.
pub async fn serve(listener: TcpListener, responder: impl Respond, shutdown: watch::Receiver<bool>) -> Result<()> {
    serve_connections(listener, responder, shutdown, None).await
}

/// [`serve`] over TLS, with the certificate `tls` holds at the time each connection arrives.
pub async fn serve_tls(
    listener: TcpListener,
    responder: impl Respond,
    shutdown: watch::Receiver<bool>,
    tls: Arc<CertificateFiles>,
) -> Result<()> {
    serve_connections(listener, responder, shutdown, Some(tls)).await
}

async fn serve_connections(
    listener: TcpListener,
    responder: impl Respond,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<Arc<CertificateFiles>>,
) -> Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: pause rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        // Small responses go out at once rather than waiting for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let responder = responder.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let answered = match too_many_headers(request.headers()) {
                Some(refused) => Either::Left(std::future::ready(refused)),
                None => Either::Right(responder.respond(request, peer)),
            };
            answered.map(Ok::<_, Infallible>)
        });
        let (http, watcher) = (http.clone(), graceful.watcher());
        let acceptor = tls.as_ref().map(|tls| tokio_rustls::TlsAcceptor::from(tls.current()));
        tokio::spawn(async move {
            let served = match acceptor {
                None => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                // The handshake counts against the same deadline as a request head.
                Some(acceptor) => match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(error) = served {
                // Hyper's errors name what went wrong, never a header's value.
                tracing::debug!(%error, %peer, "connection closed with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("open connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_max_headers_get_431_and_a_closed_connection() {
        let mut headers = HeaderMap::new();
        for i in 0..MAX_HEADERS {
            headers.append(header::ACCEPT, HeaderValue::from(i));
        }
        assert!(too_many_headers(&headers).is_none(), "{MAX_HEADERS} lines of one name pass");
        headers.append(header::ACCEPT, HeaderValue::from_static("one more"));
        let refused = too_many_headers(&headers).expect("refused");
        assert_eq!(refused.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(refused.headers()[header::CONNECTION], "close");
    }
}
