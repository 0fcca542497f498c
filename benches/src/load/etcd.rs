//! etcd's HTTP gateway (`/v3/kv/put`, `/v3/kv/range`, `/v3/kv/deleterange`, JSON with
//! base64 keys and values) over keep-alive HTTP/1.1, so the comparison can load a
//! single etcd node with the same workload and the same loop as the RESP targets.
//! Requests are pipelined per connection like RESP; a response is answered as `+OK`
//! for 200 and as an error carrying the status line otherwise.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ringkv_client::reply::Reply;

/// Longest response head (status line and headers) accepted.
const HEAD_SIZE_BYTES_MAX: usize = 16 << 10;
/// Largest response body accepted.
const BODY_SIZE_BYTES_MAX: usize = 8 << 20;

/// What to ask etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Put { key: &'a [u8], value: &'a [u8] },
    Range { key: &'a [u8] },
    DeleteRange { key: &'a [u8] },
}

/// Appends the HTTP request for `request` to `out`.
pub fn write_request(out: &mut Vec<u8>, host: &str, request: Request<'_>) {
    let (path, body) = match request {
        Request::Put { key, value } => (
            "/v3/kv/put",
            format!(
                "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                STANDARD.encode(key),
                STANDARD.encode(value)
            ),
        ),
        Request::Range { key } => (
            "/v3/kv/range",
            format!("{{\"key\":\"{}\"}}", STANDARD.encode(key)),
        ),
        Request::DeleteRange { key } => (
            "/v3/kv/deleterange",
            format!("{{\"key\":\"{}\"}}", STANDARD.encode(key)),
        ),
    };
    out.extend_from_slice(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body.as_bytes());
}

/// The first response in `input` as a reply (`+OK` for 2xx, an error with the status
/// line otherwise) and its size; `Ok(None)` when it is not whole yet.
pub fn parse_response(input: &[u8]) -> Result<Option<(Reply, usize)>, &'static str> {
    let Some(head_end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if input.len() > HEAD_SIZE_BYTES_MAX {
            Err("response head too long")
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&input[..head_end]).map_err(|_| "response head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or("no status code")?;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
            if name.trim().eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked responses are not supported");
            }
        }
    }
    let length = length.ok_or("no content length")?;
    if length > BODY_SIZE_BYTES_MAX {
        return Err("response body too large");
    }
    let end = head_end + 4 + length;
    if input.len() < end {
        return Ok(None);
    }
    let reply = if (200..300).contains(&status) {
        Reply::Simple("OK".to_owned())
    } else {
        Reply::Error(format!("HTTP {status_line}"))
    };
    Ok(Some((reply, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_is_json_with_base64_and_a_response_is_framed_by_its_length() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            "127.0.0.1:2379",
            Request::Put {
                key: b"foo",
                value: b"bar",
            },
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /v3/kv/put HTTP/1.1\r\n"));
        assert!(text.ends_with("{\"key\":\"Zm9v\",\"value\":\"YmFy\"}"));
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 500";
        assert_eq!(
            parse_response(response).unwrap(),
            Some((Reply::Simple("OK".into()), response.len() - 12))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").unwrap(),
            None
        );
        let failed = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse_response(failed).unwrap(),
            Some((Reply::Error(_), _))
        ));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }
}
