//! ISC dhcpd's lease file.

use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use super::{LastPerAddress, Lease, Leases, epoch, mac_from_duid, quote};
use crate::parsers::clean_device_name;
use crate::types::MacAddr;

/// Nesting deeper than this in an ISC lease file is treated as broken (real files nest 2 deep).
const MAX_ISC_DEPTH: usize = 8;

/// One token of an ISC lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    /// A quoted string, escapes decoded (possibly binary, as in `uid` and `ia-na`).
    Str(Vec<u8>),
    Open,
    Close,
    Semi,
}

/// Splits an ISC lease file into tokens with their line numbers. `#` starts a comment outside
/// strings. A string left open at the end of the file ends there, and is flagged.
fn tokenize(text: &str) -> (Vec<(usize, Token)>, Option<usize>) {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => while chars.next_if(|&c| c != '\n').is_some() {},
            '{' => tokens.push((line, Token::Open)),
            '}' => tokens.push((line, Token::Close)),
            ';' => tokens.push((line, Token::Semi)),
            '"' => {
                let start = line;
                let mut bytes = Vec::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some(d @ '0'..='7') => {
                                let mut value = u32::from(d) - u32::from('0');
                                for _ in 0..2 {
                                    if let Some(d) = chars.next_if(|c| ('0'..='7').contains(c)) {
                                        value = value * 8 + (u32::from(d) - u32::from('0'));
                                    }
                                }
                                bytes.push(value as u8);
                            }
                            Some('n') => bytes.push(b'\n'),
                            Some('t') => bytes.push(b'\t'),
                            Some(other) => {
                                if other == '\n' {
                                    line += 1;
                                }
                                let mut buf = [0; 4];
                                bytes.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                            }
                            None => {}
                        },
                        other => {
                            if other == '\n' {
                                line += 1;
                            }
                            let mut buf = [0; 4];
                            bytes.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
                if !closed {
                    return (tokens, Some(start));
                }
                tokens.push((start, Token::Str(bytes)));
            }
            c => {
                let mut word = String::from(c);
                while let Some(c) = chars
                    .next_if(|&c| !c.is_whitespace() && !matches!(c, '{' | '}' | ';' | '"' | '#'))
                {
                    word.push(c);
                }
                tokens.push((line, Token::Word(word)));
            }
        }
    }
    (tokens, None)
}

/// A statement of an ISC lease file: its words and strings, and its block if it has one.
#[derive(Debug)]
struct Statement {
    line: usize,
    words: Vec<Token>,
    block: Option<Vec<Statement>>,
}

impl Statement {
    fn word(&self, i: usize) -> Option<&str> {
        match self.words.get(i)? {
            Token::Word(w) => Some(w),
            _ => None,
        }
    }
}

/// Reads statements up to a `}` (or the end, at depth 0). Inside a block, `Err(line)` says the
/// block is broken (not closed before the end or before the next lease declaration, or nested
/// too deep), with the line where it starts; at depth 0 a broken block is recorded in `out` and
/// reading goes on after it, so depth 0 always returns `Ok`.
fn read_statements(
    tokens: &[(usize, Token)],
    pos: &mut usize,
    depth: usize,
    out: &mut Leases,
) -> Result<Vec<Statement>, usize> {
    let mut statements = Vec::new();
    let mut words = Vec::new();
    let mut start = None;
    while let Some((line, token)) = tokens.get(*pos) {
        *pos += 1;
        match token {
            Token::Semi => {
                if let Some(line) = start.take() {
                    statements.push(Statement {
                        line,
                        words: std::mem::take(&mut words),
                        block: None,
                    });
                }
            }
            Token::Open => {
                let line = start.take().unwrap_or(*line);
                let block = if depth + 1 >= MAX_ISC_DEPTH {
                    Err(line)
                } else {
                    read_statements(tokens, pos, depth + 1, out)
                };
                match block {
                    Ok(block) => statements.push(Statement {
                        line,
                        words: std::mem::take(&mut words),
                        block: Some(block),
                    }),
                    Err(_) if depth == 0 => {
                        out.skip(line, "block not closed (file cut short?)");
                        words.clear();
                    }
                    Err(_) => return Err(line),
                }
            }
            Token::Close if depth > 0 => return Ok(statements),
            Token::Close => {
                out.skip(*line, "'}' without a block to close");
                words.clear();
                start = None;
            }
            Token::Word(_) | Token::Str(_) => {
                // A lease declaration inside a block means the block before it was cut off
                // (a server that died mid-write): end the broken block here.
                if depth > 0
                    && words.is_empty()
                    && matches!(token, Token::Word(w) if w == "lease" || w == "ia-na" || w == "ia-ta")
                    && matches!(tokens.get(*pos + 1), Some((_, Token::Open)))
                {
                    *pos -= 1;
                    return Err(*line);
                }
                start.get_or_insert(*line);
                words.push(token.clone());
            }
        }
    }
    if depth > 0 {
        return Err(start.unwrap_or_default());
    }
    Ok(statements)
}

