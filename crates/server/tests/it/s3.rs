//! The content store on a real S3 API (`moto_server` in CI, see `.ci/run`): a bucket of its own,
//! blobs under a prefix, a single-request and a multipart upload, a hash mismatch that leaves no
//! object, ranged downloads, deletes.
//!
//! `DUHUB_TEST_S3_ENDPOINT` names the server (`http://127.0.0.1:PORT`); credentials and region
//! come from the usual `AWS_*` variables (moto accepts any; `test` and `us-east-1` when unset).
//! Without an endpoint the test prints `skipped: no S3 endpoint` and passes, unless
//! `DUHUB_REQUIRE_S3=1`. The bucket is created with an unsigned request, which moto accepts.

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use duhub_server::du::content::{ContentError, ContentStore, Expected};

/// The S3 endpoint to test against, or `None` (after printing why) when there is none.
fn s3_endpoint() -> Option<String> {
    match std::env::var("DUHUB_TEST_S3_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint.trim_end_matches('/').to_owned()),
        _ => {
            let required = std::env::var("DUHUB_REQUIRE_S3").is_ok_and(|v| v == "1");
            assert!(!required, "DUHUB_REQUIRE_S3=1 but DUHUB_TEST_S3_ENDPOINT is not set");
            eprintln!("skipped: no S3 endpoint (set DUHUB_TEST_S3_ENDPOINT)");
            None
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    digest
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The keys in `bucket`, from an unsigned ListObjectsV2 (moto accepts it).
async fn keys(http: &reqwest::Client, endpoint: &str, bucket: &str) -> Vec<String> {
    let response = http.get(format!("{endpoint}/{bucket}?list-type=2")).send().await.unwrap();
    assert!(response.status().is_success(), "listing {bucket}: {}", response.status());
    let xml = response.text().await.unwrap();
    let mut keys: Vec<String> = xml
        .split("<Key>")
        .skip(1)
        .map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()).unwrap_or_default())
        .collect();
    keys.sort();
    keys
}

async fn get(store: &ContentStore, id: &str, method: Method, headers: &[(header::HeaderName, &str)]) -> Downloaded {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(name, HeaderValue::from_str(value).unwrap());
    }
    let response = duhub_server::rest::du::serve_blob(store, id, "fw.swu", &method, &map).await;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    Downloaded { status: parts.status, headers: parts.headers, body: body.to_vec() }
}

struct Downloaded {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Downloaded {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_content_store_keeps_blobs_in_s3() {
    let Some(endpoint) = s3_endpoint() else { return };
    duhub_testkit::install_crypto_provider();
    let http = reqwest::Client::new();
    let mut random = [0u8; 6];
    duhub_server::ids::fill_random(&mut random);
    let bucket = format!("duhub-test-{}", hex(&random));
    let created = http.put(format!("{endpoint}/{bucket}")).send().await.unwrap();
    assert!(created.status().is_success(), "creating bucket {bucket}: {}", created.status());

