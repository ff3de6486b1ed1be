//! Update file downloads over HTTP (`/duhub/files/<sha256>/<name>`): GET and HEAD of a
//! content-store blob with `ETag`, `If-None-Match`, one-part `Range` and `If-Range`, as
//! download agents (the official agent's curl, ours with resume) use them. The content store
//! only opens blobs and reads byte ranges; every HTTP rule is here.

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::du::content::{ContentError, ContentStore};

/// Serves a stored blob over HTTP as a download.
///
/// Answers GET and HEAD (anything else is 405) with a strong `ETag: "<hex id>"` (`If-None-Match`
/// gives 304), `Accept-Ranges: bytes`, `Content-Type: application/octet-stream`,
/// `Content-Disposition: attachment` with `file_name`, and an exact `Content-Length`. A GET with
/// one `Range` (`bytes=a-b`, `a-` or `-n`) gets 206 with `Content-Range`, or 416 with
/// `Content-Range: bytes */size` when no byte of it exists; a request for several ranges gets the
/// whole body with 200, which RFC 9110 allows. `If-Range` with this blob's ETag honours `Range`;
/// any other `If-Range` (another ETag, a date) gets the whole body. HEAD ignores `Range`, as RFC 9110
/// defines range handling for GET only. The body is streamed from the file. An unknown blob (or an id that cannot name one) is 404.
pub async fn serve_blob(
    store: &ContentStore,
    id: &str,
    file_name: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut response = status_response(StatusCode::METHOD_NOT_ALLOWED);
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let blob = match store.open_blob(id).await {
        Ok(blob) => blob,
        Err(ContentError::NotFound(_)) => return status_response(StatusCode::NOT_FOUND),
        Err(error) => {
            tracing::warn!(blob = id, %error, "opening a blob failed");
            return status_response(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    let size = blob.size();
    let etag = blob.etag();

    if let Some(value) = headers.get(header::IF_NONE_MATCH)
        && if_none_match(value, &etag)
    {
        let mut response = status_response(StatusCode::NOT_MODIFIED);
        set_header(response.headers_mut(), header::ETAG, &etag);
        return response;
    }

    let range_applies = method == Method::GET
        && headers.get(header::IF_RANGE).is_none_or(|value| value.to_str().is_ok_and(|value| value.trim() == etag));
    let range = match headers.get(header::RANGE) {
        Some(value) if range_applies => value.to_str().map_or(ByteRange::Full, |value| parse_range(value, size)),
        _ => ByteRange::Full,
    };

    let (status, start, length) = match range {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Part { first, last } => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
        ByteRange::Unsatisfiable => {
            let mut response = status_response(StatusCode::RANGE_NOT_SATISFIABLE);
            let headers = response.headers_mut();
            set_header(headers, header::CONTENT_RANGE, &format!("bytes */{size}"));
            set_header(headers, header::ETAG, &etag);
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            return response;
        }
    };

    let body = if method == Method::HEAD || length == 0 {
        Body::empty()
    } else {
        match blob.read_range(start, length).await {
            Ok(stream) => Body::from_stream(stream),
            Err(ContentError::NotFound(_)) => return status_response(StatusCode::NOT_FOUND),
            Err(error) => {
                tracing::warn!(blob = id, %error, "reading a blob failed");
                return status_response(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    set_header(headers, header::ETAG, &etag);
    set_header(headers, header::CONTENT_DISPOSITION, &content_disposition(file_name));
    if status == StatusCode::PARTIAL_CONTENT {
        set_header(headers, header::CONTENT_RANGE, &format!("bytes {start}-{}/{size}", start + length - 1));
    }
    response
}

/// What a `Range` header asks for, resolved against the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// No usable range: the whole body.
    Full,
    /// One range, both ends inclusive and within the blob.
    Part { first: u64, last: u64 },
    /// A single range with no byte in the blob.
    Unsatisfiable,
}

/// Parses a `Range` value (RFC 9110 §14.1.2). Anything that is not a valid single byte range
/// (another unit, bad syntax, several ranges) is ignored and the whole body served.
fn parse_range(value: &str, size: u64) -> ByteRange {
    let Some((unit, set)) = value.trim().split_once('=') else {
        return ByteRange::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return ByteRange::Full;
    }
    let mut specs = set.split(',').map(str::trim).filter(|spec| !spec.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return ByteRange::Full;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix: the last `n` bytes.
        let Some(length) = parse_digits(last) else {
            return ByteRange::Full;
        };
        if length == 0 || size == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Part { first: size.saturating_sub(length), last: size - 1 };
    }
    let Some(first) = parse_digits(first) else {
        return ByteRange::Full;
    };
    let last = if last.is_empty() {
        None
    } else {
        match parse_digits(last) {
            Some(last) if last >= first => Some(last),
            _ => return ByteRange::Full,
        }
    };
    if first >= size {
        return ByteRange::Unsatisfiable;
    }
    let last = last.map_or(size - 1, |last| last.min(size - 1));
    ByteRange::Part { first, last }
}

/// Parses a non-empty run of ASCII digits (no sign, unlike `str::parse`).
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether `If-None-Match` matches `etag`, by weak comparison (RFC 9110 §13.1.2).
fn if_none_match(value: &HeaderValue, etag: &str) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    value.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// `attachment; filename="…"` with `"` and `\` escaped and characters a header cannot carry
/// replaced by `_`; a name with non-ASCII characters also gets `filename*` (RFC 6266, RFC 8187).
fn content_disposition(file_name: &str) -> String {
    let mut value = String::from("attachment; filename=\"");
    for character in file_name.chars() {
        match character {
            '"' | '\\' => {
                value.push('\\');
                value.push(character);
            }
            ' '..='~' => value.push(character),
            _ => value.push('_'),
        }
    }
    value.push('"');
    if !file_name.is_ascii() {
        value.push_str("; filename*=UTF-8''");
        for byte in file_name.bytes() {
            if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                value.push(char::from(byte));
            } else {
                value.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    value
}

fn set_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => tracing::error!(header = %name, value, "not a valid header value"),
    }
}

fn status_response(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::du::content::testing::{Fixture, Kind, backends};

    backends! {
        serve_full_get,
        serve_head_has_the_length_but_no_body,
        serve_ranges,
        serve_unsatisfiable_range,
        serve_several_ranges_as_the_whole_body,
        serve_if_none_match,
        serve_if_range,
        serve_unknown_blobs_and_other_methods,
        serve_an_empty_blob,
    }

    #[test]
    fn range_parsing() {
        #[track_caller]
        fn check(value: &str, size: u64, expect: ByteRange) {
            assert_eq!(parse_range(value, size), expect, "{value:?} of {size}");
        }
        use ByteRange::{Full, Part, Unsatisfiable};
        check("bytes=0-0", 10, Part { first: 0, last: 0 });
        check("bytes=2-5", 10, Part { first: 2, last: 5 });
        check("bytes=2-500", 10, Part { first: 2, last: 9 });
        check("bytes=7-", 10, Part { first: 7, last: 9 });
        check("bytes=-3", 10, Part { first: 7, last: 9 });
        check("bytes=-30", 10, Part { first: 0, last: 9 });
        check(" Bytes = 2 - 5 ", 10, Part { first: 2, last: 5 });
        check("bytes=2-5,", 10, Part { first: 2, last: 5 });
        check("bytes=10-", 10, Unsatisfiable);
        check("bytes=10-20", 10, Unsatisfiable);
        check("bytes=-0", 10, Unsatisfiable);
        check("bytes=0-", 0, Unsatisfiable);
        check("bytes=-5", 0, Unsatisfiable);
        check("bytes=0-1,4-5", 10, Full);
        check("bytes=5-2", 10, Full);
        check("bytes=+1-2", 10, Full);
        check("bytes=1-+2", 10, Full);
        check("bytes=a-b", 10, Full);
        check("bytes=-", 10, Full);
        check("bytes=", 10, Full);
        check("items=0-1", 10, Full);
        check("0-1", 10, Full);
        check("bytes=99999999999999999999-", 10, Full);
    }

    #[test]
    fn content_disposition_escapes_the_name() {
        assert_eq!(content_disposition("fw.swu"), "attachment; filename=\"fw.swu\"");
        assert_eq!(content_disposition("a \"b\"\\c"), "attachment; filename=\"a \\\"b\\\"\\\\c\"");
        assert_eq!(content_disposition("x\r\ny"), "attachment; filename=\"x__y\"");
        assert_eq!(content_disposition("é.bin"), "attachment; filename=\"_.bin\"; filename*=UTF-8''%C3%A9.bin");
    }

    const CONTENT_SIZE: usize = 1000;

    async fn served(kind: Kind) -> (Fixture, String, Vec<u8>) {
        let fixture = Fixture::open(kind);
        let content: Vec<u8> = (0..CONTENT_SIZE).map(|index| (index % 251) as u8).collect();
        let blob = fixture.store.put_reader(&content[..], None, u64::MAX).await.unwrap();
        (fixture, blob.id(), content)
    }

    async fn request(
        store: &ContentStore,
        id: &str,
        method: Method,
        headers: &[(HeaderName, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        let response = serve_blob(store, id, "fw \"1\".swu", &method, &map).await;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, body)
    }

    fn header(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
        headers.get(name).map(|value| value.to_str().unwrap())
    }

    async fn serve_full_get(kind: Kind) {
        let (fixture, id, content) = served(kind).await;
        let store = &fixture.store;
        let (status, headers, body) = request(store, &id, Method::GET, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, content);
        assert_eq!(header(&headers, header::CONTENT_LENGTH), Some("1000"));
        assert_eq!(header(&headers, header::CONTENT_TYPE), Some("application/octet-stream"));
        assert_eq!(header(&headers, header::ACCEPT_RANGES), Some("bytes"));
        assert_eq!(header(&headers, header::ETAG), Some(format!("\"{id}\"").as_str()));
        assert_eq!(header(&headers, header::CONTENT_DISPOSITION), Some(r#"attachment; filename="fw \"1\".swu""#));
        assert_eq!(header(&headers, header::CONTENT_RANGE), None);
    }

    async fn serve_head_has_the_length_but_no_body(kind: Kind) {
        let (fixture, id, _) = served(kind).await;
        let store = &fixture.store;
        for range in [&[][..], &[(header::RANGE, "bytes=0-9")][..]] {
            let (status, headers, body) = request(store, &id, Method::HEAD, range).await;
            assert_eq!(status, StatusCode::OK);
            assert!(body.is_empty());
            assert_eq!(header(&headers, header::CONTENT_LENGTH), Some("1000"));
            assert_eq!(header(&headers, header::ETAG), Some(format!("\"{id}\"").as_str()));
        }
    }

    async fn serve_ranges(kind: Kind) {
        let (fixture, id, content) = served(kind).await;
        let store = &fixture.store;
        for (range, first, last) in
            [("bytes=10-19", 10, 19), ("bytes=990-", 990, 999), ("bytes=-5", 995, 999), ("bytes=998-5000", 998, 999)]
        {
            let (status, headers, body) = request(store, &id, Method::GET, &[(header::RANGE, range)]).await;
            assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(body, content[first..=last], "{range}");
            assert_eq!(header(&headers, header::CONTENT_LENGTH), Some((last - first + 1).to_string().as_str()));
            assert_eq!(header(&headers, header::CONTENT_RANGE), Some(format!("bytes {first}-{last}/1000").as_str()));
            assert_eq!(header(&headers, header::ETAG), Some(format!("\"{id}\"").as_str()));
        }
    }

    async fn serve_unsatisfiable_range(kind: Kind) {
        let (fixture, id, _) = served(kind).await;
        let store = &fixture.store;
        let (status, headers, body) = request(store, &id, Method::GET, &[(header::RANGE, "bytes=1000-")]).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert!(body.is_empty());
        assert_eq!(header(&headers, header::CONTENT_RANGE), Some("bytes */1000"));
        assert_eq!(header(&headers, header::CONTENT_LENGTH), Some("0"));
    }

    async fn serve_several_ranges_as_the_whole_body(kind: Kind) {
        let (fixture, id, content) = served(kind).await;
        let store = &fixture.store;
        let (status, headers, body) = request(store, &id, Method::GET, &[(header::RANGE, "bytes=0-1,5-6")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, content);
        assert_eq!(header(&headers, header::CONTENT_LENGTH), Some("1000"));
    }

    async fn serve_if_none_match(kind: Kind) {
        let (fixture, id, content) = served(kind).await;
        let store = &fixture.store;
        let etag = format!("\"{id}\"");
        for value in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".to_owned()] {
            for method in [Method::GET, Method::HEAD] {
                let (status, headers, body) =
                    request(store, &id, method, &[(header::IF_NONE_MATCH, value.as_str())]).await;
                assert_eq!(status, StatusCode::NOT_MODIFIED, "{value}");
                assert!(body.is_empty());
                assert_eq!(header(&headers, header::ETAG), Some(etag.as_str()));
            }
        }
        let (status, _, body) = request(store, &id, Method::GET, &[(header::IF_NONE_MATCH, "\"other\"")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, content);
    }

    async fn serve_if_range(kind: Kind) {
        let (fixture, id, content) = served(kind).await;
        let store = &fixture.store;
        let etag = format!("\"{id}\"");
        let (status, _, body) =
            request(store, &id, Method::GET, &[(header::RANGE, "bytes=0-3"), (header::IF_RANGE, etag.as_str())]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, content[..4]);
        for other in ["\"other\"", &format!("W/{etag}"), "Sat, 01 Jan 2000 00:00:00 GMT"] {
            let (status, headers, body) =
                request(store, &id, Method::GET, &[(header::RANGE, "bytes=0-3"), (header::IF_RANGE, other)]).await;
            assert_eq!(status, StatusCode::OK, "{other}");
            assert_eq!(body, content, "{other}");
            assert_eq!(header(&headers, header::CONTENT_LENGTH), Some("1000"));
        }
    }

    async fn serve_unknown_blobs_and_other_methods(kind: Kind) {
        let (fixture, id, _) = served(kind).await;
        let store = &fixture.store;
        let missing = "0".repeat(64);
        for unknown in [missing.as_str(), "../staging", "nope"] {
            let (status, _, body) = request(store, unknown, Method::GET, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
            assert!(body.is_empty());
        }
        let (status, headers, _) = request(store, &id, Method::POST, &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&headers, header::ALLOW), Some("GET, HEAD"));
    }

    async fn serve_an_empty_blob(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let id = store.put_reader(tokio::io::empty(), None, 0).await.unwrap().id();
        let (status, headers, body) = request(store, &id, Method::GET, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(header(&headers, header::CONTENT_LENGTH), Some("0"));
        let (status, headers, _) = request(store, &id, Method::GET, &[(header::RANGE, "bytes=-1")]).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(header(&headers, header::CONTENT_RANGE), Some("bytes */0"));
    }
}
