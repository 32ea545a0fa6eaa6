//! Validation at the edge: contract messages into domain values, naming every bad field.

mod claim;
mod policy;

use clearinghouse_domain::{
    money::parse_decimal,
    settlement::{ByLevel, CatalogueClass, CatalogueItem},
};
use clearinghouse_platform::error::FieldViolations;
use clearinghouse_proto::{convert::class_from_proto, settlement::v1 as pb};
use rust_decimal::Decimal;

pub use claim::{ParsedClaim, claim};
pub use policy::policy;

/// At most this many lines per claim and items per catalogue message.
pub const MAX_LINES: usize = 1000;
const MAX_CODE: usize = 40;

fn code_ok(code: &str) -> bool {
    (1..=MAX_CODE).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_graphic())
}

fn amount(v: &mut FieldViolations, field: &str, text: &str) -> Decimal {
    v.check(field, parse_decimal(text, 2)).unwrap_or_default()
}

fn ratio(v: &mut FieldViolations, field: &str, text: &str) -> Decimal {
    match parse_decimal(text, 4) {
        Ok(r) if r <= Decimal::ONE => r,
        Ok(_) => {
            v.add(field, "must lie between 0 and 1");
            Decimal::ZERO
        }
        Err(e) => {
            v.add(field, e.to_string());
            Decimal::ZERO
        }
    }
}

fn by_level(
    v: &mut FieldViolations,
    field: &str,
    levels: Option<&pb::LevelAmounts>,
    each: fn(&mut FieldViolations, &str, &str) -> Decimal,
) -> Option<ByLevel> {
    let l = levels?;
    Some(ByLevel([
        each(v, &format!("{field}.level1"), &l.level1),
        each(v, &format!("{field}.level2"), &l.level2),
        each(v, &format!("{field}.level3"), &l.level3),
    ]))
}

fn or_zero(text: &str) -> &str {
    if text.is_empty() { "0" } else { text }
}

/// A catalogue item as stored.
pub struct ParsedItem {
    pub code: String,
    pub name: String,
    pub item: CatalogueItem,
}

pub fn catalogue_item(
    v: &mut FieldViolations,
    field: &str,
    i: &pb::CatalogueItem,
) -> Option<ParsedItem> {
    let before = v.is_empty();
    if !code_ok(&i.item_code) {
        v.add(
            format!("{field}.item_code"),
            "must be 1 to 40 printable characters",
        );
    }
    if !clearinghouse_platform::error::is_plain_text(&i.name, 200) {
        v.add(format!("{field}.name"), "must be at most 200 bytes");
    }
    let class = class_from_proto(i.class);
    if class.is_none() {
        v.add(format!("{field}.class"), "must be A, B or C");
    }
    let self_pay_ratio = if class == Some(CatalogueClass::B) {
        ratio(
            v,
            &format!("{field}.self_pay_ratio"),
            or_zero(&i.self_pay_ratio),
        )
    } else {
        Decimal::ZERO
    };
    let price_ceiling = (!i.price_ceiling.is_empty())
        .then(|| {
            v.check(
                &format!("{field}.price_ceiling"),
                parse_decimal(&i.price_ceiling, 4),
            )
        })
        .flatten();
    if before && !v.is_empty() {
        return None;
    }
    Some(ParsedItem {
        code: i.item_code.clone(),
        name: i.name.clone(),
        item: CatalogueItem {
            class: class?,
            self_pay_ratio,
            price_ceiling,
        },
    })
}
