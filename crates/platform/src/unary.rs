//! The shape of a unary call's request: exactly one gRPC message. tonic serves a unary
//! call on its first message and answers `INTERNAL` "Missing request message." when there
//! is none; both are the caller's mistakes, so the access layer checks the shape first and
//! answers `INVALID_ARGUMENT` (or `RESOURCE_EXHAUSTED` above the size limit).

use std::{collections::HashSet, sync::LazyLock};

/// The largest request a service accepts.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;
use tonic::Status;

/// The full paths of the contract's methods whose request is a stream.
fn client_streaming() -> &'static HashSet<String> {
    static METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
        let set = prost_types::FileDescriptorSet::decode(clearinghouse_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        set.file
            .iter()
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service
                        .method
                        .iter()
                        .filter(|m| m.client_streaming())
                        .map(move |m| {
                            format!("/{}.{}/{}", file.package(), service.name(), m.name())
                        })
                })
            })
            .collect()
    });
    &METHODS
}

/// Whether the method at `path` takes a single request message.
pub fn is_unary_request(path: &str) -> bool {
    !client_streaming().contains(path)
}

/// Counts the gRPC frames of a request body: `Err` when one is cut short.
fn frames(body: &[u8]) -> Result<usize, Status> {
    let mut rest = body;
    let mut count = 0;
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err(Status::invalid_argument("the request message is cut short"));
        }
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if rest.len() - 5 < length {
            return Err(Status::invalid_argument("the request message is cut short"));
        }
        rest = &rest[5 + length..];
        count += 1;
    }
    Ok(count)
}

/// Reads a unary request's body (at most the size limit) and checks that it holds exactly
/// one message; returns the bytes to serve the call from.
pub async fn read_single_message(body: tonic::body::Body) -> Result<Bytes, Status> {
    let limited = http_body_util::Limited::new(body, MAX_MESSAGE_BYTES + 5);
    let bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Status::resource_exhausted(format!(
                "a request message may hold at most {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        Err(e) => return Err(Status::cancelled(format!("the request was not read: {e}"))),
    };
    match frames(&bytes)? {
        1 => Ok(bytes),
        0 => Err(Status::invalid_argument(
            "a unary call needs exactly one request message; it carried none",
        )),
        n => Err(Status::invalid_argument(format!(
            "a unary call needs exactly one request message; it carried {n}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_are_counted_and_cut_ones_refused() {
        assert_eq!(frames(&[]).unwrap(), 0);
        assert_eq!(frames(&frame(b"")).unwrap(), 1);
        assert_eq!(frames(&frame(b"abc")).unwrap(), 1);
        assert_eq!(
            frames(&[frame(b"a"), frame(b"bc"), frame(b"")].concat()).unwrap(),
            3
        );
        assert!(frames(&frame(b"abc")[..6]).is_err());
        assert!(frames(&[0, 0, 0]).is_err());
    }

    #[test]
    fn only_the_catalogue_upload_streams_its_request() {
        assert!(!is_unary_request(
            "/clearinghouse.settlement.v1.ReferenceDataService/PutCatalogue"
        ));
        assert!(is_unary_request(
            "/clearinghouse.settlement.v1.SettlementService/Settle"
        ));
        assert!(is_unary_request(
            "/clearinghouse.ledger.v1.LedgerService/GetStatement"
        ));
    }
}
