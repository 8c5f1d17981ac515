//! keepalived's value syntax: timers, numbers in ranges, booleans, addresses and ranges.
//!
//! Each reader returns `Err(why)` with keepalived's reason; the caller reports it at the
//! line and keeps keepalived's default, as keepalived does ("err→ignored").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// A TIMER: seconds, possibly fractional, kept to the microsecond (keepalived stores µs).
pub fn timer(word: &str, min: f64, max: f64) -> Result<Duration, String> {
    let v: f64 = word.parse().map_err(|_| format!("`{word}` is not a number of seconds"))?;
    if !v.is_finite() || v < min || v > max {
        return Err(format!("{word} is outside [{min}, {max}] seconds"));
    }
    Ok(Duration::from_micros((v * 1_000_000.0).round() as u64))
}

/// An integer in `[min, max]`.
pub fn number(word: &str, min: i64, max: i64) -> Result<i64, String> {
    let v: i64 = word.parse().map_err(|_| format!("`{word}` is not an integer"))?;
    if v < min || v > max {
        return Err(format!("{v} is outside [{min}, {max}]"));
    }
    Ok(v)
}

/// A flag: no word means true; otherwise on/off, true/false, yes/no.
pub fn flag(args: &[String]) -> Result<bool, String> {
    match args.first().map(String::as_str) {
        None => Ok(true),
        Some("on" | "true" | "yes") => Ok(true),
        Some("off" | "false" | "no") => Ok(false),
        Some(other) => Err(format!("`{other}` is not one of on, off, true, false, yes, no")),
    }
}

/// A port: 0 to 65535.
pub fn port(word: &str) -> Result<u16, String> {
    number(word, 0, 65535).map(|p| p as u16)
}

pub fn address(word: &str) -> Result<IpAddr, String> {
    word.parse().map_err(|_| format!("`{word}` is not an IPv4 or IPv6 address"))
}

/// keepalived's inet_stosockaddr reads an address up to a `-` or `/`: `198.18.0.2/32` is
/// 198.18.0.2.
pub fn strip_range(word: &str) -> &str {
    word.split(['/', '-']).next().unwrap_or(word)
}

/// A virtual_server_group address entry: `IP`, `A.B.C.D-E`, `x::a-b` (hex), `A-B` or
/// `A/nn`; every address it stands for, in order.
pub fn address_range(word: &str) -> Result<Vec<IpAddr>, String> {
    const LIMIT: u128 = 65536;
    if let Some((base, len)) = word.split_once('/') {
        let base = address(base)?;
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let len: u32 = len.parse().ok().filter(|l| *l <= bits).ok_or_else(|| format!("`{word}`: bad prefix length"))?;
        let first = to_u128(base);
        let size = 1u128.checked_shl(bits - len).unwrap_or(0);
        if size == 0 || size > LIMIT {
            return Err(format!("`{word}` covers more than {LIMIT} addresses"));
        }
        if first & (size - 1) != 0 {
            return Err(format!("`{word}`: the host bits of the prefix are not zero"));
        }
        return Ok((0..size).map(|i| from_u128(first + i, base.is_ipv4())).collect());
    }
    let Some((first, last)) = word.split_once('-') else {
        return address(word).map(|a| vec![a]);
    };
    let first_addr = address(first)?;
    let short = address(last).is_err();
    let last_addr = match address(last) {
        Ok(a) => a,
        // The short form replaces the last octet (IPv4, decimal) or group (IPv6, hex).
        Err(_) => match first_addr {
            IpAddr::V4(a) => {
                let end: u8 = last.parse().map_err(|_| format!("`{word}`: `{last}` is not an octet"))?;
                let o = a.octets();
                IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], end))
            }
            IpAddr::V6(a) => {
                let end = u16::from_str_radix(last, 16).map_err(|_| format!("`{word}`: `{last}` is not a hex group"))?;
                let mut s = a.segments();
                s[7] = end;
                IpAddr::V6(Ipv6Addr::from(s))
            }
        },
    };
    if first_addr.is_ipv4() != last_addr.is_ipv4() {
        return Err(format!("`{word}` mixes address families"));
    }
    let (lo, hi) = (to_u128(first_addr), to_u128(last_addr));
    if hi < lo {
        return Err(format!("`{word}`: the range ends before it starts"));
    }
    if short && hi == lo {
        // inet_stor(): "not greater than ... start - skipping".
        return Err(format!("`{word}`: the range's end is not greater than its start"));
    }
    if hi - lo >= LIMIT {
        return Err(format!("`{word}` covers more than {LIMIT} addresses"));
    }
    Ok((lo..=hi).map(|v| from_u128(v, first_addr.is_ipv4())).collect())
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 { IpAddr::V4(Ipv4Addr::from(v as u32)) } else { IpAddr::V6(Ipv6Addr::from(v)) }
}

