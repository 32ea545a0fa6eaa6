//! How a settled claim's result is kept in its row (`claims.result`): a format byte, then
//! a byte naming what the result repeats and is left out, then the rest, encoded and
//! compressed with zstd. Left out, each only when it equals where it comes back from: the
//! claim's identifiers (the row's columns), each line result's item code (the claim's
//! line), the service date (the claim's visit) and the paying account's holder when that is
//! the patient. Rows of the earlier formats (plain; whole and compressed) stay readable.
//! No I/O.

use clearinghouse_platform::error::{Error, Result};
use clearinghouse_proto::settlement::v1::{Claim, SettlementResult, claim::Visit};
use prost::Message;

/// The claim's identifiers as its row keeps them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowIds<'a> {
    pub treatment_region: &'a str,
    pub claim_id: &'a str,
    pub insured_region: &'a str,
    pub person_id: &'a str,
}

/// Format bytes.
const PLAIN: u8 = 0;
const ZSTD: u8 = 1;
const LEAN: u8 = 2;

/// What a `LEAN` result leaves out.
const IDS: u8 = 1;
const LINE_CODES: u8 = 2;
const SERVICE_DATE: u8 = 4;
const HOLDER_IS_PATIENT: u8 = 8;
const KNOWN: u8 = IDS | LINE_CODES | SERVICE_DATE | HOLDER_IS_PATIENT;

/// No stored result decompresses to more (a claim has at most a few thousand lines).
const MAX_RESULT_BYTES: usize = 64 << 20;

/// The bytes `result` is stored as in the row `row`.
pub(crate) fn encode(result: &SettlementResult, row: RowIds<'_>) -> Vec<u8> {
    let mut lean = result.clone();
    let left_out = leave_out(&mut lean, row);
    match compress(&lean.encode_to_vec()) {
        Ok(compressed) => [&[LEAN, left_out][..], &compressed].concat(),
        Err(_) => [&[PLAIN][..], &result.encode_to_vec()].concat(),
    }
}

std::thread_local! {
    /// Each thread's compression context, reused: making one allocates and clears about a
    /// megabyte of tables, which cost the settlement service more than compressing a
    /// result (3 % of its CPU, measured with `perf`).
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `bytes` compressed at level 3, as one zstd frame that names its size.
fn compress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|compressor| {
        let compressor = match compressor {
            Some(c) => c,
            None => compressor.insert(zstd::bulk::Compressor::new(3)?),
        };
        compressor.compress(bytes)
    })
}

/// A zstd frame's content (never more than [`MAX_RESULT_BYTES`]), into a buffer of the
/// size the frame names (ours all do; a buffer of the largest size allowed was an mmap and
/// munmap per result read); `None` when it is not a frame or holds more.
fn decompress(frame: &[u8]) -> Option<Vec<u8>> {
    let capacity = match zstd::zstd_safe::get_frame_content_size(frame).ok()? {
        Some(size) => usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_RESULT_BYTES)?,
        None => MAX_RESULT_BYTES,
    };
    zstd::bulk::decompress(frame, capacity).ok()
}

/// The result stored as `stored` in the row `row`.
pub(crate) fn decode(stored: &[u8], row: RowIds<'_>) -> Result<SettlementResult> {
    let corrupt = || Error::Corrupt("result");
    let inflate = |bytes: &[u8]| decompress(bytes).ok_or_else(corrupt);
    let (bytes, left_out) = match stored {
        [PLAIN, bytes @ ..] => (bytes.to_vec(), 0),
        [ZSTD, bytes @ ..] => (inflate(bytes)?, 0),
        [LEAN, left_out, bytes @ ..] if left_out & !KNOWN == 0 => (inflate(bytes)?, *left_out),
        _ => return Err(corrupt()),
    };
    let mut result = SettlementResult::decode(bytes.as_slice()).map_err(|_| corrupt())?;
    restore(&mut result, left_out, row).ok_or_else(corrupt)?;
    Ok(result)
}

/// The date a result's `service_date` repeats: the outpatient visit's, or the discharge.
fn visit_date(claim: &Claim) -> Option<&str> {
    match claim.visit.as_ref()? {
        Visit::GeneralOutpatient(v) => Some(&v.service_date),
        Visit::ChronicOutpatient(v) => Some(&v.service_date),
        Visit::Inpatient(v) => Some(&v.discharge_date),
    }
}