/// ISC dhcpd `dhcpd.leases`, described in dhcpd.leases(5). The file is a log: a later
/// declaration for the same address supersedes an earlier one, so the last one per address is
/// returned.
///
/// ```text
/// lease 192.0.2.10 {
///   starts 4 2026/11/26 08:00:00;
///   ends 4 2026/11/26 20:00:00;           # UTC; also "ends never;" and "ends epoch <secs>;"
///   binding state active;
///   hardware ethernet 00:00:5e:00:53:01;
///   client-hostname "my-phone";
/// }
/// ia-na "<IAID (4 bytes) and DUID>" {
///   iaaddr 2001:db8::10 { binding state active; ends 4 2026/11/26 20:00:00; }
/// }
/// ```
///
/// Leases in any binding state are returned; [`Lease::active`] is true for `active` (and when no
/// state is given). A block that is not closed, or a lease whose address does not parse, is
/// skipped. Other declarations (`host`, `server-duid`, `failover peer`, ...) are ignored.
pub(super) fn parse(text: &str) -> Leases {
    let (tokens, open_string) = tokenize(text);
    let mut table = LastPerAddress::default();
    if let Some(line) = open_string {
        table
            .out
            .skip(line, "string not closed before the end of the file");
    }
    let mut pos = 0;
    let statements = read_statements(&tokens, &mut pos, 0, &mut table.out).unwrap_or_default();
    for statement in &statements {
        declaration(statement, &mut table);
    }
    table.finish()
}

/// Reads one top-level declaration of an ISC lease file into the table.
fn declaration(statement: &Statement, table: &mut LastPerAddress) {
    let Some(block) = &statement.block else {
        return;
    };
    match statement.word(0) {
        Some("lease") => {
            let Some(addr) = statement.word(1).and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                let shown = statement.word(1).unwrap_or_default();
                table.out.skip(
                    statement.line,
                    format!("lease {} is not an IPv4 address", quote(shown)),
                );
                return;
            };
            let mut lease = lease_fields(block);
            lease.addr = Some(IpAddr::V4(addr));
            lease.mac = hardware_ethernet(block);
            table.put(statement.line, IpAddr::V4(addr), lease);
        }
        Some("ia-na" | "ia-ta") => {
            let mac = match statement.words.get(1) {
                Some(Token::Str(id)) => id.get(4..).and_then(mac_from_duid),
                _ => None,
            };
            for inner in block {
                let (Some("iaaddr"), Some(block)) = (inner.word(0), &inner.block) else {
                    continue;
                };
                let Some(addr) = inner.word(1).and_then(|a| a.parse::<IpAddr>().ok()) else {
                    let shown = inner.word(1).unwrap_or_default();
                    table.out.skip(
                        inner.line,
                        format!("iaaddr {} is not an address", quote(shown)),
                    );
                    continue;
                };
                let mut lease = lease_fields(block);
                lease.addr = Some(addr);
                lease.mac = mac;
                table.put(inner.line, addr, lease);
            }
        }
        _ => {}
    }
}

/// The hardware address of an ISC lease block, if Ethernet.
fn hardware_ethernet(block: &[Statement]) -> Option<MacAddr> {
    block.iter().find_map(|s| {
        if s.word(0) == Some("hardware") && s.word(1) == Some("ethernet") {
            s.word(2)?.parse().ok()
        } else {
            None
        }
    })
}

/// The fields every ISC lease block has: end, binding state, host name.
fn lease_fields(block: &[Statement]) -> Lease {
    let mut lease = Lease {
        mac: None,
        addr: None,
        hostname: None,
        expires: None,
        active: true,
    };
    for s in block {
        match (s.word(0), s.word(1)) {
            (Some("ends"), _) => lease.expires = parse_time(&s.words[1..]),
            (Some("binding"), Some("state")) => lease.active = s.word(2) == Some("active"),
            (Some("client-hostname"), _) => {
                if let Some(Token::Str(name)) = s.words.get(1) {
                    lease.hostname = clean_device_name(&String::from_utf8_lossy(name));
                }
            }
            _ => {}
        }
    }
    lease
}

