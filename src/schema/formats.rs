//! The string formats an API server checks in CRD schemas (the ones a rendered object can carry);
//! formats it does not check (`int32`, `int64`, `password`, unknown names) pass.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `Ok` when `value` is valid for `format`, else why not.
pub fn check_format(format: &str, value: &str) -> Result<(), String> {
    let ok = |b: bool, why: &str| if b { Ok(()) } else { Err(why.to_string()) };
    match format {
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(value).map(|_| ()).map_err(|e| format!("not RFC 3339 ({e})")),
        "date" => chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").map(|_| ()).map_err(|e| format!("not YYYY-MM-DD ({e})")),
        "ipv4" => ok(value.parse::<Ipv4Addr>().is_ok(), "not an IPv4 address"),
        "ipv6" => ok(value.parse::<Ipv6Addr>().is_ok(), "not an IPv6 address"),
        "cidr" => {
            let parsed = value.split_once('/').and_then(|(ip, bits)| Some((ip.parse::<IpAddr>().ok()?, bits.parse::<u8>().ok()?)));
            ok(matches!(parsed, Some((IpAddr::V4(_), b)) if b <= 32) || matches!(parsed, Some((IpAddr::V6(_), b)) if b <= 128), "not an IP/prefix CIDR")
        }
        "uuid" | "uuid3" | "uuid4" | "uuid5" => ok(uuid::Uuid::parse_str(value).is_ok(), "not a UUID"),
        "hostname" => ok(is_hostname(value), "not an RFC 1123 hostname"),
        "duration" => ok(is_go_duration(value), "not a duration like 30s or 1h5m"),
        "byte" => ok(is_base64(value), "not base64"),
        _ => Ok(()),
    }
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_go_duration(s: &str) -> bool {
    let re = regex::Regex::new(r"^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+$").expect("static regex");
    s == "0" || re.is_match(s)
}

fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4) && s.len() - body.len() <= 2 && body.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_formats_accept_good_values_and_reject_bad_ones() {
        for (format, good, bad) in [
            ("date-time", "2026-06-04T21:22:33Z", "yesterday"),
            ("ipv4", "10.0.0.1", "10.0.0.256"),
            ("cidr", "192.168.0.0/16", "192.168.0.0/33"),
            ("duration", "1h30m", "90"),
            ("hostname", "shop.waf-e2e.test", "-bad-.test"),
            ("byte", "aGk=", "a!"),
        ] {
            assert!(check_format(format, good).is_ok(), "{format} {good}");
            assert!(check_format(format, bad).is_err(), "{format} {bad}");
        }
        assert!(check_format("int32", "anything").is_ok());
    }
}
