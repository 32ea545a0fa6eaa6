//! Ledger postings of DESIGN.md section 6: every entry is balanced (its legs sum to zero).

use rust_decimal::Decimal;

use crate::region::Region;

/// The insured-place parts of a settled claim, as the ledger posts them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsuredShare {
    pub fund: Decimal,
    pub serious_illness: Decimal,
    pub assistance: Decimal,
    pub personal_account: Decimal,
}

impl InsuredShare {
    pub fn total(&self) -> Decimal {
        self.fund + self.serious_illness + self.assistance + self.personal_account
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    pub account: String,
    pub amount: Decimal,
}

/// Account names, one place for their spelling.
pub mod account {
    use crate::region::Region;

    /// What the treatment province is owed by the insured province (debit balance).
    pub fn receivable(treatment: Region, insured: Region) -> String {
        format!("receivable:{treatment}:{insured}")
    }
    /// What the insured province owes the treatment province, per fund (credit balance).
    pub fn payable(insured: Region, treatment: Region, fund: &str) -> String {
        format!("payable:{insured}:{treatment}:{fund}")
    }
}

/// The balanced entry of a settled claim, or of its reversal (every sign flipped).
/// Cash never enters clearing, and legs of zero are left out.
pub fn claim_entry(
    insured: Region,
    treatment: Region,
    share: &InsuredShare,
    reversal: bool,
) -> Vec<Leg> {
    let sign = if reversal {
        Decimal::NEGATIVE_ONE
    } else {
        Decimal::ONE
    };
    let insured = insured.province();
    let treatment = treatment.province();
    let mut legs = vec![Leg {
        account: account::receivable(treatment, insured),
        amount: sign * share.total(),
    }];
    for (fund, amount) in [
        ("fund", share.fund),
        ("serious_illness", share.serious_illness),
        ("assistance", share.assistance),
        ("personal_account", share.personal_account),
    ] {
        if !amount.is_zero() {
            legs.push(Leg {
                account: account::payable(insured, treatment, fund),
                amount: -sign * amount,
            });
        }
    }
    legs.retain(|leg| !leg.amount.is_zero());
    legs
}

/// Whether the legs of an entry sum to zero.
pub fn is_balanced(legs: &[Leg]) -> bool {
    legs.iter().map(|l| l.amount).sum::<Decimal>().is_zero()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn regions() -> (Region, Region) {
        (
            Region::parse("370100").unwrap(),
            Region::parse("110000").unwrap(),
        )
    }

    #[test]
    fn claim_entry_posts_by_province_and_fund() {
        let (insured, treatment) = regions();
        let share = InsuredShare {
            fund: dec!(25728.75),
            serious_illness: dec!(0),
            assistance: dec!(10.00),
            personal_account: dec!(0),
        };
        let legs = claim_entry(insured, treatment, &share, false);
        assert_eq!(
            legs,
            vec![
                Leg {
                    account: "receivable:110000:370000".into(),
                    amount: dec!(25738.75)
                },
                Leg {
                    account: "payable:370000:110000:fund".into(),
                    amount: dec!(-25728.75)
                },
                Leg {
                    account: "payable:370000:110000:assistance".into(),
                    amount: dec!(-10.00)
                },
            ]
        );
        let reversed = claim_entry(insured, treatment, &share, true);
        assert!(
            legs.iter()
                .zip(&reversed)
                .all(|(a, b)| a.amount == -b.amount)
        );
    }

    #[test]
    fn a_claim_with_no_insured_share_posts_nothing() {
        let (insured, treatment) = regions();
        assert!(claim_entry(insured, treatment, &InsuredShare::default(), false).is_empty());
    }

    proptest! {
        #[test]
        fn every_entry_is_balanced(
            f in 0i64..1_000_000_000, s in 0i64..100_000_000, a in 0i64..100_000_000,
            p in 0i64..100_000_000, reversal: bool,
        ) {
            let (insured, treatment) = regions();
            let share = InsuredShare {
                fund: Decimal::new(f, 2),
                serious_illness: Decimal::new(s, 2),
                assistance: Decimal::new(a, 2),
                personal_account: Decimal::new(p, 2),
            };
            prop_assert!(is_balanced(&claim_entry(insured, treatment, &share, reversal)));
        }
    }
}