/// Clears what `result` repeats; returns what was cleared.
fn leave_out(result: &mut SettlementResult, row: RowIds<'_>) -> u8 {
    let Some(claim) = result.claim.as_mut() else {
        return 0;
    };
    let mut left_out = 0;
    if !result.personal_account_holder.is_empty()
        && result.personal_account_holder == claim.person_id
    {
        result.personal_account_holder.clear();
        left_out |= HOLDER_IS_PATIENT;
    }
    if !result.service_date.is_empty() && Some(result.service_date.as_str()) == visit_date(claim) {
        result.service_date.clear();
        left_out |= SERVICE_DATE;
    }
    let codes_repeat = result.lines.len() == claim.lines.len()
        && result
            .lines
            .iter()
            .zip(&claim.lines)
            .all(|(r, l)| !r.item_code.is_empty() && r.item_code == l.item_code);
    if codes_repeat && !result.lines.is_empty() {
        result.lines.iter_mut().for_each(|r| r.item_code.clear());
        left_out |= LINE_CODES;
    }
    let ids = [
        (&mut claim.treatment_region, row.treatment_region),
        (&mut claim.claim_id, row.claim_id),
        (&mut claim.insured_region, row.insured_region),
        (&mut claim.person_id, row.person_id),
    ];
    if ids.iter().all(|(field, column)| field.as_str() == *column) {
        ids.into_iter().for_each(|(field, _)| field.clear());
        left_out |= IDS;
    }
    left_out
}

