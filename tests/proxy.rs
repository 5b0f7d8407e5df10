//! The verifier behind a real proxy: NGINX with `auth_request` pointing at `keyward verifier`,
//! in front of a small upstream that answers with the identity headers it was handed. Every
//! request goes through NGINX, as a client's would. Each test has its own namespace, verifier
//! and NGINX. NGINX must be installed (`apt-get install nginx`; `make test` does it).

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;

use keyward::api::Phase;
use serde_json::json;
use support::{DEADLINE, HttpResponse, TestNamespace, http, wait_for};
use tokio::process::{Child, Command};

/// The NGINX configuration the tests run, as in the README, plus what a test needs: one
/// process (nothing outlives the test), every file in the prefix directory, loopback ports.
/// `@DIR@`, `@VERIFIER@`, `@PROXY@` and `@UPSTREAM@` are filled in.
const NGINX_CONF: &str = r#"
# Test only: a single process (no workers left behind when the test kills it; it never changes
# user, so this works as root and as anyone else) with all its files in the test's directory.
master_process off;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log info;
events { worker_connections 64; }

http {
    access_log @DIR@/access.log;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;

    upstream keyward { server @VERIFIER@; }
    upstream orders  { server @UPSTREAM@; }

    # The protected service: answers with the identity it was handed. A key's scopes fill up to
    # 8.3 KB of X-Keyward-Scopes: more than NGINX's default 8k header line.
    server {
        listen @UPSTREAM@;
        large_client_header_buffers 4 16k;
        default_type text/plain;
        return 200 "key=$http_x_keyward_key id=$http_x_keyward_key_id scopes=$http_x_keyward_scopes\n";
    }

    server {
        listen @PROXY@;

        # Reading orders needs the scope orders.read.
        location /orders/ {
            auth_request /_keyward/orders.read;
            auth_request_set $keyward_key $upstream_http_x_keyward_key;
            auth_request_set $keyward_key_id $upstream_http_x_keyward_key_id;
            auth_request_set $keyward_scopes $upstream_http_x_keyward_scopes;
            # Set (never passed through from the client): the upstream may trust them.
            proxy_set_header X-Keyward-Key $keyward_key;
            proxy_set_header X-Keyward-Key-Id $keyward_key_id;
            proxy_set_header X-Keyward-Scopes $keyward_scopes;
            proxy_pass http://orders;
        }

        # Refunds need orders.write.
        location /refunds/ {
            auth_request /_keyward/orders.write;
            auth_request_set $keyward_key $upstream_http_x_keyward_key;
            auth_request_set $keyward_key_id $upstream_http_x_keyward_key_id;
            auth_request_set $keyward_scopes $upstream_http_x_keyward_scopes;
            proxy_set_header X-Keyward-Key $keyward_key;
            proxy_set_header X-Keyward-Key-Id $keyward_key_id;
            proxy_set_header X-Keyward-Scopes $keyward_scopes;
            proxy_pass http://orders;
        }

        # The same, behind the common X-Forwarded-For setting that appends to the client's.
        location /appended/orders/ {
            auth_request /_keyward/appended/orders.read;
            auth_request_set $keyward_key $upstream_http_x_keyward_key;
            auth_request_set $keyward_key_id $upstream_http_x_keyward_key_id;
            auth_request_set $keyward_scopes $upstream_http_x_keyward_scopes;
            proxy_set_header X-Keyward-Key $keyward_key;
            proxy_set_header X-Keyward-Key-Id $keyward_key_id;
            proxy_set_header X-Keyward-Scopes $keyward_scopes;
            proxy_pass http://orders;
        }

        # Every request here is the application billing-worker's: named by the location, never
        # by the client (what a client sends in X-Keyward-App is replaced).
        location /billing/ {
            auth_request /_keyward/billing;
            auth_request_set $keyward_key $upstream_http_x_keyward_key;
            auth_request_set $keyward_key_id $upstream_http_x_keyward_key_id;
            auth_request_set $keyward_scopes $upstream_http_x_keyward_scopes;
            proxy_set_header X-Keyward-Key $keyward_key;
            proxy_set_header X-Keyward-Key-Id $keyward_key_id;
            proxy_set_header X-Keyward-Scopes $keyward_scopes;
            proxy_pass http://orders;
        }
        location = /_keyward/billing {
            internal;
            proxy_pass http://keyward/v1/auth?scope=orders.read;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Keyward-App billing-worker;
            proxy_buffer_size 16k;
            proxy_buffers 4 16k;
        }

        # One internal location per set of required scopes. The client's own X-Keyward-App
        # header, if any, goes with the subrequest (NGINX passes the request's headers).
        location = /_keyward/orders.read {
            internal;
            proxy_pass http://keyward/v1/auth?scope=orders.read;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            # Overwrite with the address NGINX saw.
            proxy_set_header X-Forwarded-For $remote_addr;
            # Room for the answer's headers: a key's scopes fill up to 8.3 KB of one header.
            proxy_buffer_size 16k;
            proxy_buffers 4 16k;
        }
        location = /_keyward/orders.write {
            internal;
            proxy_pass http://keyward/v1/auth?scope=orders.write;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_buffer_size 16k;
            proxy_buffers 4 16k;
        }
        location = /_keyward/appended/orders.read {
            internal;
            proxy_pass http://keyward/v1/auth?scope=orders.read;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            # Append: what the client sent, then the address NGINX saw. The verifier believes
            # the rightmost entry that is not a trusted proxy.
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffer_size 16k;
            proxy_buffers 4 16k;
        }
    }

    # An edge proxy in front of the one above: a second trusted hop, connecting from 127.0.0.4.
    server {
        listen @EDGE@;
        location / {
            proxy_pass http://@PROXY@;
            proxy_bind 127.0.0.4;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
    }
}
"#;

/// The NGINX binary, or a failure that says how to get one.
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("nginx")).collect::<Vec<_>>())
        .unwrap_or_default();
    [PathBuf::from("/usr/sbin/nginx")].into_iter().chain(on_path).find(|candidate| candidate.is_file()).unwrap_or_else(
        || {
            panic!(
                "these tests need NGINX and found none (/usr/sbin/nginx, PATH): install it with \
                 `apt-get install nginx` (`make test` and `scripts/control-plane.sh install` do)"
            )
        },
    )
}

