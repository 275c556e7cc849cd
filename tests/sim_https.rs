//! The emulator's HTTPS on collections (`../shared/globus-api/HTTPS.md` §7): an origin per
//! collection published as `https_server`, token checks by audience, scope and access
//! rules, the no-token answers, and the file operations with their edges.

use std::io::{Read, Write};

use crate::support::emulator::{Emu, write};
use reqwest::StatusCode;
use serde_json::Value;

const CLIENT: &str = "c1c1c1c1-0000-4000-8000-000000000001";
const SECRET: &str = "the-client-secret";

fn emu_with(tweak: impl FnOnce(&mut ps_globus_sim::SimConfig)) -> Emu {
    Emu::with(|config| {
        config.clients.insert(CLIENT.into(), SECRET.into());
        tweak(config);
    })
}

/// The collection's `https_server`, as its endpoint document publishes it.
async fn https_server(emu: &Emu, collection: &str) -> Value {
    let (status, doc) = emu.get(&format!("/v0.10/endpoint/{collection}")).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc["https_server"].clone()
}

/// The HTTPS origin of a collection that has one.
async fn origin_of(emu: &Emu, collection: &str) -> String {
    let published = https_server(emu, collection).await;
    published
        .as_str()
        .expect("the collection serves HTTPS")
        .to_owned()
}

/// A client-credentials token for `scopes` (space-separated).
async fn token(emu: &Emu, scopes: &str) -> String {
    emu.client_token(CLIENT, SECRET, scopes).await
}

/// `GET url` with `token`, following no redirect.
async fn get_with(url: &str, token: &str) -> reqwest::Response {
    no_redirects()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn https_scope(collection: &str) -> String {
    format!("https://auth.globus.org/scopes/{collection}/https")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn each_collection_has_its_own_origin_and_a_disabled_one_publishes_null() {
    let emu = emu_with(|config| {
        config.collections.get_mut("b").unwrap().disable_https = true;
    });
    let a = https_server(&emu, &emu.a).await;
    let origin = a.as_str().expect("a has HTTPS");
    assert!(origin.starts_with("http://127.0.0.1:"), "{origin}");
    assert_ne!(origin, emu.sim.transfer_url().trim_end_matches('/'));
    assert_eq!(https_server(&emu, &emu.b).await, Value::Null);
}

#[tokio::test]
async fn a_token_needs_the_collection_as_audience_and_its_https_scope() {
    let emu = emu_with(|_| {});
    let origin = origin_of(&emu, &emu.a).await;
    write(emu.root_a(), "f", b"hello");
    let http = no_redirects();
    let url = format!("{origin}/f");

    // No token, as a browser: off to log in, the collection id as the only client_id.
    let answer = http.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let ids: Vec<_> = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .filter(|(k, _)| k == "client_id")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(ids, vec![emu.a.clone()]);

    // No token, as a script asking for JSON: 401 naming the scope to ask for.
    let answer = http
        .get(&url)
        .header("X-Requested-With", "XMLHttpRequest")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body["authorization_parameters"]["required_scopes"],
        serde_json::json!([https_scope(&emu.a)])
    );

    // A Transfer token is for another audience; a token of collection b is too.
    for wrong in [
        token(&emu, "urn:globus:auth:scope:transfer.api.globus.org:all").await,
        token(&emu, &https_scope(&emu.b)).await,
    ] {
        let answer = http.get(&url).bearer_auth(&wrong).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }

    let right = token(&emu, &https_scope(&emu.a)).await;
    let answer = http.get(&url).bearer_auth(&right).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["accept-ranges"], "bytes");
    assert_eq!(
        answer.headers()["access-control-allow-methods"],
        "HEAD, GET, PUT, DELETE, OPTIONS"
    );
    assert_eq!(&answer.bytes().await.unwrap()[..], b"hello");
}

