//! Parsing the RESP replies a node sends its clients, for the simulator's clients.

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Reply>),
}

/// Parses one whole reply; `None` if the bytes are not exactly one reply.
pub fn parse_reply(bytes: &[u8]) -> Option<Reply> {
    let (reply, used) = parse_at(bytes, 0)?;
    (used == bytes.len()).then_some(reply)
}

fn line(bytes: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let rest = bytes.get(start..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], start + end + 2))
}

fn number(text: &[u8]) -> Option<i64> {
    core::str::from_utf8(text).ok()?.parse().ok()
}

fn parse_at(bytes: &[u8], start: usize) -> Option<(Reply, usize)> {
    let kind = *bytes.get(start)?;
    let (text, next) = line(bytes, start + 1)?;
    match kind {
        b'+' => Some((
            Reply::Simple(String::from_utf8_lossy(text).into_owned()),
            next,
        )),
        b'-' => Some((
            Reply::Error(String::from_utf8_lossy(text).into_owned()),
            next,
        )),
        b':' => Some((Reply::Integer(number(text)?), next)),
        b'$' => {
            let length = number(text)?;
            if length < 0 {
                return Some((Reply::Null, next));
            }
            let end = next + length as usize;
            let data = bytes.get(next..end)?.to_vec();
            (bytes.get(end..end + 2)? == b"\r\n").then_some((Reply::Bulk(data), end + 2))
        }
        b'*' => {
            let count = number(text)?;
            if count < 0 {
                return Some((Reply::Null, next));
            }
            let mut items = Vec::new();
            let mut position = next;
            for _ in 0..count {
                let (item, after) = parse_at(bytes, position)?;
                items.push(item);
                position = after;
            }
            Some((Reply::Array(items), position))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_every_kind_parse() {
        assert_eq!(parse_reply(b"+OK\r\n"), Some(Reply::Simple("OK".into())));
        assert_eq!(parse_reply(b":3\r\n"), Some(Reply::Integer(3)));
        assert_eq!(parse_reply(b"$-1\r\n"), Some(Reply::Null));
        assert_eq!(
            parse_reply(b"*2\r\n$1\r\na\r\n*1\r\n$0\r\n\r\n"),
            Some(Reply::Array(vec![
                Reply::Bulk(b"a".to_vec()),
                Reply::Array(vec![Reply::Bulk(Vec::new())])
            ]))
        );
        assert_eq!(parse_reply(b"+OK\r\nextra"), None);
        assert_eq!(parse_reply(b"$5\r\nab\r\n"), None);
    }
}