/// Three distinct free loopback addresses, found by binding port 0 and letting go of them.
fn free_addrs() -> (String, String, String) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let (a, b, c) = (bind(), bind(), bind());
    let addr = |l: &std::net::TcpListener| l.local_addr().expect("its address").to_string();
    (addr(&a), addr(&b), addr(&c))
}

/// NGINX in front of the verifier at `verifier`, as a child process killed when dropped.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    /// Where clients connect.
    addr: String,
    /// The edge proxy in front of it (a second trusted hop).
    edge: String,
}

impl Nginx {
    async fn start(verifier: &str) -> Self {
        let binary = nginx_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let (proxy, upstream, edge) = free_addrs();
        let conf = NGINX_CONF
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@VERIFIER@", verifier)
            .replace("@PROXY@", &proxy)
            .replace("@UPSTREAM@", &upstream)
            .replace("@EDGE@", &edge);
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let output = std::fs::File::create(dir.path().join("output.log")).expect("create output.log");
        let child = Command::new(&binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            // The log for messages before the configuration is read (else /var/log/nginx).
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("output handle"))
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut nginx = Nginx { child, dir, addr: proxy.clone(), edge: edge.clone() };
        nginx.wait_listening(&[&proxy, &upstream, &edge]).await;
        nginx
    }