/// A duration as drlb's YAML writes it: `7s`, `2500ms`, `250us`.
pub fn yaml_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_micros() % 1000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_keep_fractions_to_the_microsecond() {
        assert_eq!(timer("2.5", 0.000001, 4294.0), Ok(Duration::from_millis(2500)));
        assert!(timer("0", 0.000001, 4294.0).is_err());
        assert!(timer("abc", 0.0, 1.0).is_err());
        assert_eq!(yaml_duration(Duration::from_millis(2500)), "2500ms");
        assert_eq!(yaml_duration(Duration::from_secs(7)), "7s");
    }

    #[test]
    fn group_ranges_expand_as_keepalived_reads_them() {
        let r = address_range("198.18.200.3-5").unwrap();
        assert_eq!(r, ["198.18.200.3", "198.18.200.4", "198.18.200.5"].map(|a| a.parse::<IpAddr>().unwrap()));
        // IPv6: the last group, in hex.
        let r = address_range("2001:db8::a-c").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[2], "2001:db8::c".parse::<IpAddr>().unwrap());
        assert_eq!(address_range("198.18.0.0/30").unwrap().len(), 4);
        assert!(address_range("198.18.0.1/30").is_err());
        assert!(address_range("198.18.0.9-3").is_err());
    }

    #[test]
    fn flags_take_keepalived_booleans() {
        assert_eq!(flag(&[]), Ok(true));
        assert_eq!(flag(&["off".to_string()]), Ok(false));
        assert!(flag(&["maybe".to_string()]).is_err());
    }
}

/// keepalived's `alloc_strvec_quoted_escaped_common`: words separated by blanks, grouped by
/// '…' or "…", with `\` taking the next character literally — or, with `escapes`, as C
/// escapes (`\n`, `\t`, `\xHH`, `\ooo`, `\cX`...).
pub fn split_quoted(src: &str, escapes: bool) -> Result<Vec<String>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut words = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i == chars.len() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    i += 1;
                    let Some(&next) = chars.get(i) else { return Err(format!("`{src}` ends with a lone `\\`")) };
                    if !escapes {
                        word.push(next);
                    } else {
                        match next {
                            'x' if chars.get(i + 1).is_some_and(|c| c.is_ascii_hexdigit()) => {
                                let mut v = 0u32;
                                let mut n = 0;
                                while n < 2 && chars.get(i + 1).is_some_and(|c| c.is_ascii_hexdigit()) {
                                    i += 1;
                                    v = v * 16 + chars[i].to_digit(16).unwrap();
                                    n += 1;
                                }
                                word.push(char::from(v as u8));
                            }
                            'c' if i + 1 < chars.len() => {
                                i += 1;
                                word.push(char::from((chars[i] as u8) & 0x1f));
                            }
                            '0'..='7' => {
                                let mut v = next.to_digit(8).unwrap();
                                let mut n = 1;
                                while n < 3 && chars.get(i + 1).is_some_and(|c| ('0'..='7').contains(c)) {
                                    i += 1;
                                    v = v * 8 + chars[i].to_digit(8).unwrap();
                                    n += 1;
                                }
                                word.push(char::from(v as u8));
                            }
                            'a' => word.push('\x07'),
                            'b' => word.push('\x08'),
                            'f' => word.push('\x0c'),
                            'n' => word.push('\n'),
                            'r' => word.push('\r'),
                            't' => word.push('\t'),
                            'v' => word.push('\x0b'),
                            other => word.push(other),
                        }
                    }
                }
                (_, c) => word.push(c),
            }
            i += 1;
        }
        if let Some(q) = quote {
            return Err(format!("`{src}` is missing its closing {q}"));
        }
        words.push(word);
    }
    Ok(words)
}

/// A word as `sh -c` must see it to pass it on unchanged.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod quoting {
    use super::*;

    #[test]
    fn scripts_split_as_keepalived_and_quote_for_sh() {
        assert_eq!(split_quoted(r#""/bin/chk a" 'b c' d\ e"#, false).unwrap(), ["/bin/chk a", "b c", "d e"]);
        assert_eq!(split_quoted(r"a\tb \x41", true).unwrap(), ["a\tb", "A"]);
        assert!(split_quoted("'open", false).is_err());
        assert_eq!(shell_quote("/usr/bin/curl"), "/usr/bin/curl");
        assert_eq!(shell_quote("http://rs/h?a=1&b=2"), "'http://rs/h?a=1&b=2'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
