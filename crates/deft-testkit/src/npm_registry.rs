//! An npm registry stand-in on loopback, so that tests can run the real `npm` against packages
//! they define, with no request leaving the machine. It speaks the registry's public read
//! protocol, written from its documentation (`fixtures/npm-registry/README.md` lists the fields
//! and why): `GET /NAME` answers the package metadata document (the "packument"), full or, when
//! the client asks for `application/vnd.npm.install-v1+json`, abbreviated; scoped names arrive
//! as `/@scope%2fname`. Tarballs are built here, a gzip'd tar of `package/package.json` and
//! `package/index.js`, with the `shasum` (SHA-1) and `integrity` (SHA-512) the document
//! promises, and every download is counted, so that a test can tell a cached install from one
//! that fetched.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};
use sha1::Digest as _;

/// The media type of the abbreviated metadata document.
pub const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";

/// The time every document and tarball entry carries: npm's own fixed date for reproducible
/// tarballs (`npm pack` writes it too), so that a package's bytes never change between runs.
const FIXED_TIME: &str = "1985-10-26T08:15:00.000Z";
const FIXED_MTIME: u64 = 499_162_500;

/// One version of a package the stand-in serves.
#[derive(Debug, Clone)]
pub struct Package {
    /// `name` or `@scope/name`.
    pub name: String,
    pub version: String,
    /// The whole of its `index.js`, its `main`.
    pub index_js: String,
    /// Its `dependencies`: name and semver range.
    pub dependencies: BTreeMap<String, String>,
}

impl Package {
    /// A package without dependencies whose `index.js` exports `"NAME@VERSION"`.
    pub fn new(name: &str, version: &str) -> Package {
        Package {
            name: name.to_owned(),
            version: version.to_owned(),
            index_js: format!("module.exports = {:?};\n", format!("{name}@{version}")),
            dependencies: BTreeMap::new(),
        }
    }

    /// The same package, depending on `name` at `range`.
    pub fn depends_on(mut self, name: &str, range: &str) -> Package {
        self.dependencies.insert(name.to_owned(), range.to_owned());
        self
    }

    /// Its `package.json`, as it is inside the tarball and in the metadata's version object.
    fn manifest(&self) -> Value {
        json!({
            "name": self.name,
            "version": self.version,
            "main": "index.js",
            "license": "MIT",
            "dependencies": self.dependencies,
        })
    }
}

/// A version as served: the package, its tarball and that tarball's checksums.
struct Published {
    package: Package,
    tarball: Vec<u8>,
    /// The tarball's file name, `NAME-VERSION.tgz` with the scope left out, as the registry
    /// names them.
    file: String,
    shasum: String,
    integrity: String,
}

struct Registry {
    url: String,
    /// By name, versions in the order given; the last one is `latest`.
    packages: BTreeMap<String, Vec<Published>>,
    tarball_downloads: AtomicUsize,
    /// `METHOD PATH` of every request, in order.
    requests: Mutex<Vec<String>>,
}

/// A running stand-in; stops when dropped.
pub struct NpmRegistry {
    registry: Arc<Registry>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for NpmRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpmRegistry")
            .field("url", &self.registry.url)
            .finish_non_exhaustive()
    }
}

impl Drop for NpmRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NpmRegistry {
    /// Serves `packages` on a loopback port of its own.
    pub async fn start(packages: Vec<Package>) -> NpmRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        let mut published: BTreeMap<String, Vec<Published>> = BTreeMap::new();
        for package in packages {
            published
                .entry(package.name.clone())
                .or_default()
                .push(publish(package));
        }
        let registry = Arc::new(Registry {
            url,
            packages: published,
            tarball_downloads: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/{*path}", get(answer))
            .fallback(not_found)
            .with_state(registry.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        NpmRegistry { registry, task }
    }

    /// The registry's URL, for `--registry`.
    pub fn url(&self) -> &str {
        &self.registry.url
    }

    /// How many tarballs have been downloaded so far.
    pub fn tarball_downloads(&self) -> usize {
        self.registry.tarball_downloads.load(Ordering::SeqCst)
    }

    /// `METHOD PATH` of every request so far, the path as the client sent it.
    pub fn requests(&self) -> Vec<String> {
        self.registry
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn publish(package: Package) -> Published {
    let tarball = tarball(&package);
    let base = package.name.rsplit('/').next().unwrap_or(&package.name);
    let file = format!("{base}-{}.tgz", package.version);
    let shasum = sha1::Sha1::digest(&tarball)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let integrity = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&tarball))
    );
    Published {
        package,
        tarball,
        file,
        shasum,
        integrity,
    }
}

/// `package/package.json` and `package/index.js`, tarred and gzip'd as `npm pack` lays them out.
fn tarball(package: &Package) -> Vec<u8> {
    let manifest = serde_json::to_vec_pretty(&package.manifest()).expect("JSON of plain values");
    let gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gzip);
    for (path, bytes) in [
        ("package/package.json", manifest.as_slice()),
        ("package/index.js", package.index_js.as_bytes()),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(FIXED_MTIME);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, bytes)
            .expect("writing to memory");
    }
    tar.into_inner()
        .and_then(|gzip| gzip.finish())
        .expect("writing to memory")
}

