//! A registry's `WWW-Authenticate` challenge (RFC 9110 §11.6.1): `Basic realm="…"` or
//! `Bearer realm="https://auth…/token",service="…",scope="repository:a:pull,push"`.

/// One challenge: its scheme and its `key=value` parameters (keys lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }
}

/// The first challenge of a header value; `None` when it has no scheme. Quoted values may hold
/// commas and `\`-escapes; a parameter without `=` ends the parse (what follows is another
/// challenge, which registries do not send).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, mut rest) = match header.split_once([' ', '\t']) {
        Some((s, r)) => (s, r),
        None => (header, ""),
    };
    if scheme.is_empty() || scheme.contains([',', '=', '"']) {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim();
        if key.is_empty() || key.contains([' ', '\t', ',', '"']) {
            break;
        }
        let after = after.trim_start();
        let (value, remainder) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted)?,
            None => match after.find(',') {
                Some(i) => (after[..i].trim_end().to_owned(), &after[i..]),
                None => (after.trim_end().to_owned(), ""),
            },
        };
        params.push((key.to_ascii_lowercase(), value));
        rest = remainder;
    }
    Some(Challenge {
        scheme: scheme.to_owned(),
        params,
    })
}

/// A quoted string's value and what follows its closing quote; `None` if it never closes.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_registries_send() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert!(c.is("bearer"));
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(
            c.param("scope"),
            Some("repository:library/busybox:pull,push")
        );

        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert!(c.is("Basic"));
        assert_eq!(c.param("realm"), Some("Registry Realm"));

        let c = parse_challenge(r#"Bearer Realm = "a\"b" , service=plain"#).unwrap();
        assert_eq!(c.param("realm"), Some("a\"b"));
        assert_eq!(c.param("service"), Some("plain"));

        assert_eq!(parse_challenge("Bearer").unwrap().params, vec![]);
        assert_eq!(parse_challenge(""), None);
        assert_eq!(parse_challenge(r#"Bearer realm="open"#), None);
    }
}