#[tokio::test]
async fn a_mapped_collection_needs_data_access_too_and_access_rules_still_apply() {
    let emu = emu_with(|config| {
        let a = config.collections.get_mut("a").unwrap();
        a.requires_data_access = true;
        let b = config.collections.get_mut("b").unwrap();
        b.allow = Some(vec!["someone-else@sim.ps-globus.local".into()]);
    });
    let origin = origin_of(&emu, &emu.a).await;
    write(emu.root_a(), "f", b"mapped");
    let only_https = token(&emu, &https_scope(&emu.a)).await;
    let answer = get_with(&format!("{origin}/f"), &only_https).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let body: Value = answer.json().await.unwrap();
    let data_access = format!("https://auth.globus.org/scopes/{}/data_access", emu.a);
    assert_eq!(
        body["authorization_parameters"]["required_scopes"],
        serde_json::json!([https_scope(&emu.a), data_access])
    );
    let both = token(&emu, &format!("{} {data_access}", https_scope(&emu.a))).await;
    let answer = get_with(&format!("{origin}/f"), &both).await;
    assert_eq!(answer.status(), StatusCode::OK);

    // Collection b's rules name someone else: a valid token of b is refused.
    let b_origin = origin_of(&emu, &emu.b).await;
    write(emu.root_b(), "g", b"x");
    let b_token = token(&emu, &https_scope(&emu.b)).await;
    let answer = get_with(&format!("{b_origin}/g"), &b_token).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn files_are_read_by_absolute_ranges_written_over_and_deleted_but_never_listed() {
    let emu = emu_with(|_| {});
    let origin = origin_of(&emu, &emu.a).await;
    let bearer = token(&emu, &https_scope(&emu.a)).await;
    let http = no_redirects();
    let at = |path: &str| format!("{origin}{path}");
    std::fs::create_dir(emu.root_a().join("dir")).unwrap();

    // PUT writes (and overwrites) with an empty 200; GET reads it back.
    for body in [&b"first version, longer"[..], b"0123456789"] {
        let answer = http
            .put(at("/dir/obj"))
            .bearer_auth(&bearer)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(answer.bytes().await.unwrap().is_empty());
    }
    assert_eq!(
        std::fs::read(emu.root_a().join("dir/obj")).unwrap(),
        b"0123456789"
    );
    let get = |range: Option<&str>| {
        let mut request = http.get(at("/dir/obj")).bearer_auth(&bearer);
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        request.send()
    };
    let answer = get(Some("bytes=2-4")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(answer.headers()["content-range"], "bytes 2-4/*");
    assert_eq!(&answer.bytes().await.unwrap()[..], b"234");
    let answer = get(Some("bytes=0-0,8-")).await.unwrap();
    assert_eq!(answer.status(), StatusCode::PARTIAL_CONTENT);
    let text = String::from_utf8(answer.bytes().await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains("Content-Range: bytes 0-0/*\r\n\r\n0\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Content-Range: bytes 8-9/*\r\n\r\n89\r\n"),
        "{text}"
    );
    for refused in ["bytes=-3", "bytes=10-"] {
        let answer = get(Some(refused)).await.unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{refused}"
        );
    }

    // HEAD: the size; a miss has no body; a directory says so. GET of a directory lists
    // nothing.
    let head = |path: &str| http.head(at(path)).bearer_auth(&bearer).send();
    let answer = head("/dir/obj").await.unwrap();
    assert_eq!(answer.headers()["content-length"], "10");
    let answer = head("/dir/none").await.unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert!(answer.bytes().await.unwrap().is_empty());
    let answer = head("/dir").await.unwrap();
    assert_eq!(answer.headers()["content-type"], "httpd/unix-directory");
    let answer = http
        .get(at("/dir"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(!answer.text().await.unwrap().contains("obj"));

    // A PUT into a directory that does not exist, and a path out of the root, change
    // nothing.
    let answer = http
        .put(at("/nowhere/obj"))
        .bearer_auth(&bearer)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert!(!emu.root_a().join("nowhere").exists());
    let answer = http
        // (An encoded `/`: a URL parser removes `..` segments before they are sent.)
        .put(at("/dir/..%2F..%2Fescaped"))
        .bearer_auth(&bearer)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(!emu.root_a().parent().unwrap().join("escaped").exists());

    // DELETE removes the file; then it is a plain miss.
    let answer = http
        .delete(at("/dir/obj"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let answer = get(None).await.unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert_eq!(answer.headers()["gridftp-errno"], "2");
    assert!(emu.root_a().join("dir").is_dir());
}

/// A PUT is not atomic: an upload cut off mid-body leaves the file cut short, which is
/// why a reader must verify size and sha256 before it trusts what arrived.
#[tokio::test]
async fn a_put_cut_off_mid_body_leaves_a_truncated_file() {
    let emu = emu_with(|_| {});
    let origin = origin_of(&emu, &emu.a).await;
    let bearer = token(&emu, &https_scope(&emu.a)).await;
    write(emu.root_a(), "obj", b"the whole old object");
    let address = origin.trim_start_matches("http://").to_owned();
    let sent = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "PUT /obj HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n\
             Content-Length: 100\r\n\r\n0123456789"
        )
        .unwrap();
        stream.flush().unwrap();
        // Closing the writing half ends the body 90 bytes early; the answer says so.
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(!sent.starts_with("HTTP/1.1 200"), "{sent}");
    assert_eq!(
        std::fs::read(emu.root_a().join("obj")).unwrap(),
        b"0123456789"
    );
}

/// The faults a client of the real service must survive: the `ENDPOINT_ERROR` 404 that
/// sticks to its connection (a fresh connection gets through), a 5xx, and a body cut off.
#[tokio::test]
async fn faults_stick_to_a_connection_and_a_fresh_one_gets_through() {
    use ps_globus_sim::{FaultConfig, FaultKind};
    let fault = |kind, route: &str| FaultConfig {
        kind,
        path: None,
        route: Some(route.into()),
        probability: 1.0,
        after: 0,
        count: Some(1),
        retry_after: 1,
    };
    let emu = emu_with(|config| {
        config.faults = vec![
            fault(FaultKind::HttpsEndpointError, "HTTPS GET"),
            fault(FaultKind::Http503, "HTTPS PUT"),
        ];
    });
    let origin = origin_of(&emu, &emu.a).await;
    let bearer = token(&emu, &https_scope(&emu.a)).await;
    write(emu.root_a(), "f", b"intact");
    let url = format!("{origin}/f");

    // One connection (keep-alive): the fault hits once, then sticks to it.
    let one = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for _ in 0..2 {
        let answer = one.get(&url).bearer_auth(&bearer).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        assert!(answer.text().await.unwrap().contains("c=ENDPOINT_ERROR"));
    }
    let fresh = no_redirects();
    let answer = fresh.get(&url).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(&answer.bytes().await.unwrap()[..], b"intact");

    // A 5xx PUT changes nothing; the next one lands.
    let put = || fresh.put(&url).bearer_auth(&bearer).body("replaced").send();
    assert_eq!(
        put().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(std::fs::read(emu.root_a().join("f")).unwrap(), b"intact");
    assert_eq!(put().await.unwrap().status(), StatusCode::OK);
    assert_eq!(std::fs::read(emu.root_a().join("f")).unwrap(), b"replaced");

    let stats = emu.sim.stats();
    assert_eq!(stats.route("HTTPS GET"), 3);
    assert_eq!(stats.route("HTTPS PUT"), 2);

    // A body cut off mid-way is an error for the reader, never a short success.
    let emu = emu_with(|config| {
        config.faults = vec![fault(FaultKind::ConnectionReset, "HTTPS GET")];
    });
    let origin = origin_of(&emu, &emu.a).await;
    let bearer = token(&emu, &https_scope(&emu.a)).await;
    write(emu.root_a(), "big", &[7u8; 64 << 10]);
    let url = format!("{origin}/big");
    let cut = no_redirects().get(&url).bearer_auth(&bearer).send().await;
    let read = match cut {
        Ok(answer) => answer.bytes().await.map(|b| b.len()),
        Err(e) => Err(e),
    };
    assert!(read.is_err(), "a cut body read as {read:?}");
    let whole = get_with(&url, &bearer).await;
    assert_eq!(whole.bytes().await.unwrap().len(), 64 << 10);
}
