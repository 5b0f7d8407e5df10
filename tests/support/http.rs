//! HTTP/1.1 spoken by hand to the processes the tests start, byte for byte as a test writes it,
//! and reading the Prometheus text they serve.

use super::wait::DEADLINE;

/// The value of the series `name{labels}` in a Prometheus text exposition.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// An HTTP/1.1 answer, as read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status_line: String,
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` (the bytes of one HTTP/1.1 request, sent as they are apart from a
/// `Connection: close` added after the request line) to `addr`, and reads the whole answer.
pub async fn http(addr: &str, request: &[u8]) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let line_end = request.windows(2).position(|w| w == b"\r\n").expect("a request line") + 2;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut bytes = request[..line_end].to_vec();
    bytes.extend_from_slice(b"Connection: close\r\n");
    bytes.extend_from_slice(&request[line_end..]);
    // The server may answer (431, 413) and close before reading everything: a failed write is
    // fine as long as an answer comes.
    let _ = stream.write_all(&bytes).await;
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .expect("an answer in time")
        .or_else(|e| if response.is_empty() { Err(e) } else { Ok(0) })
        .expect("read the answer");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default().to_string();
    let status = status_line.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    HttpResponse { status_line, status, headers, body: body.to_string() }
}