    /// Waits until NGINX accepts connections on every address, or fails at the deadline or when
    /// it exits, showing its logs.
    async fn wait_listening(&mut self, addrs: &[&str]) {
        let child = std::cell::RefCell::new(&mut self.child);
        let logs = || {
            let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            format!("--- output ---\n{}--- error.log ---\n{}", read("output.log"), read("error.log"))
        };
        for addr in addrs {
            wait_for(format!("nginx listening on {addr}"), DEADLINE, || async {
                if let Ok(Some(status)) = child.borrow_mut().try_wait() {
                    panic!("nginx exited ({status}) before listening on {addr}:\n{}", logs());
                }
                tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("{e}\n{}", logs()))
            })
            .await;
        }
    }

    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("--- output ---\n{}--- error.log ---\n{}", read("output.log"), read("error.log"))
    }

    /// `GET path` through NGINX with extra header lines.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http(&self.addr, request(path, headers).as_bytes()).await
    }

    /// `GET path` through NGINX from the loopback address `source`; returns status and body.
    async fn get_from(&self, source: Ipv4Addr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        self.get_via(&self.addr, source, path, headers).await
    }

    /// `GET path` through the edge proxy and then NGINX, from the loopback address `source`.
    async fn get_via_edge(&self, source: Ipv4Addr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        self.get_via(&self.edge, source, path, headers).await
    }

    async fn get_via(&self, addr: &str, source: Ipv4Addr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap_or_else(|e| panic!("bind {source}: {e}"));
        let mut stream = socket.connect(addr.parse().expect("address")).await.expect("connect to nginx");
        let mut text = request(path, headers);
        text.insert_str(text.find("\r\n").expect("request line") + 2, "Connection: close\r\n");
        stream.write_all(text.as_bytes()).await.expect("send the request");
        let mut answer = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
            .await
            .expect("an answer in time")
            .expect("read the answer");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
        (status, body)
    }
}

