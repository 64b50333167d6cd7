//! `Range` on blob GET (`api::blobs::parse_range`) and `Content-Range` on upload PATCH/PUT
//! (`api::uploads::parse_content_range`, then `uploads::Uploads::append`, which does the
//! arithmetic on it). Input: 8 bytes of blob length, then `Range\nContent-Range\nbody`.
//! Invariants: no panic; a satisfiable range lies inside the blob; a chunk is accepted only
//! when its range matches the body.

#![no_main]

use std::sync::OnceLock;

use glci::registry::api::blobs::{parse_range, ByteRange, RangeRequest};
use glci::registry::api::uploads::parse_content_range;
use glci::registry::names::Name;
use glci::registry::storage::Layout;
use glci::registry::uploads::{UploadChunk, UploadError, Uploads};
use libfuzzer_sys::fuzz_target;

fn uploads() -> &'static (Uploads, Name) {
    static UPLOADS: OnceLock<(Uploads, Name)> = OnceLock::new();
    UPLOADS.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("glci-fuzz-range-{}", std::process::id()));
        let layout = Layout::new(&root);
        std::fs::create_dir_all(layout.tmp()).expect("scratch dir");
        (Uploads::new(layout), "fuzz/range".parse().expect("valid name"))
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len, rest) = data.split_at(8);
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.splitn(3, '\n');
    let (range, content_range, body) = (lines.next(), lines.next(), lines.next().unwrap_or(""));

    match parse_range(range, len) {
        RangeRequest::Part(ByteRange { start, end }) => {
            assert!(start <= end && end < len, "{range:?} on {len} bytes gave {start}-{end}");
            // The 206 body length the handler computes.
            assert!(end - start < len);
        }
        RangeRequest::Unsatisfiable => assert!(range.is_some_and(|r| r.trim().starts_with("bytes="))),
        RangeRequest::Whole => {}
    }

    let Some(header) = content_range else { return };
    let Some((start, end)) = parse_content_range(header) else { return };
    // Only a chunk at offset 0 gets past the order check of a fresh session.
    if start != 0 {
        return;
    }
    let (up, name) = uploads();
    let id = up.start(name).expect("session");
    let declared = (len % 2 == 0).then_some(body.len() as u64);
    let chunk = UploadChunk { body: &mut body.as_bytes(), range: Some((start, end)), declared_len: declared };
    let result = up.append(name, &id, chunk);
    match result {
        Ok(offset) => assert!(offset == end.wrapping_add(1) && offset <= body.len() as u64, "{header:?} gave {offset}"),
        Err(UploadError::OutOfOrder { .. } | UploadError::LengthMismatch) => {}
        Err(e) => panic!("{header:?}: {e:?}"),
    }
    up.cancel(name, &id).expect("cancel");
});