/// An ISC date: `<weekday> YYYY/MM/DD HH:MM:SS` in UTC, `epoch <secs>`, or `never` (`None`).
fn parse_time(words: &[Token]) -> Option<SystemTime> {
    let word = |i: usize| match words.get(i)? {
        Token::Word(w) => Some(w.as_str()),
        _ => None,
    };
    match word(0)? {
        "never" => None,
        "epoch" => epoch(word(1)?.parse().ok()?),
        _ => {
            let mut date = word(1)?.split('/').map(|p| p.parse::<u32>().ok());
            let mut time = word(2)?.split(':').map(|p| p.parse::<u32>().ok());
            let (y, mo, d) = (date.next()??, date.next()??, date.next()??);
            let (h, mi, s) = (time.next()??, time.next()??, time.next()??);
            if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
                return None;
            }
            let days = days_from_civil(i64::from(y), mo, d);
            let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
            epoch(u64::try_from(secs).ok()?)
        }
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parsers::leases::tests::{at, ip, lease, mac, skipped};
    use crate::parsers::leases::{LeaseFormat, parse};

    #[test]
    fn isc_dhcpd() {
        let text = r##"# The format of this file is documented in the dhcpd.leases(5) manual page.
# This lease file was written by isc-dhcp-4.4.3
authoring-byte-order little-endian;
server-duid "\000\001\000\001,^\020\000\000\000^\000S\376";

lease 192.0.2.10 {
  starts 4 2026/11/26 08:00:00;
  ends 4 2026/11/26 20:00:00;
  cltt 4 2026/11/26 08:00:00;
  binding state active;
  next binding state free;
  rewind binding state free;
  hardware ethernet 00:00:5e:00:53:01;
  uid "\001\000\000^\000S\001";
  set vendor-class-identifier = "android-dhcp-14";
  client-hostname "my-phone";
}
lease 192.0.2.11 {
  starts 4 2026/11/26 08:00:00;
  ends never;
  binding state active;
  hardware ethernet 00:00:5e:00:53:02;
  client-hostname "Living Room {TV}; \"4K\"";
}
lease 192.0.2.10 {
  starts 4 2026/11/26 09:00:00;
  ends epoch 1795813266; # 2026/11/27 09:01:06
  binding state free;
  hardware ethernet 00:00:5e:00:53:01;
}
host static-1 { dynamic; hardware ethernet 00:00:5e:00:53:99; fixed-address 192.0.2.99; }
lease 192.0.2.300 {
  binding state active;
}
ia-na "\001\000\000\000\000\003\000\001\000\000^\000S\020" {
  cltt 4 2026/11/26 08:00:00;
  iaaddr 2001:db8::10 {
    binding state active;
    preferred-life 375;
    max-life 600;
    ends 4 2026/11/26 08:10:00;
  }
}
lease 192.0.2.12 {
  starts 4 2026/11/26 08:00:00;
  hardware ethernet 00:00:5e:00:53:03;
lease 192.0.2.13 {
  ends 4 2026/11/26 20:00:00;
  hardware ethernet 00:00:5e:00:53:04;
}
}
lease 192.0.2.14 {
  hardware ethernet 00:00:5e:00:53:05;
  client-hostname "cut"#;
"##;
        let got = parse(LeaseFormat::IscDhcpd, text);
        let evening = at(1_795_723_200); // 2026-11-26T20:00:00Z
        assert_eq!(
            got.leases,
            vec![
                lease(
                    mac("00:00:5e:00:53:01"),
                    ip("192.0.2.10"),
                    None,
                    at(1_795_813_266),
                    false
                ),
                lease(
                    mac("00:00:5e:00:53:02"),
                    ip("192.0.2.11"),
                    Some("Living Room {TV}; \"4K\""),
                    None,
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:10"),
                    ip("2001:db8::10"),
                    None,
                    at(1_795_680_600),
                    true
                ),
                lease(
                    mac("00:00:5e:00:53:04"),
                    ip("192.0.2.13"),
                    None,
                    evening,
                    true
                ),
            ]
        );
        assert_eq!(
            got.skipped,
            vec![
                skipped(32, "lease \"192.0.2.300\" is not an IPv4 address"),
                skipped(44, "block not closed (file cut short?)"),
                skipped(51, "'}' without a block to close"),
                skipped(52, "block not closed (file cut short?)"),
            ]
        );
    }

    #[test]
    fn isc_dates() {
        let w = |s: &str| Token::Word(s.to_owned());
        let cases: &[(&[&str], Option<u64>)] = &[
            (&["4", "2026/11/26", "20:00:00"], Some(1_795_723_200)),
            (&["4", "1970/01/01", "00:00:00"], Some(0)),
            (&["2", "2024/02/29", "23:59:60"], Some(1_709_251_200)),
            (&["never"], None),
            (&["epoch", "1795813266"], Some(1_795_813_266)),
            (&["epoch", "-1"], None),
            (&["4", "2026/13/26", "20:00:00"], None),
            (&["4", "2026/11/26", "24:00:00"], None),
            (&["4", "2026/11/26"], None),
            (&["4", "1969/12/31", "23:59:59"], None),
        ];
        for (words, want) in cases {
            let tokens: Vec<Token> = words.iter().map(|s| w(s)).collect();
            assert_eq!(parse_time(&tokens), want.and_then(epoch), "{words:?}");
        }
    }
}
