//! The one function that turns a URL into text fit for an error, a log line or `doctor`:
//! credentials never show, wherever a URL carries them.

/// Query parameters whose values are secrets (libpq's `password` and `sslpassword`, and
/// the names other services use for the same).
const SECRET_PARAMETERS: &[&str] = &[
    "password",
    "sslpassword",
    "pass",
    "passwd",
    "secret",
    "token",
    "access_token",
    "client_secret",
];

/// `url` fit to show: a password in it (`user:PASSWORD@`, `?password=`,
/// `?sslpassword=`, …) replaced by `***`. Text that does not parse as a URL shows its
/// scheme only, since a mistyped URL may still hold a password.
///
/// ```
/// # use ps_globus::internal::redact_url as url;
/// assert_eq!(url("postgres://me:pw@db/x"), "postgres://me:***@db/x");
/// assert_eq!(url("postgres://me@db/x?password=pw"), "postgres://me@db/x?password=***");
/// assert_eq!(url("postgres//me:pw@db"), "postgres//me:… (not a URL)");
/// ```
pub fn url(text: &str) -> String {
    let parsed = reqwest::Url::parse(text).ok().filter(|u| {
        // `me:pw@host` parses with the scheme `me`, and `postgres:/me:pw@db` with no
        // host: a password there is only a path to the parser, so neither is shown.
        !u.cannot_be_a_base() && (u.host_str().is_some() || !text.contains('@'))
    });
    let Some(mut parsed) = parsed else {
        return match text.split_once(':') {
            Some((scheme, _))
                if scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-./".contains(&b)) =>
            {
                format!("{scheme}:… (not a URL)")
            }
            _ => "(text that is not a URL)".into(),
        };
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let secret = SECRET_PARAMETERS
                    .iter()
                    .any(|s| name.eq_ignore_ascii_case(s));
                let value = if secret {
                    "***".into()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        // Rebuilt by hand so that `***` is not percent-encoded.
        let query: Vec<String> = pairs
            .iter()
            .map(|(name, value)| {
                if value == "***" {
                    format!("{name}=***")
                } else {
                    form_pair(name, value)
                }
            })
            .collect();
        parsed.set_query(Some(&query.join("&")));
    }
    parsed.to_string()
}

fn form_pair(name: &str, value: &str) -> String {
    let mut serializer = reqwest::Url::parse("x:/").expect("a fixed URL parses");
    serializer.query_pairs_mut().append_pair(name, value);
    serializer.query().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn a_postgres_password_never_shows_in_any_place_a_url_carries_it() {
        for (given, secret) in [
            ("postgres://me:s3cret@db.example:5432/psg", "s3cret"),
            ("postgres://me@db.example/psg?password=s3cret", "s3cret"),
            (
                "postgres://me@db.example/psg?sslmode=require&sslpassword=k3y",
                "k3y",
            ),
            (
                "postgres://me@db.example/psg?PassWord=s3cret&host=/run",
                "s3cret",
            ),
            ("postgres//me:s3cret@nowhere", "s3cret"),
            ("postgre:/me:s3cret@db", "s3cret"),
            ("me:s3cret@db.example", "s3cret"),
            ("s3cret", "s3cret"),
        ] {
            let shown = url(given);
            assert!(!shown.contains(secret), "{given} -> {shown}");
        }
        assert_eq!(
            url("postgres://me@db.example/psg?sslmode=require&password=x"),
            "postgres://me@db.example/psg?sslmode=require&password=***"
        );
        assert_eq!(
            url("postgres://me@db.example/psg"),
            "postgres://me@db.example/psg"
        );
    }
}