async fn answer(
    State(registry): State<Arc<Registry>>,
    Path(path): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    registry
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("GET {}", uri.path()));
    // `path` is percent-decoded: `/@scope%2fname` arrives as `@scope/name`.
    if let Some((name, file)) = path.rsplit_once("/-/") {
        return serve_tarball(&registry, name, file);
    }
    let Some(versions) = registry.packages.get(&path) else {
        return not_found().await;
    };
    let abbreviated = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains(ABBREVIATED));
    let document = packument(&registry.url, &path, versions, abbreviated);
    let content_type = if abbreviated {
        ABBREVIATED
    } else {
        "application/json"
    };
    ([(header::CONTENT_TYPE, content_type)], document.to_string()).into_response()
}

fn serve_tarball(registry: &Registry, name: &str, file: &str) -> Response {
    let Some(published) = registry
        .packages
        .get(name)
        .and_then(|versions| versions.iter().find(|p| p.file == file))
    else {
        return (StatusCode::NOT_FOUND, "no such tarball").into_response();
    };
    registry.tarball_downloads.fetch_add(1, Ordering::SeqCst);
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(published.tarball.clone()),
    )
        .into_response()
}

/// The package metadata document of `name`: the full form, or the abbreviated one that
/// carries only what installing needs.
fn packument(url: &str, name: &str, versions: &[Published], abbreviated: bool) -> Value {
    let latest = versions
        .last()
        .map(|p| p.package.version.clone())
        .unwrap_or_default();
    let mut by_version = serde_json::Map::new();
    let mut time = serde_json::Map::new();
    time.insert("created".into(), FIXED_TIME.into());
    time.insert("modified".into(), FIXED_TIME.into());
    for published in versions {
        let package = &published.package;
        let dist = json!({
            "tarball": format!("{url}/{}/-/{}", package.name, published.file),
            "shasum": published.shasum,
            "integrity": published.integrity,
        });
        // The abbreviated form's fields; the full form adds the manifest's and an `_id`.
        let mut version = json!({
            "name": package.name,
            "version": package.version,
            "dependencies": package.dependencies,
            "directories": {},
            "_hasShrinkwrap": false,
            "dist": dist,
        });
        if !abbreviated {
            let mut full = package.manifest();
            let object = full.as_object_mut().expect("a manifest is an object");
            object.insert(
                "_id".into(),
                format!("{}@{}", package.name, package.version).into(),
            );
            for (key, value) in version.as_object_mut().expect("built as an object") {
                object.entry(key.clone()).or_insert(value.take());
            }
            version = full;
        }
        by_version.insert(package.version.clone(), version);
        time.insert(package.version.clone(), FIXED_TIME.into());
    }
    if abbreviated {
        return json!({
            "name": name,
            "modified": FIXED_TIME,
            "dist-tags": { "latest": latest },
            "versions": by_version,
        });
    }
    json!({
        "_id": name,
        "name": name,
        "dist-tags": { "latest": latest },
        "time": time,
        "versions": by_version,
        "license": "MIT",
    })
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": "Not found" }).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Read as _;
    use std::path::Path as FsPath;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A plain HTTP/1.1 GET over a socket: status, headers (lowercased names) and body.
    async fn get(
        url: &str,
        path: &str,
        accept: Option<&str>,
    ) -> (u16, HashMap<String, String>, Vec<u8>) {
        let address = url.strip_prefix("http://").expect("an http URL");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{accept}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a header block");
        let head = String::from_utf8(response[..split].to_vec()).unwrap();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, response[split + 4..].to_vec())
    }

    fn json_body(body: &[u8]) -> Value {
        serde_json::from_slice(body).expect("a JSON body")
    }

    #[tokio::test]
    async fn the_packument_has_the_documented_shape() {
        let registry = NpmRegistry::start(vec![
            Package::new("tiny", "1.0.0"),
            Package::new("tiny", "1.1.0").depends_on("other", "^2.0.0"),
        ])
        .await;
        let (status, headers, body) = get(registry.url(), "/tiny", None).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/json");
        let document = json_body(&body);
        assert_eq!(document["_id"], "tiny");
        assert_eq!(document["name"], "tiny");
        assert_eq!(document["dist-tags"]["latest"], "1.1.0");
        assert_eq!(document["time"]["1.0.0"], FIXED_TIME);
        let version = &document["versions"]["1.1.0"];
        assert_eq!(version["_id"], "tiny@1.1.0");
        assert_eq!(version["name"], "tiny");
        assert_eq!(version["version"], "1.1.0");
        assert_eq!(version["main"], "index.js");
        assert_eq!(version["dependencies"]["other"], "^2.0.0");
        let tarball_url = version["dist"]["tarball"].as_str().unwrap();
        assert_eq!(
            tarball_url,
            format!("{}/tiny/-/tiny-1.1.0.tgz", registry.url())
        );

        // The checksums are those of the bytes served, and the tarball holds what npm unpacks.
        let (status, _, tarball) = get(
            registry.url(),
            tarball_url.strip_prefix(registry.url()).unwrap(),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(registry.tarball_downloads(), 1);
        let shasum: String = sha1::Sha1::digest(&tarball)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(version["dist"]["shasum"], shasum.as_str());
        let integrity = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&tarball))
        );
        assert_eq!(version["dist"]["integrity"], integrity.as_str());
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball.as_slice()));
        let mut entries = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            entries.insert(path, text);
        }
        assert_eq!(
            entries.keys().collect::<Vec<_>>(),
            ["package/index.js", "package/package.json"]
        );
        assert_eq!(
            entries["package/index.js"],
            "module.exports = \"tiny@1.1.0\";\n"
        );
        assert_eq!(
            json_body(entries["package/package.json"].as_bytes())["version"],
            "1.1.0"
        );

        // The abbreviated form: only the installation fields, under its own media type.
        let (status, headers, body) = get(
            registry.url(),
            "/tiny",
            Some("application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], ABBREVIATED);
        let abbreviated = json_body(&body);
        let mut keys: Vec<&str> = abbreviated
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["dist-tags", "modified", "name", "versions"]);
        assert_eq!(abbreviated["versions"]["1.1.0"]["dist"], version["dist"]);
        assert!(abbreviated["versions"]["1.1.0"].get("_id").is_none());

        let (status, _, _) = get(registry.url(), "/missing", None).await;
        assert_eq!(status, 404);
        let (status, _, _) = get(registry.url(), "/tiny/-/tiny-9.9.9.tgz", None).await;
        assert_eq!(status, 404);
        assert_eq!(registry.tarball_downloads(), 1);
    }

    /// Every field of `value`, as a dotted path per level (`versions.*.dist.tarball`), a
    /// version number written `*`.
    fn field_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
        let Some(object) = value.as_object() else {
            return;
        };
        for (key, value) in object {
            let key = if prefix.ends_with("versions") {
                "*"
            } else {
                key
            };
            let path = if prefix.is_empty() {
                key.to_owned()
            } else {
                format!("{prefix}.{key}")
            };
            out.push(path.clone());
            field_paths(value, &path, out);
        }
    }

    #[tokio::test]
    async fn documents_have_every_field_of_the_documented_example() {
        let path = FsPath::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/npm-registry/tiny-tarball.abbreviated.json");
        let example: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let registry = NpmRegistry::start(vec![Package::new("tiny-tarball", "1.0.0")]).await;
        let (_, _, body) = get(registry.url(), "/tiny-tarball", Some(ABBREVIATED)).await;
        let served = json_body(&body);

        let (mut wanted, mut have) = (Vec::new(), Vec::new());
        field_paths(&example, "", &mut wanted);
        field_paths(&served, "", &mut have);
        let missing: Vec<&String> = wanted.iter().filter(|p| !have.contains(p)).collect();
        assert!(missing.is_empty(), "not served: {missing:?}");
        let tarball = example["versions"]["1.0.0"]["dist"]["tarball"]
            .as_str()
            .unwrap()
            .replace("REGISTRY", registry.url());
        assert_eq!(
            served["versions"]["1.0.0"]["dist"]["tarball"],
            tarball.as_str()
        );
        assert_eq!(served["dist-tags"], example["dist-tags"]);

        // The full document's versions hold the abbreviated one's fields too.
        let (_, _, body) = get(registry.url(), "/tiny-tarball", None).await;
        let mut full = Vec::new();
        field_paths(&json_body(&body)["versions"], "versions", &mut full);
        for path in wanted.iter().filter(|p| p.starts_with("versions.")) {
            assert!(full.contains(path), "the full document lacks {path}");
        }
    }

    #[tokio::test]
    async fn scoped_packages_are_served() {
        let registry = NpmRegistry::start(vec![Package::new("@deft/scoped", "0.1.0")]).await;
        for path in ["/@deft%2fscoped", "/@deft%2Fscoped"] {
            let (status, _, body) = get(registry.url(), path, None).await;
            assert_eq!(status, 200, "{path}");
            let document = json_body(&body);
            assert_eq!(document["name"], "@deft/scoped");
            let tarball = document["versions"]["0.1.0"]["dist"]["tarball"]
                .as_str()
                .unwrap();
            assert_eq!(
                tarball,
                format!("{}/@deft/scoped/-/scoped-0.1.0.tgz", registry.url())
            );
        }
        let (status, _, _) = get(registry.url(), "/@deft/scoped/-/scoped-0.1.0.tgz", None).await;
        assert_eq!(status, 200);
        assert_eq!(registry.tarball_downloads(), 1);
    }

    /// Runs the machine's `npm` in `dir` against `registry` only, with `cache` as its cache,
    /// and nothing of the machine's own npm configuration: its home, user and global config
    /// files are empty ones under `home`.
    async fn npm(
        registry: &NpmRegistry,
        home: &FsPath,
        dir: &FsPath,
        cache: &FsPath,
        args: &[&str],
    ) -> String {
        let (user_rc, global_rc) = (home.join("user.npmrc"), home.join("global.npmrc"));
        for rc in [&user_rc, &global_rc] {
            std::fs::write(rc, "").unwrap();
        }
        let mut command = tokio::process::Command::new("npm");
        command
            .args(args)
            .arg("--registry")
            .arg(registry.url())
            .arg("--cache")
            .arg(cache)
            .current_dir(dir)
            .env("HOME", home)
            .env("npm_config_userconfig", &user_rc)
            .env("npm_config_globalconfig", &global_rc)
            .env("npm_config_audit", "false")
            .env("npm_config_fund", "false")
            .env("npm_config_update_notifier", "false")
            .env("npm_config_loglevel", "http")
            .kill_on_drop(true);
        // Loopback needs no proxy, and a proxy would see the requests instead of the stand-in.
        for proxy in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
        ] {
            command.env_remove(proxy);
        }
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .expect("npm finishes within two minutes")
            .expect("npm runs (scripts/test installs it)");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "npm {args:?} failed:\n{log}");
        log
    }

    #[tokio::test]
    async fn npm_installs_from_the_stand_in_and_a_second_install_uses_its_cache() {
        let registry = NpmRegistry::start(vec![
            Package::new("tiny", "1.0.0"),
            Package::new("tiny", "1.2.0").depends_on("@deft/helper", "^0.1.0"),
            Package::new("@deft/helper", "0.1.0"),
        ])
        .await;
        let temp = tempfile::tempdir().unwrap();
        let project = temp.path().join("project");
        let cache = temp.path().join("cache");
        std::fs::create_dir(&project).unwrap();
        std::fs::write(
            project.join("package.json"),
            r#"{ "name": "app", "version": "1.0.0", "private": true, "dependencies": { "tiny": "^1.0.0" } }"#,
        )
        .unwrap();

        npm(&registry, temp.path(), &project, &cache, &["install"]).await;
        let index = std::fs::read_to_string(project.join("node_modules/tiny/index.js")).unwrap();
        assert_eq!(index, "module.exports = \"tiny@1.2.0\";\n");
        assert!(project.join("node_modules/@deft/helper/index.js").is_file());
        let lock: Value =
            serde_json::from_slice(&std::fs::read(project.join("package-lock.json")).unwrap())
                .unwrap();
        assert_eq!(
            lock["packages"]["node_modules/tiny"]["resolved"],
            format!("{}/tiny/-/tiny-1.2.0.tgz", registry.url())
        );
        assert_eq!(registry.tarball_downloads(), 2);
        let first = registry.requests();
        assert!(
            first.iter().all(|r| r.starts_with("GET /")),
            "only reads: {first:?}"
        );

        // `npm ci` removes node_modules and installs from package-lock.json again. The lock
        // has each tarball's integrity, and npm's cache is addressed by integrity: it finds
        // both tarballs there without asking the registry anything.
        npm(&registry, temp.path(), &project, &cache, &["ci"]).await;
        assert!(project.join("node_modules/tiny/index.js").is_file());
        assert_eq!(registry.tarball_downloads(), 2, "{:?}", registry.requests());
        assert_eq!(
            registry.requests(),
            first,
            "the second install asked nothing"
        );

        // Without a lockfile (`npm install --no-package-lock`, deft's install then) npm must
        // resolve again: it asks for the packuments anew (this stand-in sends no caching
        // headers, so its cached copies are revalidated), and the tarballs it picks are again
        // found in the cache by their integrity.
        std::fs::remove_dir_all(project.join("node_modules")).unwrap();
        npm(
            &registry,
            temp.path(),
            &project,
            &cache,
            &["install", "--no-package-lock"],
        )
        .await;
        assert!(project.join("node_modules/tiny/index.js").is_file());
        assert_eq!(registry.tarball_downloads(), 2, "{:?}", registry.requests());
    }
}