/// Puts back what `left_out` says was cleared; `None` if the stored result cannot have
/// been written so.
fn restore(result: &mut SettlementResult, left_out: u8, row: RowIds<'_>) -> Option<()> {
    if left_out == 0 {
        return Some(());
    }
    let claim = result.claim.as_mut()?;
    if left_out & IDS != 0 {
        claim.treatment_region = row.treatment_region.to_string();
        claim.claim_id = row.claim_id.to_string();
        claim.insured_region = row.insured_region.to_string();
        claim.person_id = row.person_id.to_string();
    }
    if left_out & LINE_CODES != 0 {
        if result.lines.len() != claim.lines.len() {
            return None;
        }
        for (r, l) in result.lines.iter_mut().zip(&claim.lines) {
            r.item_code.clone_from(&l.item_code);
        }
    }
    if left_out & SERVICE_DATE != 0 {
        result.service_date = visit_date(claim)?.to_string();
    }
    if left_out & HOLDER_IS_PATIENT != 0 {
        result.personal_account_holder.clone_from(&claim.person_id);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use clearinghouse_proto::settlement::v1::{
        ChronicOutpatient, ClaimLine, GeneralOutpatient, Hospital, Inpatient, LineResult, Split,
    };
    use proptest::prelude::*;

    use super::*;

    const ROW: RowIds<'static> = RowIds {
        treatment_region: "110105",
        claim_id: "S-2026-000123",
        insured_region: "370102",
        person_id: "P-370102-0001",
    };

    fn line(code: &str) -> ClaimLine {
        ClaimLine {
            item_code: code.into(),
            quantity: "2".into(),
            unit_price: "19.90".into(),
        }
    }

    fn result(visit: Visit, holder: &str, codes: &[&str]) -> SettlementResult {
        SettlementResult {
            claim: Some(Claim {
                claim_id: ROW.claim_id.into(),
                person_id: ROW.person_id.into(),
                insured_region: ROW.insured_region.into(),
                treatment_region: ROW.treatment_region.into(),
                hospital: Some(Hospital {
                    code: "H1".into(),
                    level: 2,
                }),
                visit: Some(visit),
                use_personal_account: !holder.is_empty(),
                lines: codes.iter().map(|c| line(c)).collect(),
                ..Claim::default()
            }),
            split: Some(Split {
                total: "39.80".into(),
                cash: "39.80".into(),
                ..Split::default()
            }),
            lines: codes
                .iter()
                .map(|c| LineResult {
                    item_code: c.to_string(),
                    amount: "39.80".into(),
                    ..LineResult::default()
                })
                .collect(),
            service_date: "2026-11-11".into(),
            settled_at: "2026-12-06T12:12:53.473660569Z".into(),
            personal_account_holder: holder.into(),
            ..SettlementResult::default()
        }
    }

    fn general() -> Visit {
        Visit::GeneralOutpatient(GeneralOutpatient {
            service_date: "2026-11-11".into(),
        })
    }

    #[test]
    fn what_a_result_repeats_is_left_out_and_comes_back() {
        let inpatient = Visit::Inpatient(Inpatient {
            admission_date: "2026-11-01".into(),
            discharge_date: "2026-11-11".into(),
        });
        let chronic = Visit::ChronicOutpatient(ChronicOutpatient {
            disease_code: "DIABETES".into(),
            service_date: "2026-11-11".into(),
        });
        let cases = [
            (result(general(), ROW.person_id, &["I1", "I2"]), KNOWN),
            (
                result(inpatient, "", &["I1"]),
                IDS | LINE_CODES | SERVICE_DATE,
            ),
            (
                result(chronic, "HOLDER-1", &["I1"]),
                IDS | LINE_CODES | SERVICE_DATE,
            ),
            (result(general(), "", &[]), IDS | SERVICE_DATE),
        ];
        for (whole, left_out) in cases {
            let stored = encode(&whole, ROW);
            assert_eq!(stored[..2], [LEAN, left_out]);
            assert_eq!(decode(&stored, ROW).unwrap(), whole);
            let compressed_whole = zstd::bulk::compress(&whole.encode_to_vec(), 3).unwrap();
            assert!(stored.len() < compressed_whole.len() + 1, "{whole:?}");
        }
    }

    #[test]
    fn what_differs_from_its_source_is_kept() {
        let mut whole = result(general(), "", &["I1", "I2"]);
        whole.lines[1].item_code = "I9".into();
        whole.service_date = "2026-11-12".into();
        let other_row = RowIds {
            claim_id: "ANOTHER",
            ..ROW
        };
        let stored = encode(&whole, other_row);
        assert_eq!(stored[..2], [LEAN, 0]);
        assert_eq!(decode(&stored, other_row).unwrap(), whole);
    }

    #[test]
    fn earlier_formats_stay_readable_and_unknown_ones_are_corrupt() {
        let whole = result(general(), "", &["I1"]);
        let plain = [&[PLAIN][..], &whole.encode_to_vec()].concat();
        let zstd_whole = [
            &[ZSTD][..],
            &zstd::bulk::compress(&whole.encode_to_vec(), 3).unwrap(),
        ]
        .concat();
        for stored in [plain, zstd_whole] {
            assert_eq!(decode(&stored, ROW).unwrap(), whole);
        }
        let mut unknown = encode(&whole, ROW);
        unknown[1] |= 0x80;
        assert!(decode(&unknown, ROW).is_err());
        assert!(decode(&[7, 1, 2], ROW).is_err());
        assert!(decode(&[], ROW).is_err());
    }

    proptest! {
        /// Whatever the result holds, repeated or not, it comes back as it was.
        #[test]
        fn every_result_comes_back_exactly(
            ids in proptest::collection::vec((any::<bool>(), "[A-Z0-9-]{0,3}"), 4),
            holder in (0..3u8, "[A-Z0-9-]{0,3}"),
            dates in (any::<bool>(), "[0-9-]{0,3}", "[0-9-]{0,3}"),
            codes in proptest::collection::vec("[A-Z0-9]{0,2}", 0..4),
            result_codes in (any::<bool>(), proptest::collection::vec("[A-Z0-9]{0,2}", 0..4)),
        ) {
            let row = RowIds {
                treatment_region: "110105",
                claim_id: "S-1",
                insured_region: "370102",
                person_id: "P-1",
            };
            let columns = [row.treatment_region, row.claim_id, row.insured_region, row.person_id];
            let id = |i: usize| if ids[i].0 { columns[i].to_string() } else { ids[i].1.clone() };
            let (same_date, service_date, visit_date) = dates;
            let mut whole = result(
                Visit::GeneralOutpatient(GeneralOutpatient { service_date: visit_date.clone() }),
                "",
                &codes.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            let claim = whole.claim.as_mut().unwrap();
            claim.treatment_region = id(0);
            claim.claim_id = id(1);
            claim.insured_region = id(2);
            claim.person_id = id(3);
            whole.personal_account_holder = match holder.0 {
                0 => String::new(),
                1 => claim.person_id.clone(),
                _ => holder.1,
            };
            whole.service_date = if same_date { visit_date } else { service_date };
            let result_codes = if result_codes.0 { codes } else { result_codes.1 };
            whole.lines = result_codes
                .into_iter()
                .map(|item_code| LineResult { item_code, ..LineResult::default() })
                .collect();
            prop_assert_eq!(decode(&encode(&whole, row), row).unwrap(), whole);
        }
    }
}