    let env_or = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let (access_key, secret_key, region) = (
        env_or("AWS_ACCESS_KEY_ID", "test"),
        env_or("AWS_SECRET_ACCESS_KEY", "test"),
        env_or("AWS_DEFAULT_REGION", "us-east-1"),
    );
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", access_key.as_str()),
        ("aws_secret_access_key", secret_key.as_str()),
        ("aws_region", region.as_str()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open_url(&format!("s3://{bucket}/fleet/updates"), dir.path(), &options).unwrap();
    let staging_is_empty = || std::fs::read_dir(dir.path().join("staging")).unwrap().next().is_none();

    // A small file: one PUT.
    let small = b"{\"updateId\": \"contoso.toaster.1.0\"}".to_vec();
    let expected = Expected { size: small.len() as u64, sha256: sha256(&small) };
    let small_blob = store.put_reader(&small[..], Some(expected), u64::MAX).await.unwrap();
    let small_id = small_blob.id();
    assert_eq!(small_id, hex(&expected.sha256));
    assert!(store.contains(&small_id).await.unwrap());
    assert_eq!(store.size(&small_id).await.unwrap(), small.len() as u64);
    assert_eq!(store.read(&small_id, 1024).await.unwrap(), small);
    assert!(matches!(store.read(&small_id, 3).await, Err(ContentError::TooLarge { limit: 3 })));
    assert!(staging_is_empty());

    // A wrong hash: an error, and no object.
    let wrong = Expected { size: 5, sha256: sha256(b"HELLO") };
    let error = store.put_reader(&b"hello"[..], Some(wrong), u64::MAX).await.unwrap_err();
    assert!(matches!(error, ContentError::HashMismatch { .. }), "{error:?}");
    assert!(!store.contains(&hex(&sha256(b"hello"))).await.unwrap());
    assert!(!store.contains(&hex(&wrong.sha256)).await.unwrap());
    assert!(staging_is_empty());
    assert_eq!(keys(&http, &endpoint, &bucket).await, vec![format!("fleet/updates/blobs/{small_id}")]);

    // A file of more than one part: a multipart upload.
    let large: Vec<u8> = (0..9 * 1024 * 1024 + 123).map(|index: usize| (index % 251) as u8).collect();
    let expected = Expected { size: large.len() as u64, sha256: sha256(&large) };
    let large_id = store.put_reader(&large[..], Some(expected), u64::MAX).await.unwrap().id();
    assert_eq!(store.size(&large_id).await.unwrap(), large.len() as u64);
    assert!(staging_is_empty());
    let mut expected_keys = vec![format!("fleet/updates/blobs/{small_id}"), format!("fleet/updates/blobs/{large_id}")];
    expected_keys.sort();
    assert_eq!(keys(&http, &endpoint, &bucket).await, expected_keys);
    // The same content again is not uploaded twice.
    assert_eq!(store.put_reader(&large[..], None, u64::MAX).await.unwrap().id(), large_id);

    // Downloads: whole, a range across the part boundary, HEAD, If-None-Match.
    let full = get(&store, &large_id, Method::GET, &[]).await;
    assert_eq!(full.status, StatusCode::OK);
    assert_eq!(full.body.len(), large.len());
    assert!(full.body == large, "the downloaded blob differs");
    assert_eq!(full.header(header::ETAG), Some(format!("\"{large_id}\"").as_str()));
    let (first, last) = (8 * 1024 * 1024 - 10, 8 * 1024 * 1024 + 9);
    let part = get(&store, &large_id, Method::GET, &[(header::RANGE, &format!("bytes={first}-{last}"))]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, large[first..=last]);
    assert_eq!(part.header(header::CONTENT_LENGTH), Some("20"));
    assert_eq!(part.header(header::CONTENT_RANGE), Some(format!("bytes {first}-{last}/{}", large.len()).as_str()));
    let suffix = get(&store, &small_id, Method::GET, &[(header::RANGE, "bytes=-4")]).await;
    assert_eq!(suffix.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(suffix.body, small[small.len() - 4..]);
    let head = get(&store, &large_id, Method::HEAD, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header(header::CONTENT_LENGTH), Some(large.len().to_string().as_str()));
    let cached = get(&store, &large_id, Method::GET, &[(header::IF_NONE_MATCH, &format!("\"{large_id}\""))]).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    let unsatisfiable = get(&store, &small_id, Method::GET, &[(header::RANGE, "bytes=5000-")]).await;
    assert_eq!(unsatisfiable.status, StatusCode::RANGE_NOT_SATISFIABLE);

    // Deletes.
    store.delete(&large_id).await.unwrap();
    store.delete(&small_id).await.unwrap();
    store.delete(&small_id).await.unwrap();
    assert!(!store.contains(&large_id).await.unwrap());
    assert!(matches!(store.size(&small_id).await, Err(ContentError::NotFound(_))));
    assert_eq!(get(&store, &large_id, Method::GET, &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(keys(&http, &endpoint, &bucket).await, Vec::<String>::new());
}