fn request(path: &str, headers: &[(&str, &str)]) -> String {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// A namespace with a controller, the named keys Active, a verifier trusting NGINX (127.0.0.1)
/// and the edge proxy (127.0.0.4), and NGINX in front of it. Returns the tokens and key IDs in
/// the order given.
async fn setup(test: &str, keys: &[(&str, serde_json::Value)]) -> (TestNamespace, Vec<(String, String)>, Proxy) {
    nginx_binary(); // Fail at once, not after the set-up, when NGINX is missing.
    let ns = TestNamespace::new(test).await;
    let controller = ns.controller(&[]);
    for (name, spec) in keys {
        ns.create_key(name, spec.clone()).await;
    }
    let mut issued = Vec::new();
    for (name, spec) in keys {
        let phase = if spec["state"] == "Inactive" { Phase::Inactive } else { Phase::Active };
        let key = ns.wait_phase(name, phase).await;
        let key_id = key.status.and_then(|s| s.record.key_id).expect("a key ID");
        issued.push((ns.token_of(&format!("{name}-apikey")).await, key_id));
    }
    // Started after the keys exist: its initial list holds them once it is ready.
    let verifier = ns
        .verifier(&[
            "--trusted-proxies",
            "127.0.0.1/32,127.0.0.4/32",
            "--usage-flush-interval",
            "1s",
            "--usage-resolution",
            "1s",
        ])
        .await;
    let nginx = Nginx::start(&verifier.listen_addr().await).await;
    (ns, issued, Proxy { nginx, _verifier: verifier, _controller: controller })
}

struct Proxy {
    nginx: Nginx,
    _verifier: support::Operator,
    _controller: support::Operator,
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn nginx_answers_401_with_www_authenticate_without_a_good_token() {
    let (_ns, issued, proxy) = setup(
        "proxy-unauthenticated",
        &[
            ("reader", json!({"scopes": ["orders.read"]})),
            ("paused", json!({"scopes": ["orders.read"], "state": "Inactive"})),
        ],
    )
    .await;
    let nginx = &proxy.nginx;
    let paused = &issued[1].0;
    let unknown = keyward::token::Token::generate("kw").expose().to_string();
    let control = nginx.get("/orders/42", &[("Authorization", &bearer(&issued[0].0))]).await;
    assert_eq!(control.status, 200, "the reader's token passes: {control:?}\n{}", nginx.logs());
    for (what, headers) in [
        ("no token", vec![]),
        ("an unknown token", vec![("Authorization", bearer(&unknown))]),
        ("a malformed token", vec![("X-Api-Key", "not-a-token".to_string())]),
        ("an inactive key", vec![("Authorization", bearer(paused))]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = nginx.get("/orders/42", &headers).await;
        assert_eq!(response.status, 401, "{what}: {response:?}\n{}", nginx.logs());
        assert_eq!(response.header("www-authenticate"), Some("Bearer"), "{what}: the challenge reaches the client");
        assert!(!response.body.contains("key="), "{what}: the upstream was reached: {:?}", response.body);
    }
}

#[tokio::test]
async fn nginx_passes_a_good_token_and_hands_the_upstream_the_key() {
    let (ns, issued, proxy) = setup("proxy-good-token", &[("reader", json!({"scopes": ["orders.read"]}))]).await;
    let (token, key_id) = &issued[0];
    let expected = format!("key={}/reader id={key_id} scopes=orders.read\n", ns.name);
    for (what, header) in [("Authorization", bearer(token)), ("X-Api-Key", token.clone()), ("ApiKey", token.clone())] {
        let response = proxy.nginx.get("/orders/42", &[(what, &header)]).await;
        assert_eq!(response.status, 200, "{what}: {response:?}\n{}", proxy.nginx.logs());
        assert_eq!(response.body, expected, "{what}: what the upstream was handed");
    }
    // The identity headers are set by NGINX from the verifier's answer, never the client's.
    let forged = [
        ("Authorization", bearer(token)),
        ("X-Keyward-Key", "kube-system/admin".to_string()),
        ("X-Keyward-Scopes", "*".to_string()),
    ];
    let forged: Vec<(&str, &str)> = forged.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let response = proxy.nginx.get("/orders/42", &forged).await;
    assert_eq!((response.status, response.body.as_str()), (200, expected.as_str()), "forged identity headers");
}

#[tokio::test]
async fn nginx_answers_403_when_the_key_lacks_the_locations_scope() {
    let (ns, issued, proxy) = setup(
        "proxy-scope",
        &[("reader", json!({"scopes": ["orders.read"]})), ("writer", json!({"scopes": ["orders.write"]}))],
    )
    .await;
    let (reader, writer) = (bearer(&issued[0].0), bearer(&issued[1].0));
    let refused = proxy.nginx.get("/refunds/7", &[("Authorization", &reader)]).await;
    assert_eq!(refused.status, 403, "orders.read on an orders.write location: {refused:?}");
    assert!(!refused.body.contains("key="), "the upstream was reached: {:?}", refused.body);
    assert_eq!(refused.header("www-authenticate"), None, "a 403 is no challenge");
    let allowed = proxy.nginx.get("/refunds/7", &[("Authorization", &writer)]).await;
    assert_eq!(allowed.status, 200, "orders.write on the orders.write location: {allowed:?}");
    assert_eq!(allowed.body, format!("key={}/writer id={} scopes=orders.write\n", ns.name, issued[1].1));
    let wrong_way = proxy.nginx.get("/orders/7", &[("Authorization", &writer)]).await;
    assert_eq!(wrong_way.status, 403, "orders.write on an orders.read location: {wrong_way:?}");
}

/// NGINX overwrites X-Forwarded-For with the address the client connected from; the verifier,
/// trusting NGINX's 127.0.0.1, judges the key's allowedCIDRs by that address. Clients connect
/// from 127.0.0.1 and 127.0.0.2 (both loopback).
#[tokio::test]
async fn nginx_forwards_the_client_address_for_the_allow_list_and_ignores_a_forged_one() {
    let (ns, issued, proxy) =
        setup("proxy-allowlist", &[("pinned", json!({"scopes": ["orders.read"], "allowedCIDRs": ["127.0.0.2/32"]}))])
            .await;
    let token = bearer(&issued[0].0);
    let (allowed, other) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::LOCALHOST);

    let (status, body) = proxy.nginx.get_from(allowed, "/orders/1", &[("Authorization", &token)]).await;
    assert_eq!(status, 200, "from the allowed address: {body}\n{}", proxy.nginx.logs());
    assert_eq!(body, format!("key={}/pinned id={} scopes=orders.read\n", ns.name, issued[0].1));

    let (status, body) = proxy.nginx.get_from(other, "/orders/1", &[("Authorization", &token)]).await;
    assert_eq!(status, 403, "from another address: {body}");

    // A client naming the allowed address itself gets nowhere: NGINX replaces the header.
    for forged in ["127.0.0.2", "127.0.0.2, 127.0.0.1"] {
        let headers = [("Authorization", token.as_str()), ("X-Forwarded-For", forged)];
        let (status, body) = proxy.nginx.get_from(other, "/orders/1", &headers).await;
        assert_eq!(status, 403, "X-Forwarded-For: {forged} from {other}: {body}");
    }
}

/// The common NGINX setting appends the address it saw to the client's own X-Forwarded-For: the
/// leftmost entries are the client's to choose, so the verifier believes the rightmost entry that
/// is not a trusted proxy. Clients connect from 127.0.0.2 (allowed) and 127.0.0.3 (not).
#[tokio::test]
async fn behind_an_appending_proxy_a_client_cannot_choose_its_address() {
    let (_ns, issued, proxy) =
        setup("proxy-appended", &[("pinned", json!({"scopes": ["orders.read"], "allowedCIDRs": ["127.0.0.2/32"]}))])
            .await;
    let token = bearer(&issued[0].0);
    let (allowed, other) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    for forged in [None, Some("127.0.0.2"), Some("10.9.9.9, 127.0.0.2"), Some("garbage")] {
        let mut headers = vec![("Authorization", token.as_str())];
        headers.extend(forged.map(|f| ("X-Forwarded-For", f)));
        let (status, body) = proxy.nginx.get_from(other, "/appended/orders/1", &headers).await;
        assert_eq!(status, 403, "from {other} sending X-Forwarded-For {forged:?}: {body}\n{}", proxy.nginx.logs());
        let (status, body) = proxy.nginx.get_from(allowed, "/appended/orders/1", &headers).await;
        assert_eq!(status, 200, "from {allowed} sending X-Forwarded-For {forged:?}: {body}\n{}", proxy.nginx.logs());
    }
}

/// Two trusted hops (an edge proxy at 127.0.0.4, then NGINX at 127.0.0.1), both appending: the
/// verifier walks past both from the right to the client's address, and no further.
#[tokio::test]
async fn behind_two_trusted_hops_the_client_address_is_the_first_untrusted_one_from_the_right() {
    let (_ns, issued, proxy) =
        setup("proxy-two-hops", &[("pinned", json!({"scopes": ["orders.read"], "allowedCIDRs": ["127.0.0.2/32"]}))])
            .await;
    let token = bearer(&issued[0].0);
    let (allowed, other) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    for forged in [None, Some("127.0.0.2"), Some("127.0.0.2, 127.0.0.4")] {
        let mut headers = vec![("Authorization", token.as_str())];
        headers.extend(forged.map(|f| ("X-Forwarded-For", f)));
        let (status, body) = proxy.nginx.get_via_edge(other, "/appended/orders/1", &headers).await;
        assert_eq!(
            status,
            403,
            "from {other} via the edge, X-Forwarded-For {forged:?}: {body}\n{}",
            proxy.nginx.logs()
        );
        let (status, body) = proxy.nginx.get_via_edge(allowed, "/appended/orders/1", &headers).await;
        assert_eq!(
            status,
            200,
            "from {allowed} via the edge, X-Forwarded-For {forged:?}: {body}\n{}",
            proxy.nginx.logs()
        );
    }
    // The overwriting location sees only the edge's address (a trusted proxy, so the last
    // resort) and refuses: that setting is for a single proxy in front of the verifier.
    let (status, _) = proxy.nginx.get_via_edge(allowed, "/orders/1", &[("Authorization", &token)]).await;
    assert_eq!(status, 403, "behind two hops the overwriting setting loses the client's address");
}

/// The largest key the schema and validation allow (64 scopes of 128 characters) passes NGINX
/// with the recipe's buffer sizes, and the upstream is handed every scope.
#[tokio::test]
async fn the_largest_allowed_key_passes_nginx_with_all_its_scopes() {
    let scopes: Vec<String> = (0..keyward::api::MAX_KEY_SCOPES - 1)
        .map(|i| format!("s{i:0>w$}", w = keyward::api::MAX_SCOPE_LENGTH - 1))
        .collect();
    let mut all = vec!["orders.read".to_string()];
    all.extend(scopes);
    assert!(all.iter().all(|s| s.len() <= keyward::api::MAX_SCOPE_LENGTH));
    let (ns, issued, proxy) = setup("proxy-largest", &[("largest", json!({ "scopes": all }))]).await;
    let (token, key_id) = &issued[0];
    let response = proxy.nginx.get("/orders/1", &[("Authorization", &bearer(token))]).await;
    assert_eq!(response.status, 200, "{}\n{}", &response.body[..response.body.len().min(300)], proxy.nginx.logs());
    assert_eq!(response.body, format!("key={}/largest id={key_id} scopes={}\n", ns.name, all.join(",")));
}

/// One scope more than allowed is refused by the API server's schema, before any token exists.
#[tokio::test]
async fn a_key_with_too_many_or_too_long_scopes_is_refused_by_the_schema() {
    let ns = TestNamespace::new("proxy-too-large").await;
    for (what, scopes) in [
        ("65 scopes", vec!["a".to_string(); keyward::api::MAX_KEY_SCOPES + 1]),
        ("a scope of 129 characters", vec!["a".repeat(keyward::api::MAX_SCOPE_LENGTH + 1)]),
    ] {
        let key = support::key("too-large", json!({ "scopes": scopes }));
        let refused = ns.keys().create(&Default::default(), &key).await.expect_err(what);
        let kube::Error::Api(status) = refused else { panic!("{what}: {refused}") };
        assert_eq!(status.code, 422, "{what}: {status:?}");
        assert!(status.message.contains("spec.scopes"), "{what}: {}", status.message);
    }
}

#[tokio::test]
async fn nginx_names_the_application_per_location_or_passes_the_clients() {
    let spec =
        json!({"scopes": ["orders.read"], "applications": {"default": "Pending", "allowed": ["billing-worker"]}});
    let (ns, issued, proxy) = setup("proxy-apps", &[("approved", spec)]).await;
    let nginx = &proxy.nginx;
    let auth = bearer(&issued[0].0);

    let billing = nginx.get("/billing/1", &[("Authorization", &auth)]).await;
    assert_eq!(billing.status, 200, "the location names billing-worker: {billing:?}\n{}", nginx.logs());
    assert!(billing.body.contains(&format!("key={}/approved", ns.name)), "{:?}", billing.body);
    let claimed = nginx.get("/billing/1", &[("Authorization", &auth), ("X-Keyward-App", "report")]).await;
    assert_eq!(claimed.status, 200, "the location's name replaces the client's: {claimed:?}");

    for (what, headers) in [
        ("an unknown application", vec![("Authorization", auth.as_str()), ("X-Keyward-App", "report")]),
        ("no application", vec![("Authorization", auth.as_str())]),
    ] {
        let pending = nginx.get("/orders/1", &headers).await;
        assert_eq!(pending.status, 401, "{what}: {pending:?}\n{}", nginx.logs());
        assert_eq!(pending.header("www-authenticate"), Some("Bearer"), "{what}");
        assert!(!pending.body.contains("key="), "{what}: the upstream was reached");
    }
    let named = nginx.get("/orders/1", &[("Authorization", &auth), ("X-Keyward-App", "billing-worker")]).await;
    assert_eq!(named.status, 200, "the client's header passed through: {named:?}");

    let usages: kube::Api<keyward::api::KeyUsage> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    let seen = |u: Option<&keyward::api::KeyUsage>, app: &str, state: keyward::api::AppState| {
        u.and_then(|u| u.status.as_ref())
            .is_some_and(|s| s.applications.iter().any(|a| a.name == app && a.state == state))
    };
    support::wait::wait_object(
        &usages,
        "apikey.approved",
        "report Pending and billing-worker Allowed",
        |u| {
            seen(u, "report", keyward::api::AppState::Pending)
                && seen(u, "billing-worker", keyward::api::AppState::Allowed)
        },
        |u| format!("{u:?}"),
    )
    .await;
}
