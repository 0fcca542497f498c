//! RESP2 replies as a client reads them: simple strings, errors, integers, bulk
//! strings and arrays (nested), with every length checked against [`ReplyLimits`]
//! before anything is allocated. The server's side of RESP (requests) lives in
//! `ringkv_core::resp`; this is the other direction.

use core::fmt;

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `None`: the null bulk string (a missing key).
    Bulk(Option<Vec<u8>>),
    /// `None`: the null array.
    Array(Option<Vec<Reply>>),
}

/// Bounds on what a server may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyLimits {
    pub bulk_size_bytes_max: usize,
    pub array_length_max: usize,
    pub depth_max: usize,
}

impl Default for ReplyLimits {
    fn default() -> ReplyLimits {
        ReplyLimits {
            // Siblings of one key can add up past one value: 64 MiB, as the store.
            bulk_size_bytes_max: 64 << 20,
            array_length_max: 1 << 20,
            depth_max: 8,
        }
    }
}

/// A reply that is not RESP2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed reply: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// The first reply in `input` and its size, `Ok(None)` when it is not whole yet.
pub fn parse_reply(input: &[u8], limits: ReplyLimits) -> Result<Option<(Reply, usize)>, Malformed> {
    parse_at(input, 0, limits, 0)
}

fn line(input: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let rest = input.get(start..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], start + end + 2))
}

fn number(digits: &[u8]) -> Result<i64, Malformed> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(Malformed("a length or integer is not a number"))
}

fn parse_at(
    input: &[u8],
    start: usize,
    limits: ReplyLimits,
    depth: usize,
) -> Result<Option<(Reply, usize)>, Malformed> {
    if depth > limits.depth_max {
        return Err(Malformed("arrays nested too deep"));
    }
    let Some(&kind) = input.get(start) else {
        return Ok(None);
    };
    let Some((header, after)) = line(input, start + 1) else {
        if input.len() - start > 64 + limits.bulk_size_bytes_max.min(1 << 16) {
            return Err(Malformed("a header line without its end"));
        }
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(header).into_owned();
    match kind {
        b'+' => Ok(Some((Reply::Simple(text()), after))),
        b'-' => Ok(Some((Reply::Error(text()), after))),
        b':' => Ok(Some((Reply::Integer(number(header)?), after))),
        b'$' => {
            let length = number(header)?;
            if length < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let length = length as usize;
            if length > limits.bulk_size_bytes_max {
                return Err(Malformed("a bulk string over the size limit"));
            }
            let end = after + length;
            if input.len() < end + 2 {
                return Ok(None);
            }
            if &input[end..end + 2] != b"\r\n" {
                return Err(Malformed("a bulk string without its CRLF"));
            }
            Ok(Some((
                Reply::Bulk(Some(input[after..end].to_vec())),
                end + 2,
            )))
        }
        b'*' => {
            let length = number(header)?;
            if length < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let length = length as usize;
            if length > limits.array_length_max {
                return Err(Malformed("an array over the length limit"));
            }
            let mut items = Vec::with_capacity(length.min(1024));
            let mut position = after;
            for _ in 0..length {
                match parse_at(input, position, limits, depth + 1)? {
                    Some((item, next)) => {
                        items.push(item);
                        position = next;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), position)))
        }
        _ => Err(Malformed("an unknown reply type")),
    }
}

/// Appends a request (a multibulk array of `arguments`) to `out`, allocating nothing
/// beyond `out`'s growth (load generators call it per request).
pub fn write_request(out: &mut Vec<u8>, arguments: &[&[u8]]) {
    write_length_line(out, b'*', arguments.len());
    for argument in arguments {
        write_length_line(out, b'$', argument.len());
        out.extend_from_slice(argument);
        out.extend_from_slice(b"\r\n");
    }
}

fn write_length_line(out: &mut Vec<u8>, kind: u8, length: usize) {
    out.push(kind);
    out.extend_from_slice(Decimal::of(length as u64).bytes());
    out.extend_from_slice(b"\r\n");
}

/// A number's decimal digits, made without allocating (request writers call it per
/// request: lengths, quorums).
#[derive(Clone, Copy, Debug)]
pub struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    pub fn of(value: u64) -> Decimal {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = value;
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Option<(Reply, usize)>, Malformed> {
        parse_reply(input, ReplyLimits::default())
    }

    #[test]
    fn every_kind_parses_with_its_size() {
        assert_eq!(
            parse(b"+OK\r\n").unwrap(),
            Some((Reply::Simple("OK".into()), 5))
        );
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap(),
            Some((Reply::Error("ERR no".into()), 9))
        );
        assert_eq!(parse(b":-3\r\n").unwrap(), Some((Reply::Integer(-3), 5)));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Reply::Bulk(None), 5)));
        let nested = b"*2\r\n$3\r\nctx\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        let (reply, size) = parse(nested).unwrap().unwrap();
        assert_eq!(size, nested.len());
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"ctx".to_vec())),
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"a".to_vec())),
                    Reply::Bulk(Some(b"b".to_vec()))
                ]))
            ]))
        );
    }

    #[test]
    fn a_partial_reply_waits_and_garbage_is_refused() {
        assert_eq!(parse(b"$5\r\nhel").unwrap(), None);
        assert_eq!(parse(b"*2\r\n:1\r\n").unwrap(), None);
        assert!(parse(b"$5\r\nhello!!").is_err());
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
        let deep = "*1\r\n".repeat(20);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn requests_are_multibulk_arrays() {
        let mut out = Vec::new();
        write_request(&mut out, &[b"SET", b"k", b"v v"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv v\r\n");
        out.clear();
        write_request(&mut out, &[&[b'x'; 1234567]]);
        assert!(out.starts_with(b"*1\r\n$1234567\r\nxx"));
        out.clear();
        write_request(&mut out, &[b""]);
        assert_eq!(out, b"*1\r\n$0\r\n\r\n");
        assert_eq!(Decimal::of(255).bytes(), b"255");
        assert_eq!(
            Decimal::of(u64::MAX).bytes(),
            u64::MAX.to_string().as_bytes()
        );
    }
}
