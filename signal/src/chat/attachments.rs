//! Attachments for image and voice messages: `POST /v1/chat/attachments` streams the body
//! to disk under `<data_dir>/attachments` while hashing it, and stores it under its SHA-256
//! (the same bytes are kept once); `GET /v1/chat/attachments/{id}` serves it to identities
//! that uploaded it or belong to a conversation where a message carries it. Both take the
//! access token as `Authorization: Bearer`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::Claims;
use crate::http::{ApiError, bearer};
use crate::protocol::ErrorCode;
use crate::service::AppState;

/// Whether `id` looks like an attachment id (64 lowercase hex digits).
pub fn is_attachment_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks that the first bytes of a file match its declared content type, so a client
/// cannot store arbitrary files under an image or audio type.
pub fn sniff_matches(content_type: &str, head: &[u8]) -> bool {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    match content_type {
        "image/png" => at(0, b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => at(0, b"\xff\xd8\xff"),
        "image/gif" => at(0, b"GIF87a") || at(0, b"GIF89a"),
        "image/webp" => at(0, b"RIFF") && at(8, b"WEBP"),
        "audio/ogg" => at(0, b"OggS"),
        "audio/webm" => at(0, b"\x1a\x45\xdf\xa3"),
        "audio/wav" => at(0, b"RIFF") && at(8, b"WAVE"),
        "audio/mpeg" => {
            at(0, b"ID3") || (head.len() >= 2 && head[0] == 0xff && head[1] & 0xe0 == 0xe0)
        }
        "audio/mp4" => at(4, b"ftyp"),
        // Types added by configuration are accepted as declared.
        _ => true,
    }
}

fn claims_of(st: &AppState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::TokenMissing,
            "send the access token as Authorization: Bearer",
        )
    })?;
    let claims = st
        .issuer
        .verify(token)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string()))?;
    if !claims.grants.chat {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "the access token does not grant chat",
        ));
    }
    Ok(claims)
}

fn dir(st: &AppState) -> PathBuf {
    st.chat.data_dir.join("attachments")
}

fn path_of(base: &Path, id: &str) -> PathBuf {
    base.join(&id[..2]).join(id)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "attachment storage failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unavailable,
        "the attachment could not be stored; retry",
    )
}

pub(crate) async fn upload(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claims = claims_of(&st, &headers)?;
    let cfg = &st.chat.cfg;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !cfg.attachment_types.contains(&content_type) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidMessage,
            format!(
                "content type {content_type:?} is not accepted; accepted: {}",
                cfg.attachment_types.join(", ")
            ),
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MessageTooLarge,
            format!(
                "attachments are limited to {} bytes",
                cfg.max_attachment_bytes
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.max_attachment_bytes) {
        return Err(too_large());
    }
    let base = dir(&st);
    let tmp_dir = base.join("tmp");
    tokio::fs::create_dir_all(&tmp_dir)
        .await
        .map_err(internal)?;
    let tmp = tmp_dir.join(uuid::Uuid::new_v4().to_string());
    let result = receive(body, &tmp, cfg.max_attachment_bytes, &content_type).await;
    let (id, size) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(match e {
                Receive::TooLarge => too_large(),
                Receive::Mismatch => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ErrorCode::InvalidMessage,
                    format!("the file's contents are not {content_type}"),
                ),
                Receive::Empty => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidMessage,
                    "empty attachment",
                ),
                Receive::Body(e) => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidMessage,
                    format!("upload interrupted: {e}"),
                ),
                Receive::Io(e) => internal(e),
            });
        }
    };
    let dest = path_of(&base, &id);
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(internal)?;
    }
    tokio::fs::rename(&tmp, &dest).await.map_err(internal)?;
    // The file is durable on disk before the row that points to it.
    if let Ok(f) = tokio::fs::File::open(&dest).await {
        let _ = f.sync_all().await;
    }
    st.chat
        .record_attachment(&id, &content_type, size, &claims.sub)
        .await
        .map_err(internal)?;
    st.chat.metrics.attachments_uploaded.inc();
    let body = json!({"id": id, "size": size, "content_type": content_type});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

enum Receive {
    TooLarge,
    Mismatch,
    Empty,
    Body(String),
    Io(std::io::Error),
}

async fn receive(
    body: Body,
    tmp: &Path,
    limit: u64,
    content_type: &str,
) -> Result<(String, u64), Receive> {
    let mut file = tokio::fs::File::create(tmp).await.map_err(Receive::Io)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::with_capacity(16);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Receive::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(Receive::TooLarge);
        }
        if head.len() < 16 {
            let take = (16 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(Receive::Io)?;
    }
    if size == 0 {
        return Err(Receive::Empty);
    }
    if !sniff_matches(content_type, &head) {
        return Err(Receive::Mismatch);
    }
    file.sync_all().await.map_err(Receive::Io)?;
    Ok((super::hex(&hasher.finalize()), size))
}

pub(crate) async fn download(
    State(st): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = claims_of(&st, &headers)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such attachment, or not visible to this identity",
        )
    };
    if !is_attachment_id(&id) {
        return Err(not_found());
    }
    let Some(content_type) = st.chat.attachment_type(&id).await.map_err(internal)? else {
        return Err(not_found());
    };
    let allowed = st.chat.may_download(&id, &claims).await.map_err(internal)?;
    if !allowed {
        // Same answer as a missing file: ids of others' files are not confirmed.
        return Err(not_found());
    }
    let file = tokio::fs::File::open(path_of(&dir(&st), &id))
        .await
        .map_err(|_| not_found())?;
    let len = file.metadata().await.map_err(internal)?.len();
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable".into(),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_declared_types() {
        assert!(sniff_matches("image/png", b"\x89PNG\r\n\x1a\n0000"));
        assert!(!sniff_matches("image/png", b"GIF89a"));
        assert!(sniff_matches("image/webp", b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!sniff_matches("audio/wav", b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(sniff_matches("audio/mp4", b"\0\0\0\x20ftypM4A "));
        assert!(!sniff_matches("audio/ogg", b""));
        assert!(sniff_matches("application/x-custom", b"anything"));
    }

    #[test]
    fn ids_are_sha256_hex() {
        assert!(is_attachment_id(&"a".repeat(64)));
        assert!(!is_attachment_id(&"A".repeat(64)));
        assert!(!is_attachment_id("../../etc/passwd"));
        assert!(!is_attachment_id(&"a".repeat(63)));
    }
}
